//! When AWS fails the execution operations: AWS throttling one operation
//! slows that operation's budget only (as `/metrics` shows it, by
//! operation), an expired execution answer or page stands in when AWS is
//! unavailable, a whole listing that breaks off mid-way ends with the error
//! after the pages it sent, and replicas keep answering the new operations
//! while Redis is gone and share them again when it is back. AWS is the
//! simulator, with faults aimed at one operation.

use crate::support;

use std::time::Duration;

use iot_jobs_gateway::{
    pb,
    simulator::{AwsOperation, Fault, FaultRule},
};
use support::{
    TestGateway, error_info_reason, header,
    metrics::Scrape,
    process::GatewayProcess,
    python,
    redis::RedisServer,
    sim::{TestSim, create_fleet_job},
};
use tonic::Code;

type Client = pb::jobs_gateway_client::JobsGatewayClient<tonic::transport::Channel>;

fn execution(job_id: &str, thing: &str) -> tonic::Request<pb::DescribeJobExecutionRequest> {
    tonic::Request::new(pb::DescribeJobExecutionRequest {
        job_id: job_id.to_owned(),
        thing_name: thing.to_owned(),
        execution_number: None,
    })
}

fn page(job_id: &str, max_results: i32) -> tonic::Request<pb::ListJobExecutionsForJobRequest> {
    tonic::Request::new(pb::ListJobExecutionsForJobRequest {
        job_id: job_id.to_owned(),
        max_results: Some(max_results),
        ..Default::default()
    })
}

fn thing_page(thing: &str) -> tonic::Request<pb::ListJobExecutionsForThingRequest> {
    tonic::Request::new(pb::ListJobExecutionsForThingRequest {
        thing_name: thing.to_owned(),
        ..Default::default()
    })
}

/// `fault` on every call of `operation`, until cleared.
fn always(operation: AwsOperation, fault: Fault) -> FaultRule {
    FaultRule {
        fault,
        operation,
        job_id: None,
        times: None,
    }
}

#[tokio::test]
async fn aws_throttling_the_listing_slows_only_the_listing_and_metrics_say_which() {
    let tools = python::tools().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let flags = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--upstream-rate",
        "8",
        "--list-job-executions-for-job-rate",
        "6",
    ];
    let gw = GatewayProcess::serve(&sim.url, &flags, "throttled-listing").await;
    let metrics = gw.metrics_addr.clone().expect("metrics listening logged");
    let mut client = gw.client().await;
    sim.sim.inject(always(
        AwsOperation::ListJobExecutionsForJob,
        Fault::ThrottlingException,
    ));

    // Three listing questions: AWS throttles every attempt.
    for size in [5, 6, 7] {
        let mut request = page("rollout", size);
        request.set_timeout(Duration::from_secs(2));
        let refused = client
            .list_job_executions_for_job(request)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(error_info_reason(&refused), "UPSTREAM_THROTTLED");
    }
    // Meanwhile DescribeJob and DescribeJobExecution are answered.
    for _ in 0..4 {
        let fresh = support::fresh(support::describe("rollout", None));
        client.describe_job(fresh).await.unwrap();
    }
    let first = client
        .describe_job_execution(execution("rollout", "fleet-1"))
        .await
        .unwrap();
    assert_eq!(header(&first, "x-cache"), "miss");
    let again = client
        .describe_job_execution(execution("rollout", "fleet-1"))
        .await
        .unwrap();
    assert_eq!(header(&again, "x-cache"), "hit");

    let s = Scrape::of(tools, &metrics).await;
    let of = |operation: &'static str| [("operation", operation)];
    let rate = |operation| s.value("iot_jobs_gateway_rate_limit_per_second", &of(operation));
    assert!(
        rate("ListJobExecutionsForJob") < 6.0,
        "the throttled listing backs off: {}",
        rate("ListJobExecutionsForJob")
    );
    assert_eq!(rate("DescribeJob"), 8.0, "DescribeJob keeps its full rate");
    assert_eq!(rate("DescribeJobExecution"), 10.0, "the default");
    assert_eq!(rate("ListJobExecutionsForThing"), 10.0, "the default");

    // AWS's attempts by operation, as the simulator counted them.
    let stats = sim.sim.stats();
    let attempts = |labels: &[(&str, &str)]| s.value("iot_jobs_gateway_aws_attempts_total", labels);
    let listing = ("operation", "ListJobExecutionsForJob");
    assert_eq!(
        attempts(&[listing, ("outcome", "throttled")]),
        stats.list_job_executions_for_job_calls as f64
    );
    assert!(stats.list_job_executions_for_job_calls >= 6, "retried");
    assert_eq!(attempts(&[listing, ("outcome", "ok")]), 0.0);
    assert_eq!(
        attempts(&[("operation", "DescribeJob"), ("outcome", "ok")]),
        stats.describe_job_calls as f64
    );
    assert_eq!(
        attempts(&[("operation", "DescribeJobExecution")]),
        stats.describe_job_execution_calls as f64
    );
    assert_eq!(
        s.value("iot_jobs_gateway_aws_retries_total", &[listing]),
        stats.list_job_executions_for_job_calls as f64 - 3.0,
        "every attempt after each question's first"
    );
    assert_eq!(
        s.value("iot_jobs_gateway_aws_retries_total", &of("DescribeJob")),
        0.0
    );
    let answers = |operation, source| {
        s.value(
            "iot_jobs_gateway_cache_answers_total",
            &[("operation", operation), ("source", source)],
        )
    };
    assert_eq!(answers("DescribeJobExecution", "miss"), 1.0);
    assert_eq!(answers("DescribeJobExecution", "hit"), 1.0);
    assert_eq!(answers("DescribeJob", "miss"), 4.0);
    assert_eq!(answers("ListJobExecutionsForJob", "miss"), 0.0);
    assert_eq!(answers("ListJobExecutionsForThing", "hit"), 0.0);
    assert_eq!(
        s.value(
            "iot_jobs_gateway_cache_entries",
            &of("ListJobExecutionsForJob")
        ),
        0.0,
        "failures are not kept"
    );
    for operation in [
        "DescribeJob",
        "DescribeJobExecution",
        "ListJobExecutionsForJob",
        "ListJobExecutionsForThing",
    ] {
        assert!(
            s.samples().any(|(name, labels, _)| {
                name == "iot_jobs_gateway_rate_limit_waiting" && labels["operation"] == operation
            }),
            "every operation's bucket is shown: {operation}"
        );
    }
    assert_eq!(
        s.value(
            "iot_jobs_gateway_cache_entries",
            &of("DescribeJobExecution")
        ),
        1.0,
        "the one execution answer, in its own space"
    );
}

/// Lifetimes short enough to expire in a test, and a minute of
/// stale-if-error.
fn short_lived(jobs: &mut iot_jobs_gateway::domain::JobsSettings) {
    jobs.cache.ttl = Duration::from_millis(200);
    jobs.cache.terminal_ttl = Duration::from_millis(200);
    jobs.cache.stale_if_error = Duration::from_secs(60);
}

const EXPIRED: Duration = Duration::from_millis(500);

#[tokio::test]
async fn expired_execution_answers_stand_in_while_aws_is_unavailable() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let gw = TestGateway::aws_edited(&sim.url, short_lived).await;
    let mut client = gw.client.clone();
    let execution_before = client
        .describe_job_execution(execution("rollout", "fleet-2"))
        .await
        .unwrap();
    let page_before = client
        .list_job_executions_for_job(page("rollout", 3))
        .await
        .unwrap();
    let thing_before = client
        .list_job_executions_for_thing(thing_page("fleet-2"))
        .await
        .unwrap();
    tokio::time::sleep(EXPIRED).await;
    for operation in [
        AwsOperation::DescribeJobExecution,
        AwsOperation::ListJobExecutionsForJob,
        AwsOperation::ListJobExecutionsForThing,
    ] {
        sim.sim
            .inject(always(operation, Fault::ServiceUnavailableException));
    }

    let execution_stale = client
        .describe_job_execution(execution("rollout", "fleet-2"))
        .await
        .unwrap();
    let page_stale = client
        .list_job_executions_for_job(page("rollout", 3))
        .await
        .unwrap();
    let thing_stale = client
        .list_job_executions_for_thing(thing_page("fleet-2"))
        .await
        .unwrap();
    for (what, source, age) in [
        (
            "execution",
            header(&execution_stale, "x-cache"),
            header(&execution_stale, "x-cache-age-ms"),
        ),
        (
            "job page",
            header(&page_stale, "x-cache"),
            header(&page_stale, "x-cache-age-ms"),
        ),
        (
            "thing page",
            header(&thing_stale, "x-cache"),
            header(&thing_stale, "x-cache-age-ms"),
        ),
    ] {
        assert_eq!(source, "stale", "{what}");
        let age: u64 = age.parse().unwrap();
        assert!((500..60_000).contains(&age), "{what}: age {age} ms");
    }
    assert_eq!(execution_stale.get_ref(), execution_before.get_ref());
    assert_eq!(page_stale.get_ref(), page_before.get_ref());
    assert_eq!(thing_stale.get_ref(), thing_before.get_ref());

    // A question never answered before has nothing to stand in: the error.
    let mut cold = execution("rollout", "fleet-3");
    cold.set_timeout(Duration::from_secs(2));
    let status = client.describe_job_execution(cold).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(error_info_reason(&status), "UPSTREAM_UNAVAILABLE");

    // A caller may refuse stale answers.
    let mut strict = execution("rollout", "fleet-2");
    strict
        .metadata_mut()
        .insert("cache-control", "max-stale=0".parse().unwrap());
    strict.set_timeout(Duration::from_secs(2));
    let status = client.describe_job_execution(strict).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// The pages of a StreamJobExecutionsForJob call, then how it ended.
async fn listed_until_the_end(
    client: &mut Client,
    job_id: &str,
    after_first: impl FnOnce(),
) -> (
    Vec<pb::StreamJobExecutionsForJobResponse>,
    Result<(), tonic::Status>,
) {
    let request = pb::StreamJobExecutionsForJobRequest {
        job_id: job_id.to_owned(),
        status: None,
    };
    let mut stream = client
        .stream_job_executions_for_job(request)
        .await
        .unwrap()
        .into_inner();
    let mut pages = Vec::new();
    let mut after_first = Some(after_first);
    loop {
        match stream.message().await {
            Ok(Some(page)) => {
                pages.push(page);
                if let Some(then) = after_first.take() {
                    then();
                }
            }
            Ok(None) => return (pages, Ok(())),
            Err(status) => return (pages, Err(status)),
        }
    }
}

#[tokio::test]
async fn a_whole_listing_broken_off_by_aws_ends_with_the_error_after_its_pages() {
    use iot_jobs_gateway::upstream::Operation as _;
    use iot_jobs_gateway::{domain::limit::LimiterSettings, upstream::ListJobExecutionsForJob};
    let sim = crate::executions::thousand_thing_fleet().await;
    // One page a second: AWS breaks down after the first page, before
    // the second is asked for.
    let gw = TestGateway::aws_edited(&sim.url, |jobs| {
        jobs.operation_limiters.insert(
            ListJobExecutionsForJob::NAME,
            LimiterSettings {
                rate: 1.0,
                burst: 1,
                ..jobs.limiter.clone()
            },
        );
        jobs.operation_timeout = Duration::from_secs(3);
    })
    .await;
    let mut client = gw.client.clone();

    let broken = sim.sim.clone();
    let (pages, end) = listed_until_the_end(&mut client, "big-rollout", move || {
        broken.inject(always(
            AwsOperation::ListJobExecutionsForJob,
            Fault::ServiceUnavailableException,
        ));
    })
    .await;

    assert_eq!(pages.len(), 1, "the page AWS gave");
    assert_eq!(pages[0].page, Some(0));
    assert_eq!(pages[0].execution_summaries.len(), 250);
    let status = end.expect_err("the listing ends with AWS's error, not OK");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(error_info_reason(&status), "UPSTREAM_UNAVAILABLE");

    // The failed listing is not kept: once AWS is back, a listing is
    // walked again and whole (its first page from the page cache).
    sim.sim.clear_faults();
    let before = sim.sim.stats().list_job_executions_for_job_calls;
    let (pages, end) = listed_until_the_end(&mut client, "big-rollout", || {}).await;
    end.unwrap();
    assert_eq!(pages.len(), 4);
    assert_eq!(
        pages.iter().map(|p| p.page).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2), Some(3)]
    );
    let asked = sim.sim.stats().list_job_executions_for_job_calls - before;
    assert!((3..=4).contains(&asked), "{asked} pages asked again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_replicas_answer_executions_alone_and_share_them_again_when_it_is_back() {
    let mut redis = RedisServer::start().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let url = redis.url();
    let flags = ["--redis-url", url.as_str(), "--cache-ttl", "60s"];
    let a = GatewayProcess::serve(&sim.url, &flags, "replica-a").await;
    let b = GatewayProcess::serve(&sim.url, &flags, "replica-b").await;
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);

    // Shared: a question asked on one replica is a hit on the other.
    on_a.describe_job_execution(execution("rollout", "fleet-1"))
        .await
        .unwrap();
    on_a.list_job_executions_for_job(page("rollout", 4))
        .await
        .unwrap();
    let shared = on_b
        .describe_job_execution(execution("rollout", "fleet-1"))
        .await
        .unwrap();
    assert_eq!(header(&shared, "x-cache"), "hit");
    let shared = on_b
        .list_job_executions_for_job(page("rollout", 4))
        .await
        .unwrap();
    assert_eq!(header(&shared, "x-cache"), "hit");
    assert_eq!(sim.sim.stats().describe_job_execution_calls, 1);
    assert_eq!(sim.sim.stats().list_job_executions_for_job_calls, 1);

    redis.kill().await;
    // Each replica answers from what it holds, and asks AWS itself for
    // what it does not.
    for client in [&mut on_a, &mut on_b] {
        let held = client
            .describe_job_execution(execution("rollout", "fleet-1"))
            .await
            .unwrap();
        assert_eq!(header(&held, "x-cache"), "hit");
        let alone = client
            .describe_job_execution(execution("rollout", "fleet-2"))
            .await
            .unwrap();
        assert_eq!(header(&alone, "x-cache"), "miss");
        let alone = client
            .list_job_executions_for_thing(thing_page("fleet-2"))
            .await
            .unwrap();
        assert_eq!(header(&alone, "x-cache"), "miss");
    }
    let stats = sim.sim.stats();
    assert_eq!(stats.describe_job_execution_calls, 1 + 2, "one per replica");
    assert_eq!(stats.list_job_executions_for_thing_calls, 2);
    for replica in [&a, &b] {
        assert!(replica.logged("Redis is unreachable"));
    }

    redis.restart().await;
    let back = tokio::time::Instant::now() + Duration::from_secs(15);
    while ![&a, &b].iter().all(|r| r.logged("Redis is back")) {
        assert!(tokio::time::Instant::now() < back, "the replicas rejoin");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Shared again: one AWS call for the set per question.
    on_a.describe_job_execution(execution("rollout", "fleet-5"))
        .await
        .unwrap();
    let again = on_b
        .describe_job_execution(execution("rollout", "fleet-5"))
        .await
        .unwrap();
    assert_eq!(header(&again, "x-cache"), "hit");
    on_a.list_job_executions_for_thing(thing_page("fleet-5"))
        .await
        .unwrap();
    let again = on_b
        .list_job_executions_for_thing(thing_page("fleet-5"))
        .await
        .unwrap();
    assert_eq!(header(&again, "x-cache"), "hit");
    let stats = sim.sim.stats();
    assert_eq!(stats.describe_job_execution_calls, 3 + 1);
    assert_eq!(stats.list_job_executions_for_thing_calls, 2 + 1);
}
