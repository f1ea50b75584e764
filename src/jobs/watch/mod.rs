//! Watches: many subscribers follow a job while AWS is polled once for it.
//!
//! - One **poller** per question ([`JobQuery`]) is shared by every stream
//!   watching it. It holds the latest [`Observation`] in a `tokio::sync::watch`
//!   channel: a subscriber that falls behind skips to the newest state
//!   (intermediate states are coalesced, never reordered) and memory does not
//!   grow with its backlog.
//! - One **scheduler** task spends the poll budget: it takes background
//!   tokens from the shared limiter (calls go first; polls keep a minimum
//!   share) and gives each to the due job that AWS answered about longest
//!   ago, so when the budget is short, staleness is spread evenly. COMPLETED,
//!   CANCELED and deleted jobs are not polled. The scheduler stops when no
//!   poller is left and starts again with the next subscriber.
//! - Every AWS answer about a watched job, from a poll or from a client's
//!   DescribeJob, feeds its poller and the cache alike (see [`crate::jobs`]).
//! - A job state's **version** is a hash of its wire encoding: the same state
//!   has the same version on every replica, so a client can resume anywhere.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use prost::Message as _;
use tokio::{
    sync::{Notify, watch},
    time::{Instant, Sleep},
};
use tokio_stream::{StreamExt as _, StreamMap, wrappers::WatchStream};

use crate::{
    error::{GatewayError, WatchScope},
    grpc::validate::WatchTargets,
    pb,
    upstream::{JobQuery, UpstreamErrorKind},
};

/// How watches behave and what they may cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// How often each watched active job is polled when the budget allows.
    pub poll_interval: Duration,
    /// A stream with no event for this long gets a heartbeat.
    pub heartbeat: Duration,
    /// Distinct jobs one stream may watch.
    pub max_jobs: usize,
    /// Open streams, gateway-wide.
    pub max_streams: usize,
    /// Open streams per client connection.
    pub max_streams_per_connection: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            heartbeat: Duration::from_secs(15),
            max_jobs: 100,
            max_streams: 20_000,
            max_streams_per_connection: 1_000,
        }
    }
}

/// What the gateway last saw of a job.
#[derive(Debug)]
pub struct Observation {
    /// Identifies the state: a hash of its wire form.
    pub version: u64,
    /// The state.
    pub state: Observed,
    /// When AWS answered (wall clock, for clients).
    pub observed_at: SystemTime,
    /// When the request that got this answer was sent: a later request sees
    /// a state at least as new, so older requests never overwrite newer ones.
    sent: Instant,
    /// The version this observation replaced and how the two differ.
    previous: Option<(u64, Changes)>,
}

/// A job's state, or why there is none.
#[derive(Debug, Clone)]
pub enum Observed {
    /// DescribeJob's answer.
    Found(Arc<pb::DescribeJobResponse>),
    /// AWS says the job does not exist (it was deleted); final.
    Gone(GatewayError),
    /// The gateway could not read the job; it keeps trying.
    Failed(GatewayError),
}

impl Observation {
    /// A state seen in an answer to a request sent at `sent`.
    pub fn new(state: Observed, sent: Instant, answered: Instant) -> Self {
        let version = version_of(&state);
        let observed_at = SystemTime::now()
            .checked_sub(answered.elapsed())
            .unwrap_or_else(SystemTime::now);
        Self {
            version,
            state,
            observed_at,
            sent,
            previous: None,
        }
    }

    /// Whether no further change is expected: COMPLETED, CANCELED or gone.
    pub fn is_final(&self) -> bool {
        use pb::job::Status;
        match &self.state {
            Observed::Found(response) => matches!(
                response.job.as_ref().map(|job| job.status()),
                Some(Status::Completed | Status::Canceled)
            ),
            Observed::Gone(_) => true,
            Observed::Failed(_) => false,
        }
    }
}

/// What kind of change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The first state on this stream: nothing to compare with.
    Current,
    /// The job's status changed.
    StatusChanged,
    /// Only the rollout's counters and `lastUpdatedAt` changed.
    Progress,
    /// Other fields changed.
    Updated,
    /// The job no longer exists.
    Gone,
    /// The job could not be read.
    Failed,
}

/// How one state differs from the one before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The kind of change.
    pub kind: ChangeKind,
    /// The top-level job fields (JSON names) that differ.
    pub fields: Vec<&'static str>,
}

impl Changes {
    /// How `next` differs from `before` (`None`: nothing sent before).
    pub fn between(before: Option<&Observed>, next: &Observed) -> Self {
        let kind_only = |kind| Self {
            kind,
            fields: Vec::new(),
        };
        match (before, next) {
            (_, Observed::Gone(_)) => kind_only(ChangeKind::Gone),
            (_, Observed::Failed(_)) => kind_only(ChangeKind::Failed),
            (Some(Observed::Found(a)), Observed::Found(b)) => {
                let fields = changed_fields(a, b);
                let kind = if fields.contains(&"status") {
                    ChangeKind::StatusChanged
                } else if !fields.is_empty()
                    && fields
                        .iter()
                        .all(|f| matches!(*f, "jobProcessDetails" | "lastUpdatedAt"))
                {
                    ChangeKind::Progress
                } else {
                    ChangeKind::Updated
                };
                Self { kind, fields }
            }
            (_, Observed::Found(_)) => kind_only(ChangeKind::Current),
        }
    }
}

/// Lists the fields of `pb::Job` (by JSON name) that differ between two
/// answers; `documentSource` (beside the job) counts as one of them.
macro_rules! job_fields {
    ($($field:ident => $json:literal),* $(,)?) => {
        /// The JSON names of every compared job field.
        #[cfg(test)]
        const JOB_FIELDS: &[&str] = &[$($json),*];

        fn changed_fields(a: &pb::DescribeJobResponse, b: &pb::DescribeJobResponse) -> Vec<&'static str> {
            let mut fields = Vec::new();
            if a.document_source != b.document_source {
                fields.push("documentSource");
            }
            let empty = pb::Job::default();
            let (a, b) = (a.job.as_ref().unwrap_or(&empty), b.job.as_ref().unwrap_or(&empty));
            $(if a.$field != b.$field { fields.push($json); })*
            fields
        }
    };
}

job_fields! {
    job_arn => "jobArn",
    job_id => "jobId",
    target_selection => "targetSelection",
    status => "status",
    force_canceled => "forceCanceled",
    reason_code => "reasonCode",
    comment => "comment",
    targets => "targets",
    description => "description",
    presigned_url_config => "presignedUrlConfig",
    job_executions_rollout_config => "jobExecutionsRolloutConfig",
    abort_config => "abortConfig",
    created_at => "createdAt",
    last_updated_at => "lastUpdatedAt",
    completed_at => "completedAt",
    job_process_details => "jobProcessDetails",
    timeout_config => "timeoutConfig",
    namespace_id => "namespaceId",
    job_template_arn => "jobTemplateArn",
    job_executions_retry_config => "jobExecutionsRetryConfig",
    document_parameters => "documentParameters",
    is_concurrent => "isConcurrent",
    scheduling_config => "schedulingConfig",
    scheduled_job_rollouts => "scheduledJobRollouts",
    destination_package_versions => "destinationPackageVersions",
    unrecognized_values => "unrecognizedValues",
}

/// A state's version: FNV-1a over its wire encoding (maps are ordered, so
/// the encoding is the same on every replica), or over the error code.
fn version_of(state: &Observed) -> u64 {
    let bytes = match state {
        Observed::Found(response) => response.encode_to_vec(),
        Observed::Gone(_) => b"gone".to_vec(),
        Observed::Failed(err) => format!("failed:{:?}", err.code()).into_bytes(),
    };
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

type Latest = Option<Arc<Observation>>;

/// One shared poller: its subscribers' channel and its place in the schedule.
struct Poller {
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
struct Pollers {
    by_query: HashMap<JobQuery, Poller>,
    scheduler_running: bool,
    next_id: u64,
}

/// What the scheduler should do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A job is due: take a token, then [`Watches::take_due`].
    Poll,
    /// Nothing is due before this instant (`None`: until woken).
    Wait(Option<Instant>),
    /// No poller is left; the scheduler ends.
    Stop,
}

/// All watches of a gateway: pollers, caps and the shutdown signal.
pub struct Watches {
    settings: WatchSettings,
    pollers: Mutex<Pollers>,
    /// Wakes the scheduler: a subscriber came or went, a poll finished.
    wake: Notify,
    streams: AtomicUsize,
    per_connection: Mutex<HashMap<SocketAddr, usize>>,
    closing: watch::Sender<bool>,
}

impl Watches {
    /// No watches yet.
    pub fn new(settings: WatchSettings) -> Self {
        Self {
            settings,
            pollers: Mutex::default(),
            wake: Notify::new(),
            streams: AtomicUsize::new(0),
            per_connection: Mutex::default(),
            closing: watch::Sender::new(false),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &WatchSettings {
        &self.settings
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// Jobs polled for at least one subscriber now.
    pub fn pollers(&self) -> usize {
        self.lock().by_query.len()
    }

    fn lock(&self) -> MutexGuard<'_, Pollers> {
        // Plain data updated under the lock; a panic cannot leave it torn.
        self.pollers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends every stream with UNAVAILABLE and refuses new ones (shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.wake.notify_one();
    }

    /// Counts a new stream against the caps.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
    ) -> Result<StreamTicket, GatewayError> {
        if *self.closing.borrow() {
            return Err(GatewayError::ShuttingDown);
        }
        let limit = self.settings.max_streams;
        if self.streams.fetch_add(1, Ordering::SeqCst) >= limit {
            self.streams.fetch_sub(1, Ordering::SeqCst);
            return Err(GatewayError::TooManyWatches {
                limit,
                scope: WatchScope::Gateway,
            });
        }
        // From here on, dropping the ticket gives the place back.
        let mut ticket = StreamTicket {
            watches: self.clone(),
            peer: None,
        };
        if let Some(peer) = peer {
            let limit = self.settings.max_streams_per_connection;
            let mut per_connection = self
                .per_connection
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let open = per_connection.entry(peer).or_default();
            if *open >= limit {
                return Err(GatewayError::TooManyWatches {
                    limit,
                    scope: WatchScope::Connection,
                });
            }
            *open += 1;
            ticket.peer = Some(peer);
        }
        Ok(ticket)
    }

    /// Subscribes to `query`'s poller, creating it if needed. Also says
    /// whether the caller must start the scheduler.
    pub(crate) fn subscribe(&self, query: &JobQuery) -> (watch::Receiver<Latest>, bool) {
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
        (receiver, start)
    }

    /// Feeds an observation of `query` to its poller, if anyone watches it
    /// (`make` runs only then): subscribers see it if its version is new and
    /// no newer request's answer is already there. Counts as a poll.
    pub(crate) fn observe(&self, query: &JobQuery, make: impl FnOnce() -> Observation) {
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
    pub(crate) fn next(&self, now: Instant) -> Next {
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
            .values()
            .filter_map(|p| p.due_at(interval, now))
            .min();
        if earliest.is_some_and(|due| due <= now) {
            return Next::Poll;
        }
        Next::Wait(earliest)
    }

    /// Picks the due job AWS answered about longest ago (never-polled jobs
    /// first), marks it in flight and returns it with its poller's id.
    pub(crate) fn take_due(&self, now: Instant) -> Option<(JobQuery, u64)> {
        let interval = self.settings.poll_interval;
        let mut pollers = self.lock();
        let (query, poller) = pollers
            .by_query
            .iter_mut()
            .filter(|(_, p)| p.latest.receiver_count() > 0)
            .filter(|(_, p)| p.due_at(interval, now).is_some_and(|due| due <= now))
            .min_by_key(|(_, p)| p.last_answer)?;
        poller.in_flight = true;
        Some((query.clone(), poller.id))
    }

    /// A poll of `query` by poller `id` ended (however it ended).
    pub(crate) fn poll_done(&self, query: &JobQuery, id: u64) {
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
    pub(crate) fn scheduler_failed(&self) {
        self.lock().scheduler_running = false;
    }

    /// Waits until woken, `until` passes, or shutdown starts.
    pub(crate) async fn idle(&self, until: Option<Instant>) {
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
    pub(crate) async fn closed(&self) {
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

/// A stream's place under the caps; gives it back when dropped.
pub(crate) struct StreamTicket {
    watches: Arc<Watches>,
    peer: Option<SocketAddr>,
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        self.watches.streams.fetch_sub(1, Ordering::SeqCst);
        if let Some(peer) = self.peer {
            let mut per_connection = self
                .watches
                .per_connection
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(open) = per_connection.get_mut(&peer) {
                *open -= 1;
                if *open == 0 {
                    per_connection.remove(&peer);
                }
            }
        }
        // Its pollers may have no subscriber left.
        self.watches.wake.notify_one();
    }
}

/// What a watch stream sends.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A job's state, first or changed.
    Job {
        /// The job.
        job_id: String,
        /// Its state.
        observation: Arc<Observation>,
        /// How it differs from what this stream sent before.
        changes: Changes,
        /// No more events follow for this job on this stream.
        last: bool,
    },
    /// Nothing happened for a while.
    Heartbeat {
        /// Jobs of the stream that are not final yet.
        watching: usize,
    },
}

/// One job of a stream.
struct Watched {
    job_id: String,
    /// The last state sent on this stream.
    sent: Option<Arc<Observation>>,
    /// The version the client said it saw, until the first state arrives.
    resume_from: Option<u64>,
}

/// One watch stream: its jobs' channels, what it sent, its heartbeat.
pub struct Subscription {
    updates: StreamMap<usize, WatchStream<Latest>>,
    jobs: Vec<Watched>,
    heartbeat_every: Duration,
    heartbeat: Pin<Box<Sleep>>,
    /// Turns true when the gateway shuts down.
    closing: watch::Receiver<bool>,
    ended: bool,
    _ticket: StreamTicket,
}

impl Subscription {
    pub(crate) fn new(
        watches: Arc<Watches>,
        ticket: StreamTicket,
        targets: WatchTargets,
        receivers: Vec<watch::Receiver<Latest>>,
    ) -> Self {
        let mut updates = StreamMap::with_capacity(receivers.len());
        for (index, receiver) in receivers.into_iter().enumerate() {
            updates.insert(index, WatchStream::new(receiver));
        }
        let jobs = targets
            .0
            .into_iter()
            .map(|(query, resume_from)| Watched {
                job_id: query.job_id,
                sent: None,
                resume_from,
            })
            .collect();
        let heartbeat_every = watches.settings.heartbeat;
        Self {
            updates,
            jobs,
            heartbeat_every,
            heartbeat: Box::pin(tokio::time::sleep(heartbeat_every)),
            closing: watches.closing.subscribe(),
            ended: false,
            _ticket: ticket,
        }
    }

    /// Jobs of the stream that are not final yet.
    pub fn watching(&self) -> usize {
        self.updates.len()
    }

    /// The next event; `None` once every job is final. At shutdown, one
    /// `ShuttingDown` error and then `None`.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, GatewayError>> {
        loop {
            if self.ended || self.updates.is_empty() {
                return None;
            }
            if *self.closing.borrow_and_update() {
                self.ended = true;
                return Some(Err(GatewayError::ShuttingDown));
            }
            tokio::select! {
                biased;
                changed = self.closing.changed() => {
                    // The sender lives as long as this stream's ticket; if
                    // it were gone, the gateway would be going away too.
                    if changed.is_err() {
                        self.ended = true;
                        return Some(Err(GatewayError::ShuttingDown));
                    }
                }
                update = self.updates.next() => {
                    let Some((index, Some(observation))) = update else { continue };
                    if let Some(event) = self.event(index, observation) {
                        self.heartbeat.as_mut().reset(Instant::now() + self.heartbeat_every);
                        return Some(Ok(event));
                    }
                }
                () = self.heartbeat.as_mut() => {
                    self.heartbeat.as_mut().reset(Instant::now() + self.heartbeat_every);
                    return Some(Ok(WatchEvent::Heartbeat { watching: self.watching() }));
                }
            }
        }
    }

    /// The event for job `index`'s new state, if this stream should send one.
    fn event(&mut self, index: usize, observation: Arc<Observation>) -> Option<WatchEvent> {
        let watched = &mut self.jobs[index];
        let is_final = observation.is_final();
        let unchanged = match &watched.sent {
            Some(sent) => sent.version == observation.version,
            None => watched.resume_from == Some(observation.version),
        };
        if unchanged {
            if watched.sent.is_none() {
                watched.sent = Some(observation);
            }
            if is_final {
                // The client saw the final state before it reconnected.
                self.updates.remove(&index);
            }
            return None;
        }
        let changes = match (&watched.sent, &observation.previous) {
            (Some(sent), Some((previous, changes))) if sent.version == *previous => changes.clone(),
            (sent, _) => Changes::between(sent.as_ref().map(|s| &s.state), &observation.state),
        };
        watched.sent = Some(observation.clone());
        if is_final {
            self.updates.remove(&index);
        }
        Some(WatchEvent::Job {
            job_id: watched.job_id.clone(),
            observation,
            changes,
            last: is_final,
        })
    }
}

/// Whether a failed poll is news for subscribers: AWS throttling and the
/// gateway's own rate limit only delay the next poll.
pub(crate) fn worth_reporting(err: &GatewayError) -> bool {
    match err {
        GatewayError::RateLimited { .. } => false,
        GatewayError::Upstream { source, .. } => source.kind != UpstreamErrorKind::Throttled,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(status: pb::job::Status, succeeded: i32) -> Observed {
        Observed::Found(Arc::new(pb::DescribeJobResponse {
            document_source: None,
            job: Some(pb::Job {
                job_id: Some("j".into()),
                status: Some(status as i32),
                job_process_details: Some(pb::JobProcessDetails {
                    number_of_succeeded_things: Some(succeeded),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }))
    }

    #[test]
    fn every_job_field_of_the_contract_is_compared() {
        let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
        let job = set
            .file
            .iter()
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "Job")
            .unwrap();
        let mut contract: Vec<&str> = job.field.iter().map(|f| f.json_name()).collect();
        let mut compared = JOB_FIELDS.to_vec();
        contract.sort_unstable();
        compared.sort_unstable();
        assert_eq!(compared, contract);
    }

    #[test]
    fn changes_are_named_by_kind_and_field() {
        use pb::job::Status::*;
        let a = found(InProgress, 1);
        let progress = Changes::between(Some(&a), &found(InProgress, 2));
        assert_eq!(progress.kind, ChangeKind::Progress);
        assert_eq!(progress.fields, vec!["jobProcessDetails"]);
        let done = Changes::between(Some(&a), &found(Completed, 2));
        assert_eq!(done.kind, ChangeKind::StatusChanged);
        assert_eq!(done.fields, vec!["status", "jobProcessDetails"]);
        assert_eq!(Changes::between(None, &a).kind, ChangeKind::Current);
    }

    #[test]
    fn equal_states_have_equal_versions() {
        use pb::job::Status::*;
        let v = |o: &Observed| version_of(o);
        assert_eq!(v(&found(InProgress, 1)), v(&found(InProgress, 1)));
        assert_ne!(v(&found(InProgress, 1)), v(&found(InProgress, 2)));
    }
}
