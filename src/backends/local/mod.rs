//! The roles kept in this process: one gateway on its own.

pub mod cache;
pub mod limit;
pub mod polls;

use std::sync::Arc;

use crate::{
    domain::{
        Backend, OperationRoles, cache::CacheSettings, limit::LimiterSettings,
        watch::ownership::PollOwnership,
    },
    upstream::Operation,
};

/// Every role in this process, for a gateway on its own: a bucket and a
/// cache for each operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Backend for Local {
    async fn operation<O: Operation>(
        &self,
        limiter: &LimiterSettings,
        cache: &CacheSettings,
    ) -> OperationRoles<O> {
        OperationRoles {
            limit: Arc::new(limit::LocalRateLimit::new(limiter.clone())),
            cache: Arc::new(cache::LocalCache::<O>::new(cache)),
        }
    }

    fn polls(&self) -> Arc<dyn PollOwnership> {
        Arc::new(polls::LocalPolls)
    }
}
