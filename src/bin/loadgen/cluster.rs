//! Scenarios 9 and 10: several replicas sharing one Redis, in front of the
//! simulator at AWS's quota.
//!
//! `cluster` runs 1, 2 and 3 replicas side by side: the set's AWS rate at
//! ten times the demand, one cold question asked 1,000 times across the
//! set, polls per watched job, Redis commands per AWS call; then the
//! cache-hit throughput of a replica with Redis against a bare tonic
//! server, and what a Redis round trip adds to a miss. `cluster-watch` runs
//! three replicas with 10,000 streams over 1,000 jobs on a 10/s budget.

use std::{
    sync::{Arc, atomic::AtomicUsize},
    time::{Duration, Instant},
};

use iot_jobs_gateway::simulator::seed::synthetic_job_id;
use tonic::{Code, Status};

use crate::{
    BURST, Error, RATE,
    procs::*,
    protection::{Question, versus_bare, warm_and_bare},
    watch::{WATCH_BUDGET, percentile_f64, poll_intervals, raw_channels, spawn_watcher},
};

/// A redis-server of this run, on a free loopback port, persistence off.
async fn redis_server() -> Result<Proc, Error> {
    let program = installed("redis-server", "redis-server", "loadgen cluster")?;
    let port = free_port();
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    spawn(program, &args, &[], "redis", port).await
}

fn redis_url(redis: &Proc) -> String {
    format!("redis://127.0.0.1:{}", redis.port)
}

/// Commands Redis has processed so far.
async fn redis_commands(redis: &Proc) -> Result<u64, Error> {
    let mut conn = redis::Client::open(redis_url(redis))?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| "no total_commands_processed in INFO stats".into())
}

/// `n` replicas in front of `sim`, sharing `redis`, with `extra` flags.
async fn replicas(
    label: &str,
    n: usize,
    sim: &Proc,
    redis: &Proc,
    extra: &[&str],
) -> Result<Vec<Proc>, Error> {
    let url = redis_url(redis);
    let mut set = Vec::new();
    for i in 1..=n {
        let flags = [&["--redis-url", url.as_str()][..], extra].concat();
        set.push(gateway_named(sim, &flags, &format!("{label}-{i}-of-{n}")).await?);
    }
    Ok(set)
}

/// One row of the side-by-side table.
struct Row {
    replicas: usize,
    sustained: f64,
    busiest: usize,
    throttled: u64,
    cold_calls: u64,
    polls_per_interval: f64,
    /// Redis commands per DescribeJob call answered or refused.
    commands_per_call: f64,
    /// Redis commands per AWS call made.
    commands_per_aws_call: f64,
}

pub(crate) async fn cluster(seconds: u64, sets: &[usize]) -> Result<(), Error> {
    at_least_one("--seconds", seconds)?;
    let mut rows = Vec::new();
    for &n in sets {
        rows.push(one_set(n, seconds).await?);
    }
    println!(
        "## 9. Replicas sharing one Redis: 1, 2 and 3 replicas side by side, the simulator at AWS's quota ({RATE} calls/s)\n"
    );
    println!(
        "| replicas | AWS calls/s at {}x demand | busiest 1 s window (limit {}) | ThrottlingException | AWS calls for 1,000 identical cold calls | polls per watched job per interval | Redis commands per call, answered or refused (commands inside Lua scripts included) | the same per AWS call |",
        10,
        RATE + BURST
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | **{:.2}/s** | **{}** | **{}** | **{}** | **{:.2}** | {:.1} | {:.1} |",
            r.replicas,
            r.sustained,
            r.busiest,
            r.throttled,
            r.cold_calls,
            r.polls_per_interval,
            r.commands_per_call,
            r.commands_per_aws_call
        );
    }
    println!();
    let pass = rows.iter().all(|r| {
        r.sustained >= 0.95 * RATE
            && r.busiest as f64 <= RATE + BURST
            && r.throttled == 0
            && r.cold_calls == 1
            && (0.8..=1.2).contains(&r.polls_per_interval)
    });
    println!(
        "Targets, for every set: at least 95% of the rate and no second above rate + burst, no throttles, 1 AWS call for the cold question, one poll per job per interval. Result: {}\n",
        verdict(pass)
    );
    hit_throughput().await?;
    miss_latency().await?;
    Ok(())
}

/// The measurements of one set of `n` replicas.
async fn one_set(n: usize, seconds: u64) -> Result<Row, Error> {
    let demand = RATE * 10.0;
    let total = (demand * seconds as f64) as usize;
    // Synthetic jobs stay IN_PROGRESS about --group-size seconds: long
    // enough for the watched ones to be polled until the end.
    let sim = simulator_with(total + 100, RATE as u32, &["--group-size", "600"]).await?;
    let redis = redis_server().await?;
    let set = replicas("cluster", n, &sim, &redis, &["--watch-poll-interval", "5s"]).await?;
    let mut clients = Vec::new();
    for replica in &set {
        clients.extend(channels(replica.port, 2).await?);
    }

    // 1. Ten times the quota on distinct jobs, spread over the set.
    let commands_before = redis_commands(&redis).await?;
    let before = sim_get(&sim, "/_sim/calls").await?["arrivalsUs"]
        .as_array()
        .map_or(0, Vec::len);
    let interval = Duration::from_secs_f64(1.0 / demand);
    for task in open_loop(&clients, total, interval).await {
        let _ = task.await?;
    }
    let commands = redis_commands(&redis).await? - commands_before;
    let stats = sim_get(&sim, "/_sim/stats").await?;
    let arrivals = sim_arrivals(&sim).await?.split_off(before);
    let span = (arrivals.last().unwrap_or(&0) - arrivals.first().unwrap_or(&0)) as f64 / 1e6;
    let sustained = (arrivals.len().saturating_sub(1)) as f64 / span.max(f64::MIN_POSITIVE);
    let busiest = busiest_second(&arrivals);

    // 2. One cold question, 1,000 times across the set, AWS answering in 100 ms.
    let target = synthetic_job_id(total + 7);
    let latency = format!(r#"{{"kind": "Latency", "ms": 100, "jobId": "{target}"}}"#);
    sim_request(&sim, "POST", "/_sim/faults", &latency).await?;
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let id = target.clone();
            tokio::spawn(async move {
                client
                    .describe_job(describe(&id, Duration::from_secs(30)))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for call in calls {
        call.await?
            .map_err(|s: Status| format!("a cold call failed: {s}"))?;
    }
    let stats_after = sim_get(&sim, "/_sim/stats").await?;
    let cold_calls = stats_after["perJob"][&target].as_u64().unwrap_or(0);

    // 3. 20 jobs, each watched through every replica, polled every 5 s.
    const WATCHED: usize = 20;
    const WINDOW: u64 = 30;
    let ids: Vec<String> = (0..WATCHED)
        .map(|i| synthetic_job_id(total + 20 + i))
        .collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started_streams = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    for replica in &set {
        let channel = raw_channels(replica.port, 1).await?.remove(0);
        watchers.push(spawn_watcher(
            channel,
            ids.clone(),
            stopped.clone(),
            started_streams.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_secs(10 + WINDOW)).await;
    let polls = sim_get(&sim, "/_sim/polls").await?;
    stop.send_replace(true);
    for watcher in watchers {
        let _ = watcher.await?;
    }
    // Each watched job's intervals between polls, after a 10 s start.
    let watched: serde_json::Map<String, serde_json::Value> = ids
        .iter()
        .map(|id| (id.clone(), polls[id].clone()))
        .collect();
    let mut intervals = poll_intervals(&serde_json::Value::Object(watched), 0, u64::MAX);
    intervals.sort_by(|x, y| x.total_cmp(y));
    let median_interval = percentile_f64(&intervals, 0.5);
    Ok(Row {
        replicas: n,
        sustained,
        busiest,
        throttled: stats["throttled"].as_u64().unwrap_or(0),
        cold_calls,
        polls_per_interval: 5.0 / median_interval,
        commands_per_call: commands as f64 / total as f64,
        commands_per_aws_call: commands as f64 / arrivals.len().max(1) as f64,
    })
}

/// Cache hits on a replica with Redis configured, against a bare tonic
/// server.
async fn hit_throughput() -> Result<(), Error> {
    const ROUNDS: usize = 3;
    const SECONDS: u64 = 5;
    let sim = simulator(10, 10).await?;
    let redis = redis_server().await?;
    let gw = replicas("hits", 1, &sim, &redis, &["--cache-ttl", "1h"])
        .await?
        .remove(0);
    let question = Question::job(&synthetic_job_id(3));
    let (_, bare) = warm_and_bare(&gw, &question).await?;
    let commands = redis_commands(&redis).await?;
    println!(
        "### Cache hits with Redis configured: gateway vs a bare tonic server, 32 concurrent callers, {SECONDS} s per round\n"
    );
    let (ratio, _) = versus_bare(&gw, &bare, &question, ROUNDS, SECONDS).await?;
    let commands = redis_commands(&redis).await? - commands;
    println!(
        "Redis commands during the rounds: {commands} (the first tier keeps an answer up to 1 s, then it is read from Redis again). Target: ratio >= 0.85. Result: {}\n",
        verdict(ratio >= 0.85)
    );
    Ok(())
}

/// What a Redis round trip adds to a miss: sequential cold calls on
/// distinct jobs, without and with Redis.
async fn miss_latency() -> Result<(), Error> {
    const CALLS: usize = 300;
    let sim = simulator(2 * CALLS + 10, 0).await?;
    let redis = redis_server().await?;
    let fast = ["--upstream-rate", "1000", "--upstream-burst", "1000"];
    let alone = gateway(&sim, &fast).await?;
    let shared = replicas("miss", 1, &sim, &redis, &fast).await?.remove(0);
    println!(
        "### A miss, without and with Redis: {CALLS} sequential cold calls each, the simulator answering at once\n"
    );
    println!("| gateway | p50 | p99 | Redis commands per miss |");
    println!("|---|---|---|---|");
    let mut medians = Vec::new();
    for (label, gw, offset) in [("alone", &alone, 0), ("with Redis", &shared, CALLS)] {
        let mut client = channels(gw.port, 1).await?.remove(0);
        let before = redis_commands(&redis).await?;
        let mut latencies = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let started = Instant::now();
            match client
                .describe_job(describe(
                    &synthetic_job_id(offset + i),
                    Duration::from_secs(5),
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(format!("a miss failed: {s}").into()),
            }
            latencies.push(started.elapsed());
        }
        let commands = redis_commands(&redis).await? - before;
        latencies.sort_unstable();
        medians.push((percentile(&latencies, 0.5), percentile(&latencies, 0.99)));
        println!(
            "| {label} | {} | {} | {:.1} |",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            commands as f64 / CALLS as f64
        );
    }
    let (a50, a99) = medians[0];
    let (s50, s99) = medians[1];
    println!(
        "\nRedis adds {} at p50 and {} at p99 to a miss (three round trips: the answer or else the claim, the token, the outcome).\n",
        ms(s50.saturating_sub(a50)),
        ms(s99.saturating_sub(a99))
    );
    Ok(())
}

/// `cluster-watch`: three replicas, 10,000 streams over 1,000 jobs at
/// 10 polls/s for the set.
pub(crate) async fn cluster_watch(
    jobs: usize,
    streams: usize,
    seconds: u64,
    group_size: usize,
) -> Result<(), Error> {
    at_least_one("--jobs", jobs as u64)?;
    long_enough(group_size, seconds + 60)?;
    let group = group_size.to_string();
    let sim = simulator_with(jobs, RATE as u32, &["--group-size", &group]).await?;
    let redis = redis_server().await?;
    let set = replicas("watch", 3, &sim, &redis, &WATCH_BUDGET).await?;
    let ids: Vec<String> = (0..jobs).map(synthetic_job_id).collect();
    // Each stream watches 10 jobs; stream k goes to replica k % 3.
    const PER_STREAM: usize = 10;
    // Enough connections per replica that none holds more than the gateway's
    // default --watch-max-streams-per-connection.
    const STREAMS_PER_CONNECTION: usize = 100;
    let per_replica = streams.div_ceil(set.len() * STREAMS_PER_CONNECTION).max(1);
    let mut channels_of = Vec::new();
    for replica in &set {
        channels_of.push(raw_channels(replica.port, per_replica).await?);
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::with_capacity(streams);
    for k in 0..streams {
        let first = (k * PER_STREAM) % jobs;
        let chunk: Vec<String> = (0..PER_STREAM)
            .map(|j| ids[(first + j) % jobs].clone())
            .collect();
        let replica = k % set.len();
        let channel = channels_of[replica][(k / set.len()) % per_replica].clone();
        watchers.push(spawn_watcher(
            channel,
            chunk,
            stopped.clone(),
            started.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let polls = sim_get(&sim, "/_sim/polls").await?;
    let stats = sim_get(&sim, "/_sim/stats").await?;
    stop.send_replace(true);
    for watcher in watchers {
        let _ = watcher.await?;
    }
    let mut intervals = poll_intervals(&polls, 0, u64::MAX);
    intervals.sort_by(|x, y| x.total_cmp(y));
    let per_job: Vec<usize> = ids
        .iter()
        .map(|id| polls[id].as_array().map_or(0, Vec::len))
        .collect();
    let mut arrivals: Vec<u64> = ids
        .iter()
        .flat_map(|id| {
            polls[id]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_u64)
                .collect::<Vec<_>>()
        })
        .collect();
    arrivals.sort_unstable();
    let span = (arrivals.last().unwrap_or(&0) - arrivals.first().unwrap_or(&0)) as f64 / 1e6;
    let sustained = arrivals.len().saturating_sub(1) as f64 / span.max(f64::MIN_POSITIVE);
    let ideal = jobs as f64 / RATE;
    println!(
        "## 10. Three replicas, {streams} watch streams over {jobs} jobs, one budget of {RATE} polls/s, {seconds} s\n"
    );
    println!(
        "Each job is watched through every replica ({} streams of {PER_STREAM} jobs, spread over the three). Throttled by the simulator: {}.\n",
        streams, stats["throttled"]
    );
    println!(
        "| polls | sustained poll rate | busiest 1 s window (limit {}) | intervals | min | median | p99 | max | jobs polled 3+ times |",
        RATE + BURST
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | **{sustained:.2}/s** | **{}** | {} | {:.2} s | **{:.2} s** | **{:.2} s** | {:.2} s | {} of {jobs} |\n",
        arrivals.len(),
        busiest_second(&arrivals),
        intervals.len(),
        percentile_f64(&intervals, 0.0),
        percentile_f64(&intervals, 0.5),
        percentile_f64(&intervals, 0.99),
        percentile_f64(&intervals, 1.0),
        per_job.iter().filter(|n| **n >= 3).count(),
    );
    let median = percentile_f64(&intervals, 0.5);
    println!(
        "Target: each job polled about every {ideal:.0} s across the set (J/R), not three times as often. Result: {}\n",
        verdict((median - ideal).abs() <= 0.15 * ideal)
    );
    Ok(())
}
