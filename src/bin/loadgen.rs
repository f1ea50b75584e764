//! Load generator for BENCHMARKS.md: runs the real `iot-jobs-gateway`
//! binary (gateway and simulator, each its own process on loopback) and
//! measures what the gateway promises about protecting AWS.
//!
//! ```text
//! cargo build --release --bins && target/release/loadgen all
//! ```
//!
//! Every scenario starts a fresh simulator and gateway, so one scenario's
//! cache or token bucket cannot help the next.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use iot_jobs_gateway::{
    pb::{self, jobs_gateway_client::JobsGatewayClient, jobs_gateway_server::JobsGatewayServer},
    simulator::{http, seed::synthetic_job_id},
};
use prost::Message;
use tokio::{
    net::TcpStream,
    process::{Child, Command},
};
use tonic::{Code, Request, Response, Status, transport::Channel};

/// Measures the gateway against the simulator; prints Markdown.
#[derive(Parser)]
#[command(name = "loadgen")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Every scenario below, in order.
    All(AllArgs),
    /// 1. Concurrent identical DescribeJob calls for a cold job.
    Coalescing {
        #[arg(long, default_value_t = 1000)]
        calls: usize,
    },
    /// 2. Demand 10x the rate on distinct jobs; upstream rate at the simulator.
    Throttling {
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// 3. Cache-hit throughput against a bare tonic server.
    Throughput {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// 4. One BatchDescribeJobs of uncached ids through the rate limit.
    Batch {
        #[arg(long, default_value_t = 100)]
        items: usize,
    },
    /// 5. Gateway RSS with many cached jobs.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
    },
    /// (internal) A bare tonic server answering DescribeJob with a fixed response.
    #[command(hide = true)]
    BareServer { port: u16, response_file: PathBuf },
}

#[derive(clap::Args)]
struct AllArgs {
    #[arg(long, default_value_t = 30)]
    throttling_seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 100_000)]
    memory_jobs: usize,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The gateway's default rate and burst, which scenarios 2 and 4 measure.
const RATE: f64 = 10.0;
const BURST: f64 = 5.0;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::All(a) => {
            machine();
            coalescing(1000).await?;
            throttling(a.throttling_seconds).await?;
            throughput(a.rounds, a.seconds).await?;
            batch(100).await?;
            memory(a.memory_jobs).await?;
        }
        Scenario::Coalescing { calls } => coalescing(calls).await?,
        Scenario::Throttling { seconds } => throttling(seconds).await?,
        Scenario::Throughput { rounds, seconds } => throughput(rounds, seconds).await?,
        Scenario::Batch { items } => batch(items).await?,
        Scenario::Memory { jobs } => memory(jobs).await?,
        Scenario::BareServer {
            port,
            response_file,
        } => bare_server(port, response_file).await?,
    }
    Ok(())
}

fn machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## Machine\n\n{cores} cores, {cpu}\n");
}

// ---------------------------------------------------------------- processes

/// A child process of the real binary, killed when dropped.
struct Proc {
    child: Child,
    port: u16,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.with_file_name(name)
}

fn log_file(name: &str) -> std::fs::File {
    let dir = sibling("loadgen-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file")
}

async fn spawn(
    program: PathBuf,
    args: &[String],
    env: &[(&str, &str)],
    log: &str,
    port: u16,
) -> Result<Proc, Error> {
    let child = Command::new(&program)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log_file(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} ({e}); run `cargo build --release --bins` first",
                program.display()
            )
        })?;
    let mut proc = Proc { child, port };
    // Ready when it accepts connections (bounded: 120 s for big fleets).
    for _ in 0..1200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(proc);
        }
        if let Some(status) = proc.child.try_wait()? {
            return Err(format!("{log} exited ({status}); see its log in loadgen-logs/").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{log} did not start listening on port {port}").into())
}

/// The simulator with `jobs` synthetic jobs and AWS's rate limit (or none).
async fn simulator(jobs: usize, rate_limit: u32) -> Result<Proc, Error> {
    let port = free_port();
    let args = [
        "simulator".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--rate-limit".into(),
        rate_limit.to_string(),
        "--synthetic-jobs".into(),
        jobs.to_string(),
    ];
    spawn(sibling("iot-jobs-gateway"), &args, &[], "simulator", port).await
}

/// The gateway in front of `sim`, with extra flags.
async fn gateway(sim: &Proc, extra: &[&str]) -> Result<Proc, Error> {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--region".into(),
        "us-east-1".into(),
        "--endpoint-url".into(),
        format!("http://127.0.0.1:{}", sim.port),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    // Static credentials, so the SDK never looks further for them.
    let env = [
        ("AWS_ACCESS_KEY_ID", "loadgen"),
        ("AWS_SECRET_ACCESS_KEY", "loadgen"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    spawn(sibling("iot-jobs-gateway"), &args, &env, "gateway", port).await
}

async fn channels(port: u16, n: usize) -> Result<Vec<JobsGatewayClient<Channel>>, Error> {
    let mut out = Vec::new();
    for _ in 0..n {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        out.push(JobsGatewayClient::new(channel).max_decoding_message_size(64 * 1024 * 1024));
    }
    Ok(out)
}

/// GET on the simulator's admin API.
async fn sim_get(sim: &Proc, path: &str) -> Result<serde_json::Value, Error> {
    sim_request(sim, "GET", path, "").await
}

/// One exchange with the simulator's admin API; the JSON body of the
/// answer (null when empty).
async fn sim_request(
    sim: &Proc,
    method: &str,
    path: &str,
    body: &str,
) -> Result<serde_json::Value, Error> {
    let addr = format!("127.0.0.1:{}", sim.port);
    let (status, body) = http::admin_request(&addr, method, path, body).await?;
    if !(200..300).contains(&status) {
        return Err(format!("simulator answered {status} to {method} {path}: {body}").into());
    }
    if body.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::from_str(&body)?)
}

fn describe(id: &str, timeout: Duration) -> Request<pb::DescribeJobRequest> {
    let mut request = Request::new(pb::DescribeJobRequest {
        job_id: id.to_owned(),
        before_substitution: None,
    });
    request.set_timeout(timeout);
    request
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------- scenarios

async fn coalescing(calls: usize) -> Result<(), Error> {
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

fn at_least_one(flag: &str, value: u64) -> Result<(), Error> {
    if value == 0 {
        return Err(format!("{flag} must be at least 1").into());
    }
    Ok(())
}

fn verdict(pass: bool) -> &'static str {
    if pass { "**met**" } else { "**NOT met**" }
}

async fn throttling(seconds: u64) -> Result<(), Error> {
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
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(started + interval * i as u32).await;
        let mut client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            client
                .describe_job(describe(&synthetic_job_id(i), Duration::from_secs(2)))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }));
    }
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
    let arrivals: Vec<u64> = sim_get(&sim, "/_sim/calls").await?["arrivalsUs"]
        .as_array()
        .ok_or("no arrivals")?
        .iter()
        .skip(before)
        .filter_map(serde_json::Value::as_u64)
        .collect();
    let throttled = stats["throttled"].as_u64().unwrap_or(0);

    // Busiest sliding 1 s window, and per-second counts over the run.
    let mut busiest = 0;
    let mut j = 0;
    for i in 0..arrivals.len() {
        while j < arrivals.len() && arrivals[j] < arrivals[i] + 1_000_000 {
            j += 1;
        }
        busiest = busiest.max(j - i);
    }
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

/// Closed-loop load: `concurrency` callers for `seconds`; calls/s and latencies.
async fn closed_loop(
    port: u16,
    id: &str,
    concurrency: usize,
    seconds: u64,
) -> Result<(f64, Duration, Duration, usize), Error> {
    let clients = channels(port, 4).await?;
    let end = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < end {
                    let t = Instant::now();
                    match client
                        .describe_job(describe(&id, Duration::from_secs(5)))
                        .await
                    {
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
    all.sort_unstable();
    Ok((
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        errors,
    ))
}

async fn throughput(rounds: usize, seconds: u64) -> Result<(), Error> {
    at_least_one("--rounds", rounds as u64)?;
    at_least_one("--seconds", seconds)?;
    const CONCURRENCY: usize = 32;
    let sim = simulator(10, 10).await?;
    let gw = gateway(&sim, &["--cache-ttl", "1h"]).await?;
    let id = synthetic_job_id(3);
    // Warm the cache; the same answer is what the bare server returns.
    let mut client = channels(gw.port, 1).await?.remove(0);
    let response = client
        .describe_job(describe(&id, Duration::from_secs(10)))
        .await?
        .into_inner();
    let file = sibling("loadgen-logs").join("response.bin");
    std::fs::write(&file, response.encode_to_vec())?;
    let bare_port = free_port();
    let bare = spawn(
        std::env::current_exe()?,
        &[
            "bare-server".into(),
            bare_port.to_string(),
            file.display().to_string(),
        ],
        &[],
        "bare-server",
        bare_port,
    )
    .await?;

    println!(
        "## 3. Cache-hit throughput: gateway vs a bare tonic server, {CONCURRENCY} concurrent callers, {seconds} s per round\n"
    );
    println!(
        "Response size: {} bytes (protobuf).\n",
        response.encoded_len()
    );
    println!(
        "| round | gateway calls/s | gateway p50 | gateway p99 | bare calls/s | bare p50 | bare p99 | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    let (mut g_p50s, mut g_p99s, mut b_p50s, mut b_p99s) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let (g, g50, g99, ge) = closed_loop(gw.port, &id, CONCURRENCY, seconds).await?;
        let (b, b50, b99, be) = closed_loop(bare.port, &id, CONCURRENCY, seconds).await?;
        if ge + be > 0 {
            println!("(round {round}: {ge} gateway errors, {be} bare errors)");
        }
        ratios.push(g / b);
        g_p50s.push(g50.as_secs_f64());
        g_p99s.push(g99.as_secs_f64());
        b_p50s.push(b50.as_secs_f64());
        b_p99s.push(b99.as_secs_f64());
        println!(
            "| {round} | {g:.0} | {} | {} | {b:.0} | {} | {} | {:.3} |",
            ms(g50),
            ms(g99),
            ms(b50),
            ms(b99),
            g / b
        );
    }
    let stats = sim_get(&sim, "/_sim/stats").await?;
    let ratio = median(&mut ratios);
    let to_ms = |v: &mut Vec<f64>| Duration::from_secs_f64(median(v));
    println!(
        "| **median** | | {} | {} | | {} | {} | **{ratio:.3}** |\n",
        ms(to_ms(&mut g_p50s)),
        ms(to_ms(&mut g_p99s)),
        ms(to_ms(&mut b_p50s)),
        ms(to_ms(&mut b_p99s)),
    );
    println!(
        "Upstream calls during the run: {} (the warm-up). Target: ratio >= 0.85. Result: {}\n",
        stats["describeJobCalls"],
        verdict(ratio >= 0.85)
    );
    Ok(())
}

async fn batch(items: usize) -> Result<(), Error> {
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

async fn memory(jobs: usize) -> Result<(), Error> {
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
    let estimate = iot_jobs_gateway::cache::weight(
        &iot_jobs_gateway::upstream::JobQuery {
            job_id: synthetic_job_id(0),
            before_substitution: None,
        },
        &iot_jobs_gateway::cache::Entry {
            answer: iot_jobs_gateway::cache::Answer::Found(Arc::new(sample.clone())),
            answered_at: tokio::time::Instant::now(),
        },
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

// ---------------------------------------------------------------- bare server

/// Returns one fixed response: the most a tonic service can do per call on
/// this machine, the ceiling the gateway is compared with.
struct Bare {
    response: Arc<pb::DescribeJobResponse>,
}

#[tonic::async_trait]
impl pb::jobs_gateway_server::JobsGateway for Bare {
    async fn describe_job(
        &self,
        _request: Request<pb::DescribeJobRequest>,
    ) -> Result<Response<pb::DescribeJobResponse>, Status> {
        Ok(Response::new(pb::DescribeJobResponse::clone(
            &self.response,
        )))
    }

    async fn batch_describe_jobs(
        &self,
        _request: Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<Response<pb::BatchDescribeJobsResponse>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    type StreamDescribeJobsStream = iot_jobs_gateway::service::JobResultStream;

    async fn stream_describe_jobs(
        &self,
        _request: Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<Response<Self::StreamDescribeJobsStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    type WatchJobsStream = iot_jobs_gateway::service::WatchEventStream;

    async fn watch_jobs(
        &self,
        _request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }
}

async fn bare_server(port: u16, response_file: PathBuf) -> Result<(), Error> {
    let response = pb::DescribeJobResponse::decode(std::fs::read(response_file)?.as_slice())?;
    let service = JobsGatewayServer::new(Bare {
        response: Arc::new(response),
    });
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}
