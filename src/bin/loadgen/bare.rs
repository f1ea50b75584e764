//! The bare tonic server the cache-hit throughput is compared with.

use std::{path::PathBuf, sync::Arc};

use iot_jobs_gateway::pb::{self, jobs_gateway_server::JobsGatewayServer};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::Error;

/// Returns one fixed response per operation: the most a tonic service can
/// do per call on this machine, the ceiling the gateway is compared with.
/// An operation it was given no response for answers UNIMPLEMENTED.
pub(crate) struct Bare {
    job: Option<Arc<pb::DescribeJobResponse>>,
    execution: Option<Arc<pb::DescribeJobExecutionResponse>>,
}

/// A copy of the fixed response, if there is one.
fn fixed<T: Clone>(response: &Option<Arc<T>>) -> Result<Response<T>, Status> {
    match response {
        Some(response) => Ok(Response::new(T::clone(response))),
        None => Err(Status::unimplemented("bare server: no response given")),
    }
}

#[tonic::async_trait]
impl pb::jobs_gateway_server::JobsGateway for Bare {
    async fn describe_job(
        &self,
        _request: Request<pb::DescribeJobRequest>,
    ) -> Result<Response<pb::DescribeJobResponse>, Status> {
        fixed(&self.job)
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
        fixed(&self.execution)
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

/// What the bare server answers: protobuf files of one response each.
#[derive(clap::Args)]
pub(crate) struct BareArgs {
    port: u16,
    /// The DescribeJobResponse it answers every DescribeJob with.
    #[arg(long)]
    describe_job: Option<PathBuf>,
    /// The DescribeJobExecutionResponse it answers every DescribeJobExecution with.
    #[arg(long)]
    describe_job_execution: Option<PathBuf>,
    /// mTLS from server.pem, server.key and ca.pem in this directory.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

fn decoded<T: Message + Default>(file: &Option<PathBuf>) -> Result<Option<Arc<T>>, Error> {
    file.as_ref()
        .map(|file| Ok(Arc::new(T::decode(std::fs::read(file)?.as_slice())?)))
        .transpose()
}

/// Serves the bare server on its port; with mTLS (tonic's own TLS) from the
/// `server.pem`, `server.key` and `ca.pem` in `tls_dir`.
pub(crate) async fn bare_server(args: BareArgs) -> Result<(), Error> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let BareArgs {
        port,
        describe_job,
        describe_job_execution,
        tls_dir,
    } = args;
    // A tracing dispatcher, as a served process has (the gateway's drops
    // what its level filter does not want). With none ever set, tracing's
    // `log` feature (which axum turns on) hands every span of tonic and h2
    // to the `log` crate: 10,000 instructions a call, 12% of this server's
    // work, which would lower the ceiling the gateway is compared with.
    tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())?;
    let service = JobsGatewayServer::new(Bare {
        job: decoded(&describe_job)?,
        execution: decoded(&describe_job_execution)?,
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
