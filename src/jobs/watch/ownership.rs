//! The poll ownership role: which process polls a watched job, and how an
//! answer it gets reaches the job's watchers.
//!
//! [`LocalPolls`] is a gateway on its own: it polls every job watched here
//! and hands each answer straight to this process's subscribers.

use super::Watches;
use crate::{jobs::watch::observation::Observation, upstream::JobQuery};

/// An observation made on demand (only if someone may see it).
pub type MakeObservation<'a> = Box<dyn FnOnce() -> Observation + 'a>;

/// Who polls which job, and the fan-out of what a poll finds.
pub trait PollOwnership: Send + Sync + 'static {
    /// Whether this process polls `query` (`watched_here`: it has
    /// subscribers in this process).
    fn owns(&self, query: &JobQuery, watched_here: bool) -> bool;

    /// Hands an observation of `query` made by this process to the job's
    /// watchers, wherever they are.
    fn publish(&self, watches: &Watches, query: &JobQuery, make: MakeObservation<'_>);
}

/// One gateway process: it polls what it watches, and its watchers are all
/// here.
#[derive(Debug, Default)]
pub struct LocalPolls;

impl PollOwnership for LocalPolls {
    fn owns(&self, _query: &JobQuery, watched_here: bool) -> bool {
        watched_here
    }

    fn publish(&self, watches: &Watches, query: &JobQuery, make: MakeObservation<'_>) {
        watches.deliver(query, make);
    }
}
