//! Scenario 11: fair shares of the AWS budget between callers. Connection
//! A floods the gateway at ten times its rate, connection B asks twice a
//! second; how long B's calls wait for a token, and who gets the tokens.
//! With `--baseline`, an older build runs the same rounds interleaved with
//! this one, for a side-by-side comparison (a build from before fair
//! sharing serves waiting calls first come, first served).

use std::{path::PathBuf, time::Duration};

use iot_jobs_gateway::{pb::jobs_gateway_client::JobsGatewayClient, simulator::seed};
use tokio::time::Instant;
use tonic::{Code, transport::Channel};

use crate::{Error, RATE, procs::*};

/// Calls per second A offers: ten times the rate.
const FLOOD: f64 = RATE * 10.0;
/// Calls per second B offers.
const TRICKLE: f64 = 2.0;
/// A's deadline: its excess is turned away.
const FLOOD_DEADLINE: Duration = Duration::from_secs(2);
/// B's deadline: long enough that B is answered in either build, so its
/// wait can be compared (with 2 s, a first-come-first-served queue of A's
/// calls turns most of B's away; `tests/it/fairness.rs` checks that case).
const TRICKLE_DEADLINE: Duration = Duration::from_secs(10);

/// What one round of one gateway measured.
struct Round {
    /// B's answered calls: how long each took.
    b_waits: Vec<Duration>,
    /// B's calls not answered.
    b_failed: usize,
    /// Answered calls per second, over the span of AWS's calls.
    a_per_s: f64,
    b_per_s: f64,
    /// AWS calls per second over the round, and the busiest second.
    aws_per_s: f64,
    busiest: usize,
}

pub(crate) async fn fairness(
    seconds: u64,
    rounds: usize,
    baseline: Option<PathBuf>,
) -> Result<(), Error> {
    at_least_one("--seconds", seconds)?;
    at_least_one("--rounds", rounds as u64)?;
    let mut builds = Vec::new();
    if let Some(program) = baseline {
        builds.push((format!("baseline (`{}`)", program.display()), program));
    }
    builds.push(("this build".to_owned(), sibling("iot-jobs-gateway")));
    // Rounds interleaved, so a noisy minute on the machine hits both.
    let mut measured: Vec<Vec<Round>> = builds.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (_, program)) in builds.iter().enumerate() {
            measured[i].push(round(program.clone(), seconds).await?);
        }
    }

    println!(
        "## 11. Fairness: connection A offers {FLOOD} calls/s ({}s deadline), connection B {TRICKLE} calls/s ({}s deadline), distinct jobs, {seconds} s (gateway rate {RATE}/s, burst 5); medians of {rounds} rounds\n",
        FLOOD_DEADLINE.as_secs(),
        TRICKLE_DEADLINE.as_secs(),
    );
    println!(
        "| gateway | B's wait p50 | B's wait p99 | B's wait max | B not answered | A answered/s | B answered/s | AWS calls/s | busiest second |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    for ((label, _), rounds) in builds.iter().zip(&measured) {
        let pick =
            |f: &dyn Fn(&Round) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
        let p50 = pick(&|r| percentile(&sorted(&r.b_waits), 0.5).as_secs_f64());
        let p99 = pick(&|r| percentile(&sorted(&r.b_waits), 0.99).as_secs_f64());
        let max = pick(&|r| percentile(&sorted(&r.b_waits), 1.0).as_secs_f64());
        p50s.push(p50);
        p99s.push(p99);
        println!(
            "| {label} | **{}** | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} |",
            secs(p50),
            secs(p99),
            secs(max),
            pick(&|r| r.b_failed as f64),
            pick(&|r| r.a_per_s),
            pick(&|r| r.b_per_s),
            pick(&|r| r.aws_per_s),
            pick(&|r| r.busiest as f64),
        );
    }
    if let ([base_p50, this_p50], [base_p99, this_p99]) = (&p50s[..], &p99s[..]) {
        println!(
            "\nB's wait, baseline / this build: p50 {:.1}×, p99 {:.1}×",
            base_p50 / this_p50,
            base_p99 / this_p99
        );
    }
    println!();
    Ok(())
}

/// One gateway from `program` in front of a fresh simulator: A and B on
/// their own connections for `seconds`.
async fn round(program: PathBuf, seconds: u64) -> Result<Round, Error> {
    let a_calls = (FLOOD * seconds as f64) as usize;
    let b_calls = (TRICKLE * seconds as f64) as usize;
    let sim = simulator(a_calls + b_calls, RATE as u32).await?;
    let gw = gateway_binary(program, &sim, &[]).await?;
    let a = channels(gw.port, 1).await?.remove(0);
    let b = channels(gw.port, 1).await?.remove(0);
    let (a_got, b_got) = tokio::join!(
        offer(a, 0, a_calls, FLOOD, FLOOD_DEADLINE),
        offer(b, a_calls, b_calls, TRICKLE, TRICKLE_DEADLINE),
    );
    let arrivals = sim_arrivals(&sim).await?;
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if last > first => (last - first) as f64 / 1e6,
        _ => return Err("AWS saw fewer than two calls".into()),
    };
    let b_answered = b_got.iter().filter(|r| r.is_ok()).count();
    let a_answered = a_got.iter().filter(|r| r.is_ok()).count();
    Ok(Round {
        b_waits: b_got.into_iter().filter_map(Result::ok).collect(),
        b_failed: b_calls - b_answered,
        a_per_s: a_answered as f64 / span,
        b_per_s: b_answered as f64 / span,
        aws_per_s: (arrivals.len() - 1) as f64 / span,
        busiest: busiest_second(&arrivals),
    })
}

/// `count` calls on `client`, synthetic jobs from `first`, `per_second`
/// a second: how long each answered call took, or its gRPC code.
async fn offer(
    client: JobsGatewayClient<Channel>,
    first: usize,
    count: usize,
    per_second: f64,
    deadline: Duration,
) -> Vec<Result<Duration, Code>> {
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let started = Instant::now();
    let mut calls = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(started + interval * i as u32).await;
        let mut client = client.clone();
        let job = seed::synthetic_job_id(first + i);
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            client
                .describe_job(describe(&job, deadline))
                .await
                .map(|_| sent.elapsed())
                .map_err(|s| s.code())
        }));
    }
    let mut out = Vec::with_capacity(count);
    for call in calls {
        out.push(call.await.unwrap_or(Err(Code::Internal)));
    }
    out
}

fn sorted(waits: &[Duration]) -> Vec<Duration> {
    let mut waits = waits.to_vec();
    waits.sort();
    waits
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}
