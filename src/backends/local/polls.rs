//! Poll ownership for a gateway on its own.

use crate::{
    domain::watch::{
        Watches,
        ownership::{MakeObservation, PollOwnership},
    },
    upstream::JobQuery,
};

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
