//! The long-running commands: `serve` in front of AWS, `demo` in front of
//! the embedded simulator, and the simulator alone; each runs until
//! SIGTERM/SIGINT.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tracing::info;

use crate::{
    app::{
        AppError, Application, banner, bind, config::DemoArgs, config::ServeArgs,
        config::SimulatorArgs,
    },
    edge::server,
    events::InProcess,
    simulator::{SimConfig, Simulator, clock::SystemClock, http as sim_http, seed},
    upstream::{
        aws::{self, AwsConfigError, AwsJobsUpstream},
        credentials,
    },
};

/// Runs `iot-jobs-gateway serve` until a shutdown signal.
pub async fn serve(args: ServeArgs) -> Result<(), AppError> {
    let settings = args.upstream();
    let sdk = aws::load_sdk_config(&settings).await?;
    // Before anything is bound: no credentials at all exits now, with the
    // reason, rather than as UNAUTHENTICATED answers once callers arrive.
    credentials::check(&sdk, settings.profile.as_deref())
        .await
        .map_err(AwsConfigError::from)?;
    let client = aws::iot_client(&sdk, &settings);
    info!(
        region = sdk.region().map(|r| r.as_ref()).unwrap_or_default(),
        endpoint = settings.endpoint_url.as_deref().unwrap_or("AWS default"),
        "AWS IoT upstream configured"
    );
    let settings = args.gateway();
    info!(
        rate_per_sec = settings.jobs.limiter.rate,
        burst = settings.jobs.limiter.burst,
        cache_ttl = %humantime::format_duration(settings.jobs.cache.ttl),
        cache_max_mib = args.protection.cache_max_mib,
        "AWS protection: one token bucket for all DescribeJob calls, answers cached"
    );
    let shutdown = server::shutdown_signal().map_err(AppError::Signals)?;
    let app = Application::build(settings, Arc::new(AwsJobsUpstream::new(client))).await?;
    info!(address = %app.address(), "gateway listening");
    app.run(shutdown).await?;
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
    // Before the jobs are made, so their whole history is announced.
    if let Some(url) = &args.events_mqtt_url {
        sim.publish_events_to(url)?;
    }
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
/// AWS SDK; the simulator hands its AWS IoT Jobs events to the gateway in
/// the same process, as AWS IoT Core would over MQTT.
/// Needs no AWS account and no network.
pub async fn demo(args: DemoArgs) -> Result<(), AppError> {
    let shutdown = server::shutdown_signal().map_err(AppError::Signals)?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let sim = Simulator::new(SimConfig::default(), Arc::new(SystemClock));
    // Before the fleet is seeded, so the jobs' whole history is announced.
    let events = InProcess::new(sim.publish_events_in_process()?);
    let job_ids = seed::demo_fleet(&sim);
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
    let upstream = Arc::new(AwsJobsUpstream::new(client));
    let app = Application::build(args.gateway(), upstream)
        .await?
        .with_events(events);
    let address = app.address();
    info!(%address, simulator = %sim_address, "gateway listening");
    info!(
        "watch events on: the simulator hands its AWS IoT Jobs events to the gateway, and a \
         watched job is polled as soon as one arrives"
    );
    print_demo_banner(address, sim_address, &job_ids);
    app.run(shutdown).await?;
    Ok(())
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
