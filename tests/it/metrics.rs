//! `/metrics` as an operator's Prometheus reads it: the real binary with
//! `--metrics-listen`, a known sequence of calls over gRPC, then a scrape
//! parsed by the Prometheus project's own parser. Every counter must equal
//! what was done, AWS's attempts must equal the simulator's own count, and
//! the per-call log lines must agree with the gRPC counters.

use crate::support;

use std::time::Duration;

use iot_jobs_gateway::{
    pb,
    simulator::{AwsOperation, Fault, FaultRule, seed},
};
use support::{describe, metrics::Scrape, process::GatewayProcess, python, sim::TestSim};
use tonic::Code;

const SERVICE: &str = "iot.jobs.v1.JobsGateway";

fn rpc(method: &str) -> [(&'static str, &str); 2] {
    [("grpc_service", SERVICE), ("grpc_method", method)]
}

#[tokio::test]
async fn counters_equal_what_was_done() {
    let tools = python::tools().await;
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    let gw = GatewayProcess::serve_with_env(
        &sim.url,
        &["--metrics-listen", "127.0.0.1:0"],
        // Cache hits are logged at debug: the test counts every call's line.
        &[("RUST_LOG", "info,iot_jobs_gateway=debug")],
        "metrics-counters",
    )
    .await;
    let metrics_addr = gw.metrics_addr.clone().expect("metrics listening logged");
    let mut client = gw.client().await;

    // DescribeJob: a miss, a hit, NOT_FOUND, INVALID_ARGUMENT, and a job
    // AWS throttles once (one retry).
    client
        .describe_job(describe(seed::ROLLOUT, None))
        .await
        .unwrap();
    let hit = client
        .describe_job(describe(seed::ROLLOUT, None))
        .await
        .unwrap();
    assert_eq!(hit.metadata().get("x-cache").unwrap(), "hit");
    let missing = client.describe_job(describe("no-such-job", None)).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let invalid = client.describe_job(describe("not a job id!", None)).await;
    assert_eq!(invalid.unwrap_err().code(), Code::InvalidArgument);
    sim.sim.inject(FaultRule {
        fault: Fault::ThrottlingException,
        operation: AwsOperation::DescribeJob,
        job_id: Some(seed::CONTINUOUS.to_owned()),
        times: Some(1),
    });
    client
        .describe_job(describe(seed::CONTINUOUS, None))
        .await
        .unwrap();

    // A batch: a hit, a miss and an invalid item.
    let batch = client
        .batch_describe_jobs(pb::BatchDescribeJobsRequest {
            requests: [seed::ROLLOUT, seed::SCHEDULED, "not a job id!"]
                .into_iter()
                .map(|id| describe(id, None).into_inner())
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results.len(), 3);

    // A watch of a CANCELED job: one event, final, then the stream ends.
    let mut stream = client
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec![seed::CANCELED.to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = 0;
    while let Some(event) = stream.message().await.unwrap() {
        events += 1;
        assert!(matches!(
            event.event,
            Some(pb::watch_jobs_response::Event::Job(ref job)) if job.r#final
        ));
    }
    assert_eq!(events, 1);

    // The last call's status reaches the counters as the client reads it.
    let mut scrape = Scrape::of(tools, &metrics_addr).await;
    for _ in 0..50 {
        if scrape.value("grpc_server_handled_total", &rpc("WatchJobs")) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        scrape = Scrape::of(tools, &metrics_addr).await;
    }
    let s = &scrape;

    // gRPC server metrics, go-grpc-prometheus names and labels.
    assert_eq!(s.family_type("grpc_server_started"), Some("counter"));
    assert_eq!(
        s.family_type("grpc_server_handling_seconds"),
        Some("histogram")
    );
    let handled = |method: &str, code: &str| {
        let [service, method] = rpc(method);
        s.value(
            "grpc_server_handled_total",
            &[service, method, ("grpc_code", code)],
        )
    };
    assert_eq!(
        s.value("grpc_server_started_total", &rpc("DescribeJob")),
        5.0
    );
    assert_eq!(handled("DescribeJob", "OK"), 3.0);
    assert_eq!(handled("DescribeJob", "NotFound"), 1.0);
    assert_eq!(handled("DescribeJob", "InvalidArgument"), 1.0);
    assert_eq!(
        s.value("grpc_server_msg_received_total", &rpc("DescribeJob")),
        5.0
    );
    assert_eq!(
        s.value("grpc_server_msg_sent_total", &rpc("DescribeJob")),
        3.0,
        "errors carry no message"
    );
    assert_eq!(
        s.value("grpc_server_handling_seconds_count", &rpc("DescribeJob")),
        5.0
    );
    for method in ["BatchDescribeJobs", "WatchJobs"] {
        assert_eq!(
            s.value("grpc_server_started_total", &rpc(method)),
            1.0,
            "{method}"
        );
        assert_eq!(handled(method, "OK"), 1.0, "{method}");
        assert_eq!(s.value("grpc_server_msg_received_total", &rpc(method)), 1.0);
        assert_eq!(s.value("grpc_server_msg_sent_total", &rpc(method)), 1.0);
    }
    let unary = ("grpc_type", "unary");
    let stream_type = ("grpc_type", "server_stream");
    assert_eq!(
        s.value(
            "grpc_server_started_total",
            &[unary, ("grpc_method", "DescribeJob")]
        ),
        5.0
    );
    assert_eq!(
        s.value(
            "grpc_server_started_total",
            &[stream_type, ("grpc_method", "WatchJobs")]
        ),
        1.0
    );

    // AWS: what the simulator saw, by outcome.
    let aws = |outcome: &str| {
        s.value(
            "iot_jobs_gateway_aws_attempts_total",
            &[("outcome", outcome)],
        )
    };
    let simulator_saw = sim.sim.stats().describe_job_calls as f64;
    assert_eq!(
        s.value("iot_jobs_gateway_aws_attempts_total", &[]),
        simulator_saw
    );
    // rollout, continuous (after its throttle), scheduled, the watch poll.
    assert_eq!(aws("ok"), 4.0);
    assert_eq!(
        s.value(
            "iot_jobs_gateway_aws_attempts_total",
            &[
                ("outcome", "not_found"),
                ("aws_code", "ResourceNotFoundException")
            ]
        ),
        1.0
    );
    assert_eq!(
        s.value(
            "iot_jobs_gateway_aws_attempts_total",
            &[
                ("outcome", "throttled"),
                ("aws_code", "ThrottlingException")
            ]
        ),
        1.0
    );
    assert_eq!(
        s.value("iot_jobs_gateway_aws_request_duration_seconds_count", &[]),
        simulator_saw
    );
    assert_eq!(s.value("iot_jobs_gateway_aws_retries_total", &[]), 1.0);

    // Where answers came from (NOT_FOUND and invalid ids are not answers).
    let answers = |source: &str| {
        s.value(
            "iot_jobs_gateway_cache_answers_total",
            &[("source", source)],
        )
    };
    assert_eq!(
        answers("hit"),
        2.0,
        "the second DescribeJob, the batch's first item"
    );
    assert_eq!(answers("miss"), 3.0, "rollout, continuous, scheduled");
    assert_eq!(answers("coalesced"), 0.0);
    assert_eq!(answers("stale"), 0.0);
    assert!(s.value("iot_jobs_gateway_cache_entries", &[]) >= 1.0);
    assert!(s.value("iot_jobs_gateway_cache_weighted_size_bytes", &[]) > 0.0);

    // Watches: one poll, one event, and its age observed.
    assert_eq!(s.value("iot_jobs_gateway_watch_polls_total", &[]), 1.0);
    assert_eq!(
        s.value("iot_jobs_gateway_watch_events_sent_total", &[]),
        1.0
    );
    assert_eq!(
        s.value("iot_jobs_gateway_watch_answer_age_seconds_count", &[]),
        1.0
    );
    assert_eq!(s.value("iot_jobs_gateway_watch_streams", &[]), 0.0);

    // The rate limit: the configured rate, lowered once by the throttle.
    let rate = s.value(
        "iot_jobs_gateway_rate_limit_per_second",
        &[("operation", "DescribeJob")],
    );
    assert!(rate > 0.0 && rate < 10.0, "rate {rate}");
    assert_eq!(s.value("iot_jobs_gateway_rate_limited_total", &[]), 0.0);
    assert_eq!(
        s.value(
            "iot_jobs_gateway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // One log line per call, with the code the counters have.
    let logs = gw.logs.lock().unwrap().clone();
    let lines = |method: &str, code: &str| {
        logs.iter()
            .filter(|l| l["method"] == method && l["code"] == code && l["latency_ms"].is_number())
            .count() as f64
    };
    assert_eq!(lines("DescribeJob", "Ok"), handled("DescribeJob", "OK"));
    assert_eq!(
        lines("DescribeJob", "NotFound"),
        handled("DescribeJob", "NotFound")
    );
    assert_eq!(
        lines("DescribeJob", "InvalidArgument"),
        handled("DescribeJob", "InvalidArgument")
    );
    assert_eq!(lines("BatchDescribeJobs", "Ok"), 1.0);
    assert_eq!(lines("WatchJobs", "Ok"), 1.0);
    let batch_line = logs
        .iter()
        .find(|l| l["method"] == "BatchDescribeJobs" && l["latency_ms"].is_number())
        .unwrap();
    assert_eq!(
        (
            &batch_line["items"],
            &batch_line["ok"],
            &batch_line["failed"]
        ),
        (&3.into(), &2.into(), &1.into())
    );
}

#[tokio::test]
async fn a_client_that_leaves_is_counted_as_canceled() {
    let tools = python::tools().await;
    let sim = TestSim::unlimited().await;
    seed::demo_fleet(&sim.sim);
    sim.sim.inject(FaultRule {
        fault: Fault::Latency { ms: 3_000 },
        operation: AwsOperation::DescribeJob,
        job_id: Some(seed::ROLLOUT.to_owned()),
        times: None,
    });
    let gw = GatewayProcess::serve(
        &sim.url,
        &["--metrics-listen", "127.0.0.1:0"],
        "metrics-canceled",
    )
    .await;
    let metrics_addr = gw.metrics_addr.clone().unwrap();
    let mut client = gw.client().await;
    // The call gives up after 1 s, long before the simulator's 3 s answer.
    let gone = client
        .describe_job(describe(seed::ROLLOUT, Some(Duration::from_secs(1))))
        .await;
    assert_eq!(gone.unwrap_err().code(), Code::DeadlineExceeded);
    // A watch the client drops after its first event.
    let mut stream = client
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec![seed::CONTINUOUS.to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    drop(stream);

    let mut canceled = (0.0, 0.0);
    for _ in 0..50 {
        let s = Scrape::of(tools, &metrics_addr).await;
        let code = |method: &str, code: &str| {
            let [service, method] = rpc(method);
            s.value(
                "grpc_server_handled_total",
                &[service, method, ("grpc_code", code)],
            )
        };
        // The gateway's own deadline answer, or the client leaving first.
        canceled = (
            code("DescribeJob", "DeadlineExceeded") + code("DescribeJob", "Canceled"),
            code("WatchJobs", "Canceled"),
        );
        if canceled == (1.0, 1.0) && s.value("iot_jobs_gateway_watch_streams", &[]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(canceled, (1.0, 1.0), "(DescribeJob, WatchJobs)");
    // The AWS request dropped at the deadline was sent all the same.
    let s = Scrape::of(tools, &metrics_addr).await;
    assert_eq!(
        s.value(
            "iot_jobs_gateway_aws_attempts_total",
            &[("outcome", "abandoned")]
        ),
        1.0
    );
    assert_eq!(
        s.value("iot_jobs_gateway_aws_attempts_total", &[]),
        sim.sim.stats().describe_job_calls as f64
    );
}

#[tokio::test]
async fn metrics_are_off_unless_asked_for() {
    let sim = TestSim::unlimited().await;
    let gw = GatewayProcess::serve(&sim.url, &[], "metrics-off").await;
    assert_eq!(gw.metrics_addr, None);
    assert!(!gw.logged("metrics listening"));
}

#[tokio::test]
async fn expected_refusals_are_counted_all_but_logged_a_few_per_interval() {
    let tools = python::tools().await;
    let sim = TestSim::unlimited().await;
    let gw = GatewayProcess::serve(
        &sim.url,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            // One AWS call a second: calls with 100 ms to spare are refused.
            "--upstream-rate",
            "1",
            "--upstream-burst",
            "1",
            "--refusal-log-lines",
            "3",
            "--refusal-log-interval",
            "1s",
        ],
        "metrics-refusals",
    )
    .await;
    let metrics_addr = gw.metrics_addr.clone().unwrap();
    let mut client = gw.client().await;
    let mut refused: u32 = 0;
    for i in 0..40 {
        let call = client
            .describe_job(describe(
                &format!("flood-{i}"),
                Some(Duration::from_millis(100)),
            ))
            .await;
        if call.is_err_and(|s| s.code() == Code::ResourceExhausted) {
            refused += 1;
        }
    }
    assert!(refused >= 30, "only {refused} of 40 calls were refused");

    // Every refusal is counted...
    let s = Scrape::of(tools, &metrics_addr).await;
    let [service, method] = rpc("DescribeJob");
    assert_eq!(
        s.value(
            "grpc_server_handled_total",
            &[service, method, ("grpc_code", "ResourceExhausted")]
        ),
        f64::from(refused)
    );
    assert_eq!(
        s.value("iot_jobs_gateway_rate_limited_total", &[]),
        f64::from(refused)
    );
    // ...but only a few are logged one by one, and the summaries count
    // the rest.
    let mut seen = (0, 0);
    for _ in 0..50 {
        let logs = gw.logs.lock().unwrap().clone();
        let lines = logs
            .iter()
            .filter(|l| l["message"] == "call refused" && l["code"] == "ResourceExhausted")
            .count();
        let summarised: u64 = logs
            .iter()
            .filter(|l| l["code"] == "ResourceExhausted" && l["not_logged"].is_u64())
            .map(|l| l["not_logged"].as_u64().unwrap())
            .sum();
        seen = (lines, summarised);
        if lines as u64 + summarised == u64::from(refused) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen.0 as u64 + seen.1,
        u64::from(refused),
        "(lines, summarised) {seen:?}"
    );
    assert!(
        seen.0 <= 9,
        "{} refusal lines: at most 3 per 1 s window",
        seen.0
    );
}
