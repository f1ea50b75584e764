//! The embedded AWS IoT Jobs simulator: the gateway's real SDK path against
//! it, job lifecycles under a manual clock, faults, the rate limit and call
//! counts, and conformance with boto3 and botocore's service model.

use crate::support;

use std::{collections::BTreeSet, time::Duration};

use iot_jobs_gateway::simulator::{Answer, AwsOperation, Fault, FaultRule, SimConfig, seed};
use serde_json::Value;
use support::{
    REGION, TestGateway, describe, fresh, iot_client,
    python::{json_differences, tools},
    sim::{TestSim, admin, create_fleet_job},
    to_json,
};
use tonic::Code;

async fn job_json(gw: &mut TestGateway, job_id: &str) -> Value {
    let answer = gw
        .client
        .describe_job(fresh(describe(job_id, None)))
        .await
        .unwrap();
    to_json(&answer.into_inner())
}

fn counter(job: &Value, name: &str) -> i64 {
    job["job"]["jobProcessDetails"][name].as_i64().unwrap()
}

/// Runs blocking Python off the runtime that serves the simulator.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn a_snapshot_job_moves_to_completed_as_time_passes() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let mut gw = TestGateway::aws(&sim.url).await;

    let start = job_json(&mut gw, "rollout").await;
    assert_eq!(start["job"]["status"], "IN_PROGRESS");
    assert_eq!(counter(&start, "numberOfQueuedThings"), 9);
    assert_eq!(counter(&start, "numberOfInProgressThings"), 1);
    assert_eq!(start["job"]["isConcurrent"], true);

    sim.advance(Duration::from_secs(7));
    let middle = job_json(&mut gw, "rollout").await;
    assert_eq!(counter(&middle, "numberOfSucceededThings"), 3);
    assert_eq!(counter(&middle, "numberOfInProgressThings"), 5);
    assert_eq!(counter(&middle, "numberOfQueuedThings"), 2);
    assert!(middle["job"].get("completedAt").is_none());

    sim.advance(Duration::from_secs(60));
    let done = job_json(&mut gw, "rollout").await;
    assert_eq!(done["job"]["status"], "COMPLETED");
    assert_eq!(counter(&done, "numberOfSucceededThings"), 10);
    assert_eq!(done["job"]["completedAt"], "2030-01-01T00:00:14Z");
    assert_eq!(done["job"]["isConcurrent"], false);
    assert_eq!(
        sim.sim.stats().describe_job_calls,
        3,
        "one upstream call per gateway call"
    );
}

#[tokio::test]
async fn a_continuous_job_never_completes_on_its_own() {
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    let mut gw = TestGateway::aws(&sim.url).await;

    sim.advance(Duration::from_secs(3600));

    let job = job_json(&mut gw, seed::CONTINUOUS).await;
    assert_eq!(job["job"]["status"], "IN_PROGRESS");
    assert_eq!(job["job"]["targetSelection"], "CONTINUOUS");
    assert_eq!(counter(&job, "numberOfSucceededThings"), 10);
}

#[tokio::test]
async fn a_scheduled_job_waits_for_its_start_time_and_its_maintenance_windows() {
    // The demo job starts 2030-01-08T00:00 (a Tuesday) and rolls out only in
    // its window, Sundays 02:00 for 120 minutes.
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    let mut gw = TestGateway::aws(&sim.url).await;
    const HOUR: u64 = 3600;

    let before = job_json(&mut gw, seed::SCHEDULED).await;
    assert_eq!(before["job"]["status"], "SCHEDULED");
    assert_eq!(counter(&before, "numberOfQueuedThings"), 10);
    assert_eq!(
        before["job"]["schedulingConfig"]["startTime"],
        "2030-01-08T00:00"
    );
    let rollouts: Vec<&str> = before["job"]["scheduledJobRollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["startTime"].as_str().unwrap())
        .collect();
    assert_eq!(rollouts.len(), 7);
    assert_eq!(
        rollouts[0], "2030-01-13T02:00",
        "the first Sunday window after the start"
    );
    assert_eq!(rollouts[1], "2030-01-20T02:00");

    sim.advance(Duration::from_secs(7 * 24 * HOUR + 60));
    let started_outside_a_window = job_json(&mut gw, seed::SCHEDULED).await;
    assert_eq!(started_outside_a_window["job"]["status"], "SCHEDULED");

    sim.advance(Duration::from_secs(5 * 24 * HOUR + 2 * HOUR - 60 + 3));
    let in_window = job_json(&mut gw, seed::SCHEDULED).await;
    assert_eq!(in_window["job"]["status"], "IN_PROGRESS");
    assert!(counter(&in_window, "numberOfInProgressThings") > 0);
}

#[tokio::test]
async fn a_rollout_longer_than_its_window_is_scheduled_again_until_the_next() {
    let sim = TestSim::unlimited().await;
    let body = serde_json::json!({
        "targets": [format!("arn:aws:iot:{REGION}:123456789012:thinggroup/fleet")],
        // One thing a minute, in a daily 5-minute window at 02:00.
        "jobExecutionsRolloutConfig": {"maximumPerMinute": 1},
        "schedulingConfig": {
            "startTime": "2030-01-01T01:00",
            "maintenanceWindows": [{"startTime": "cron(0 2 * * ? *)", "durationInMinutes": 5}],
        },
    });
    sim.sim.create_job("nightly", &body).unwrap();
    let mut gw = TestGateway::aws(&sim.url).await;
    const MINUTE: u64 = 60;

    sim.advance(Duration::from_secs(120 * MINUTE + 30));
    let first_window = job_json(&mut gw, "nightly").await;
    sim.advance(Duration::from_secs(30 * MINUTE));
    let between = job_json(&mut gw, "nightly").await;
    sim.advance(Duration::from_secs(
        24 * 60 * MINUTE - 30 * MINUTE + 10 * MINUTE,
    ));
    let done = job_json(&mut gw, "nightly").await;

    assert_eq!(first_window["job"]["status"], "IN_PROGRESS");
    assert_eq!(between["job"]["status"], "SCHEDULED");
    assert_eq!(counter(&between, "numberOfSucceededThings"), 5);
    assert_eq!(counter(&between, "numberOfQueuedThings"), 5);
    assert_eq!(done["job"]["status"], "COMPLETED");
    assert_eq!(counter(&done, "numberOfSucceededThings"), 10);

    let unsupported = serde_json::json!({
        "targets": ["arn:aws:iot:us-east-1:123456789012:thing/a"],
        "schedulingConfig": {"maintenanceWindows": [{"startTime": "cron(0 2 1 * ? *)", "durationInMinutes": 5}]},
    });
    let err = sim.sim.create_job("monthly", &unsupported).unwrap_err();
    assert_eq!(err.code, "InvalidRequestException");
}

#[tokio::test]
async fn cancel_and_delete_follow_the_aws_lifecycle() {
    let sim = TestSim::unlimited().await;
    let sdk = iot_client(&sim.url);
    create_fleet_job(&sim, "doomed").await;
    sim.advance(Duration::from_millis(2500));
    sdk.cancel_job()
        .job_id("doomed")
        .reason_code("BAD_BUILD")
        .comment("bricks sensors")
        .force(true)
        .send()
        .await
        .unwrap();
    let mut gw = TestGateway::aws(&sim.url).await;

    let canceled = job_json(&mut gw, "doomed").await;
    assert_eq!(canceled["job"]["status"], "CANCELED");
    assert_eq!(canceled["job"]["forceCanceled"], true);
    assert_eq!(canceled["job"]["reasonCode"], "BAD_BUILD");
    assert_eq!(canceled["job"]["comment"], "bricks sensors");
    assert_eq!(canceled["job"]["completedAt"], "2030-01-01T00:00:02.500Z");
    assert_eq!(
        counter(&canceled, "numberOfCanceledThings"),
        10,
        "queued and (forced) running"
    );

    let again = sdk.cancel_job().job_id("doomed").send().await.unwrap_err();
    assert_eq!(
        aws_sdk_iot::error::ProvideErrorMetadata::code(&again),
        Some("InvalidStateTransitionException")
    );

    sdk.delete_job().job_id("doomed").send().await.unwrap();
    let deleting = job_json(&mut gw, "doomed").await;
    assert_eq!(deleting["job"]["status"], "DELETION_IN_PROGRESS");
    sim.advance(Duration::from_secs(5));
    let gone = gw
        .client
        .describe_job(fresh(describe("doomed", None)))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn a_deleted_jobs_id_can_be_used_again_once_deletion_finishes() {
    let sim = TestSim::unlimited().await;
    let sdk = iot_client(&sim.url);
    create_fleet_job(&sim, "reused").await;
    sdk.delete_job()
        .job_id("reused")
        .force(true)
        .send()
        .await
        .unwrap();
    sim.advance(Duration::from_secs(5));

    // Nothing described the job in between: deletion finishing is enough.
    create_fleet_job(&sim, "reused").await;
    let (answer, _) = sim.sim.describe_job("reused", false);
    assert!(matches!(answer, Answer::Body(_)), "{answer:?}");
}

#[tokio::test]
async fn before_substitution_shows_the_template_placeholders() {
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    let mut gw = TestGateway::aws(&sim.url).await;

    let mut request = describe(seed::TEMPLATED, None);
    request.get_mut().before_substitution = Some(true);
    let raw = gw.client.describe_job(request).await.unwrap().into_inner();
    let resolved = job_json(&mut gw, seed::TEMPLATED).await;

    assert_eq!(
        raw.document_source.as_deref(),
        Some(
            "https://s3.amazonaws.com/fleet-certs/${aws:iot:parameter:certificateSet}/rotate.json"
        )
    );
    assert_eq!(
        resolved["documentSource"],
        "https://s3.amazonaws.com/fleet-certs/2026-q4/rotate.json"
    );
    assert_eq!(
        resolved["job"]["documentParameters"]["certificateSet"],
        "2026-q4"
    );
}

/// Every field path present in `message`, without list indices.
fn present_paths(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(p.clone());
                if !(path.ends_with("documentParameters") || k == "documentParameters") {
                    present_paths(v, &p, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| present_paths(i, path, out)),
        _ => {}
    }
}

/// Every field path of the DescribeJobResponse message.
fn contract_paths() -> BTreeSet<String> {
    fn walk(message: &prost_reflect::MessageDescriptor, path: &str, out: &mut BTreeSet<String>) {
        for field in message.fields() {
            if field.name() == "unrecognized_values" {
                continue;
            }
            let p = if path.is_empty() {
                field.json_name().to_owned()
            } else {
                format!("{path}.{}", field.json_name())
            };
            out.insert(p.clone());
            if let prost_reflect::Kind::Message(inner) = field.kind()
                && !field.is_map()
                && inner.full_name() != "google.protobuf.Timestamp"
            {
                walk(&inner, &p, out);
            }
        }
    }
    let pool =
        prost_reflect::DescriptorPool::decode(iot_jobs_gateway::pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = BTreeSet::new();
    walk(
        &pool
            .get_message_by_name("iot.jobs.v1.DescribeJobResponse")
            .unwrap(),
        "",
        &mut out,
    );
    out
}

#[tokio::test]
async fn the_demo_fleet_uses_every_field_of_the_mirror() {
    let sim = TestSim::unlimited().await;
    let ids = seed::demo_fleet(&sim.sim);
    let mut gw = TestGateway::aws(&sim.url).await;
    sim.advance(Duration::from_secs(30));

    let mut seen = BTreeSet::new();
    for id in &ids {
        present_paths(&job_json(&mut gw, id).await, "", &mut seen);
    }

    let missing: Vec<_> = contract_paths().difference(&seen).cloned().collect();
    assert!(missing.is_empty(), "no demo job shows {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_reads_every_demo_job_as_the_gateway_answers_it() {
    let tools = tools().await;
    let sim = TestSim::unlimited().await;
    let ids = seed::demo_fleet(&sim.sim);
    sim.advance(Duration::from_secs(10));
    let mut gw = TestGateway::aws(&sim.url).await;

    for id in ids {
        let gateway = to_json(
            &gw.client
                .describe_job(describe(id, None))
                .await
                .unwrap()
                .into_inner(),
        );
        let url = sim.url.clone();
        let reference = blocking(move || tools.boto3_describe(&url, REGION, id)).await;
        assert_eq!(
            json_differences(&gateway, &reference),
            Vec::<String>::new(),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_job_json_conforms_to_the_botocore_model() {
    let tools = tools().await;
    let sim = TestSim::unlimited().await;
    let ids = seed::demo_fleet(&sim.sim);
    sim.advance(Duration::from_secs(10));

    for id in ids {
        let url = sim.url.clone();
        let problems = blocking(move || tools.botocore_problems(&url, id)).await;
        assert_eq!(problems, Vec::<String>::new(), "{id}");
    }
}

#[tokio::test]
async fn injected_faults_reach_the_gateway_and_are_counted() {
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    let mut gw = TestGateway::aws(&sim.url).await;

    sim.sim.inject(FaultRule {
        fault: Fault::ThrottlingException,
        operation: AwsOperation::DescribeJob,
        job_id: Some(seed::ROLLOUT.into()),
        times: Some(1),
    });
    let recovered = gw.client.describe_job(describe(seed::ROLLOUT, None)).await;
    assert!(
        recovered.is_ok(),
        "one throttle is retried away: {recovered:?}"
    );
    assert_eq!(sim.sim.stats().per_job[seed::ROLLOUT], 2);

    for (fault, code) in [
        (Fault::ServiceUnavailableException, Code::Unavailable),
        (Fault::InternalFailure, Code::Internal),
        (Fault::MalformedBody, Code::Internal),
        (Fault::ConnectionReset, Code::Unavailable),
    ] {
        sim.sim.clear_faults();
        sim.sim.inject(FaultRule {
            fault: fault.clone(),
            operation: AwsOperation::DescribeJob,
            job_id: None,
            times: None,
        });
        let status = gw
            .client
            .describe_job(describe(seed::CANCELED, None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{fault:?}: {status:?}");
    }
}

#[tokio::test]
async fn the_rate_limit_throttles_like_aws() {
    let sim = TestSim::start(SimConfig::default()).await;
    seed::demo_fleet(&sim.sim);
    let sdk = iot_client(&sim.url);

    let mut throttled = 0;
    for _ in 0..15 {
        if let Err(err) = sdk.describe_job().job_id(seed::ROLLOUT).send().await {
            let code = aws_sdk_iot::error::ProvideErrorMetadata::code(&err).map(str::to_owned);
            assert_eq!(code.as_deref(), Some("ThrottlingException"));
            throttled += 1;
        }
    }

    assert!(
        throttled >= 4,
        "15 back-to-back calls against 10/s: {throttled} throttled"
    );
    let stats = sim.sim.stats();
    assert_eq!(stats.describe_job_calls, 15);
    assert_eq!(stats.throttled, throttled);
}

#[tokio::test]
async fn the_admin_api_reports_counts_and_takes_faults() {
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    let mut gw = TestGateway::aws(&sim.url).await;
    let rule = r#"{"kind": "InternalFailure", "jobId": "cert-rotation-2026", "times": 3}"#;
    let (status, _) = admin(&sim.url, "POST", "/_sim/faults", rule).await;
    assert_eq!(status, 204);
    let status = gw
        .client
        .describe_job(describe(seed::TEMPLATED, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    gw.client
        .describe_job(describe(seed::ROLLOUT, None))
        .await
        .unwrap();

    let (status, body) = admin(&sim.url, "GET", "/_sim/stats", "").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["describeJobCalls"], 4);
    assert_eq!(stats["perJob"][seed::TEMPLATED], 3);
    assert_eq!(stats["perJob"][seed::ROLLOUT], 1);
}

#[tokio::test]
async fn the_admin_api_advances_executions_and_the_clock() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "manual").await;
    let mut gw = TestGateway::aws(&sim.url).await;

    let path = "/_sim/jobs/manual/executions/advance";
    let (status, body) = admin(
        &sim.url,
        "POST",
        path,
        r#"{"count": 3, "outcome": "FAILED"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"finished":3}"#));
    let (status, _) = admin(
        &sim.url,
        "POST",
        path,
        r#"{"count": 1, "outcome": "REJECTED"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let partly = job_json(&mut gw, "manual").await;
    assert_eq!(counter(&partly, "numberOfFailedThings"), 3);
    assert_eq!(counter(&partly, "numberOfRejectedThings"), 1);
    assert_eq!(partly["job"]["status"], "IN_PROGRESS");

    let (status, _) = admin(&sim.url, "POST", "/_sim/clock/advance", r#"{"ms": 60000}"#).await;
    assert_eq!(status, 200);
    let done = job_json(&mut gw, "manual").await;
    assert_eq!(done["job"]["status"], "COMPLETED");
    assert_eq!(counter(&done, "numberOfSucceededThings"), 6);

    let (status, body) = admin(
        &sim.url,
        "POST",
        "/_sim/jobs/nope/executions/advance",
        r#"{"count": 1, "outcome": "FAILED"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn the_admin_api_lists_when_each_job_was_described() {
    let sim = TestSim::start(SimConfig {
        describe_rate_limit: None,
        group_size: 3,
        ..SimConfig::default()
    })
    .await;
    create_fleet_job(&sim, "first").await;
    create_fleet_job(&sim, "second").await;
    let mut gw = TestGateway::aws(&sim.url).await;
    let job = job_json(&mut gw, "first").await;
    job_json(&mut gw, "second").await;
    job_json(&mut gw, "first").await;

    // A thing group stands for `group_size` things.
    let things = counter(&job, "numberOfQueuedThings") + counter(&job, "numberOfInProgressThings");
    assert_eq!(things, 3, "{job}");
    let (status, body) = admin(&sim.url, "GET", "/_sim/polls", "").await;
    assert_eq!(status, 200);
    let polls: Value = serde_json::from_str(&body).unwrap();
    let times = |id: &str| -> Vec<u64> {
        polls[id]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect()
    };
    let (first, second) = (times("first"), times("second"));
    assert_eq!((first.len(), second.len()), (2, 1), "{polls}");
    assert!(first[0] <= second[0] && second[0] <= first[1], "{polls}");
    // The same arrival times as /_sim/calls, grouped by job.
    let (_, body) = admin(&sim.url, "GET", "/_sim/calls", "").await;
    let calls: Value = serde_json::from_str(&body).unwrap();
    let all: Vec<u64> = calls["arrivalsUs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(all, vec![first[0], second[0], first[1]]);
}
