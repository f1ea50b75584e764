//! Answering one operation's questions: the cache first (or an answer past
//! its lifetime, [`super::stale`]), then AWS through the operation's
//! [`Fetcher`], all within the caller's deadline or the gateway's operation
//! timeout, whichever is sooner. Every operation is answered by one of
//! these, over its own bucket and cache space.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::Duration,
};

use tokio::time::Instant;
use tracing::debug;

use crate::{
    domain::{
        Backend, Call, JobsSettings, OperationGauges, Served, Source,
        answer::Answer,
        cache::{AnswerCache, Fetch, Held},
        error::{DeadlineSource, GatewayError},
        fetch::Fetcher,
        limit::{RateLimit, Share},
        metrics::{JobsMetrics, OperationMetrics},
        stale::{Refresh, StaleAnswers},
        watch::observation::Sent,
    },
    upstream::{Operation, Subject, aws::AwsJobsUpstream},
};

/// Who else sees every answer AWS gives to an operation's calls (the
/// watchers of a job, for DescribeJob).
pub(crate) trait Witness<O: Operation>: Send + Sync + 'static {
    /// AWS answered `question` with `answer` to a request sent as `sent`.
    fn answered(&self, question: &O::Question, answer: &Arc<Answer<O>>, sent: Sent);
}

/// No one besides the caller sees the answers.
pub(crate) struct NoWitness;

impl<O: Operation> Witness<O> for NoWitness {
    fn answered(&self, _question: &O::Question, _answer: &Arc<Answer<O>>, _sent: Sent) {}
}

/// How often one call looks the answer up again because the one it found
/// does not suit it (too old for a fresh request, or a failure caused by
/// another caller's shorter deadline).
const MAX_LOOKUPS: u32 = 3;

/// Answers the questions of operation `O`.
pub struct Answers<O: Operation> {
    /// Asks AWS, for calls (and for DescribeJob, the watch scheduler).
    fetcher: Arc<Fetcher<O>>,
    cache: Arc<dyn AnswerCache<O>>,
    /// Which answers stand in past their lifetime, and their refreshes.
    stale: Arc<StaleAnswers<O>>,
    witness: Arc<dyn Witness<O>>,
    metrics: OperationMetrics,
}

impl<O: Operation> Clone for Answers<O> {
    fn clone(&self) -> Self {
        Self {
            fetcher: self.fetcher.clone(),
            cache: self.cache.clone(),
            stale: self.stale.clone(),
            witness: self.witness.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<O: Operation> Answers<O> {
    /// `O`'s answers over its own roles from `backend` (its bucket from
    /// `settings`), asking `upstream`.
    pub(crate) async fn build(
        upstream: Arc<AwsJobsUpstream>,
        settings: &JobsSettings,
        backend: &impl Backend,
        metrics: &Arc<JobsMetrics>,
    ) -> Self {
        let metrics = metrics.operation(O::NAME);
        let roles = backend
            .operation::<O>(settings.limiter_of::<O>(), &settings.cache_of_each())
            .await;
        let fetcher = Fetcher::new(
            upstream,
            settings.retry.clone(),
            settings.operation_timeout,
            roles.limit,
            metrics.clone(),
        );
        Self {
            fetcher: Arc::new(fetcher),
            cache: roles.cache,
            stale: Arc::new(StaleAnswers::new(settings.cache.clone())),
            witness: Arc::new(NoWitness),
            metrics,
        }
    }

    /// The same, with `witness` seeing every answer AWS gives to calls.
    pub(crate) fn witnessed_by(self, witness: Arc<dyn Witness<O>>) -> Self {
        Self { witness, ..self }
    }

    /// The operation's fetcher.
    pub(crate) fn fetcher(&self) -> &Arc<Fetcher<O>> {
        &self.fetcher
    }

    /// The operation's cache space.
    pub(crate) fn cache(&self) -> &Arc<dyn AnswerCache<O>> {
        &self.cache
    }

    /// The operation's token bucket.
    pub fn limiter(&self) -> &dyn RateLimit {
        self.fetcher.limiter().as_ref()
    }

    /// Where the metrics read the operation's bucket and cache at each scrape.
    pub(crate) fn gauges(&self) -> OperationGauges {
        let cache: Arc<dyn Held> = self.cache.clone();
        OperationGauges {
            operation: O::NAME,
            limit: Arc::downgrade(self.fetcher.limiter()),
            cache: Arc::downgrade(&cache),
        }
    }

    /// Answers `question`, finishing by the call's deadline if it has one.
    /// A `fresh` call asks for an answer AWS gave after it arrived. When
    /// time runs out the upstream request is dropped, not left running; if
    /// other callers were waiting for it, one of them asks AWS again.
    pub async fn ask(
        &self,
        question: &O::Question,
        call: &Call,
    ) -> Result<Served<O>, GatewayError> {
        let result = self.answer(question, call).await;
        match &result {
            Ok(served) => self.metrics.answered(served.source),
            Err(GatewayError::RateLimited { .. }) => self.metrics.rate_limited(),
            Err(_) => {}
        }
        result
    }

    async fn answer(&self, query: &O::Question, call: &Call) -> Result<Served<O>, GatewayError> {
        let received = Instant::now();
        let own_deadline = received + self.fetcher.operation_timeout();
        let (deadline, limit) = match call.deadline {
            Some(d) if d < own_deadline => (d, DeadlineSource::Caller),
            _ => (own_deadline, DeadlineSource::Gateway),
        };
        let mut lookup = std::pin::pin!(self.lookup(query, received, deadline, call));
        // A cache hit is ready at the first poll: it needs no timer (one
        // was set up and moved on every hit, even though never armed).
        // tokio's timeout polls its future first too, so the deadline means
        // the same: an answer ready in time is never refused.
        let first = std::future::poll_fn(|cx| Poll::Ready(lookup.as_mut().poll(cx))).await;
        let result = match first {
            Poll::Ready(result) => result,
            Poll::Pending => match tokio::time::timeout_at(deadline, lookup).await {
                Ok(result) => result,
                Err(_elapsed) => Err(GatewayError::DeadlineExceeded {
                    subject: Subject::of::<O>(query),
                    budget: deadline.saturating_duration_since(received),
                    limit,
                }),
            },
        };
        self.or_stale(query, call, result).await
    }

    async fn lookup(
        &self,
        query: &O::Question,
        received: Instant,
        deadline: Instant,
        call: &Call,
    ) -> Result<Served<O>, GatewayError> {
        if let Some(served) = self.without_waiting(query, call).await {
            return served;
        }
        let fresh = call.fresh;
        let mut lookups = 0;
        loop {
            lookups += 1;
            let last = lookups >= MAX_LOOKUPS;
            if fresh {
                self.cache.forget_older_than(query, received).await;
            }
            let fetched_here = &AtomicBool::new(false);
            let ask = move || -> Fetch<'_, O> {
                Box::pin(async move {
                    fetched_here.store(true, Ordering::Relaxed);
                    let sent = Sent::now();
                    let answer = self
                        .fetcher
                        .ask(query, deadline, &call.share, sent.at)
                        .await?;
                    self.witness.answered(query, &answer, sent);
                    Ok(answer)
                })
            };
            let found = self.cache.get_or_fetch(query, &ask).await;
            let mine = fetched_here.load(Ordering::Relaxed);
            match found {
                Ok(answer) if fresh && answer.answered_at < received && !last => continue,
                Ok(answer) => {
                    let source = if mine {
                        Source::Miss
                    } else if answer.answered_at >= received {
                        Source::Coalesced
                    } else {
                        Source::Hit
                    };
                    return Ok(Served {
                        response: answer.response(query)?,
                        source,
                        age: answer.age(),
                    });
                }
                // Another caller's fetch ran out of its (shorter) time; this
                // caller may still have enough of its own.
                Err(err) if !mine && !last && err.is_out_of_time() => continue,
                Err(err) => return Err(GatewayError::clone(&err)),
            }
        }
    }

    /// With stale-while-revalidate on, the answer this call gets without
    /// waiting for AWS, if any; a stale one is renewed in the background.
    async fn without_waiting(
        &self,
        query: &O::Question,
        call: &Call,
    ) -> Option<Result<Served<O>, GatewayError>> {
        let (served, refresh) = self
            .stale
            .without_waiting(self.cache.as_ref(), query, call)
            .await?;
        if let Some(refresh) = refresh {
            self.revalidate(refresh, &call.share);
        }
        Some(served)
    }

    /// `result`, or an answer past its lifetime in place of a failure that
    /// says nothing about what was asked.
    async fn or_stale(
        &self,
        query: &O::Question,
        call: &Call,
        result: Result<Served<O>, GatewayError>,
    ) -> Result<Served<O>, GatewayError> {
        self.stale
            .or_stale(self.cache.as_ref(), query, call, result)
            .await
    }

    /// Renews `refresh`'s question in the background, through the rate
    /// limit on `share`'s account: it joins a fetch in flight, takes an
    /// answer another call just stored, or asks AWS. Its answer is cached
    /// and reaches the witness as any other does.
    fn revalidate(&self, refresh: Refresh<O>, share: &Share) {
        let answers = self.clone();
        let call = Call {
            deadline: None,
            fresh: false,
            max_stale: Some(Duration::ZERO),
            share: share.clone(),
        };
        tokio::spawn(async move {
            let query = refresh.query();
            let received = Instant::now();
            let deadline = received + answers.fetcher.operation_timeout();
            let lookup = answers.lookup(query, received, deadline, &call);
            let job_id = O::subject(query);
            match tokio::time::timeout_at(deadline, lookup).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    debug!(operation = O::NAME, job_id, error = %err.chain(), "background refresh failed")
                }
                Err(_elapsed) => {
                    debug!(
                        operation = O::NAME,
                        job_id, "background refresh ran out of time"
                    )
                }
            }
        });
    }
}
