//! The answer cache role: answers kept per question ([`JobQuery`]: job id
//! and `before_substitution`) for a lifetime that depends on what they say,
//! with concurrent misses for the same question sharing one fetch.
//!
//! Jobs in a terminal status rarely change, so they are kept longer than
//! active ones; "no such job" is kept briefly (a negative entry) so a client
//! polling a wrong id does not cost AWS a call each time. Other failures are
//! never stored, though callers that were waiting on the same fetch all
//! receive it.
//!
//! [`local`] keeps answers in this process (moka).

pub mod local;
pub mod redis;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use prost::Message;
use tokio::time::Instant;

use super::answer::{JobAnswer, JobState};
use crate::{error::GatewayError, pb, upstream::JobQuery};

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

impl CacheSettings {
    /// How long `answer` may be served, counted from when AWS gave it.
    pub fn lifetime(&self, answer: &JobAnswer) -> Duration {
        match &answer.state {
            JobState::NotFound(_) => self.not_found_ttl,
            JobState::Found(_) if answer.is_terminal() => self.terminal_ttl,
            JobState::Found(_) => self.ttl,
        }
    }
}

/// A fetch of one answer from AWS, run by the cache on a miss.
pub type Fetch<'a> = BoxFuture<'a, Result<Arc<JobAnswer>, GatewayError>>;

/// Where answers are kept between calls.
#[async_trait]
pub trait AnswerCache: Send + Sync + 'static {
    /// The cached answer for `query`, or the one `fetch` produces. Callers
    /// arriving while a fetch for the same question is running wait for it
    /// and share its result, failures included; failures are not stored
    /// ("no such job" is an answer, and is).
    async fn get_or_fetch(
        &self,
        query: &JobQuery,
        fetch: Fetch<'_>,
    ) -> Result<Arc<JobAnswer>, Arc<GatewayError>>;

    /// The cached answer for `query`, if there is one; never fetches.
    async fn peek(&self, query: &JobQuery) -> Option<Arc<JobAnswer>>;

    /// Stores `answer` for `query` unless the cache holds a newer one (an
    /// answer to a later request).
    async fn store(&self, query: &JobQuery, answer: Arc<JobAnswer>);

    /// Drops the answer for `query` if AWS gave it before `instant`, so the
    /// next lookup fetches, or joins a fetch still in flight.
    async fn forget_older_than(&self, query: &JobQuery, instant: Instant);
}

/// Fixed cost of an entry besides its message: the key, the entry, moka's
/// bookkeeping and allocator overhead.
const ENTRY_OVERHEAD: u32 = 1536;

/// An entry's estimated memory use in bytes: the decoded message's inline
/// size, its protobuf encoding doubled (heap strings and vectors, each with
/// allocator overhead), and a fixed overhead. Calibrated against the
/// process's RSS per cached job measured in BENCHMARKS.md.
pub fn weight(key: &JobQuery, answer: &JobAnswer) -> u32 {
    let message = match &answer.state {
        JobState::Found(response) => std::mem::size_of::<pb::DescribeJobResponse>()
            .saturating_add(response.encoded_len().saturating_mul(2)),
        JobState::NotFound(_) => 0,
    };
    u32::try_from(message + key.job_id.len())
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{UpstreamError, UpstreamErrorKind};

    pub(super) fn answer(status: Option<pb::job::Status>) -> JobAnswer {
        let state = match status {
            Some(status) => JobState::Found(Arc::new(pb::DescribeJobResponse {
                job: Some(pb::Job {
                    status: Some(status as i32),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            None => JobState::NotFound(UpstreamError::new(UpstreamErrorKind::NotFound)),
        };
        JobAnswer::now(state)
    }

    #[test]
    fn terminal_jobs_live_longer_and_missing_ones_shortest() {
        use pb::job::Status::*;
        let settings = CacheSettings::default();
        let lifetime = |status| settings.lifetime(&answer(status));
        assert_eq!(lifetime(Some(InProgress)), Duration::from_secs(5));
        assert_eq!(lifetime(Some(Scheduled)), Duration::from_secs(5));
        assert_eq!(lifetime(Some(Completed)), Duration::from_secs(300));
        assert_eq!(lifetime(Some(Canceled)), Duration::from_secs(300));
        assert_eq!(lifetime(None), Duration::from_secs(2));
    }
}
