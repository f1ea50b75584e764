//! Load generator for BENCHMARKS.md: runs the real `iot-jobs-gateway`
//! binary (gateway and simulator, each its own process on loopback) and
//! measures what the gateway promises about protecting AWS.
//!
//! ```text
//! cargo build --release --bins && target/release/loadgen all
//! ```
//!
//! Every scenario starts a fresh simulator and gateway, so one scenario's
//! cache or token bucket cannot help the next. The two watch scenarios take
//! about ten minutes together: `loadgen all --watch` adds them, or run
//! `loadgen watch-fanout` and `loadgen watch-budget` on their own.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
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
    /// 6. WatchJobs fan-out: AWS polls with 100 vs 10,000 streams, delivery latency, RSS per stream.
    WatchFanout(FanoutArgs),
    /// 7. WatchJobs on a short budget: 1,000 watched jobs polled at 10/s, oldest first.
    WatchBudget(BudgetArgs),
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
    /// Also run the two watch scenarios with their defaults (about ten more minutes).
    #[arg(long)]
    watch: bool,
}

#[derive(clap::Args)]
struct FanoutArgs {
    /// Watched jobs (synthetic, IN_PROGRESS).
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    /// Streams per job in step 2 (step 1 has one per job).
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// The gateway's --watch-poll-interval, in seconds: 20 s polls 100 jobs
    /// at 5/s, half the upstream budget, so the budget is not what limits polls.
    #[arg(long, default_value_t = 20)]
    poll_interval: u64,
    /// Seconds each measuring window lasts.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Seconds to wait after the streams are open before measuring.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Things per synthetic job: it stays IN_PROGRESS this many seconds.
    #[arg(long, default_value_t = 600)]
    group_size: usize,
}

#[derive(clap::Args)]
struct BudgetArgs {
    /// Watched jobs (synthetic, IN_PROGRESS), 100 per stream.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Seconds to watch after the streams open.
    #[arg(long, default_value_t = 330)]
    seconds: u64,
    /// Things per synthetic job: it stays IN_PROGRESS this many seconds.
    #[arg(long, default_value_t = 600)]
    group_size: usize,
}

/// A scenario's arguments with every default, for `all`.
fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"));
    T::from_arg_matches(&command.get_matches_from(["defaults"])).expect("defaults parse")
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
            if a.watch {
                watch_fanout(defaults()).await?;
                watch_budget(defaults()).await?;
            }
        }
        Scenario::Coalescing { calls } => coalescing(calls).await?,
        Scenario::Throttling { seconds } => throttling(seconds).await?,
        Scenario::Throughput { rounds, seconds } => throughput(rounds, seconds).await?,
        Scenario::Batch { items } => batch(items).await?,
        Scenario::Memory { jobs } => memory(jobs).await?,
        Scenario::WatchFanout(a) => watch_fanout(a).await?,
        Scenario::WatchBudget(a) => watch_budget(a).await?,
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

    /// CPU time the process used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid().to_string())
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

/// CPU time (user + system) of process `pid` ("self" for this one), in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields follow the command name in parentheses; utime and stime are
    // fields 14 and 15 of the line, in USER_HZ ticks (100 per second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
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
    simulator_with(jobs, rate_limit, &[]).await
}

/// The same, with extra flags.
async fn simulator_with(jobs: usize, rate_limit: u32, extra: &[&str]) -> Result<Proc, Error> {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "simulator".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--rate-limit".into(),
        rate_limit.to_string(),
        "--synthetic-jobs".into(),
        jobs.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
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

/// The most arrivals (µs, ascending) in any sliding 1 s window.
fn busiest_second(arrivals: &[u64]) -> usize {
    let mut busiest = 0;
    let mut j = 0;
    for i in 0..arrivals.len() {
        while j < arrivals.len() && arrivals[j] < arrivals[i] + 1_000_000 {
            j += 1;
        }
        busiest = busiest.max(j - i);
    }
    busiest
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

/// Synthetic jobs start one thing per second: they stay IN_PROGRESS about
/// `group_size` seconds, which must cover the scenario.
fn long_enough(group_size: usize, seconds: u64) -> Result<(), Error> {
    if (group_size as u64) < seconds {
        return Err(format!(
            "--group-size {group_size} keeps the jobs IN_PROGRESS only {group_size} s; this run needs about {seconds}"
        )
        .into());
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
    let estimate = iot_jobs_gateway::jobs::cache::weight(
        &iot_jobs_gateway::upstream::JobQuery {
            job_id: synthetic_job_id(0),
            before_substitution: None,
        },
        &iot_jobs_gateway::jobs::answer::JobAnswer::now(
            iot_jobs_gateway::jobs::answer::JobState::Found(Arc::new(sample.clone())),
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

/// WatchJobsResponse as the load generator reads it: the job event's id,
/// version, kind and `observed_at`. The job's state (most of each message) is
/// skipped unread, so the client, which shares the two cores with the
/// gateway, spends as little as it can per message.
#[derive(Clone, PartialEq, prost::Message)]
struct LightWatchResponse {
    #[prost(message, optional, tag = "1")]
    job: Option<LightJobEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LightJobEvent {
    #[prost(string, tag = "1")]
    job_id: String,
    #[prost(uint64, tag = "2")]
    version: u64,
    #[prost(int32, tag = "3")]
    kind: i32,
    #[prost(message, optional, tag = "8")]
    observed_at: Option<prost_types::Timestamp>,
}

/// A job event as one stream received it (times in µs since the Unix epoch).
#[derive(Clone, Copy)]
struct Received {
    /// Which of the stream's jobs (its index in the request).
    job: u32,
    version: u64,
    /// The stream's first state for the job (CURRENT), not a change.
    current: bool,
    observed_us: u64,
    received_us: u64,
}

/// What one stream received before it was stopped.
struct Watcher {
    jobs: Vec<String>,
    events: Vec<Received>,
    heartbeats: u64,
    error: Option<Status>,
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Opens a WatchJobs stream decoded with [`LightWatchResponse`].
async fn open_watch(
    channel: Channel,
    job_ids: Vec<String>,
) -> Result<tonic::Streaming<LightWatchResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("channel not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<pb::WatchJobsRequest, LightWatchResponse>::default();
    let request = Request::new(pb::WatchJobsRequest {
        job_ids,
        before_substitution: None,
        resume_from: Default::default(),
    });
    let path = ::http::uri::PathAndQuery::from_static("/iot.jobs.v1.JobsGateway/WatchJobs");
    Ok(grpc
        .server_streaming(request, path, codec)
        .await?
        .into_inner())
}

/// A stream watching `jobs` until `stop`; counts itself in `started` when
/// its first job event arrives.
fn spawn_watcher(
    channel: Channel,
    jobs: Vec<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    started: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Watcher> {
    tokio::spawn(async move {
        let mut watcher = Watcher {
            jobs,
            events: Vec::with_capacity(64),
            heartbeats: 0,
            error: None,
        };
        let index: HashMap<String, u32> = watcher
            .jobs
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        let mut stream = match open_watch(channel, watcher.jobs.clone()).await {
            Ok(stream) => stream,
            Err(status) => {
                watcher.error = Some(status);
                return watcher;
            }
        };
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                message = stream.message() => message,
            };
            let received_us = unix_us(SystemTime::now());
            match message {
                Ok(Some(LightWatchResponse { job: Some(event) })) => {
                    if watcher.events.is_empty() {
                        started.fetch_add(1, Ordering::Relaxed);
                    }
                    let observed_us = event.observed_at.map_or(0, |t| {
                        (t.seconds.max(0) as u64) * 1_000_000 + (t.nanos.max(0) as u64) / 1_000
                    });
                    watcher.events.push(Received {
                        job: index.get(&event.job_id).copied().unwrap_or(u32::MAX),
                        version: event.version,
                        current: event.kind == pb::job_event::Kind::Current as i32,
                        observed_us,
                        received_us,
                    });
                }
                Ok(Some(LightWatchResponse { job: None })) => watcher.heartbeats += 1,
                Ok(None) => break,
                Err(status) => {
                    watcher.error = Some(status);
                    break;
                }
            }
        }
        watcher
    })
}

/// Waits (at most `limit`) until `count` streams received their first event.
async fn wait_started(started: &AtomicUsize, count: usize, limit: Duration) -> Duration {
    let begun = Instant::now();
    while started.load(Ordering::Relaxed) < count && begun.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    begun.elapsed()
}

async fn raw_channels(port: u16, n: usize) -> Result<Vec<Channel>, Error> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            Channel::from_shared(format!("http://127.0.0.1:{port}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(out)
}

/// Upstream calls and CPU time over one measuring window.
struct Window {
    calls: u64,
    seconds: f64,
    /// Indices of the window's calls in the simulator's arrivals.
    first_call: usize,
    end_call: usize,
    /// CPU seconds used during the window by the gateway, the load
    /// generator (the watch clients) and the simulator.
    cpu: [f64; 3],
}

impl Window {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    fn cpu_percent(&self) -> String {
        let [g, l, s] = self.cpu.map(|c| c / self.seconds * 100.0);
        format!("{g:.0}% / {l:.0}% / {s:.0}%")
    }
}

async fn measure_window(sim: &Proc, gw: &Proc, seconds: u64) -> Result<Window, Error> {
    let calls = |stats: serde_json::Value| stats["describeJobCalls"].as_u64().unwrap_or(0);
    let cpu = || [gw.cpu_seconds(), cpu_seconds("self"), sim.cpu_seconds()];
    let before = calls(sim_get(sim, "/_sim/stats").await?);
    let cpu_before = cpu();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = calls(sim_get(sim, "/_sim/stats").await?);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu();
    Ok(Window {
        calls: after - before,
        seconds: elapsed,
        first_call: before as usize,
        end_call: after as usize,
        cpu: [0, 1, 2].map(|i| cpu_after[i] - cpu_before[i]),
    })
}

/// Intervals (s) between consecutive polls of each job, both inside the
/// simulator-time range `[from_us, to_us]`.
fn poll_intervals(polls: &serde_json::Value, from_us: u64, to_us: u64) -> Vec<f64> {
    let mut intervals = Vec::new();
    for times in polls.as_object().into_iter().flat_map(|m| m.values()) {
        let times: Vec<u64> = times
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_u64)
            .filter(|t| (from_us..=to_us).contains(t))
            .collect();
        intervals.extend(times.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e6));
    }
    intervals.sort_by(|a, b| a.total_cmp(b));
    intervals
}

fn percentile_f64(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn kib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

async fn watch_fanout(a: FanoutArgs) -> Result<(), Error> {
    at_least_one("--jobs", a.jobs as u64)?;
    at_least_one("--subscribers", a.subscribers as u64)?;
    at_least_one("--connections", a.connections as u64)?;
    at_least_one("--window", a.window)?;
    at_least_one("--poll-interval", a.poll_interval)?;
    // First round, two windows, two settles, opening the streams: the jobs
    // must still be rolling out at the end.
    let needed = 2 * (a.window + a.settle) + a.jobs as u64 / 10 + 120;
    long_enough(a.group_size, needed)?;
    let group = a.group_size.to_string();
    let sim = simulator_with(a.jobs, 0, &["--group-size", &group]).await?;
    let interval = format!("{}s", a.poll_interval);
    let gw = gateway(
        &sim,
        &["--upstream-rate", "10", "--watch-poll-interval", &interval],
    )
    .await?;
    let channels = raw_channels(gw.port, a.connections).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let ids: Vec<String> = (0..a.jobs).map(synthetic_job_id).collect();
    let mut watchers = Vec::with_capacity(a.jobs * a.subscribers);

    // Step 1: one stream per job.
    for (job, id) in ids.iter().enumerate() {
        let channel = channels[job % channels.len()].clone();
        watchers.push(spawn_watcher(
            channel,
            vec![id.clone()],
            stopped.clone(),
            started.clone(),
        ));
    }
    let limit = Duration::from_secs(300);
    let first_round = wait_started(&started, a.jobs, limit).await;
    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    let one = measure_window(&sim, &gw, a.window).await?;
    let rss_one = gw.rss_kib();

    // Step 2: up to `subscribers` streams per job, spread over the connections.
    let total = a.jobs * a.subscribers;
    let opening = Instant::now();
    for k in 1..a.subscribers {
        for (job, id) in ids.iter().enumerate() {
            let channel = channels[(job + k) % channels.len()].clone();
            watchers.push(spawn_watcher(
                channel,
                vec![id.clone()],
                stopped.clone(),
                started.clone(),
            ));
        }
    }
    wait_started(&started, total, limit).await;
    let opened = opening.elapsed();
    let streams_started = started.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    let rss_many = gw.rss_kib();
    let window_from = unix_us(SystemTime::now());
    let many = measure_window(&sim, &gw, a.window).await?;
    let window_to = unix_us(SystemTime::now());
    let rss_many_end = gw.rss_kib();
    // Changes observed at the end of the window still get delivered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send_replace(true);
    let mut results = Vec::with_capacity(watchers.len());
    for watcher in watchers {
        results.push(watcher.await?);
    }
    let errors: Vec<String> = results
        .iter()
        .filter_map(|w| {
            w.error
                .as_ref()
                .map(|s| format!("{:?}: {}", s.code(), s.message()))
        })
        .collect();
    let heartbeats: u64 = results.iter().map(|w| w.heartbeats).sum();

    // One answer's size, for context: a full job state as streams carry it.
    let mut client = JobsGatewayClient::new(channels[0].clone());
    let sample = client
        .describe_job(describe(&ids[0], Duration::from_secs(10)))
        .await?
        .into_inner();

    // Fan-out latency: per (job, version) changed during the window, the
    // last subscriber's receive time minus when AWS answered the poll.
    let mut changes: HashMap<(String, u64), (u64, u64, u64, usize)> = HashMap::new();
    for watcher in &results {
        for e in &watcher.events {
            if e.current || !(window_from..=window_to).contains(&e.observed_us) {
                continue;
            }
            let id = watcher
                .jobs
                .get(e.job as usize)
                .cloned()
                .unwrap_or_default();
            let entry = changes.entry((id, e.version)).or_insert((
                e.observed_us,
                e.received_us,
                e.received_us,
                0,
            ));
            entry.1 = entry.1.min(e.received_us);
            entry.2 = entry.2.max(e.received_us);
            entry.3 += 1;
        }
    }
    let to_duration = |us: u64| Duration::from_micros(us);
    let mut last: Vec<Duration> = changes
        .values()
        .map(|(observed, _, last, _)| to_duration(last.saturating_sub(*observed)))
        .collect();
    let mut first: Vec<Duration> = changes
        .values()
        .map(|(observed, first, _, _)| to_duration(first.saturating_sub(*observed)))
        .collect();
    last.sort_unstable();
    first.sort_unstable();
    let complete = changes.values().filter(|c| c.3 == a.subscribers).count();

    // Each job's poll intervals inside each window, from the simulator.
    let arrivals: Vec<u64> = sim_get(&sim, "/_sim/calls").await?["arrivalsUs"]
        .as_array()
        .ok_or("no arrivals")?
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    let polls = sim_get(&sim, "/_sim/polls").await?;
    let range = |w: &Window| {
        let from = arrivals.get(w.first_call).copied().unwrap_or(0);
        let to = arrivals
            .get(w.end_call.saturating_sub(1))
            .copied()
            .unwrap_or(u64::MAX);
        poll_intervals(&polls, from, to)
    };
    let (intervals_one, intervals_many) = (range(&one), range(&many));

    let ratio = many.rate() / one.rate();
    let per_stream = (rss_many.saturating_sub(rss_one) * 1024) as f64 / (total - a.jobs) as f64;
    let per_stream_end =
        (rss_many_end.saturating_sub(rss_one) * 1024) as f64 / (total - a.jobs) as f64;
    let p99 = percentile(&last, 0.99);

    println!(
        "## 6. Watch fan-out: {} jobs, {} then {total} streams over {} connections (poll interval {} s, rate 10/s)\n",
        a.jobs, a.jobs, a.connections, a.poll_interval
    );
    println!(
        "Setup: first state on all {} streams {:.1} s after opening them; the other {} streams opened and had their first state in {:.1} s ({streams_started} of {total} started). Each job changes every second; a job state is {} bytes as protobuf. Stream errors: {}; heartbeats received: {heartbeats}.\n",
        a.jobs,
        first_round.as_secs_f64(),
        total - a.jobs,
        opened.as_secs_f64(),
        sample.encoded_len(),
        if errors.is_empty() {
            "none".to_owned()
        } else {
            format!("{} ({:?})", errors.len(), &errors[..errors.len().min(3)])
        },
    );
    println!(
        "| streams open | window | upstream calls | upstream calls/s | per-job poll interval median / max | CPU gateway / client / simulator | gateway RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (streams, w, intervals, rss) in [
        (a.jobs, &one, &intervals_one, rss_one),
        (total, &many, &intervals_many, rss_many),
    ] {
        println!(
            "| {streams} | {:.1} s | {} | **{:.2}/s** | {:.1} s / {:.1} s | {} | {} |",
            w.seconds,
            w.calls,
            w.rate(),
            percentile_f64(intervals, 0.5),
            percentile_f64(intervals, 1.0),
            w.cpu_percent(),
            kib(rss),
        );
    }
    println!(
        "\nUpstream rate with {total} streams / with {}: **{ratio:.3}** (target ≈ 1). Result: {}\n",
        a.jobs,
        verdict((0.9..=1.1).contains(&ratio))
    );
    println!(
        "| changes during the window | delivered to all {} subscribers | first subscriber p50 | last subscriber p50 | p99 | max |",
        a.subscribers
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {complete} | {} | {} | **{}** | {} |\n",
        changes.len(),
        ms(percentile(&first, 0.5)),
        ms(percentile(&last, 0.5)),
        ms(p99),
        ms(percentile(&last, 1.0)),
    );
    println!(
        "Target: fan-out p99 (AWS answer to the last subscriber) < 100 ms. Result: {}\n",
        verdict(!last.is_empty() && p99 < Duration::from_millis(100) && complete == changes.len())
    );
    println!(
        "| RSS, {} streams | RSS, {total} streams (after {} s) | per extra stream | RSS at the window's end | per extra stream |",
        a.jobs, a.settle
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {} | **{per_stream:.0} bytes** | {} | {per_stream_end:.0} bytes |\n",
        kib(rss_one),
        kib(rss_many),
        kib(rss_many_end),
    );
    println!(
        "Target: < 16 KiB (16384 bytes) per stream. Result: {}\n",
        verdict(per_stream < 16384.0)
    );
    Ok(())
}

async fn watch_budget(a: BudgetArgs) -> Result<(), Error> {
    at_least_one("--jobs", a.jobs as u64)?;
    at_least_one("--seconds", a.seconds)?;
    const PER_STREAM: usize = 100;
    const INTERVAL_S: f64 = 5.0;
    long_enough(a.group_size, a.seconds + 60)?;
    let group = a.group_size.to_string();
    let sim = simulator_with(a.jobs, RATE as u32, &["--group-size", &group]).await?;
    let gw = gateway(
        &sim,
        &[
            "--upstream-rate",
            "10",
            "--upstream-burst",
            "5",
            "--watch-poll-interval",
            "5s",
        ],
    )
    .await?;
    let channel = raw_channels(gw.port, 1).await?.remove(0);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let ids: Vec<String> = (0..a.jobs).map(synthetic_job_id).collect();
    let watchers: Vec<_> = ids
        .chunks(PER_STREAM)
        .map(|chunk| {
            spawn_watcher(
                channel.clone(),
                chunk.to_vec(),
                stopped.clone(),
                started.clone(),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let stats = sim_get(&sim, "/_sim/stats").await?;
    let polls = sim_get(&sim, "/_sim/polls").await?;
    stop.send_replace(true);
    let mut results = Vec::new();
    for watcher in watchers {
        results.push(watcher.await?);
    }
    let errors = results.iter().filter(|w| w.error.is_some()).count();
    let events: usize = results.iter().map(|w| w.events.len()).sum();
    let with_state = results
        .iter()
        .map(|w| {
            let mut seen: Vec<u32> = w.events.iter().map(|e| e.job).collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        })
        .sum::<usize>();

    let per_job: Vec<Vec<u64>> = ids
        .iter()
        .map(|id| {
            polls[id]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_u64)
                .collect()
        })
        .collect();
    let mut intervals = poll_intervals(&polls, 0, u64::MAX);
    intervals.sort_by(|x, y| x.total_cmp(y));
    let ideal = a.jobs as f64 / RATE;
    let over = intervals.iter().filter(|i| **i > ideal * 1.1).count();
    let polled_thrice = per_job.iter().filter(|p| p.len() >= 3).count();
    let fewest = per_job.iter().map(Vec::len).min().unwrap_or(0);
    let first_polls: Vec<u64> = per_job.iter().filter_map(|p| p.first().copied()).collect();
    let initial_round = match (first_polls.iter().min(), first_polls.iter().max()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e6,
        _ => f64::NAN,
    };
    let mut arrivals: Vec<u64> = per_job.iter().flatten().copied().collect();
    arrivals.sort_unstable();
    let busiest = busiest_second(&arrivals);
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => 0.0,
    };
    let sustained = if span > 0.0 {
        (arrivals.len() as f64 - 1.0) / span
    } else {
        0.0
    };
    let demand = a.jobs as f64 / INTERVAL_S;

    println!(
        "## 7. Watch budget: {} jobs watched ({} streams of up to {PER_STREAM}), poll interval {INTERVAL_S} s, rate {RATE}/s, burst {BURST}, {} s\n",
        a.jobs,
        a.jobs.div_ceil(PER_STREAM),
        a.seconds
    );
    println!(
        "Polls wanted: {demand:.0}/s; budget: {RATE}/s, so each job can be polled every {ideal:.0} s at best. Streams: {} with errors; {events} job events received; {with_state} of {} jobs got their first state. Throttled by the simulator: {}.\n",
        errors, a.jobs, stats["throttled"],
    );
    println!(
        "| polls | first poll of every job within | jobs polled 3+ times | intervals | min | median | p99 | max | intervals > {:.0} s |",
        ideal * 1.1
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {initial_round:.1} s | {polled_thrice} of {} (fewest: {fewest}) | {} | {:.2} s | **{:.2} s** | **{:.2} s** | **{:.2} s** | {over} |\n",
        arrivals.len(),
        a.jobs,
        intervals.len(),
        percentile_f64(&intervals, 0.0),
        percentile_f64(&intervals, 0.5),
        percentile_f64(&intervals, 0.99),
        percentile_f64(&intervals, 1.0),
    );
    println!(
        "| sustained poll rate | busiest 1 s window (limit {}) |",
        RATE + BURST
    );
    println!("|---|---|");
    println!("| **{sustained:.2}/s** | **{busiest}** |\n");
    let pass = polled_thrice == a.jobs
        && over == 0
        && (percentile_f64(&intervals, 0.5) - ideal).abs() <= 0.1 * ideal
        && busiest as f64 <= RATE + BURST;
    println!(
        "Targets: every job polled every ~{ideal:.0} s (median within 10%, none above {:.0} s), busiest window <= rate + burst. Result: {}\n",
        ideal * 1.1,
        verdict(pass)
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

    type StreamDescribeJobsStream = iot_jobs_gateway::grpc::service::JobResultStream;

    async fn stream_describe_jobs(
        &self,
        _request: Request<pb::BatchDescribeJobsRequest>,
    ) -> Result<Response<Self::StreamDescribeJobsStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    type WatchJobsStream = iot_jobs_gateway::grpc::service::WatchEventStream;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn all_watch_runs_the_watch_scenarios_with_their_defaults() {
        let fanout: FanoutArgs = defaults();
        assert_eq!(
            (fanout.jobs, fanout.subscribers, fanout.connections),
            (100, 100, 100)
        );
        assert_eq!((fanout.poll_interval, fanout.window), (20, 60));
        let budget: BudgetArgs = defaults();
        assert_eq!(
            (budget.jobs, budget.seconds, budget.group_size),
            (1000, 330, 600)
        );
    }
}
