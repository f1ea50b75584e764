//! Scenario 16: how soon a watched job's change reaches its watchers with
//! AWS IoT Jobs events and without, side by side in one run.
//!
//! A Mosquitto broker on a free loopback port, and two setups, each a
//! simulator with the same synthetic jobs (kept IN_PROGRESS, no rate limit
//! of its own) and a gateway on AWS's budget (10 calls/s, burst 5) with
//! the default `--watch-poll-interval` (5 s) watching all of them: in (a)
//! the simulator publishes AWS IoT Jobs events to the broker and the
//! gateway subscribes (`--events-mqtt-url`), in (b) neither. Once every job
//! has its first state on both, some jobs picked at random are
//! force-canceled through the simulators' admin API at random moments, the
//! same job at the same moment on both sides. A change's latency runs from
//! its CancelJob request to the first watch event that carries CANCELED.

use std::{
    collections::HashSet,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use iot_jobs_gateway::{pb, simulator::seed::synthetic_job_id};
use tokio::{
    process::{Child, Command},
    time::Instant,
};
use tonic::{Request, Status, transport::Channel};

use crate::{
    BURST, Error, RATE,
    procs::*,
    watch::{WATCH_BUDGET, raw_channels, unix_us},
};

/// Options of `loadgen watch-events`.
#[derive(clap::Args)]
pub(crate) struct WatchEventsArgs {
    /// Watched jobs (synthetic, IN_PROGRESS), 100 per stream, on each side.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Jobs that change status (force-canceled), each at a random moment.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Seconds the changes are spread over, once every job has its first state.
    #[arg(long, default_value_t = 100)]
    over: u64,
    /// Seconds after the last change to wait for changes not yet delivered.
    #[arg(long, default_value_t = 120)]
    tail: u64,
    /// Picks the changed jobs and their moments.
    #[arg(long, default_value_t = 16)]
    seed: u64,
    /// Things per synthetic job: it stays IN_PROGRESS this many seconds.
    #[arg(long, default_value_t = 600)]
    group_size: usize,
}

/// Jobs per watch stream.
const PER_STREAM: usize = 100;
/// The Debian/Ubuntu package that has the broker.
const PACKAGE: &str = "mosquitto";

/// A Mosquitto broker on a free loopback port: anonymous, no persistence,
/// run under `timeout` so that it ends on its own even if the load
/// generator is killed; stopped at the end of the scenario.
struct Broker {
    /// `timeout`, whose child is mosquitto (it forwards SIGTERM).
    child: Child,
    port: u16,
    /// Holds the generated configuration.
    dir: PathBuf,
}

impl Broker {
    async fn start(lifetime: Duration) -> Result<Self, Error> {
        let binary = installed("mosquitto", PACKAGE, "loadgen watch-events")?;
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("loadgen-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n"
            ),
        )?;
        let child = Command::new("timeout")
            .arg("--kill-after=5s")
            .arg(format!("{}s", lifetime.as_secs()))
            .arg(&binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file("mosquitto"))
            .spawn()
            .map_err(|e| format!("cannot start {} under timeout: {e}", binary.display()))?;
        let mut broker = Self { child, port, dir };
        for _ in 0..100 {
            if broker.connack().await {
                return Ok(broker);
            }
            if let Some(status) = broker.child.try_wait()? {
                return Err(
                    format!("mosquitto exited ({status}); see loadgen-logs/mosquitto.log").into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("mosquitto did not accept MQTT connections on port {port}").into())
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Whether the broker accepts an MQTT connection.
    async fn connack(&self) -> bool {
        iot_jobs_gateway::events::mqtt::accepts_connect(self.port).await
    }

    /// CPU seconds used by mosquitto (the child of `timeout`).
    fn cpu_seconds(&self) -> f64 {
        let pid = self.child.id().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(cpu_seconds)
            .sum()
    }

    /// SIGTERM to `timeout`, which passes it on to mosquitto.
    fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    async fn stop(mut self) {
        self.terminate();
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// WatchJobsResponse as this scenario reads it: the job event's id,
/// trigger and the job's status; the rest is skipped unread.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    job: Option<StatusEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusEvent {
    #[prost(string, tag = "1")]
    job_id: String,
    #[prost(message, optional, tag = "6")]
    response: Option<StatusDescribe>,
    #[prost(int32, tag = "9")]
    trigger: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusDescribe {
    #[prost(message, optional, tag = "2")]
    job: Option<StatusJob>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusJob {
    #[prost(int32, optional, tag = "4")]
    status: Option<i32>,
}

/// A job event as a stream received it.
struct Seen {
    job_id: String,
    received_us: u64,
    trigger: i32,
    canceled: bool,
}

/// What the streams of one side have received so far.
#[derive(Default)]
struct Progress {
    /// Jobs that have their first state.
    first: AtomicUsize,
    /// Jobs whose CANCELED arrived.
    canceled: AtomicUsize,
}

/// Watches `jobs` on one stream until `stop`; every job event it receives.
fn watcher(
    channel: Channel,
    jobs: Vec<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> tokio::task::JoinHandle<Result<Vec<Seen>, Status>> {
    tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(format!("channel not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<pb::WatchJobsRequest, StatusResponse>::default();
        let request = Request::new(pb::WatchJobsRequest {
            job_ids: jobs,
            ..Default::default()
        });
        let path = ::http::uri::PathAndQuery::from_static("/iot.jobs.v1.JobsGateway/WatchJobs");
        let mut stream = grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner();
        let (mut first, mut canceled) = (HashSet::new(), HashSet::new());
        let mut seen = Vec::new();
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                message = stream.message() => message?,
            };
            let received_us = unix_us(SystemTime::now());
            let Some(message) = message else { break };
            let Some(event) = message.job else { continue };
            let status = event
                .response
                .and_then(|r| r.job)
                .and_then(|j| j.status)
                .unwrap_or(0);
            let is_canceled = status == pb::job::Status::Canceled as i32;
            if first.insert(event.job_id.clone()) {
                progress.first.fetch_add(1, Ordering::Relaxed);
            }
            if is_canceled && canceled.insert(event.job_id.clone()) {
                progress.canceled.fetch_add(1, Ordering::Relaxed);
            }
            seen.push(Seen {
                job_id: event.job_id,
                received_us,
                trigger: event.trigger,
                canceled: is_canceled,
            });
        }
        Ok(seen)
    })
}

/// One setup: its simulator, gateway and watch streams.
struct Side {
    label: &'static str,
    sim: Proc,
    gw: Proc,
    progress: Arc<Progress>,
    streams: Vec<tokio::task::JoinHandle<Result<Vec<Seen>, Status>>>,
    /// When each change's CancelJob was sent (µs since the Unix epoch).
    changed_us: Vec<u64>,
}

/// A simulator of `jobs` synthetic jobs, without a rate limit, whose log
/// is `loadgen-logs/<log>.log`.
async fn simulator_named(
    jobs: usize,
    group: usize,
    extra: &[&str],
    log: &str,
) -> Result<Proc, Error> {
    let port = free_port();
    let mut args: Vec<String> = [
        "simulator",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--rate-limit",
        "0",
        "--synthetic-jobs",
        &jobs.to_string(),
        "--group-size",
        &group.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn(sibling("iot-jobs-gateway"), &args, &[], log, port).await
}

async fn side(
    label: &'static str,
    a: &WatchEventsArgs,
    broker: Option<&Broker>,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Result<Side, Error> {
    let (sim_extra, gw_extra, name) = match broker {
        Some(broker) => (
            vec!["--events-mqtt-url".to_owned(), broker.url()],
            vec![
                "--events-mqtt-url".to_owned(),
                broker.url(),
                "--events-mqtt-client-id".to_owned(),
                format!("loadgen-{}", std::process::id()),
            ],
            "events",
        ),
        None => (Vec::new(), Vec::new(), "no-events"),
    };
    let sim_extra: Vec<&str> = sim_extra.iter().map(String::as_str).collect();
    let sim = simulator_named(
        a.jobs,
        a.group_size,
        &sim_extra,
        &format!("simulator-{name}"),
    )
    .await?;
    if broker.is_some() {
        publishing(&sim).await?;
    }
    let mut flags: Vec<&str> = WATCH_BUDGET.to_vec();
    flags.extend(gw_extra.iter().map(String::as_str));
    let gw = gateway_named(&sim, &flags, &format!("gateway-{name}")).await?;
    let channel = raw_channels(gw.port, 1).await?.remove(0);
    let progress = Arc::new(Progress::default());
    let ids: Vec<String> = (0..a.jobs).map(synthetic_job_id).collect();
    let streams = ids
        .chunks(PER_STREAM)
        .map(|chunk| {
            watcher(
                channel.clone(),
                chunk.to_vec(),
                stopped.clone(),
                progress.clone(),
            )
        })
        .collect();
    Ok(Side {
        label,
        sim,
        gw,
        progress,
        streams,
        changed_us: Vec::new(),
    })
}

/// Waits (10 s at most) until the simulator's events publisher is connected.
async fn publishing(sim: &Proc) -> Result<(), Error> {
    for _ in 0..100 {
        if sim_get(sim, "/_sim/events/stats").await?["connected"] == true {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the simulator did not connect to the broker within 10 s".into())
}

/// Sends one CancelJob; when it was sent (µs since the Unix epoch).
async fn cancel(sim: &Proc, path: &str, body: &str) -> Result<u64, Error> {
    let sent = unix_us(SystemTime::now());
    sim_request(sim, "PUT", path, body).await?;
    Ok(sent)
}

/// DescribeJob calls and throttles the simulator counted so far.
async fn calls(sim: &Proc) -> Result<(u64, u64), Error> {
    let stats = sim_get(sim, "/_sim/stats").await?;
    let n = |key: &str| stats[key].as_u64().unwrap_or(0);
    Ok((n("describeJobCalls"), n("throttled")))
}

pub(crate) async fn watch_events(a: WatchEventsArgs) -> Result<(), Error> {
    at_least_one("--jobs", a.jobs as u64)?;
    at_least_one("--changes", a.changes as u64)?;
    at_least_one("--over", a.over)?;
    if a.changes > a.jobs {
        return Err("--changes must not exceed --jobs".into());
    }
    let round = a.jobs as u64 / RATE as u64;
    let first_limit = 2 * round + 60;
    long_enough(a.group_size, round + 20 + a.over + a.tail + 30)?;
    let broker = Broker::start(Duration::from_secs(first_limit + a.over + a.tail + 300)).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut sides = [
        side("(a) with `--events-mqtt-url`", &a, Some(&broker), &stopped).await?,
        side("(b) without (polling alone)", &a, None, &stopped).await?,
    ];

    // Every job's first state on both sides (about jobs / rate seconds).
    let opened = Instant::now();
    while sides
        .iter()
        .any(|s| s.progress.first.load(Ordering::Relaxed) < a.jobs)
        && opened.elapsed() < Duration::from_secs(first_limit)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_round = opened.elapsed();
    let firsts: Vec<usize> = sides
        .iter()
        .map(|s| s.progress.first.load(Ordering::Relaxed))
        .collect();

    // The same jobs at the same moments on both sides.
    let mut rng = fastrand::Rng::with_seed(a.seed);
    let mut picked: Vec<usize> = (0..a.jobs).collect();
    rng.shuffle(&mut picked);
    picked.truncate(a.changes);
    let mut moments: Vec<Duration> = (0..a.changes)
        .map(|_| Duration::from_secs_f64(rng.f64() * a.over as f64))
        .collect();
    moments.sort_unstable();
    let changed: Vec<String> = picked.iter().map(|&i| synthetic_job_id(i)).collect();

    let before = [calls(&sides[0].sim).await?, calls(&sides[1].sim).await?];
    let events_before = sim_get(&sides[0].sim, "/_sim/events/stats").await?;
    let cpu = |sides: &[Side; 2]| {
        [
            sides[0].gw.cpu_seconds(),
            sides[1].gw.cpu_seconds(),
            broker.cpu_seconds(),
            sides[0].sim.cpu_seconds(),
        ]
    };
    let cpu_before = cpu(&sides);
    let window_from = Instant::now();
    let window_from_us = unix_us(SystemTime::now());
    let body = r#"{"reasonCode": "LOADGEN", "comment": "scenario 16"}"#;
    for (id, moment) in changed.iter().zip(&moments) {
        tokio::time::sleep_until(window_from + *moment).await;
        let path = format!("/jobs/{id}/cancel?force=true");
        let (x, y) = tokio::join!(
            cancel(&sides[0].sim, &path, body),
            cancel(&sides[1].sim, &path, body)
        );
        sides[0].changed_us.push(x?);
        sides[1].changed_us.push(y?);
    }
    let last_change = Instant::now();
    while sides
        .iter()
        .any(|s| s.progress.canceled.load(Ordering::Relaxed) < a.changes)
        && last_change.elapsed() < Duration::from_secs(a.tail)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = [calls(&sides[0].sim).await?, calls(&sides[1].sim).await?];
    let events_after = sim_get(&sides[0].sim, "/_sim/events/stats").await?;
    let cpu_after = cpu(&sides);
    let window = window_from.elapsed().as_secs_f64();
    stop.send_replace(true);
    broker.stop().await;

    let mut reports = Vec::new();
    for s in sides.iter_mut() {
        let mut seen = Vec::new();
        let mut errors = Vec::new();
        for stream in s.streams.drain(..) {
            match stream.await? {
                Ok(events) => seen.extend(events),
                Err(status) => errors.push(format!("{:?}: {}", status.code(), status.message())),
            }
        }
        reports.push(report(s, &changed, &seen, errors, window_from_us));
    }

    println!(
        "## 16. Watch latency with AWS IoT Jobs events: {} jobs watched ({} streams of {PER_STREAM}) on a {RATE}/s budget, {} changes over {} s\n",
        a.jobs,
        a.jobs.div_ceil(PER_STREAM),
        a.changes,
        a.over
    );
    println!(
        "Both gateways: `--upstream-rate {RATE} --upstream-burst {BURST} --watch-poll-interval 5s`, each in front of its own simulator (no rate limit of its own; {} synthetic jobs kept IN_PROGRESS, group size {}); (a) also `--events-mqtt-url` to a Mosquitto on loopback, to which its simulator publishes AWS IoT Jobs events. First state of every job on both sides {:.1} s after the streams opened ({} and {} of {}). Changes: {} jobs force-canceled (CancelJob with force) at random moments (seed {}), the same on both sides; latency from the CancelJob request to the first watch event carrying CANCELED. Window: from the start of the changes to the last delivery, {window:.1} s.\n",
        a.jobs,
        a.group_size,
        first_round.as_secs_f64(),
        firsts[0],
        firsts[1],
        a.jobs,
        a.changes,
        a.seed,
    );
    println!(
        "| setup | delivered | p50 | p99 | max | CANCELED brought by | AWS calls in the window | AWS calls/s | throttled | gateway CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut rates = [0.0; 2];
    for (k, r) in reports.iter().enumerate() {
        let made = after[k].0 - before[k].0;
        rates[k] = made as f64 / window;
        println!(
            "| {} | {} of {} | **{}** | **{}** | **{}** | {} | {made} | **{:.2}/s** | {} | {:.0}% |",
            sides[k].label,
            r.latencies.len(),
            a.changes,
            secs(percentile(&r.latencies, 0.5)),
            secs(percentile(&r.latencies, 0.99)),
            secs(percentile(&r.latencies, 1.0)),
            r.brought_by,
            rates[k],
            after[k].1 - before[k].1,
            (cpu_after[k] - cpu_before[k]) / window * 100.0,
        );
    }
    let published = |stats: &serde_json::Value| stats["acknowledged"].as_u64().unwrap_or(0);
    let messages = published(&events_after).saturating_sub(published(&events_before));
    println!(
        "\nJob events received in the window, by what made the gateway poll: (a) {}; (b) {}. Stream errors: (a) {}; (b) {}. MQTT messages the simulator of (a) published in the window: {messages} ({:.0}/s: an execution event per thing that finishes, about one per job per second, and per cancel its two job events and a `canceled` execution event per thing not done yet); CPU in the window: mosquitto {:.0}%, simulator (a) {:.0}%.\n",
        reports[0].triggers,
        reports[1].triggers,
        reports[0].errors,
        reports[1].errors,
        messages as f64 / window,
        (cpu_after[2] - cpu_before[2]) / window * 100.0,
        (cpu_after[3] - cpu_before[3]) / window * 100.0,
    );
    let events = &reports[0].latencies;
    let pass = events.len() == a.changes
        && percentile(events, 0.99) <= Duration::from_secs(1)
        && rates[0] <= rates[1] * 1.01;
    println!(
        "Targets: with events every change delivered, p99 at most 1 s, and AWS calls/s no higher than without (within 1%). Result: {}. Without events: p50 {} and max {} for jobs / rate = {round} s.\n",
        verdict(pass),
        secs(percentile(&reports[1].latencies, 0.5)),
        secs(percentile(&reports[1].latencies, 1.0)),
    );
    Ok(())
}

/// One side's latencies, sorted, and how its events came.
struct Report {
    latencies: Vec<Duration>,
    brought_by: String,
    triggers: String,
    errors: String,
}

fn report(
    side: &Side,
    changed: &[String],
    seen: &[Seen],
    errors: Vec<String>,
    window_from_us: u64,
) -> Report {
    let mut latencies = Vec::new();
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for (id, &at) in changed.iter().zip(&side.changed_us) {
        if let Some(e) = seen.iter().find(|e| e.canceled && &e.job_id == id) {
            latencies.push(Duration::from_micros(e.received_us.saturating_sub(at)));
            *by.entry(trigger_name(e.trigger)).or_default() += 1;
        }
    }
    latencies.sort_unstable();
    let mut triggers = std::collections::BTreeMap::<String, usize>::new();
    for e in seen.iter().filter(|e| e.received_us >= window_from_us) {
        *triggers.entry(trigger_name(e.trigger)).or_default() += 1;
    }
    let list = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Report {
        latencies,
        brought_by: list(&by),
        triggers: list(&triggers),
        errors: if errors.is_empty() {
            "none".into()
        } else {
            format!("{} ({:?})", errors.len(), &errors[..errors.len().min(2)])
        },
    }
}

fn trigger_name(trigger: i32) -> String {
    pb::job_event::Trigger::try_from(trigger)
        .map_or_else(|_| trigger.to_string(), |t| t.as_str_name().to_owned())
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
