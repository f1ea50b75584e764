//! AWS IoT Jobs events over MQTT decide when a watched job is polled: a
//! real Mosquitto broker, the simulator publishing AWS's topics and
//! payloads to it, and the gateway subscribed with the real MQTT client.
//! What watchers see always comes from a DescribeJob answer.

use crate::support;

use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use iot_jobs_gateway::{
    backends::redis::RedisSettings,
    domain::watch::WatchSettings,
    events::EventsSettings,
    pb::{self, job_event::Trigger},
};
use support::{
    GatewayOptions, TestGateway,
    certs::{Names, Pki},
    mosquitto::Mosquitto,
    redis::RedisServer,
    sim::{TestSim, create_fleet_job},
};
use tokio::time::{Instant, timeout};
use tonic::Streaming;

/// A gateway in front of `sim`, polling watched jobs every `interval`,
/// with events from `broker` when given.
async fn gateway(sim: &TestSim, broker: Option<&Mosquitto>, interval: Duration) -> TestGateway {
    gateway_with(sim, broker, interval, None).await
}

/// The events settings for plain MQTT to `url`, with a client id of its
/// own (a broker drops the older of two connections with one id).
fn events_from(url: String) -> EventsSettings {
    static REPLICAS: AtomicUsize = AtomicUsize::new(0);
    EventsSettings {
        url,
        client_id: format!(
            "gateway-{}-{}",
            std::process::id(),
            REPLICAS.fetch_add(1, Ordering::Relaxed)
        ),
        ca: None,
        client_auth: None,
    }
}

/// The same, sharing with other replicas through `redis`.
async fn gateway_with(
    sim: &TestSim,
    broker: Option<&Mosquitto>,
    interval: Duration,
    redis: Option<&RedisServer>,
) -> TestGateway {
    gateway_with_events(sim, broker.map(|b| events_from(b.url())), interval, redis).await
}

/// A gateway taking its events as `events` says.
async fn gateway_with_events(
    sim: &TestSim,
    events: Option<EventsSettings>,
    interval: Duration,
    redis: Option<&RedisServer>,
) -> TestGateway {
    let mut options = GatewayOptions::with(|jobs| {
        jobs.watch = WatchSettings {
            poll_interval: interval,
            ..WatchSettings::default()
        };
    });
    options.events = events;
    options.redis = redis.map(|redis| RedisSettings {
        url: redis.url(),
        key_prefix: "events".into(),
        timeout: Duration::from_secs(2),
        fallback_rate: 100.0,
    });
    TestGateway::aws_with(support::iot_client(&sim.url), options).await
}

async fn watch(gw: &TestGateway, job_id: &str) -> Streaming<pb::WatchJobsResponse> {
    gw.client
        .clone()
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec![job_id.to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The next job event within `within`, skipping heartbeats.
async fn next_job(
    stream: &mut Streaming<pb::WatchJobsResponse>,
    within: Duration,
) -> Option<pb::JobEvent> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let message = timeout(left, stream.message()).await.ok()?.unwrap()?;
        if let Some(pb::watch_jobs_response::Event::Job(job)) = message.event {
            return Some(job);
        }
    }
}

fn status(event: &pb::JobEvent) -> String {
    match &event.state {
        Some(pb::job_event::State::Response(response)) => response
            .job
            .as_ref()
            .map(|job| job.status().as_str_name().to_owned())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn calls_for(sim: &TestSim, job_id: &str) -> u64 {
    sim.sim.stats().per_job.get(job_id).copied().unwrap_or(0)
}

/// Waits until the gateway's events client has subscribed: a (forged)
/// execution event about the watched job leads to a poll of it.
async fn until_subscribed(sim: &TestSim, job_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = calls_for(sim, job_id);
        sim.sim
            .forge_execution_events(job_id, "succeeded", 1)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if calls_for(sim, job_id) > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the events client never subscribed"
        );
    }
}

/// A broker, the simulator publishing to it with a fleet job "rollout",
/// and a gateway polling every `interval` whose watcher of "rollout" has
/// had its first event and whose events client has subscribed.
struct Watched {
    broker: Mosquitto,
    sim: TestSim,
    /// The gateway, serving as long as this lives.
    gw: TestGateway,
    stream: Streaming<pb::WatchJobsResponse>,
}

async fn watched(interval: Duration) -> Watched {
    let broker = Mosquitto::start().await;
    let sim = TestSim::unlimited().await;
    sim.sim.publish_events_to(&broker.url()).unwrap();
    create_fleet_job(&sim, "rollout").await;
    let gw = gateway(&sim, Some(&broker), interval).await;
    let mut stream = watch(&gw, "rollout").await;
    let first = next_job(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status(&first), "IN_PROGRESS");
    until_subscribed(&sim, "rollout").await;
    Watched {
        broker,
        sim,
        gw,
        stream,
    }
}

#[tokio::test]
async fn a_completed_event_brings_the_change_to_watchers_within_a_second() {
    let mut w = watched(Duration::from_secs(60)).await;
    // Anything the catch-up poll brought is the same state.
    while next_job(&mut w.stream, Duration::from_millis(300))
        .await
        .is_some()
    {}

    // Every execution finishes: the job completes and AWS says so.
    w.sim.sim.advance_clock(Duration::from_secs(30));
    let changed = Instant::now();
    let event = next_job(&mut w.stream, Duration::from_secs(1))
        .await
        .expect("COMPLETED within a second of the change, not a minute");
    assert_eq!(status(&event), "COMPLETED");
    assert_eq!(event.trigger(), Trigger::AwsEvent);
    assert!(event.r#final);
    assert!(changed.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn without_events_the_change_waits_for_the_poll() {
    let sim = TestSim::unlimited().await;
    create_fleet_job(&sim, "rollout").await;
    let gw = gateway(&sim, None, Duration::from_secs(60)).await;
    let mut stream = watch(&gw, "rollout").await;
    let first = next_job(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status(&first), "IN_PROGRESS");
    assert_eq!(first.trigger(), Trigger::Schedule);
    sim.sim.advance_clock(Duration::from_secs(30));
    assert!(
        next_job(&mut stream, Duration::from_secs(3))
            .await
            .is_none(),
        "nothing before the next poll, 60 s away"
    );
}

#[tokio::test]
async fn a_burst_of_execution_events_costs_at_most_two_polls_and_unwatched_jobs_nothing() {
    let broker = Mosquitto::start().await;
    let sim = TestSim::unlimited().await;
    sim.sim.publish_events_to(&broker.url()).unwrap();
    create_fleet_job(&sim, "rollout").await;
    create_fleet_job(&sim, "unwatched").await;
    let gw = gateway(&sim, Some(&broker), Duration::from_secs(60)).await;
    let mut stream = watch(&gw, "rollout").await;
    next_job(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    until_subscribed(&sim, "rollout").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (watched, unwatched) = (calls_for(&sim, "rollout"), calls_for(&sim, "unwatched"));
    sim.sim
        .forge_execution_events("rollout", "succeeded", 100)
        .unwrap();
    sim.sim
        .forge_execution_events("unwatched", "succeeded", 100)
        .unwrap();
    sim.sim.forge_job_event("unwatched", "completed").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls = calls_for(&sim, "rollout") - watched;
    assert!(
        (1..=2).contains(&polls),
        "{polls} polls for a burst of 100 events"
    );
    assert_eq!(
        calls_for(&sim, "unwatched"),
        unwatched,
        "events for a job nobody watches cost AWS nothing"
    );
}

#[tokio::test]
async fn a_forged_completed_event_never_puts_completed_on_a_stream() {
    let mut w = watched(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = calls_for(&w.sim, "rollout");
    w.sim.sim.forge_job_event("rollout", "completed").unwrap();
    // The event leads to a poll, whose answer is still IN_PROGRESS.
    let deadline = Instant::now() + Duration::from_secs(2);
    while calls_for(&w.sim, "rollout") == before {
        assert!(Instant::now() < deadline, "the event led to no poll");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Some(event) = next_job(&mut w.stream, Duration::from_secs(1)).await {
        assert_eq!(status(&event), "IN_PROGRESS", "{event:?}");
    }
}

#[tokio::test]
async fn without_the_broker_watched_jobs_are_polled_at_the_interval() {
    let mut w = watched(Duration::from_secs(2)).await;

    w.broker.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = calls_for(&w.sim, "rollout");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let polls = calls_for(&w.sim, "rollout") - before;
    assert!(
        (2..=3).contains(&polls),
        "{polls} polls in 5 s at a 2 s interval"
    );
}

#[tokio::test]
async fn when_the_broker_is_back_each_watched_job_is_polled_once_and_events_resume() {
    let mut w = watched(Duration::from_secs(60)).await;
    while next_job(&mut w.stream, Duration::from_millis(300))
        .await
        .is_some()
    {}

    w.broker.kill().await;
    // Two executions start while the broker is away: the job changes
    // without an event (none is sent until an execution ends).
    w.sim.sim.advance_clock(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.broker.restart().await;
    let catch_up = next_job(&mut w.stream, Duration::from_secs(20))
        .await
        .expect("the change made while the broker was away, from the catch-up poll");
    assert_eq!(catch_up.trigger(), Trigger::EventsCatchUp);
    assert_eq!(status(&catch_up), "IN_PROGRESS");

    // Events again: the job completes and its watchers hear at once (a
    // second after the last poll at the earliest: bursts are one poll).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.sim.sim.advance_clock(Duration::from_secs(30));
    let event = next_job(&mut w.stream, Duration::from_secs(1))
        .await
        .expect("COMPLETED within a second after the broker came back");
    assert_eq!(status(&event), "COMPLETED");
    assert_eq!(event.trigger(), Trigger::AwsEvent);
}

#[tokio::test]
async fn across_replicas_the_event_reaches_the_poller_wherever_it_runs() {
    let redis = RedisServer::start().await;
    let broker = Mosquitto::start().await;
    let sim = TestSim::unlimited().await;
    sim.sim.publish_events_to(&broker.url()).unwrap();
    create_fleet_job(&sim, "rollout").await;
    let interval = Duration::from_secs(60);
    let set = [
        gateway_with(&sim, Some(&broker), interval, Some(&redis)).await,
        gateway_with(&sim, Some(&broker), interval, Some(&redis)).await,
    ];
    // Watchers on both replicas; one of them holds the job's poll lease.
    let mut streams = Vec::new();
    for replica in &set {
        let mut stream = watch(replica, "rollout").await;
        next_job(&mut stream, Duration::from_secs(10))
            .await
            .unwrap();
        streams.push(stream);
    }
    until_subscribed(&sim, "rollout").await;
    for stream in &mut streams {
        while next_job(stream, Duration::from_millis(300)).await.is_some() {}
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let before = calls_for(&sim, "rollout");
    sim.sim.advance_clock(Duration::from_secs(30));
    for stream in &mut streams {
        let event = next_job(stream, Duration::from_secs(1))
            .await
            .expect("COMPLETED within a second on every replica");
        assert_eq!(status(&event), "COMPLETED");
        assert_eq!(event.trigger(), Trigger::AwsEvent);
    }
    // Every replica heard the events; only the lease holder asked AWS.
    let polls = calls_for(&sim, "rollout") - before;
    assert!(
        (1..=2).contains(&polls),
        "{polls} polls for the set after the burst of events"
    );
}

#[tokio::test]
async fn an_event_sets_the_cached_answer_aside_so_the_next_call_asks_aws() {
    let w = watched(Duration::from_secs(60)).await;
    create_fleet_job(&w.sim, "unwatched").await;
    let mut client = w.gw.client.clone();
    let ask = || support::describe("unwatched", None);
    client.describe_job(ask()).await.unwrap();
    let cached = client.describe_job(ask()).await.unwrap();
    assert_eq!(support::header(&cached, "x-cache"), "hit");
    let before = calls_for(&w.sim, "unwatched");
    w.sim.sim.forge_job_event("unwatched", "completed").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        calls_for(&w.sim, "unwatched"),
        before,
        "the event itself costs AWS nothing"
    );
    let after_event = client.describe_job(ask()).await.unwrap();
    assert_eq!(support::header(&after_event, "x-cache"), "miss");
    assert_eq!(calls_for(&w.sim, "unwatched"), before + 1);
}

/// A broker that, as AWS IoT Core, admits `mqtts://` clients only with a
/// certificate from its CA; the simulator publishing to its plain port;
/// and a gateway subscribed over TLS with the client certificate `client`
/// (good: the broker's CA signed it; else a foreign CA's) and polling
/// every `interval`. Returns the gateway's watcher of "rollout" after its
/// first event.
async fn over_mqtts(
    good_client_cert: bool,
    interval: Duration,
) -> (
    Mosquitto,
    TestSim,
    TestGateway,
    Streaming<pb::WatchJobsResponse>,
) {
    // Not under target/: Mosquitto started as root reads its certificates
    // as its own user, who may not enter the checkout (a fresh clone in a
    // private temporary directory).
    let dir = std::env::temp_dir().join(format!(
        "iot-jobs-gateway-mqtts-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let pki = Pki::new(&dir, "broker");
    let foreign = Pki::new(&dir, "foreign");
    let server = pki.server("broker-server");
    let signer = if good_client_cert { &pki } else { &foreign };
    let client = signer.client("gateway", Names::CommonName("gateway"), false);
    let broker = Mosquitto::start_with_client_certs(&pki.ca_file(), &server).await;

    let sim = TestSim::unlimited().await;
    sim.sim.publish_events_to(&broker.url()).unwrap();
    create_fleet_job(&sim, "rollout").await;
    let events = EventsSettings {
        ca: Some(pki.ca_file()),
        client_auth: Some((client.cert.clone(), client.key.clone())),
        ..events_from(broker.tls_url())
    };
    let gw = gateway_with_events(&sim, Some(events), interval, None).await;
    let mut stream = watch(&gw, "rollout").await;
    let first = next_job(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status(&first), "IN_PROGRESS");
    (broker, sim, gw, stream)
}

#[tokio::test]
async fn over_mqtts_a_client_certificate_from_the_brokers_ca_brings_events() {
    let (_broker, sim, _gw, mut stream) = over_mqtts(true, Duration::from_secs(60)).await;
    until_subscribed(&sim, "rollout").await;
    while next_job(&mut stream, Duration::from_millis(300))
        .await
        .is_some()
    {}

    sim.sim.advance_clock(Duration::from_secs(30));
    let event = next_job(&mut stream, Duration::from_secs(1))
        .await
        .expect("COMPLETED within a second, through the TLS broker");
    assert_eq!(status(&event), "COMPLETED");
    assert_eq!(event.trigger(), Trigger::AwsEvent);
}

#[tokio::test]
async fn over_mqtts_a_foreign_client_certificate_is_refused_and_the_gateway_polls_on() {
    let (_broker, sim, gw, mut stream) = over_mqtts(false, Duration::from_secs(2)).await;
    // Events the broker would carry, had it admitted the gateway.
    for _ in 0..3 {
        sim.sim
            .forge_execution_events("rollout", "succeeded", 1)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sim.sim.advance_clock(Duration::from_secs(30));
    let mut seen = Vec::new();
    let completed = loop {
        let event = next_job(&mut stream, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("the schedule's poll brings the change: {seen:?}"));
        seen.push((status(&event), event.trigger()));
        if status(&event) == "COMPLETED" {
            break event;
        }
    };
    assert!(
        seen.iter()
            .all(|(_, trigger)| *trigger == Trigger::Schedule),
        "no event reached a gateway the broker refused: {seen:?}"
    );
    assert!(completed.r#final);
    // Calls are answered as ever.
    let answer = gw
        .client
        .clone()
        .describe_job(support::describe("rollout", None))
        .await
        .expect("the gateway serves while its events broker refuses it");
    assert_eq!(
        answer.into_inner().job.unwrap().status().as_str_name(),
        "COMPLETED"
    );
}
