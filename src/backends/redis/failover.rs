//! The one place a role shared through Redis gives way to this process:
//! while Redis answers, the role's Redis implementation decides; while it
//! does not (the connection's fallback mode, [`Shared::is_shared`]), the
//! role's in-process stand-in does, and the gateway goes on alone.
//!
//! The Redis implementations still handle an operation that Redis drops
//! half-way (a turn the rate limit was waiting for, a lease cycle); what
//! they no longer do is ask, method by method, whether Redis is there.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use tokio::time::Instant;

use super::Shared;
use crate::{
    domain::{
        answer::Answer,
        cache::{AnswerCache, Ask, Cached, Held, Usage},
        error::GatewayError,
        limit::{Permit, RateLimit, Rejected, Share},
        watch::{
            Watches,
            ownership::{MakeObservation, PollOwnership},
        },
    },
    upstream::{JobQuery, Operation},
};

/// A role (`T`, its trait) answered through Redis while Redis answers, and
/// by a stand-in in this process while it does not.
pub struct Failover<T: ?Sized> {
    shared: Arc<Shared>,
    redis: Arc<T>,
    alone: Arc<T>,
}

impl<T: ?Sized> Failover<T> {
    /// `redis` while `shared` is connected, `alone` while it is not.
    pub fn new(shared: Arc<Shared>, redis: Arc<T>, alone: Arc<T>) -> Self {
        Self {
            shared,
            redis,
            alone,
        }
    }

    /// The implementation that decides now.
    fn now(&self) -> &T {
        if self.shared.is_shared() {
            &self.redis
        } else {
            &self.alone
        }
    }
}

impl<O: Operation> Held for Failover<dyn AnswerCache<O>> {
    fn usage(&self) -> Usage {
        self.now().usage()
    }
}

#[async_trait]
impl<O: Operation> AnswerCache<O> for Failover<dyn AnswerCache<O>> {
    async fn get_or_fetch(
        &self,
        query: &O::Question,
        ask: Ask<'_, '_, O>,
    ) -> Result<Arc<Answer<O>>, Arc<GatewayError>> {
        self.now().get_or_fetch(query, ask).await
    }

    async fn peek(&self, query: &O::Question) -> Option<Arc<Answer<O>>> {
        self.now().peek(query).await
    }

    async fn cached(&self, query: &O::Question) -> Option<Cached<O>> {
        self.now().cached(query).await
    }

    async fn store(&self, query: &O::Question, answer: Arc<Answer<O>>) {
        self.now().store(query, answer).await;
    }

    async fn forget_older_than(&self, query: &O::Question, instant: Instant) {
        self.now().forget_older_than(query, instant).await;
    }
}

#[async_trait]
impl RateLimit for Failover<dyn RateLimit> {
    async fn acquire(&self, deadline: Instant, share: &Share) -> Result<Permit, Rejected> {
        self.now().acquire(deadline, share).await
    }

    async fn acquire_background(&self) -> Permit {
        self.now().acquire_background().await
    }

    /// A permit goes back to the bucket that gave it, whatever the mode now.
    fn throttled(&self, permit: Permit) {
        if permit.shared {
            self.redis.throttled(permit);
        } else {
            self.alone.throttled(permit);
        }
    }

    fn answered(&self, permit: Permit) {
        if permit.shared {
            self.redis.answered(permit);
        } else {
            self.alone.answered(permit);
        }
    }

    fn current_rate(&self) -> f64 {
        self.now().current_rate()
    }

    /// Calls waiting in either bucket (a call that began in one mode may
    /// still wait there after a switch).
    fn waiting(&self) -> usize {
        self.redis.waiting() + self.alone.waiting()
    }
}

impl PollOwnership for Failover<dyn PollOwnership> {
    /// The Redis side's lease cycle follows the mode itself: it gives its
    /// leases up when Redis goes away and takes them again when it is back.
    fn start(&self, watches: Weak<Watches>) {
        self.redis.start(watches.clone());
        self.alone.start(watches);
    }

    fn watched(&self, query: &JobQuery) {
        self.now().watched(query);
    }

    fn owns(&self, query: &JobQuery, watched_here: bool) -> bool {
        self.now().owns(query, watched_here)
    }

    fn publish(&self, watches: &Watches, query: &JobQuery, make: MakeObservation<'_>) {
        self.now().publish(watches, query, make);
    }

    fn leases_held(&self) -> usize {
        self.redis.leases_held()
    }
}

/// Poll ownership while Redis is away: this replica polls what it watches
/// and its answers go to its own watchers, ordered after everything of the
/// mode before (the connection's epoch, which each switch advances).
pub struct AlonePolls {
    shared: Arc<Shared>,
}

impl AlonePolls {
    /// The stand-in for the polls shared through `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl PollOwnership for AlonePolls {
    fn owns(&self, _query: &JobQuery, watched_here: bool) -> bool {
        watched_here
    }

    fn publish(&self, watches: &Watches, query: &JobQuery, make: MakeObservation<'_>) {
        let epoch = self.shared.epoch();
        watches.deliver(query, || {
            let mut observation = make();
            observation.order.epoch = epoch;
            observation
        });
    }
}
