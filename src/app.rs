//! The `serve` command: builds the AWS upstream from configuration, binds
//! the listener and runs the server until SIGTERM/SIGINT.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tracing::info;

use crate::{
    banner,
    config::{DemoArgs, ServeArgs, SimulatorArgs},
    jobs::Jobs,
    server::{self, ServeError},
    simulator::{SimConfig, Simulator, clock::SystemClock, http as sim_http, seed},
    upstream::{
        aws::{self, AwsConfigError, AwsJobsUpstream},
        retry::RetryPolicy,
    },
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
        addr: SocketAddr,
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
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
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
    print_demo_banner(address, sim_address, &job_ids);
    server::run(listener, jobs, Duration::from_secs(5), shutdown).await?;
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AppError> {
    let error = |source| AppError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

/// Prints the demo's banner with this binary named as the user's shell
/// runs it.
fn print_demo_banner(gateway: SocketAddr, simulator: SocketAddr, job_ids: &[&str]) {
    let program = match (std::env::current_exe(), std::env::current_dir()) {
        (Ok(exe), Ok(cwd)) => banner::invocation(&exe, &cwd, std::env::var_os("PATH").as_deref()),
        (Ok(exe), Err(_)) => banner::invocation(&exe, Path::new("/"), None),
        (Err(_), _) => "iot-jobs-gateway".to_owned(),
    };
    let banner = banner::Banner {
        gateway,
        simulator,
        job_ids,
        program,
    };
    print!("{}", banner.render());
}
