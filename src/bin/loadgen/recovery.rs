//! Scenario 8: the AWS budget a gateway uses in the 30 s after a
//! neighbour's burst of ThrottlingExceptions, at four times the rate in
//! demand. With `--baseline`, an older build runs the same scenario first,
//! in the same run, for a side-by-side comparison.

use std::{path::PathBuf, time::Duration};

use tonic::Code;

use crate::{Error, RATE, procs::*};

/// What one gateway did after the burst.
struct Recovery {
    /// AWS calls per second after the burst (throttled ones included).
    per_second: Vec<u64>,
    /// Seconds after the burst until a second with at least 90% of the rate.
    back_after: Option<usize>,
    ok: usize,
    exhausted: usize,
    other: usize,
}

pub(crate) async fn recovery(
    seconds: u64,
    throttles: u32,
    baseline: Option<PathBuf>,
) -> Result<(), Error> {
    at_least_one("--seconds", seconds)?;
    at_least_one("--throttles", u64::from(throttles))?;
    let mut runs = Vec::new();
    if let Some(program) = baseline {
        let label = format!("baseline ({})", program.display());
        runs.push((label, run(program, seconds, throttles).await?));
    }
    let current = sibling("iot-jobs-gateway");
    runs.push((
        "this build".to_owned(),
        run(current, seconds, throttles).await?,
    ));

    println!(
        "## 8. Recovery: {throttles} ThrottlingExceptions in a row (a neighbour's burst), then {seconds} s at {} calls/s offered (gateway rate {RATE}/s)\n",
        RATE * 4.0
    );
    println!(
        "| gateway | AWS calls in the {seconds} s after | mean per second | back to 90% of the rate after | calls answered OK / RESOURCE_EXHAUSTED / other | calls per second after the burst |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, r) in &runs {
        let total: u64 = r.per_second.iter().sum();
        let series: Vec<String> = r.per_second.iter().map(u64::to_string).collect();
        println!(
            "| {label} | {total} | **{:.1}/s** ({:.0}% of {RATE}) | {} | {} / {} / {} | {} |",
            total as f64 / seconds as f64,
            total as f64 / seconds as f64 / RATE * 100.0,
            r.back_after
                .map_or("never".to_owned(), |s| format!("{s} s")),
            r.ok,
            r.exhausted,
            r.other,
            series.join(" "),
        );
    }
    println!();
    Ok(())
}

/// One gateway from `program`: 5 s of warm-up at four times the rate, the
/// burst, then `seconds` more.
async fn run(program: PathBuf, seconds: u64, throttles: u32) -> Result<Recovery, Error> {
    const WARMUP: u64 = 5;
    let demand = RATE * 4.0;
    let total = (demand * (WARMUP + seconds) as f64) as usize;
    let sim = simulator(total, RATE as u32).await?;
    let gw = gateway_binary(program, &sim, &[]).await?;
    let clients = channels(gw.port, 4).await?;
    let interval = Duration::from_secs_f64(1.0 / demand);
    let started = tokio::time::Instant::now();
    let burst_at = started + Duration::from_secs(WARMUP);
    let mut burst_us = None;
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let at = started + interval * i as u32;
        if burst_us.is_none() && at >= burst_at {
            tokio::time::sleep_until(burst_at).await;
            let fault = format!(r#"{{"kind": "ThrottlingException", "times": {throttles}}}"#);
            sim_request(&sim, "POST", "/_sim/faults", &fault).await?;
            let now_us = sim_get(&sim, "/_sim/calls").await?["arrivalsUs"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            burst_us = Some(now_us);
        }
        tokio::time::sleep_until(at).await;
        tasks.push(spawn_call(&clients, i));
    }
    let (mut ok, mut exhausted, mut other) = (0, 0, 0);
    for task in tasks {
        match task.await? {
            Ok(()) => ok += 1,
            Err(Code::ResourceExhausted) => exhausted += 1,
            Err(_) => other += 1,
        }
    }
    let arrivals = sim_arrivals(&sim).await?;
    let from = burst_us.ok_or("the run ended before the burst")?;
    let mut per_second = vec![0u64; seconds as usize];
    for a in arrivals.iter().filter(|a| **a > from) {
        let s = ((a - from) / 1_000_000) as usize;
        if s < per_second.len() {
            per_second[s] += 1;
        }
    }
    let back_after = per_second
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, n)| **n as f64 >= 0.9 * RATE)
        .map(|(s, _)| s);
    Ok(Recovery {
        per_second,
        back_after,
        ok,
        exhausted,
        other,
    })
}
