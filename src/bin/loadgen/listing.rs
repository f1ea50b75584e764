//! Scenario 18: a whole rollout's executions listed through the gateway
//! (StreamJobExecutionsForJob) by one client, by ten at once, and by ten
//! clients paging ListJobExecutionsForJob straight from AWS (the
//! simulator), side by side: AWS calls (the simulator's count) and time.

use std::time::{Duration, Instant};

use iot_jobs_gateway::{pb, simulator::http};

use crate::{Error, procs::*};

/// AWS's page size for ListJobExecutionsForJob.
const PAGE: usize = 250;

pub(crate) async fn listing(things: usize, clients: usize) -> Result<(), Error> {
    at_least_one("--things", things as u64)?;
    at_least_one("--clients", clients as u64)?;
    let group = things.to_string();
    let sim = simulator_with(0, 0, &["--group-size", &group]).await?;
    // The gateway's listing budget at its defaults (10 calls/s, burst 5).
    let gw = gateway(&sim, &[]).await?;
    let channels = channels(gw.port, clients).await?;
    let pages = things.div_ceil(PAGE);
    println!(
        "## Scenario 18: a {things}-thing rollout listed whole ({pages} pages of {PAGE}), \
         ListJobExecutionsForJob budget 10/s, burst 5"
    );
    println!("| who | clients | AWS calls | time (s) | each client got |");
    println!("|---|---|---|---|---|");

    // One client through the gateway.
    create_job(&sim, "rollout-one").await?;
    let before = listing_calls(&sim).await?;
    let started = Instant::now();
    let got = list_whole(channels[0].clone(), "rollout-one").await?;
    let took = started.elapsed();
    let calls = listing_calls(&sim).await? - before;
    println!(
        "| gateway | 1 | {calls} | {:.2} | {got} executions |",
        took.as_secs_f64()
    );

    // Ten at once through the gateway: one walk, shared.
    create_job(&sim, "rollout-ten").await?;
    let before = listing_calls(&sim).await?;
    let started = Instant::now();
    let counts = all(channels
        .iter()
        .map(|c| list_whole(c.clone(), "rollout-ten")))
    .await?;
    let took = started.elapsed();
    let calls = listing_calls(&sim).await? - before;
    println!(
        "| gateway | {clients} | {calls} | {:.2} | {} |",
        took.as_secs_f64(),
        same_or_each(&counts)
    );

    // Ten clients straight to AWS, each paging on its own.
    create_job(&sim, "rollout-direct").await?;
    let before = listing_calls(&sim).await?;
    let started = Instant::now();
    let port = sim.port;
    let counts = all((0..clients).map(|_| page_directly(port, "rollout-direct"))).await?;
    let took = started.elapsed();
    let calls = listing_calls(&sim).await? - before;
    let floor = calls as f64 / 10.0;
    println!(
        "| straight to AWS | {clients} | {calls} | {:.2} (at AWS's 10/s quota: ≥ {floor:.0}) | {} |",
        took.as_secs_f64(),
        same_or_each(&counts)
    );
    println!(
        "\nThe floor for one listing is pages / rate: {pages} / 10 = {:.1} s, less the \
         burst of 5.",
        pages as f64 / 10.0
    );
    Ok(())
}

/// Runs the listings at once; each one's count of executions.
async fn all<F>(listings: impl Iterator<Item = F>) -> Result<Vec<usize>, Error>
where
    F: std::future::Future<Output = Result<usize, Error>> + Send + 'static,
{
    let tasks: Vec<_> = listings.map(tokio::spawn).collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await??);
    }
    Ok(counts)
}

fn same_or_each(counts: &[usize]) -> String {
    match counts {
        [first, rest @ ..] if rest.iter().all(|c| c == first) => format!("{first} executions"),
        _ => format!("{counts:?}"),
    }
}

async fn listing_calls(sim: &Proc) -> Result<u64, Error> {
    let stats = sim_get(sim, "/_sim/stats").await?;
    Ok(stats["listJobExecutionsForJobCalls"].as_u64().unwrap_or(0))
}

/// Every execution of `job_id`, through one StreamJobExecutionsForJob.
async fn list_whole(
    mut client: pb::jobs_gateway_client::JobsGatewayClient<tonic::transport::Channel>,
    job_id: &'static str,
) -> Result<usize, Error> {
    let mut request = tonic::Request::new(pb::StreamJobExecutionsForJobRequest {
        job_id: job_id.to_owned(),
        status: None,
    });
    request.set_timeout(Duration::from_secs(600));
    let mut stream = client
        .stream_job_executions_for_job(request)
        .await?
        .into_inner();
    let mut count = 0;
    while let Some(page) = stream.message().await? {
        count += page.execution_summaries.len();
    }
    Ok(count)
}

/// Every execution of `job_id`, paged from the simulator as a client of
/// AWS pages: 250 at a time, following `nextToken`.
async fn page_directly(port: u16, job_id: &'static str) -> Result<usize, Error> {
    let addr = format!("127.0.0.1:{port}");
    let mut token: Option<String> = None;
    let mut count = 0;
    loop {
        let mut path = format!("/jobs/{job_id}/things?maxResults={PAGE}");
        if let Some(token) = &token {
            let token = token
                .replace('%', "%25")
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            path.push_str(&format!("&nextToken={token}"));
        }
        let (status, body) = http::admin_request(&addr, "GET", &path, "").await?;
        if status != 200 {
            return Err(format!("the simulator answered {status}: {body}").into());
        }
        let page: serde_json::Value = serde_json::from_str(&body)?;
        count += page["executionSummaries"].as_array().map_or(0, Vec::len);
        match page["nextToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => return Ok(count),
        }
    }
}
