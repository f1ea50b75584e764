//! The in-process answer cache (moka): a lifetime per entry, a size bound in
//! bytes, and coalescing of concurrent misses within this process. Answers
//! about a job stay past their lifetime for the stale windows, no longer
//! served as hits.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use foldhash::quality::RandomState;
use moka::{Expiry, future::Cache, ops::compute::Op};
use tokio::time::Instant;

use crate::{
    domain::{
        answer::Answer,
        cache::{AnswerCache, Ask, CacheSettings, Cached, Held, Usage, weight},
        error::GatewayError,
    },
    upstream::{Operation, Subject, UpstreamErrorKind},
};

/// Answers to one operation's questions kept in this process.
pub struct LocalCache<O: Operation> {
    /// Answers by question, each while it is fresh and then as long as the
    /// stale windows keep it.
    entries: Cache<O::Question, Entry<O>, RandomState>,
    /// The fetches in flight, so concurrent misses for one question share
    /// one (moka's coalescing); an entry here lapses as soon as its fetch
    /// ends, when its answer is in `entries` already.
    fetches: Cache<O::Question, Arc<Answer<O>>, RandomState>,
    /// How long answers are fresh and kept.
    lifetimes: Arc<Lifetimes>,
}

/// An answer, and until when it is served as a hit.
struct Entry<O: Operation> {
    answer: Arc<Answer<O>>,
    /// The end of its lifetime (or of its stay in a first tier), or when a
    /// call asking for a newer answer set it aside.
    fresh_until: Instant,
}

impl<O: Operation> Clone for Entry<O> {
    fn clone(&self) -> Self {
        Self {
            answer: self.answer.clone(),
            fresh_until: self.fresh_until,
        }
    }
}

impl<O: Operation> Clone for LocalCache<O> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            fetches: self.fetches.clone(),
            lifetimes: self.lifetimes.clone(),
        }
    }
}

impl<O: Operation> Entry<O> {
    fn is_fresh(&self) -> bool {
        Instant::now() < self.fresh_until
    }
}

impl<O: Operation> LocalCache<O> {
    /// An empty cache with `settings`.
    pub fn new(settings: &CacheSettings) -> Self {
        Self::with_longest_stay(settings, None)
    }

    /// An empty cache with `settings` whose entries stay at most `longest`
    /// (a first tier in front of a shared cache, which keeps nothing past
    /// its lifetime).
    pub fn with_longest_stay(settings: &CacheSettings, longest: Option<Duration>) -> Self {
        let settings = match longest {
            Some(_) => settings.fresh_only(),
            None => settings.clone(),
        };
        let lifetimes = Arc::new(Lifetimes { settings, longest });
        let entries = Cache::builder()
            .max_capacity(lifetimes.settings.max_bytes)
            .weigher(|key: &O::Question, entry: &Entry<O>| weight(key, &entry.answer))
            .expire_after(Lifetimes::clone(&lifetimes))
            .build_with_hasher(RandomState::default());
        let fetches = Cache::builder()
            .expire_after(Lapse)
            .build_with_hasher(RandomState::default());
        Self {
            entries,
            fetches,
            lifetimes,
        }
    }

    /// The entry for `query` if it is fresh.
    async fn fresh(&self, query: &O::Question) -> Option<Arc<Answer<O>>> {
        self.entries
            .get(query)
            .await
            .filter(Entry::is_fresh)
            .map(|entry| entry.answer)
    }

    /// Entries stored (after pending maintenance has run).
    #[cfg(test)]
    async fn len(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}

#[async_trait]
impl<O: Operation> Held for LocalCache<O> {
    async fn settle(&self) {
        self.entries.run_pending_tasks().await;
    }

    fn usage(&self) -> Usage {
        Usage {
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
        }
    }
}

#[async_trait]
impl<O: Operation> AnswerCache<O> for LocalCache<O> {
    /// A fetch that panics fails with INTERNAL for everyone waiting on it,
    /// and nothing is stored. If the caller running the fetch goes away, a
    /// waiting caller runs it again; moka panics when that happens 200 times
    /// to one waiter (callers with very short deadlines taking turns), and
    /// that waiter gets UNAVAILABLE instead.
    async fn get_or_fetch(
        &self,
        query: &O::Question,
        ask: Ask<'_, '_, O>,
    ) -> Result<Arc<Answer<O>>, Arc<GatewayError>> {
        use futures_util::FutureExt as _;
        use std::panic::AssertUnwindSafe;
        if let Some(answer) = self.fresh(query).await {
            return Ok(answer);
        }
        let fetch = async {
            // A fetch that ended just before this one began stored its answer.
            if let Some(answer) = self.fresh(query).await {
                return Ok(answer);
            }
            let answer = AssertUnwindSafe(ask())
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(GatewayError::upstream(
                        Subject::of::<O>(query),
                        UpstreamErrorKind::Internal,
                        "the gateway failed while asking AWS about this job",
                    ))
                })?;
            self.store(query, answer.clone()).await;
            Ok(answer)
        };
        let lookup = self.fetches.try_get_with_by_ref(query, fetch);
        AssertUnwindSafe(lookup)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(Arc::new(GatewayError::upstream(
                    Subject::of::<O>(query),
                    UpstreamErrorKind::Unavailable,
                    "the AWS call this request was waiting for was abandoned by other callers \
                 too many times; retry",
                )))
            })
    }

    async fn peek(&self, query: &O::Question) -> Option<Arc<Answer<O>>> {
        self.fresh(query).await
    }

    async fn cached(&self, query: &O::Question) -> Option<Cached<O>> {
        let entry = self.entries.get(query).await?;
        Some(Cached {
            fresh: entry.is_fresh(),
            answer: entry.answer,
        })
    }

    async fn store(&self, query: &O::Question, answer: Arc<Answer<O>>) {
        let entry = self.lifetimes.entry(answer);
        self.entries
            .entry_by_ref(query)
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) if e.value().answer.asked_at > entry.answer.asked_at => Op::Nop,
                    _ => Op::Put(entry),
                };
                std::future::ready(op)
            })
            .await;
    }

    async fn forget_older_than(&self, query: &O::Question, instant: Instant) {
        let lifetimes = &self.lifetimes;
        self.entries
            .entry_by_ref(query)
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) if e.value().answer.answered_at < instant => {
                        let answer = &e.value().answer;
                        if lifetimes.settings.kept_past_lifetime(answer).is_zero() {
                            Op::Remove
                        } else {
                            Op::Put(Entry {
                                answer: answer.clone(),
                                fresh_until: Instant::now(),
                            })
                        }
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }
}

/// Per-entry lifetimes by what the answer says, counted from when AWS gave
/// it, and at most `longest` from now; then how long it is kept past them.
#[derive(Clone)]
struct Lifetimes {
    settings: CacheSettings,
    longest: Option<Duration>,
}

impl Lifetimes {
    /// What is left of `answer`'s lifetime (or of its stay).
    fn remaining<O: Operation>(&self, answer: &Answer<O>) -> Duration {
        let left = self.settings.lifetime(answer).saturating_sub(answer.age());
        self.longest.map_or(left, |longest| left.min(longest))
    }

    /// `answer` as stored now.
    fn entry<O: Operation>(&self, answer: Arc<Answer<O>>) -> Entry<O> {
        let now = Instant::now();
        let left = self.remaining(&answer);
        Entry {
            fresh_until: now.checked_add(left).unwrap_or(now + FAR),
            answer,
        }
    }

    /// How long `entry` stays from now: while fresh, then for as long as
    /// the stale windows keep answers past their lifetime.
    fn stay<O: Operation>(&self, entry: &Entry<O>) -> Duration {
        let kept = self.settings.kept_past_lifetime(&entry.answer);
        if kept.is_zero() {
            return entry.fresh_until.saturating_duration_since(Instant::now());
        }
        let answer = &entry.answer;
        let left = self.settings.lifetime(answer).saturating_sub(answer.age());
        left.saturating_add(kept)
    }
}

/// Far enough in the future for any lifetime.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl<O: Operation> Expiry<O::Question, Entry<O>> for Lifetimes {
    fn expire_after_create(
        &self,
        _key: &O::Question,
        entry: &Entry<O>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.stay(entry))
    }

    fn expire_after_update(
        &self,
        _key: &O::Question,
        entry: &Entry<O>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.stay(entry))
    }
}

/// Fetches in flight are not kept once they end.
struct Lapse;

impl<O: Operation> Expiry<O::Question, Arc<Answer<O>>> for Lapse {
    fn expire_after_create(
        &self,
        _key: &O::Question,
        _answer: &Arc<Answer<O>>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::cache::tests::answer,
        pb,
        upstream::{DescribeJob, JobQuery},
    };

    #[tokio::test]
    async fn the_size_bound_evicts_entries() {
        let each = weight::<DescribeJob>(
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
                .get_or_fetch(&query, &|| {
                    Box::pin(async { Ok(Arc::new(answer(Some(pb::job::Status::InProgress)))) })
                })
                .await;
            assert!(fetched.is_ok());
        }
        let len = cache.len().await;
        assert!((1..=10).contains(&len), "{len} entries kept");
    }

    fn query(job_id: &str) -> JobQuery {
        JobQuery {
            job_id: job_id.into(),
            before_substitution: None,
        }
    }

    /// A 100 ms lifetime, then 400 ms kept for the stale windows.
    fn short() -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_millis(100),
            not_found_ttl: Duration::from_millis(100),
            stale_if_error: Duration::from_millis(400),
            ..CacheSettings::default()
        }
    }

    async fn fetch(
        cache: &LocalCache<DescribeJob>,
        q: &JobQuery,
        status: Option<pb::job::Status>,
    ) -> bool {
        let fetched = std::sync::atomic::AtomicBool::new(false);
        let fetched = &fetched;
        let answer = cache
            .get_or_fetch(q, &move || {
                Box::pin(async move {
                    fetched.store(true, std::sync::atomic::Ordering::Relaxed);
                    Ok(Arc::new(answer(status)))
                })
            })
            .await;
        assert!(answer.is_ok());
        fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test]
    async fn an_expired_answer_is_kept_for_the_stale_windows_but_not_served_as_a_hit() {
        let cache = LocalCache::new(&short());
        let q = query("j");
        assert!(fetch(&cache, &q, Some(pb::job::Status::InProgress)).await);
        assert!(cache.cached(&q).await.unwrap().fresh);

        tokio::time::sleep(Duration::from_millis(200)).await;
        let kept = cache.cached(&q).await.expect("kept past its lifetime");
        assert!(!kept.fresh);
        assert!(
            cache.peek(&q).await.is_none(),
            "peek sees only fresh answers"
        );
        assert!(fetch(&cache, &q, None).await, "a lookup fetches");

        // "No such job" replaced it, and is not kept past its own lifetime.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cache.cached(&q).await.is_none());
    }

    #[tokio::test]
    async fn kept_answers_go_once_the_windows_pass() {
        let cache = LocalCache::new(&short());
        let q = query("j");
        fetch(&cache, &q, Some(pb::job::Status::InProgress)).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(cache.cached(&q).await.is_none());
    }

    #[tokio::test]
    async fn a_call_asking_for_a_newer_answer_sets_the_old_one_aside() {
        let cache = LocalCache::new(&short());
        let q = query("j");
        fetch(&cache, &q, Some(pb::job::Status::InProgress)).await;
        cache.forget_older_than(&q, Instant::now()).await;
        assert!(!cache.cached(&q).await.unwrap().fresh, "kept, not fresh");
        assert!(fetch(&cache, &q, Some(pb::job::Status::InProgress)).await);
    }

    #[tokio::test]
    async fn a_first_tier_keeps_nothing_past_its_stay() {
        let cache = LocalCache::with_longest_stay(&short(), Some(Duration::from_millis(50)));
        let q = query("j");
        fetch(&cache, &q, Some(pb::job::Status::InProgress)).await;
        cache.forget_older_than(&q, Instant::now()).await;
        assert!(cache.cached(&q).await.is_none());
        fetch(&cache, &q, Some(pb::job::Status::InProgress)).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(cache.cached(&q).await.is_none());
    }
}
