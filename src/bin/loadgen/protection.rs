//! Scenarios 1 to 5: coalescing, throttling, cache-hit throughput, batches
//! and memory.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use iot_jobs_gateway::{
    pb::{self, jobs_gateway_client::JobsGatewayClient},
    simulator::seed::synthetic_job_id,
};
use prost::Message;
use tonic::{Code, Request, Status, transport::Channel};

use crate::{
    BURST, Error, RATE,
    interleaved::{CONCURRENCY, interleaved},
    procs::*,
};

pub(crate) async fn coalescing(calls: usize) -> Result<(), Error> {
    at_least_one("--calls", calls as u64)?;
    let sim = simulator(10, 10).await?;
    let gw = gateway(&sim, &[]).await?;
    let clients = channels(gw.port, 10).await?;
    let target = synthetic_job_id(7);
    // AWS takes tens of milliseconds to answer; so does the simulator here,
    // so the calls really are in flight together.
    let latency = format!(r#"{{"kind": "Latency", "ms": 100, "jobId": "{target}"}}"#);
    sim_request(&sim, "POST", "/_sim/faults", &latency).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let id = target.clone();
            tokio::spawn(async move {
                let response = client
                    .describe_job(describe(&id, Duration::from_secs(30)))
                    .await?;
                let source = response
                    .metadata()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                Ok::<_, Status>(source)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    let mut sources = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        match task.await? {
            Ok(source) => {
                ok += 1;
                *sources.entry(source).or_default() += 1;
            }
            Err(_) => failed += 1,
        }
    }
    let took = started.elapsed();
    let stats = sim_get(&sim, "/_sim/stats").await?;
    let upstream = stats["perJob"][&target].as_u64().unwrap_or(0);
    println!(
        "## 1. Coalescing: {calls} concurrent identical DescribeJob calls, cold cache, AWS answering in 100 ms\n"
    );
    println!("| calls | answered OK | failed | x-cache | upstream calls (simulator) | wall time |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {calls} | {ok} | {failed} | {sources:?} | **{upstream}** | {} |\n",
        ms(took)
    );
    println!(
        "Target: exactly 1 upstream call. Result: {}\n",
        verdict(upstream == 1 && failed == 0)
    );
    Ok(())
}

pub(crate) async fn throttling(seconds: u64) -> Result<(), Error> {
    at_least_one("--seconds", seconds)?;
    let demand = (RATE * 10.0) as u64;
    let total = (demand * seconds) as usize;
    let sim = simulator(total, RATE as u32).await?;
    let gw = gateway(&sim, &[]).await?;
    let clients = channels(gw.port, 4).await?;
    let before = sim_get(&sim, "/_sim/calls").await?["arrivalsUs"]
        .as_array()
        .map_or(0, Vec::len);

    // Open loop: one call every 1/demand s, each on a distinct job, 2 s deadline.
    let interval = Duration::from_secs_f64(1.0 / demand as f64);
    let tasks = open_loop(&clients, total, interval).await;
    let (mut ok, mut exhausted) = (0, 0);
    let mut other = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        match task.await? {
            Ok(()) => ok += 1,
            Err(Code::ResourceExhausted) => exhausted += 1,
            Err(code) => *other.entry(format!("{code:?}")).or_default() += 1,
        }
    }
    let stats = sim_get(&sim, "/_sim/stats").await?;
    let arrivals = sim_arrivals(&sim).await?.split_off(before);
    let throttled = stats["throttled"].as_u64().unwrap_or(0);

    // Busiest sliding 1 s window, and per-second counts over the run.
    let busiest = busiest_second(&arrivals);
    let first = arrivals.first().copied().unwrap_or(0);
    let mut per_second = vec![0u64; seconds as usize];
    for a in &arrivals {
        let s = ((a - first) / 1_000_000) as usize;
        if s < per_second.len() {
            per_second[s] += 1;
        }
    }
    let span = arrivals.last().map_or(0.0, |l| (l - first) as f64 / 1e6);
    let sustained = if span > 0.0 {
        (arrivals.len() as f64 - 1.0) / span
    } else {
        0.0
    };
    let mut sorted = per_second.clone();
    sorted.sort_unstable();
    println!(
        "## 2. Throttling: {demand} calls/s offered on distinct jobs for {seconds} s (gateway rate {RATE}/s, burst {BURST})\n"
    );
    println!(
        "| offered | answered OK | RESOURCE_EXHAUSTED | other errors | upstream calls | busiest 1 s window (limit {}) | sustained upstream rate | per-second min / median / max | ThrottlingException |",
        RATE + BURST
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {total} | {ok} | {exhausted} | {other:?} | {} | **{busiest}** | **{sustained:.2}/s** ({:.1}% of {RATE}) | {} / {} / {} | **{throttled}** |\n",
        arrivals.len(),
        sustained / RATE * 100.0,
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    );
    let pass = busiest as f64 <= RATE + BURST && sustained >= 0.95 * RATE && throttled == 0;
    println!(
        "Targets: busiest window <= rate + burst, sustained >= 95% of the rate, zero throttles. Result: {}\n",
        verdict(pass)
    );
    Ok(())
}

/// One closed-loop run against one server: calls/s, latencies, errors,
/// and the CPU time the server process spent per answered call.
pub(crate) struct Load {
    pub(crate) per_sec: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) errors: usize,
    pub(crate) cpu_us_per_call: f64,
}

/// The one question a closed loop asks over and over.
#[derive(Clone)]
pub(crate) enum Question {
    Job(String),
    Execution { job_id: String, thing_name: String },
}

/// Its answer, which the bare server is given to answer with.
pub(crate) enum Answer {
    Job(Box<pb::DescribeJobResponse>),
    Execution(Box<pb::DescribeJobExecutionResponse>),
}

impl Question {
    pub(crate) fn job(id: &str) -> Self {
        Self::Job(id.to_owned())
    }

    pub(crate) async fn ask(
        &self,
        client: &mut JobsGatewayClient<Channel>,
        timeout: Duration,
    ) -> Result<Answer, Status> {
        match self {
            Self::Job(id) => {
                let response = client.describe_job(describe(id, timeout)).await?;
                Ok(Answer::Job(Box::new(response.into_inner())))
            }
            Self::Execution { job_id, thing_name } => {
                let mut request = Request::new(pb::DescribeJobExecutionRequest {
                    job_id: job_id.clone(),
                    thing_name: thing_name.clone(),
                    execution_number: None,
                });
                request.set_timeout(timeout);
                let response = client.describe_job_execution(request).await?;
                Ok(Answer::Execution(Box::new(response.into_inner())))
            }
        }
    }
}

impl Answer {
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Self::Job(r) => r.encoded_len(),
            Self::Execution(r) => r.encoded_len(),
        }
    }
}

/// Closed-loop load on `server`: `concurrency` callers for `seconds`.
pub(crate) async fn closed_loop(
    server: &Proc,
    question: &Question,
    concurrency: usize,
    seconds: u64,
) -> Result<Load, Error> {
    let clients = channels(server.port, 4).await?;
    closed_loop_on(server, clients, question, concurrency, seconds).await
}

/// The same over given client connections (TLS ones, for instance).
pub(crate) async fn closed_loop_on(
    server: &Proc,
    clients: Vec<JobsGatewayClient<Channel>>,
    question: &Question,
    concurrency: usize,
    seconds: u64,
) -> Result<Load, Error> {
    let cpu_before = server.cpu_seconds();
    let end = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let question = question.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < end {
                    let t = Instant::now();
                    match question.ask(&mut client, Duration::from_secs(5)).await {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await?;
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    all.sort_unstable();
    Ok(Load {
        per_sec: all.len() as f64 / elapsed,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        errors,
        cpu_us_per_call: cpu * 1e6 / all.len().max(1) as f64,
    })
}

/// Warms `gw`'s cache with `question` and starts a bare tonic server that
/// answers the same response to every call.
pub(crate) async fn warm_and_bare(gw: &Proc, question: &Question) -> Result<(Answer, Proc), Error> {
    let mut client = channels(gw.port, 1).await?.remove(0);
    let answer = question.ask(&mut client, Duration::from_secs(10)).await?;
    let bare = bare_server_for(&answer, None).await?;
    Ok((answer, bare))
}

/// A bare tonic server on a free port answering `answer` to every call;
/// with mTLS from the `server.pem`, `server.key` and `ca.pem` in `tls`.
pub(crate) async fn bare_server_for(
    answer: &Answer,
    tls: Option<&std::path::Path>,
) -> Result<Proc, Error> {
    let log = if tls.is_some() {
        "bare-server-tls"
    } else {
        "bare-server"
    };
    bare_server_under(&[], &[answer], tls, log).await
}

/// A bare tonic server answering each of `answers` to every call of its
/// operation, run by `launcher` (see [`spawn_under`]), logging to `log`.
pub(crate) async fn bare_server_under(
    launcher: &[String],
    answers: &[&Answer],
    tls: Option<&std::path::Path>,
    log: &str,
) -> Result<Proc, Error> {
    let port = free_port();
    let mut args = vec!["bare-server".into(), port.to_string()];
    for answer in answers {
        let (flag, encoded) = match answer {
            Answer::Job(r) => ("--describe-job", r.encode_to_vec()),
            Answer::Execution(r) => ("--describe-job-execution", r.encode_to_vec()),
        };
        let file = sibling("loadgen-logs").join(format!("response{flag}.bin"));
        std::fs::write(&file, encoded)?;
        args.extend([flag.into(), file.display().to_string()]);
    }
    if let Some(dir) = tls {
        args.extend(["--tls-dir".into(), dir.display().to_string()]);
    }
    spawn_under(launcher, std::env::current_exe()?, &args, &[], log, port).await
}

/// Alternating rounds of cache hits on `gw` and the same load on `bare`;
/// prints one row per round and the medians, returns the median ratio of
/// calls/s and of CPU time per call (gateway / bare).
pub(crate) async fn versus_bare(
    gw: &Proc,
    bare: &Proc,
    question: &Question,
    rounds: usize,
    seconds: u64,
) -> Result<(f64, f64), Error> {
    println!(
        "| round | gateway calls/s | gateway p50 | gateway p99 | gateway CPU per call | bare calls/s | bare p50 | bare p99 | bare CPU per call | ratio (calls/s) | ratio (CPU per call) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let (mut ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
    let (mut g_p50s, mut g_p99s, mut b_p50s, mut b_p99s) = (vec![], vec![], vec![], vec![]);
    let (mut g_cpus, mut b_cpus) = (vec![], vec![]);
    for round in 1..=rounds {
        let g = closed_loop(gw, question, CONCURRENCY, seconds).await?;
        let b = closed_loop(bare, question, CONCURRENCY, seconds).await?;
        if g.errors + b.errors > 0 {
            println!(
                "(round {round}: {} gateway errors, {} bare errors)",
                g.errors, b.errors
            );
        }
        ratios.push(g.per_sec / b.per_sec);
        cpu_ratios.push(g.cpu_us_per_call / b.cpu_us_per_call);
        g_p50s.push(g.p50.as_secs_f64());
        g_p99s.push(g.p99.as_secs_f64());
        b_p50s.push(b.p50.as_secs_f64());
        b_p99s.push(b.p99.as_secs_f64());
        g_cpus.push(g.cpu_us_per_call);
        b_cpus.push(b.cpu_us_per_call);
        println!(
            "| {round} | {:.0} | {} | {} | {:.1} µs | {:.0} | {} | {} | {:.1} µs | {:.3} | {:.2} |",
            g.per_sec,
            ms(g.p50),
            ms(g.p99),
            g.cpu_us_per_call,
            b.per_sec,
            ms(b.p50),
            ms(b.p99),
            b.cpu_us_per_call,
            g.per_sec / b.per_sec,
            g.cpu_us_per_call / b.cpu_us_per_call,
        );
    }
    let ratio = median(&mut ratios);
    let cpu_ratio = median(&mut cpu_ratios);
    let to_ms = |v: &mut Vec<f64>| Duration::from_secs_f64(median(v));
    println!(
        "| **median** | | {} | {} | {:.1} µs | | {} | {} | {:.1} µs | **{ratio:.3}** | **{cpu_ratio:.2}** |\n",
        ms(to_ms(&mut g_p50s)),
        ms(to_ms(&mut g_p99s)),
        median(&mut g_cpus),
        ms(to_ms(&mut b_p50s)),
        ms(to_ms(&mut b_p99s)),
        median(&mut b_cpus),
    );
    Ok((ratio, cpu_ratio))
}

pub(crate) async fn throughput(rounds: usize, seconds: u64) -> Result<(), Error> {
    at_least_one("--rounds", rounds as u64)?;
    at_least_one("--seconds", seconds)?;
    let sim = simulator(10, 10).await?;
    let gw = gateway(&sim, &["--cache-ttl", "1h"]).await?;
    let question = Question::job(&synthetic_job_id(3));
    // Warm the cache; the same answer is what the bare server returns.
    let (response, bare) = warm_and_bare(&gw, &question).await?;
    println!(
        "## 3. Cache-hit throughput: gateway vs a bare tonic server, 32 concurrent callers, {seconds} s per round\n"
    );
    println!(
        "Response size: {} bytes (protobuf).\n",
        response.encoded_len()
    );
    let (ratio, _) = versus_bare(&gw, &bare, &question, rounds, seconds).await?;
    let stats = sim_get(&sim, "/_sim/stats").await?;
    println!(
        "Upstream calls during the run: {} (the warm-up). Target: ratio >= 0.85. Result: {}\n",
        stats["describeJobCalls"],
        verdict(ratio >= 0.85)
    );
    Ok(())
}

/// Scenario 19: scenario 3 for DescribeJobExecution, one device's execution
/// of a rollout cached for an hour, on this build, optionally an older one
/// (`baseline`) and a bare tonic server, rounds interleaved.
pub(crate) async fn execution_throughput(
    rounds: usize,
    seconds: u64,
    baseline: Option<std::path::PathBuf>,
) -> Result<(), Error> {
    at_least_one("--rounds", rounds as u64)?;
    at_least_one("--seconds", seconds)?;
    let sim = simulator(0, 10).await?;
    create_job(&sim, "rollout").await?;
    let ttl = ["--cache-ttl", "1h"];
    let gw = gateway(&sim, &ttl).await?;
    let question = Question::Execution {
        job_id: "rollout".into(),
        thing_name: "fleet-3".into(),
    };
    let (response, bare) = warm_and_bare(&gw, &question).await?;
    let mut servers = vec![("gateway", gw)];
    if let Some(program) = baseline {
        let before = gateway_binary(program, &sim, &ttl).await?;
        warm_and_bare(&before, &question).await?;
        servers.push(("before", before));
    }
    servers.push(("bare", bare));
    println!(
        "## 19. DescribeJobExecution cache hits: gateway vs a bare tonic server, {CONCURRENCY} concurrent callers, {seconds} s per server per round, rounds interleaved\n"
    );
    println!(
        "Response size: {} bytes (protobuf).\n",
        response.encoded_len()
    );
    let measured = interleaved(servers, &question, rounds, seconds).await?;
    let (gw, bare) = (&measured[0], &measured[measured.len() - 1]);
    let (ratio, cpu_ratio) = (gw.ratio_to(bare), gw.cpu_ratio_to(bare));
    let stats = sim_get(&sim, "/_sim/stats").await?;
    println!(
        "\nUpstream DescribeJobExecution calls during the run: {} (the warm-ups). Targets: gateway / bare >= 0.85 ({ratio:.3}), CPU per call <= 1.1x ({cpu_ratio:.2}). Result: {}\n",
        stats["describeJobExecutionCalls"],
        verdict(ratio >= 0.85 && cpu_ratio <= 1.1)
    );
    Ok(())
}

pub(crate) async fn batch(items: usize) -> Result<(), Error> {
    at_least_one("--items", items as u64)?;
    let sim = simulator(items + 10, RATE as u32).await?;
    let gw = gateway(&sim, &["--upstream-operation-timeout", "60s"]).await?;
    let mut client = channels(gw.port, 1).await?.remove(0);
    let ids: Vec<String> = (0..items).map(synthetic_job_id).collect();
    let mut request = Request::new(pb::BatchDescribeJobsRequest {
        requests: ids
            .iter()
            .map(|id| pb::DescribeJobRequest {
                job_id: id.clone(),
                before_substitution: None,
            })
            .collect(),
    });
    request.set_timeout(Duration::from_secs(120));
    let started = Instant::now();
    let results = client
        .batch_describe_jobs(request)
        .await?
        .into_inner()
        .results;
    let took = started.elapsed().as_secs_f64();
    let in_order = results.iter().enumerate().all(|(i, r)| {
        r.index() as usize == i
            && r.job_id == ids[i]
            && matches!(&r.outcome, Some(pb::job_result::Outcome::Response(resp)) if resp.job.as_ref().is_some_and(|j| j.job_id() == ids[i]))
    });
    let allowed = (items as f64 - BURST).max(0.0) / RATE;
    let stats = sim_get(&sim, "/_sim/stats").await?;
    println!(
        "## 4. BatchDescribeJobs: {items} uncached distinct ids at {RATE}/s (burst {BURST})\n"
    );
    println!(
        "| items | all answered, in order | upstream calls | throttled | took | token bucket allows | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {items} | {in_order} | {} | {} | **{took:.2} s** | {allowed:.2} s | {:.3} |\n",
        stats["describeJobCalls"],
        stats["throttled"],
        took / allowed
    );
    println!(
        "Target: within 10% of the bucket's time, results in order. Result: {}\n",
        verdict(in_order && took <= allowed * 1.10)
    );
    Ok(())
}

pub(crate) async fn memory(jobs: usize) -> Result<(), Error> {
    at_least_one("--jobs", jobs as u64)?;
    let sim = simulator(jobs, 0).await?;
    let gw = gateway(
        &sim,
        &[
            "--upstream-rate",
            "100000",
            "--upstream-burst",
            "10000",
            "--upstream-max-waiters",
            "100000",
            "--cache-ttl",
            "1h",
            "--cache-max-mib",
            "4096",
        ],
    )
    .await?;
    let clients = channels(gw.port, 4).await?;
    // Warm up the process (connections, SDK, allocator) with one call.
    let mut first = clients[0].clone();
    let sample = first
        .describe_job(describe(&synthetic_job_id(0), Duration::from_secs(10)))
        .await?
        .into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = gw.rss_kib();

    const BATCH: usize = 1000;
    let started = Instant::now();
    let mut failed = 0;
    for chunk_start in (0..jobs).step_by(BATCH * 4) {
        let tasks: Vec<_> = (0..4)
            .filter_map(|c| {
                let start = chunk_start + c * BATCH;
                (start < jobs).then(|| {
                    let mut client = clients[c].clone();
                    let end = (start + BATCH).min(jobs);
                    tokio::spawn(async move {
                        let request = pb::BatchDescribeJobsRequest {
                            requests: (start..end)
                                .map(|i| pb::DescribeJobRequest {
                                    job_id: synthetic_job_id(i),
                                    before_substitution: None,
                                })
                                .collect(),
                        };
                        client.batch_describe_jobs(request).await
                    })
                })
            })
            .collect();
        for task in tasks {
            let results = task.await??.into_inner().results;
            failed += results
                .iter()
                .filter(|r| !matches!(r.outcome, Some(pb::job_result::Outcome::Response(_))))
                .count();
        }
    }
    let filled = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = gw.rss_kib();
    let per_job = (after.saturating_sub(before) * 1024) as f64 / jobs as f64;
    let estimate = iot_jobs_gateway::domain::cache::weight(
        &iot_jobs_gateway::upstream::JobQuery {
            job_id: synthetic_job_id(0),
            before_substitution: None,
        },
        &iot_jobs_gateway::domain::answer::JobAnswer::now(
            iot_jobs_gateway::domain::answer::JobState::Found(Arc::new(sample.clone())),
        ),
    );
    println!("## 5. Memory: gateway RSS with {jobs} cached jobs\n");
    println!(
        "| jobs cached | failed | fill time | RSS before | RSS after | per job | encoded job size | cache weigher's estimate |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {jobs} | {failed} | {:.1} s | {:.1} MiB | {:.1} MiB | **{per_job:.0} bytes** | {} bytes | {estimate} bytes |\n",
        filled.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        sample.encoded_len(),
    );
    Ok(())
}

// ---------------------------------------------------------------- watch streams
