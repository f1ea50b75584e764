//! The domain service: one [`Answers`] per AWS operation, each over its own
//! bucket and cache space, and the watch streams on DescribeJob's answers.

use std::sync::Arc;

use tokio::time::Instant;

use crate::{
    domain::{
        Answers, Backend, Call, Gauges, ItemResult, JobsSettings, Served,
        answer::Answer,
        answers::Witness,
        error::GatewayError,
        fetch::WatchPolls,
        limit::RateLimit,
        listing::{ListedPage, ListingQuery, Listings},
        metrics::JobsMetrics,
        watch::{
            Observation, StreamOwner, Subscription, WatchTargets, Watches,
            observation::{Sent, Trigger},
        },
    },
    upstream::{
        DescribeJob, DescribeJobExecution, ExecutionQuery, JobExecutionsPage, JobQuery,
        ListJobExecutionsForJob, ListJobExecutionsForThing, ThingExecutionsPage,
        aws::AwsJobsUpstream,
    },
};

/// Answers job questions through an upstream.
#[derive(Clone)]
pub struct Jobs {
    /// DescribeJob, for calls, batches and (through its fetcher and cache)
    /// the watch scheduler.
    describe_job: Answers<DescribeJob>,
    /// DescribeJobExecution, over its own bucket and cache space.
    describe_job_execution: Answers<DescribeJobExecution>,
    /// ListJobExecutionsForJob, page by page, over its own bucket and cache.
    list_job_executions_for_job: Answers<ListJobExecutionsForJob>,
    /// ListJobExecutionsForThing, likewise.
    list_job_executions_for_thing: Answers<ListJobExecutionsForThing>,
    /// Whole listings of a job's executions, over the pages' answers.
    listings: Arc<Listings>,
    max_batch_size: usize,
    watches: Arc<Watches>,
    metrics: Arc<JobsMetrics>,
}

/// The watchers of a job see every DescribeJob answer AWS gives to calls.
impl Witness<DescribeJob> for Watches {
    fn answered(&self, query: &JobQuery, answer: &Arc<Answer<DescribeJob>>, sent: Sent) {
        self.observe(query, || Observation::answered(answer, sent));
    }
}

impl Jobs {
    /// A domain service over `upstream`, with each operation's roles from
    /// `backend`. Starts the watch scheduler and the roles' background
    /// work, so it must be called within a tokio runtime.
    pub async fn new(
        upstream: Arc<AwsJobsUpstream>,
        settings: JobsSettings,
        backend: &impl Backend,
    ) -> Self {
        let metrics = Arc::<JobsMetrics>::default();
        let polls = backend.polls();
        let watches = Arc::new(Watches::new(settings.watch.clone(), polls.clone()));
        let describe_job = Answers::build(upstream.clone(), &settings, backend, &metrics)
            .await
            .witnessed_by(watches.clone());
        let describe_job_execution =
            Answers::build(upstream.clone(), &settings, backend, &metrics).await;
        let list_job_executions_for_job =
            Answers::build(upstream.clone(), &settings, backend, &metrics).await;
        let list_job_executions_for_thing =
            Answers::build(upstream, &settings, backend, &metrics).await;
        let listings = Arc::new(Listings::new(
            list_job_executions_for_job.clone(),
            settings.cache.ttl,
        ));
        watches.start_scheduler(WatchPolls {
            fetcher: describe_job.fetcher().clone(),
            cache: describe_job.cache().clone(),
        });
        polls.start(Arc::downgrade(&watches));
        Self {
            describe_job,
            describe_job_execution,
            list_job_executions_for_job,
            list_job_executions_for_thing,
            listings,
            max_batch_size: settings.max_batch_size,
            watches,
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
            operations: vec![
                self.describe_job.gauges(),
                self.describe_job_execution.gauges(),
                self.list_job_executions_for_job.gauges(),
                self.list_job_executions_for_thing.gauges(),
            ],
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
            self.describe_job
                .cache()
                .forget_older_than(&query, now)
                .await;
        }
        self.watches.hasten(job_id, trigger)
    }

    /// DescribeJob's token bucket.
    pub fn limiter(&self) -> &dyn RateLimit {
        self.describe_job.limiter()
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
        self.describe_job.ask(query, call).await
    }

    /// Describes each job of a batch (see [`Answers::each`]).
    pub fn describe_each(
        &self,
        items: Vec<Result<JobQuery, GatewayError>>,
        call: Call,
    ) -> tokio::sync::mpsc::Receiver<ItemResult> {
        self.describe_job.each(items, call)
    }

    /// Describes each execution of a batch (see [`Answers::each`]).
    pub fn describe_executions(
        &self,
        items: Vec<Result<ExecutionQuery, GatewayError>>,
        call: Call,
    ) -> tokio::sync::mpsc::Receiver<ItemResult<DescribeJobExecution>> {
        self.describe_job_execution.each(items, call)
    }

    /// Describes one thing's execution of a job, as [`Jobs::describe`]
    /// does a job, through DescribeJobExecution's own bucket and cache.
    pub async fn describe_execution(
        &self,
        query: &ExecutionQuery,
        call: &Call,
    ) -> Result<Served<DescribeJobExecution>, GatewayError> {
        self.describe_job_execution.ask(query, call).await
    }

    /// One page of a job's executions, through ListJobExecutionsForJob's
    /// own bucket and cache.
    pub async fn list_executions(
        &self,
        page: &JobExecutionsPage,
        call: &Call,
    ) -> Result<Served<ListJobExecutionsForJob>, GatewayError> {
        self.list_job_executions_for_job.ask(page, call).await
    }

    /// Every page of a job's executions, as AWS gives them: a listing in
    /// progress is joined and a finished one kept for `--cache-ttl`, so
    /// identical listings cost AWS their pages once (see
    /// [`crate::domain::listing`]).
    pub fn list_all(
        &self,
        query: &ListingQuery,
        call: &Call,
    ) -> impl futures_util::Stream<Item = Result<ListedPage, GatewayError>> + Send + 'static {
        self.listings.list(query, call)
    }

    /// One page of a thing's executions, through ListJobExecutionsForThing's
    /// own bucket and cache.
    pub async fn list_thing_executions(
        &self,
        page: &ThingExecutionsPage,
        call: &Call,
    ) -> Result<Served<ListJobExecutionsForThing>, GatewayError> {
        self.list_job_executions_for_thing.ask(page, call).await
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
            if unknown && let Some(answer) = self.describe_job.cache().peek(query).await {
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
