//! A stand-in for a gateway of a later `v1` of the contract.

use iot_jobs_gateway::pb;

/// A gateway of a later `v1`, as the README says one may be: enum values
/// this contract has no name for (a new `Job.Status`, `CacheInfo.Source`,
/// `JobEvent.Kind` and `Trigger`), and an AWS status passed on the
/// gateway's way (`STATUS_UNSPECIFIED` and the string in
/// `unrecognizedValues`). A stand-in: today's gateway cannot send them.
pub struct LaterGateway;

/// A number no enum of today's contract has a name for.
pub const LATER: i32 = 42;

fn later_job(job_id: &str) -> pb::DescribeJobResponse {
    let mut job = pb::Job {
        job_id: Some(job_id.to_owned()),
        status: Some(LATER),
        ..Default::default()
    };
    if job_id == "queued" {
        job.status = Some(pb::job::Status::Unspecified.into());
        job.unrecognized_values
            .insert("status".to_owned(), "QUEUED".to_owned());
    }
    pb::DescribeJobResponse {
        document_source: None,
        job: Some(job),
    }
}

#[tonic::async_trait]
impl pb::jobs_gateway_server::JobsGateway for LaterGateway {
    async fn describe_job(
        &self,
        request: tonic::Request<pb::DescribeJobRequest>,
    ) -> Result<tonic::Response<pb::DescribeJobResponse>, tonic::Status> {
        let mut response = tonic::Response::new(later_job(&request.into_inner().job_id));
        response
            .metadata_mut()
            .insert("x-cache", "hit".parse().unwrap());
        Ok(response)
    }

    async fn batch_describe_jobs(
        &self,
        request: tonic::Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<tonic::Response<pb::BatchDescribeJobsResponse>, tonic::Status> {
        let results = request
            .into_inner()
            .requests
            .into_iter()
            .enumerate()
            .map(|(index, item)| pb::JobResult {
                index: Some(index as u32),
                outcome: Some(pb::job_result::Outcome::Response(later_job(&item.job_id))),
                job_id: item.job_id,
                cache: Some(pb::CacheInfo {
                    source: LATER,
                    age_ms: 0,
                }),
            })
            .collect();
        Ok(tonic::Response::new(pb::BatchDescribeJobsResponse {
            results,
        }))
    }

    type StreamDescribeJobsStream = iot_jobs_gateway::edge::service::DescribeResultStream;

    async fn stream_describe_jobs(
        &self,
        _request: tonic::Request<pb::StreamDescribeJobsRequest>,
    ) -> Result<tonic::Response<Self::StreamDescribeJobsStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this scenario"))
    }

    async fn describe_job_execution(
        &self,
        _request: tonic::Request<pb::DescribeJobExecutionRequest>,
    ) -> Result<tonic::Response<pb::DescribeJobExecutionResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this scenario"))
    }

    async fn list_job_executions_for_job(
        &self,
        _request: tonic::Request<pb::ListJobExecutionsForJobRequest>,
    ) -> Result<tonic::Response<pb::ListJobExecutionsForJobResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this scenario"))
    }

    async fn list_job_executions_for_thing(
        &self,
        _request: tonic::Request<pb::ListJobExecutionsForThingRequest>,
    ) -> Result<tonic::Response<pb::ListJobExecutionsForThingResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this scenario"))
    }

    async fn batch_describe_job_executions(
        &self,
        _request: tonic::Request<pb::BatchDescribeJobExecutionsRequest>,
    ) -> Result<tonic::Response<pb::BatchDescribeJobExecutionsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this scenario"))
    }

    type StreamJobExecutionsForJobStream = iot_jobs_gateway::edge::service::ListingStream;

    async fn stream_job_executions_for_job(
        &self,
        _request: tonic::Request<pb::StreamJobExecutionsForJobRequest>,
    ) -> Result<tonic::Response<Self::StreamJobExecutionsForJobStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this scenario"))
    }

    type WatchJobsStream = iot_jobs_gateway::edge::service::WatchEventStream;

    async fn watch_jobs(
        &self,
        request: tonic::Request<pb::WatchJobsRequest>,
    ) -> Result<tonic::Response<Self::WatchJobsStream>, tonic::Status> {
        let events: Vec<_> = request
            .into_inner()
            .job_ids
            .into_iter()
            .map(|job_id| {
                Ok(pb::WatchJobsResponse {
                    event: Some(pb::watch_jobs_response::Event::Job(pb::JobEvent {
                        version: 7,
                        kind: LATER,
                        changed_fields: vec![],
                        r#final: true,
                        state: Some(pb::job_event::State::Response(later_job(&job_id))),
                        job_id,
                        observed_at: None,
                        trigger: LATER,
                    })),
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(events))))
    }
}

/// Serves [`LaterGateway`] on a loopback port.
pub async fn later_gateway() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::jobs_gateway_server::JobsGatewayServer::new(
                LaterGateway,
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}
