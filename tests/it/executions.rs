//! DescribeJobExecution through the gateway: field for field as boto3
//! reads the simulator and moto, bad input at zero AWS calls, one AWS call
//! for many identical questions, and a budget of its own beside
//! DescribeJob's.

use crate::support;

use std::time::Duration;

use futures_util::future::join_all;
use iot_jobs_gateway::{
    domain::limit::LimiterSettings,
    pb,
    upstream::{DescribeJobExecution, Operation as _},
};
use serde_json::json;
use support::{
    REGION, TestGateway, describe, error_info_reason, header, iot_client, message_json,
    python::{json_differences, tools},
    sim::{TestSim, create_fleet_job},
};
use tonic::Code;
use tonic_types::StatusExt as _;

fn execution(job_id: &str, thing: &str) -> tonic::Request<pb::DescribeJobExecutionRequest> {
    tonic::Request::new(pb::DescribeJobExecutionRequest {
        job_id: job_id.to_owned(),
        thing_name: thing.to_owned(),
        execution_number: None,
    })
}

fn execution_json(response: &pb::DescribeJobExecutionResponse) -> serde_json::Value {
    message_json(response, "DescribeJobExecutionResponse")
}

/// Runs blocking Python off the runtime that serves the simulator.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// boto3's describe_job_execution from `endpoint`.
async fn boto3_execution(endpoint: &str, job_id: &str, thing: &str) -> serde_json::Value {
    let tools = tools().await;
    let (endpoint, params) = (
        endpoint.to_owned(),
        json!({"jobId": job_id, "thingName": thing}),
    );
    blocking(move || tools.boto3_call(&endpoint, REGION, "describe_job_execution", &params)).await
}

#[tokio::test]
async fn an_execution_follows_its_device_and_matches_boto3_field_for_field() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let mut gw = TestGateway::aws(&sim.url).await;

    // The first thing starts at once, the third a little later.
    let running = gw
        .client
        .describe_job_execution(execution("rollout", "fleet-1"))
        .await
        .unwrap()
        .into_inner();
    let queued = gw
        .client
        .describe_job_execution(execution("rollout", "fleet-3"))
        .await
        .unwrap()
        .into_inner();
    for (answer, thing) in [(&running, "fleet-1"), (&queued, "fleet-3")] {
        let reference = boto3_execution(&sim.url, "rollout", thing).await;
        assert_eq!(
            json_differences(&execution_json(answer), &reference),
            Vec::<String>::new(),
            "{thing}"
        );
    }
    let json = execution_json(&running);
    assert_eq!(json["execution"]["status"], "IN_PROGRESS");
    assert_eq!(
        json["execution"]["statusDetails"]["detailsMap"]["progress"],
        "installing"
    );
    assert_eq!(json["execution"]["executionNumber"], 1);
    assert_eq!(json["execution"]["versionNumber"], 2);
    assert_eq!(
        json["execution"]["thingArn"],
        format!("arn:aws:iot:{REGION}:123456789012:thing/fleet-1")
    );
    assert!(json["execution"]["startedAt"].is_string());
    let queued = execution_json(&queued);
    assert_eq!(queued["execution"]["status"], "QUEUED");
    assert!(
        queued["execution"].get("startedAt").is_none(),
        "absent stays absent"
    );
    assert!(queued["execution"].get("statusDetails").is_none());

    sim.advance(Duration::from_secs(60));
    let done = gw
        .client
        .describe_job_execution(support::fresh(execution("rollout", "fleet-1")))
        .await
        .unwrap()
        .into_inner();
    let done = execution_json(&done);
    assert_eq!(done["execution"]["status"], "SUCCEEDED");
    assert_eq!(
        done["execution"]["statusDetails"]["detailsMap"]["result"],
        "installed"
    );
    assert_eq!(done["execution"]["versionNumber"], 3);
    assert_eq!(
        sim.sim.stats().describe_job_execution_calls,
        3 + 2,
        "one AWS call per gateway call (and two by boto3)"
    );
    assert_eq!(sim.sim.stats().describe_job_calls, 0);
}

#[tokio::test]
async fn a_moto_execution_matches_boto3_field_for_field() {
    let tools = tools().await;
    let moto = tools.moto();
    let sdk = iot_client(&moto.url);
    sdk.create_thing()
        .thing_name("pump-7")
        .send()
        .await
        .unwrap();
    sdk.create_job()
        .job_id("pumps")
        .targets(format!("arn:aws:iot:{REGION}:123456789012:thing/pump-7"))
        .document("{}")
        .send()
        .await
        .unwrap();
    let mut gw = TestGateway::aws(&moto.url).await;

    let answer = gw
        .client
        .describe_job_execution(execution("pumps", "pump-7"))
        .await
        .unwrap()
        .into_inner();
    let reference = boto3_execution(&moto.url, "pumps", "pump-7").await;

    assert_eq!(
        json_differences(&execution_json(&answer), &reference),
        Vec::<String>::new()
    );
    let execution = answer.execution.unwrap();
    assert_eq!(execution.job_id.as_deref(), Some("pumps"));
    assert_eq!(execution.status(), pb::job_execution::Status::Queued);

    let missing = gw
        .client
        .describe_job_execution(self::execution("pumps", "not-a-target"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
}

#[tokio::test]
async fn bad_input_is_refused_before_aws_with_the_field_to_fix() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let mut gw = TestGateway::aws(&sim.url).await;

    let long = "t".repeat(129);
    for (job_id, thing, field, says) in [
        ("rollout", "fleet/1", "thing_name", "'/' at position 6"),
        ("rollout", "", "thing_name", "required"),
        ("rollout", long.as_str(), "thing_name", "129 characters"),
        ("roll out", "fleet-1", "job_id", "' ' at position 5"),
    ] {
        let status = gw
            .client
            .describe_job_execution(execution(job_id, thing))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violation = &status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations[0];
        assert_eq!(violation.field, field);
        assert!(
            violation.description.contains(says),
            "{}",
            violation.description
        );
    }
    assert_eq!(sim.sim.stats().describe_job_execution_calls, 0);

    let status = gw
        .client
        .describe_job_execution(execution("rollout", "stranger"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(error_info_reason(&status), "EXECUTION_NOT_FOUND");
    assert!(
        status.message().contains("\"rollout\""),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_hundred_identical_cold_questions_cost_aws_one_call() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let gw = TestGateway::aws(&sim.url).await;

    let answers = join_all((0..100).map(|_| {
        let mut client = gw.client.clone();
        async move {
            client
                .describe_job_execution(execution("rollout", "fleet-2"))
                .await
        }
    }))
    .await;

    let mut sources = std::collections::BTreeMap::<String, usize>::new();
    for answer in answers {
        *sources
            .entry(header(&answer.unwrap(), "x-cache"))
            .or_default() += 1;
    }
    assert_eq!(
        sim.sim.stats().describe_job_execution_calls,
        1,
        "{sources:?}"
    );
    assert_eq!(sources.get("miss"), Some(&1), "{sources:?}");
}

#[tokio::test]
async fn executions_spend_a_budget_of_their_own_and_describe_job_keeps_its_rate() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let gw = TestGateway::aws_edited(&sim.url, |jobs| {
        jobs.operation_limiters.insert(
            DescribeJobExecution::NAME,
            LimiterSettings {
                rate: 0.2,
                burst: 1,
                ..jobs.limiter.clone()
            },
        );
    })
    .await;
    let mut client = gw.client.clone();

    // The execution bucket's one token goes to the first thing; the next
    // would come in 5 s, after the call's deadline.
    client
        .describe_job_execution(execution("rollout", "fleet-1"))
        .await
        .unwrap();
    let mut late = execution("rollout", "fleet-2");
    late.set_timeout(Duration::from_secs(1));
    let refused = client.describe_job_execution(late).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(error_info_reason(&refused), "RATE_LIMITED");
    let info = refused.get_details_error_info().unwrap();
    assert_eq!(info.metadata["ratePerSecond"], "0.2");
    assert!(
        refused
            .message()
            .contains("0.2 DescribeJobExecution calls/s"),
        "{}",
        refused.message()
    );

    // DescribeJob's own bucket is untouched: five fresh calls in a row,
    // each its own AWS call within a 1 s deadline (at 0.2 calls/s they
    // would be refused).
    for _ in 0..5 {
        let fresh = support::fresh(describe("rollout", Some(Duration::from_secs(1))));
        client.describe_job(fresh).await.unwrap();
    }
    assert_eq!(sim.sim.stats().describe_job_calls, 5);
    assert_eq!(sim.sim.stats().describe_job_execution_calls, 1);
}
