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

    type StreamDescribeJobsStream = iot_jobs_gateway::grpc::service::JobResultStream;

    async fn stream_describe_jobs(
        &self,
        _request: Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<Response<Self::StreamDescribeJobsStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    type WatchJobsStream = iot_jobs_gateway::grpc::service::WatchEventStream;

    async fn watch_jobs(
        &self,
        _request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }
}

pub(crate) async fn bare_server(port: u16, response_file: PathBuf) -> Result<(), Error> {
    let response = pb::DescribeJobResponse::decode(std::fs::read(response_file)?.as_slice())?;
    let service = JobsGatewayServer::new(Bare {
        response: Arc::new(response),
    });
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}
