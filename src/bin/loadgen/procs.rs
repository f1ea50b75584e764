//! The processes a scenario runs (the real binary as simulator and gateway)
//! and the small helpers every scenario uses.

use std::{path::PathBuf, process::Stdio, time::Duration};

use iot_jobs_gateway::{
    pb::{self, jobs_gateway_client::JobsGatewayClient},
    simulator::{http, seed::synthetic_job_id},
};
use tokio::{
    net::TcpStream,
    process::{Child, Command},
};
use tonic::{Code, Request, transport::Channel};

use crate::Error;

pub(crate) use iot_jobs_gateway::simulator::busiest_second;

/// A child process of the real binary, killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// CPU time the process used so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid().to_string())
    }

    /// Resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
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
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
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

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub(crate) fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.with_file_name(name)
}

pub(crate) fn log_file(name: &str) -> std::fs::File {
    let dir = sibling("loadgen-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file")
}

/// `name` from `PATH` (or /usr/bin, /usr/sbin); else an error naming the
/// Debian/Ubuntu `package` that `scenario` needs.
pub(crate) fn installed(name: &str, package: &str, scenario: &str) -> Result<PathBuf, Error> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "{scenario} needs {name}: install the Debian/Ubuntu package {package} \
                 (apt-get install {package})"
            )
            .into()
        })
}

pub(crate) async fn spawn(
    program: PathBuf,
    args: &[String],
    env: &[(&str, &str)],
    log: &str,
    port: u16,
) -> Result<Proc, Error> {
    spawn_under(&[], program, args, env, log, port).await
}

/// The same, run by `launcher` (a tool and its flags, such as valgrind's
/// callgrind) when it is not empty.
pub(crate) async fn spawn_under(
    launcher: &[String],
    program: PathBuf,
    args: &[String],
    env: &[(&str, &str)],
    log: &str,
    port: u16,
) -> Result<Proc, Error> {
    let mut command = match launcher.split_first() {
        None => Command::new(&program),
        Some((tool, tool_args)) => {
            let mut command = Command::new(tool);
            command.args(tool_args).arg(&program);
            command
        }
    };
    let child = command
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
pub(crate) async fn simulator(jobs: usize, rate_limit: u32) -> Result<Proc, Error> {
    simulator_with(jobs, rate_limit, &[]).await
}

/// The same, with extra flags.
pub(crate) async fn simulator_with(
    jobs: usize,
    rate_limit: u32,
    extra: &[&str],
) -> Result<Proc, Error> {
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
pub(crate) async fn gateway(sim: &Proc, extra: &[&str]) -> Result<Proc, Error> {
    gateway_binary(sibling("iot-jobs-gateway"), sim, extra).await
}

/// A gateway in front of `sim` whose log is `loadgen-logs/<name>.log`.
pub(crate) async fn gateway_named(sim: &Proc, extra: &[&str], name: &str) -> Result<Proc, Error> {
    start_gateway(sibling("iot-jobs-gateway"), sim, extra, name).await
}

/// A gateway from `program` (another build, for a side-by-side run) in
/// front of `sim`, with extra flags.
pub(crate) async fn gateway_binary(
    program: PathBuf,
    sim: &Proc,
    extra: &[&str],
) -> Result<Proc, Error> {
    start_gateway(program, sim, extra, "gateway").await
}

/// A gateway from `program` in front of `sim`, with extra flags, logging to `log`.
pub(crate) async fn start_gateway(
    program: PathBuf,
    sim: &Proc,
    extra: &[&str],
    log: &str,
) -> Result<Proc, Error> {
    start_gateway_under(&[], program, sim, extra, log).await
}

/// The same, run by `launcher` (see [`spawn_under`]).
pub(crate) async fn start_gateway_under(
    launcher: &[String],
    program: PathBuf,
    sim: &Proc,
    extra: &[&str],
    log: &str,
) -> Result<Proc, Error> {
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
    spawn_under(launcher, program, &args, &env, log, port).await
}

pub(crate) async fn channels(
    port: u16,
    n: usize,
) -> Result<Vec<JobsGatewayClient<Channel>>, Error> {
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
pub(crate) async fn sim_get(sim: &Proc, path: &str) -> Result<serde_json::Value, Error> {
    sim_request(sim, "GET", path, "").await
}

/// One exchange with the simulator's admin API; the JSON body of the
/// answer (null when empty).
pub(crate) async fn sim_request(
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

/// Creates job `job_id` on `sim` for the thing group `fleet`: one execution
/// per thing of the group (`fleet-1`, `fleet-2`, …).
pub(crate) async fn create_job(sim: &Proc, job_id: &str) -> Result<(), Error> {
    let body =
        r#"{"targets": ["arn:aws:iot:us-east-1:123456789012:thinggroup/fleet"], "document": "{}"}"#;
    sim_request(sim, "PUT", &format!("/jobs/{job_id}"), body).await?;
    Ok(())
}

pub(crate) fn describe(id: &str, timeout: Duration) -> Request<pb::DescribeJobRequest> {
    let mut request = Request::new(pb::DescribeJobRequest {
        job_id: id.to_owned(),
        before_substitution: None,
    });
    request.set_timeout(timeout);
    request
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// DescribeJob of synthetic job `i` on the next of `clients`, with a 2 s
/// deadline, in the background: its gRPC code if it fails.
pub(crate) fn spawn_call(
    clients: &[JobsGatewayClient<Channel>],
    i: usize,
) -> tokio::task::JoinHandle<Result<(), Code>> {
    let mut client = clients[i % clients.len()].clone();
    tokio::spawn(async move {
        client
            .describe_job(describe(&synthetic_job_id(i), Duration::from_secs(2)))
            .await
            .map(|_| ())
            .map_err(|s| s.code())
    })
}

/// An open loop: synthetic jobs 0 to `count`, one call every `interval`.
pub(crate) async fn open_loop(
    clients: &[JobsGatewayClient<Channel>],
    count: usize,
    interval: Duration,
) -> Vec<tokio::task::JoinHandle<Result<(), Code>>> {
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(started + interval * i as u32).await;
        tasks.push(spawn_call(clients, i));
    }
    tasks
}

/// When each DescribeJob the simulator remembers arrived (µs since it
/// started).
pub(crate) async fn sim_arrivals(sim: &Proc) -> Result<Vec<u64>, Error> {
    Ok(sim_get(sim, "/_sim/calls").await?["arrivalsUs"]
        .as_array()
        .ok_or("no arrivals")?
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect())
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub(crate) fn at_least_one(flag: &str, value: u64) -> Result<(), Error> {
    if value == 0 {
        return Err(format!("{flag} must be at least 1").into());
    }
    Ok(())
}

/// Synthetic jobs start one thing per second: they stay IN_PROGRESS about
/// `group_size` seconds, which must cover the scenario.
pub(crate) fn long_enough(group_size: usize, seconds: u64) -> Result<(), Error> {
    if (group_size as u64) < seconds {
        return Err(format!(
            "--group-size {group_size} keeps the jobs IN_PROGRESS only {group_size} s; this run needs about {seconds}"
        )
        .into());
    }
    Ok(())
}

pub(crate) fn verdict(pass: bool) -> &'static str {
    if pass { "**met**" } else { "**NOT met**" }
}
