//! Pollers and their scheduler.
//!
//! - One **poller** per question ([`JobQuery`]) is shared by every stream
//!   watching it. It holds the latest [`Observation`] in a
//!   `tokio::sync::watch` channel: a subscriber that falls behind skips to
//!   the newest state (intermediate states are coalesced, never reordered)
//!   and memory does not grow with its backlog.
//! - One **scheduler** task spends the poll budget on the jobs this process
//!   polls (see [`crate::domain::watch::ownership`]): it takes background tokens (calls go
//!   first; polls keep a minimum share) and gives each to the due job that
//!   AWS answered about longest ago, so when the budget is short, staleness
//!   is spread evenly. COMPLETED, CANCELED and deleted jobs are not polled.
//!   It sleeps while nothing is due and ends at shutdown.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::watch, time::Instant};

use crate::{
    domain::{
        answer::JobAnswer,
        error::GatewayError,
        limit::Permit,
        watch::{
            Watches,
            observation::{Changes, Observation, Observed, Sent, Trigger},
            worth_reporting,
        },
    },
    upstream::JobQuery,
};

/// While events keep asking for polls, one poll in this many still goes to
/// the job AWS answered about longest ago.
const SCHEDULE_EVERY: usize = 5;

/// The least time between two polls of one job that events asked for.
const EVENT_GAP: Duration = Duration::from_secs(1);

/// What subscribers of a poller see: the latest observation, if any yet.
pub type Latest = Option<Arc<Observation>>;

/// One shared poller: its subscribers' channel and its place in the schedule.
pub(super) struct Poller {
    /// Tells this poller from a later one for the same job (polls in flight
    /// report back to the poller that started them).
    id: u64,
    latest: watch::Sender<Latest>,
    /// When AWS last answered about the job (or a poll last failed).
    last_answer: Option<Instant>,
    /// A poll is running.
    in_flight: bool,
    /// An event asked for a poll ahead of the schedule (the most urgent
    /// reason, when several came before the poll).
    hastened: Option<Trigger>,
}

#[derive(Default)]
pub(super) struct Pollers {
    by_query: HashMap<JobQuery, Poller>,
    next_id: u64,
}

impl Pollers {
    /// Jobs with a poller now.
    pub(super) fn len(&self) -> usize {
        self.by_query.len()
    }
}

/// What the scheduler should do next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A job is due: take a token, then [`Watches::take_due`].
    Poll,
    /// Nothing is due before this instant (`None`: until woken).
    Wait(Option<Instant>),
    /// The gateway is shutting down; the scheduler ends.
    Stop,
}

/// What the scheduler asks of the domain: tokens and polls.
#[async_trait]
pub trait Polls: Clone + Send + Sync + 'static {
    /// A background token from the rate limit.
    async fn token(&self) -> Permit;

    /// One poll of `query` with a token already taken, for `trigger`: AWS's
    /// answer and the request that got it (the scheduler hands them to
    /// `Watches::observe`).
    async fn poll(
        &self,
        query: &JobQuery,
        permit: Permit,
        trigger: Trigger,
    ) -> Result<(Arc<JobAnswer>, Sent), GatewayError>;
}

impl Watches {
    /// Starts the scheduler, which spends `polls` until shutdown (and is
    /// started again, with an error in the log, should it ever panic).
    pub(crate) fn start_scheduler(self: &Arc<Self>, polls: impl Polls) {
        let watches = self.clone();
        tokio::spawn(async move {
            loop {
                let run = tokio::spawn(schedule(watches.clone(), polls.clone()));
                match run.await {
                    Ok(()) => return,
                    Err(failed) => {
                        tracing::error!(error = %failed, "the watch scheduler failed; restarting it")
                    }
                }
            }
        });
    }

    /// Subscribes to `query`'s poller, creating it if needed.
    pub fn subscribe(&self, query: &JobQuery) -> watch::Receiver<Latest> {
        // Under the lock: the scheduler drops pollers without subscribers.
        let receiver = self.with_entry(query, |latest| latest.subscribe());
        self.wake.notify_one();
        self.ownership.watched(query);
        receiver
    }

    /// Makes sure `query` has a poller, without subscribers: this process
    /// polls it for watchers elsewhere.
    pub(crate) fn adopt(&self, query: &JobQuery) {
        self.with_entry(query, |_| ());
        self.wake.notify_one();
    }

    /// Runs `f` on the channel of `query`'s poller, created if needed,
    /// under the pollers' lock.
    fn with_entry<T>(&self, query: &JobQuery, f: impl FnOnce(&watch::Sender<Latest>) -> T) -> T {
        let mut pollers = self.lock();
        if let Some(poller) = pollers.by_query.get(query) {
            return f(&poller.latest);
        }
        pollers.next_id += 1;
        let poller = Poller {
            id: pollers.next_id,
            latest: watch::Sender::new(None),
            last_answer: None,
            in_flight: false,
            hastened: None,
        };
        let out = f(&poller.latest);
        pollers.by_query.insert(query.clone(), poller);
        out
    }

    /// The jobs with subscribers in this process.
    pub(crate) fn watched_here(&self) -> Vec<JobQuery> {
        self.lock()
            .by_query
            .iter()
            .filter(|(_, poller)| poller.latest.receiver_count() > 0)
            .map(|(query, _)| query.clone())
            .collect()
    }

    /// Makes the next poll of every watched question about `job_id` due
    /// now, for `trigger` (an event): still through the rate limit, at poll
    /// priority. However many events come before it, that is one poll; an
    /// event during a poll makes one more. Returns how many questions are
    /// watched (none: the event costs AWS nothing).
    pub(crate) fn hasten(&self, job_id: &str, trigger: Trigger) -> usize {
        let mut pollers = self.lock();
        let mut hastened = 0;
        // A job is watched as up to three questions; look those up rather
        // than scan every watched job for each event of a burst.
        for query in JobQuery::all_about(job_id) {
            if let Some(poller) = pollers.by_query.get_mut(&query) {
                poller.hastened = poller.hastened.max(Some(trigger));
                hastened += 1;
            }
        }
        drop(pollers);
        if hastened > 0 {
            self.wake.notify_one();
        }
        hastened
    }

    /// Makes every watched job's next poll due now (events may have been
    /// missed).
    pub(crate) fn hasten_all(&self, trigger: Trigger) {
        let mut pollers = self.lock();
        for poller in pollers.by_query.values_mut() {
            poller.hastened = poller.hastened.max(Some(trigger));
        }
        drop(pollers);
        self.wake.notify_one();
    }

    /// Something changed for the scheduler (ownership, for one).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Hands an observation of `query`, made by this process from an AWS
    /// answer, to its watchers (`make` runs only if there may be any).
    pub(crate) fn observe(&self, query: &JobQuery, make: impl FnOnce() -> Observation) {
        self.ownership.publish(self, query, Box::new(make));
    }

    /// Gives an observation to this process's subscribers of `query`, if
    /// there are any (`make` runs only then): they see it if its version is
    /// new and no newer request's answer is already there. Counts as a poll.
    pub(crate) fn deliver(&self, query: &JobQuery, make: impl FnOnce() -> Observation) {
        let mut pollers = self.lock();
        let Some(poller) = pollers.by_query.get_mut(query) else {
            return;
        };
        let observation = make();
        poller.answered(observation.sent);
        poller.latest.send_if_modified(|latest| {
            let before = latest.as_deref();
            if let Some(before) = before
                && (before.version == observation.version || before.order > observation.order)
            {
                return false;
            }
            let previous = before.map(|b| {
                (
                    b.version,
                    Changes::between(Some(&b.state), &observation.state),
                )
            });
            *latest = Some(Arc::new(Observation {
                previous,
                ..observation
            }));
            true
        });
    }

    /// Decides the scheduler's next step, dropping pollers nobody watches
    /// here and this process does not poll for others.
    fn next(&self, now: Instant) -> Next {
        if *self.closing.borrow() {
            return Next::Stop;
        }
        let interval = self.settings.poll_interval;
        let mut pollers = self.lock();
        pollers.by_query.retain(|query, poller| {
            poller.latest.receiver_count() > 0 || self.ownership.owns(query, false)
        });
        let earliest = pollers
            .by_query
            .iter()
            .filter(|(query, poller)| self.polled_here(query, poller))
            .filter_map(|(_, p)| p.due_at(interval, now))
            .min();
        if earliest.is_some_and(|due| due <= now) {
            return Next::Poll;
        }
        Next::Wait(earliest)
    }

    /// Picks the due job an event asked about (an event that it ended
    /// first), else the one AWS answered about longest ago (never-polled
    /// jobs first); marks it in flight and returns it with its poller's id
    /// and why it is polled. Every [`SCHEDULE_EVERY`]th poll goes to the
    /// job answered about longest ago whatever the events say, so a job
    /// whose event was lost is still polled while events keep coming for
    /// others.
    fn take_due(&self, now: Instant) -> Option<(JobQuery, u64, Trigger)> {
        let interval = self.settings.poll_interval;
        let by_schedule =
            self.polls_taken.fetch_add(1, Ordering::Relaxed) % SCHEDULE_EVERY == SCHEDULE_EVERY - 1;
        let mut pollers = self.lock();
        let due = pollers
            .by_query
            .iter_mut()
            .filter(|(query, poller)| self.polled_here(query, poller))
            .filter(|(_, p)| p.due_at(interval, now).is_some_and(|due| due <= now));
        let (query, poller) = if by_schedule {
            due.min_by_key(|(_, p)| p.last_answer)?
        } else {
            due.min_by_key(|(_, p)| (std::cmp::Reverse(p.hastened), p.last_answer))?
        };
        poller.in_flight = true;
        let trigger = poller.hastened.take().unwrap_or(Trigger::Schedule);
        Some((query.clone(), poller.id, trigger))
    }

    /// Whether this process polls `query` (its poller is `poller`).
    fn polled_here(&self, query: &JobQuery, poller: &Poller) -> bool {
        self.ownership
            .owns(query, poller.latest.receiver_count() > 0)
    }

    /// A poll of `query` by poller `id` ended (however it ended).
    fn poll_done(&self, query: &JobQuery, id: u64) {
        let mut pollers = self.lock();
        if let Some(poller) = pollers.by_query.get_mut(query).filter(|p| p.id == id) {
            poller.in_flight = false;
            poller.answered(Instant::now());
        }
        drop(pollers);
        self.wake.notify_one();
    }

    /// Waits until woken, `until` passes, or shutdown starts.
    async fn idle(&self, until: Option<Instant>) {
        let mut closing = self.closing.subscribe();
        let sleep = async {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = self.wake.notified() => {}
            _ = closing.wait_for(|closing| *closing) => {}
        }
    }

    /// Resolves when shutdown starts.
    async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        let _ = closing.wait_for(|closing| *closing).await;
    }
}

impl Poller {
    /// When the scheduler should poll it next (`now` if never polled), or
    /// `None` while a poll runs or once the job is final.
    fn due_at(&self, interval: Duration, now: Instant) -> Option<Instant> {
        let is_final = self.latest.borrow().as_ref().is_some_and(|o| o.is_final());
        if self.in_flight || is_final {
            return None;
        }
        if self.hastened.is_some() {
            // A burst of events (one per thing of a large rollout) is one
            // poll, then at most one more a second.
            return Some(
                self.last_answer
                    .map_or(now, |t| t + EVENT_GAP.min(interval)),
            );
        }
        Some(self.last_answer.map_or(now, |t| t + interval))
    }

    /// AWS answered about the job (or a poll ended) at `at`.
    fn answered(&mut self, at: Instant) {
        self.last_answer = Some(self.last_answer.map_or(at, |t| t.max(at)));
    }
}

/// The watch scheduler: while any job is watched, takes background tokens
/// and spends each on the due job AWS answered about longest ago.
async fn schedule(watches: Arc<Watches>, polls: impl Polls) {
    // A token taken while a job was due, kept if none is due any more.
    let mut held: Option<Permit> = None;
    loop {
        match watches.next(Instant::now()) {
            Next::Stop => return,
            Next::Wait(until) => watches.idle(until).await,
            Next::Poll => {
                let permit = match held.take() {
                    Some(permit) => permit,
                    None => tokio::select! {
                        permit = polls.token() => permit,
                        () = watches.closed() => continue,
                    },
                };
                // Waiting for the token may have changed which job is due.
                let Some((query, poller, trigger)) = watches.take_due(Instant::now()) else {
                    held = Some(permit);
                    continue;
                };
                let (watches, polls) = (watches.clone(), polls.clone());
                tokio::spawn(async move {
                    let _done = PollDone(&watches, &query, poller);
                    match polls.poll(&query, permit, trigger).await {
                        Ok((answer, sent)) => {
                            watches.observe(&query, || Observation::answered(&answer, sent));
                        }
                        Err(err) if worth_reporting(&err) => {
                            let failed = || Observation::new(Observed::Failed(err), Sent::now());
                            watches.observe(&query, failed);
                        }
                        Err(_) => {}
                    }
                });
            }
        }
    }
}

/// Marks a poll finished however its task ends.
struct PollDone<'a>(&'a Watches, &'a JobQuery, u64);

impl Drop for PollDone<'_> {
    fn drop(&mut self) {
        self.0.poll_done(self.1, self.2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{backends::local::polls::LocalPolls, domain::watch::WatchSettings};

    fn query(i: usize) -> JobQuery {
        JobQuery {
            job_id: format!("job-{i}"),
            before_substitution: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_for_some_jobs_leave_the_schedule_a_share_of_the_polls() {
        let settings = WatchSettings {
            poll_interval: Duration::from_secs(1),
            ..WatchSettings::default()
        };
        let watches = Watches::new(settings, Arc::new(LocalPolls));
        let _subscribers: Vec<_> = (0..10).map(|i| watches.subscribe(&query(i))).collect();
        // Every job polled once, then all due again.
        while let Some((query, id, _)) = watches.take_due(Instant::now()) {
            watches.poll_done(&query, id);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Events keep coming for jobs 0 to 8; job 9's were lost.
        let mut quiet_polled = None;
        for poll in 1..=20 {
            for i in 0..9 {
                watches.hasten(&query(i).job_id, Trigger::Event);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (taken, id, trigger) = watches.take_due(Instant::now()).unwrap();
            watches.poll_done(&taken, id);
            if taken == query(9) {
                assert_eq!(trigger, Trigger::Schedule);
                quiet_polled = Some(poll);
                break;
            }
            assert_eq!(trigger, Trigger::Event);
        }
        assert!(
            quiet_polled.is_some(),
            "the job without events waited behind 20 event polls"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_that_a_job_ended_is_polled_before_other_events() {
        let watches = Watches::new(WatchSettings::default(), Arc::new(LocalPolls));
        let _subscribers: Vec<_> = (0..3).map(|i| watches.subscribe(&query(i))).collect();
        while let Some((query, id, _)) = watches.take_due(Instant::now()) {
            watches.poll_done(&query, id);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        watches.hasten(&query(0).job_id, Trigger::Event);
        watches.hasten(&query(1).job_id, Trigger::FinalEvent);
        watches.hasten(&query(2).job_id, Trigger::Event);
        // Not the schedule's turn (every fifth poll) for this one.
        watches.polls_taken.store(0, Ordering::Relaxed);
        let (first, _, trigger) = watches.take_due(Instant::now()).unwrap();
        assert_eq!((first, trigger), (query(1), Trigger::FinalEvent));
    }
}
