//! The AWS exchange, one place for calls and watch polls alike: a token
//! from the rate limit (taken only while AWS can still answer in time), one
//! request, what AWS's answer tells the limiter, the latency estimate, a
//! call's retries. One fetcher per operation, each with its own bucket.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    domain::{
        answer::{Answer, JobAnswer, State},
        cache::AnswerCache,
        error::{DeadlineSource, GatewayError},
        limit::{Permit, RateLimit, Rejected, Share},
        metrics::OperationMetrics,
        watch::{
            observation::{Sent, Trigger},
            pollers::Polls,
        },
    },
    upstream::{
        DescribeJob, JobQuery, Operation, Subject, UpstreamError, UpstreamErrorKind,
        aws::AwsJobsUpstream,
        retry::{RetryPolicy, Retryable},
    },
};

/// Asks AWS one operation's questions, within its budget and the gateway's
/// timeouts.
pub(crate) struct Fetcher<O: Operation> {
    upstream: Arc<AwsJobsUpstream>,
    retry: RetryPolicy,
    operation_timeout: Duration,
    limiter: Arc<dyn RateLimit>,
    latency: LatencyEstimate,
    metrics: OperationMetrics,
    operation: std::marker::PhantomData<O>,
}

impl<O: Operation> Fetcher<O> {
    /// A fetcher asking `upstream` through `limiter`, counting in `metrics`.
    pub(crate) fn new(
        upstream: Arc<AwsJobsUpstream>,
        retry: RetryPolicy,
        operation_timeout: Duration,
        limiter: Arc<dyn RateLimit>,
        metrics: OperationMetrics,
    ) -> Self {
        Self {
            upstream,
            retry,
            operation_timeout,
            limiter,
            latency: LatencyEstimate::default(),
            metrics,
            operation: std::marker::PhantomData,
        }
    }

    /// The token bucket in front of AWS.
    pub(crate) fn limiter(&self) -> &Arc<dyn RateLimit> {
        &self.limiter
    }

    /// How long one question may take, all attempts included.
    pub(crate) fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// A call's question, sent at `sent_at` and asked with retries until
    /// `deadline` through `share`'s part of the budget; "no such job" is an
    /// answer too.
    pub(crate) async fn ask(
        &self,
        query: &O::Question,
        deadline: Instant,
        share: &Share,
        sent_at: Instant,
    ) -> Result<Arc<Answer<O>>, GatewayError> {
        // A retry the budget has no token for ends the call with what AWS
        // said last: that is why it failed, not the budget.
        let last_failure = std::sync::Mutex::new(None::<UpstreamError>);
        let mut tries = 0;
        let attempts = self.retry.run(deadline, || {
            tries += 1;
            if tries > 1 {
                self.metrics.retry();
            }
            let last_failure = &last_failure;
            async move {
                let result = self.attempt(query, deadline, share).await;
                let mut last = last_failure.lock().unwrap_or_else(|e| e.into_inner());
                match (result, last.take()) {
                    (Err(Attempt::Limited(_)), Some(previous)) => Err(Attempt::Upstream(previous)),
                    (Err(Attempt::Upstream(err)), _) => {
                        *last = Some(err.clone());
                        Err(Attempt::Upstream(err))
                    }
                    (result, _) => result,
                }
            }
        });
        answer_of::<O>(query, attempts.await, sent_at)
    }

    /// One watch poll of `query`, sent at `sent_at` with a background token
    /// already taken: one AWS request (a poll does not retry; the schedule
    /// polls again) within the gateway's operation timeout.
    pub(crate) async fn poll(
        &self,
        query: &O::Question,
        permit: Permit,
        sent_at: Instant,
    ) -> Result<Arc<Answer<O>>, GatewayError> {
        self.metrics.polled();
        let deadline = sent_at + self.operation_timeout;
        let request = self.send(query, permit);
        let result = match tokio::time::timeout_at(deadline, request).await {
            Ok(result) => result,
            Err(_elapsed) => {
                return Err(GatewayError::DeadlineExceeded {
                    subject: Subject::of::<O>(query),
                    budget: self.operation_timeout,
                    limit: DeadlineSource::Gateway,
                });
            }
        };
        answer_of::<O>(query, result, sent_at)
    }

    async fn attempt(
        &self,
        query: &O::Question,
        deadline: Instant,
        share: &Share,
    ) -> Result<O::Response, Attempt> {
        // A token is only worth taking if AWS can still answer in time: a
        // call sent just before the deadline spends quota on nothing.
        let margin = self.latency.typical() * 2;
        let latest_start = deadline.checked_sub(margin).unwrap_or(deadline);
        let asked = Instant::now();
        let permit = self
            .limiter
            .acquire(latest_start, share)
            .await
            .map_err(Attempt::Limited)?;
        self.metrics.token_taken(asked.elapsed());
        self.send(query, permit).await
    }

    /// One AWS request with a token already taken; tells the limiter how
    /// AWS answered.
    async fn send(&self, query: &O::Question, permit: Permit) -> Result<O::Response, Attempt> {
        let sent = self.metrics.aws_sent();
        let result = self
            .upstream
            .send::<O>(query)
            .await
            .map_err(|err| err.of(O::NAME));
        let took = sent.answered(result.as_ref().map(|_| ()));
        self.latency.record(took);
        // Any answer AWS gave without throttling shows there is quota to spare.
        use UpstreamErrorKind::{InvalidRequest, NotFound, Throttled};
        match &result {
            Err(err) if err.kind == Throttled => self.limiter.throttled(permit),
            Ok(_) => self.limiter.answered(permit),
            Err(err) if matches!(err.kind, NotFound | InvalidRequest) => {
                self.limiter.answered(permit)
            }
            Err(_) => {}
        }
        result.map_err(Attempt::Upstream)
    }
}

/// What the watch scheduler spends its tokens on: a poll through the
/// fetcher, whose answer replaces an older cached one (it neither evicts
/// the cached answer first nor stands in for calls as their shared AWS
/// request: calls keep their own retries) and then reaches the watchers.
#[derive(Clone)]
pub(crate) struct WatchPolls {
    /// Asks AWS.
    pub(crate) fetcher: Arc<Fetcher<DescribeJob>>,
    /// Keeps the answers.
    pub(crate) cache: Arc<dyn AnswerCache<DescribeJob>>,
}

#[async_trait::async_trait]
impl Polls for WatchPolls {
    async fn token(&self) -> Permit {
        self.fetcher.limiter.acquire_background().await
    }

    async fn poll(
        &self,
        query: &JobQuery,
        permit: Permit,
        trigger: Trigger,
    ) -> Result<(Arc<JobAnswer>, Sent), GatewayError> {
        let sent = Sent::now().because(trigger);
        let answer = self.fetcher.poll(query, permit, sent.at).await?;
        self.cache.store(query, answer.clone()).await;
        Ok((answer, sent))
    }
}

/// Turns the outcome of asking AWS into an answer; "no such job" is an
/// answer too.
fn answer_of<O: Operation>(
    query: &O::Question,
    result: Result<O::Response, Attempt>,
    asked_at: Instant,
) -> Result<Arc<Answer<O>>, GatewayError> {
    let state = match result {
        Ok(response) => State::Found(Arc::new(response)),
        Err(Attempt::Upstream(err)) if err.kind == UpstreamErrorKind::NotFound => {
            State::NotFound(err)
        }
        Err(Attempt::Upstream(source)) => {
            return Err(GatewayError::Upstream {
                subject: Subject::of::<O>(query),
                source: Box::new(source),
            });
        }
        Err(Attempt::Limited(rejected)) => {
            return Err(GatewayError::RateLimited {
                subject: Subject::of::<O>(query),
                operation: O::NAME,
                rejected,
            });
        }
    };
    Ok(Arc::new(Answer::new(state, asked_at)))
}

/// A moving average of how long AWS takes to answer.
#[derive(Debug, Default)]
struct LatencyEstimate {
    micros: std::sync::atomic::AtomicU64,
}

impl LatencyEstimate {
    /// Weight of the newest sample: 1/8.
    const SHIFT: u32 = 3;

    fn typical(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Lost updates under contention only make the average a bit staler.
        let old = self.micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - (old >> Self::SHIFT) + (sample >> Self::SHIFT)
        };
        self.micros.store(new, Ordering::Relaxed);
    }
}

/// Why one attempt failed: no token, or AWS said no.
#[derive(Debug)]
enum Attempt {
    Limited(Rejected),
    Upstream(UpstreamError),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Limited(r) => write!(f, "no token before the deadline ({:?})", r.reason),
            Self::Upstream(e) => e.fmt(f),
        }
    }
}

impl Retryable for Attempt {
    fn retryable(&self) -> bool {
        match self {
            // Waiting longer is exactly what the limiter ruled out.
            Self::Limited(_) => false,
            Self::Upstream(err) => err.retryable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_estimate_follows_recent_answers() {
        let estimate = LatencyEstimate::default();
        assert_eq!(estimate.typical(), Duration::ZERO);
        estimate.record(Duration::from_millis(80));
        assert_eq!(estimate.typical(), Duration::from_millis(80));
        for _ in 0..100 {
            estimate.record(Duration::from_millis(20));
        }
        let typical = estimate.typical();
        assert!(
            (Duration::from_millis(19)..=Duration::from_millis(21)).contains(&typical),
            "{typical:?}"
        );
    }
}
