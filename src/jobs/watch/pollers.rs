//! Pollers and their scheduler.
//!
//! - One **poller** per question ([`JobQuery`]) is shared by every stream
//!   watching it. It holds the latest [`Observation`] in a
//!   `tokio::sync::watch` channel: a subscriber that falls behind skips to
//!   the newest state (intermediate states are coalesced, never reordered)
//!   and memory does not grow with its backlog.
//! - One **scheduler** task spends the poll budget on the jobs this process
//!   polls (see [`super::ownership`]): it takes background tokens (calls go
//!   first; polls keep a minimum share) and gives each to the due job that
//!   AWS answered about longest ago, so when the budget is short, staleness
//!   is spread evenly. COMPLETED, CANCELED and deleted jobs are not polled.
//!   The scheduler stops when no poller is left and starts again with the
//!   next subscriber.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::{sync::watch, time::Instant};

use super::{
    Watches,
    observation::{Changes, Observation, Observed},
    worth_reporting,
};
use crate::{error::GatewayError, jobs::limit::Permit, upstream::JobQuery};

/// What subscribers of a poller see: the latest observation, if any yet.
pub(super) type Latest = Option<Arc<Observation>>;

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
}

#[derive(Default)]
pub(super) struct Pollers {
    by_query: HashMap<JobQuery, Poller>,
    scheduler_running: bool,
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
    /// No poller is left; the scheduler ends.
    Stop,
}

/// What the scheduler asks of the domain: tokens and polls.
#[async_trait]
pub trait Polls: Clone + Send + Sync + 'static {
    /// A background token from the rate limit.
    async fn token(&self) -> Permit;

    /// One poll of `query` with a token already taken; its answer reaches
    /// the watchers through [`Watches::observe`].
    async fn poll(&self, query: &JobQuery, permit: Permit) -> Result<(), GatewayError>;
}

impl Watches {
    /// Subscribes to `query`'s poller, creating it if needed, and starts the
    /// scheduler (spending `polls`) if it was idle.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        query: &JobQuery,
        polls: &impl Polls,
    ) -> watch::Receiver<Latest> {
        let mut pollers = self.lock();
        let receiver = match pollers.by_query.get(query) {
            Some(poller) => poller.latest.subscribe(),
            None => {
                let (latest, receiver) = watch::channel(None);
                pollers.next_id += 1;
                let poller = Poller {
                    id: pollers.next_id,
                    latest,
                    last_answer: None,
                    in_flight: false,
                };
                pollers.by_query.insert(query.clone(), poller);
                receiver
            }
        };
        let start = !pollers.scheduler_running;
        pollers.scheduler_running = true;
        drop(pollers);
        self.wake.notify_one();
        if start {
            tokio::spawn(schedule(self.clone(), polls.clone()));
        }
        receiver
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
                && (before.version == observation.version || before.sent > observation.sent)
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

    /// Decides the scheduler's next step, dropping pollers nobody watches.
    fn next(&self, now: Instant) -> Next {
        let interval = self.settings.poll_interval;
        let mut pollers = self.lock();
        pollers
            .by_query
            .retain(|_, poller| poller.latest.receiver_count() > 0);
        if pollers.by_query.is_empty() || *self.closing.borrow() {
            pollers.scheduler_running = false;
            return Next::Stop;
        }
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

    /// Picks the due job AWS answered about longest ago (never-polled jobs
    /// first), marks it in flight and returns it with its poller's id.
    fn take_due(&self, now: Instant) -> Option<(JobQuery, u64)> {
        let interval = self.settings.poll_interval;
        let mut pollers = self.lock();
        let (query, poller) = pollers
            .by_query
            .iter_mut()
            .filter(|(query, poller)| self.polled_here(query, poller))
            .filter(|(_, p)| p.due_at(interval, now).is_some_and(|due| due <= now))
            .min_by_key(|(_, p)| p.last_answer)?;
        poller.in_flight = true;
        Some((query.clone(), poller.id))
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

    /// The scheduler task ended by panicking: let the next subscriber start
    /// a new one.
    fn scheduler_failed(&self) {
        self.lock().scheduler_running = false;
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
    let _guard = SchedulerGuard(&watches);
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
                let Some((query, poller)) = watches.take_due(Instant::now()) else {
                    held = Some(permit);
                    continue;
                };
                let (watches, polls) = (watches.clone(), polls.clone());
                tokio::spawn(async move {
                    let _done = PollDone(&watches, &query, poller);
                    if let Err(err) = polls.poll(&query, permit).await
                        && worth_reporting(&err)
                    {
                        let failed = || Observation::new(Observed::Failed(err), Instant::now());
                        watches.observe(&query, failed);
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

/// Lets a new scheduler start if this one dies by panicking (a normal end
/// is recorded by [`Watches::next`], under the pollers' lock).
struct SchedulerGuard<'a>(&'a Watches);

impl Drop for SchedulerGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.scheduler_failed();
        }
    }
}
