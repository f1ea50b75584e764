//! The `iot.jobs.v1.JobsGateway` gRPC service. Handlers only validate,
//! call the domain ([`crate::jobs`]) and convert back; each call leaves one
//! log line with its method, job id, status code and latency.

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tracing::{info, warn};

use crate::{
    deadline,
    error::GatewayError,
    jobs::Jobs,
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
}

#[tonic::async_trait]
impl JobsGateway for JobsGatewayService {
    async fn describe_job(
        &self,
        request: Request<pb::DescribeJobRequest>,
    ) -> Result<Response<pb::DescribeJobResponse>, Status> {
        let received = Instant::now();
        let deadline = deadline::from_metadata(request.metadata(), received);
        let request = request.into_inner();
        let log = CallLog::new("DescribeJob", &request.job_id, received);
        let result = async {
            let query = JobQuery::try_from(request)?;
            let description = self.jobs.describe(&query, deadline).await?;
            Ok(pb::DescribeJobResponse::from(&description))
        }
        .await;
        log.finish(result).map(Response::new)
    }
}

/// Writes the call's log line when it finishes, or when the caller goes
/// away first (the handler future is dropped, and the AWS request with it).
struct CallLog {
    method: &'static str,
    job_id: String,
    received: Instant,
    finished: bool,
}

/// Job ids in logs are cut to this many characters; invalid ids can be huge.
const LOGGED_ID_CHARS: usize = 80;

impl CallLog {
    fn new(method: &'static str, job_id: &str, received: Instant) -> Self {
        Self {
            method,
            job_id: job_id.chars().take(LOGGED_ID_CHARS).collect(),
            received,
            finished: false,
        }
    }

    fn finish<T>(mut self, result: Result<T, GatewayError>) -> Result<T, Status> {
        self.finished = true;
        let latency_ms = self.received.elapsed().as_secs_f64() * 1e3;
        let (method, job_id) = (self.method, self.job_id.as_str());
        match result {
            Ok(value) => {
                info!(method, job_id, code = ?Code::Ok, latency_ms, "call finished");
                Ok(value)
            }
            Err(err) => {
                let code = err.code();
                let cause = err.chain();
                match code {
                    Code::InvalidArgument | Code::NotFound => {
                        info!(method, job_id, ?code, latency_ms, error = %cause, "call finished")
                    }
                    _ => warn!(method, job_id, ?code, latency_ms, error = %cause, "call failed"),
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
                job_id = self.job_id,
                code = ?Code::Cancelled,
                latency_ms,
                "caller went away; upstream work dropped"
            );
        }
    }
}
