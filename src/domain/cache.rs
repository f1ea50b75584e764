//! The answer cache role: answers kept per question of an operation (for
//! DescribeJob, the job id and `before_substitution`) for a lifetime that
//! depends on what they say, with concurrent misses for the same question
//! sharing one fetch. Each operation has a cache space of its own.
//!
//! Answers that stopped changing ([`Answer::is_terminal`]: jobs in a
//! terminal status) are kept longer than active ones; "no such job" is kept briefly (a negative entry) so a client
//! polling a wrong id does not cost AWS a call each time. Other failures are
//! never stored, though callers that were waiting on the same fetch all
//! receive it.
//!
//! With a stale window set (RFC 5861's `stale-if-error` and
//! `stale-while-revalidate`), answers about a job are also kept that long
//! past their lifetime: no longer served as hits, but there for the domain
//! to serve, marked stale, when AWS fails or while it asks AWS again.
//!
//! [`crate::backends::local::cache`] keeps answers in this process (moka);
//! [`crate::backends::redis::cache`] shares them between replicas.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use prost::Message;
use tokio::time::Instant;

use crate::{
    domain::{
        answer::{Answer, State},
        error::GatewayError,
    },
    upstream::Operation,
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
    /// How long past its lifetime an answer about a job may still be
    /// served when AWS fails (RFC 5861 `stale-if-error`); zero: never.
    pub stale_if_error: Duration,
    /// How long past its lifetime an answer about a job is served at once
    /// while one background request renews it (RFC 5861
    /// `stale-while-revalidate`); zero: never.
    pub stale_while_revalidate: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5),
            terminal_ttl: Duration::from_secs(300),
            not_found_ttl: Duration::from_secs(2),
            max_bytes: 256 * 1024 * 1024,
            stale_if_error: Duration::from_secs(300),
            stale_while_revalidate: Duration::ZERO,
        }
    }
}

impl CacheSettings {
    /// How long `answer` may be served, counted from when AWS gave it.
    pub fn lifetime<O: Operation>(&self, answer: &Answer<O>) -> Duration {
        match &answer.state {
            State::NotFound(_) => self.not_found_ttl,
            State::Found(_) if answer.is_terminal() => self.terminal_ttl,
            State::Found(_) => self.ttl,
        }
    }

    /// How long `answer` is kept past its lifetime, for the stale windows.
    /// Only answers about a job are ever served stale; "no such job" is
    /// kept no longer than its lifetime, but still replaces an older
    /// answer, so a job AWS said is gone cannot come back stale.
    pub fn kept_past_lifetime<O: Operation>(&self, answer: &Answer<O>) -> Duration {
        match &answer.state {
            State::Found(_) => self.stale_if_error.max(self.stale_while_revalidate),
            State::NotFound(_) => Duration::ZERO,
        }
    }

    /// Whether answers are kept past their lifetime at all.
    pub fn keeps_stale(&self) -> bool {
        !(self.stale_if_error.is_zero() && self.stale_while_revalidate.is_zero())
    }

    /// These settings without the stale windows (a first tier in front of
    /// a shared cache, which keeps only fresh answers).
    pub fn fresh_only(&self) -> Self {
        Self {
            stale_if_error: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            ..self.clone()
        }
    }

    /// How long ago `answer`'s lifetime ended (zero while it lasts).
    pub fn staleness<O: Operation>(&self, answer: &Answer<O>) -> Duration {
        answer.age().saturating_sub(self.lifetime(answer))
    }
}

/// An answer the cache holds, and whether it is still fresh: within its
/// lifetime and not set aside by a call asking for a newer one.
pub struct Cached<O: Operation> {
    /// The answer.
    pub answer: Arc<Answer<O>>,
    /// Whether a lookup would serve it as a hit.
    pub fresh: bool,
}

impl<O: Operation> Clone for Cached<O> {
    fn clone(&self) -> Self {
        Self {
            answer: self.answer.clone(),
            fresh: self.fresh,
        }
    }
}

/// A fetch of one answer from AWS.
pub type Fetch<'a, O> = BoxFuture<'a, Result<Arc<Answer<O>>, GatewayError>>;

/// How the cache starts a [`Fetch`], on a miss only: a hit builds no
/// request (its future, with the whole AWS call inside, is large).
pub type Ask<'r, 'a, O> = &'r (dyn Fn() -> Fetch<'a, O> + Send + Sync + 'a);

/// What a cache holds in this process, whatever it holds (for metrics).
#[async_trait]
pub trait Held: Send + Sync + 'static {
    /// Brings the bookkeeping [`Held::usage`] reads up to date (a cache
    /// may count its writes a moment after it makes them).
    async fn settle(&self) {}

    /// What this process holds now.
    fn usage(&self) -> Usage;
}

/// Where answers to one operation's questions are kept between calls.
#[async_trait]
pub trait AnswerCache<O: Operation>: Held {
    /// The cached answer for `query`, or the one `ask`'s fetch produces. Callers
    /// arriving while a fetch for the same question is running wait for it
    /// and share its result, failures included; failures are not stored
    /// ("no such job" is an answer, and is).
    async fn get_or_fetch(
        &self,
        query: &O::Question,
        ask: Ask<'_, '_, O>,
    ) -> Result<Arc<Answer<O>>, Arc<GatewayError>>;

    /// The cached answer for `query`, if there is one; never fetches.
    async fn peek(&self, query: &O::Question) -> Option<Arc<Answer<O>>>;

    /// The newest answer held for `query`, fresh or kept past its lifetime
    /// for the stale windows ([`CacheSettings::kept_past_lifetime`]);
    /// never fetches. A fresh answer found in a slower tier is copied into
    /// the faster one, as a lookup would.
    async fn cached(&self, query: &O::Question) -> Option<Cached<O>>;

    /// Stores `answer` for `query` unless the cache holds a newer one (an
    /// answer to a later request).
    async fn store(&self, query: &O::Question, answer: Arc<Answer<O>>);

    /// Sets aside the answer for `query` if AWS gave it before `instant`, so
    /// the next lookup fetches, or joins a fetch still in flight. It stays
    /// available to [`AnswerCache::cached`] as not fresh, for the stale
    /// windows of other calls.
    async fn forget_older_than(&self, query: &O::Question, instant: Instant);
}

/// What a cache holds in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Answers kept (moka's count, which trails recent changes slightly).
    pub entries: u64,
    /// Their estimated memory use in bytes ([`weight`]).
    pub bytes: u64,
}

/// Fixed cost of an entry besides its message: the key, the entry, moka's
/// bookkeeping and allocator overhead.
const ENTRY_OVERHEAD: u32 = 1536;

/// An entry's estimated memory use in bytes: the decoded message's inline
/// size, its protobuf encoding doubled (heap strings and vectors, each with
/// allocator overhead), and a fixed overhead. Calibrated against the
/// process's RSS per cached job measured in BENCHMARKS.md.
pub fn weight<O: Operation>(key: &O::Question, answer: &Answer<O>) -> u32 {
    let message = match &answer.state {
        State::Found(response) => std::mem::size_of::<O::Response>()
            .saturating_add(response.encoded_len().saturating_mul(2)),
        State::NotFound(_) => 0,
    };
    u32::try_from(message + O::subject(key).len())
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_OVERHEAD)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        domain::answer::{JobAnswer, JobState},
        pb,
        upstream::{UpstreamError, UpstreamErrorKind},
    };

    pub(crate) fn answer(status: Option<pb::job::Status>) -> JobAnswer {
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

    #[test]
    fn only_answers_about_a_job_are_kept_past_their_lifetime() {
        use pb::job::Status::*;
        let settings = CacheSettings {
            stale_if_error: Duration::from_secs(300),
            stale_while_revalidate: Duration::from_secs(30),
            ..CacheSettings::default()
        };
        let kept = |status| settings.kept_past_lifetime(&answer(status));
        assert_eq!(kept(Some(InProgress)), Duration::from_secs(300));
        assert_eq!(kept(Some(Completed)), Duration::from_secs(300));
        assert_eq!(kept(None), Duration::ZERO);
        assert!(settings.keeps_stale());
        assert!(!settings.fresh_only().keeps_stale());
    }
}
