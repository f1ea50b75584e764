//! What operating the gateway costs.
//!
//! Scenario 13, metrics on the hot path: cache hits on a gateway serving
//! `/metrics` (scraped every second, far more often than Prometheus' usual
//! 15–60 s), on one without the endpoint, optionally on an older build, and
//! on a bare tonic server, rounds interleaved so the machine's noise falls
//! on all alike. Scenario 14, log volume under excess demand.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    Error,
    interleaved::{CONCURRENCY, interleaved},
    procs::{
        channels, describe, free_port, gateway, gateway_binary, gateway_named, median, sibling,
        simulator, verdict,
    },
    protection::{Question, warm_and_bare},
};
use iot_jobs_gateway::simulator::seed::synthetic_job_id;

pub(crate) async fn metrics_cost(
    rounds: usize,
    seconds: u64,
    baseline: Option<PathBuf>,
) -> Result<(), Error> {
    let sim = simulator(10, 10).await?;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let ttl = ["--cache-ttl", "1h"];
    let on = gateway(
        &sim,
        &[&ttl[..], &["--metrics-listen", &metrics_addr]].concat(),
    )
    .await?;
    let id = Question::job(&synthetic_job_id(3));
    let (_, bare) = warm_and_bare(&on, &id).await?;
    let mut servers = vec![("on", on)];
    let off = gateway(&sim, &ttl).await?;
    warm_and_bare(&off, &id).await?;
    servers.push(("off", off));
    if let Some(program) = &baseline {
        let before = gateway_binary(program.clone(), &sim, &ttl).await?;
        warm_and_bare(&before, &id).await?;
        servers.push(("before", before));
    }
    servers.push(("bare", bare));
    let scrapes = Arc::new(AtomicUsize::new(0));
    let scraper = tokio::spawn(scrape_every_second(metrics_addr.clone(), scrapes.clone()));

    println!(
        "## 13. Metrics on the hot path: cache hits with /metrics served and scraped every second (on), without the endpoint (off), {}and a bare tonic server; {CONCURRENCY} concurrent callers, {seconds} s per run, rounds interleaved\n",
        if baseline.is_some() {
            "the build before the observation layer (before), "
        } else {
            ""
        }
    );
    let measured = interleaved(servers, &id, rounds, seconds).await?;
    scraper.abort();
    let scrapes = scrapes.load(Ordering::Relaxed);
    let bare = measured.last().expect("bare");
    let on_vs_bare = median(&mut measured[0].per_sec.clone()) / median(&mut bare.per_sec.clone());
    let on_vs_bare_median = measured[0].ratio_to(bare);
    println!(
        "\nScrapes during the run: {scrapes}. Target: metrics on / bare >= 0.85 (median of the rounds' ratios {on_vs_bare_median:.3}; ratio of the medians {on_vs_bare:.3}). Result: {}\n",
        verdict(on_vs_bare_median >= 0.85)
    );
    drop((measured, sim));
    Ok(())
}

/// Scrapes `/metrics` at `addr` once a second, counting the scrapes that
/// succeed, until aborted (or an hour has passed).
async fn scrape_every_second(addr: String, done: Arc<AtomicUsize>) {
    for _ in 0..3600 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(true) = scrape(&addr).await {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn scrape(addr: &str) -> std::io::Result<bool> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response.starts_with(b"HTTP/1.1 200"))
}

/// Scenario 14, log volume under excess demand: calls for distinct
/// uncached jobs at many times the AWS rate, most refused RATE_LIMITED
/// (expected behaviour), against a gateway logging every refusal
/// (`--refusal-log-interval 0s`, what every gateway did before) and one
/// with the default bound, one after the other.
pub(crate) async fn log_volume(seconds: u64) -> Result<(), Error> {
    println!(
        "## 14. Log volume under excess demand: {CONCURRENCY} callers asking for distinct uncached jobs with 100 ms deadlines at a 10/s AWS rate, {seconds} s per gateway\n"
    );
    println!(
        "| refusal logging | calls/s | refused RATE_LIMITED | log lines | log lines per minute | bytes per minute | gateway CPU per call |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, name, extra) in [
        (
            "every refusal (`--refusal-log-interval 0s`)",
            "log-every",
            vec!["--refusal-log-interval", "0s"],
        ),
        ("default (10 per kind per 10 s)", "log-bounded", vec![]),
    ] {
        let sim = simulator(0, 10).await?;
        let mut args = vec!["--log-format", "json"];
        args.extend(extra);
        let gw = gateway_named(&sim, &args, name).await?;
        let log = sibling("loadgen-logs").join(format!("{name}.log"));
        let (lines_before, bytes_before) = count_lines(&log);
        let cpu_before = gw.cpu_seconds();
        let (calls, refused) = flood(&gw, seconds).await?;
        // The last summary lines come at the end of their interval.
        tokio::time::sleep(Duration::from_secs(11)).await;
        let (lines, bytes) = count_lines(&log);
        let (lines, bytes) = (lines - lines_before, bytes - bytes_before);
        let cpu = gw.cpu_seconds() - cpu_before;
        let per_minute = 60.0 / seconds as f64;
        println!(
            "| {label} | {:.0} | {refused} | {lines} | {:.0} | {:.0} KiB | {:.1} µs |",
            calls as f64 / seconds as f64,
            lines as f64 * per_minute,
            bytes as f64 * per_minute / 1024.0,
            cpu * 1e6 / calls.max(1) as f64,
        );
    }
    println!();
    Ok(())
}

/// Closed-loop calls for distinct uncached job ids with 100 ms deadlines;
/// returns (calls answered, calls refused RATE_LIMITED).
async fn flood(gw: &crate::procs::Proc, seconds: u64) -> Result<(usize, usize), Error> {
    let clients = channels(gw.port, 4).await?;
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task| {
            let mut client = clients[task % clients.len()].clone();
            tokio::spawn(async move {
                let (mut calls, mut refused) = (0, 0);
                while tokio::time::Instant::now() < end {
                    let id = format!("flood-{task}-{calls}");
                    let result = client
                        .describe_job(describe(&id, Duration::from_millis(100)))
                        .await;
                    calls += 1;
                    if result.is_err_and(|s| s.code() == tonic::Code::ResourceExhausted) {
                        refused += 1;
                    }
                }
                (calls, refused)
            })
        })
        .collect();
    let (mut calls, mut refused) = (0, 0);
    for task in tasks {
        let (c, r) = task.await?;
        calls += c;
        refused += r;
    }
    Ok((calls, refused))
}

/// Lines and bytes in `path` now.
fn count_lines(path: &std::path::Path) -> (usize, usize) {
    let text = std::fs::read(path).unwrap_or_default();
    (text.iter().filter(|b| **b == b'\n').count(), text.len())
}
