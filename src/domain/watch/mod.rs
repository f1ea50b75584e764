//! Watches: many subscribers follow a job while AWS is polled once for it.
//!
//! - [`observation`]: what watchers see of a job (an AWS answer or a
//!   failure), its version and how it differs from the state before.
//! - [`pollers`]: one shared poller per job and the scheduler that spends
//!   the poll budget on the job answered longest ago.
//! - [`subscription`]: watch streams, their caps and the events they send.
//! - [`ownership`]: which process polls a job, and how what it finds reaches
//!   the job's watchers.
//!
//! Every AWS answer about a watched job, from a poll or from a client's
//! DescribeJob, feeds its watchers and the cache alike (see [`crate::domain`]).

pub mod observation;
pub mod ownership;
pub mod pollers;
pub mod subscription;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, watch};

use crate::{
    domain::error::{GatewayError, WatchScope},
    upstream::{JobQuery, UpstreamErrorKind},
};
pub use observation::{ChangeKind, Changes, Observation, Observed};
use ownership::PollOwnership;
use pollers::Pollers;
use subscription::StreamTicket;
pub use subscription::{Subscription, WatchEvent};

/// A valid watch request: the distinct jobs in request order, each with the
/// version the client last saw, if it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTargets(pub Vec<(JobQuery, Option<u64>)>);

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
            max_streams_per_connection: 100,
        }
    }
}

/// All watches of a gateway: pollers, caps and the shutdown signal.
pub struct Watches {
    settings: WatchSettings,
    /// Which jobs this process polls, and where their answers go.
    ownership: Arc<dyn PollOwnership>,
    pollers: Mutex<Pollers>,
    /// Wakes the scheduler: a subscriber came or went, a poll finished.
    wake: Notify,
    streams: AtomicUsize,
    /// Polls taken so far (every few goes to the schedule, events or not).
    polls_taken: AtomicUsize,
    /// Open streams per owner (a client connection, or an identified caller).
    per_owner: Mutex<HashMap<Arc<str>, usize>>,
    closing: watch::Sender<bool>,
}

impl Watches {
    /// No watches yet; `ownership` decides which jobs this process polls.
    pub fn new(settings: WatchSettings, ownership: Arc<dyn PollOwnership>) -> Self {
        Self {
            settings,
            ownership,
            pollers: Mutex::default(),
            wake: Notify::new(),
            streams: AtomicUsize::new(0),
            polls_taken: AtomicUsize::new(0),
            per_owner: Mutex::default(),
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
        self.lock().len()
    }

    /// The poll leases this process holds among replicas.
    pub fn leases_held(&self) -> usize {
        self.ownership.leases_held()
    }

    fn lock(&self) -> MutexGuard<'_, Pollers> {
        // Plain data updated under the lock; a panic cannot leave it torn.
        self.pollers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns true when shutdown starts.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every stream with UNAVAILABLE and refuses new ones (shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.wake.notify_one();
    }

    /// Counts a new stream against the gateway's cap and its owner's.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        owner: Option<StreamOwner>,
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
            owner: None,
        };
        if let Some(owner) = owner {
            let mut per_owner = self.per_owner.lock().unwrap_or_else(|p| p.into_inner());
            let open = per_owner.entry(owner.key.clone()).or_default();
            if *open >= owner.limit {
                return Err(GatewayError::TooManyWatches {
                    limit: owner.limit,
                    scope: owner.scope,
                });
            }
            *open += 1;
            ticket.owner = Some(owner.key);
        }
        Ok(ticket)
    }
}

/// Whose streams a new stream counts against, and how many they may have.
#[derive(Debug, Clone)]
pub struct StreamOwner {
    /// The owner: a client connection or an identified caller.
    pub key: Arc<str>,
    /// Its cap on open streams.
    pub limit: usize,
    /// Which cap that is, for the refusal.
    pub scope: WatchScope,
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
