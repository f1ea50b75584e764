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
        support::assert_violation(&status, field, says);
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

fn page(
    job_id: &str,
    status: Option<pb::job_execution::Status>,
    max_results: Option<i32>,
    next_token: Option<String>,
) -> tonic::Request<pb::ListJobExecutionsForJobRequest> {
    tonic::Request::new(pb::ListJobExecutionsForJobRequest {
        job_id: job_id.to_owned(),
        status: status.map(|s| s as i32),
        max_results,
        next_token,
    })
}

fn page_json(response: &pb::ListJobExecutionsForJobResponse) -> serde_json::Value {
    let json = message_json(response, "ListJobExecutionsForJobResponse");
    // Unknown values sit inside each summary; none are expected here.
    for summary in json["executionSummaries"].as_array().into_iter().flatten() {
        assert!(
            summary["jobExecutionSummary"]
                .get("unrecognizedValues")
                .is_none()
        );
    }
    json
}

/// boto3's list_job_executions_for_job from `endpoint` with `params`.
async fn boto3_page(endpoint: &str, params: serde_json::Value) -> serde_json::Value {
    let tools = tools().await;
    let endpoint = endpoint.to_owned();
    blocking(move || tools.boto3_call(&endpoint, REGION, "list_job_executions_for_job", &params))
        .await
}

fn things_of(page: &pb::ListJobExecutionsForJobResponse) -> Vec<String> {
    page.execution_summaries
        .iter()
        .map(|s| {
            let arn = s.thing_arn.as_deref().unwrap();
            arn.rsplit('/').next().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn pages_of_three_add_up_to_the_whole_listing_as_boto3_reads_it() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let mut gw = TestGateway::aws(&sim.url).await;

    let mut things = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let answer = gw
            .client
            .list_job_executions_for_job(page("rollout", None, Some(3), token.clone()))
            .await
            .unwrap()
            .into_inner();
        let mut params = json!({"jobId": "rollout", "maxResults": 3});
        if let Some(token) = &token {
            params["nextToken"] = json!(token);
        }
        let reference = boto3_page(&sim.url, params).await;
        assert_eq!(
            json_differences(&page_json(&answer), &reference),
            Vec::<String>::new(),
            "page {pages}"
        );
        pages += 1;
        assert!(answer.execution_summaries.len() <= 3);
        things.extend(things_of(&answer));
        match answer.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(pages < 10, "the listing never ended");
    }
    let every: Vec<String> = (1..=10).map(|n| format!("fleet-{n}")).collect();
    assert_eq!(things, every);
    assert_eq!(pages, 4);
    assert_eq!(
        sim.sim.stats().list_job_executions_for_job_calls,
        4 + 4,
        "and boto3's"
    );

    // The same first page again is the cache's, not AWS's.
    let again = gw
        .client
        .list_job_executions_for_job(page("rollout", None, Some(3), None))
        .await
        .unwrap();
    assert_eq!(header(&again, "x-cache"), "hit");
    assert_eq!(sim.sim.stats().list_job_executions_for_job_calls, 8);
}

#[tokio::test]
async fn a_status_filter_lists_only_executions_in_that_status() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    sim.advance(Duration::from_secs(7));
    let mut gw = TestGateway::aws(&sim.url).await;

    let listed = |status| {
        let mut client = gw.client.clone();
        async move {
            client
                .list_job_executions_for_job(page("rollout", Some(status), None, None))
                .await
                .unwrap()
                .into_inner()
        }
    };
    use pb::job_execution::Status::*;
    let succeeded = listed(Succeeded).await;
    assert_eq!(things_of(&succeeded), ["fleet-1", "fleet-2", "fleet-3"]);
    assert!(
        succeeded.execution_summaries.iter().all(|s| s
            .job_execution_summary
            .as_ref()
            .unwrap()
            .status()
            == Succeeded)
    );
    assert_eq!(things_of(&listed(Queued).await), ["fleet-9", "fleet-10"]);
    assert_eq!(listed(InProgress).await.execution_summaries.len(), 5);
    assert!(listed(Failed).await.execution_summaries.is_empty());
    let reference = boto3_page(&sim.url, json!({"jobId": "rollout", "status": "SUCCEEDED"})).await;
    assert_eq!(
        json_differences(&page_json(&succeeded), &reference),
        Vec::<String>::new()
    );

    let missing = gw
        .client
        .list_job_executions_for_job(page("no-such-job", None, None, None))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
}

#[tokio::test]
async fn bad_listing_questions_are_refused_before_aws() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let mut gw = TestGateway::aws(&sim.url).await;

    let mut unknown_status = page("rollout", None, None, None);
    unknown_status.get_mut().status = Some(42);
    for (request, field, says) in [
        (
            page("rollout", None, Some(0), None),
            "max_results",
            "1 to 250",
        ),
        (
            page("rollout", None, Some(251), None),
            "max_results",
            "is 251",
        ),
        (
            page("rollout", None, None, Some(String::new())),
            "next_token",
            "empty",
        ),
        (unknown_status, "status", "not an execution status"),
        (page("", None, None, None), "job_id", "required"),
    ] {
        let status = gw
            .client
            .list_job_executions_for_job(request)
            .await
            .unwrap_err();
        support::assert_violation(&status, field, says);
    }
    assert_eq!(sim.sim.stats().list_job_executions_for_job_calls, 0);
}

#[tokio::test]
async fn a_moto_listing_matches_boto3_field_for_field() {
    let tools = tools().await;
    let moto = tools.moto();
    let sdk = iot_client(&moto.url);
    let mut targets = Vec::new();
    for n in 1..=3 {
        let name = format!("valve-{n}");
        sdk.create_thing().thing_name(&name).send().await.unwrap();
        targets.push(format!("arn:aws:iot:{REGION}:123456789012:thing/{name}"));
    }
    sdk.create_job()
        .job_id("valves")
        .set_targets(Some(targets))
        .document("{}")
        .send()
        .await
        .unwrap();
    let mut gw = TestGateway::aws(&moto.url).await;

    let answer = gw
        .client
        .list_job_executions_for_job(page("valves", None, None, None))
        .await
        .unwrap()
        .into_inner();
    let reference = boto3_page(&moto.url, json!({"jobId": "valves"})).await;

    assert_eq!(
        json_differences(&page_json(&answer), &reference),
        Vec::<String>::new()
    );
    assert_eq!(answer.execution_summaries.len(), 3);
}

/// Three replicas on one Redis: the new operations' questions cost the set
/// one AWS call each, and each operation's bucket is its own in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_each_operations_answers_and_keep_its_bucket_apart() {
    use redis::AsyncCommands as _;
    use support::{process::GatewayProcess, redis::RedisServer};

    let redis = RedisServer::start().await;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let url = redis.url();
    let mut clients = Vec::new();
    let mut set = Vec::new();
    for _ in 0..3 {
        let replica =
            GatewayProcess::serve(&sim.url, &["--redis-url", url.as_str()], "replica").await;
        clients.push(replica.client().await);
        set.push(replica);
    }

    let calls = (0..90).map(|i| {
        let mut client = clients[i % 3].clone();
        async move {
            if i % 2 == 0 {
                let answer = client
                    .describe_job_execution(execution("rollout", "fleet-4"))
                    .await
                    .unwrap();
                header(&answer, "x-cache")
            } else {
                let answer = client
                    .list_job_executions_for_job(page("rollout", None, Some(5), None))
                    .await
                    .unwrap();
                assert_eq!(answer.get_ref().execution_summaries.len(), 5);
                header(&answer, "x-cache")
            }
        }
    });
    let sources = join_all(calls).await;

    let stats = sim.sim.stats();
    assert_eq!(stats.describe_job_execution_calls, 1, "{sources:?}");
    assert_eq!(stats.list_job_executions_for_job_calls, 1, "{sources:?}");
    assert_eq!(
        sources.iter().filter(|s| *s == "miss").count(),
        2,
        "{sources:?}"
    );
    let mut conn = redis.client().await;
    for bucket in ["execution:limit", "job-executions:limit"] {
        let key = format!("{{iot-jobs-gateway}}:{bucket}");
        let exists: bool = conn.exists(&key).await.unwrap();
        assert!(exists, "{key}: each operation's bucket is its own");
    }
    let describe_job_bucket: bool = conn.exists("{iot-jobs-gateway}:limit").await.unwrap();
    assert!(!describe_job_bucket, "DescribeJob's bucket was not spent");
    drop(set);
}

#[tokio::test]
async fn a_batch_of_executions_answers_each_item_in_order_and_asks_aws_once_per_question() {
    use pb::job_execution_result::Outcome;
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let mut gw = TestGateway::aws(&sim.url).await;

    let item = |thing: &str| execution("rollout", thing).into_inner();
    let requests = vec![
        item("fleet-1"),
        item("fleet/2"),
        item("stranger"),
        item("fleet-1"),
        item("fleet-3"),
    ];
    let results = gw
        .client
        .batch_describe_job_executions(pb::BatchDescribeJobExecutionsRequest { requests })
        .await
        .unwrap()
        .into_inner()
        .results;

    assert_eq!(results.len(), 5);
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result.index, Some(index as u32));
        assert_eq!(result.job_id, "rollout");
    }
    let things: Vec<&str> = results.iter().map(|r| r.thing_name.as_str()).collect();
    assert_eq!(
        things,
        ["fleet-1", "fleet/2", "stranger", "fleet-1", "fleet-3"]
    );
    let Some(Outcome::Error(bad)) = &results[1].outcome else {
        panic!("{:?}", results[1])
    };
    assert_eq!(bad.code, Code::InvalidArgument as i32);
    assert!(
        bad.message.contains("requests[1].thing_name"),
        "{}",
        bad.message
    );
    let Some(Outcome::Error(missing)) = &results[2].outcome else {
        panic!("{:?}", results[2])
    };
    assert_eq!(missing.code, Code::NotFound as i32, "{}", missing.message);
    let (Some(Outcome::Response(first)), Some(Outcome::Response(again))) =
        (&results[0].outcome, &results[3].outcome)
    else {
        panic!("{results:?}")
    };
    assert_eq!(first, again, "the repeated item is the same answer");
    assert!(results[0].cache.is_some());
    assert_eq!(
        sim.sim.stats().describe_job_execution_calls,
        3,
        "fleet-1 once, stranger, fleet-3; the bad item never reached AWS"
    );

    // Each item is what DescribeJobExecution answers (from the cache now).
    let single = gw
        .client
        .describe_job_execution(execution("rollout", "fleet-3"))
        .await
        .unwrap();
    assert_eq!(header(&single, "x-cache"), "hit");
    let Some(Outcome::Response(third)) = &results[4].outcome else {
        panic!("{:?}", results[4])
    };
    assert_eq!(single.get_ref(), third);

    let empty = gw
        .client
        .batch_describe_job_executions(pb::BatchDescribeJobExecutionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(
        empty.message().contains("DescribeJobExecution requests"),
        "{}",
        empty.message()
    );
    assert_eq!(sim.sim.stats().describe_job_execution_calls, 3);
}

/// A simulator whose fleet group holds 1,000 things.
pub(crate) async fn thousand_thing_fleet() -> TestSim {
    let sim = TestSim::start(iot_jobs_gateway::simulator::SimConfig {
        describe_rate_limit: None,
        group_size: 1000,
        ..Default::default()
    })
    .await;
    create_fleet_job(&sim, "big-rollout").await;
    sim
}

fn whole(job_id: &str) -> pb::StreamJobExecutionsForJobRequest {
    pb::StreamJobExecutionsForJobRequest {
        job_id: job_id.to_owned(),
        status: None,
    }
}

/// Every page a StreamJobExecutionsForJob call sends, until it ends.
async fn listed_whole(
    mut client: pb::jobs_gateway_client::JobsGatewayClient<tonic::transport::Channel>,
    request: pb::StreamJobExecutionsForJobRequest,
    first_page: Option<tokio::sync::oneshot::Sender<()>>,
) -> Vec<pb::StreamJobExecutionsForJobResponse> {
    let mut stream = client
        .stream_job_executions_for_job(request)
        .await
        .unwrap()
        .into_inner();
    let mut pages = Vec::new();
    let mut first_page = first_page;
    while let Some(page) = stream.message().await.unwrap() {
        pages.push(page);
        if let Some(tx) = first_page.take() {
            let _ = tx.send(());
        }
    }
    pages
}

#[tokio::test]
async fn a_whole_listing_is_every_page_as_boto3_pages_it() {
    let sim = thousand_thing_fleet().await;
    let gw = TestGateway::aws(&sim.url).await;

    let pages = listed_whole(gw.client.clone(), whole("big-rollout"), None).await;

    assert_eq!(pages.len(), 4, "1,000 things in pages of 250");
    let mut token: Option<String> = None;
    let mut things = Vec::new();
    for (index, page) in pages.iter().enumerate() {
        assert_eq!(page.page, Some(index as u32));
        let mut params = json!({"jobId": "big-rollout", "maxResults": 250});
        if let Some(token) = &token {
            params["nextToken"] = json!(token);
        }
        let reference = boto3_page(&sim.url, params).await;
        let as_page = pb::ListJobExecutionsForJobResponse {
            execution_summaries: page.execution_summaries.clone(),
            next_token: reference["nextToken"].as_str().map(str::to_owned),
        };
        assert_eq!(
            json_differences(&page_json(&as_page), &reference),
            Vec::<String>::new(),
            "page {index}"
        );
        token = reference["nextToken"].as_str().map(str::to_owned);
        things.extend(things_of(&as_page));
    }
    assert!(token.is_none(), "boto3 saw the same end");
    let every: Vec<String> = (1..=1000).map(|n| format!("fleet-{n}")).collect();
    assert_eq!(things, every);
    assert_eq!(
        sim.sim.stats().list_job_executions_for_job_calls,
        4 + 4,
        "the gateway's 4 pages and boto3's"
    );

    // Filtered by status: only those, as AWS filters them.
    sim.advance(Duration::from_secs(5));
    let request = pb::StreamJobExecutionsForJobRequest {
        status: Some(pb::job_execution::Status::Succeeded as i32),
        ..whole("big-rollout")
    };
    let succeeded = listed_whole(gw.client.clone(), request, None).await;
    let summaries: Vec<_> = succeeded
        .iter()
        .flat_map(|p| &p.execution_summaries)
        .collect();
    assert!(!summaries.is_empty());
    assert!(summaries.iter().all(|s| {
        s.job_execution_summary.as_ref().unwrap().status() == pb::job_execution::Status::Succeeded
    }));

    let mut client = gw.client.clone();
    let bad = client
        .stream_job_executions_for_job(pb::StreamJobExecutionsForJobRequest {
            status: Some(42),
            ..whole("big-rollout")
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let missing = listed_stream_error(&mut client, whole("no-such-job")).await;
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
}

async fn listed_stream_error(
    client: &mut pb::jobs_gateway_client::JobsGatewayClient<tonic::transport::Channel>,
    request: pb::StreamJobExecutionsForJobRequest,
) -> tonic::Status {
    match client.stream_job_executions_for_job(request).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Err(status) => return status,
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the listing ended without an error"),
                }
            }
        }
    }
}

/// Ten clients listing a 1,000-thing job together, nine of them joining
/// after the first page arrived (the listing's bucket lets 2 pages a
/// second through): AWS is asked for each page once, and each client gets
/// the whole listing.
#[tokio::test]
async fn ten_clients_listing_a_job_at_once_cost_aws_its_pages_once() {
    use iot_jobs_gateway::upstream::ListJobExecutionsForJob;
    let sim = thousand_thing_fleet().await;
    let gw = TestGateway::aws_edited(&sim.url, |jobs| {
        jobs.operation_limiters.insert(
            ListJobExecutionsForJob::NAME,
            LimiterSettings {
                rate: 2.0,
                burst: 1,
                ..jobs.limiter.clone()
            },
        );
    })
    .await;

    let (tx, rx) = tokio::sync::oneshot::channel();
    let first = tokio::spawn(listed_whole(
        gw.client.clone(),
        whole("big-rollout"),
        Some(tx),
    ));
    rx.await.unwrap();
    let joined_at = sim.sim.stats().list_job_executions_for_job_calls;
    assert!(joined_at < 4, "the others join a listing in progress");
    let others =
        join_all((0..9).map(|_| listed_whole(gw.client.clone(), whole("big-rollout"), None))).await;
    let first = first.await.unwrap();

    assert_eq!(first.len(), 4);
    for pages in &others {
        assert_eq!(pages, &first, "every client gets the same whole listing");
    }
    assert_eq!(
        sim.sim.stats().list_job_executions_for_job_calls,
        4,
        "ten listings, each page asked once"
    );

    // Soon after, a listing is the kept one: no AWS call.
    let again = listed_whole(gw.client.clone(), whole("big-rollout"), None).await;
    assert_eq!(again, first);
    assert_eq!(sim.sim.stats().list_job_executions_for_job_calls, 4);
}

/// Three replicas on one Redis, three clients each listing the same
/// 1,000-thing job at once: the set asks AWS for each page once (each page
/// question is coalesced and cached across the set, and the pages carry
/// the same tokens), and every client gets the whole listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_listing_a_job_at_once_cost_aws_its_pages_once() {
    use support::{process::GatewayProcess, redis::RedisServer};

    let redis = RedisServer::start().await;
    let sim = thousand_thing_fleet().await;
    let url = redis.url();
    let mut set = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let replica =
            GatewayProcess::serve(&sim.url, &["--redis-url", url.as_str()], "replica").await;
        clients.push(replica.client().await);
        set.push(replica);
    }

    let listings =
        join_all((0..9).map(|i| listed_whole(clients[i % 3].clone(), whole("big-rollout"), None)))
            .await;

    let things: Vec<String> = listings[0]
        .iter()
        .flat_map(|page| &page.execution_summaries)
        .map(|summary| summary.thing_arn().rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(things.len(), 1000, "the whole listing");
    for pages in &listings {
        assert_eq!(pages, &listings[0], "every client gets the same listing");
    }
    assert_eq!(
        sim.sim.stats().list_job_executions_for_job_calls,
        4,
        "nine listings over three replicas, each page asked once"
    );
    drop(set);
}
