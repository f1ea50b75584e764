//! The roles shared by the replicas through Redis, each with an in-process
//! stand-in for when Redis is unreachable.

use std::sync::Arc;

use super::{Shared, cache::SharedCache, limit::SharedRateLimit, polls::SharedPolls};
use crate::domain::{JobsSettings, Roles, limit::LimiterSettings};

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
    Roles {
        limit: Arc::new(SharedRateLimit::new(
            shared.clone(),
            configured.clone(),
            fallback,
        )),
        cache: Arc::new(SharedCache::new(shared.clone(), settings.cache.clone()).await),
        polls: Arc::new(SharedPolls::new(shared)),
    }
}
