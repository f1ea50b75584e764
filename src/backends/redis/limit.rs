//! The AWS budget of a whole set of replicas: one token bucket in Redis.
//!
//! Every AWS attempt on any replica runs `limit.lua` once (EVALSHA): GCRA
//! timed by Redis's clock, which *reserves* a turn (the call then waits for
//! it here) or refuses at once when the turn comes after the call's
//! deadline or too many turns are already reserved. The lowered rate of a
//! backoff lives in the same hash, so a ThrottlingException seen by any
//! replica slows them all, and they all come back together. A decrease is
//! announced on `{prefix}:limit-changes`: turns reserved at the old rate
//! are void, and their callers ask again at the new one.
//!
//! Turns are reserved in fair order. Each replica keeps its waiting calls
//! in a [`FairQueue`], as the in-process bucket does, and only the head of
//! that queue holds a turn in Redis: it reserves one, waits it out, and
//! then the next head reserves. So a replica has at most one turn reserved
//! at a time, and one caller's backlog never reserves the set's next turns.
//! How far that makes the set fair:
//! - On one replica, as in-process: callers take turns by weight, each
//!   caller's calls in order, and a call waits for about one turn per
//!   caller with calls waiting on that replica.
//! - Across replicas, replicas take turns: Redis hands out turns in the
//!   order they are asked for, and each replica with calls waiting asks for
//!   one at a time. A replica with calls waiting gets at least its equal
//!   part of the set's rate, and a call waits for about (callers waiting on
//!   its replica) × (replicas with calls waiting) turns. Shares across the
//!   set are per replica, not per caller: callers on a busy replica get less
//!   than a caller alone on another, and a caller connected to several
//!   replicas is a caller on each.
//! - A call joins its replica's queue only if its turn can come before its
//!   deadline at the pace this replica's heads have been getting turns
//!   (never faster than the set's rate); otherwise it is refused at once.
//!   If the pace slows (other replicas get busy) and its deadline passes
//!   while it waits, it is refused then; Redis still refuses a turn that
//!   would come after the deadline. The cap on waiting calls
//!   (`max_waiters`) applies to each replica's queue.
//! - Turns are reserved one Redis round trip after another on each replica,
//!   so a replica takes at most about one token per round trip (thousands a
//!   second on a LAN; AWS's DescribeJob quota is 10).
//!
//! While Redis is unreachable ([`crate::backends::redis`]), calls pass an in-process
//! bucket at `--redis-fallback-rate` instead (with its own fair queue); a
//! permit remembers which bucket it came from, so AWS's answer is reported
//! to that one.

use std::{
    sync::{
        Arc, LazyLock, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use redis::Script;
use tokio::{
    sync::{broadcast, watch},
    time::Instant,
};
use tracing::warn;

use crate::{
    backends::{
        local::limit::LocalRateLimit,
        redis::{Shared, Trouble},
    },
    domain::limit::{
        LimiterSettings, Permit, RateLimit, RejectReason, Rejected, Share,
        fair::{FairQueue, Line},
    },
};

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("limit.lua")));

/// How long the bucket's hash outlives its last use.
const KEY_TTL: Duration = Duration::from_secs(3600);

/// What the script said about one request for a token.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    /// Go after this wait.
    Granted(Duration),
    /// Refused: the turn comes after the deadline, or too many wait.
    Refused(RejectReason, Duration),
    /// Background work: no spare token; ask again after this.
    NotYet(Duration),
}

/// The bucket shared by every replica, with an in-process one for when
/// Redis is away.
#[derive(Clone)]
pub struct SharedRateLimit(Arc<Inner>);

struct Inner {
    shared: Arc<Shared>,
    settings: LimiterSettings,
    key: String,
    /// This replica's bucket while Redis is away ([`SharedRateLimit::alone`]).
    fallback: Arc<LocalRateLimit>,
    /// Calls of this replica waiting for their turn.
    waiting: AtomicUsize,
    /// This replica's calls in fair order: only the head holds a turn in
    /// Redis, so one caller's backlog cannot reserve the set's next turns.
    queue: FairQueue,
    /// How long a head keeps this replica's queue (its round trip and its
    /// wait for its turn), smoothed, in seconds (f64 bits): the pace of the
    /// queue, which has the share of the set's rate the other replicas
    /// leave it.
    per_call: AtomicU64,
    /// The rate the script last reported (f64 bits).
    rate: AtomicU64,
    /// The last generation whose first answer this replica reported.
    answered: AtomicU64,
    /// The newest generation this replica knows of.
    generation: watch::Sender<u64>,
    /// Where decreases are announced.
    changes: String,
}

impl SharedRateLimit {
    /// The bucket this replica uses alone while Redis is away (the
    /// [`super::failover::Failover`] stand-in).
    pub fn alone(&self) -> Arc<LocalRateLimit> {
        self.0.fallback.clone()
    }

    /// The shared bucket of the operation whose key space is `space`
    /// ([`crate::upstream::Operation::SPACE`]), with `settings` for the
    /// whole set; `fallback` is this replica's bucket while Redis is away.
    pub fn new(
        shared: Arc<Shared>,
        space: &str,
        settings: LimiterSettings,
        fallback: LimiterSettings,
    ) -> Self {
        let key = shared.keys().in_space(space, "limit");
        let changes = shared.keys().in_space(space, "limit-changes");
        let inner = Arc::new(Inner {
            rate: AtomicU64::new(settings.rate.to_bits()),
            fallback: Arc::new(LocalRateLimit::new(fallback)),
            queue: FairQueue::new(settings.max_waiters),
            per_call: AtomicU64::new((1.0 / settings.rate).to_bits()),
            shared,
            settings,
            key,
            waiting: AtomicUsize::new(0),
            answered: AtomicU64::new(u64::MAX),
            generation: watch::Sender::new(0),
            changes,
        });
        tokio::spawn(follow_changes(Arc::downgrade(&inner)));
        Self(inner)
    }

    /// Whether a call arriving at `now_ms` (Unix milliseconds) would get a
    /// token at once. For comparing the script's decisions with the
    /// in-process bucket's on the same arrivals; it takes the token.
    pub async fn decide_at(&self, now_ms: f64) -> Result<bool, Trouble> {
        Ok(self.turn_at(Some(Duration::ZERO), now_ms).await?.is_some())
    }

    /// The wait before the turn a call willing to wait `max_wait` (or, with
    /// `None`, background work) gets at `now_ms` (Unix milliseconds), or
    /// `None` if it gets none; a turn given is taken. For checking the
    /// script's decisions on given times.
    pub async fn turn_at(
        &self,
        max_wait: Option<Duration>,
        now_ms: f64,
    ) -> Result<Option<Duration>, Trouble> {
        let (decision, _) = self.0.decide(max_wait, Some(now_ms), None).await?;
        Ok(match decision {
            Decision::Granted(wait) => Some(wait),
            Decision::Refused(..) | Decision::NotYet(_) => None,
        })
    }
}

impl Inner {
    /// One run of the script; `deadline` bounds the Redis round trip.
    async fn run(
        &self,
        op: &str,
        arg: f64,
        now_ms: Option<f64>,
        deadline: Option<Instant>,
    ) -> Result<Vec<String>, Trouble> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.key)
            .arg(op)
            .arg(self.settings.rate)
            .arg(self.settings.burst)
            .arg(arg)
            .arg(self.settings.max_waiters)
            .arg(self.settings.background_share)
            .arg(now_ms.map(|n| n.to_string()).unwrap_or_default())
            .arg(KEY_TTL.as_millis() as u64)
            .arg(&self.changes);
        let mut conn = self.shared.conn();
        self.shared
            .bounded(deadline, invocation.invoke_async(&mut conn))
            .await
    }

    /// Asks the script for a token: a call that may wait `max_wait`, or
    /// background work (`None`).
    async fn decide(
        &self,
        max_wait: Option<Duration>,
        now_ms: Option<f64>,
        deadline: Option<Instant>,
    ) -> Result<(Decision, u64), Trouble> {
        let (op, arg) = match max_wait {
            Some(wait) => ("acquire", wait.as_secs_f64() * 1e3),
            None => ("background", 0.0),
        };
        let reply = self.run(op, arg, now_ms, deadline).await?;
        let number = |i: usize| reply.get(i).and_then(|v| v.parse::<f64>().ok());
        let (Some(status), Some(micros), Some(generation), Some(rate)) =
            (number(0), number(1), number(2), number(3))
        else {
            return Err(Trouble::new(format!(
                "unexpected reply from the limit script: {reply:?}"
            )));
        };
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
        self.saw_generation(generation as u64);
        let wait = Duration::from_micros(micros.max(0.0) as u64);
        let decision = match status as u8 {
            0 => Decision::Granted(wait),
            1 => Decision::Refused(RejectReason::Deadline, wait),
            2 => Decision::Refused(RejectReason::QueueFull, wait),
            _ => Decision::NotYet(wait),
        };
        Ok((decision, generation as u64))
    }

    /// Remembers `generation` if it is the newest seen.
    fn saw_generation(&self, generation: u64) {
        self.generation.send_if_modified(|known| {
            let newer = generation > *known;
            if newer {
                *known = generation;
            }
            newer
        });
    }

    /// Waits out a granted turn; `false` if a decrease announced after the
    /// grant voided it first.
    async fn wait_turn(&self, wait: Duration, generation: u64) -> bool {
        if wait.is_zero() {
            return true;
        }
        let mut known = self.generation.subscribe();
        known.borrow_and_update();
        let voided = async {
            while known.changed().await.is_ok() {
                if *known.borrow_and_update() > generation {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = voided => false,
        }
    }

    /// Tells the script that AWS throttled a call of `generation`, and
    /// logs a decrease if this report made it.
    async fn report_throttle(self: Arc<Self>, generation: u64) {
        let Ok(reply) = self.run("throttled", generation as f64, None, None).await else {
            return;
        };
        let number = |i: usize| reply.get(i).and_then(|v| v.parse::<f64>().ok());
        if let (Some(1.0), Some(from), Some(to)) = (number(0), number(1), number(2)) {
            self.rate.store(to.to_bits(), Ordering::Relaxed);
            self.saw_generation(generation + 1);
            warn!(
                from_per_sec = from,
                to_per_sec = to,
                configured_per_sec = self.settings.rate,
                "AWS is throttling DescribeJob although the replicas kept to their rate; \
                 another client probably shares the account's quota. Lowering the rate of \
                 every replica"
            );
        }
    }
}

/// Where a caller's token came from.
const SHARED: bool = true;

#[async_trait]
impl RateLimit for SharedRateLimit {
    async fn acquire(&self, deadline: Instant, share: &Share) -> Result<Permit, Rejected> {
        let this = &self.0;
        let _waiting = Waiting::new(&this.waiting);
        let line = this.line();
        let ticket = this.queue.wait_turn(share, &line, deadline).await?;
        let head_since = Instant::now();
        match this.reserve(deadline).await {
            Turn::Granted(permit) => {
                ticket.served();
                this.kept_head(head_since.elapsed());
                Ok(permit)
            }
            Turn::Refused(rejected) => Err(rejected),
            Turn::Fallback => {
                // Redis went away: this replica's own bucket decides, and
                // the calls behind follow as they become the head.
                drop(ticket);
                this.fallback.acquire(deadline, share).await
            }
        }
    }

    async fn acquire_background(&self) -> Permit {
        let this = &self.0;
        loop {
            if !this.shared.is_shared() {
                return this.fallback.acquire_background().await;
            }
            if let Ok((Decision::Granted(wait), generation)) = this.decide(None, None, None).await
                && this.wait_turn(wait, generation).await
            {
                return Permit {
                    generation,
                    shared: SHARED,
                };
            }
            // No spare token yet (or Redis trouble): ask again soon.
            let period = Duration::from_secs_f64(1.0 / this.current_rate());
            tokio::time::sleep(period.clamp(Duration::from_millis(10), Duration::from_secs(1)))
                .await;
        }
    }

    /// A permit goes back to the bucket that gave it: the shared one, or
    /// this replica's own when Redis went away while the call waited.
    fn throttled(&self, permit: Permit) {
        let this = &self.0;
        if permit.shared {
            tokio::spawn(this.clone().report_throttle(permit.generation));
        } else {
            this.fallback.throttled(permit);
        }
    }

    fn answered(&self, permit: Permit) {
        let this = &self.0;
        if !permit.shared {
            return this.fallback.answered(permit);
        }
        // One report per generation and replica is enough.
        if this.answered.swap(permit.generation, Ordering::Relaxed) == permit.generation {
            return;
        }
        let this = this.clone();
        tokio::spawn(async move {
            let _ = this
                .run("answered", permit.generation as f64, None, None)
                .await;
        });
    }

    fn current_rate(&self) -> f64 {
        self.0.current_rate()
    }

    fn waiting(&self) -> usize {
        self.0.waiting.load(Ordering::SeqCst)
    }
}

/// What the head of the queue got from Redis.
enum Turn {
    /// A turn, waited out.
    Granted(Permit),
    Refused(Rejected),
    /// Redis is unreachable: ask the fallback bucket.
    Fallback,
}

impl Inner {
    /// Reserves a turn in Redis for the head of the queue and waits it
    /// out, asking again if a decrease voids it.
    async fn reserve(&self, deadline: Instant) -> Turn {
        loop {
            if !self.shared.is_shared() {
                return Turn::Fallback;
            }
            let max_wait = deadline.saturating_duration_since(Instant::now());
            let rate = self.current_rate();
            match self.decide(Some(max_wait), None, Some(deadline)).await {
                Ok((Decision::Granted(wait), generation)) => {
                    if self.wait_turn(wait, generation).await {
                        return Turn::Granted(Permit {
                            generation,
                            shared: SHARED,
                        });
                    }
                    // The rate was lowered while waiting: ask again.
                }
                Ok((Decision::Refused(reason, retry_after), _)) => {
                    return Turn::Refused(Rejected {
                        reason,
                        retry_after,
                        rate: self.current_rate(),
                    });
                }
                Ok((Decision::NotYet(_), _)) => {
                    unreachable!("only background work is told not yet")
                }
                // Redis went away.
                Err(_) if !self.shared.is_shared() => return Turn::Fallback,
                // Redis did not answer before the caller's deadline.
                Err(_) => {
                    return Turn::Refused(Rejected {
                        reason: RejectReason::Deadline,
                        retry_after: Duration::from_secs_f64(1.0 / rate),
                        rate,
                    });
                }
            }
        }
    }

    /// How fast this replica's queue moves: never faster than the set's
    /// rate, slower while other replicas take their turns too.
    fn line(&self) -> Line {
        let rate = self.current_rate();
        let per_call = f64::from_bits(self.per_call.load(Ordering::Relaxed)).max(1.0 / rate);
        Line {
            rate,
            per_call: Duration::from_secs_f64(per_call),
            max_waiters: self.settings.max_waiters,
        }
    }

    /// A head kept the queue for `held` before its turn came.
    fn kept_head(&self, held: Duration) {
        // A moving average over about the last four heads (only the head
        // updates it, so no update is lost).
        let old = f64::from_bits(self.per_call.load(Ordering::Relaxed));
        let new = old + (held.as_secs_f64() - old) / 4.0;
        self.per_call.store(new.to_bits(), Ordering::Relaxed);
    }

    fn current_rate(&self) -> f64 {
        if self.shared.is_shared() {
            f64::from_bits(self.rate.load(Ordering::Relaxed))
        } else {
            self.fallback.current_rate()
        }
    }
}

/// Follows the decreases other replicas announce, until the limit is gone.
async fn follow_changes(inner: Weak<Inner>) {
    let Some(strong) = inner.upgrade() else {
        return;
    };
    let mut changes = strong.shared.listen(&strong.changes).await;
    drop(strong);
    loop {
        let message = match changes.recv().await {
            Ok(message) => message,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if let Some(generation) = std::str::from_utf8(&message)
            .ok()
            .and_then(|text| text.parse().ok())
        {
            strong.saw_generation(generation);
        }
    }
}

/// Counts a call as waiting until it stops, however it stops.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
