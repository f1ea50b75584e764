//! The roles shared by the replicas through Redis, each behind the
//! [`Failover`] to its in-process stand-in for when Redis is unreachable.

use std::sync::Arc;

use super::{
    Shared,
    cache::SharedCache,
    failover::{AlonePolls, Failover},
    limit::SharedRateLimit,
    polls::SharedPolls,
};
use crate::{
    domain::{
        Backend, OperationRoles,
        cache::{AnswerCache, CacheSettings},
        limit::{LimiterSettings, RateLimit},
        watch::ownership::PollOwnership,
    },
    upstream::Operation,
};

/// Every role shared with the other replicas through Redis: each
/// operation's bucket and cache in its own key space, with in-process
/// stand-ins for when Redis is unreachable (the rate limit's at
/// `--redis-fallback-rate`, its burst in proportion).
#[derive(Clone)]
pub struct Replicas(pub Arc<Shared>);

impl Backend for Replicas {
    async fn operation<O: Operation>(
        &self,
        configured: &LimiterSettings,
        cache: &CacheSettings,
    ) -> OperationRoles<O> {
        let shared = &self.0;
        // The replica's own rate while Redis is away, at most the
        // operation's configured one.
        let fallback_rate = shared.settings().fallback_rate.min(configured.rate);
        let fallback = LimiterSettings {
            rate: fallback_rate,
            burst: ((f64::from(configured.burst) * fallback_rate / configured.rate).round() as u32)
                .max(1),
            ..configured.clone()
        };
        let limit = SharedRateLimit::new(shared.clone(), O::SPACE, configured.clone(), fallback);
        let cache = SharedCache::<O>::new(shared.clone(), cache.clone()).await;
        let limit_alone: Arc<dyn RateLimit> = limit.alone();
        let limit: Arc<dyn RateLimit> = Arc::new(limit);
        let cache_alone: Arc<dyn AnswerCache<O>> = Arc::new(cache.alone());
        let cache: Arc<dyn AnswerCache<O>> = Arc::new(cache);
        OperationRoles {
            limit: Arc::new(Failover::new(shared.clone(), limit, limit_alone)),
            cache: Arc::new(Failover::new(shared.clone(), cache, cache_alone)),
        }
    }

    fn polls(&self) -> Arc<dyn PollOwnership> {
        let shared = &self.0;
        let polls: Arc<dyn PollOwnership> = Arc::new(SharedPolls::new(shared.clone()));
        let alone: Arc<dyn PollOwnership> = Arc::new(AlonePolls::new(shared.clone()));
        Arc::new(Failover::new(shared.clone(), polls, alone))
    }
}
