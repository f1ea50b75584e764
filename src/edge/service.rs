//! The `iot.jobs.v1.JobsGateway` gRPC service. Handlers only validate,
//! call the domain ([`crate::domain`]) and convert back; what they learn of a
//! call (job id, cache source, item and event counts, why it failed) goes
//! to its [`CallNote`], and the observation layer writes the call's one log
//! line and its metrics ([`crate::edge::observe`]).
//!
//! Cache metadata: a request header `cache-control: no-cache` (or
//! `max-age=0`) asks for an answer AWS gave after the request arrived, and
//! `max-stale=N` bounds how stale an answer may be ([`crate::edge::cache_control`]);
//! unary answers carry `x-cache` (`hit`, `miss`, `coalesced` or `stale`)
//! and `x-cache-age-ms` headers, which the observation layer writes from the
//! call's note, and batch items a `cache` field.

use std::{pin::Pin, time::SystemTime};

use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::{
    domain::{
        Call, ItemResult, Jobs, Served,
        answer::JobState,
        error::{Denied, GatewayError},
        listing::ListingQuery,
        watch::{ChangeKind, Observed, WatchEvent, observation::Trigger},
    },
    edge::{
        batch,
        cache_control::CacheControl,
        deadline,
        observe::{CallNote, Received},
        status::rpc_status,
        validate,
    },
    pb::{self, jobs_gateway_server::JobsGateway},
    security::auth::Caller,
    upstream::{
        ExecutionQuery, JobExecutionsPage, JobQuery, Operation, Subject, ThingExecutionsPage,
    },
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

    /// Checks a batch of DescribeJob items and starts answering it.
    fn start_jobs_batch(
        &self,
        request: Request<Vec<pb::DescribeJobRequest>>,
        note: &CallNote,
    ) -> Result<tokio::sync::mpsc::Receiver<ItemResult>, Status> {
        batch::start(
            request,
            note,
            self.jobs.max_batch_size(),
            |index, request, caller| {
                let query = validate::batch_item(index, request)?;
                caller.may_read(&query.job_id)?;
                Ok(query)
            },
            |items, call| self.jobs.describe_each(items, call),
        )
    }
}

/// The job ids of a batch's items, as requested.
fn job_ids_of(requests: &[pb::DescribeJobRequest]) -> Vec<String> {
    requests.iter().map(|r| r.job_id.clone()).collect()
}

/// Every result of a batch of `len` items, in request order; an item the
/// batch never answered (a gateway defect) is answered as lost, about
/// `subject` of its index.
async fn collect<O: Operation, R>(
    mut results: tokio::sync::mpsc::Receiver<ItemResult<O>>,
    len: usize,
    subject: impl Fn(usize) -> Subject,
    build: impl Fn(usize, Result<Served<O>, GatewayError>) -> R,
) -> Vec<R> {
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(len).collect();
    while let Some((index, result)) = results.recv().await {
        if let Some(slot) = slots.get_mut(index) {
            *slot = Some(build(index, result));
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(index, slot)| slot.unwrap_or_else(|| build(index, batch::lost(&subject(index)))))
        .collect()
}

/// One DescribeJob item's wire result, noted.
fn job_result(
    note: &CallNote,
    method: &'static str,
    index: usize,
    job_id: &str,
    result: Result<Served, GatewayError>,
) -> pb::JobResult {
    use pb::job_result::Outcome;
    let (outcome, cache) = batch::outcome(note, method, index, &Subject::from(job_id), result);
    pb::JobResult {
        index: Some(u32::try_from(index).unwrap_or(u32::MAX)),
        job_id: job_id.to_owned(),
        outcome: Some(outcome.map_or_else(Outcome::Error, Outcome::Response)),
        cache,
    }
}

/// The stream type of StreamDescribeJobs.
pub type DescribeResultStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamDescribeJobsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobsGateway for JobsGatewayService {
    async fn describe_job(
        &self,
        request: Request<pb::DescribeJobRequest>,
    ) -> Result<Response<pb::DescribeJobResponse>, Status> {
        let (caller, call, note, request) = start_unary(request, |r, note| note.job(&r.job_id));
        let result = async {
            let query = JobQuery::try_from(request)?;
            caller.may_read(&query.job_id)?;
            self.jobs.describe(&query, &call).await
        }
        .await;
        finish_unary(result, &note, |_| {})
    }

    async fn describe_job_execution(
        &self,
        request: Request<pb::DescribeJobExecutionRequest>,
    ) -> Result<Response<pb::DescribeJobExecutionResponse>, Status> {
        let (caller, call, note, request) = start_unary(request, |r, note| {
            note.job(&r.job_id);
            note.thing(&r.thing_name);
        });
        let result = async {
            let query = ExecutionQuery::try_from(request)?;
            caller.may_read(&query.job_id)?;
            caller.may_read_thing(&query.thing_name)?;
            self.jobs.describe_execution(&query, &call).await
        }
        .await;
        finish_unary(result, &note, |_| {})
    }

    async fn list_job_executions_for_job(
        &self,
        request: Request<pb::ListJobExecutionsForJobRequest>,
    ) -> Result<Response<pb::ListJobExecutionsForJobResponse>, Status> {
        let (caller, call, note, request) = start_unary(request, |r, note| note.job(&r.job_id));
        let result = async {
            let page = JobExecutionsPage::try_from(request)?;
            caller.may_read(&page.job_id)?;
            self.jobs.list_executions(&page, &call).await
        }
        .await;
        // The page as AWS gave it, less the things the caller may not read.
        finish_unary(result, &note, |page| {
            readable_things(&caller, &mut page.execution_summaries);
        })
    }

    type StreamJobExecutionsForJobStream = ListingStream;

    async fn stream_job_executions_for_job(
        &self,
        request: Request<pb::StreamJobExecutionsForJobRequest>,
    ) -> Result<Response<Self::StreamJobExecutionsForJobStream>, Status> {
        let (caller, call, note, request) = start_unary(request, |r, note| note.job(&r.job_id));
        let checked = ListingQuery::try_from(request)
            .and_then(|query| caller.may_read(&query.job_id).map(|()| query));
        let query = checked.map_err(|err| {
            note.failed(&err);
            Status::from(err)
        })?;
        // The call's line is written when the stream ends or the client leaves.
        let stream = self
            .jobs
            .list_all(&query, &call)
            .map(move |listed| match listed {
                Ok(listed) => {
                    let mut execution_summaries = listed.page.execution_summaries.clone();
                    readable_things(&caller, &mut execution_summaries);
                    Ok(pb::StreamJobExecutionsForJobResponse {
                        execution_summaries,
                        page: Some(u32::try_from(listed.index).unwrap_or(u32::MAX)),
                    })
                }
                Err(err) => {
                    note.failed(&err);
                    Err(Status::from(err))
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_job_executions_for_thing(
        &self,
        request: Request<pb::ListJobExecutionsForThingRequest>,
    ) -> Result<Response<pb::ListJobExecutionsForThingResponse>, Status> {
        let (caller, call, note, request) = start_unary(request, |r, note| {
            note.thing(&r.thing_name);
            if let Some(job_id) = &r.job_id {
                note.job(job_id);
            }
        });
        let result = async {
            let page = ThingExecutionsPage::try_from(request)?;
            caller.may_read_thing(&page.thing_name)?;
            if let Some(job_id) = &page.job_id {
                caller.may_read(job_id)?;
            }
            self.jobs.list_thing_executions(&page, &call).await
        }
        .await;
        // The page as AWS gave it, less the jobs the caller may not read.
        finish_unary(result, &note, |page| {
            if !caller.grants().reads_everything() {
                page.execution_summaries.retain(|s| {
                    s.job_id
                        .as_deref()
                        .is_some_and(|job| caller.grants().may_read(job))
                });
            }
        })
    }

    async fn batch_describe_jobs(
        &self,
        request: Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<Response<pb::BatchDescribeJobsResponse>, Status> {
        let note = CallNote::of(&request);
        let request = request.map(|r| r.requests);
        let job_ids = job_ids_of(request.get_ref());
        let results = self.start_jobs_batch(request, &note)?;
        let subject = |index: usize| Subject::from(job_ids[index].as_str());
        let results = collect(results, job_ids.len(), subject, |index, result| {
            job_result(&note, BATCH, index, &job_ids[index], result)
        })
        .await;
        Ok(Response::new(pb::BatchDescribeJobsResponse { results }))
    }

    type StreamDescribeJobsStream = DescribeResultStream;

    async fn stream_describe_jobs(
        &self,
        request: Request<pb::StreamDescribeJobsRequest>,
    ) -> Result<Response<Self::StreamDescribeJobsStream>, Status> {
        let note = CallNote::of(&request);
        let request = request.map(|r| r.requests);
        let job_ids = job_ids_of(request.get_ref());
        let results = self.start_jobs_batch(request, &note)?;
        let stream = ReceiverStream::new(results).map(move |(index, result)| {
            Ok(job_result(&note, STREAM, index, &job_ids[index], result).into())
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn batch_describe_job_executions(
        &self,
        request: Request<pb::BatchDescribeJobExecutionsRequest>,
    ) -> Result<Response<pb::BatchDescribeJobExecutionsResponse>, Status> {
        let note = CallNote::of(&request);
        let request = request.map(|r| r.requests);
        let named: Vec<(String, String)> = request
            .get_ref()
            .iter()
            .map(|r| (r.job_id.clone(), r.thing_name.clone()))
            .collect();
        let results = batch::start(
            request,
            &note,
            self.jobs.max_batch_size(),
            |index, request, caller| {
                let query = validate::execution_item(index, request)?;
                caller.may_read(&query.job_id)?;
                caller.may_read_thing(&query.thing_name)?;
                Ok(query)
            },
            |items, call| self.jobs.describe_executions(items, call),
        )?;
        let subject = |index: usize| Subject::from(named[index].0.as_str());
        let results = collect(results, named.len(), subject, |index, result| {
            use pb::job_execution_result::Outcome;
            let (job_id, thing_name) = &named[index];
            let (outcome, cache) = batch::outcome(
                &note,
                pb::rpc::BATCH_DESCRIBE_JOB_EXECUTIONS,
                index,
                &Subject::from(job_id.as_str()),
                result,
            );
            pb::JobExecutionResult {
                index: Some(u32::try_from(index).unwrap_or(u32::MAX)),
                job_id: job_id.clone(),
                thing_name: thing_name.clone(),
                outcome: Some(outcome.map_or_else(Outcome::Error, Outcome::Response)),
                cache,
            }
        })
        .await;
        Ok(Response::new(pb::BatchDescribeJobExecutionsResponse {
            results,
        }))
    }

    type WatchJobsStream = WatchEventStream;

    async fn watch_jobs(
        &self,
        request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        let caller = Caller::of(&request);
        let note = CallNote::of(&request);
        note.caller(caller.name_shared());
        let request = request.into_inner();
        let jobs = request.job_ids.len();
        note.watching(jobs);
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
                note.failed(&err);
                return Err(err.into());
            }
        };
        info!(
            method = pb::rpc::WATCH_JOBS,
            caller = caller.name(),
            jobs,
            "watch started"
        );
        // The call's line is written when the stream ends or the client leaves.
        let metrics = self.jobs.metrics().clone();
        let stream = futures_util::stream::unfold(subscription, move |mut subscription| {
            let (note, metrics) = (note.clone(), metrics.clone());
            async move {
                let event = subscription.next().await?;
                let item = match event {
                    Ok(event) => {
                        if let WatchEvent::Job { observation, .. } = &event {
                            let age = SystemTime::now()
                                .duration_since(observation.observed_at)
                                .unwrap_or_default();
                            metrics.event_sent(age);
                        }
                        note.event(matches!(event, WatchEvent::Heartbeat { .. }));
                        Ok(watch_event(event))
                    }
                    Err(err) => {
                        note.failed(&err);
                        Err(err.into())
                    }
                };
                Some((item, subscription))
            }
        });
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

/// The stream type of StreamJobExecutionsForJob.
pub type ListingStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamJobExecutionsForJobResponse, Status>> + Send>>;

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
                    JobState::NotFound(err) => State::Error(rpc_status(GatewayError::Upstream {
                        subject: job_id.clone().into(),
                        source: Box::new(err.clone()),
                    })),
                },
                Observed::Failed(err) => State::Error(rpc_status(err.clone())),
            };
            Event::Job(pb::JobEvent {
                job_id,
                version: observation.version,
                kind: kind as i32,
                changed_fields: changes.fields.iter().map(|f| (*f).to_owned()).collect(),
                r#final: last,
                state: Some(state),
                observed_at: Some(observation.observed_at.into()),
                trigger: trigger(observation.trigger) as i32,
            })
        }
    };
    pb::WatchJobsResponse { event: Some(event) }
}

/// Why the gateway asked AWS, in wire form.
fn trigger(trigger: Trigger) -> pb::job_event::Trigger {
    use pb::job_event::Trigger as Wire;
    match trigger {
        Trigger::Elsewhere => Wire::Unspecified,
        Trigger::Call => Wire::Call,
        Trigger::Schedule => Wire::Schedule,
        Trigger::CatchUp => Wire::EventsCatchUp,
        Trigger::Event | Trigger::FinalEvent => Wire::AwsEvent,
    }
}

/// What the domain needs to know of a call besides its question.
pub(super) fn call_of<T>(request: &Request<T>, caller: &Caller, received: Instant) -> Call {
    let metadata = request.metadata();
    let cache_control = CacheControl::of(metadata);
    Call {
        deadline: deadline::from_metadata(metadata, received),
        fresh: cache_control.fresh,
        max_stale: cache_control.max_stale,
        share: caller.share(),
    }
}

/// A job's executions, less those on things the caller may not read.
fn readable_things(caller: &Caller, summaries: &mut Vec<pb::JobExecutionSummaryForJob>) {
    if caller.grants().reads_everything() {
        return;
    }
    summaries.retain(|s| {
        s.thing_arn
            .as_deref()
            .and_then(thing_of_arn)
            .is_some_and(|thing| caller.grants().may_read_thing(thing))
    });
}

/// The thing an ARN names (`arn:aws:iot:…:thing/NAME`).
fn thing_of_arn(arn: &str) -> Option<&str> {
    arn.rsplit_once(":thing/").map(|(_, name)| name)
}

/// What a unary call of any operation starts with: its caller, its call,
/// its note (naming the caller and what `subject` notes of the request), and the
/// request.
fn start_unary<R>(
    request: Request<R>,
    subject: fn(&R, &CallNote),
) -> (Caller, Call, std::sync::Arc<CallNote>, R) {
    let caller = Caller::of(&request);
    let note = CallNote::of(&request);
    note.caller(caller.name_shared());
    let call = call_of(&request, &caller, Received::of(&request));
    let request = request.into_inner();
    subject(&request, &note);
    (caller, call, note, request)
}

/// A unary call's answer with its cache headers, or its failure, noted;
/// `shown` takes out what the caller may not see.
fn finish_unary<O: Operation>(
    result: Result<Served<O>, GatewayError>,
    note: &CallNote,
    shown: impl FnOnce(&mut O::Response),
) -> Result<Response<O::Response>, Status> {
    let answer = match result {
        Ok(answer) => answer,
        Err(err) => {
            note.failed(&err);
            return Err(err.into());
        }
    };
    note.answered(answer.source, answer.age);
    let mut visible = O::Response::clone(&answer.response);
    shown(&mut visible);
    Ok(Response::new(visible))
}

/// The batch methods, as logs name them.
const BATCH: &str = pb::rpc::BATCH_DESCRIBE_JOBS;
const STREAM: &str = pb::rpc::STREAM_DESCRIBE_JOBS;

/// A batch item as the stream sends it: the same fields, its own message.
impl From<pb::JobResult> for pb::StreamDescribeJobsResponse {
    fn from(result: pb::JobResult) -> Self {
        use pb::{job_result::Outcome as Item, stream_describe_jobs_response::Outcome};
        Self {
            index: result.index,
            job_id: result.job_id,
            outcome: result.outcome.map(|outcome| match outcome {
                Item::Response(response) => Outcome::Response(response),
                Item::Error(status) => Outcome::Error(status),
            }),
            cache: result.cache,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use crate::pb;

    /// StreamDescribeJobs took a BatchDescribeJobsRequest and answered
    /// JobResults before each got its own message: clients built then must
    /// still be understood, and understand the answers.
    #[test]
    fn the_stream_s_own_messages_have_the_encoding_of_the_ones_it_used_to_share() {
        let items = vec![pb::DescribeJobRequest {
            job_id: "firmware-1".into(),
            before_substitution: Some(true),
        }];
        let old_request = pb::BatchDescribeJobsRequest { requests: items };
        let new_request =
            pb::StreamDescribeJobsRequest::decode(old_request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(new_request.requests, old_request.requests);

        let answered = pb::JobResult {
            index: Some(0),
            job_id: "firmware-1".into(),
            outcome: Some(pb::job_result::Outcome::Response(pb::DescribeJobResponse {
                document_source: Some("s3://bucket/doc.json".into()),
                job: None,
            })),
            cache: Some(pb::CacheInfo {
                source: pb::cache_info::Source::Hit.into(),
                age_ms: 12,
            }),
        };
        let failed = pb::JobResult {
            index: Some(1),
            job_id: "gone".into(),
            outcome: Some(pb::job_result::Outcome::Error(tonic_types::pb::Status {
                code: 5,
                message: "no such job".into(),
                details: vec![],
            })),
            cache: None,
        };
        for result in [answered, failed] {
            let sent = pb::StreamDescribeJobsResponse::from(result.clone()).encode_to_vec();
            assert_eq!(sent, result.encode_to_vec());
            assert_eq!(pb::JobResult::decode(sent.as_slice()).unwrap(), result);
        }
    }
}
