//! Domain rules for answering job questions: the cache first, then AWS
//! through the shared token bucket, with retries, all within the caller's
//! deadline (or the gateway's own operation timeout, whichever is sooner).
//!
//! One question (job id and `before_substitution`) costs at most one AWS
//! call at a time however many callers ask it: concurrent askers wait for
//! the same call, later ones get the cached answer. A batch is many
//! questions answered concurrently, duplicates asked once.

pub mod answer;
pub mod cache;
pub mod error;
pub mod limit;
pub mod metrics;
pub mod rules;
mod stale;
pub mod watch;

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinSet, time::Instant};

use crate::{
    domain::error::DeadlineSource,
    domain::error::GatewayError,
    pb,
    upstream::{
        JobDescription, JobQuery, JobsUpstream, UpstreamError, UpstreamErrorKind,
        retry::{RetryPolicy, Retryable},
    },
};
use answer::{JobAnswer, JobState};
use cache::{AnswerCache, CacheSettings};
use limit::{LimiterSettings, Permit, RateLimit, Rejected, Share};
use metrics::JobsMetrics;
use stale::StaleAnswers;
use watch::{
    Observation, Observed, StreamOwner, Subscription, WatchSettings, WatchTargets, Watches,
    observation::{Sent, Trigger},
    ownership::PollOwnership,
    pollers::Polls,
};

/// Everything that shapes how [`Jobs`] protects AWS.
#[derive(Debug, Clone)]
pub struct JobsSettings {
    /// How failed AWS attempts are retried.
    pub retry: RetryPolicy,
    /// Bounds all attempts, waits and backoffs of one question together.
    pub operation_timeout: Duration,
    /// The token bucket every AWS attempt passes.
    pub limiter: LimiterSettings,
    /// How long answers are kept.
    pub cache: CacheSettings,
    /// The most items one batch may ask about.
    pub max_batch_size: usize,
    /// How watch streams poll and what they may cost.
    pub watch: WatchSettings,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            operation_timeout: Duration::from_secs(15),
            limiter: LimiterSettings::default(),
            cache: CacheSettings::default(),
            max_batch_size: 1000,
            watch: WatchSettings::default(),
        }
    }
}

/// How the gateway got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This call's own AWS request.
    Miss,
    /// Another caller's AWS request that was in flight when this call arrived.
    Coalesced,
    /// A cached answer from before this call arrived.
    Hit,
    /// An expired cached answer (`--cache-stale-if-error`,
    /// `--cache-stale-while-revalidate`).
    Stale,
}

impl Source {
    /// How the source reads in headers, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Miss => "miss",
            Source::Coalesced => "coalesced",
            Source::Stale => "stale",
        }
    }
}

/// A job as served to one call: AWS's answer and how this call got it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The job in wire form, shared with the cache.
    pub response: Arc<pb::DescribeJobResponse>,
    /// Where it came from.
    pub source: Source,
    /// How long ago AWS gave it.
    pub age: Duration,
}

/// What a call brings besides its question: its time, its wish for a
/// fresh answer, and whose share of the AWS budget it spends.
#[derive(Debug, Clone)]
pub struct Call {
    /// The caller's gRPC deadline, if it set one.
    pub deadline: Option<Instant>,
    /// Wants an answer AWS gave after the call arrived (`cache-control: no-cache`).
    pub fresh: bool,
    /// The most an answer may be past its lifetime for this call
    /// (`cache-control: max-stale=N`); `None`: whatever the stale windows
    /// allow; zero: never (as for a `fresh` call).
    pub max_stale: Option<Duration>,
    /// Whose share of the AWS budget the call spends.
    pub share: Share,
}

/// One item's result in a batch: its index and its answer.
pub type ItemResult = (usize, Result<Served, GatewayError>);

/// The roles the domain is built from. One gateway on its own keeps them
/// in-process ([`crate::backends::local::roles`]); replicas share them
/// ([`crate::backends::redis::roles`]).
pub struct Roles {
    /// The AWS call budget.
    pub limit: Arc<dyn RateLimit>,
    /// Where answers are kept.
    pub cache: Arc<dyn AnswerCache>,
    /// Who polls which watched job.
    pub polls: Arc<dyn PollOwnership>,
}

/// The roles whose state the metrics read at each scrape, held weakly: a
/// scrape after the gateway stopped reads nothing rather than keeping it
/// alive.
#[derive(Clone)]
pub struct Gauges {
    /// The AWS budget: its current rate and the calls waiting.
    pub limit: Weak<dyn RateLimit>,
    /// The answer cache: entries and their size.
    pub cache: Weak<dyn AnswerCache>,
    /// Watch streams, pollers and poll leases.
    pub watches: Weak<Watches>,
}

/// Answers job questions through an upstream.
#[derive(Clone)]
pub struct Jobs {
    upstream: Arc<dyn JobsUpstream>,
    retry: RetryPolicy,
    operation_timeout: Duration,
    limiter: Arc<dyn RateLimit>,
    latency: Arc<LatencyEstimate>,
    cache: Arc<dyn AnswerCache>,
    max_batch_size: usize,
    watches: Arc<Watches>,
    /// Which answers stand in past their lifetime, and their refreshes.
    stale: Arc<StaleAnswers>,
    metrics: Arc<JobsMetrics>,
}

/// How often one call looks the answer up again because the one it found
/// does not suit it (too old for a fresh request, or a failure caused by
/// another caller's shorter deadline).
const MAX_LOOKUPS: u32 = 3;

impl Jobs {
    /// A domain service over `upstream`, built from `roles`. Starts the
    /// watch scheduler and the roles' background work, so it must be called
    /// within a tokio runtime.
    pub fn new(upstream: Arc<dyn JobsUpstream>, settings: JobsSettings, roles: Roles) -> Self {
        let watches = Arc::new(Watches::new(settings.watch, roles.polls.clone()));
        let stale = Arc::new(StaleAnswers::new(settings.cache.clone()));
        let jobs = Self {
            upstream,
            retry: settings.retry,
            operation_timeout: settings.operation_timeout,
            limiter: roles.limit,
            latency: Arc::default(),
            cache: roles.cache,
            max_batch_size: settings.max_batch_size,
            watches,
            stale,
            metrics: Arc::default(),
        };
        jobs.watches.start_scheduler(jobs.clone());
        roles.polls.start(Arc::downgrade(&jobs.watches));
        jobs
    }

    /// The watch streams and their shared pollers.
    pub fn watches(&self) -> &Watches {
        &self.watches
    }

    /// What the domain counts.
    pub fn metrics(&self) -> &Arc<JobsMetrics> {
        &self.metrics
    }

    /// Where the gauges sampled at each scrape are read.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            limit: Arc::downgrade(&self.limiter),
            cache: Arc::downgrade(&self.cache),
            watches: Arc::downgrade(&self.watches),
        }
    }

    /// An AWS IoT Jobs event said `job_id` changed: its cached answers are
    /// set aside (the next call asks AWS) and, if it is watched, its next
    /// poll is due now. Returns how many watched questions it hastened;
    /// none costs AWS nothing.
    pub async fn job_event(&self, job_id: &str, trigger: Trigger) -> usize {
        let now = Instant::now();
        for query in JobQuery::all_about(job_id) {
            self.cache.forget_older_than(&query, now).await;
        }
        self.watches.hasten(job_id, trigger)
    }

    /// The token bucket in front of AWS.
    pub fn limiter(&self) -> &dyn RateLimit {
        self.limiter.as_ref()
    }

    /// The most items a batch may ask about.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }

    /// Describes one job, finishing by the call's deadline if it has one.
    /// A `fresh` call asks for an answer AWS gave after it arrived. When
    /// time runs out the upstream request is dropped, not left running; if
    /// other callers were waiting for it, one of them asks AWS again.
    pub async fn describe(&self, query: &JobQuery, call: &Call) -> Result<Served, GatewayError> {
        let result = self.answer(query, call).await;
        match &result {
            Ok(served) => self.metrics.answered(served.source),
            Err(GatewayError::RateLimited { .. }) => self.metrics.rate_limited(),
            Err(_) => {}
        }
        result
    }

    async fn answer(&self, query: &JobQuery, call: &Call) -> Result<Served, GatewayError> {
        let received = Instant::now();
        let own_deadline = received + self.operation_timeout;
        let (deadline, limit) = match call.deadline {
            Some(d) if d < own_deadline => (d, DeadlineSource::Caller),
            _ => (own_deadline, DeadlineSource::Gateway),
        };
        let lookup = self.lookup(query, received, deadline, call);
        let result = match tokio::time::timeout_at(deadline, lookup).await {
            Ok(result) => result,
            Err(_elapsed) => Err(GatewayError::DeadlineExceeded {
                job_id: query.job_id.clone(),
                budget: deadline.saturating_duration_since(received),
                limit,
            }),
        };
        self.or_stale(query, call, result).await
    }

    async fn lookup(
        &self,
        query: &JobQuery,
        received: Instant,
        deadline: Instant,
        call: &Call,
    ) -> Result<Served, GatewayError> {
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
            let fetched_here = AtomicBool::new(false);
            let fetch = async {
                fetched_here.store(true, Ordering::Relaxed);
                let sent = Sent::now();
                let mut tries = 0;
                let attempts = self.retry.run(deadline, || {
                    tries += 1;
                    if tries > 1 {
                        self.metrics.retry();
                    }
                    self.attempt(query, deadline, &call.share)
                });
                let answer = job_answer(query, attempts.await, sent.at)?;
                // Watchers of the job see every answer AWS gives.
                self.watches.observe(query, || observation(&answer, sent));
                Ok(answer)
            };
            let found = self.cache.get_or_fetch(query, Box::pin(fetch)).await;
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

    async fn attempt(
        &self,
        query: &JobQuery,
        deadline: Instant,
        share: &Share,
    ) -> Result<JobDescription, Attempt> {
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
    async fn send(&self, query: &JobQuery, permit: Permit) -> Result<JobDescription, Attempt> {
        let sent = self.metrics.aws_sent();
        let result = self.upstream.describe_job(query).await;
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

    /// Describes each item of a batch concurrently and sends every result
    /// as soon as it is ready, tagged with its index. Invalid items (already
    /// failed) are sent first; identical questions are asked once. Stops
    /// (dropping AWS requests in flight) when the receiver goes away.
    pub fn describe_each(
        &self,
        items: Vec<Result<JobQuery, GatewayError>>,
        call: Call,
    ) -> mpsc::Receiver<ItemResult> {
        // Room for every result: sending never waits on a slow reader.
        let (tx, rx) = mpsc::channel(items.len().max(1));
        let jobs = self.clone();
        tokio::spawn(async move {
            let mut questions: Vec<(JobQuery, Vec<usize>)> = Vec::new();
            let mut seen: HashMap<JobQuery, usize> = HashMap::new();
            for (index, item) in items.into_iter().enumerate() {
                match item {
                    Err(err) => {
                        if tx.send((index, Err(err))).await.is_err() {
                            return;
                        }
                    }
                    Ok(query) => match seen.get(&query) {
                        Some(&at) => questions[at].1.push(index),
                        None => {
                            seen.insert(query.clone(), questions.len());
                            questions.push((query, vec![index]));
                        }
                    },
                }
            }
            let mut tasks = JoinSet::new();
            let mut indices_of = HashMap::new();
            for (query, indices) in questions {
                let (jobs, call) = (jobs.clone(), call.clone());
                let job_id = query.job_id.clone();
                let id = tasks
                    .spawn(async move { jobs.describe(&query, &call).await })
                    .id();
                indices_of.insert(id, (job_id, indices));
            }
            loop {
                let joined = tokio::select! {
                    joined = tasks.join_next_with_id() => joined,
                    () = tx.closed() => return,
                };
                let Some(joined) = joined else { return };
                let (id, result) = match joined {
                    Ok((id, result)) => (id, Ok(result)),
                    Err(failed) => (failed.id(), Err(())),
                };
                let Some((job_id, indices)) = indices_of.remove(&id) else {
                    continue;
                };
                let result = result.unwrap_or_else(|()| {
                    Err(GatewayError::upstream(
                        job_id,
                        UpstreamErrorKind::Internal,
                        "the gateway failed while answering this item",
                    ))
                });
                for index in indices {
                    if tx.send((index, result.clone())).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}

impl Jobs {
    /// Opens a watch stream on `targets` for `owner`: counts it against the
    /// gateway's cap and the owner's, subscribes to each job's shared poller
    /// (starting the scheduler if it was idle) and seeds new pollers from
    /// the cache (unless the client resumes), so a job asked about recently
    /// costs AWS nothing to start watching. Fails with RESOURCE_EXHAUSTED
    /// beyond a cap and UNAVAILABLE during shutdown, before any AWS call.
    pub async fn watch(
        &self,
        targets: WatchTargets,
        owner: Option<StreamOwner>,
    ) -> Result<Subscription, GatewayError> {
        let ticket = self.watches.open_stream(owner)?;
        let mut receivers = Vec::with_capacity(targets.0.len());
        for (query, resume_from) in &targets.0 {
            let receiver = self.watches.subscribe(query);
            // A resuming client may have seen a newer state elsewhere than
            // this replica's cache holds: it waits for AWS instead.
            let unknown = receiver.borrow().is_none() && resume_from.is_none();
            if unknown && let Some(answer) = self.cache.peek(query).await {
                // Its schedule starts from when AWS gave the cached answer.
                let sent = Sent::before_all(answer.answered_at);
                self.watches.deliver(query, || observation(&answer, sent));
            }
            receivers.push(receiver);
        }
        Ok(Subscription::new(
            self.watches.clone(),
            ticket,
            targets,
            receivers,
        ))
    }
}

#[async_trait::async_trait]
impl Polls for Jobs {
    async fn token(&self) -> Permit {
        self.limiter.acquire_background().await
    }

    /// One watch poll of `query`: one AWS request with a background token
    /// already taken. It neither evicts the cached answer first nor stands in
    /// for calls as their shared AWS request (calls keep their own retries);
    /// its answer replaces an older cached one, then reaches the watchers.
    async fn poll(
        &self,
        query: &JobQuery,
        permit: Permit,
        trigger: Trigger,
    ) -> Result<(), GatewayError> {
        self.metrics.polled();
        let sent = Sent::now().because(trigger);
        let deadline = sent.at + self.operation_timeout;
        let request = self.send(query, permit);
        let result = match tokio::time::timeout_at(deadline, request).await {
            Ok(result) => result,
            Err(_elapsed) => {
                return Err(GatewayError::DeadlineExceeded {
                    job_id: query.job_id.clone(),
                    budget: self.operation_timeout,
                    limit: DeadlineSource::Gateway,
                });
            }
        };
        let answer = job_answer(query, result, sent.at)?;
        self.cache.store(query, answer.clone()).await;
        self.watches.observe(query, || observation(&answer, sent));
        Ok(())
    }
}

/// Turns the outcome of asking AWS into an answer; "no such job" is an
/// answer too.
fn job_answer(
    query: &JobQuery,
    result: Result<JobDescription, Attempt>,
    asked_at: Instant,
) -> Result<Arc<JobAnswer>, GatewayError> {
    let state = match result {
        Ok(description) => JobState::Found(Arc::new(pb::DescribeJobResponse::from(&description))),
        Err(Attempt::Upstream(err)) if err.kind == UpstreamErrorKind::NotFound => {
            JobState::NotFound(err)
        }
        Err(Attempt::Upstream(source)) => {
            return Err(GatewayError::Upstream {
                job_id: query.job_id.clone(),
                source,
            });
        }
        Err(Attempt::Limited(rejected)) => {
            return Err(GatewayError::RateLimited {
                job_id: query.job_id.clone(),
                rejected,
            });
        }
    };
    Ok(Arc::new(JobAnswer::new(state, asked_at)))
}

/// What watchers should see of an answer AWS gave to a request sent at
/// `sent`.
fn observation(answer: &Arc<JobAnswer>, sent: Sent) -> Observation {
    Observation::new(Observed::Answer(answer.clone()), sent)
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
