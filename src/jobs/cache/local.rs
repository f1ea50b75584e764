//! The in-process answer cache (moka): a lifetime per entry, a size bound in
//! bytes, and coalescing of concurrent misses within this process.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use moka::{Expiry, future::Cache, ops::compute::Op};
use tokio::time::Instant;

use super::{AnswerCache, CacheSettings, Fetch, weight};
use crate::{
    error::GatewayError,
    jobs::answer::JobAnswer,
    upstream::{JobQuery, UpstreamErrorKind},
};

/// Answers kept in this process.
#[derive(Clone)]
pub struct LocalCache {
    entries: Cache<JobQuery, Arc<JobAnswer>>,
}

impl LocalCache {
    /// An empty cache with `settings`.
    pub fn new(settings: &CacheSettings) -> Self {
        Self::with_longest_stay(settings, None)
    }

    /// An empty cache with `settings` whose entries stay at most `longest`
    /// (a first tier in front of a shared cache).
    pub fn with_longest_stay(settings: &CacheSettings, longest: Option<Duration>) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|key: &JobQuery, answer: &Arc<JobAnswer>| weight(key, answer))
            .expire_after(Lifetimes {
                settings: settings.clone(),
                longest,
            })
            .build();
        Self { entries }
    }

    /// Entries stored (after pending maintenance has run).
    #[cfg(test)]
    async fn len(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}

#[async_trait]
impl AnswerCache for LocalCache {
    /// A fetch that panics fails with INTERNAL for everyone waiting on it,
    /// and nothing is stored. If the caller running the fetch goes away, a
    /// waiting caller runs it again; moka panics when that happens 200 times
    /// to one waiter (callers with very short deadlines taking turns), and
    /// that waiter gets UNAVAILABLE instead.
    async fn get_or_fetch(
        &self,
        query: &JobQuery,
        fetch: Fetch<'_>,
    ) -> Result<Arc<JobAnswer>, Arc<GatewayError>> {
        use futures_util::FutureExt as _;
        use std::panic::AssertUnwindSafe;
        let fetch = async {
            AssertUnwindSafe(fetch)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(GatewayError::upstream(
                        &query.job_id,
                        UpstreamErrorKind::Internal,
                        "the gateway failed while asking AWS about this job",
                    ))
                })
        };
        let lookup = self.entries.try_get_with_by_ref(query, fetch);
        AssertUnwindSafe(lookup)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(Arc::new(GatewayError::upstream(
                    &query.job_id,
                    UpstreamErrorKind::Unavailable,
                    "the AWS call this request was waiting for was abandoned by other callers \
                 too many times; retry",
                )))
            })
    }

    async fn peek(&self, query: &JobQuery) -> Option<Arc<JobAnswer>> {
        self.entries.get(query).await
    }

    async fn store(&self, query: &JobQuery, answer: Arc<JobAnswer>) {
        self.entries
            .entry_by_ref(query)
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) if e.value().asked_at > answer.asked_at => Op::Nop,
                    _ => Op::Put(answer),
                };
                std::future::ready(op)
            })
            .await;
    }

    async fn forget_older_than(&self, query: &JobQuery, instant: Instant) {
        self.entries
            .entry_by_ref(query)
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) if e.value().answered_at < instant => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }
}

/// Per-entry lifetimes by what the answer says, counted from when AWS gave
/// it, and at most `longest` from now.
struct Lifetimes {
    settings: CacheSettings,
    longest: Option<Duration>,
}

impl Lifetimes {
    fn remaining(&self, answer: &JobAnswer) -> Duration {
        let left = self.settings.lifetime(answer).saturating_sub(answer.age());
        self.longest.map_or(left, |longest| left.min(longest))
    }
}

impl Expiry<JobQuery, Arc<JobAnswer>> for Lifetimes {
    fn expire_after_create(
        &self,
        _key: &JobQuery,
        answer: &Arc<JobAnswer>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.remaining(answer))
    }

    fn expire_after_update(
        &self,
        _key: &JobQuery,
        answer: &Arc<JobAnswer>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.remaining(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{jobs::cache::tests::answer, pb};

    #[tokio::test]
    async fn the_size_bound_evicts_entries() {
        let each = weight(
            &JobQuery {
                job_id: "job-99".into(),
                before_substitution: None,
            },
            &answer(Some(pb::job::Status::InProgress)),
        );
        let cache = LocalCache::new(&CacheSettings {
            max_bytes: 10 * u64::from(each),
            ..CacheSettings::default()
        });
        for i in 0..100 {
            let query = JobQuery {
                job_id: format!("job-{i}"),
                before_substitution: None,
            };
            let fetched = cache
                .get_or_fetch(
                    &query,
                    Box::pin(async { Ok(Arc::new(answer(Some(pb::job::Status::InProgress)))) }),
                )
                .await;
            assert!(fetched.is_ok());
        }
        let len = cache.len().await;
        assert!((1..=10).contains(&len), "{len} entries kept");
    }
}
