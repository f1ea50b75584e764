//! How the gateway protects AWS, seen from gRPC clients over real sockets
//! with the real SDK speaking HTTP to a fake AWS (or the simulator):
//! identical questions share one AWS call, answers are cached and say so,
//! every AWS call waits for the shared rate limit only when it can, AWS
//! throttling lowers the gateway's own rate, and batches answer item by
//! item in request order.

use crate::support;

use std::time::Duration;

use iot_jobs_gateway::{
    pb::{self, job_result::Outcome},
    simulator::SimConfig,
};
use serde_json::Value;
use support::{
    TestGateway, describe, error_info_reason,
    fake_aws::{FakeAws, Reply, full_job},
    fresh, header,
    sim::TestSim,
};
use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A gateway allowing `rate` AWS calls/s, burst 1, whose one token was just
/// spent on job "a"; job "b" exists too.
async fn spent_bucket(rate: f64) -> (FakeAws, TestGateway) {
    let fake = FakeAws::start().await;
    fake.reply("a", job("a", "IN_PROGRESS"));
    fake.reply("b", job("b", "IN_PROGRESS"));
    let gw = TestGateway::aws_edited(&fake.url, |jobs| {
        jobs.limiter.rate = rate;
        jobs.limiter.burst = 1;
    })
    .await;
    gw.client
        .clone()
        .describe_job(describe("a", None))
        .await
        .unwrap();
    (fake, gw)
}

fn job(job_id: &str, status: &str) -> Reply {
    let mut body = full_job(job_id);
    body["job"]["status"] = Value::from(status);
    Reply::Job(body)
}

/// Calls DescribeJob `n` times at once; returns each call's `x-cache`
/// header or error.
async fn concurrent(
    gw: &TestGateway,
    job_id: &str,
    n: usize,
    fresh_answers: bool,
) -> Vec<Result<String, Status>> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let mut client = gw.client.clone();
            let mut request = describe(job_id, None);
            if fresh_answers {
                request = fresh(request);
            }
            tokio::spawn(async move {
                let response = client.describe_job(request).await?;
                let job = response.get_ref().job.as_ref().expect("a job");
                assert_eq!(job.job_id(), "j");
                Ok(header(&response, "x-cache"))
            })
        })
        .collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

fn count(results: &[Result<String, Status>], source: &str) -> usize {
    results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|s| s == source))
        .count()
}

#[tokio::test]
async fn concurrent_identical_calls_cost_one_aws_call_and_all_get_the_answer() {
    let fake = FakeAws::start().await;
    fake.reply(
        "j",
        Reply::slow(Duration::from_millis(300), job("j", "IN_PROGRESS")),
    );
    let gw = TestGateway::aws(&fake.url).await;

    let results = concurrent(&gw, "j", 50, false).await;

    assert_eq!(fake.calls(), 1, "one AWS call for 50 identical questions");
    assert_eq!(count(&results, "miss"), 1, "{results:?}");
    assert_eq!(count(&results, "coalesced"), 49, "{results:?}");

    // Later callers get the cached answer, and are told how old it is.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut client = gw.client.clone();
    let response = client.describe_job(describe("j", None)).await.unwrap();
    assert_eq!(header(&response, "x-cache"), "hit");
    let age: u64 = header(&response, "x-cache-age-ms").parse().unwrap();
    assert!((50..5000).contains(&age), "age {age} ms");
    assert_eq!(fake.calls(), 1);

    // before_substitution is part of the question: a different answer.
    let mut request = describe("j", None);
    request.get_mut().before_substitution = Some(true);
    let response = client.describe_job(request).await.unwrap();
    assert_eq!(header(&response, "x-cache"), "miss");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn a_shared_failure_reaches_every_waiter_and_is_not_cached() {
    let fake = FakeAws::start().await;
    fake.reply(
        "j",
        Reply::slow(
            Duration::from_millis(300),
            Reply::error(503, "ServiceUnavailableException", "Service unavailable"),
        ),
    );
    let gw = TestGateway::aws_edited(&fake.url, |jobs| jobs.retry.max_attempts = 1).await;

    let results = concurrent(&gw, "j", 20, false).await;
    assert_eq!(fake.calls(), 1);
    for result in &results {
        assert_eq!(result.as_ref().unwrap_err().code(), Code::Unavailable);
    }

    let again = concurrent(&gw, "j", 1, false).await;
    assert_eq!(again[0].as_ref().unwrap_err().code(), Code::Unavailable);
    assert_eq!(fake.calls(), 2, "a failure is not served from cache");
}

#[tokio::test]
async fn a_missing_job_is_remembered_briefly() {
    let fake = FakeAws::start().await;
    let gw = TestGateway::aws_edited(&fake.url, |jobs| {
        jobs.cache.not_found_ttl = Duration::from_millis(300)
    })
    .await;
    let mut client = gw.client.clone();

    for _ in 0..3 {
        let status = client
            .describe_job(describe("ghost", None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(error_info_reason(&status), "JOB_NOT_FOUND");
    }
    assert_eq!(fake.calls(), 1);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = client
        .describe_job(describe("ghost", None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        fake.calls(),
        2,
        "asked AWS again once the negative entry expired"
    );
}

#[tokio::test]
async fn terminal_jobs_stay_cached_longer_than_active_ones() {
    let fake = FakeAws::start().await;
    fake.reply("done", job("done", "COMPLETED"));
    fake.reply("busy", job("busy", "IN_PROGRESS"));
    let gw = TestGateway::aws_edited(&fake.url, |jobs| {
        jobs.cache.ttl = Duration::from_millis(200);
        jobs.cache.terminal_ttl = Duration::from_secs(30);
    })
    .await;
    let mut client = gw.client.clone();
    for id in ["done", "busy"] {
        client.describe_job(describe(id, None)).await.unwrap();
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = client.describe_job(describe("done", None)).await.unwrap();
    let busy = client.describe_job(describe("busy", None)).await.unwrap();

    assert_eq!(header(&done, "x-cache"), "hit");
    assert_eq!(header(&busy, "x-cache"), "miss");
    assert_eq!((fake.calls_for("done"), fake.calls_for("busy")), (1, 2));
}

#[tokio::test]
async fn a_fresh_request_skips_the_cache_but_still_shares_aws_calls() {
    let fake = FakeAws::start().await;
    fake.reply(
        "j",
        Reply::slow(Duration::from_millis(200), job("j", "IN_PROGRESS")),
    );
    let gw = TestGateway::aws(&fake.url).await;
    concurrent(&gw, "j", 1, false).await;
    assert_eq!(fake.calls(), 1);

    let results = concurrent(&gw, "j", 20, true).await;

    assert_eq!(
        fake.calls(),
        2,
        "20 fresh requests arriving together share one new AWS call"
    );
    assert_eq!(count(&results, "miss"), 1, "{results:?}");
    assert_eq!(count(&results, "coalesced"), 19, "{results:?}");
}

#[tokio::test]
async fn a_call_waits_for_a_rate_limit_token_due_before_its_deadline() {
    let (fake, gw) = spent_bucket(2.0).await;
    let mut client = gw.client.clone();

    let started = Instant::now();
    let response = client
        .describe_job(describe("b", Some(Duration::from_secs(2))))
        .await
        .unwrap();

    assert_eq!(response.get_ref().job.as_ref().unwrap().job_id(), "b");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "waited only {waited:?} for a 2/s limit"
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn a_call_whose_token_comes_after_its_deadline_fails_at_once_without_calling_aws() {
    let (fake, gw) = spent_bucket(0.5).await;
    let mut client = gw.client.clone();

    let started = Instant::now();
    let status = client
        .describe_job(describe("b", Some(Duration::from_secs(1))))
        .await
        .unwrap_err();

    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "RATE_LIMITED");
    assert_eq!(info.metadata["ratePerSecond"], "0.5");
    let retry = status
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(
        (Duration::from_millis(1000)..=Duration::from_secs(2)).contains(&retry),
        "retry after {retry:?}"
    );
    assert!(
        status.message().contains("retry after"),
        "{}",
        status.message()
    );
    assert_eq!(fake.calls_for("b"), 0, "AWS was not called");
}

#[tokio::test]
async fn aws_throttling_lowers_the_gateways_rate_until_aws_is_quiet() {
    // AWS allows 4 calls/s; the gateway believes it may make 20.
    let sim = TestSim::start(SimConfig {
        describe_rate_limit: Some(4),
        ..SimConfig::default()
    })
    .await;
    let gw = TestGateway::aws_edited(&sim.url, |jobs| {
        jobs.limiter.rate = 20.0;
        jobs.limiter.burst = 5;
        jobs.retry.max_attempts = 1;
    })
    .await;

    // Eight clients ask about distinct jobs, as fast as the gateway lets them.
    let run_until = Instant::now() + Duration::from_secs(5);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let mut client = gw.client.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while Instant::now() < run_until {
                    i += 1;
                    let request = describe(&format!("job-{c}-{i}"), Some(Duration::from_secs(1)));
                    let _ = client.describe_job(request).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let early = sim.sim.stats();
    let rate_after_backoff = gw.jobs.limiter().current_rate();
    for client in clients {
        client.await.unwrap();
    }
    let late = sim.sim.stats();

    assert!(
        early.throttled > 0,
        "the simulator throttled the 20/s gateway"
    );
    // Near AWS's 4/s by now (the rate moves: it probes upwards slowly, and
    // a throttle lowers it again), far from the 20/s it was set to.
    assert!(
        rate_after_backoff <= 8.0,
        "rate lowered to {rate_after_backoff}/s"
    );
    let late_throttled = late.throttled - early.throttled;
    let late_calls = late.describe_job_calls - early.describe_job_calls;
    // Without back-off the gateway would be throttled ~16 times a second.
    assert!(
        late_throttled <= 4,
        "{late_throttled} throttles in the last 2 s ({late:?})"
    );
    // AWS takes 4/s (a bucket of 4): at most 12 in 2 s, plus the throttled.
    assert!(
        (4..=16).contains(&late_calls),
        "kept calling AWS at its rate: {late_calls} calls in the last 2 s"
    );
    assert!(gw.jobs.limiter().current_rate() < 20.0);
}

fn batch(items: &[(&str, Option<bool>)]) -> pb::BatchDescribeJobsRequest {
    pb::BatchDescribeJobsRequest {
        requests: items
            .iter()
            .map(|(id, before)| pb::DescribeJobRequest {
                job_id: (*id).to_owned(),
                before_substitution: *before,
            })
            .collect(),
    }
}

/// The same items, asked for as a stream.
fn streamed(items: &[(&str, Option<bool>)]) -> pb::StreamDescribeJobsRequest {
    pb::StreamDescribeJobsRequest {
        requests: batch(items).requests,
    }
}

/// An item's error as the tonic::Status a unary call would have returned.
fn item_status(result: &pb::JobResult) -> Status {
    use prost::Message;
    match &result.outcome {
        Some(Outcome::Error(status)) => Status::with_details(
            Code::from(status.code),
            status.message.clone(),
            status.encode_to_vec().into(),
        ),
        other => panic!("item {} is not an error: {other:?}", result.index()),
    }
}

fn item_job_id(result: &pb::JobResult) -> &str {
    match &result.outcome {
        Some(Outcome::Response(response)) => response.job.as_ref().unwrap().job_id(),
        other => panic!("item {} is not a job: {other:?}", result.index()),
    }
}

#[tokio::test]
async fn a_batch_answers_every_item_in_request_order_and_one_failure_fails_only_its_item() {
    let fake = FakeAws::start().await;
    // a answers last, so completion order differs from request order.
    fake.reply(
        "a",
        Reply::slow(Duration::from_millis(300), job("a", "IN_PROGRESS")),
    );
    fake.reply("b", job("b", "COMPLETED"));
    let mut gw = TestGateway::aws(&fake.url).await;

    let request = batch(&[
        ("a", None),
        ("not a job id!", None),
        ("ghost", None),
        ("b", None),
        ("a", None),
        ("a", Some(true)),
    ]);
    let results = gw
        .client
        .batch_describe_jobs(request)
        .await
        .unwrap()
        .into_inner()
        .results;

    let indices: Vec<u32> = results.iter().map(|r| r.index()).collect();
    assert_eq!(indices, [0, 1, 2, 3, 4, 5]);
    let ids: Vec<&str> = results.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!(ids, ["a", "not a job id!", "ghost", "b", "a", "a"]);
    assert_eq!(item_job_id(&results[0]), "a");
    assert_eq!(item_job_id(&results[3]), "b");
    assert_eq!(item_job_id(&results[4]), "a");
    assert_eq!(item_job_id(&results[5]), "a");

    let invalid = item_status(&results[1]);
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let violations = invalid.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "requests[1].job_id");
    let missing = item_status(&results[2]);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(error_info_reason(&missing), "JOB_NOT_FOUND");
    assert!(results[0].cache.is_some() && results[2].cache.is_none());

    // The duplicate cost nothing; the invalid id never reached AWS.
    assert_eq!(fake.calls_for("a"), 2, "a, and a with beforeSubstitution");
    assert_eq!(fake.calls(), 4);
    let seen_ids: Vec<String> = fake.seen().into_iter().map(|s| s.job_id).collect();
    assert!(!seen_ids.iter().any(|id| id.contains(' ')), "{seen_ids:?}");
}

#[tokio::test]
async fn an_oversized_or_empty_batch_is_rejected_before_any_aws_call() {
    let fake = FakeAws::start().await;
    let mut gw = TestGateway::aws_edited(&fake.url, |jobs| jobs.max_batch_size = 3).await;

    let too_big = batch(&[("a", None), ("b", None), ("c", None), ("d", None)]);
    let status = gw
        .client
        .batch_describe_jobs(too_big.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("at most 3"),
        "{}",
        status.message()
    );
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "requests"
    );

    let too_big = pb::StreamDescribeJobsRequest {
        requests: too_big.requests,
    };
    let status = gw.client.stream_describe_jobs(too_big).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = gw.client.batch_describe_jobs(batch(&[])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("empty"), "{}", status.message());

    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn items_not_answered_by_the_deadline_come_back_as_deadline_exceeded_and_the_rest_are_kept() {
    let fake = FakeAws::start().await;
    fake.reply(
        "slow",
        Reply::slow(Duration::from_secs(5), job("slow", "IN_PROGRESS")),
    );
    fake.reply("quick", job("quick", "IN_PROGRESS"));
    let mut gw = TestGateway::aws(&fake.url).await;

    let mut request = tonic::Request::new(batch(&[("slow", None), ("quick", None)]));
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let results = gw
        .client
        .batch_describe_jobs(request)
        .await
        .unwrap()
        .into_inner()
        .results;

    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(item_status(&results[0]).code(), Code::DeadlineExceeded);
    assert_eq!(item_job_id(&results[1]), "quick");
}

#[tokio::test]
async fn the_stream_sends_each_result_as_soon_as_it_is_ready() {
    let fake = FakeAws::start().await;
    fake.reply(
        "slow",
        Reply::slow(Duration::from_millis(800), job("slow", "IN_PROGRESS")),
    );
    fake.reply("quick", job("quick", "IN_PROGRESS"));
    let mut gw = TestGateway::aws(&fake.url).await;

    let started = Instant::now();
    let mut stream = gw
        .client
        .stream_describe_jobs(streamed(&[
            ("slow", None),
            ("quick", None),
            ("bad/id", None),
        ]))
        .await
        .unwrap()
        .into_inner();
    let mut arrivals = Vec::new();
    while let Some(result) = stream.message().await.unwrap() {
        arrivals.push((result.index(), started.elapsed()));
    }

    let order: Vec<u32> = arrivals.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [2, 1, 0], "invalid first, then as AWS answers");
    assert!(
        arrivals[1].1 < Duration::from_millis(500),
        "quick item waited: {arrivals:?}"
    );
    assert!(arrivals[2].1 >= Duration::from_millis(800));
}

#[tokio::test]
async fn a_large_batch_fans_out_through_the_rate_limit() {
    let fake = FakeAws::start().await;
    for i in 0..20 {
        let id = format!("job-{i}");
        fake.reply(&id, job(&id, "IN_PROGRESS"));
    }
    let mut gw = TestGateway::aws_edited(&fake.url, |jobs| {
        jobs.limiter.rate = 20.0;
        jobs.limiter.burst = 5;
    })
    .await;
    let ids: Vec<String> = (0..20).map(|i| format!("job-{i}")).collect();
    let items: Vec<(&str, Option<bool>)> = ids.iter().map(|id| (id.as_str(), None)).collect();

    let started = Instant::now();
    let results = gw
        .client
        .batch_describe_jobs(batch(&items))
        .await
        .unwrap()
        .into_inner()
        .results;
    let took = started.elapsed();

    // 5 at once, then 15 more at 20/s: 0.75 s.
    assert!(
        took >= Duration::from_millis(700),
        "faster than the rate limit allows: {took:?}"
    );
    for (i, result) in results.iter().enumerate() {
        assert_eq!(item_job_id(result), ids[i]);
    }
    assert_eq!(fake.calls(), 20);
}
