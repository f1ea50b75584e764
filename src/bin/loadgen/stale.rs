//! Scenario 15: AWS fails for a while under steady demand. Three gateways
//! side by side, each in front of its own simulator, take the same calls on
//! the same schedule: one with `--cache-stale-if-error` at its default
//! (5m), one with it off, and one that also has
//! `--cache-stale-while-revalidate`. The simulators answer every DescribeJob
//! with ServiceUnavailableException for the same `failing` seconds. Each call is
//! counted by when it was sent (before, during, after the failure) and by
//! what it got: a fresh answer (`hit`, `miss`, `coalesced`), a stale one,
//! or an error, by code.

use std::{collections::BTreeMap, time::Duration};

use iot_jobs_gateway::simulator::seed::synthetic_job_id;
use tokio::time::Instant;
use tonic::{Code, transport::Channel};

use crate::{Error, RATE, procs::*};

/// Each call's deadline.
const DEADLINE: Duration = Duration::from_secs(2);

/// The gateways side by side: their label, flags and log's name.
const GATEWAYS: [(&str, &[&str], &str); 3] = [
    (
        "`--cache-stale-if-error 5m` (default)",
        &["--cache-stale-if-error", "5m"],
        "gateway-stale-if-error",
    ),
    (
        "`--cache-stale-if-error 0s` (off)",
        &["--cache-stale-if-error", "0s"],
        "gateway-stale-off",
    ),
    (
        "the default and `--cache-stale-while-revalidate 5m`",
        &[
            "--cache-stale-if-error",
            "5m",
            "--cache-stale-while-revalidate",
            "5m",
        ],
        "gateway-stale-while-revalidate",
    ),
];

/// What one call got.
enum Got {
    /// An answer: its `x-cache` and its age.
    Answer {
        cache: String,
        age_ms: u64,
    },
    Error(Code),
}

/// When a call was sent.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Before,
    Failing,
    After,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Before => "before",
            Self::Failing => "AWS failing",
            Self::After => "after",
        }
    }
}

/// One gateway of the run, with its own simulator.
struct Side {
    label: &'static str,
    sim: Proc,
    _gateway: Proc,
    clients: Vec<iot_jobs_gateway::pb::jobs_gateway_client::JobsGatewayClient<Channel>>,
    calls: Vec<tokio::task::JoinHandle<(Phase, Got, Duration)>>,
}

pub(crate) async fn stale(
    rate: f64,
    jobs: usize,
    before: u64,
    failing: u64,
    after: u64,
) -> Result<(), Error> {
    if !(rate.is_finite() && rate >= 1.0) {
        return Err("--rate must be at least 1 call per second".into());
    }
    at_least_one("--jobs", jobs as u64)?;
    at_least_one("--failing", failing)?;
    let total = before + failing + after;
    // Synthetic jobs must stay IN_PROGRESS (5 s TTL), not turn COMPLETED.
    let group_size = (total + 120).to_string();
    let mut sides = Vec::new();
    for (label, flags, log) in GATEWAYS {
        let sim = simulator_with(jobs, RATE as u32, &["--group-size", &group_size]).await?;
        let gateway = gateway_named(&sim, flags, log).await?;
        let clients = channels(gateway.port, 4).await?;
        sides.push(Side {
            label,
            sim,
            _gateway: gateway,
            clients,
            calls: Vec::new(),
        });
    }

    let interval = Duration::from_secs_f64(1.0 / rate);
    let count = (rate * total as f64) as usize;
    let started = Instant::now();
    let fail_at = started + Duration::from_secs(before);
    let heal_at = fail_at + Duration::from_secs(failing);
    let mut phase = Phase::Before;
    // Each simulator's DescribeJob count when the failure began and ended.
    let (mut began, mut ended) = (Vec::new(), Vec::new());
    for i in 0..count {
        let at = started + interval * i as u32;
        tokio::time::sleep_until(at).await;
        if phase == Phase::Before && at >= fail_at {
            phase = Phase::Failing;
            began = switch(&sides, "POST", r#"{"kind": "ServiceUnavailableException"}"#).await?;
        } else if phase == Phase::Failing && at >= heal_at {
            phase = Phase::After;
            ended = switch(&sides, "DELETE", "").await?;
        }
        let job_id = synthetic_job_id(i % jobs);
        for side in &mut sides {
            side.calls.push(call(&side.clients, i, &job_id, phase));
        }
    }

    println!(
        "## 15. Stale answers: AWS unavailable for {failing} s, {rate} calls/s on {jobs} jobs (5 s TTL), {before} s before and {after} s after\n"
    );
    println!(
        "| gateway | calls sent | calls | answered fresh (hit / miss / coalesced) | answered stale | errors | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, side) in sides.iter_mut().enumerate() {
        let mut phases: BTreeMap<Phase, Tally> = BTreeMap::new();
        for call in side.calls.drain(..) {
            let (phase, got, took) = call.await?;
            phases.entry(phase).or_default().add(got, took);
        }
        for (phase, tally) in &mut phases {
            println!("| {} | {} | {} |", side.label, phase.name(), tally.row());
        }
        let during = ended.get(i).copied().unwrap_or(0) - began.get(i).copied().unwrap_or(0);
        println!(
            "| {} | AWS calls while failing | {during} ({:.1}/s) | | | | | |",
            side.label,
            during as f64 / failing as f64
        );
    }
    println!();
    Ok(())
}

/// Injects (POST) or clears (DELETE) the failure at each simulator; how
/// many DescribeJob calls each had received then.
async fn switch(sides: &[Side], method: &str, body: &str) -> Result<Vec<u64>, Error> {
    let mut counts = Vec::new();
    for side in sides {
        sim_request(&side.sim, method, "/_sim/faults", body).await?;
        let stats = sim_get(&side.sim, "/_sim/stats").await?;
        counts.push(stats["describeJobCalls"].as_u64().ok_or("no call count")?);
    }
    Ok(counts)
}

/// DescribeJob of `job_id` on the next of `clients`, in the background.
fn call(
    clients: &[iot_jobs_gateway::pb::jobs_gateway_client::JobsGatewayClient<Channel>],
    i: usize,
    job_id: &str,
    phase: Phase,
) -> tokio::task::JoinHandle<(Phase, Got, Duration)> {
    let mut client = clients[i % clients.len()].clone();
    let request = describe(job_id, DEADLINE);
    tokio::spawn(async move {
        let sent = Instant::now();
        let got = match client.describe_job(request).await {
            Ok(response) => {
                let header = |name| {
                    response
                        .metadata()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                Got::Answer {
                    cache: header("x-cache"),
                    age_ms: header("x-cache-age-ms").parse().unwrap_or(0),
                }
            }
            Err(status) => Got::Error(status.code()),
        };
        (phase, got, sent.elapsed())
    })
}

/// What the calls of one phase got.
#[derive(Default)]
struct Tally {
    sent: usize,
    fresh: BTreeMap<String, usize>,
    stale: usize,
    oldest_stale_ms: u64,
    errors: BTreeMap<String, usize>,
    took: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, got: Got, took: Duration) {
        self.sent += 1;
        self.took.push(took);
        match got {
            Got::Answer { cache, age_ms } if cache == "stale" => {
                self.stale += 1;
                self.oldest_stale_ms = self.oldest_stale_ms.max(age_ms);
            }
            Got::Answer { cache, .. } => *self.fresh.entry(cache).or_default() += 1,
            Got::Error(code) => *self.errors.entry(format!("{code:?}")).or_default() += 1,
        }
    }

    fn row(&mut self) -> String {
        self.took.sort();
        let fresh = |kind: &str| self.fresh.get(kind).copied().unwrap_or(0);
        let fresh_total: usize = self.fresh.values().sum();
        let errors: usize = self.errors.values().sum();
        let by_code: Vec<String> = self
            .errors
            .iter()
            .map(|(code, n)| format!("{n} {code}"))
            .collect();
        let share = |n: usize| 100.0 * n as f64 / self.sent.max(1) as f64;
        format!(
            "{} | {fresh_total} ({:.1}%: {} / {} / {}) | {} ({:.1}%{}) | {errors} ({:.1}%{}) | {} | {}",
            self.sent,
            share(fresh_total),
            fresh("hit"),
            fresh("miss"),
            fresh("coalesced"),
            self.stale,
            share(self.stale),
            if self.stale > 0 {
                format!(", oldest {:.1} s", self.oldest_stale_ms as f64 / 1e3)
            } else {
                String::new()
            },
            share(errors),
            if errors > 0 {
                format!(": {}", by_code.join(", "))
            } else {
                String::new()
            },
            ms(percentile(&self.took, 0.5)),
            ms(percentile(&self.took, 0.99)),
        )
    }
}
