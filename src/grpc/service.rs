//! The `iot.jobs.v1.JobsGateway` gRPC service. Handlers only validate,
//! call the domain ([`crate::jobs`]) and convert back; each call leaves one
//! log line with its method, job id (or item count), status code and latency.
//!
//! Cache metadata: a request header `cache-control: no-cache` (or
//! `max-age=0`) asks for an answer AWS gave after the request arrived, and
//! `max-stale=N` bounds how stale an answer may be ([`super::cache_control`]);
//! DescribeJob answers carry `x-cache` (`hit`, `miss`, `coalesced` or
//! `stale`) and `x-cache-age-ms` headers, and batch items a `cache` field.

use std::{pin::Pin, sync::Arc};

use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{
    Code, Request, Response, Status,
    metadata::{MetadataMap, MetadataValue},
};
use tracing::{debug, info, warn};

use super::{cache_control::CacheControl, deadline, validate};
use crate::{
    auth::Caller,
    error::{Denied, GatewayError},
    jobs::{
        Call, ItemResult, Jobs, Served, Source,
        answer::JobState,
        watch::{ChangeKind, Observed, WatchEvent},
    },
    pb::{self, jobs_gateway_server::JobsGateway},
    upstream::JobQuery,
};

/// The gRPC face of [`Jobs`].
#[derive(Clone)]
pub struct JobsGatewayService {
    jobs: Jobs,
}

impl JobsGatewayService {
    /// Serves `jobs` over gRPC.
    pub fn new(jobs: Jobs) -> Self {
        Self { jobs }
    }

    /// Validates a batch and starts answering it: the job ids as requested,
    /// and the channel its results arrive on.
    fn start_batch(
        &self,
        request: Request<pb::BatchDescribeJobsRequest>,
        log: &mut BatchLog,
    ) -> Result<(Vec<String>, tokio::sync::mpsc::Receiver<ItemResult>), Status> {
        let caller = Caller::of(&request);
        let call = call_of(&request, &caller, log.received);
        log.caller = caller.name_shared();
        let requests = request.into_inner().requests;
        log.items = requests.len();
        let (max, by_policy) = caller.max_batch_size(self.jobs.max_batch_size());
        if let Err(err) = validate::batch_size(requests.len(), max, by_policy) {
            log.rejected(&err);
            return Err(err.into());
        }
        let job_ids = requests.iter().map(|r| r.job_id.clone()).collect();
        // A job the caller may not read fails only its own item.
        let items = requests
            .into_iter()
            .enumerate()
            .map(|(index, request)| {
                let query = validate::batch_item(index, request)?;
                caller.may_read(&query.job_id)?;
                Ok(query)
            })
            .collect();
        Ok((job_ids, self.jobs.describe_each(items, call)))
    }
}

/// The stream type of StreamDescribeJobs.
pub type JobResultStream = Pin<Box<dyn Stream<Item = Result<pb::JobResult, Status>> + Send>>;

#[tonic::async_trait]
impl JobsGateway for JobsGatewayService {
    async fn describe_job(
        &self,
        request: Request<pb::DescribeJobRequest>,
    ) -> Result<Response<pb::DescribeJobResponse>, Status> {
        let received = Instant::now();
        let caller = Caller::of(&request);
        let call = call_of(&request, &caller, received);
        let request = request.into_inner();
        let log = CallLog::new("DescribeJob", &request.job_id, &caller, received);
        let result = async {
            let query = JobQuery::try_from(request)?;
            caller.may_read(&query.job_id)?;
            self.jobs.describe(&query, &call).await
        }
        .await;
        let answer = log.finish(result)?;
        let mut response = Response::new(pb::DescribeJobResponse::clone(&answer.response));
        set_cache_headers(response.metadata_mut(), &answer);
        Ok(response)
    }

    async fn batch_describe_jobs(
        &self,
        request: Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<Response<pb::BatchDescribeJobsResponse>, Status> {
        let mut log = BatchLog::new("BatchDescribeJobs");
        let (job_ids, mut results) = self.start_batch(request, &mut log)?;
        let mut slots: Vec<Option<pb::JobResult>> = vec![None; job_ids.len()];
        while let Some((index, result)) = results.recv().await {
            slots[index] = Some(log.item(index, &job_ids[index], result));
        }
        let results = slots
            .into_iter()
            .enumerate()
            .map(|(index, slot)| {
                // Every item is answered; a missing one would be a gateway defect.
                slot.unwrap_or_else(|| {
                    log.item(index, &job_ids[index], Err(lost_item(&job_ids[index])))
                })
            })
            .collect();
        Ok(Response::new(pb::BatchDescribeJobsResponse { results }))
    }

    type StreamDescribeJobsStream = JobResultStream;

    async fn stream_describe_jobs(
        &self,
        request: Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<Response<Self::StreamDescribeJobsStream>, Status> {
        let mut log = BatchLog::new("StreamDescribeJobs");
        let (job_ids, results) = self.start_batch(request, &mut log)?;
        // The log line is written when the stream ends or the caller leaves.
        let stream = ReceiverStream::new(results)
            .map(move |(index, result)| Ok(log.item(index, &job_ids[index], result)));
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchJobsStream = WatchEventStream;

    async fn watch_jobs(
        &self,
        request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let mut log = WatchLog::new(request.job_ids.len(), &caller);
        let settings = self.jobs.watches().settings();
        let (max_jobs, per_connection) = (settings.max_jobs, settings.max_streams_per_connection);
        let opened = async {
            let requested = request.job_ids.clone();
            let targets = validate::watch(request, max_jobs)?;
            refuse_unreadable(&caller, &requested)?;
            self.jobs
                .watch(targets, caller.stream_owner(per_connection))
                .await
        };
        let subscription = match opened.await {
            Ok(subscription) => subscription,
            Err(err) => {
                log.rejected(&err);
                return Err(err.into());
            }
        };
        info!(method = "WatchJobs", caller = %log.caller, jobs = log.jobs, "watch started");
        // The log line is written when the stream ends or the client leaves.
        let stream = futures_util::stream::unfold(
            (subscription, log),
            |(mut subscription, mut log)| async move {
                let event = subscription.next().await?;
                let item = log.event(event);
                Some((item, (subscription, log)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Refuses a whole watch, before anything is polled, if the caller may not
/// read one of its jobs; every such job is named.
fn refuse_unreadable(caller: &Caller, job_ids: &[String]) -> Result<(), GatewayError> {
    let mut denied: Vec<(usize, String)> = Vec::new();
    for (index, job_id) in job_ids.iter().enumerate() {
        let seen = denied.iter().any(|(_, id)| id == job_id);
        if !seen && !caller.grants().may_read(job_id) {
            denied.push((index, job_id.clone()));
        }
    }
    if denied.is_empty() {
        return Ok(());
    }
    Err(GatewayError::NotPermitted {
        caller: caller.name().to_owned(),
        denied: Denied::Jobs(denied),
    })
}

/// The stream type of WatchJobs.
pub type WatchEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchJobsResponse, Status>> + Send>>;

/// A watch event in wire form.
fn watch_event(event: WatchEvent) -> pb::WatchJobsResponse {
    use pb::{job_event::State, watch_jobs_response::Event};
    let event = match event {
        WatchEvent::Heartbeat { watching } => Event::Heartbeat(pb::Heartbeat {
            sent_at: Some(std::time::SystemTime::now().into()),
            watching: u32::try_from(watching).unwrap_or(u32::MAX),
        }),
        WatchEvent::Job {
            job_id,
            observation,
            changes,
            last,
        } => {
            use pb::job_event::Kind;
            let kind = match changes.kind {
                ChangeKind::Current => Kind::Current,
                ChangeKind::StatusChanged => Kind::StatusChanged,
                ChangeKind::Progress => Kind::Progress,
                ChangeKind::Updated => Kind::Updated,
                ChangeKind::Gone => Kind::Gone,
                ChangeKind::Failed => Kind::Failed,
            };
            let state = match &observation.state {
                Observed::Answer(answer) => match &answer.state {
                    JobState::Found(response) => {
                        State::Response(pb::DescribeJobResponse::clone(response))
                    }
                    JobState::NotFound(err) => State::Error(
                        GatewayError::Upstream {
                            job_id: job_id.clone(),
                            source: err.clone(),
                        }
                        .into_rpc_status(),
                    ),
                },
                Observed::Failed(err) => State::Error(err.clone().into_rpc_status()),
            };
            Event::Job(pb::JobEvent {
                job_id,
                version: observation.version,
                kind: kind as i32,
                changed_fields: changes.fields.iter().map(|f| (*f).to_owned()).collect(),
                r#final: last,
                state: Some(state),
                observed_at: Some(observation.observed_at.into()),
            })
        }
    };
    pb::WatchJobsResponse { event: Some(event) }
}

/// Counts a watch stream's events and writes its log line when the stream
/// ends or the client leaves.
struct WatchLog {
    caller: Arc<str>,
    received: Instant,
    jobs: usize,
    events: usize,
    heartbeats: usize,
    ended: Option<Code>,
    /// Rejected before it started; the rejection was logged already.
    rejected: bool,
}

impl WatchLog {
    fn new(jobs: usize, caller: &Caller) -> Self {
        Self {
            caller: caller.name_shared(),
            received: Instant::now(),
            jobs,
            events: 0,
            heartbeats: 0,
            ended: None,
            rejected: false,
        }
    }

    fn rejected(&mut self, err: &GatewayError) {
        self.rejected = true;
        info!(method = "WatchJobs", caller = %self.caller, jobs = self.jobs, code = ?err.code(), error = %err.chain(), "watch rejected");
    }

    fn event(
        &mut self,
        event: Result<WatchEvent, GatewayError>,
    ) -> Result<pb::WatchJobsResponse, Status> {
        match event {
            Ok(event) => {
                match &event {
                    WatchEvent::Heartbeat { .. } => self.heartbeats += 1,
                    WatchEvent::Job { .. } => self.events += 1,
                }
                Ok(watch_event(event))
            }
            Err(err) => {
                self.ended = Some(err.code());
                Err(err.into())
            }
        }
    }
}

impl Drop for WatchLog {
    fn drop(&mut self) {
        if self.rejected {
            return;
        }
        let duration_s = self.received.elapsed().as_secs_f64();
        let (jobs, events, heartbeats) = (self.jobs, self.events, self.heartbeats);
        let caller = &*self.caller;
        match self.ended {
            Some(code) => info!(
                method = "WatchJobs",
                caller,
                jobs,
                events,
                heartbeats,
                ?code,
                duration_s,
                "watch ended"
            ),
            None => info!(
                method = "WatchJobs",
                caller,
                jobs,
                events,
                heartbeats,
                duration_s,
                "watch ended (all jobs final, or the client left)"
            ),
        }
    }
}

/// What the domain needs to know of a call besides its question.
fn call_of<T>(request: &Request<T>, caller: &Caller, received: Instant) -> Call {
    let metadata = request.metadata();
    let cache_control = CacheControl::of(metadata);
    Call {
        deadline: deadline::from_metadata(metadata, received),
        fresh: cache_control.fresh,
        max_stale: cache_control.max_stale,
        share: caller.share(),
    }
}

/// How an answer's source reads in headers and logs.
fn source_name(source: Source) -> &'static str {
    match source {
        Source::Hit => "hit",
        Source::Miss => "miss",
        Source::Coalesced => "coalesced",
        Source::Stale => "stale",
    }
}

fn age_ms(answer: &Served) -> u64 {
    u64::try_from(answer.age.as_millis()).unwrap_or(u64::MAX)
}

fn set_cache_headers(metadata: &mut MetadataMap, answer: &Served) {
    let source = MetadataValue::from_static(source_name(answer.source));
    metadata.insert("x-cache", source);
    metadata.insert("x-cache-age-ms", MetadataValue::from(age_ms(answer)));
}

fn cache_info(answer: &Served) -> pb::CacheInfo {
    use pb::cache_info::Source as Wire;
    let source = match answer.source {
        Source::Hit => Wire::Hit,
        Source::Miss => Wire::Miss,
        Source::Coalesced => Wire::Coalesced,
        Source::Stale => Wire::Stale,
    };
    pb::CacheInfo {
        source: source as i32,
        age_ms: age_ms(answer),
    }
}

fn lost_item(job_id: &str) -> GatewayError {
    GatewayError::upstream(
        job_id,
        crate::upstream::UpstreamErrorKind::Internal,
        "the gateway lost this item's answer",
    )
}

/// Counts a batch's outcomes and writes its log line when dropped: after
/// the last item, or when the caller goes away.
struct BatchLog {
    method: &'static str,
    caller: Arc<str>,
    received: Instant,
    items: usize,
    ok: usize,
    failed: usize,
    /// Rejected as a whole; the rejection was logged already.
    rejected: bool,
}

impl BatchLog {
    fn new(method: &'static str) -> Self {
        Self {
            method,
            caller: "".into(),
            received: Instant::now(),
            items: 0,
            ok: 0,
            failed: 0,
            rejected: false,
        }
    }

    fn rejected(&mut self, err: &GatewayError) {
        self.rejected = true;
        info!(method = self.method, caller = %self.caller, items = self.items, code = ?err.code(), error = %err.chain(), "batch rejected");
    }

    /// One item's wire result, counted.
    fn item(
        &mut self,
        index: usize,
        job_id: &str,
        result: Result<Served, GatewayError>,
    ) -> pb::JobResult {
        use pb::job_result::Outcome;
        let (outcome, cache) = match result {
            Ok(answer) => {
                self.ok += 1;
                let cache = cache_info(&answer);
                (
                    Outcome::Response(pb::DescribeJobResponse::clone(&answer.response)),
                    Some(cache),
                )
            }
            Err(err) => {
                self.failed += 1;
                if !matches!(err.code(), Code::InvalidArgument | Code::NotFound) {
                    warn!(method = self.method, caller = %self.caller, index, job_id, code = ?err.code(), error = %err.chain(), "batch item failed");
                }
                (Outcome::Error(err.into_rpc_status()), None)
            }
        };
        pb::JobResult {
            index: Some(u32::try_from(index).unwrap_or(u32::MAX)),
            job_id: job_id.to_owned(),
            outcome: Some(outcome),
            cache,
        }
    }
}

impl Drop for BatchLog {
    fn drop(&mut self) {
        if self.rejected {
            return;
        }
        let latency_ms = self.received.elapsed().as_secs_f64() * 1e3;
        let (method, items, ok, failed) = (self.method, self.items, self.ok, self.failed);
        let caller = &*self.caller;
        if ok + failed == items {
            info!(method, caller, items, ok, failed, code = ?Code::Ok, latency_ms, "call finished");
        } else {
            info!(method, caller, items, ok, failed, code = ?Code::Cancelled, latency_ms, "caller went away; upstream work dropped");
        }
    }
}

/// Writes the call's log line when it finishes, or when the caller goes
/// away first (the handler future is dropped, and the AWS request with it).
struct CallLog {
    method: &'static str,
    caller: Arc<str>,
    job_id: String,
    received: Instant,
    finished: bool,
}

/// Job ids in logs are cut to this many characters; invalid ids can be huge.
const LOGGED_ID_CHARS: usize = 80;

impl CallLog {
    fn new(method: &'static str, job_id: &str, caller: &Caller, received: Instant) -> Self {
        Self {
            method,
            caller: caller.name_shared(),
            job_id: job_id.chars().take(LOGGED_ID_CHARS).collect(),
            received,
            finished: false,
        }
    }

    /// Logs the outcome. Answers from cache are logged at debug level: they
    /// are the hot path (tens of thousands a second), and a line for each
    /// would cost a fifth of the gateway's throughput (BENCHMARKS.md).
    fn finish(mut self, result: Result<Served, GatewayError>) -> Result<Served, Status> {
        self.finished = true;
        let latency_ms = self.received.elapsed().as_secs_f64() * 1e3;
        let (method, job_id, caller) = (self.method, self.job_id.as_str(), &*self.caller);
        match result {
            Ok(answer) => {
                let (code, cache) = (Code::Ok, source_name(answer.source));
                if answer.source == Source::Hit {
                    debug!(
                        method,
                        caller,
                        job_id,
                        ?code,
                        latency_ms,
                        cache,
                        "call finished"
                    );
                } else {
                    info!(
                        method,
                        caller,
                        job_id,
                        ?code,
                        latency_ms,
                        cache,
                        "call finished"
                    );
                }
                Ok(answer)
            }
            Err(err) => {
                let code = err.code();
                let cause = err.chain();
                match code {
                    Code::InvalidArgument | Code::NotFound => {
                        info!(method, caller, job_id, ?code, latency_ms, error = %cause, "call finished")
                    }
                    _ => {
                        warn!(method, caller, job_id, ?code, latency_ms, error = %cause, "call failed")
                    }
                }
                Err(err.into())
            }
        }
    }
}

impl Drop for CallLog {
    fn drop(&mut self) {
        if !self.finished {
            let latency_ms = self.received.elapsed().as_secs_f64() * 1e3;
            info!(
                method = self.method,
                caller = &*self.caller,
                job_id = self.job_id,
                code = ?Code::Cancelled,
                latency_ms,
                "caller went away; upstream work dropped"
            );
        }
    }
}
