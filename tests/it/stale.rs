//! Stale answers (RFC 5861), seen from gRPC clients over real sockets with
//! the real SDK speaking HTTP to a fake AWS: when AWS fails with an error
//! that says nothing about the job, an answer that expired less than
//! `--cache-stale-if-error` ago stands in, marked `x-cache: stale` with its
//! age; callers can refuse it; NOT_FOUND and access errors come through;
//! with `--cache-stale-while-revalidate`, calls at expiry are answered at
//! once while one background request renews the answer. Lifetimes are a
//! few hundred milliseconds of real time, with margins of as much again.

use crate::support;

use std::time::Duration;

use iot_jobs_gateway::{
    backends::redis::RedisSettings,
    domain::JobsSettings,
    pb::{self, cache_info::Source as Wire, job_result::Outcome, watch_jobs_response::Event},
};
use serde_json::Value;
use support::{
    GatewayOptions, TestGateway, describe, error_info_reason,
    fake_aws::{FakeAws, Reply, full_job},
    header, iot_client,
    redis::RedisServer,
};
use tokio::time::{Instant, sleep};
use tonic::{Code, Request, Response, Status};

/// How long an answer about an active job is fresh in these tests.
const TTL: Duration = Duration::from_millis(200);
/// Long enough for an answer to have expired, with a margin.
const EXPIRED: Duration = Duration::from_millis(500);

/// Job `job_id` with `comment` (to tell answers apart).
fn job(job_id: &str, comment: &str) -> Reply {
    let mut body = full_job(job_id);
    body["job"]["status"] = Value::from("IN_PROGRESS");
    body["job"]["comment"] = Value::from(comment);
    Reply::Job(body)
}

/// The same, COMPLETED: cached for the terminal TTL (5 min), so a renewed
/// answer stays fresh for the rest of a test.
fn completed(job_id: &str, comment: &str) -> Reply {
    let Reply::Job(mut body) = job(job_id, comment) else {
        unreachable!("job() is a job")
    };
    body["job"]["status"] = Value::from("COMPLETED");
    Reply::Job(body)
}

fn unavailable() -> Reply {
    Reply::error(503, "ServiceUnavailableException", "Service unavailable")
}

/// Short lifetimes, a stale-if-error window of a minute, then `edit`.
fn short(edit: impl FnOnce(&mut JobsSettings)) -> GatewayOptions {
    GatewayOptions::with(|jobs| {
        jobs.cache.ttl = TTL;
        jobs.cache.not_found_ttl = TTL;
        jobs.cache.stale_if_error = Duration::from_secs(60);
        edit(jobs);
    })
}

async fn gateway(fake: &FakeAws, edit: impl FnOnce(&mut JobsSettings)) -> TestGateway {
    TestGateway::aws_with(iot_client(&fake.url), short(edit)).await
}

/// A fake AWS that knows job "j" and a gateway that has just cached it;
/// AWS then answers `then` for it.
async fn cached_then(then: Reply, edit: impl FnOnce(&mut JobsSettings)) -> (FakeAws, TestGateway) {
    let fake = FakeAws::start().await;
    fake.reply("j", job("j", "first"));
    let gw = gateway(&fake, edit).await;
    let first = call(&gw, describe("j", None)).await.unwrap();
    assert_eq!(header(&first, "x-cache"), "miss");
    fake.reply("j", then);
    (fake, gw)
}

async fn call(
    gw: &TestGateway,
    request: Request<pb::DescribeJobRequest>,
) -> Result<Response<pb::DescribeJobResponse>, Status> {
    gw.client.clone().describe_job(request).await
}

fn with_cache_control(
    mut request: Request<pb::DescribeJobRequest>,
    value: &'static str,
) -> Request<pb::DescribeJobRequest> {
    request
        .metadata_mut()
        .insert("cache-control", value.parse().unwrap());
    request
}

fn comment(response: &Response<pb::DescribeJobResponse>) -> String {
    response
        .get_ref()
        .job
        .as_ref()
        .unwrap()
        .comment()
        .to_owned()
}

/// Asserts `response` is the first answer, served stale, at least `older`
/// old (and not absurdly old).
fn assert_stale(response: &Response<pb::DescribeJobResponse>, older: Duration) {
    assert_eq!(header(response, "x-cache"), "stale");
    assert_eq!(comment(response), "first");
    let age: u64 = header(response, "x-cache-age-ms").parse().unwrap();
    let older = older.as_millis() as u64;
    assert!((older..60_000).contains(&age), "age {age} ms");
}

#[tokio::test]
async fn an_expired_answer_stands_in_when_aws_is_unavailable() {
    let (fake, gw) = cached_then(unavailable(), |_| {}).await;
    sleep(EXPIRED).await;

    let response = call(&gw, describe("j", None)).await.unwrap();

    assert_stale(&response, EXPIRED);
    assert_eq!(
        fake.calls(),
        1 + 3,
        "AWS was asked, with retries, and failed"
    );
}

#[tokio::test]
async fn an_expired_answer_stands_in_when_aws_throttles_after_retries() {
    let throttled = Reply::error(400, "ThrottlingException", "Rate exceeded");
    let (fake, gw) = cached_then(throttled, |_| {}).await;
    sleep(EXPIRED).await;

    let response = call(&gw, describe("j", None)).await.unwrap();

    assert_stale(&response, EXPIRED);
    assert_eq!(fake.calls(), 1 + 3);
}

#[tokio::test]
async fn an_expired_answer_stands_in_when_the_rate_limit_has_no_call_in_time() {
    // One call every 2 s; the first spent it.
    let (fake, gw) = cached_then(job("j", "second"), |jobs| {
        jobs.limiter.rate = 0.5;
        jobs.limiter.burst = 1;
    })
    .await;
    sleep(EXPIRED).await;

    let response = call(&gw, describe("j", Some(Duration::from_secs(1))))
        .await
        .unwrap();

    assert_stale(&response, EXPIRED);
    assert_eq!(fake.calls(), 1, "AWS was not called");
}

#[tokio::test]
async fn an_expired_answer_stands_in_when_the_gateways_own_timeout_runs_out() {
    let hanging = Reply::slow(Duration::from_secs(10), job("j", "second"));
    let (_fake, gw) = cached_then(hanging, |jobs| {
        jobs.operation_timeout = Duration::from_secs(1);
    })
    .await;
    sleep(EXPIRED).await;

    let started = Instant::now();
    let response = call(&gw, describe("j", None)).await.unwrap();

    assert_stale(&response, EXPIRED + Duration::from_secs(1));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}

#[tokio::test]
async fn a_caller_can_refuse_stale_answers() {
    let (_fake, gw) = cached_then(unavailable(), |_| {}).await;
    sleep(EXPIRED).await;

    for refusal in ["no-cache", "max-stale=0", "max-age=0, max-stale=60"] {
        let status = call(&gw, with_cache_control(describe("j", None), refusal))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{refusal}: {status:?}");
        assert_eq!(error_info_reason(&status), "UPSTREAM_UNAVAILABLE");
    }

    // A bound it meets, or none, and the stale answer does.
    for accepts in ["max-stale=60", "max-stale"] {
        let response = call(&gw, with_cache_control(describe("j", None), accepts))
            .await
            .unwrap();
        assert_stale(&response, EXPIRED);
    }
}

#[tokio::test]
async fn a_no_cache_call_leaves_the_stale_answer_for_other_callers() {
    let (_fake, gw) = cached_then(unavailable(), |_| {}).await;

    // While fresh, a no-cache call sets the answer aside and fails.
    let status = call(&gw, with_cache_control(describe("j", None), "no-cache"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    let response = call(&gw, describe("j", None)).await.unwrap();
    assert_eq!(header(&response, "x-cache"), "stale");
    assert_eq!(comment(&response), "first");
}

#[tokio::test]
async fn a_job_aws_says_is_gone_is_not_hidden_and_does_not_come_back() {
    let not_found = Reply::error(404, "ResourceNotFoundException", "no such job");
    let (fake, gw) = cached_then(not_found, |_| {}).await;
    sleep(EXPIRED).await;

    let status = call(&gw, describe("j", None)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Once "no such job" expired too, a failing AWS does not bring the
    // job's old answer back.
    fake.reply("j", unavailable());
    sleep(EXPIRED).await;
    let status = call(&gw, describe("j", None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn access_and_request_errors_are_not_hidden() {
    for (reply, code) in [
        (
            Reply::error(403, "AccessDeniedException", "not authorized"),
            Code::PermissionDenied,
        ),
        (
            Reply::error(403, "UnrecognizedClientException", "bad token"),
            Code::Unauthenticated,
        ),
        (
            Reply::error(400, "InvalidRequestException", "bad request"),
            Code::InvalidArgument,
        ),
    ] {
        let (_fake, gw) = cached_then(reply, |_| {}).await;
        sleep(EXPIRED).await;
        let status = call(&gw, describe("j", None)).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
}

#[tokio::test]
async fn past_the_window_the_error_comes_through() {
    let (_fake, gw) = cached_then(unavailable(), |jobs| {
        jobs.cache.stale_if_error = Duration::from_millis(600);
    })
    .await;

    // 200 ms of lifetime and 600 ms of window have passed, and more.
    sleep(Duration::from_millis(1500)).await;
    let status = call(&gw, describe("j", None)).await.unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn with_the_window_off_the_error_comes_through() {
    let (_fake, gw) = cached_then(unavailable(), |jobs| {
        jobs.cache.stale_if_error = Duration::ZERO;
    })
    .await;
    sleep(EXPIRED).await;

    let status = call(&gw, describe("j", None)).await.unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_batch_item_is_marked_stale() {
    let (_fake, gw) = cached_then(unavailable(), |_| {}).await;
    sleep(EXPIRED).await;
    let request = pb::BatchDescribeJobsRequest {
        requests: ["j", "ghost"]
            .into_iter()
            .map(|id| pb::DescribeJobRequest {
                job_id: id.into(),
                before_substitution: None,
            })
            .collect(),
    };

    let results = gw
        .client
        .clone()
        .batch_describe_jobs(request)
        .await
        .unwrap()
        .into_inner()
        .results;

    let cache = results[0].cache.expect("cache info");
    assert_eq!(cache.source(), Wire::Stale);
    assert!(cache.age_ms >= EXPIRED.as_millis() as u64, "{cache:?}");
    let Some(Outcome::Response(response)) = &results[0].outcome else {
        panic!("{:?}", results[0]);
    };
    assert_eq!(response.job.as_ref().unwrap().comment(), "first");
    let Some(Outcome::Error(error)) = &results[1].outcome else {
        panic!("{:?}", results[1]);
    };
    assert_eq!(Code::from(error.code), Code::NotFound);
}

/// How long AWS takes to answer a refresh (within the SDK's 2 s attempt
/// timeout of the tests).
const SLOW: Duration = Duration::from_millis(1500);
/// Answered "at once": well before AWS could have answered.
const AT_ONCE: Duration = Duration::from_millis(800);

/// Stale-while-revalidate on (10 s), AWS answering the refresh slowly.
async fn revalidating() -> (FakeAws, TestGateway) {
    let slow_second = Reply::slow(SLOW, completed("j", "second"));
    cached_then(slow_second, |jobs| {
        jobs.cache.stale_while_revalidate = Duration::from_secs(10);
        // Watchers of "j" would not poll it during the test.
        jobs.watch.poll_interval = Duration::from_secs(3600);
    })
    .await
}

/// Calls DescribeJob `n` times at once; each answer and how long it took.
async fn at_once(gw: &TestGateway, n: usize) -> Vec<(Response<pb::DescribeJobResponse>, Duration)> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let mut client = gw.client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let response = client.describe_job(describe("j", None)).await.unwrap();
                (response, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

/// Waits (at most 10 s) until the gateway serves the renewed answer.
async fn wait_for_renewed(gw: &TestGateway) -> Response<pb::DescribeJobResponse> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let response = call(gw, describe("j", None)).await.unwrap();
        if comment(&response) == "second" {
            return response;
        }
        assert!(Instant::now() < until, "the answer was not renewed");
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn at_expiry_calls_are_answered_at_once_and_one_refresh_reaches_aws() {
    let (fake, gw) = revalidating().await;
    let mut watch = gw
        .client
        .clone()
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec!["j".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    sleep(EXPIRED).await;

    // AWS takes 1.5 s to answer; each call is answered well before.
    let answers = at_once(&gw, 20).await;

    for (response, took) in &answers {
        assert_stale(response, EXPIRED);
        assert!(*took < AT_ONCE, "answered after {took:?}");
    }
    fake.wait_for_calls(2).await;
    let renewed = wait_for_renewed(&gw).await;
    assert_eq!(header(&renewed, "x-cache"), "hit");
    assert_eq!(
        fake.calls(),
        2,
        "one refresh reached AWS for 20 stale answers"
    );

    // Watchers saw the refresh's answer as they see any answer.
    let mut comments = Vec::new();
    while comments.last().map(String::as_str) != Some("second") {
        let message = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        if let Some(Event::Job(event)) = message.event
            && let Some(pb::job_event::State::Response(response)) = event.state
        {
            comments.push(response.job.unwrap().comment().to_owned());
        }
    }
    assert_eq!(comments, ["first", "second"]);
}

#[tokio::test]
async fn past_the_revalidate_window_calls_wait_for_aws() {
    let (fake, gw) = cached_then(job("j", "second"), |jobs| {
        jobs.cache.stale_while_revalidate = Duration::from_millis(300);
    })
    .await;
    sleep(Duration::from_millis(1000)).await;

    let response = call(&gw, describe("j", None)).await.unwrap();

    assert_eq!(header(&response, "x-cache"), "miss");
    assert_eq!(comment(&response), "second");
    assert_eq!(fake.calls(), 2);
}

fn shared(redis: &RedisServer, edit: impl FnOnce(&mut JobsSettings)) -> GatewayOptions {
    let mut options = short(edit);
    options.redis = Some(RedisSettings {
        url: redis.url(),
        key_prefix: "stale".into(),
        timeout: Duration::from_secs(2),
        fallback_rate: 100.0,
    });
    options
}

#[tokio::test]
async fn across_replicas_sharing_redis_a_replica_serves_the_answer_another_cached() {
    let redis = RedisServer::start().await;
    let fake = FakeAws::start().await;
    fake.reply("j", job("j", "first"));
    let one = TestGateway::aws_with(iot_client(&fake.url), shared(&redis, |_| {})).await;
    let two = TestGateway::aws_with(iot_client(&fake.url), shared(&redis, |_| {})).await;
    call(&one, describe("j", None)).await.unwrap();
    fake.reply("j", unavailable());
    sleep(EXPIRED).await;

    // Replica two never had the answer in its own memory: Redis kept it.
    let response = call(&two, describe("j", None)).await.unwrap();

    assert_stale(&response, EXPIRED);
    let mut conn = redis.client().await;
    let kept: Option<i64> = redis::cmd("PTTL")
        .arg("{stale}:kept:j:-")
        .query_async(&mut conn)
        .await
        .unwrap();
    let kept = kept.unwrap();
    assert!(
        (50_000..=60_200).contains(&kept),
        "the kept copy lives for the window: {kept} ms left"
    );
}

#[tokio::test]
async fn across_replicas_one_refresh_reaches_aws_for_calls_on_both() {
    let redis = RedisServer::start().await;
    let fake = FakeAws::start().await;
    fake.reply("j", job("j", "first"));
    let revalidate = |jobs: &mut JobsSettings| {
        jobs.cache.stale_while_revalidate = Duration::from_secs(10);
    };
    let one = TestGateway::aws_with(iot_client(&fake.url), shared(&redis, revalidate)).await;
    let two = TestGateway::aws_with(iot_client(&fake.url), shared(&redis, revalidate)).await;
    call(&one, describe("j", None)).await.unwrap();
    fake.reply("j", Reply::slow(SLOW, completed("j", "second")));
    sleep(EXPIRED).await;

    let (on_one, on_two) = tokio::join!(at_once(&one, 10), at_once(&two, 10));

    for (response, took) in on_one.iter().chain(&on_two) {
        assert_stale(response, EXPIRED);
        assert!(*took < AT_ONCE, "answered after {took:?}");
    }
    wait_for_renewed(&one).await;
    wait_for_renewed(&two).await;
    assert_eq!(fake.calls(), 2, "one refresh for the set");
}

/// The client subcommand `args` against `gw`: exit status, stdout, stderr.
async fn cli(gw: &TestGateway, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iot-jobs-gateway"))
        .args(args)
        .env("IOT_JOBS_GATEWAY", gw.addr.to_string())
        .env_remove("AWS_DEFAULT_OUTPUT")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (
        out.status.code().unwrap(),
        text(out.stdout),
        text(out.stderr),
    )
}

#[tokio::test]
async fn the_cli_prints_the_stale_answer_and_says_so_on_stderr() {
    let (_fake, gw) = cached_then(unavailable(), |_| {}).await;
    sleep(EXPIRED).await;

    let (code, stdout, stderr) = cli(&gw, &["describe-job", "--job-id", "j"]).await;
    assert_eq!(code, 0, "{stderr}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["job"]["comment"], "first");
    assert!(
        stderr.contains(r#"job "j" from its cache"#) && stderr.contains("x-cache: stale"),
        "{stderr}"
    );

    let (code, stdout, stderr) = cli(&gw, &["describe-jobs", "--job-ids", "j"]).await;
    assert_eq!(code, 0, "{stderr}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["jobs"][0]["job"]["comment"], "first");
    assert!(stderr.contains(r#"1 of 1 jobs"#), "{stderr}");
}
