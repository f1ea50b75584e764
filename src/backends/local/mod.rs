//! The roles kept in this process: one gateway on its own.

pub mod cache;
pub mod limit;
pub mod polls;

use std::sync::Arc;

use crate::domain::{JobsSettings, Roles};

/// Every role in this process, for a gateway on its own.
pub fn roles(settings: &JobsSettings) -> Roles {
    Roles {
        limit: Arc::new(limit::LocalRateLimit::new(settings.limiter.clone())),
        cache: Arc::new(cache::LocalCache::new(&settings.cache)),
        polls: Arc::new(polls::LocalPolls),
    }
}
