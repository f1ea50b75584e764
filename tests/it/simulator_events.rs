//! The simulator publishes AWS IoT Jobs events to a real Mosquitto broker,
//! with AWS's topics and payload fields, as its manual clock and admin
//! actions move jobs along; a plain MQTT subscriber on `$aws/events/#`
//! sees them as a monitoring application would. The broker killed and
//! restarted: the simulator reconnects and publishes again.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::{
    iot_client,
    mosquitto::{Mosquitto, Subscriber},
    sim::{START, TestSim, admin, create_fleet_job},
};

const ALL_EVENTS: &str = "$aws/events/#";
const WITHIN: Duration = Duration::from_secs(5);
const THING_ARN: &str = "arn:aws:iot:us-east-1:123456789012:thing/";

/// A broker, a simulator publishing to it, and a subscriber on every event.
async fn setup() -> (Mosquitto, TestSim, Subscriber) {
    let broker = Mosquitto::start().await;
    let sim = TestSim::unlimited().await;
    sim.sim.publish_events_to(&broker.url()).unwrap();
    let subscriber = Subscriber::start(&broker, ALL_EVENTS).await;
    (broker, sim, subscriber)
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<usize> = text.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12] && text.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// The fields every event carries, as AWS documents them.
fn assert_common(payload: &Value, event_type: &str, operation: &str, job_id: &str) {
    assert_eq!(payload["eventType"], event_type, "{payload}");
    assert_eq!(payload["operation"], operation, "{payload}");
    assert_eq!(payload["jobId"], job_id, "{payload}");
    assert!(is_uuid(payload["eventId"].as_str().unwrap()), "{payload}");
    let seconds = payload["timestamp"].as_i64().unwrap();
    assert!(
        (START / 1000..START / 1000 + 3_600).contains(&seconds),
        "timestamp in epoch seconds of the simulated time: {payload}"
    );
}

#[tokio::test]
async fn a_completed_job_publishes_its_executions_then_completed() {
    let (_broker, sim, mut events) = setup().await;
    create_fleet_job(&sim, "rollout").await;
    assert!(
        events.drain(Duration::from_millis(300)).await.is_empty(),
        "nothing has finished yet"
    );

    sim.advance(Duration::from_secs(15));
    let seen = events
        .until("$aws/events/job/rollout/completed", WITHIN)
        .await;

    let (executions, job) = seen.split_at(seen.len() - 1);
    assert_eq!(executions.len(), 10, "one event per thing: {executions:?}");
    let mut things: Vec<String> = executions
        .iter()
        .map(|(topic, payload)| {
            assert_eq!(topic, "$aws/events/jobExecution/rollout/succeeded");
            assert_common(payload, "JOB_EXECUTION", "succeeded", "rollout");
            assert_eq!(payload["status"], "SUCCEEDED");
            payload["thingArn"].as_str().unwrap().to_owned()
        })
        .collect();
    things.sort();
    let mut expected: Vec<String> = (1..=10).map(|n| format!("{THING_ARN}fleet-{n}")).collect();
    expected.sort();
    assert_eq!(things, expected);

    let completed = &job[0].1;
    assert_common(completed, "JOB", "completed", "rollout");
    // AWS's documented example payload for `completed` says SUCCEEDED.
    assert_eq!(completed["status"], "SUCCEEDED");
    assert_eq!(completed["targetSelection"], "SNAPSHOT");
    assert_eq!(completed["createdAt"], START);
    assert_eq!(
        completed["completedAt"],
        START + 14_000,
        "the last execution's end, in ms"
    );
    assert_eq!(
        completed["jobProcessDetails"]["numberOfSucceededThings"],
        10
    );
    assert_eq!(completed["jobProcessDetails"]["numberOfFailedThings"], 0);
    assert!(
        events.drain(Duration::from_millis(300)).await.is_empty(),
        "each transition is published once"
    );
}

#[tokio::test]
async fn a_force_cancel_publishes_cancellation_in_progress_the_canceled_things_and_canceled() {
    let (_broker, sim, mut events) = setup().await;
    create_fleet_job(&sim, "calibration").await;
    // Executions start one a second and run 5 s: at 6 s, two are done,
    // five run (2..=6) and three are queued.
    sim.advance(Duration::from_secs(6));
    let finished = events.drain(Duration::from_millis(500)).await;
    assert_eq!(finished.len(), 2, "{finished:?}");

    iot_client(&sim.url)
        .cancel_job()
        .job_id("calibration")
        .force(true)
        .comment("Readings drifted")
        .send()
        .await
        .unwrap();
    let seen = events
        .until("$aws/events/job/calibration/canceled", WITHIN)
        .await;

    let topics: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics[0],
        "$aws/events/job/calibration/cancellation_in_progress"
    );
    assert_common(&seen[0].1, "JOB", "cancellation_in_progress", "calibration");
    assert_eq!(seen[0].1["status"], "CANCELLATION_IN_PROGRESS");
    let canceled_things = &seen[1..seen.len() - 1];
    assert_eq!(canceled_things.len(), 8, "{topics:?}");
    for (topic, payload) in canceled_things {
        assert_eq!(topic, "$aws/events/jobExecution/calibration/canceled");
        assert_common(payload, "JOB_EXECUTION", "canceled", "calibration");
        assert_eq!(payload["status"], "CANCELED");
        assert!(payload["thingArn"].as_str().unwrap().starts_with(THING_ARN));
    }
    let canceled = &seen[seen.len() - 1].1;
    assert_common(canceled, "JOB", "canceled", "calibration");
    assert_eq!(canceled["status"], "CANCELED");
    assert_eq!(canceled["forceCanceled"], true);
    assert_eq!(canceled["comment"], "Readings drifted");
    assert_eq!(canceled["jobProcessDetails"]["numberOfCanceledThings"], 8);
    assert_eq!(canceled["jobProcessDetails"]["numberOfSucceededThings"], 2);
}

#[tokio::test]
async fn a_cancel_without_force_is_canceled_once_the_running_things_finish() {
    let (_broker, sim, mut events) = setup().await;
    create_fleet_job(&sim, "gentle").await;
    sim.advance(Duration::from_secs(6));
    events.drain(Duration::from_millis(500)).await;

    sim.sim
        .cancel_job("gentle", false, &serde_json::json!({}))
        .unwrap();
    let started = events.drain(Duration::from_millis(500)).await;
    let topics: Vec<&str> = started.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics[0], "$aws/events/job/gentle/cancellation_in_progress");
    assert_eq!(
        topics[1..],
        ["$aws/events/jobExecution/gentle/canceled"; 3],
        "only the queued things are canceled; the running ones go on"
    );

    sim.advance(Duration::from_secs(5));
    let seen = events
        .until("$aws/events/job/gentle/canceled", WITHIN)
        .await;
    let succeeded = seen
        .iter()
        .filter(|(t, _)| t == "$aws/events/jobExecution/gentle/succeeded")
        .count();
    assert_eq!(succeeded, 5, "{seen:?}");
}

#[tokio::test]
async fn a_delete_publishes_deletion_in_progress_then_deleted() {
    let (_broker, sim, mut events) = setup().await;
    create_fleet_job(&sim, "old").await;
    sim.advance(Duration::from_secs(15));
    events.until("$aws/events/job/old/completed", WITHIN).await;

    iot_client(&sim.url)
        .delete_job()
        .job_id("old")
        .send()
        .await
        .unwrap();
    let (topic, payload) = events.next(WITHIN).await;
    assert_eq!(topic, "$aws/events/job/old/deletion_in_progress");
    assert_common(&payload, "JOB", "deletion_in_progress", "old");
    assert_eq!(payload["status"], "DELETION_IN_PROGRESS");

    // The simulator's deletion takes 3 s.
    sim.advance(Duration::from_secs(3));
    let seen = events.until("$aws/events/job/old/deleted", WITHIN).await;
    let (executions, job) = seen.split_at(seen.len() - 1);
    assert_eq!(executions.len(), 10, "{seen:?}");
    for (topic, payload) in executions {
        assert_eq!(topic, "$aws/events/jobExecution/old/deleted");
        assert_common(payload, "JOB_EXECUTION", "deleted", "old");
        // AWS: "the status field reflects the job execution status prior to the deletion".
        assert_eq!(payload["status"], "SUCCEEDED");
    }
    assert_common(&job[0].1, "JOB", "deleted", "old");
    assert_eq!(job[0].1["status"], "DELETED");

    // The id is free again; a new job with it starts from nothing.
    create_fleet_job(&sim, "old").await;
    sim.advance(Duration::from_secs(15));
    events.until("$aws/events/job/old/completed", WITHIN).await;
}

#[tokio::test]
async fn forged_events_and_bursts_go_out_as_asked_through_the_admin_api() {
    let (_broker, sim, mut events) = setup().await;
    create_fleet_job(&sim, "running").await;

    let (status, _) = admin(&sim.url, "POST", "/_sim/events/job/running/completed", "").await;
    assert_eq!(status, 204);
    let (topic, payload) = events.next(WITHIN).await;
    assert_eq!(topic, "$aws/events/job/running/completed");
    assert_common(&payload, "JOB", "completed", "running");
    let still = sim.sim.describe_job("running", false).0;
    assert!(
        matches!(&still, iot_jobs_gateway::simulator::Answer::Body(body) if body["job"]["status"] == "IN_PROGRESS"),
        "a forged event changes nothing: {still:?}"
    );

    let path = "/_sim/events/jobExecution/running/succeeded?count=100";
    let (status, _) = admin(&sim.url, "POST", path, "").await;
    assert_eq!(status, 204);
    let burst = events.drain(Duration::from_secs(2)).await;
    assert_eq!(burst.len(), 100);
    assert!(burst.iter().all(|(topic, payload)| {
        topic == "$aws/events/jobExecution/running/succeeded" && payload["thingArn"].is_string()
    }));

    let raw = r#"{"topic": "$aws/events/job/other/canceled", "payload": "not json"}"#;
    let (status, _) = admin(&sim.url, "POST", "/_sim/events", raw).await;
    assert_eq!(status, 204);
    let (topic, payload) = events.next(WITHIN).await;
    assert_eq!(topic, "$aws/events/job/other/canceled");
    assert_eq!(payload, "not json");

    let (status, body) = admin(&sim.url, "POST", "/_sim/events/job/running/finished", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("completed"),
        "names the known operations: {body}"
    );
}

#[tokio::test]
async fn without_a_broker_url_nothing_is_published_and_forging_is_refused() {
    let sim = TestSim::unlimited().await;
    assert_eq!(sim.sim.events_stats(), None);
    let (status, body) = admin(&sim.url, "POST", "/_sim/events/job/j/completed", "").await;
    assert_eq!(status, 400);
    assert!(body.contains("--events-mqtt-url"), "{body}");
    let err = sim.sim.publish_events_to("http://127.0.0.1:1").unwrap_err();
    assert!(err.to_string().contains("mqtt://"), "{err}");
}

#[tokio::test]
async fn the_simulator_reconnects_when_the_broker_comes_back() {
    let (mut broker, sim, mut events) = setup().await;
    create_fleet_job(&sim, "before").await;
    sim.advance(Duration::from_secs(15));
    events
        .until("$aws/events/job/before/completed", WITHIN)
        .await;
    assert_eq!(sim.sim.events_stats().unwrap().connections, 1);

    broker.kill().await;
    create_fleet_job(&sim, "during").await;
    sim.advance(Duration::from_secs(15));
    broker.restart().await;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !sim.sim.events_stats().unwrap().connected
        || sim.sim.events_stats().unwrap().connections < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the simulator reconnected within {WITHIN:?}: {:?}",
            sim.sim.events_stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut events = Subscriber::start(&broker, ALL_EVENTS).await;
    create_fleet_job(&sim, "after").await;
    sim.advance(Duration::from_secs(15));
    let seen = events
        .until("$aws/events/job/after/completed", WITHIN)
        .await;
    let after = seen.iter().filter(|(t, _)| t.contains("/after/")).count();
    assert_eq!(after, 11, "ten executions and the job: {seen:?}");
    let stats = sim.sim.events_stats().unwrap();
    assert!(stats.acknowledged >= 22, "{stats:?}");
}
