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
use crate::domain::{
    JobsSettings, Roles, cache::AnswerCache, limit::LimiterSettings, limit::RateLimit,
    watch::ownership::PollOwnership,
};

/// Every role shared with the other replicas through `shared`, with
/// in-process stand-ins for when Redis is unreachable (the rate limit's at
/// `--redis-fallback-rate`, its burst in proportion).
pub async fn roles(settings: &JobsSettings, shared: Arc<Shared>) -> Roles {
    let configured = &settings.limiter;
    let fallback_rate = shared.settings().fallback_rate;
    let fallback = LimiterSettings {
        rate: fallback_rate,
        burst: ((f64::from(configured.burst) * fallback_rate / configured.rate).round() as u32)
            .max(1),
        ..configured.clone()
    };
    let limit = SharedRateLimit::new(shared.clone(), configured.clone(), fallback);
    let cache = SharedCache::new(shared.clone(), settings.cache.clone()).await;
    let limit_alone: Arc<dyn RateLimit> = limit.alone();
    let limit: Arc<dyn RateLimit> = Arc::new(limit);
    let cache_alone: Arc<dyn AnswerCache> = Arc::new(cache.alone());
    let cache: Arc<dyn AnswerCache> = Arc::new(cache);
    let polls: Arc<dyn PollOwnership> = Arc::new(SharedPolls::new(shared.clone()));
    let polls_alone: Arc<dyn PollOwnership> = Arc::new(AlonePolls::new(shared.clone()));
    Roles {
        limit: Arc::new(Failover::new(shared.clone(), limit, limit_alone)),
        cache: Arc::new(Failover::new(shared.clone(), cache, cache_alone)),
        polls: Arc::new(Failover::new(shared, polls, polls_alone)),
    }
}
