//! Answering one job question: the cache first (or an answer past its
//! lifetime, [`super::stale`]), then AWS through the [`Fetcher`], all within
//! the caller's deadline or the gateway's operation timeout, whichever is
//! sooner; and opening watch streams on the same answers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tracing::debug;

use crate::{
    domain::{
        Call, Gauges, JobsSettings, Roles, Served, Source,
        cache::AnswerCache,
        error::{DeadlineSource, GatewayError},
        fetch::{Fetcher, WatchPolls},
        limit::{RateLimit, Share},
        metrics::JobsMetrics,
        stale::{Refresh, StaleAnswers},
        watch::{
            Observation, StreamOwner, Subscription, WatchTargets, Watches,
            observation::{Sent, Trigger},
        },
    },
    upstream::{JobQuery, JobsUpstream},
};

/// Answers job questions through an upstream.
#[derive(Clone)]
pub struct Jobs {
    /// Asks AWS, for calls and the watch scheduler alike.
    fetcher: Arc<Fetcher>,
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
        let metrics = Arc::<JobsMetrics>::default();
        let fetcher = Arc::new(Fetcher::new(
            upstream,
            settings.retry,
            settings.operation_timeout,
            roles.limit,
            metrics.clone(),
        ));
        let watches = Arc::new(Watches::new(settings.watch, roles.polls.clone()));
        watches.start_scheduler(WatchPolls {
            fetcher: fetcher.clone(),
            cache: roles.cache.clone(),
        });
        roles.polls.start(Arc::downgrade(&watches));
        Self {
            fetcher,
            cache: roles.cache,
            max_batch_size: settings.max_batch_size,
            watches,
            stale: Arc::new(StaleAnswers::new(settings.cache)),
            metrics,
        }
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
            limit: Arc::downgrade(self.fetcher.limiter()),
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
        self.fetcher.limiter().as_ref()
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
        let own_deadline = received + self.fetcher.operation_timeout();
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
                let answer = self
                    .fetcher
                    .ask(query, deadline, &call.share, sent.at)
                    .await?;
                // Watchers of the job see every answer AWS gives.
                self.watches
                    .observe(query, || Observation::answered(&answer, sent));
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

    /// With stale-while-revalidate on, the answer this call gets without
    /// waiting for AWS, if any; a stale one is renewed in the background.
    async fn without_waiting(
        &self,
        query: &JobQuery,
        call: &Call,
    ) -> Option<Result<Served, GatewayError>> {
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
    /// says nothing about the job.
    async fn or_stale(
        &self,
        query: &JobQuery,
        call: &Call,
        result: Result<Served, GatewayError>,
    ) -> Result<Served, GatewayError> {
        self.stale
            .or_stale(self.cache.as_ref(), query, call, result)
            .await
    }

    /// Renews `refresh`'s question in the background, through the rate
    /// limit on `share`'s account: it joins a fetch in flight, takes an
    /// answer another call just stored, or asks AWS. Its answer is cached
    /// and reaches watchers as any other does.
    fn revalidate(&self, refresh: Refresh, share: &Share) {
        let jobs = self.clone();
        let call = Call {
            deadline: None,
            fresh: false,
            max_stale: Some(Duration::ZERO),
            share: share.clone(),
        };
        tokio::spawn(async move {
            let query = refresh.query();
            let received = Instant::now();
            let deadline = received + jobs.fetcher.operation_timeout();
            let lookup = jobs.lookup(query, received, deadline, &call);
            match tokio::time::timeout_at(deadline, lookup).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    debug!(job_id = %query.job_id, error = %err.chain(), "background refresh failed")
                }
                Err(_elapsed) => {
                    debug!(job_id = %query.job_id, "background refresh ran out of time")
                }
            }
        });
    }

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
                self.watches
                    .deliver(query, || Observation::answered(&answer, sent));
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
