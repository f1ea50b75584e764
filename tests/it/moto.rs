//! The gateway in front of moto, the widely used AWS stand-in: jobs created
//! through the Rust SDK come back through the gateway with the same fields
//! and values that boto3 (the reference AWS client) reads from moto.
//!
//! What moto does, and these tests rely on: it reports new jobs as status
//! `QUEUED` (not an AWS job status, so the gateway's fallback applies), it
//! omits several fields (documentSource, isConcurrent, ...), and it never
//! moves a job past CANCELED.

use crate::support;

use support::{
    REGION, TestGateway, create_rich_job, describe, iot_client,
    python::{json_differences, tools},
    to_json,
};
use tonic::Code;

#[tokio::test]
async fn a_rich_job_matches_boto3_field_for_field() {
    let tools = tools().await;
    let moto = tools.moto();
    create_rich_job(&iot_client(&moto.url), "rich-1").await;
    let mut gw = TestGateway::aws(&moto.url).await;

    let answer = gw
        .client
        .describe_job(describe("rich-1", None))
        .await
        .unwrap()
        .into_inner();
    let reference = tools.boto3_describe(&moto.url, REGION, "rich-1");

    assert_eq!(
        json_differences(&to_json(&answer), &reference),
        Vec::<String>::new()
    );
    let job = answer.job.unwrap();
    assert_eq!(job.job_id.as_deref(), Some("rich-1"));
    assert_eq!(job.unrecognized_values["status"], "QUEUED");
    assert_eq!(job.presigned_url_config.unwrap().expires_in_sec, Some(600));
    assert!(job.created_at.is_some());
}

#[tokio::test]
async fn a_canceled_job_matches_boto3() {
    let tools = tools().await;
    let moto = tools.moto();
    let sdk = iot_client(&moto.url);
    create_rich_job(&sdk, "cancel-me").await;
    sdk.cancel_job()
        .job_id("cancel-me")
        .reason_code("BAD_BATCH")
        .comment("firmware bricks the sensor")
        .force(true)
        .send()
        .await
        .unwrap();
    let mut gw = TestGateway::aws(&moto.url).await;

    let answer = gw
        .client
        .describe_job(describe("cancel-me", None))
        .await
        .unwrap()
        .into_inner();
    let reference = tools.boto3_describe(&moto.url, REGION, "cancel-me");

    assert_eq!(
        json_differences(&to_json(&answer), &reference),
        Vec::<String>::new()
    );
    let json = to_json(&answer);
    assert_eq!(json["job"]["status"], "CANCELED");
    assert_eq!(json["job"]["forceCanceled"], true);
    assert_eq!(json["job"]["reasonCode"], "BAD_BATCH");
}

#[tokio::test]
async fn a_missing_job_is_not_found() {
    let tools = tools().await;
    let moto = tools.moto();
    let mut gw = TestGateway::aws(&moto.url).await;

    let status = gw
        .client
        .describe_job(describe("never-created", None))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("never-created"),
        "{}",
        status.message()
    );
}
