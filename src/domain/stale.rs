//! Answers served past their lifetime, as RFC 5861 lets HTTP caches do:
//! in place of a failure that says nothing about the job
//! (`--cache-stale-if-error`), and at once while one background request
//! renews them (`--cache-stale-while-revalidate`). Both only for answers
//! about a job, never for "no such job", and never to a call that refuses
//! them (`cache-control: no-cache`, `max-stale=0`) or would get one older
//! than its `max-stale`. Watch streams only ever see AWS's answers.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use tracing::debug;

use crate::{
    domain::{
        Call, Served, Source,
        answer::State,
        cache::{AnswerCache, CacheSettings, Cached},
        error::GatewayError,
    },
    upstream::{Operation, Subject},
};

/// The stale windows, and the questions this process is renewing.
pub(super) struct StaleAnswers<O: Operation> {
    /// Lifetimes and windows.
    settings: CacheSettings,
    /// Questions with a background refresh running here: one at a time each.
    refreshing: Mutex<HashSet<O::Question>>,
}

impl<O: Operation> StaleAnswers<O> {
    pub(super) fn new(settings: CacheSettings) -> Self {
        Self {
            settings,
            refreshing: Mutex::default(),
        }
    }

    /// Whether `cached` may be served to `call` in place of a fresh answer:
    /// an answer about a job whose lifetime ended less than `window` ago,
    /// and no longer ago than the call's `max-stale`.
    fn may_serve(&self, cached: &Cached<O>, window: Duration, call: &Call) -> bool {
        if call.fresh || !matches!(cached.answer.state, State::Found(_)) {
            return false;
        }
        let past = self.settings.staleness(&cached.answer);
        let accepted = call
            .max_stale
            .is_none_or(|max| !max.is_zero() && past <= max);
        past < window && accepted
    }

    /// Marks `query` as being renewed here; `None` if it already is.
    fn begin_refresh(self: &Arc<Self>, query: &O::Question) -> Option<Refresh<O>> {
        let mut refreshing = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        refreshing.insert(query.clone()).then(|| Refresh {
            stale: self.clone(),
            query: query.clone(),
        })
    }
}

/// A background refresh of one question; ends its mark when dropped.
pub(super) struct Refresh<O: Operation> {
    stale: Arc<StaleAnswers<O>>,
    query: O::Question,
}

impl<O: Operation> Refresh<O> {
    /// The question being renewed.
    pub(super) fn query(&self) -> &O::Question {
        &self.query
    }
}

impl<O: Operation> Drop for Refresh<O> {
    fn drop(&mut self) {
        let mut refreshing = self
            .stale
            .refreshing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        refreshing.remove(&self.query);
    }
}

impl<O: Operation> StaleAnswers<O> {
    /// With stale-while-revalidate on, the answer `call` gets from `cache`
    /// without waiting for AWS, if any: the cached one while fresh (a hit),
    /// or one within the window past its lifetime (stale), with the mark of
    /// the one background request per question that renews it (`None` if
    /// this process already renews it).
    pub(super) async fn without_waiting(
        self: &Arc<Self>,
        cache: &dyn AnswerCache<O>,
        query: &O::Question,
        call: &Call,
    ) -> Option<(Result<Served<O>, GatewayError>, Option<Refresh<O>>)> {
        let window = self.settings.stale_while_revalidate;
        if window.is_zero() || call.fresh {
            return None;
        }
        let cached = cache.cached(query).await?;
        if cached.fresh {
            return Some((served(query, &cached, Source::Hit), None));
        }
        if !self.may_serve(&cached, window, call) {
            return None;
        }
        Some((
            served(query, &cached, Source::Stale),
            self.begin_refresh(query),
        ))
    }

    /// `result`, or in place of a failure that says nothing about the job,
    /// the answer `cache` holds if its lifetime ended less than
    /// `--cache-stale-if-error` ago (and the call accepts it), or a fresh
    /// one stored since the lookup began.
    pub(super) async fn or_stale(
        &self,
        cache: &dyn AnswerCache<O>,
        query: &O::Question,
        call: &Call,
        result: Result<Served<O>, GatewayError>,
    ) -> Result<Served<O>, GatewayError> {
        let window = self.settings.stale_if_error;
        let err = match result {
            Err(err) if !window.is_zero() && err.says_nothing_about_the_job() => err,
            other => return other,
        };
        match cache.cached(query).await {
            // Another request (a poll, another replica) renewed it meanwhile.
            Some(cached) if cached.fresh && !call.fresh => served(query, &cached, Source::Hit),
            Some(cached) if self.may_serve(&cached, window, call) => {
                debug!(operation = O::NAME, subject = %Subject::of::<O>(query), error = %err.chain(), "served a stale answer in place of a failure");
                served(query, &cached, Source::Stale)
            }
            _ => Err(err),
        }
    }
}

/// `cached` as served to a call, from `source`; "no such job" as its error.
fn served<O: Operation>(
    query: &O::Question,
    cached: &Cached<O>,
    source: Source,
) -> Result<Served<O>, GatewayError> {
    Ok(Served {
        response: cached.answer.response(query)?,
        source,
        age: cached.answer.age(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{
            answer::{JobAnswer, JobState},
            limit::Share,
        },
        pb,
        upstream::{DescribeJob, JobQuery, UpstreamError, UpstreamErrorKind},
    };

    fn settings() -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            ..CacheSettings::default()
        }
    }

    /// An answer AWS gave `age` ago.
    fn aged(found: bool, age: Duration) -> Cached<DescribeJob> {
        let state = if found {
            JobState::Found(Arc::new(pb::DescribeJobResponse::default()))
        } else {
            JobState::NotFound(UpstreamError::new(UpstreamErrorKind::NotFound))
        };
        let mut answer = JobAnswer::now(state);
        answer.answered_at -= age;
        Cached {
            answer: Arc::new(answer),
            fresh: false,
        }
    }

    fn call(fresh: bool, max_stale: Option<Duration>) -> Call {
        Call {
            deadline: None,
            fresh,
            max_stale,
            share: Share::of("test"),
        }
    }

    #[tokio::test]
    async fn only_answers_about_a_job_within_the_window_and_the_callers_bound() {
        let stale = StaleAnswers::<DescribeJob>::new(settings());
        let window = Duration::from_secs(60);
        let any = call(false, None);
        let secs = Duration::from_secs;
        // 5 s of lifetime, then 60 s of window.
        assert!(stale.may_serve(&aged(true, secs(6)), window, &any));
        assert!(stale.may_serve(&aged(true, secs(60)), window, &any));
        assert!(!stale.may_serve(&aged(true, secs(66)), window, &any));
        assert!(
            !stale.may_serve(&aged(false, secs(6)), window, &any),
            "no such job"
        );
        assert!(
            !stale.may_serve(&aged(true, secs(6)), window, &call(true, None)),
            "no-cache"
        );
        let refuses = call(false, Some(Duration::ZERO));
        assert!(
            !stale.may_serve(&aged(true, secs(6)), window, &refuses),
            "max-stale=0"
        );
        let ten = call(false, Some(secs(10)));
        assert!(stale.may_serve(&aged(true, secs(14)), window, &ten));
        assert!(
            !stale.may_serve(&aged(true, secs(16)), window, &ten),
            "max-stale=10"
        );
    }

    #[test]
    fn one_refresh_per_question_at_a_time() {
        let stale = Arc::new(StaleAnswers::<DescribeJob>::new(settings()));
        let query = JobQuery {
            job_id: "j".into(),
            before_substitution: None,
        };
        let first = stale.begin_refresh(&query);
        assert!(first.is_some());
        assert!(stale.begin_refresh(&query).is_none());
        drop(first);
        assert!(stale.begin_refresh(&query).is_some());
    }
}
