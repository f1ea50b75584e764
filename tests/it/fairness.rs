//! Fair shares of the AWS budget, seen from gRPC clients over real sockets
//! with the simulator playing AWS at its quota (10 DescribeJob calls/s).
//! While callers are not authenticated, each client connection is a
//! caller: one connection offering ten times the quota does not hold up
//! another's occasional call, which waits about one token interval per
//! caller with calls waiting; the flood gets every token the others do not
//! use; and AWS never sees more than rate + burst calls in any second. The
//! same holds for replicas sharing the budget through Redis, for calls on
//! the flood's replica and on another.

use crate::support;

use std::time::Duration;

use iot_jobs_gateway::{
    backends::redis::RedisSettings, domain::JobsSettings, simulator::Simulator,
};
use iot_jobs_gateway::{
    pb::jobs_gateway_client::JobsGatewayClient,
    simulator::{SimConfig, busiest_second, seed},
};
use support::{
    GatewayOptions, TestGateway, channel, describe, iot_client, redis::RedisServer, sim::TestSim,
};
use tokio::time::Instant;
use tonic::{Code, transport::Channel};

/// The gateway's rate and burst: AWS's quota, and half of it at once.
const RATE: f64 = 10.0;
const BURST: u32 = 5;

/// What one connection's calls got.
#[derive(Debug, Default)]
struct Got {
    /// How long each answered call took, in the order they were sent.
    answered: Vec<Duration>,
    /// Turned away by the rate limit (RESOURCE_EXHAUSTED).
    limited: usize,
    /// Admitted, but their 2 s ran out before the answer came back
    /// (DEADLINE_EXCEEDED from the gateway, CANCELLED from the client's own
    /// timer): a flood's calls admitted at the edge of their deadline, on a
    /// machine busy enough to add a few hundred milliseconds.
    late: usize,
}

/// Calls DescribeJob on `client` `per_second` a second for `span`, each
/// call about the next of `jobs`, with a 2 s deadline; waits for every
/// answer.
async fn offer(
    client: JobsGatewayClient<Channel>,
    mut jobs: impl Iterator<Item = String>,
    per_second: f64,
    span: Duration,
) -> Got {
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0.. {
        let at = started + interval * i;
        if at >= started + span {
            break;
        }
        tokio::time::sleep_until(at).await;
        let (mut client, job) = (client.clone(), jobs.next().expect("enough jobs"));
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = client
                .describe_job(describe(&job, Some(Duration::from_secs(2))))
                .await;
            result.map(|_| sent.elapsed())
        }));
    }
    let mut got = Got::default();
    for call in calls {
        match call.await.unwrap() {
            Ok(took) => got.answered.push(took),
            Err(status) if status.code() == Code::ResourceExhausted => got.limited += 1,
            Err(status) if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                got.late += 1
            }
            Err(status) => panic!("unexpected failure: {status:?}"),
        }
    }
    got
}

/// The rate limit under test, in front of a simulator with jobs to ask
/// about: `synthetic_job_id(0..1000)`.
fn limited(jobs: &mut JobsSettings) {
    jobs.limiter.rate = RATE;
    jobs.limiter.burst = BURST;
}

async fn simulator() -> TestSim {
    let sim = TestSim::start(SimConfig::default()).await;
    assert_eq!(seed::synthetic_fleet(&sim.sim, 1000), 1000);
    sim
}

/// A new connection to `gateway`: a caller of its own.
async fn connect(gateway: &TestGateway) -> JobsGatewayClient<Channel> {
    JobsGatewayClient::new(channel(gateway.addr).await)
}

/// Every call of an occasional caller was answered, none after much more
/// than a token interval per caller with calls waiting (`callers`), plus
/// one: the first of them may have just missed a token.
fn assert_answered_soon(got: &Got, callers: u32, calls: usize) {
    assert_eq!((got.limited, got.late), (0, 0), "{got:?}");
    assert_eq!(got.answered.len(), calls, "{got:?}");
    let longest = got.answered.iter().max().unwrap();
    let turns = f64::from(callers + 1);
    let bound = Duration::from_secs_f64(turns / RATE) + Duration::from_millis(150);
    assert!(
        *longest <= bound,
        "a call waited {longest:?} (bound {bound:?}): {:?}",
        got.answered
    );
}

/// AWS ran at its quota, one call per answer (and at most one per late
/// call, which may have reached AWS before its time ran out), and never
/// above rate + burst in any second nor throttled.
fn assert_aws_at_quota(sim: &Simulator, answers: usize, late: usize) {
    let stats = sim.stats();
    assert_eq!(stats.throttled, 0, "AWS never throttled the gateway");
    let arrivals = sim.arrivals();
    let busiest = busiest_second(&arrivals);
    assert!(
        busiest <= RATE as usize + BURST as usize,
        "at most rate + burst calls in any second: {busiest}"
    );
    let aws_calls = stats.describe_job_calls as usize;
    assert!(
        (answers..=answers + late).contains(&aws_calls),
        "one AWS call per answer: {aws_calls} calls, {answers} answers, {late} late"
    );
    let span = (arrivals.last().unwrap() - arrivals[0]) as f64 / 1e6;
    let sustained = (aws_calls - BURST as usize) as f64 / span;
    assert!(
        sustained >= 0.9 * RATE,
        "AWS ran at {sustained:.2}/s: the flood took the tokens left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_connection_does_not_hold_up_another_connections_calls() {
    let sim = simulator().await;
    let gw = TestGateway::aws_edited(&sim.url, limited).await;
    let (flooder, trickler) = (connect(&gw).await, connect(&gw).await);

    // 8 s of ten times the quota on one, 2 calls/s on the other, every
    // call about a job nobody asked about before.
    let span = Duration::from_secs(8);
    let (flood, trickle) = tokio::join!(
        offer(flooder, (0..900).map(seed::synthetic_job_id), 100.0, span),
        offer(trickler, (900..1000).map(seed::synthetic_job_id), 2.0, span),
    );

    // The flood's call takes the next token, then the trickle's.
    assert_answered_soon(&trickle, 2, 16);
    // The flood gets every other token; its excess is turned away.
    let answers = flood.answered.len() + trickle.answered.len();
    assert_aws_at_quota(&sim.sim, answers, flood.late);
    assert!(flood.limited > 600, "{} turned away", flood.limited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_replicas_a_flood_on_one_holds_up_calls_on_neither() {
    let redis = RedisServer::start().await;
    let sim = simulator().await;
    let replica = || async {
        let mut options = GatewayOptions::with(limited);
        options.redis = Some(RedisSettings {
            url: redis.url(),
            key_prefix: "fairness".into(),
            timeout: Duration::from_secs(2),
            fallback_rate: 1.0,
        });
        TestGateway::aws_with(iot_client(&sim.url), options).await
    };
    let (one, two) = (replica().await, replica().await);
    let (flooder, near, far) = (
        connect(&one).await,
        connect(&one).await,
        connect(&two).await,
    );

    // The flood on replica one; 2 calls/s beside it, and on replica two.
    let span = Duration::from_secs(8);
    let (flood, near, far) = tokio::join!(
        offer(flooder, (0..800).map(seed::synthetic_job_id), 100.0, span),
        offer(near, (800..900).map(seed::synthetic_job_id), 2.0, span),
        offer(far, (900..1000).map(seed::synthetic_job_id), 2.0, span),
    );

    // Each waits for the flood's turn and the other's, then its own:
    // replicas take turns in Redis, callers take turns on a replica.
    assert_answered_soon(&near, 3, 16);
    assert_answered_soon(&far, 3, 16);
    let answers = flood.answered.len() + near.answered.len() + far.answered.len();
    assert_aws_at_quota(&sim.sim, answers, flood.late);
    assert!(flood.limited > 600, "{} turned away", flood.limited);
}
