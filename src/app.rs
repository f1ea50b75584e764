//! The `serve` command: builds the AWS upstream from configuration, binds
//! the listener and runs the server until SIGTERM/SIGINT.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tracing::info;

use crate::{
    aws::{self, AwsConfigError, AwsJobsUpstream},
    config::{DemoArgs, ServeArgs, SimulatorArgs},
    jobs::Jobs,
    retry::RetryPolicy,
    server::{self, ServeError},
    simulator::{SimConfig, Simulator, clock::SystemClock, http as sim_http, seed},
};

/// Why `serve` could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The AWS settings are unusable.
    #[error("configuration error: {0}")]
    Config(#[from] AwsConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (--listen / GATEWAY_LISTEN): {source}")]
    Bind {
        /// The address from `--listen`.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot listen for SIGTERM/SIGINT: {0}")]
    Signals(std::io::Error),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The simulator's HTTP server failed.
    #[error("the simulator failed: {0}")]
    Simulator(std::io::Error),
}

/// Runs `iot-jobs-gateway serve` until a shutdown signal.
pub async fn serve(args: ServeArgs) -> Result<(), AppError> {
    let settings = args.upstream();
    let sdk = aws::load_sdk_config(&settings).await?;
    let client = aws::iot_client(&sdk, &settings);
    info!(
        region = sdk.region().map(|r| r.as_ref()).unwrap_or_default(),
        endpoint = settings.endpoint_url.as_deref().unwrap_or("AWS default"),
        "AWS IoT upstream configured"
    );
    let settings = args.jobs();
    info!(
        rate_per_sec = settings.limiter.rate,
        burst = settings.limiter.burst,
        cache_ttl = %humantime::format_duration(settings.cache.ttl),
        cache_max_mib = args.protection.cache_max_mib,
        "AWS protection: one token bucket for all DescribeJob calls, answers cached"
    );
    let jobs = Jobs::new(Arc::new(AwsJobsUpstream::new(client)), settings);
    let shutdown = server::shutdown_signal().map_err(AppError::Signals)?;
    let (listener, address) = bind(args.listen).await?;
    info!(%address, "gateway listening");
    server::run(listener, jobs, args.shutdown_grace, shutdown).await?;
    Ok(())
}

/// Runs `iot-jobs-gateway simulator` until a shutdown signal.
pub async fn simulator(args: SimulatorArgs) -> Result<(), AppError> {
    let shutdown = server::shutdown_signal().map_err(AppError::Signals)?;
    let config = SimConfig {
        describe_rate_limit: (args.rate_limit > 0).then_some(args.rate_limit),
        group_size: usize::try_from(args.group_size).unwrap_or(usize::MAX),
        ..SimConfig::default()
    };
    let sim = Simulator::new(config, Arc::new(SystemClock));
    if args.demo_fleet {
        seed::demo_fleet(&sim);
    }
    if args.synthetic_jobs > 0 {
        let created = seed::synthetic_fleet(&sim, args.synthetic_jobs);
        info!(created, "synthetic jobs created (load-000000 upwards)");
    }
    let (listener, address) = bind(args.listen).await?;
    println!("AWS IoT Jobs simulator listening on http://{address}");
    println!(
        "  aws iot describe-job --endpoint-url http://{address} --region us-east-1 --job-id JOB_ID"
    );
    sim_http::serve(listener, sim, shutdown)
        .await
        .map_err(AppError::Simulator)
}

/// Runs `iot-jobs-gateway demo`: the simulator with the demo fleet on a
/// private loopback port, and the gateway in front of it through the real
/// AWS SDK. Needs no AWS account and no network.
pub async fn demo(args: DemoArgs) -> Result<(), AppError> {
    let shutdown = server::shutdown_signal().map_err(AppError::Signals)?;
    let sim = Simulator::new(SimConfig::default(), Arc::new(SystemClock));
    let job_ids = seed::demo_fleet(&sim);
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let (sim_listener, sim_address) = bind(loopback).await?;
    tokio::spawn(sim_http::serve(sim_listener, sim, std::future::pending()));

    let settings = aws::UpstreamSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(format!("http://{sim_address}")),
        profile: None,
        attempt_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(3),
    };
    let client = aws::iot_client(
        &aws::local_sdk_config("us-east-1", aws::placeholder_credentials()),
        &settings,
    );
    let settings = args
        .protection
        .jobs(RetryPolicy::default(), Duration::from_secs(15));
    let jobs = Jobs::new(Arc::new(AwsJobsUpstream::new(client)), settings);
    let (listener, address) = bind(args.listen).await?;
    info!(%address, simulator = %sim_address, "gateway listening");
    print_demo_banner(&address.to_string(), &sim_address.to_string(), &job_ids);
    server::run(listener, jobs, Duration::from_secs(5), shutdown).await?;
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> Result<(TcpListener, std::net::SocketAddr), AppError> {
    let error = |source| AppError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

fn print_demo_banner(gateway: &str, simulator: &str, job_ids: &[&str]) {
    println!("iot-jobs-gateway demo");
    println!("  gateway (gRPC):        {gateway}");
    println!("  simulated AWS IoT API: http://{simulator}");
    println!("  sample jobs:           {}", job_ids.join(", "));
    println!();
    println!("Try (grpcurl 1.8+; Ctrl-C stops the demo):");
    println!("  grpcurl -plaintext {gateway} list");
    for id in job_ids {
        println!(
            "  grpcurl -plaintext -d '{{\"jobId\": \"{id}\"}}' {gateway} iot.jobs.v1.JobsGateway/DescribeJob"
        );
    }
    println!(
        "  grpcurl -plaintext -d '{{\"jobId\": \"{}\", \"beforeSubstitution\": true}}' {gateway} iot.jobs.v1.JobsGateway/DescribeJob",
        seed::TEMPLATED
    );
    println!(
        "  grpcurl -plaintext -d '{{\"jobIds\": [\"{}\"]}}' {gateway} iot.jobs.v1.JobsGateway/WatchJobs",
        seed::ROLLOUT
    );
    println!();
    println!("Or with this binary's client (aws iot describe-job's options and output):");
    let to = if gateway == crate::cli::args::DEFAULT_GATEWAY.trim_start_matches("http://") {
        String::new()
    } else {
        format!(" --gateway {gateway}")
    };
    println!(
        "  iot-jobs-gateway describe-job{to} --job-id {}",
        seed::ROLLOUT
    );
    println!(
        "  iot-jobs-gateway describe-jobs{to} --job-ids {} --output table --query 'jobs[].[jobId, job.status]'",
        job_ids.join(" ")
    );
    println!(
        "  iot-jobs-gateway watch-job{to} --job-id {}",
        seed::ROLLOUT
    );
    println!(
        "The {} rollout moves every second and completes in about half a minute.",
        seed::ROLLOUT
    );
}
