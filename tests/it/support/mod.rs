//! Shared test harness: starts the real gateway on 127.0.0.1:0 in front of
//! an upstream, with the real aws-sdk-iot client, and hands back a real
//! gRPC client. See `fake_aws` for the programmable AWS stand-in and
//! `python` for moto, boto3 and grpcurl.

pub mod certs;
pub mod debian;
pub mod fake_aws;
pub mod metrics;
pub mod mosquitto;
pub mod node;
pub mod process;
pub mod python;
pub mod redis;
pub mod sim;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use aws_config::SdkConfig;
use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future},
};
use iot_jobs_gateway::{
    app::{Application, GatewaySettings},
    backends::redis::RedisSettings,
    domain::{Jobs, JobsSettings, limit::LimiterSettings},
    edge::server::{ServeError, ServerSettings, Stopped},
    events::EventsSettings,
    pb::jobs_gateway_client::JobsGatewayClient,
    upstream::{
        aws::{self, AwsJobsUpstream, UpstreamSettings},
        retry::RetryPolicy,
    },
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// The region every test uses (moto keeps data per region).
pub const REGION: &str = "us-east-1";

/// Upstream settings for a local stand-in at `endpoint`.
pub fn settings(endpoint: &str) -> UpstreamSettings {
    UpstreamSettings {
        region: Some(REGION.into()),
        endpoint_url: Some(endpoint.into()),
        profile: None,
        attempt_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
    }
}

/// An SDK config with fixed test credentials, never touching the
/// environment, profiles or instance metadata.
pub fn sdk_config(credentials: SharedCredentialsProvider) -> SdkConfig {
    aws::local_sdk_config(REGION, credentials)
}

/// Static test credentials, as moto expects any.
pub fn test_credentials() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new("testing", "testing", None, None, "tests"))
}

/// A credentials provider that finds nothing, like the default chain on a
/// machine with no AWS configuration.
#[derive(Debug)]
pub struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no credentials in the environment, profile or instance metadata",
        )))
    }
}

/// The production IoT client (retries off, timeouts on) aimed at `endpoint`.
pub fn iot_client(endpoint: &str) -> aws_sdk_iot::Client {
    aws::iot_client(&sdk_config(test_credentials()), &settings(endpoint))
}

/// Retries as in production, with short backoffs so tests stay quick.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

/// A gateway served in this process on 127.0.0.1:0.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The gateway's domain service (shares its cache and rate limiter).
    pub jobs: Jobs,
    pub client: JobsGatewayClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: JoinHandle<Result<Stopped, ServeError>>,
}

/// How a test gateway is put together.
pub struct GatewayOptions {
    pub jobs: JobsSettings,
    pub server: ServerSettings,
    /// Share the roles with other gateways through this Redis.
    pub redis: Option<RedisSettings>,
    /// Poll watched jobs when AWS IoT Jobs events arrive from this broker.
    pub events: Option<EventsSettings>,
}

impl Default for GatewayOptions {
    /// Production settings except quick retries and a rate limit high enough
    /// that only tests about limiting meet it.
    fn default() -> Self {
        Self {
            jobs: JobsSettings {
                retry: fast_retry(),
                operation_timeout: Duration::from_secs(10),
                limiter: LimiterSettings {
                    rate: 1000.0,
                    burst: 1000,
                    max_waiters: 1000,
                    ..LimiterSettings::default()
                },
                ..JobsSettings::default()
            },
            server: ServerSettings {
                grace: Duration::from_secs(5),
                ..ServerSettings::default()
            },
            redis: None,
            events: None,
        }
    }
}

impl GatewayOptions {
    /// Default options with `edit` applied to the domain settings.
    pub fn with(edit: impl FnOnce(&mut JobsSettings)) -> Self {
        let mut options = Self::default();
        edit(&mut options.jobs);
        options
    }
}

impl TestGateway {
    /// A gateway whose upstream is the real SDK client aimed at `endpoint`.
    pub async fn aws(endpoint: &str) -> Self {
        Self::aws_with(iot_client(endpoint), GatewayOptions::default()).await
    }

    /// A gateway in front of `endpoint` with the default test settings
    /// changed by `edit`.
    pub async fn aws_edited(endpoint: &str, edit: impl FnOnce(&mut JobsSettings)) -> Self {
        Self::aws_with(iot_client(endpoint), GatewayOptions::with(edit)).await
    }

    /// A gateway over a given SDK client.
    pub async fn aws_with(client: aws_sdk_iot::Client, options: GatewayOptions) -> Self {
        Self::start(Arc::new(AwsJobsUpstream::new(client)), options).await
    }

    /// A gateway over a given upstream.
    pub async fn start(upstream: Arc<AwsJobsUpstream>, options: GatewayOptions) -> Self {
        Self::serve(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, options).await
    }

    /// A gateway in front of `endpoint` at a given address (to stand in for
    /// one that restarted there).
    pub async fn aws_at(
        addr: SocketAddr,
        endpoint: &str,
        edit: impl FnOnce(&mut JobsSettings),
    ) -> Self {
        let upstream = Arc::new(AwsJobsUpstream::new(iot_client(endpoint)));
        Self::serve(addr, upstream, GatewayOptions::with(edit)).await
    }

    /// Builds the gateway as `serve` does, on `listen`, and runs it.
    async fn serve(
        listen: SocketAddr,
        upstream: Arc<AwsJobsUpstream>,
        options: GatewayOptions,
    ) -> Self {
        let tls = options.server.tls.is_some();
        let settings = GatewaySettings {
            listen,
            jobs: options.jobs,
            server: options.server,
            redis: options.redis,
            events: options.events,
        };
        let app = Application::build(settings, upstream).await.unwrap();
        let addr = app.address();
        let jobs = app.jobs().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run(async {
            let _ = rx.await;
        }));
        // A TLS gateway has no plaintext client; tests connect their own.
        let client = if tls {
            JobsGatewayClient::new(
                Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_lazy(),
            )
        } else {
            JobsGatewayClient::new(channel(addr).await)
        };
        Self {
            addr,
            jobs,
            client,
            shutdown: Some(tx),
            server,
        }
    }

    /// Asks the server to shut down gracefully (as SIGTERM does).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts what a refused bad request tells its caller: INVALID_ARGUMENT
/// with a `BadRequest` violation on `field` whose description says `says`.
pub fn assert_violation(status: &tonic::Status, field: &str, says: &str) {
    use tonic_types::StatusExt as _;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let violation = &status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations[0];
    assert_eq!(violation.field, field);
    assert!(
        violation.description.contains(says),
        "{field}: {}",
        violation.description
    );
}

/// The reason in a status's `google.rpc.ErrorInfo`.
pub fn error_info_reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_details_error_info().expect("ErrorInfo").reason
}

/// A plaintext HTTP/2 channel to `addr`. The listener is bound before the
/// server task starts, so connecting needs no waiting.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A gateway answer in proto3 JSON, as grpcurl and other JSON clients see it.
pub fn to_json(response: &iot_jobs_gateway::pb::DescribeJobResponse) -> serde_json::Value {
    message_json(response, "DescribeJobResponse")
}

/// Any message of the contract (`name` within `iot.jobs.v1`) in proto3 JSON.
pub fn message_json(response: &impl prost::Message, name: &str) -> serde_json::Value {
    let pool =
        prost_reflect::DescriptorPool::decode(iot_jobs_gateway::pb::FILE_DESCRIPTOR_SET).unwrap();
    let descriptor = pool
        .get_message_by_name(&format!("iot.jobs.v1.{name}"))
        .unwrap();
    let message =
        prost_reflect::DynamicMessage::decode(descriptor, response.encode_to_vec().as_slice())
            .unwrap();
    serde_json::to_value(message).unwrap()
}

/// `request` asking for an answer AWS gives after it arrives, not a cached one.
pub fn fresh<T>(mut request: tonic::Request<T>) -> tonic::Request<T> {
    request
        .metadata_mut()
        .insert("cache-control", "no-cache".parse().unwrap());
    request
}

/// A DescribeJob request, with a deadline if `timeout` is given.
pub fn describe(
    job_id: &str,
    timeout: Option<Duration>,
) -> tonic::Request<iot_jobs_gateway::pb::DescribeJobRequest> {
    let mut request = tonic::Request::new(iot_jobs_gateway::pb::DescribeJobRequest {
        job_id: job_id.to_owned(),
        before_substitution: None,
    });
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

/// Creates a job in an AWS stand-in through the Rust SDK, with every
/// configuration CreateJob accepts that DescribeJob reports back.
pub async fn create_rich_job(client: &aws_sdk_iot::Client, job_id: &str) {
    use aws_sdk_iot::types::*;
    client
        .create_job()
        .job_id(job_id)
        .targets(format!(
            "arn:aws:iot:{REGION}:123456789012:thing/pi-{job_id}"
        ))
        .document(r#"{"operation":"firmware-update","url":"${aws:iot:parameter:firmwareUrl}"}"#)
        .description("firmware 2.0 rollout")
        .target_selection(TargetSelection::Snapshot)
        .presigned_url_config(
            PresignedUrlConfig::builder()
                .role_arn("arn:aws:iam::123456789012:role/jobs")
                .expires_in_sec(600)
                .build(),
        )
        .job_executions_rollout_config(
            JobExecutionsRolloutConfig::builder()
                .maximum_per_minute(50)
                .exponential_rate(
                    ExponentialRolloutRate::builder()
                        .base_rate_per_minute(5)
                        .increment_factor(1.5)
                        .rate_increase_criteria(
                            RateIncreaseCriteria::builder()
                                .number_of_notified_things(10)
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .abort_config(
            AbortConfig::builder()
                .criteria_list(
                    AbortCriteria::builder()
                        .failure_type(JobExecutionFailureType::Failed)
                        .action(AbortAction::Cancel)
                        .threshold_percentage(10.5)
                        .min_number_of_executed_things(3)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .in_progress_timeout_in_minutes(30)
                .build(),
        )
        .namespace_id("greengrass")
        .job_template_arn(format!("arn:aws:iot:{REGION}:123456789012:jobtemplate/ota"))
        .job_executions_retry_config(
            JobExecutionsRetryConfig::builder()
                .criteria_list(
                    RetryCriteria::builder()
                        .failure_type(RetryableFailureType::TimedOut)
                        .number_of_retries(2)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .document_parameters("firmwareUrl", "s3://bucket/fw-2.0.bin")
        .scheduling_config(
            SchedulingConfig::builder()
                .start_time("2030-01-01T10:00")
                .end_time("2030-01-02T10:00")
                .end_behavior(JobEndBehavior::StopRollout)
                .maintenance_windows(
                    MaintenanceWindow::builder()
                        .start_time("cron(0 0 ? * MON *)")
                        .duration_in_minutes(60)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .destination_package_versions(format!(
            "arn:aws:iot:{REGION}:123456789012:package/fw/version/2.0"
        ))
        .send()
        .await
        .expect("CreateJob at the AWS stand-in");
}

/// The response header `name` (`x-cache`, say); panics if it is missing.
pub fn header<T>(response: &tonic::Response<T>, name: &str) -> String {
    response
        .metadata()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// A token as `--auth-tokens` files name it: its SHA-256, in hex.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Copies the directory tree `from` into `to`, leaving out entries (at any
/// depth) named in `skip`.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap();
        if skip.iter().any(|name| entry.file_name() == *name) {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, skip);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
