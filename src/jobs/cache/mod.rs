//! The answer cache in front of AWS (moka): keyed by the whole question
//! ([`JobQuery`]: job id and `before_substitution`), with a lifetime per
//! entry, a size bound in bytes, and coalescing of concurrent misses.
//!
//! Jobs in a terminal status rarely change, so they are kept longer than
//! active ones; "no such job" is kept briefly (a negative entry) so a client
//! polling a wrong id does not cost AWS a call each time. Other failures are
//! never stored, though callers that were waiting on the same AWS call all
//! receive it.

use std::{future::Future, sync::Arc, time::Duration};

use moka::{Expiry, future::Cache, ops::compute::Op};
use prost::Message;
use tokio::time::Instant;

use crate::{
    error::GatewayError,
    pb,
    upstream::{JobQuery, UpstreamError, UpstreamErrorKind},
};

/// How long answers are kept, and how much memory they may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Lifetime of an answer about a job that may still change.
    pub ttl: Duration,
    /// Lifetime of an answer about a COMPLETED or CANCELED job.
    pub terminal_ttl: Duration,
    /// Lifetime of a "no such job" answer.
    pub not_found_ttl: Duration,
    /// Upper bound on the cached answers' size (estimated, see [`weight`]).
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5),
            terminal_ttl: Duration::from_secs(300),
            not_found_ttl: Duration::from_secs(2),
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What AWS said.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The job, already in its wire form (converted once, served many times).
    Found(Arc<pb::DescribeJobResponse>),
    /// AWS said there is no such job.
    NotFound(UpstreamError),
}

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    /// What AWS said.
    pub answer: Answer,
    /// When AWS answered.
    pub answered_at: Instant,
}

/// The cache.
#[derive(Clone)]
pub struct JobCache {
    entries: Cache<JobQuery, Arc<Entry>>,
}

impl JobCache {
    /// An empty cache with `settings`.
    pub fn new(settings: &CacheSettings) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|key: &JobQuery, entry: &Arc<Entry>| weight(key, entry))
            .expire_after(Lifetimes(settings.clone()))
            .build();
        Self { entries }
    }

    /// The cached entry for `query`, or the one `fetch` produces. Callers
    /// arriving while a fetch for the same question is running wait for it
    /// and share its result, failures included; failures are not stored.
    ///
    /// A fetch that panics fails with INTERNAL for everyone waiting on it,
    /// and nothing is stored. If the caller running the fetch goes away, a
    /// waiting caller runs it again; moka panics when that happens 200 times
    /// to one waiter (callers with very short deadlines taking turns), and
    /// that waiter gets UNAVAILABLE instead.
    pub async fn get_or_fetch<F>(
        &self,
        query: &JobQuery,
        fetch: F,
    ) -> Result<Arc<Entry>, Arc<GatewayError>>
    where
        F: Future<Output = Result<Arc<Entry>, GatewayError>>,
    {
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

    /// The cached entry for `query`, if there is one; never fetches.
    pub async fn peek(&self, query: &JobQuery) -> Option<Arc<Entry>> {
        self.entries.get(query).await
    }

    /// Stores `entry` for `query` unless the cache holds a newer answer.
    pub async fn store(&self, query: &JobQuery, entry: Arc<Entry>) {
        self.entries
            .entry_by_ref(query)
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) if e.value().answered_at > entry.answered_at => Op::Nop,
                    _ => Op::Put(entry),
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Drops the entry for `query` if AWS answered it before `instant`, so
    /// the next lookup fetches, or joins a fetch still in flight.
    pub async fn forget_older_than(&self, query: &JobQuery, instant: Instant) {
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

    /// Entries stored (after pending maintenance has run).
    #[cfg(test)]
    async fn len(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}

/// Per-entry lifetimes by what the answer says.
struct Lifetimes(CacheSettings);

impl Lifetimes {
    fn of(&self, entry: &Entry) -> Duration {
        use pb::job::Status as JobStatus;
        match &entry.answer {
            Answer::NotFound(_) => self.0.not_found_ttl,
            Answer::Found(response) => {
                let status = response.job.as_ref().map(|job| job.status());
                match status {
                    Some(JobStatus::Completed | JobStatus::Canceled) => self.0.terminal_ttl,
                    _ => self.0.ttl,
                }
            }
        }
    }
}

impl Expiry<JobQuery, Arc<Entry>> for Lifetimes {
    fn expire_after_create(
        &self,
        _key: &JobQuery,
        entry: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.of(entry))
    }

    fn expire_after_update(
        &self,
        _key: &JobQuery,
        entry: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(entry))
    }
}

/// Fixed cost of an entry besides its message: the key, the entry, moka's
/// bookkeeping and allocator overhead.
const ENTRY_OVERHEAD: u32 = 1536;

/// An entry's estimated memory use in bytes: the decoded message's inline
/// size, its protobuf encoding doubled (heap strings and vectors, each with
/// allocator overhead), and a fixed overhead. Calibrated against the
/// process's RSS per cached job measured in BENCHMARKS.md.
pub fn weight(key: &JobQuery, entry: &Entry) -> u32 {
    let message = match &entry.answer {
        Answer::Found(response) => std::mem::size_of::<pb::DescribeJobResponse>()
            .saturating_add(response.encoded_len().saturating_mul(2)),
        Answer::NotFound(_) => 0,
    };
    u32::try_from(message + key.job_id.len())
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: Option<pb::job::Status>) -> Entry {
        let answer = match status {
            Some(status) => Answer::Found(Arc::new(pb::DescribeJobResponse {
                job: Some(pb::Job {
                    status: Some(status as i32),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            None => Answer::NotFound(UpstreamError::new(UpstreamErrorKind::NotFound)),
        };
        Entry {
            answer,
            answered_at: Instant::now(),
        }
    }

    #[test]
    fn terminal_jobs_live_longer_and_missing_ones_shortest() {
        use pb::job::Status::*;
        let lifetimes = Lifetimes(CacheSettings::default());
        assert_eq!(
            lifetimes.of(&entry(Some(InProgress))),
            Duration::from_secs(5)
        );
        assert_eq!(
            lifetimes.of(&entry(Some(Scheduled))),
            Duration::from_secs(5)
        );
        assert_eq!(
            lifetimes.of(&entry(Some(Completed))),
            Duration::from_secs(300)
        );
        assert_eq!(
            lifetimes.of(&entry(Some(Canceled))),
            Duration::from_secs(300)
        );
        assert_eq!(lifetimes.of(&entry(None)), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_size_bound_evicts_entries() {
        let each = weight(
            &JobQuery {
                job_id: "job-99".into(),
                before_substitution: None,
            },
            &entry(Some(pb::job::Status::InProgress)),
        );
        let cache = JobCache::new(&CacheSettings {
            max_bytes: 10 * u64::from(each),
            ..CacheSettings::default()
        });
        for i in 0..100 {
            let query = JobQuery {
                job_id: format!("job-{i}"),
                before_substitution: None,
            };
            let fetched = cache
                .get_or_fetch(&query, async {
                    Ok(Arc::new(entry(Some(pb::job::Status::InProgress))))
                })
                .await;
            assert!(fetched.is_ok());
        }
        let len = cache.len().await;
        assert!((1..=10).contains(&len), "{len} entries kept");
    }
}
