//! Scenarios 6 and 7: WatchJobs fan-out and a short poll budget.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use iot_jobs_gateway::{
    pb::{self, jobs_gateway_client::JobsGatewayClient},
    simulator::seed::synthetic_job_id,
};
use prost::Message;
use tonic::{Request, Status, transport::Channel};

use crate::{BURST, BudgetArgs, Error, FanoutArgs, RATE, procs::*};

/// WatchJobsResponse as the load generator reads it: the job event's id,
/// version, kind and `observed_at`. The job's state (most of each message) is
/// skipped unread, so the client, which shares the two cores with the
/// gateway, spends as little as it can per message.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LightWatchResponse {
    #[prost(message, optional, tag = "1")]
    job: Option<LightJobEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LightJobEvent {
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
pub(crate) struct Received {
    /// Which of the stream's jobs (its index in the request).
    job: u32,
    version: u64,
    /// The stream's first state for the job (CURRENT), not a change.
    current: bool,
    observed_us: u64,
    received_us: u64,
}

/// What one stream received before it was stopped.
pub(crate) struct Watcher {
    jobs: Vec<String>,
    events: Vec<Received>,
    heartbeats: u64,
    error: Option<Status>,
}

pub(crate) fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Opens a WatchJobs stream decoded with [`LightWatchResponse`].
pub(crate) async fn open_watch(
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
pub(crate) fn spawn_watcher(
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
pub(crate) async fn wait_started(started: &AtomicUsize, count: usize, limit: Duration) -> Duration {
    let begun = Instant::now();
    while started.load(Ordering::Relaxed) < count && begun.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    begun.elapsed()
}

pub(crate) async fn raw_channels(port: u16, n: usize) -> Result<Vec<Channel>, Error> {
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
pub(crate) struct Window {
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

pub(crate) async fn measure_window(sim: &Proc, gw: &Proc, seconds: u64) -> Result<Window, Error> {
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
pub(crate) fn poll_intervals(polls: &serde_json::Value, from_us: u64, to_us: u64) -> Vec<f64> {
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

pub(crate) fn percentile_f64(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) fn kib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

pub(crate) async fn watch_fanout(a: FanoutArgs) -> Result<(), Error> {
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
    let arrivals = sim_arrivals(&sim).await?;
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

/// The gateway's flags for a short watch budget: AWS's default rate and
/// the default poll interval.
pub(crate) const WATCH_BUDGET: [&str; 6] = [
    "--upstream-rate",
    "10",
    "--upstream-burst",
    "5",
    "--watch-poll-interval",
    "5s",
];

pub(crate) async fn watch_budget(a: BudgetArgs) -> Result<(), Error> {
    at_least_one("--jobs", a.jobs as u64)?;
    at_least_one("--seconds", a.seconds)?;
    const PER_STREAM: usize = 100;
    const INTERVAL_S: f64 = 5.0;
    long_enough(a.group_size, a.seconds + 60)?;
    let group = a.group_size.to_string();
    let sim = simulator_with(a.jobs, RATE as u32, &["--group-size", &group]).await?;
    let gw = gateway(&sim, &WATCH_BUDGET).await?;
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
