//! The token bucket of one process.
//!
//! - The bucket is a [`governor`] rate limiter at the configured rate and
//!   burst; it is never rebuilt, so "at most rate + burst calls in any second"
//!   holds whatever else happens.
//! - A call that finds no token waits in a [`FairQueue`]: callers take
//!   turns (weighted by [`Share::weight`]), each caller's calls in arrival
//!   order, so one caller's backlog delays another caller's call by about
//!   one token per active caller, not by the backlog. A call joins only if
//!   its turn in that order can come before its deadline; otherwise it is
//!   turned away at once with a time to retry after. If callers that arrive
//!   later take turns before it and its deadline passes while it waits, it
//!   leaves then. The queue is bounded (`max_waiters`), and so is each
//!   caller's part of it ([`Share::max_waiting`]).
//! - When AWS still throttles (someone else uses the same account), the
//!   gateway lowers its own rate and brings it back as [`crate::domain::limit::aimd`]
//!   says. The lowered rate paces calls in front of the bucket (burst 1:
//!   it spaces calls out), so the bucket itself never changes.
//! - Watch polls are background work ([`LocalRateLimit::acquire_background`]):
//!   they take tokens no call is waiting for, plus a configured minimum share
//!   of the rate while calls wait, so neither side starves the other.

use std::{
    num::NonZeroU32,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use governor::{
    Quota, RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::domain::limit::{
    LimiterSettings, Permit, RateLimit, RejectReason, Rejected, Share,
    aimd::Aimd,
    fair::{FairQueue, Line},
};

/// The limiter's clock: tokio's, so tests with paused time control it too.
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// The rate's state and the pacing of a lowered rate.
#[derive(Debug)]
struct Lowered {
    aimd: Aimd,
    /// When the next call may start at the lowered rate (GCRA with no
    /// burst: its theoretical arrival time).
    next_at: Instant,
}

/// The shared token bucket in front of AWS.
pub struct LocalRateLimit {
    settings: LimiterSettings,
    clock: TokioClock,
    bucket: Bucket,
    lowered: Mutex<Lowered>,
    /// Calls waiting for tokens: its head takes them, one call at a time,
    /// callers in turn.
    queue: FairQueue,
    /// Paces background work's guaranteed share while calls wait.
    background_share: Option<Bucket>,
    /// Set while background work is owed the next token: the call at the
    /// head of the queue lets it go first.
    background_claim: AtomicBool,
}

impl LocalRateLimit {
    /// A full bucket with `settings`.
    ///
    /// # Panics
    /// If the rate is not positive and finite, or the burst is zero (the
    /// configuration parser rules both out).
    pub fn new(settings: LimiterSettings) -> Self {
        assert!(settings.rate.is_finite() && settings.rate > 0.0);
        let clock = TokioClock {
            origin: Instant::now(),
        };
        let share = settings.background_share.clamp(0.0, 1.0) * settings.rate;
        let background_share = (share > 0.0).then(|| bucket(share, 1, clock));
        let bucket = bucket(settings.rate, settings.burst, clock);
        Self {
            lowered: Mutex::new(Lowered {
                aimd: Aimd::new(settings.rate),
                next_at: clock.origin,
            }),
            queue: FairQueue::new(settings.max_waiters),
            settings,
            clock,
            bucket,
            background_share,
            background_claim: AtomicBool::new(false),
        }
    }

    fn lowered(&self) -> MutexGuard<'_, Lowered> {
        // The state is a few numbers updated together; a panic elsewhere
        // cannot leave it unusable.
        self.lowered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds on the limiter's clock.
    fn now(&self) -> f64 {
        self.clock.now().as_secs_f64()
    }

    /// Takes a token at the lowered rate (if backing off) and from the
    /// configured bucket, or says how long until one is due. Returns the
    /// generation of the rate the token was taken at.
    fn try_take(&self) -> Result<u64, Duration> {
        let mut lowered = self.lowered();
        let now = Instant::now();
        let rate = self.rate(&mut lowered);
        let backing_off = lowered.aimd.backing_off();
        if backing_off && lowered.next_at > now {
            return Err(lowered.next_at - now);
        }
        self.bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))?;
        if backing_off {
            lowered.next_at = lowered.next_at.max(now) + Duration::from_secs_f64(1.0 / rate);
        }
        Ok(lowered.aimd.generation)
    }

    /// The rate allowed now; logs the end of a backoff.
    fn rate(&self, lowered: &mut Lowered) -> f64 {
        let was_backing_off = lowered.aimd.backing_off();
        let rate = lowered.aimd.rate(self.now());
        if was_backing_off && !lowered.aimd.backing_off() {
            info!(
                rate_per_sec = rate,
                "AWS stopped throttling; the gateway is back at its configured rate"
            );
        }
        rate
    }

    /// The time between two tokens at the current rate.
    fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.current_rate())
    }
}

#[async_trait]
impl RateLimit for LocalRateLimit {
    /// The rate currently allowed (lower than configured while backing off).
    fn current_rate(&self) -> f64 {
        self.rate(&mut self.lowered())
    }

    /// Calls waiting for a token now.
    fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Takes a token, waiting for its turn among the callers if it can
    /// come before `deadline`; otherwise says at once when to retry.
    async fn acquire(&self, deadline: Instant, share: &Share) -> Result<Permit, Rejected> {
        let rate = self.current_rate();
        let reject = |reason, retry_after| Rejected {
            reason,
            retry_after,
            rate,
        };
        let line = Line {
            rate,
            per_call: Duration::from_secs_f64(1.0 / rate),
            max_waiters: self.settings.max_waiters,
        };
        let ticket = self.queue.wait_turn(share, &line, deadline).await?;
        loop {
            let wait = if self.background_claim.load(Ordering::SeqCst) {
                // Background work is owed this token; the next one is ours.
                self.period()
            } else {
                match self.try_take() {
                    Ok(generation) => {
                        ticket.served();
                        return Ok(Permit {
                            generation,
                            shared: false,
                        });
                    }
                    Err(wait) => wait,
                }
            };
            if Instant::now() + wait > deadline {
                return Err(reject(RejectReason::Deadline, wait));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token for background work (watch polls), waiting as long as
    /// it takes. While calls wait for tokens, background work only gets its
    /// share (`background_share` of the rate); otherwise it takes any token
    /// no call wants. With no share configured it only takes spare tokens.
    async fn acquire_background(&self) -> Permit {
        let mut owed = false;
        loop {
            if !owed && self.waiting() > 0 {
                let share = self.background_share.as_ref().map(Bucket::check);
                match share {
                    Some(Ok(())) => owed = true,
                    Some(Err(not_until)) => {
                        let wait = not_until.wait_time_from(self.clock.now());
                        tokio::time::sleep(wait.min(self.period())).await;
                        continue;
                    }
                    None => {
                        tokio::time::sleep(self.period()).await;
                        continue;
                    }
                }
            }
            // The claim makes the head of the queue step aside; it is
            // cleared on every way out of this iteration.
            let _claim = owed.then(|| Claim::new(&self.background_claim));
            match self.try_take() {
                Ok(generation) => {
                    return Permit {
                        generation,
                        shared: false,
                    };
                }
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// AWS throttled the call made with `permit`: lower the rate, unless
    /// an earlier throttle already covered the call.
    fn throttled(&self, permit: Permit) {
        let now = self.now();
        let mut lowered = self.lowered();
        let Some((from, to)) = lowered.aimd.throttled(permit.generation, now) else {
            return;
        };
        // Spaced from now at the new rate.
        lowered.next_at = Instant::now() + Duration::from_secs_f64(1.0 / to);
        drop(lowered);
        warn!(
            from_per_sec = from,
            to_per_sec = to,
            configured_per_sec = self.settings.rate,
            "AWS is throttling DescribeJob although the gateway kept to its rate; \
             another client probably shares the account's quota. Lowering the gateway's rate"
        );
    }

    /// AWS answered the call made with `permit` without throttling it.
    fn answered(&self, permit: Permit) {
        self.lowered().aimd.answered(permit.generation);
    }
}

/// Background work's claim on the next token, withdrawn when dropped (also
/// when the task waiting for the token is cancelled).
struct Claim<'a>(&'a AtomicBool);

impl<'a> Claim<'a> {
    fn new(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::SeqCst);
        Self(flag)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn bucket(rate: f64, burst: u32, clock: TokioClock) -> Bucket {
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let quota = Quota::with_period(period)
        .expect("the period is at least 1ns")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least 1"));
    RateLimiter::direct_with_clock(quota, clock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limiter(rate: f64, burst: u32, max_waiters: usize) -> Arc<LocalRateLimit> {
        Arc::new(LocalRateLimit::new(LimiterSettings {
            rate,
            burst,
            max_waiters,
            background_share: 0.2,
        }))
    }

    fn anyone() -> Share {
        Share::of("test")
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_calls_are_spaced_by_the_rate() {
        let l = limiter(10.0, 3, 100);
        let start = Instant::now();
        for _ in 0..3 {
            l.acquire(far(), &anyone()).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        l.acquire(far(), &anyone()).await.unwrap();
        l.acquire(far(), &anyone()).await.unwrap();
        let spent = start.elapsed();
        assert!(
            (Duration::from_millis(199)..=Duration::from_millis(201)).contains(&spent),
            "{spent:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_a_token_that_comes_before_the_deadline() {
        let l = limiter(2.0, 1, 100);
        l.acquire(far(), &anyone()).await.unwrap();
        let start = Instant::now();
        l.acquire(start + Duration::from_secs(1), &anyone())
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn fails_at_once_when_the_token_would_come_after_the_deadline() {
        let l = limiter(2.0, 1, 100);
        l.acquire(far(), &anyone()).await.unwrap();
        let start = Instant::now();
        let err = l
            .acquire(start + Duration::from_millis(100), &anyone())
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO, "did not wait");
        assert_eq!(err.reason, RejectReason::Deadline);
        assert_eq!(err.retry_after, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let l = limiter(10.0, 1, 100);
        l.acquire(far(), &anyone()).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (l, order) = (l.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                l.acquire(far(), &anyone()).await.unwrap();
                order.lock().unwrap().push(i);
            }));
            // Let each task join the queue before the next one arrives.
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_turns_callers_away_and_a_late_turn_is_foreseen() {
        let l = limiter(1.0, 1, 2);
        l.acquire(far(), &anyone()).await.unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.acquire(far(), &anyone()).await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(l.waiting(), 2);
        let full = l.acquire(far(), &anyone()).await.unwrap_err();
        assert_eq!(full.reason, RejectReason::QueueFull);
        assert_eq!(full.retry_after, Duration::from_secs(2));
        // Two are ahead at one per second: a 2.5 s deadline may not be met.
        let l2 = limiter(1.0, 1, 10);
        l2.acquire(far(), &anyone()).await.unwrap();
        let _queued: Vec<_> = (0..2)
            .map(|_| {
                let l2 = l2.clone();
                tokio::spawn(async move { l2.acquire(far(), &anyone()).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let late = l2
            .acquire(Instant::now() + Duration::from_millis(2500), &anyone())
            .await
            .unwrap_err();
        assert_eq!(late.reason, RejectReason::Deadline);
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        assert_eq!(l.waiting(), 0);
    }

    fn caller(name: &str, weight: u32, max_waiting: Option<usize>) -> Share {
        Share {
            caller: name.into(),
            weight,
            max_waiting,
        }
    }

    /// Starts a call of `share` that waits as long as it takes and records
    /// `tag` when it gets its token; lets it join the queue.
    async fn queued(
        l: &Arc<LocalRateLimit>,
        share: Share,
        order: &Arc<Mutex<Vec<String>>>,
        tag: String,
    ) -> tokio::task::JoinHandle<()> {
        let (l, order) = (l.clone(), order.clone());
        let task = tokio::spawn(async move {
            l.acquire(far(), &share).await.unwrap();
            order.lock().unwrap().push(tag);
        });
        tokio::task::yield_now().await;
        task
    }

    #[tokio::test(start_paused = true)]
    async fn one_callers_backlog_delays_another_caller_by_about_one_token() {
        let l = limiter(10.0, 1, 1000);
        l.acquire(far(), &anyone()).await.unwrap();
        let order = Arc::default();
        let mut backlog = Vec::new();
        for i in 0..100 {
            backlog.push(queued(&l, caller("a", 1, None), &order, format!("a{i}")).await);
        }
        let start = Instant::now();
        // a's head is due in 100 ms; b's one call goes next. With 300 ms to
        // spare it is not turned away for the 100 calls a has waiting.
        l.acquire(start + Duration::from_millis(300), &caller("b", 1, None))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        assert_eq!(*order.lock().unwrap(), ["a0"]);
        assert_eq!(l.waiting(), 99);
        for task in backlog {
            task.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn callers_of_weights_3_and_1_get_3_tokens_to_1_while_both_wait() {
        let l = limiter(10.0, 1, 1000);
        l.acquire(far(), &anyone()).await.unwrap();
        let order = Arc::default();
        let mut tasks = Vec::new();
        for i in 0..40 {
            tasks.push(queued(&l, caller("a", 3, None), &order, format!("a{i}")).await);
        }
        for i in 0..40 {
            tasks.push(queued(&l, caller("b", 1, None), &order, format!("b{i}")).await);
        }
        tokio::time::sleep(Duration::from_millis(4050)).await;
        let served = order.lock().unwrap().clone();
        assert_eq!(served.len(), 40, "{served:?}");
        let a = served.iter().filter(|t| t.starts_with('a')).count();
        assert_eq!(a, 30, "{served:?}");
        for task in tasks {
            task.await.unwrap();
        }
        // Within each caller, in arrival order.
        let served = order.lock().unwrap().clone();
        for who in ["a", "b"] {
            let own: Vec<_> = served.iter().filter(|t| t.starts_with(who)).collect();
            let expected: Vec<_> = (0..40).map(|i| format!("{who}{i}")).collect();
            assert_eq!(own, expected.iter().collect::<Vec<_>>());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_with_its_most_calls_waiting_is_refused_at_once() {
        let l = limiter(10.0, 1, 1000);
        l.acquire(far(), &anyone()).await.unwrap();
        let order = Arc::default();
        let capped = caller("a", 1, Some(2));
        let first = queued(&l, capped.clone(), &order, "a0".into()).await;
        let second = queued(&l, capped.clone(), &order, "a1".into()).await;
        let start = Instant::now();
        let refused = l.acquire(far(), &capped).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO, "did not wait");
        assert_eq!(refused.reason, RejectReason::CallerQueueFull);
        // Its oldest call goes with the next token: then there is room.
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        // Other callers still get in.
        let other = queued(&l, caller("b", 1, Some(2)), &order, "b0".into()).await;
        assert_eq!(l.waiting(), 3);
        for task in [first, second, other] {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["a0", "b0", "a1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_and_a_cancelled_head_passes_its_turn_on() {
        let l = limiter(1.0, 1, 1000);
        l.acquire(far(), &anyone()).await.unwrap();
        let order = Arc::default();
        let start = Instant::now();
        let head = queued(&l, caller("a", 1, None), &order, "a0".into()).await;
        let behind = queued(&l, caller("a", 1, None), &order, "a1".into()).await;
        let next = queued(&l, caller("b", 1, None), &order, "b0".into()).await;
        assert_eq!(l.waiting(), 3);
        behind.abort();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(l.waiting(), 2);
        head.abort();
        next.await.unwrap();
        // The token due at 1 s went to the next in line, not a second later.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(*order.lock().unwrap(), ["b0"]);
        assert_eq!(l.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_whose_turn_moves_past_its_deadline_leaves_at_the_deadline() {
        let l = limiter(10.0, 1, 1000);
        l.acquire(far(), &anyone()).await.unwrap();
        let order = Arc::default();
        let mut tasks = Vec::new();
        for i in 0..10 {
            tasks.push(queued(&l, caller("a", 1, None), &order, format!("a{i}")).await);
        }
        for i in 0..2 {
            tasks.push(queued(&l, caller("b", 1, None), &order, format!("b{i}")).await);
        }
        // b's third call has a0, b0, a1, b1, a2 ahead: due at 600 ms.
        let start = Instant::now();
        let late = {
            let l = l.clone();
            tokio::spawn(async move {
                l.acquire(start + Duration::from_millis(650), &caller("b", 1, None))
                    .await
            })
        };
        tokio::task::yield_now().await;
        // Three callers arrive after it and take their turns before b's.
        for c in ["c", "d", "e"] {
            tasks.push(queued(&l, caller(c, 1, None), &order, c.into()).await);
        }
        let refused = late.await.unwrap().unwrap_err();
        assert_eq!(refused.reason, RejectReason::Deadline);
        assert_eq!(start.elapsed(), Duration::from_millis(650));
        for task in tasks {
            task.await.unwrap();
        }
        let served = order.lock().unwrap().clone();
        assert_eq!(served[..7], ["a0", "b0", "c", "d", "e", "a1", "b1"]);
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_lowers_the_rate_once_and_it_comes_back_when_aws_is_quiet() {
        let l = limiter(10.0, 1, 100);
        let a = l.acquire(far(), &anyone()).await.unwrap();
        let b = l.acquire(far(), &anyone()).await.unwrap();
        l.throttled(a);
        assert_close(l.current_rate(), 7.0);
        // b was sent before the rate was lowered: the same throttle.
        l.throttled(b);
        assert_close(l.current_rate(), 7.0);
        // Calls are now spaced at the lowered rate.
        let start = Instant::now();
        let c = l.acquire(far(), &anyone()).await.unwrap();
        l.acquire(far(), &anyone()).await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(140),
            "{:?}",
            start.elapsed()
        );
        l.answered(c);
        // Back at 10/s K = ∛(3 / 0.4) ≈ 1.96 s after the throttle.
        tokio::time::advance(Duration::from_millis(1700)).await;
        assert!(l.current_rate() > 9.9, "{}", l.current_rate());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(l.current_rate(), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_takes_spare_tokens_and_keeps_its_share_under_load() {
        let l = limiter(10.0, 1, 100);
        let background = |l: Arc<LocalRateLimit>, until: Instant| {
            tokio::spawn(async move {
                let mut taken = 0;
                while Instant::now() < until {
                    l.acquire_background().await;
                    taken += 1;
                }
                taken
            })
        };
        // Alone, it gets the whole rate: 10/s for 10 s.
        let alone = background(l.clone(), Instant::now() + Duration::from_secs(10));
        let alone = alone.await.unwrap();
        assert!((99..=102).contains(&alone), "{alone}");

        // With calls always waiting, it keeps its 20% share and they get the rest.
        let until = Instant::now() + Duration::from_secs(10);
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    let mut taken = 0;
                    while Instant::now() < until {
                        l.acquire(far(), &anyone()).await.unwrap();
                        taken += 1;
                    }
                    taken
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let shared = background(l.clone(), until).await.unwrap();
        let mut calls = 0;
        for c in callers {
            calls += c.await.unwrap();
        }
        assert!((17..=23).contains(&shared), "background got {shared}");
        assert!((77..=84).contains(&calls), "calls got {calls}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_never_drops_below_its_floor() {
        let l = limiter(10.0, 1, 100);
        // Twenty throttles at once, each of a call sent after the last.
        for generation in 0..20 {
            l.throttled(Permit {
                generation,
                shared: false,
            });
        }
        assert_close(l.current_rate(), 0.5);
    }
}
