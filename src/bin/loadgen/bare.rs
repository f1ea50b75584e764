//! The bare tonic server the cache-hit throughput is compared with.

use std::{path::PathBuf, sync::Arc};

use iot_jobs_gateway::pb::{self, jobs_gateway_server::JobsGatewayServer};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::Error;

/// Returns one fixed response: the most a tonic service can do per call on
/// this machine, the ceiling the gateway is compared with.
pub(crate) struct Bare {
    response: Arc<pb::DescribeJobResponse>,
}

#[tonic::async_trait]
impl pb::jobs_gateway_server::JobsGateway for Bare {
    async fn describe_job(
        &self,
        _request: Request<pb::DescribeJobRequest>,
    ) -> Result<Response<pb::DescribeJobResponse>, Status> {
        Ok(Response::new(pb::DescribeJobResponse::clone(
            &self.response,
        )))
    }

    async fn batch_describe_jobs(
        &self,
        _request: Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<Response<pb::BatchDescribeJobsResponse>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    type StreamDescribeJobsStream = iot_jobs_gateway::edge::service::DescribeResultStream;

    async fn stream_describe_jobs(
        &self,
        _request: Request<pb::StreamDescribeJobsRequest>,
    ) -> Result<Response<Self::StreamDescribeJobsStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    async fn describe_job_execution(
        &self,
        _request: Request<pb::DescribeJobExecutionRequest>,
    ) -> Result<Response<pb::DescribeJobExecutionResponse>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    async fn list_job_executions_for_job(
        &self,
        _request: Request<pb::ListJobExecutionsForJobRequest>,
    ) -> Result<Response<pb::ListJobExecutionsForJobResponse>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    async fn list_job_executions_for_thing(
        &self,
        _request: Request<pb::ListJobExecutionsForThingRequest>,
    ) -> Result<Response<pb::ListJobExecutionsForThingResponse>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    async fn batch_describe_job_executions(
        &self,
        _request: Request<pb::BatchDescribeJobExecutionsRequest>,
    ) -> Result<Response<pb::BatchDescribeJobExecutionsResponse>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    type StreamJobExecutionsForJobStream = iot_jobs_gateway::edge::service::ListingStream;

    async fn stream_job_executions_for_job(
        &self,
        _request: Request<pb::StreamJobExecutionsForJobRequest>,
    ) -> Result<Response<Self::StreamJobExecutionsForJobStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    type WatchJobsStream = iot_jobs_gateway::edge::service::WatchEventStream;

    async fn watch_jobs(
        &self,
        _request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }
}

/// Serves the bare server on `port`; with mTLS (tonic's own TLS) from the
/// `server.pem`, `server.key` and `ca.pem` in `tls_dir`.
pub(crate) async fn bare_server(
    port: u16,
    response_file: PathBuf,
    tls_dir: Option<PathBuf>,
) -> Result<(), Error> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let response = pb::DescribeJobResponse::decode(std::fs::read(response_file)?.as_slice())?;
    let service = JobsGatewayServer::new(Bare {
        response: Arc::new(response),
    });
    let mut server = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(dir) = tls_dir {
        let read = |name: &str| std::fs::read(dir.join(name));
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(read("server.pem")?, read("server.key")?))
            .client_ca_root(Certificate::from_pem(read("ca.pem")?));
        server = server.tls_config(tls)?;
    }
    server
        .add_service(service)
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}
