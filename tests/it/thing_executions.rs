//! ListJobExecutionsForThing through the gateway: a thing's executions
//! across jobs, page by page, field for field as boto3 reads the simulator
//! and moto; filters; bad input at zero AWS calls; its own budget; and the
//! policy's job and thing globs on every executions RPC.

use crate::support;

use std::time::Duration;

use iot_jobs_gateway::{
    domain::limit::LimiterSettings,
    pb,
    upstream::{ListJobExecutionsForThing, Operation as _},
};
use serde_json::json;
use support::{
    GatewayOptions, REGION, TestGateway, error_info_reason, header, iot_client, message_json,
    python::{json_differences, tools},
    sim::{TestSim, create_fleet_job},
};
use tonic::Code;
use tonic_types::StatusExt as _;

fn page(thing: &str) -> pb::ListJobExecutionsForThingRequest {
    pb::ListJobExecutionsForThingRequest {
        thing_name: thing.to_owned(),
        ..Default::default()
    }
}

fn page_json(response: &pb::ListJobExecutionsForThingResponse) -> serde_json::Value {
    message_json(response, "ListJobExecutionsForThingResponse")
}

fn jobs_of(page: &pb::ListJobExecutionsForThingResponse) -> Vec<&str> {
    page.execution_summaries
        .iter()
        .map(|s| s.job_id.as_deref().unwrap())
        .collect()
}

/// boto3's list_job_executions_for_thing from `endpoint` with `params`.
async fn boto3_page(endpoint: &str, params: serde_json::Value) -> serde_json::Value {
    let tools = tools().await;
    let endpoint = endpoint.to_owned();
    tokio::task::spawn_blocking(move || {
        tools.boto3_call(&endpoint, REGION, "list_job_executions_for_thing", &params)
    })
    .await
    .unwrap()
}

/// Three rollouts to the fleet, a minute apart: fleet-1 has finished the
/// first two and is running the third.
async fn three_rollouts() -> TestSim {
    let sim = TestSim::unlimited().await;
    for job in ["rollout-a", "rollout-b", "rollout-c"] {
        create_fleet_job(&sim, job).await;
        sim.advance(Duration::from_secs(60));
    }
    create_fleet_job(&sim, "rollout-d").await;
    sim
}

#[tokio::test]
async fn a_things_jobs_page_by_page_match_boto3_field_for_field() {
    let sim = three_rollouts().await;
    let mut gw = TestGateway::aws(&sim.url).await;

    let mut jobs = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let request = pb::ListJobExecutionsForThingRequest {
            max_results: Some(3),
            next_token: token.clone(),
            ..page("fleet-1")
        };
        let answer = gw
            .client
            .list_job_executions_for_thing(request)
            .await
            .unwrap()
            .into_inner();
        let mut params = json!({"thingName": "fleet-1", "maxResults": 3});
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
        jobs.extend(jobs_of(&answer).into_iter().map(str::to_owned));
        match answer.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(pages < 5, "the listing never ended");
    }
    assert_eq!(jobs, ["rollout-a", "rollout-b", "rollout-c", "rollout-d"]);
    assert_eq!(pages, 2);
    assert_eq!(
        sim.sim.stats().list_job_executions_for_thing_calls,
        2 + 2,
        "and boto3's"
    );

    // The same first page again is the cache's, not AWS's.
    let again = gw
        .client
        .list_job_executions_for_thing(pb::ListJobExecutionsForThingRequest {
            max_results: Some(3),
            ..page("fleet-1")
        })
        .await
        .unwrap();
    assert_eq!(header(&again, "x-cache"), "hit");
    assert_eq!(sim.sim.stats().list_job_executions_for_thing_calls, 4);
    assert_eq!(sim.sim.stats().list_job_executions_for_job_calls, 0);
}

#[tokio::test]
async fn status_and_job_filters_narrow_a_things_listing() {
    let sim = three_rollouts().await;
    let mut gw = TestGateway::aws(&sim.url).await;

    use pb::job_execution::Status::*;
    let succeeded = gw
        .client
        .list_job_executions_for_thing(pb::ListJobExecutionsForThingRequest {
            status: Some(Succeeded as i32),
            ..page("fleet-1")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jobs_of(&succeeded), ["rollout-a", "rollout-b", "rollout-c"]);
    let reference = boto3_page(
        &sim.url,
        json!({"thingName": "fleet-1", "status": "SUCCEEDED"}),
    )
    .await;
    assert_eq!(
        json_differences(&page_json(&succeeded), &reference),
        Vec::<String>::new()
    );

    let one_job = gw
        .client
        .list_job_executions_for_thing(pb::ListJobExecutionsForThingRequest {
            job_id: Some("rollout-d".into()),
            ..page("fleet-1")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jobs_of(&one_job), ["rollout-d"]);
    let summary = one_job.execution_summaries[0]
        .job_execution_summary
        .as_ref()
        .unwrap();
    assert_eq!(summary.status(), InProgress);

    // A namespace none of the jobs has, and a thing no job targets: empty
    // pages, as AWS answers them.
    let namespaced = gw
        .client
        .list_job_executions_for_thing(pb::ListJobExecutionsForThingRequest {
            namespace_id: Some("greengrass".into()),
            ..page("fleet-1")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(namespaced.execution_summaries.is_empty());
    let stranger = gw
        .client
        .list_job_executions_for_thing(page("stranger"))
        .await
        .unwrap()
        .into_inner();
    assert!(stranger.execution_summaries.is_empty());
    assert!(stranger.next_token.is_none());
}

#[tokio::test]
async fn a_moto_things_listing_matches_boto3_field_for_field() {
    let tools = tools().await;
    let moto = tools.moto();
    let sdk = iot_client(&moto.url);
    sdk.create_thing()
        .thing_name("valve-1")
        .send()
        .await
        .unwrap();
    for job in ["valves-1", "valves-2"] {
        sdk.create_job()
            .job_id(job)
            .targets(format!("arn:aws:iot:{REGION}:123456789012:thing/valve-1"))
            .document("{}")
            .send()
            .await
            .unwrap();
    }
    let mut gw = TestGateway::aws(&moto.url).await;

    let answer = gw
        .client
        .list_job_executions_for_thing(page("valve-1"))
        .await
        .unwrap()
        .into_inner();
    let reference = boto3_page(&moto.url, json!({"thingName": "valve-1"})).await;

    assert_eq!(
        json_differences(&page_json(&answer), &reference),
        Vec::<String>::new()
    );
    let mut jobs = jobs_of(&answer);
    jobs.sort_unstable();
    assert_eq!(jobs, ["valves-1", "valves-2"]);
}

#[tokio::test]
async fn bad_thing_listing_questions_are_refused_before_aws() {
    let sim = three_rollouts().await;
    let mut gw = TestGateway::aws(&sim.url).await;

    let with = |edit: fn(&mut pb::ListJobExecutionsForThingRequest)| {
        let mut request = page("fleet-1");
        edit(&mut request);
        request
    };
    let cases = [
        (page("fleet/1"), "thing_name", "'/' at position 6"),
        (page(""), "thing_name", "required"),
        (
            with(|r| r.job_id = Some("roll out".into())),
            "job_id",
            "' ' at position 5",
        ),
        (
            with(|r| r.namespace_id = Some("green/grass".into())),
            "namespace_id",
            "'/' at position 6",
        ),
        (
            with(|r| r.namespace_id = Some(String::new())),
            "namespace_id",
            "required",
        ),
        (with(|r| r.max_results = Some(0)), "max_results", "1 to 250"),
        (with(|r| r.max_results = Some(251)), "max_results", "is 251"),
        (
            with(|r| r.next_token = Some(String::new())),
            "next_token",
            "empty",
        ),
        (
            with(|r| r.status = Some(42)),
            "status",
            "not an execution status",
        ),
    ];
    for (request, field, says) in cases {
        let status = gw
            .client
            .list_job_executions_for_thing(request)
            .await
            .unwrap_err();
        support::assert_violation(&status, field, says);
    }
    assert_eq!(sim.sim.stats().list_job_executions_for_thing_calls, 0);
}

#[tokio::test]
async fn a_things_listing_has_its_own_budget_and_its_refusal_names_the_thing() {
    let sim = three_rollouts().await;
    let gw = TestGateway::aws_edited(&sim.url, |jobs| {
        jobs.operation_limiters.insert(
            ListJobExecutionsForThing::NAME,
            LimiterSettings {
                rate: 0.2,
                burst: 1,
                ..jobs.limiter.clone()
            },
        );
    })
    .await;
    let mut client = gw.client.clone();

    client
        .list_job_executions_for_thing(page("fleet-1"))
        .await
        .unwrap();
    let mut late = tonic::Request::new(page("fleet-2"));
    late.set_timeout(Duration::from_secs(1));
    let refused = client
        .list_job_executions_for_thing(late)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(error_info_reason(&refused), "RATE_LIMITED");
    let info = refused.get_details_error_info().unwrap();
    assert_eq!(info.metadata["thingName"], "fleet-2");
    assert!(!info.metadata.contains_key("jobId"));
    assert!(
        refused.message().contains(
            "0.2 ListJobExecutionsForThing calls/s) has no call free for thing \"fleet-2\""
        ),
        "{}",
        refused.message()
    );

    // The job listing's bucket is untouched.
    for _ in 0..3 {
        let mut request = tonic::Request::new(pb::ListJobExecutionsForJobRequest {
            job_id: "rollout-a".into(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(1));
        client
            .list_job_executions_for_job(support::fresh(request))
            .await
            .unwrap();
    }
    assert_eq!(sim.sim.stats().list_job_executions_for_job_calls, 3);
    assert_eq!(sim.sim.stats().list_job_executions_for_thing_calls, 1);
}

/// A caller that may read rollout-a and rollout-b on fleet-1 and fleet-2
/// sees only those, on every executions RPC, and is refused the rest
/// before AWS.
#[tokio::test]
async fn the_policys_job_and_thing_globs_narrow_every_executions_rpc() {
    let sim = three_rollouts().await;
    let dir = support::process::empty_home("thing-globs");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "default:\n  jobs: [\"rollout-a\", \"rollout-b\"]\n  things: [\"fleet-?\"]\n",
    )
    .unwrap();
    let mut options = GatewayOptions::default();
    options.server.auth.policy = Some(policy);
    let mut gw = TestGateway::aws_with(iot_client(&sim.url), options).await;

    // A thing's listing shows only the jobs the caller may read.
    let listed = gw
        .client
        .list_job_executions_for_thing(page("fleet-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jobs_of(&listed), ["rollout-a", "rollout-b"]);

    // A job's listing shows only the things it may read (fleet-10 is not
    // `fleet-?`).
    let by_job = gw
        .client
        .list_job_executions_for_job(pb::ListJobExecutionsForJobRequest {
            job_id: "rollout-a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_job.execution_summaries.len(), 9);
    assert!(
        by_job.execution_summaries.iter().all(|s| !s
            .thing_arn
            .as_deref()
            .unwrap()
            .ends_with("/fleet-10"))
    );
    let calls = sim.sim.stats();

    let denied_thing = gw
        .client
        .list_job_executions_for_thing(page("fleet-10"))
        .await
        .unwrap_err();
    let denied_job = gw
        .client
        .list_job_executions_for_thing(pb::ListJobExecutionsForThingRequest {
            job_id: Some("rollout-c".into()),
            ..page("fleet-1")
        })
        .await
        .unwrap_err();
    let denied_execution = gw
        .client
        .describe_job_execution(pb::DescribeJobExecutionRequest {
            job_id: "rollout-a".into(),
            thing_name: "fleet-10".into(),
            execution_number: None,
        })
        .await
        .unwrap_err();
    for status in [&denied_thing, &denied_job, &denied_execution] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(error_info_reason(status), "CALLER_NOT_PERMITTED");
    }
    assert!(
        denied_thing
            .message()
            .contains("may not read the executions on thing \"fleet-10\""),
        "{}",
        denied_thing.message()
    );
    let info = denied_thing.get_details_error_info().unwrap();
    assert_eq!(info.metadata["thingName"], "fleet-10");
    assert!(
        denied_job
            .message()
            .contains("may not read job \"rollout-c\""),
        "{}",
        denied_job.message()
    );
    let after = sim.sim.stats();
    assert_eq!(
        (
            after.list_job_executions_for_thing_calls,
            after.describe_job_execution_calls
        ),
        (
            calls.list_job_executions_for_thing_calls,
            calls.describe_job_execution_calls
        ),
        "refusals cost AWS nothing"
    );
}
