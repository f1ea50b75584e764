//! Every row of the README's error table, demonstrated: an upstream answers
//! with AWS's real wire shape (HTTP status, `X-Amzn-ErrorType`, `__type`
//! body) or fails at the transport, and the gRPC client sees the mapped
//! status, a message a person can act on, and the rich details.

use crate::support;

use std::time::{Duration, Instant};

use aws_credential_types::provider::SharedCredentialsProvider;
use iot_jobs_gateway::upstream::aws;
use serde_json::json;
use support::{
    GatewayOptions, NoCredentials, TestGateway, describe, error_info_reason,
    fake_aws::{FakeAws, Reply},
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Starts a gateway whose upstream answers `reply` for job "j", calls it,
/// and returns the status and how many requests reached the upstream.
async fn call_with(reply: Reply) -> (Status, usize) {
    let fake = FakeAws::start().await;
    fake.reply("j", reply);
    let mut gw = TestGateway::aws(&fake.url).await;
    let status = gw
        .client
        .describe_job(describe("j", None))
        .await
        .unwrap_err();
    (status, fake.calls())
}

#[tokio::test]
async fn invalid_request_is_invalid_argument() {
    let (status, calls) = call_with(Reply::error(
        400,
        "InvalidRequestException",
        "jobId is malformed",
    ))
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("jobId is malformed"),
        "{}",
        status.message()
    );
    assert_eq!(error_info_reason(&status), "UPSTREAM_INVALID_REQUEST");
    assert_eq!(calls, 1, "a rejected request is not retried");
}

#[tokio::test]
async fn resource_not_found_is_not_found() {
    let (status, calls) = call_with(Reply::error(
        404,
        "ResourceNotFoundException",
        "no such job",
    ))
    .await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_info_reason(&status), "JOB_NOT_FOUND");
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn throttling_after_retries_is_resource_exhausted_with_retry_info() {
    // AWS IoT sends ThrottlingException with HTTP 400, not 429.
    let (status, calls) =
        call_with(Reply::error(400, "ThrottlingException", "Rate exceeded")).await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("retry after"),
        "{}",
        status.message()
    );
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "UPSTREAM_THROTTLED");
    assert_eq!(info.metadata["awsErrorCode"], "ThrottlingException");
    assert_eq!(info.metadata["awsRequestId"], "fake-request-3");
    assert_eq!(calls, 3, "throttling is retried up to the attempt limit");
}

#[tokio::test]
async fn service_unavailable_is_unavailable() {
    let (status, calls) = call_with(Reply::error(
        503,
        "ServiceUnavailableException",
        "try later",
    ))
    .await;
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("ServiceUnavailableException"),
        "{}",
        status.message()
    );
    assert_eq!(calls, 3);
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut gw = TestGateway::aws(&url).await;

    let status = gw
        .client
        .describe_job(describe("j", None))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("could not reach AWS IoT"),
        "{}",
        status.message()
    );
    assert_eq!(error_info_reason(&status), "UPSTREAM_UNAVAILABLE");
}

#[tokio::test]
async fn access_denied_is_permission_denied_without_leaking_the_identity() {
    let (status, calls) = call_with(Reply::error(
        403,
        "AccessDeniedException",
        "User: arn:aws:sts::123456789012:assumed-role/gateway/i-0abc is not authorized to perform: iot:DescribeJob",
    ))
    .await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(error_info_reason(&status), "UPSTREAM_ACCESS_DENIED");
    assert!(
        status.message().contains("iot:DescribeJob"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("arn:aws:sts"),
        "leaks the identity: {}",
        status.message()
    );
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn rejected_credentials_are_unauthenticated() {
    let (status, _) = call_with(Reply::error(
        403,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    ))
    .await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(error_info_reason(&status), "UPSTREAM_UNAUTHENTICATED");
    assert!(
        status.message().contains("UnrecognizedClientException"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn missing_credentials_are_unauthenticated_and_cost_aws_nothing() {
    let fake = FakeAws::start().await;
    let sdk = support::sdk_config(SharedCredentialsProvider::new(NoCredentials));
    let client = aws::iot_client(&sdk, &support::settings(&fake.url));
    let mut gw = TestGateway::aws_with(client, GatewayOptions::default()).await;

    let status = gw
        .client
        .describe_job(describe("j", None))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(error_info_reason(&status), "UPSTREAM_UNAUTHENTICATED");
    assert!(
        status.message().contains("no valid AWS credentials"),
        "{}",
        status.message()
    );
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn internal_failure_is_internal_after_retries() {
    let (status, calls) = call_with(Reply::error(500, "InternalFailure", "boom")).await;
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(error_info_reason(&status), "UPSTREAM_INTERNAL");
    assert!(
        status.message().contains("InternalFailure"),
        "{}",
        status.message()
    );
    assert_eq!(calls, 3);
}

#[tokio::test]
async fn malformed_json_is_internal_with_a_safe_message() {
    let (status, calls) = call_with(Reply::Raw {
        status: 200,
        body: "{\"job\": {\"jobId\": ",
    })
    .await;
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("could not read"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("Error {"),
        "no debug dumps: {}",
        status.message()
    );
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn an_unknown_error_code_is_internal() {
    let (status, calls) = call_with(Reply::error(400, "BrandNewException", "??")).await;
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("BrandNewException"),
        "{}",
        status.message()
    );
    assert_eq!(calls, 1, "an unknown error is not retried");
}

#[tokio::test]
async fn a_slow_upstream_hits_the_attempt_timeout_as_deadline_exceeded() {
    let fake = FakeAws::start().await;
    fake.reply(
        "j",
        Reply::slow(Duration::from_secs(5), Reply::Job(json!({"job": {}}))),
    );
    let mut settings = support::settings(&fake.url);
    settings.attempt_timeout = Duration::from_millis(300);
    let client = aws::iot_client(&support::sdk_config(support::test_credentials()), &settings);
    let options = GatewayOptions::with(|jobs| jobs.retry.max_attempts = 1);
    let mut gw = TestGateway::aws_with(client, options).await;

    let started = Instant::now();
    let status = gw
        .client
        .describe_job(describe("j", None))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(error_info_reason(&status), "UPSTREAM_TIMEOUT");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    fake.wait_for_abandoned(1).await;
}

#[tokio::test]
async fn the_gateway_operation_timeout_is_deadline_exceeded() {
    let fake = FakeAws::start().await;
    fake.reply(
        "j",
        Reply::slow(Duration::from_secs(5), Reply::Job(json!({"job": {}}))),
    );
    let mut gw = TestGateway::aws_edited(&fake.url, |jobs| {
        jobs.operation_timeout = Duration::from_millis(300)
    })
    .await;

    let status = gw
        .client
        .describe_job(describe("j", None))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(
        status.message().contains("operation timeout"),
        "{}",
        status.message()
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "DEADLINE_EXCEEDED");
    assert_eq!(info.metadata["jobId"], "j");
    assert_eq!(info.metadata["deadline"], "gateway", "whose time ran out");
}
