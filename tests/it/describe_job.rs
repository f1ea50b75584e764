//! DescribeJob through the real gateway, the real aws-sdk-iot client and a
//! local AWS stand-in: what a gRPC client sees for good and bad requests,
//! deadlines and hang-ups, plus health checks.

use crate::support;

use std::time::{Duration, Instant};

use iot_jobs_gateway::edge::server::Stopped;
use iot_jobs_gateway::pb::DescribeJobRequest;
use serde_json::json;
use support::{
    TestGateway, describe,
    fake_aws::{FakeAws, Reply, full_job},
    python::json_differences,
    to_json,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

#[tokio::test]
async fn returns_every_field_aws_sent_with_aws_names() {
    let fake = FakeAws::start().await;
    fake.reply("fw-1", Reply::Job(full_job("fw-1")));
    let mut gw = TestGateway::aws(&fake.url).await;

    let answer = gw
        .client
        .describe_job(describe("fw-1", None))
        .await
        .unwrap()
        .into_inner();

    let mut expected = full_job("fw-1");
    let job = &mut expected["job"];
    job["createdAt"] = json!("2019-06-17T15:57:02.733Z");
    job["lastUpdatedAt"] = json!("2019-06-17T15:57:06.294Z");
    job["completedAt"] = json!("2019-06-17T16:46:40.001Z");
    assert_eq!(
        json_differences(&to_json(&answer), &expected),
        Vec::<String>::new()
    );
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn fields_aws_leaves_out_stay_absent() {
    let fake = FakeAws::start().await;
    fake.reply(
        "sparse",
        Reply::Job(json!({"job": {"jobId": "sparse", "status": "COMPLETED"}})),
    );
    let mut gw = TestGateway::aws(&fake.url).await;

    let answer = gw
        .client
        .describe_job(describe("sparse", None))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        to_json(&answer),
        json!({"job": {"jobId": "sparse", "status": "COMPLETED"}})
    );
    let job = answer.job.unwrap();
    assert_eq!(job.force_canceled, None);
    assert_eq!(job.job_process_details, None);
}

#[tokio::test]
async fn a_status_aws_adds_later_does_not_fail_the_call() {
    let fake = FakeAws::start().await;
    fake.reply(
        "new",
        Reply::Job(json!({"job": {"jobId": "new", "status": "PAUSED_FOR_REVIEW"}})),
    );
    let mut gw = TestGateway::aws(&fake.url).await;

    let answer = gw
        .client
        .describe_job(describe("new", None))
        .await
        .unwrap()
        .into_inner();

    let json = to_json(&answer);
    assert_eq!(json["job"]["status"], "STATUS_UNSPECIFIED");
    assert_eq!(
        json["job"]["unrecognizedValues"]["status"],
        "PAUSED_FOR_REVIEW"
    );
}

#[tokio::test]
async fn before_substitution_reaches_aws_only_when_set() {
    let fake = FakeAws::start().await;
    fake.reply("tpl", Reply::Job(json!({"job": {"jobId": "tpl"}})));
    let mut gw = TestGateway::aws(&fake.url).await;

    gw.client.describe_job(describe("tpl", None)).await.unwrap();
    let explicit = DescribeJobRequest {
        job_id: "tpl".into(),
        before_substitution: Some(true),
    };
    gw.client.describe_job(explicit).await.unwrap();

    let seen = fake.seen();
    assert_eq!(seen[0].query, None);
    assert_eq!(seen[1].query.as_deref(), Some("beforeSubstitution=true"));
}

#[tokio::test]
async fn invalid_job_ids_are_rejected_before_any_aws_call() {
    let fake = FakeAws::start().await;
    let mut gw = TestGateway::aws(&fake.url).await;
    let too_long = "x".repeat(65);

    for (id, hint) in [
        ("", "required"),
        (too_long.as_str(), "65 characters"),
        ("fw/1", "'/' at position 3"),
        ("fw 1", "' ' at position 3"),
        ("../admin", "'.' at position 1"),
    ] {
        let status = gw
            .client
            .describe_job(describe(id, None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{id:?}");
        assert!(
            status.message().contains(hint),
            "{id:?}: {}",
            status.message()
        );
        let details = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(details.field_violations[0].field, "job_id");
    }
    assert_eq!(fake.calls(), 0, "invalid requests must cost AWS nothing");
}

#[tokio::test]
async fn the_callers_deadline_bounds_the_aws_call_and_drops_it() {
    let fake = FakeAws::start().await;
    fake.reply(
        "slow",
        Reply::slow(Duration::from_secs(5), Reply::Job(json!({"job": {}}))),
    );
    let mut gw = TestGateway::aws(&fake.url).await;

    let started = Instant::now();
    let status = gw
        .client
        .describe_job(describe("slow", Some(Duration::from_secs(1))))
        .await
        .unwrap_err();
    let waited = started.elapsed();

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("deadline"),
        "{}",
        status.message()
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(1500),
        "answered after {waited:?}"
    );
    fake.wait_for_abandoned(1).await;
    assert_eq!(fake.calls(), 1, "no retry after the deadline");
}

/// The deadline runs from when the call arrives, as tonic's own timer does,
/// not from when the handler starts: a request whose message comes 200 ms
/// after its headers still gets DEADLINE_EXCEEDED, never tonic's CANCELLED.
#[tokio::test]
async fn the_deadline_runs_from_the_call_s_arrival_not_from_its_message() {
    let fake = FakeAws::start().await;
    fake.reply(
        "slow",
        Reply::slow(Duration::from_secs(5), Reply::Job(json!({"job": {}}))),
    );
    let gw = TestGateway::aws(&fake.url).await;
    let mut grpc = tonic::client::Grpc::new(support::channel(gw.addr).await);
    grpc.ready().await.unwrap();

    // The headers (with grpc-timeout) go at once, the message 200 ms later.
    let late_message = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        DescribeJobRequest {
            job_id: "slow".into(),
            before_substitution: None,
        }
    });
    let mut request = tonic::Request::new(late_message);
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let status =
        grpc
            .client_streaming(
                request,
                http::uri::PathAndQuery::from_static("/iot.jobs.v1.JobsGateway/DescribeJob"),
                tonic_prost::ProstCodec::<
                    DescribeJobRequest,
                    iot_jobs_gateway::pb::DescribeJobResponse,
                >::default(),
            )
            .await
            .unwrap_err();

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().metadata["deadline"],
        "caller"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_caller_that_hangs_up_cancels_the_aws_call() {
    let fake = FakeAws::start().await;
    fake.reply(
        "slow",
        Reply::slow(Duration::from_secs(5), Reply::Job(json!({"job": {}}))),
    );
    let gw = TestGateway::aws(&fake.url).await;

    let mut client = gw.client.clone();
    let call = tokio::spawn(async move { client.describe_job(describe("slow", None)).await });
    fake.wait_for_calls(1).await;
    call.abort();

    fake.wait_for_abandoned(1).await;
}

#[tokio::test]
async fn health_reports_serving_then_not_serving_on_shutdown() {
    let fake = FakeAws::start().await;
    let mut gw = TestGateway::aws(&fake.url).await;
    let mut health = HealthClient::new(support::channel(gw.addr).await);

    for service in ["", "iot.jobs.v1.JobsGateway"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "iot.jobs.v1.JobsGateway".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    gw.shutdown();

    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap();
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);
    drop(watch);
    let stopped = tokio::time::timeout(Duration::from_secs(10), gw.server)
        .await
        .unwrap();
    assert_eq!(
        stopped.unwrap().unwrap(),
        Stopped::Drained,
        "drained well before the 5 s grace"
    );
}

#[tokio::test]
async fn error_details_carry_the_aws_code_and_request_id() {
    let fake = FakeAws::start().await;
    let mut gw = TestGateway::aws(&fake.url).await;

    let status = gw
        .client
        .describe_job(describe("missing", None))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("\"missing\""),
        "{}",
        status.message()
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "JOB_NOT_FOUND");
    assert_eq!(info.domain, "iot-jobs-gateway");
    assert_eq!(info.metadata["awsErrorCode"], "ResourceNotFoundException");
    assert_eq!(info.metadata["awsRequestId"], "fake-request-1");
}
