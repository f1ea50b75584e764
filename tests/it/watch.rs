//! WatchJobs as a watch client sees it, over real sockets, with the real SDK
//! polling the simulator (whose clock the tests move): a rollout seen step by
//! step until the stream ends, one poll per job however many watch it,
//! hang-ups, cancel, delete and faults mid-stream, resuming, a slow
//! consumer, heartbeats, caps, shutdown, and how polls share the budget with
//! calls and the cache.

use crate::support;

use std::time::Duration;

use iot_jobs_gateway::{
    domain::JobsSettings,
    edge::server::Stopped,
    pb::{self, job_event::Kind, watch_jobs_response::Event},
    simulator::{AwsOperation, Fault, FaultRule, job::Outcome},
};
use support::{
    GatewayOptions, TestGateway, describe, error_info_reason, fresh, iot_client,
    sim::{TestSim, create_fleet_job},
};
use tokio::time::{Instant, timeout};
use tonic::{Code, Status, Streaming};

/// How long a test waits for something that should happen within a few
/// poll intervals.
const PATIENCE: Duration = Duration::from_secs(10);

/// A gateway in front of `sim` polling watched jobs every 50 ms.
async fn watching_gateway(sim: &TestSim, edit: impl FnOnce(&mut JobsSettings)) -> TestGateway {
    TestGateway::aws_edited(&sim.url, |jobs| {
        jobs.watch.poll_interval = Duration::from_millis(50);
        jobs.watch.heartbeat = Duration::from_secs(60);
        edit(jobs);
    })
    .await
}

fn request(job_ids: &[&str]) -> pb::WatchJobsRequest {
    pb::WatchJobsRequest {
        job_ids: job_ids.iter().map(|id| (*id).to_owned()).collect(),
        ..Default::default()
    }
}

async fn open(gw: &TestGateway, request: pb::WatchJobsRequest) -> Streaming<pb::WatchJobsResponse> {
    gw.client
        .clone()
        .watch_jobs(request)
        .await
        .expect("the watch starts")
        .into_inner()
}

/// The next message; `None` when the stream ended with OK.
async fn next(stream: &mut Streaming<pb::WatchJobsResponse>) -> Option<Event> {
    let message = timeout(PATIENCE, stream.message())
        .await
        .expect("a message within the patience")
        .expect("no error status");
    message.map(|m| m.event.expect("every message has an event"))
}

/// The next job event, skipping heartbeats.
async fn next_job(stream: &mut Streaming<pb::WatchJobsResponse>) -> pb::JobEvent {
    loop {
        match next(stream).await.expect("a job event, not the end") {
            Event::Job(event) => return event,
            Event::Heartbeat(_) => continue,
        }
    }
}

/// How the stream ended with an error.
async fn end_error(stream: &mut Streaming<pb::WatchJobsResponse>) -> Status {
    loop {
        match timeout(PATIENCE, stream.message()).await.expect("an end") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended with OK"),
            Err(status) => return status,
        }
    }
}

fn job(event: &pb::JobEvent) -> &pb::Job {
    match &event.state {
        Some(pb::job_event::State::Response(r)) => r.job.as_ref().expect("a job"),
        other => panic!("expected a job, got {other:?}"),
    }
}

fn error(event: &pb::JobEvent) -> &tonic_types::pb::Status {
    match &event.state {
        Some(pb::job_event::State::Error(status)) => status,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn succeeded(event: &pb::JobEvent) -> i32 {
    job(event)
        .job_process_details
        .as_ref()
        .unwrap()
        .number_of_succeeded_things()
}

fn calls_for(sim: &TestSim, job_id: &str) -> u64 {
    sim.sim.stats().per_job.get(job_id).copied().unwrap_or(0)
}

/// Waits (bounded) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < give_up, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_rollout_is_seen_step_by_step_until_it_completes_and_the_stream_ends() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let gw = watching_gateway(&sim, |_| {}).await;
    let mut stream = open(&gw, request(&["rollout"])).await;

    let first = next_job(&mut stream).await;
    assert_eq!(first.job_id, "rollout");
    assert_eq!(first.kind(), Kind::Current);
    assert_eq!(job(&first).status(), pb::job::Status::InProgress);
    assert!(!first.r#final);

    let mut versions = vec![first.version];
    let mut last = first;
    // Every simulated second starts or finishes an execution.
    for second in 1..=14 {
        sim.advance(Duration::from_secs(1));
        let event = next_job(&mut stream).await;
        assert!(
            !versions.contains(&event.version),
            "second {second}: a new state has a new version"
        );
        versions.push(event.version);
        assert!(
            succeeded(&event) >= succeeded(&last),
            "counters never go back"
        );
        assert!(!event.changed_fields.is_empty());
        if second < 14 {
            assert!(!event.r#final, "second {second}");
            assert_eq!(job(&event).status(), pb::job::Status::InProgress);
            assert!(
                matches!(event.kind(), Kind::Progress | Kind::Updated),
                "second {second}: {:?}",
                event.kind()
            );
            assert!(
                event
                    .changed_fields
                    .contains(&"jobProcessDetails".to_owned())
            );
        } else {
            assert!(event.r#final);
            assert_eq!(event.kind(), Kind::StatusChanged);
            assert_eq!(job(&event).status(), pb::job::Status::Completed);
            assert!(event.changed_fields.contains(&"status".to_owned()));
            assert_eq!(succeeded(&event), 10);
        }
        last = event;
    }
    assert!(next(&mut stream).await.is_none(), "ends with OK when final");
    eventually("the poller stops", || gw.jobs.watches().pollers() == 0).await;
}

#[tokio::test]
async fn a_thousand_subscribers_cost_aws_the_same_polls_as_one() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "solo").await;
    create_fleet_job(&sim, "crowd").await;
    let gw = TestGateway::aws_edited(&sim.url, |jobs| {
        jobs.watch.poll_interval = Duration::from_millis(100);
    })
    .await;

    let mut solo = open(&gw, request(&["solo"])).await;
    // The crowd fills ten connections of its own to the default per-connection cap (100).
    let mut crowd = Vec::new();
    for _ in 0..10 {
        let mut client =
            pb::jobs_gateway_client::JobsGatewayClient::new(support::channel(gw.addr).await);
        for _ in 0..100 {
            let stream = client.watch_jobs(request(&["crowd"])).await.unwrap();
            crowd.push(stream.into_inner());
        }
    }
    next_job(&mut solo).await;
    for stream in &mut crowd {
        assert_eq!(next_job(stream).await.kind(), Kind::Current);
    }

    let (solo_before, crowd_before) = (calls_for(&sim, "solo"), calls_for(&sim, "crowd"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let solo_polls = calls_for(&sim, "solo") - solo_before;
    let crowd_polls = calls_for(&sim, "crowd") - crowd_before;
    assert!(
        (3..=21).contains(&solo_polls),
        "about one poll per 100 ms: {solo_polls}"
    );
    assert!(
        crowd_polls <= solo_polls + 2,
        "1000 subscribers: {crowd_polls} polls; one subscriber: {solo_polls}"
    );

    // And every subscriber hears about a change.
    sim.advance(Duration::from_secs(1));
    for stream in &mut crowd {
        assert_eq!(next_job(stream).await.kind(), Kind::Progress);
    }
}

#[tokio::test]
async fn a_subscriber_hanging_up_stops_the_poller() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "job").await;
    let gw = watching_gateway(&sim, |_| {}).await;
    let mut stream = open(&gw, request(&["job"])).await;
    next_job(&mut stream).await;
    assert_eq!(gw.jobs.watches().pollers(), 1);
    assert_eq!(gw.jobs.watches().open_streams(), 1);

    drop(stream);
    eventually("the poller stops", || gw.jobs.watches().pollers() == 0).await;
    assert_eq!(gw.jobs.watches().open_streams(), 0);
    // A poll sent just before the hang-up may still arrive; then nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = calls_for(&sim, "job");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(calls_for(&sim, "job"), calls, "no polls after the hang-up");
}

#[tokio::test]
async fn faults_then_cancel_mid_stream() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "flaky").await;
    let gw = watching_gateway(&sim, |_| {}).await;
    let mut stream = open(&gw, request(&["flaky"])).await;
    let first = next_job(&mut stream).await;

    sim.sim.inject(FaultRule {
        fault: Fault::ServiceUnavailableException,
        operation: AwsOperation::DescribeJob,
        job_id: Some("flaky".into()),
        times: None,
    });
    let failed = next_job(&mut stream).await;
    assert_eq!(failed.kind(), Kind::Failed);
    assert!(!failed.r#final, "the gateway keeps trying");
    assert_eq!(error(&failed).code, Code::Unavailable as i32);
    assert!(
        error(&failed)
            .message
            .contains("ServiceUnavailableException")
    );

    sim.sim.clear_faults();
    let back = next_job(&mut stream).await;
    assert_eq!(back.kind(), Kind::Current);
    assert_eq!(
        back.version, first.version,
        "the job did not change meanwhile"
    );

    iot_client(&sim.url)
        .cancel_job()
        .job_id("flaky")
        .reason_code("BAD_BUILD")
        .send()
        .await
        .unwrap();
    let canceled = next_job(&mut stream).await;
    assert_eq!(canceled.kind(), Kind::StatusChanged);
    assert_eq!(job(&canceled).status(), pb::job::Status::Canceled);
    assert_eq!(job(&canceled).reason_code(), "BAD_BUILD");
    assert!(canceled.r#final);
    assert!(next(&mut stream).await.is_none(), "ends with OK");
}

#[tokio::test]
async fn a_deleted_job_is_reported_gone_and_ends_the_stream() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "doomed").await;
    let gw = watching_gateway(&sim, |_| {}).await;
    let mut stream = open(&gw, request(&["doomed"])).await;
    next_job(&mut stream).await;

    iot_client(&sim.url)
        .delete_job()
        .job_id("doomed")
        .force(true)
        .send()
        .await
        .unwrap();
    let deleting = next_job(&mut stream).await;
    assert_eq!(deleting.kind(), Kind::StatusChanged);
    assert_eq!(job(&deleting).status(), pb::job::Status::DeletionInProgress);
    assert!(!deleting.r#final);

    sim.advance(Duration::from_secs(5));
    let gone = next_job(&mut stream).await;
    assert_eq!(gone.kind(), Kind::Gone);
    assert!(gone.r#final);
    assert_eq!(error(&gone).code, Code::NotFound as i32);
    assert!(next(&mut stream).await.is_none(), "ends with OK");
}

#[tokio::test]
async fn a_client_resuming_with_its_versions_receives_only_what_changed() {
    let sim = TestSim::unlimited().await;
    for id in ["moving", "still", "over"] {
        create_fleet_job(&sim, id).await;
    }
    iot_client(&sim.url)
        .cancel_job()
        .job_id("over")
        .send()
        .await
        .unwrap();
    let gw = watching_gateway(&sim, |jobs| {
        jobs.watch.heartbeat = Duration::from_millis(300);
    })
    .await;

    let mut first = open(&gw, request(&["moving", "still", "over"])).await;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..3 {
        let event = next_job(&mut first).await;
        seen.insert(event.job_id.clone(), event.version);
    }
    drop(first);

    // Only "moving" changes while the client is away.
    sim.sim
        .advance_executions("moving", 2, Outcome::Succeeded)
        .unwrap();
    let mut resumed = open(
        &gw,
        pb::WatchJobsRequest {
            job_ids: vec!["moving".into(), "still".into(), "over".into()],
            resume_from: seen.clone().into_iter().collect(),
            ..Default::default()
        },
    )
    .await;
    let changed = next_job(&mut resumed).await;
    assert_eq!(changed.job_id, "moving");
    assert_ne!(changed.version, seen["moving"]);
    assert_eq!(succeeded(&changed), 2);
    // Nothing else comes: the next message is a heartbeat.
    match next(&mut resumed).await {
        Some(Event::Heartbeat(beat)) => assert_eq!(beat.watching, 2, "moving and still"),
        other => panic!("expected a heartbeat, got {other:?}"),
    }

    // A client that saw the final state of its only job is done at once.
    let mut done = open(
        &gw,
        pb::WatchJobsRequest {
            job_ids: vec!["over".into()],
            resume_from: [("over".to_owned(), seen["over"])].into_iter().collect(),
            ..Default::default()
        },
    )
    .await;
    assert!(next(&mut done).await.is_none(), "no event, ends with OK");
}

#[tokio::test]
async fn a_slow_consumer_gets_the_latest_state_without_slowing_others() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "busy").await;
    let gw = watching_gateway(&sim, |_| {}).await;
    // The slow client's connection lets the gateway send only a little ahead
    // of what the client has read.
    let slow_channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .initial_stream_window_size(1024)
        .connect()
        .await
        .unwrap();
    let mut slow = pb::jobs_gateway_client::JobsGatewayClient::new(slow_channel)
        .watch_jobs(request(&["busy"]))
        .await
        .unwrap()
        .into_inner();
    let mut fast = open(&gw, request(&["busy"])).await;
    let mut fast_versions = vec![next_job(&mut fast).await.version];
    let slow_first = next_job(&mut slow).await;
    assert_eq!(slow_first.version, fast_versions[0]);

    // The fast client sees every step while the slow one reads nothing.
    for _ in 0..14 {
        sim.advance(Duration::from_secs(1));
        fast_versions.push(next_job(&mut fast).await.version);
    }
    assert!(next(&mut fast).await.is_none());

    let mut slow_versions = vec![slow_first.version];
    while let Some(event) = next(&mut slow).await {
        let Event::Job(event) = event else { continue };
        slow_versions.push(event.version);
    }
    assert!(
        slow_versions.len() < fast_versions.len(),
        "intermediate states were coalesced: {} of {}",
        slow_versions.len(),
        fast_versions.len()
    );
    let mut in_order = fast_versions.iter();
    assert!(
        slow_versions.iter().all(|v| in_order.any(|f| f == v)),
        "the slow client's states are the fast one's, in the same order"
    );
    assert_eq!(
        slow_versions.last(),
        fast_versions.last(),
        "it got the final state"
    );
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "quiet").await;
    let gw = watching_gateway(&sim, |jobs| {
        jobs.watch.heartbeat = Duration::from_millis(200);
    })
    .await;
    let mut stream = open(&gw, request(&["quiet"])).await;
    next_job(&mut stream).await;
    for _ in 0..2 {
        match next(&mut stream).await {
            Some(Event::Heartbeat(beat)) => {
                assert_eq!(beat.watching, 1);
                assert!(beat.sent_at.is_some());
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn bad_watch_requests_are_rejected_before_any_aws_call() {
    let sim = TestSim::unlimited().await;
    let gw = watching_gateway(&sim, |jobs| jobs.watch.max_jobs = 2).await;
    let cases = [
        (request(&[]), "job_ids", "empty"),
        (request(&["ok", "bad/id"]), "job_ids[1]", "'/'"),
        (request(&["a", "b", "c"]), "job_ids", "--watch-max-jobs"),
        (
            pb::WatchJobsRequest {
                job_ids: vec!["a".into()],
                resume_from: [("b".to_owned(), 1)].into_iter().collect(),
                ..Default::default()
            },
            "resume_from[b]",
            "not in job_ids",
        ),
    ];
    for (request, field, hint) in cases {
        let status = gw.client.clone().watch_jobs(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(
            status.message().contains(hint),
            "{field}: {}",
            status.message()
        );
        use tonic_types::StatusExt;
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field);
    }
    // A repeated id is watched once and counts once.
    let mut twice = open(&gw, request(&["a", "a", "b"])).await;
    let mut gone = [next_job(&mut twice).await, next_job(&mut twice).await];
    gone.sort_by(|x, y| x.job_id.cmp(&y.job_id));
    assert_eq!([gone[0].kind(), gone[1].kind()], [Kind::Gone, Kind::Gone]);
    assert_eq!(
        [gone[0].job_id.as_str(), gone[1].job_id.as_str()],
        ["a", "b"]
    );
    assert!(
        next(&mut twice).await.is_none(),
        "both final: the stream ends"
    );
    assert_eq!(
        sim.sim.stats().describe_job_calls,
        2,
        "only a and b were asked"
    );
}

#[tokio::test]
async fn stream_caps_turn_watches_away_before_any_aws_call() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "job").await;
    let gw = watching_gateway(&sim, |jobs| {
        jobs.watch.max_streams = 3;
        jobs.watch.max_streams_per_connection = 2;
    })
    .await;
    let mut held = vec![
        open(&gw, request(&["job"])).await,
        open(&gw, request(&["job"])).await,
    ];
    let per_connection = gw
        .client
        .clone()
        .watch_jobs(request(&["other"]))
        .await
        .unwrap_err();
    assert_eq!(per_connection.code(), Code::ResourceExhausted);
    assert_eq!(error_info_reason(&per_connection), "TOO_MANY_WATCHES");
    assert!(
        per_connection
            .message()
            .contains("--watch-max-streams-per-connection"),
        "{}",
        per_connection.message()
    );

    // Another connection may open one more: the gateway's cap is 3.
    let mut second =
        pb::jobs_gateway_client::JobsGatewayClient::new(support::channel(gw.addr).await);
    held.push(
        second
            .watch_jobs(request(&["job"]))
            .await
            .unwrap()
            .into_inner(),
    );
    let gateway_wide = second.watch_jobs(request(&["other"])).await.unwrap_err();
    assert_eq!(gateway_wide.code(), Code::ResourceExhausted);
    assert!(
        gateway_wide.message().contains("--watch-max-streams)"),
        "{}",
        gateway_wide.message()
    );
    assert_eq!(calls_for(&sim, "other"), 0, "AWS was not called");

    // Closing a stream frees its place.
    drop(held.pop());
    eventually("the place is freed", || {
        gw.jobs.watches().open_streams() == 2
    })
    .await;
    let mut again = second
        .watch_jobs(request(&["job"]))
        .await
        .unwrap()
        .into_inner();
    next_job(&mut again).await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable_at_once() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "job").await;
    let mut gw = watching_gateway(&sim, |_| {}).await;
    let mut stream = open(&gw, request(&["job"])).await;
    next_job(&mut stream).await;

    let started = Instant::now();
    gw.shutdown();
    let status = end_error(&mut stream).await;
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(error_info_reason(&status), "SHUTTING_DOWN");
    assert!(
        status.message().contains("resume_from"),
        "{}",
        status.message()
    );
    let stopped = (&mut gw.server).await.unwrap().unwrap();
    assert_eq!(
        stopped,
        Stopped::Drained,
        "no need to wait out the grace period"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn when_the_budget_is_short_every_job_is_polled_in_turn() {
    let sim = TestSim::unlimited().await;
    let ids: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    for id in &ids {
        create_fleet_job(&sim, id).await;
    }
    // Ten jobs every 50 ms would need 200 polls/s; the budget is 10/s.
    let gw = watching_gateway(&sim, |jobs| {
        jobs.limiter.rate = 10.0;
        jobs.limiter.burst = 1;
    })
    .await;
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut stream = open(&gw, request(&id_refs)).await;
    for _ in 0..10 {
        next_job(&mut stream).await;
    }
    let started = Instant::now();
    let before: Vec<u64> = ids.iter().map(|id| calls_for(&sim, id)).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls: Vec<u64> = ids
        .iter()
        .zip(&before)
        .map(|(id, before)| calls_for(&sim, id) - before)
        .collect();
    let total: u64 = polls.iter().sum();
    // Polls whose token was taken just before the window count in it too.
    let allowed = (started.elapsed().as_secs_f64() * 10.0).ceil() as u64 + 2;
    assert!(total <= allowed, "{total} polls, rate allows {allowed}");
    assert!(total >= 20, "the budget is used: {total}");
    let (min, max) = (polls.iter().min().unwrap(), polls.iter().max().unwrap());
    assert!(max - min <= 2, "polls are spread evenly: {polls:?}");
}

#[tokio::test]
async fn calls_go_before_watch_polls_when_the_budget_is_short() {
    let sim = TestSim::unlimited().await;
    let ids: Vec<String> = (0..20).map(|i| format!("watched-{i}")).collect();
    let asked: Vec<String> = (0..8).map(|i| format!("asked-{i}")).collect();
    for id in ids.iter().chain(&asked) {
        create_fleet_job(&sim, id).await;
    }
    // Polls alone would use the whole budget of 5/s; they get no minimum
    // share, so calls waiting for tokens always go first.
    let gw = watching_gateway(&sim, |jobs| {
        jobs.limiter.rate = 5.0;
        jobs.limiter.burst = 1;
        jobs.limiter.background_share = 0.0;
        jobs.retry.max_attempts = 1;
    })
    .await;
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let _watch = open(&gw, request(&id_refs)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Eight calls at 5/s take 1.6 s; had polls shared the tokens equally,
    // they would take 3.2 s and miss their 2.5 s deadline.
    let calls: Vec<_> = asked
        .iter()
        .map(|id| {
            let mut client = gw.client.clone();
            let request = describe(id, Some(Duration::from_millis(2500)));
            tokio::spawn(async move { client.describe_job(request).await.map(|_| ()) })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("served within its deadline");
    }
}

#[tokio::test]
async fn polls_refresh_the_cache_and_fresh_calls_feed_the_watchers() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "shared").await;
    let gw = watching_gateway(&sim, |jobs| {
        // Only the first poll happens during the test.
        jobs.watch.poll_interval = Duration::from_secs(3600);
    })
    .await;
    let mut stream = open(&gw, request(&["shared"])).await;
    let first = next_job(&mut stream).await;
    assert_eq!(calls_for(&sim, "shared"), 1);

    // The poll's answer is in the cache.
    let cached = gw
        .client
        .clone()
        .describe_job(describe("shared", None))
        .await
        .unwrap();
    assert_eq!(cached.metadata().get("x-cache").unwrap(), "hit");
    assert_eq!(calls_for(&sim, "shared"), 1);

    // A client's fresh answer reaches the watcher without a poll.
    sim.sim
        .advance_executions("shared", 1, Outcome::Succeeded)
        .unwrap();
    gw.client
        .clone()
        .describe_job(fresh(describe("shared", None)))
        .await
        .unwrap();
    let changed = next_job(&mut stream).await;
    assert_ne!(changed.version, first.version);
    assert_eq!(changed.kind(), Kind::Progress);
    assert_eq!(succeeded(&changed), 1);
    assert_eq!(calls_for(&sim, "shared"), 2, "the call's, no poll");
}

#[tokio::test]
async fn idle_connections_get_http2_keepalive_pings() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = TestSim::unlimited().await;
    let mut options = GatewayOptions::with(|jobs| {
        jobs.watch.poll_interval = Duration::from_millis(50);
        jobs.watch.heartbeat = Duration::from_secs(60);
    });
    options.server.keepalive = Duration::from_millis(200);
    let gw = TestGateway::aws_with(iot_client(&sim.url), options).await;
    // A bare HTTP/2 connection that sends nothing after its preface: only
    // the gateway's keepalive can produce a PING on it.
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    conn.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let read_frames = async {
        loop {
            let mut header = [0u8; 9];
            conn.read_exact(&mut header).await.unwrap();
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let mut payload = vec![0u8; len];
            conn.read_exact(&mut payload).await.unwrap();
            if kind == SETTINGS && flags & 1 == 0 {
                // Acknowledge the server's settings, as any client must.
                conn.write_all(&[0, 0, 0, SETTINGS, 1, 0, 0, 0, 0])
                    .await
                    .unwrap();
            }
            if kind == PING && flags & 1 == 0 {
                return;
            }
        }
    };
    timeout(Duration::from_secs(5), read_frames)
        .await
        .expect("the gateway PINGs an idle connection");
}

#[tokio::test]
async fn a_failing_poll_leaves_calls_their_cached_answer() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "flaky").await;
    let gw = watching_gateway(&sim, |_| {}).await;
    let mut stream = open(&gw, request(&["flaky"])).await;
    next_job(&mut stream).await;

    sim.sim.inject(FaultRule {
        fault: Fault::ServiceUnavailableException,
        operation: AwsOperation::DescribeJob,
        job_id: Some("flaky".into()),
        times: None,
    });
    assert_eq!(next_job(&mut stream).await.kind(), Kind::Failed);
    // Polls keep failing, but a call still gets the last good answer.
    let answer = gw
        .client
        .clone()
        .describe_job(describe("flaky", None))
        .await
        .expect("the cached answer");
    assert_eq!(answer.metadata().get("x-cache").unwrap(), "hit");
    assert_eq!(
        answer.get_ref().job.as_ref().unwrap().status(),
        pb::job::Status::InProgress
    );
}
