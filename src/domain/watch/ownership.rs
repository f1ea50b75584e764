//! The poll ownership role: which process polls a watched job, and how an
//! answer it gets reaches the job's watchers.
//!
//! [`crate::backends::local::polls`] is a gateway on its own: it polls every
//! job watched here and hands each answer straight to this process's
//! subscribers. [`crate::backends::redis::polls`] shares the pollers of a set of replicas: one lease per job, answers
//! published to every replica.

use std::sync::Weak;

use crate::{
    domain::watch::{Watches, observation::Observation},
    upstream::JobQuery,
};

/// An observation made on demand (only if someone may see it).
pub type MakeObservation<'a> = Box<dyn FnOnce() -> Observation + 'a>;

/// Who polls which job, and the fan-out of what a poll finds.
pub trait PollOwnership: Send + Sync + 'static {
    /// Starts the role's background work for `watches`.
    fn start(&self, _watches: Weak<Watches>) {}

    /// `query` has a new subscriber in this process.
    fn watched(&self, _query: &JobQuery) {}

    /// Whether this process polls `query` (`watched_here`: it has
    /// subscribers in this process).
    fn owns(&self, query: &JobQuery, watched_here: bool) -> bool;

    /// Hands an observation of `query` made by this process to the job's
    /// watchers, wherever they are.
    fn publish(&self, watches: &Watches, query: &JobQuery, make: MakeObservation<'_>);

    /// The poll leases this process holds among replicas (none alone).
    fn leases_held(&self) -> usize {
        0
    }
}
