//! The real upstream: `aws_sdk_iot` configured for a gateway (SDK retries
//! off, attempt timeouts on) and the one place an `SdkError` is classified,
//! by AWS error code rather than HTTP status.

use std::{error::Error as StdError, time::Duration};

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_credential_types::{
    Credentials,
    provider::{SharedCredentialsProvider, error::CredentialsError},
};
use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};

use aws_types::os_shim_internal::{Env, Fs};

use crate::upstream::{
    Operation, UpstreamError, UpstreamErrorKind,
    credentials::{self, CredentialsFault},
};

/// Everything needed to build the AWS client.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// AWS region; `None` lets the default chain find one.
    pub region: Option<String>,
    /// Overrides the IoT endpoint (moto, LocalStack, the simulator, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Shared-config profile to read credentials and region from.
    pub profile: Option<String>,
    /// Upper bound for one HTTP attempt, connect included.
    pub attempt_timeout: Duration,
    /// Upper bound for opening a connection to AWS.
    pub connect_timeout: Duration,
}

/// Why the AWS client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum AwsConfigError {
    /// Neither a flag nor the default chain named a region.
    #[error(
        "no AWS region: set --region (or GATEWAY_REGION), AWS_REGION, or a region in the shared AWS config"
    )]
    NoRegion,
    /// The credentials cannot work: a named profile that does not exist, or
    /// none anywhere in the chain.
    #[error(transparent)]
    Credentials(#[from] CredentialsFault),
}

/// Loads credentials and region through aws-config's default chain
/// (environment, shared profile, web identity / IRSA, ECS container and EC2
/// instance metadata), with the flags taking precedence. A profile named
/// but not defined is refused first: it would also leave the region unset.
pub async fn load_sdk_config(settings: &UpstreamSettings) -> Result<SdkConfig, AwsConfigError> {
    credentials::check_profile(settings.profile.as_deref(), &Env::real(), &Fs::real()).await?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(AwsConfigError::NoRegion);
    }
    Ok(sdk)
}

/// An SDK config for a local AWS stand-in (the demo's simulator, tests):
/// a fixed region and the given credentials, nothing read from the
/// environment, profiles or instance metadata.
pub fn local_sdk_config(region: &str, credentials: SharedCredentialsProvider) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(credentials)
        .build()
}

/// Placeholder credentials for stand-ins that accept any signature.
pub fn placeholder_credentials() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        "demo",
        "demo",
        None,
        None,
        "iot-jobs-gateway",
    ))
}

/// Builds the IoT client the gateway uses: the SDK's own retries are off
/// (the gateway retries, so it can honour deadlines) and every attempt is
/// bounded in time.
pub fn iot_client(sdk: &SdkConfig, settings: &UpstreamSettings) -> aws_sdk_iot::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.connect_timeout)
        .operation_attempt_timeout(settings.attempt_timeout)
        .build();
    let mut config = aws_sdk_iot::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(url) = &settings.endpoint_url {
        config = config.endpoint_url(url);
    }
    aws_sdk_iot::Client::from_conf(config.build())
}

/// The AWS IoT client every operation is sent with (AWS itself, or
/// anything speaking its REST protocol).
#[derive(Debug, Clone)]
pub struct AwsJobsUpstream {
    client: aws_sdk_iot::Client,
}

impl AwsJobsUpstream {
    /// Wraps a configured client; see [`iot_client`].
    pub fn new(client: aws_sdk_iot::Client) -> Self {
        Self { client }
    }

    /// One attempt at `question`; retries and deadlines belong to the caller.
    pub async fn send<O: Operation>(
        &self,
        question: &O::Question,
    ) -> Result<O::Response, UpstreamError> {
        O::send(&self.client, question).await
    }
}

/// Classifies a failed call of any operation. Service errors go by AWS
/// error code: AWS IoT answers ThrottlingException with HTTP 400, so status
/// codes lie.
pub fn classify<E>(err: SdkError<E>) -> UpstreamError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    use UpstreamErrorKind::*;
    let request_id = err
        .raw_response()
        .and_then(|r| r.headers().get("x-amzn-requestid"))
        .map(str::to_owned);
    let classified = match &err {
        // A body the SDK could not parse (even a 200) arrives as a service
        // error without an AWS error code.
        SdkError::ServiceError(service) if service.err().code().is_none() => {
            UpstreamError::new(Internal)
                .retryable(false)
                .with_message(format!(
                    "AWS IoT sent a response the gateway could not read (HTTP {})",
                    service.raw().status().as_u16()
                ))
        }
        SdkError::ServiceError(service) => {
            let e = service.err();
            let (kind, retryable) = kind_for_code(e.code());
            let mut out = UpstreamError::new(kind).retryable(retryable);
            out.aws_code = e.code().map(str::to_owned);
            out.aws_message = e.message().map(str::to_owned);
            out
        }
        SdkError::TimeoutError(_) => UpstreamError::new(Timeout),
        SdkError::DispatchFailure(failure) => {
            if caused_by_credentials(&err) {
                UpstreamError::new(Unauthenticated)
                    .with_message("the gateway could not load AWS credentials")
            } else if failure.is_timeout() {
                // The connector only times out while connecting (attempt
                // timeouts are SdkError::TimeoutError): AWS is unreachable.
                UpstreamError::new(Unavailable)
                    .with_message("timed out connecting to the AWS IoT endpoint")
            } else if failure.is_io() {
                UpstreamError::new(Unavailable).with_message("could not reach the AWS IoT endpoint")
            } else if failure.is_user() {
                // The request could not be built or sent as configured.
                UpstreamError::new(Internal).retryable(false)
            } else {
                // The connection broke mid-exchange (hyper's IncompleteMessage
                // and other transient transport failures).
                UpstreamError::new(Unavailable).with_message("the connection to AWS IoT failed")
            }
        }
        SdkError::ResponseError(_) => UpstreamError::new(Internal)
            .retryable(false)
            .with_message("AWS IoT sent a response the gateway could not read"),
        _ => UpstreamError::new(Internal).retryable(false),
    };
    UpstreamError {
        request_id,
        ..classified
    }
    .with_source(err)
}

/// Maps an AWS error code to a kind and whether retrying may help.
fn kind_for_code(code: Option<&str>) -> (UpstreamErrorKind, bool) {
    use UpstreamErrorKind::*;
    match code.unwrap_or_default() {
        "InvalidRequestException" => (InvalidRequest, false),
        "ResourceNotFoundException" => (NotFound, false),
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => (Throttled, true),
        "ServiceUnavailableException" | "ServiceUnavailable" => (Unavailable, true),
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedException" => (AccessDenied, false),
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationTokenException"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "ExpiredToken" => (Unauthenticated, false),
        "InternalFailure"
        | "InternalFailureException"
        | "InternalException"
        | "InternalServerException" => (Internal, true),
        _ => (Internal, false),
    }
}

/// True when a credentials provider failure sits anywhere in the cause chain.
fn caused_by_credentials(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<CredentialsError>() {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_recognised_by_code_not_status() {
        assert_eq!(
            kind_for_code(Some("ThrottlingException")),
            (UpstreamErrorKind::Throttled, true)
        );
        assert_eq!(kind_for_code(None), (UpstreamErrorKind::Internal, false));
        assert_eq!(
            kind_for_code(Some("SomethingNewException")),
            (UpstreamErrorKind::Internal, false)
        );
    }
}
