//! Command-line and environment configuration, parsed once and checked up
//! front. Every flag can also come from the environment variable shown in
//! `--help`; a bad value is reported by name and the process exits non-zero.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, CommandFactory, Parser, Subcommand, error::ErrorKind};

pub mod groups;
mod parse;

use groups::{EventsArgs, ProtectionArgs, RedisArgs, SecurityArgs};
use parse::*;

use crate::{
    app::GatewaySettings,
    backends::redis::RedisSettings,
    cli::args::{
        DescribeJobArgs, DescribeJobExecutionArgs, DescribeJobsArgs, ListJobExecutionsForJobArgs,
        ListJobExecutionsForThingArgs, WatchJobArgs,
    },
    domain::JobsSettings,
    edge::server::ServerSettings,
    telemetry::LogFormat,
    upstream::{aws::UpstreamSettings, retry::RetryPolicy},
};

/// gRPC gateway in front of AWS IoT Jobs.
#[derive(Debug, Parser)]
#[command(name = "iot-jobs-gateway", version, about, long_about = None)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The gateway's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC gateway in front of AWS IoT (or an AWS stand-in).
    Serve(Box<ServeArgs>),
    /// Try the gateway with no AWS account: a simulated fleet behind it.
    Demo(DemoArgs),
    /// Run only the AWS IoT Jobs simulator (for the AWS CLI, boto3 or a gateway).
    Simulator(SimulatorArgs),
    /// Describe a job through a gateway: `aws iot describe-job`'s options and output.
    DescribeJob(DescribeJobArgs),
    /// Describe many jobs in one call; each id gets its answer or its error, in order.
    DescribeJobs(DescribeJobsArgs),
    /// Follow jobs live until they finish: progress bars on a terminal, JSON lines otherwise.
    WatchJob(WatchJobArgs),
    /// Describe one thing's execution of a job: `aws iot describe-job-execution`'s options and output.
    DescribeJobExecution(DescribeJobExecutionArgs),
    /// List a job's executions: `aws iot list-job-executions-for-job`'s options, paging and output.
    ListJobExecutionsForJob(ListJobExecutionsForJobArgs),
    /// List a thing's executions: `aws iot list-job-executions-for-thing`'s options, paging and output.
    ListJobExecutionsForThing(ListJobExecutionsForThingArgs),
}

impl Command {
    /// Whether this is a client subcommand (which exits as the AWS CLI does).
    pub fn is_client(name: &str) -> bool {
        matches!(
            name,
            "describe-job"
                | "describe-jobs"
                | "watch-job"
                | "describe-job-execution"
                | "list-job-executions-for-job"
                | "list-job-executions-for-thing"
        )
    }
}

/// Settings of `iot-jobs-gateway demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address the demo gateway listens on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Cache, rate limit and batch settings.
    #[command(flatten)]
    pub protection: ProtectionArgs,
}

impl DemoArgs {
    /// The demo gateway's settings: production defaults, a short grace.
    pub fn gateway(&self) -> GatewaySettings {
        GatewaySettings {
            listen: self.listen,
            jobs: self
                .protection
                .jobs(RetryPolicy::default(), Duration::from_secs(15)),
            server: self.protection.server(Duration::from_secs(5)),
            redis: None,
            events: None,
        }
    }
}

/// Settings of `iot-jobs-gateway simulator`.
#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    /// Address the simulator's HTTP API listens on.
    #[arg(long, env = "SIMULATOR_LISTEN", default_value = "127.0.0.1:4566")]
    pub listen: SocketAddr,

    /// DescribeJob calls per second before ThrottlingException (0 = no limit).
    #[arg(long, env = "SIMULATOR_RATE_LIMIT", default_value_t = 10)]
    pub rate_limit: u32,

    /// Publish AWS IoT Jobs events to this MQTT broker (mqtt://host:port), as AWS IoT does.
    #[arg(long, env = "SIMULATOR_EVENTS_MQTT_URL")]
    pub events_mqtt_url: Option<String>,

    /// Start with the demo fleet's jobs.
    #[arg(long, env = "SIMULATOR_DEMO_FLEET")]
    pub demo_fleet: bool,

    /// Also create this many IN_PROGRESS jobs, load-000000 upwards (for load tests).
    #[arg(long, env = "SIMULATOR_SYNTHETIC_JOBS", default_value_t = 0)]
    pub synthetic_jobs: usize,

    /// Things a thing-group target stands for (a synthetic job stays IN_PROGRESS about this many seconds).
    #[arg(long, env = "SIMULATOR_GROUP_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub group_size: u64,
}

/// Settings of `iot-jobs-gateway serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// AWS region of the IoT jobs (default: AWS_REGION or the shared AWS config).
    #[arg(long, env = "GATEWAY_REGION", value_parser = parse_region)]
    pub region: Option<String>,

    /// Send AWS IoT calls to this URL instead (moto, LocalStack, a VPC endpoint).
    #[arg(long, env = "GATEWAY_ENDPOINT_URL", value_parser = parse_endpoint_url)]
    pub endpoint_url: Option<String>,

    /// Shared AWS config profile for credentials and region.
    #[arg(long, env = "GATEWAY_PROFILE")]
    pub profile: Option<String>,

    /// Longest one AWS HTTP attempt may take (e.g. 5s, 800ms).
    #[arg(long, env = "GATEWAY_UPSTREAM_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub upstream_attempt_timeout: Duration,

    /// Longest one AWS question may take, all attempts and backoffs included.
    #[arg(long, env = "GATEWAY_UPSTREAM_OPERATION_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub upstream_operation_timeout: Duration,

    /// Longest the gateway waits to open a connection to AWS.
    #[arg(long, env = "GATEWAY_UPSTREAM_CONNECT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Attempts per AWS question, the first included (1 to 10; 1 = no retries).
    #[arg(long, env = "GATEWAY_UPSTREAM_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=10))]
    pub upstream_max_attempts: u32,

    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish.
    #[arg(long, env = "GATEWAY_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Cache, rate limit and batch settings.
    #[command(flatten)]
    pub protection: ProtectionArgs,

    /// Sharing with other replicas through Redis.
    #[command(flatten)]
    pub redis: RedisArgs,

    /// TLS, caller authentication and permissions.
    #[command(flatten)]
    pub security: SecurityArgs,

    /// AWS IoT Jobs events over MQTT.
    #[command(flatten)]
    pub events: EventsArgs,
}

impl ServeArgs {
    /// Checks rules that involve more than one setting.
    pub fn validate(&self) -> Result<(), clap::Error> {
        self.protection.validate()?;
        if let Some(fallback) = self.redis.redis_fallback_rate
            && fallback > self.protection.upstream_rate
        {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--redis-fallback-rate ({fallback}) must not be above --upstream-rate ({}): it is one replica's share while Redis is unreachable",
                    self.protection.upstream_rate
                ),
            ));
        }
        if self.upstream_attempt_timeout > self.upstream_operation_timeout {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--upstream-attempt-timeout ({}) must not be longer than --upstream-operation-timeout ({})",
                    humantime::format_duration(self.upstream_attempt_timeout),
                    humantime::format_duration(self.upstream_operation_timeout),
                ),
            ));
        }
        Ok(())
    }

    /// The AWS client settings.
    pub fn upstream(&self) -> UpstreamSettings {
        UpstreamSettings {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            profile: self.profile.clone(),
            attempt_timeout: self.upstream_attempt_timeout,
            connect_timeout: self.upstream_connect_timeout,
        }
    }

    /// The domain settings: retries, timeouts, cache, rate limit, batches.
    pub fn jobs(&self) -> JobsSettings {
        let retry = RetryPolicy {
            max_attempts: self.upstream_max_attempts,
            ..RetryPolicy::default()
        };
        self.protection.jobs(retry, self.upstream_operation_timeout)
    }

    /// Everything the gateway in front of AWS is built from.
    pub fn gateway(&self) -> GatewaySettings {
        GatewaySettings {
            listen: self.listen,
            jobs: self.jobs(),
            server: ServerSettings {
                tls: self.security.tls(),
                auth: self.security.auth(),
                health_listen: self.security.health_listen,
                ..self.protection.server(self.shutdown_grace)
            },
            redis: self.redis(),
            events: self.events.settings(),
        }
    }

    /// The Redis settings, when replicas share through Redis.
    pub fn redis(&self) -> Option<RedisSettings> {
        let url = self.redis.redis_url.clone()?;
        Some(RedisSettings {
            url,
            key_prefix: self.redis.redis_key_prefix.clone(),
            timeout: self.redis.redis_timeout,
            fallback_rate: self
                .redis
                .redis_fallback_rate
                .unwrap_or(self.protection.upstream_rate / 3.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{cache::CacheSettings, limit::LimiterSettings, watch::WatchSettings};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("iot-jobs-gateway").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_readme() {
        let Command::Serve(args) = parse(&["serve"]).unwrap().command else {
            panic!("serve parses as Serve")
        };
        assert_eq!(args.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(args.upstream_attempt_timeout, Duration::from_secs(5));
        assert_eq!(args.upstream_operation_timeout, Duration::from_secs(15));
        assert_eq!(args.upstream_connect_timeout, Duration::from_secs(3));
        assert_eq!(args.upstream_max_attempts, 3);
        assert_eq!(args.shutdown_grace, Duration::from_secs(20));
        assert!(args.validate().is_ok());
        let jobs = args.jobs();
        assert_eq!(jobs.limiter, LimiterSettings::default());
        assert_eq!(jobs.cache, CacheSettings::default());
        assert_eq!(jobs.max_batch_size, 1000);
        assert_eq!(jobs.watch, WatchSettings::default());
        assert_eq!(jobs.limiter.rate, 10.0);
        let server = args.gateway().server;
        let defaults = ServerSettings::default();
        assert_eq!(server.connections, defaults.connections);
        assert_eq!(server.connections.max_probe, 32);
        assert_eq!(server.connections.preface_timeout, Duration::from_secs(10));
        assert_eq!(server.max_concurrent_streams, 200);
        assert_eq!(server.request_message_timeout, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = parse(&["serve", "--endpoint-url", "localhost:5000"]).unwrap_err();
        assert!(err.to_string().contains("--endpoint-url"), "{err}");
        let err = parse(&["serve", "--shutdown-grace", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--shutdown-grace"), "{err}");
        let err = parse(&["serve", "--region", "US East"]).unwrap_err();
        assert!(err.to_string().contains("--region"), "{err}");
        let err = parse(&["serve", "--upstream-max-attempts", "0"]).unwrap_err();
        assert!(err.to_string().contains("--upstream-max-attempts"), "{err}");
        let err = parse(&["serve", "--upstream-rate", "0"]).unwrap_err();
        assert!(err.to_string().contains("--upstream-rate"), "{err}");
        let err = parse(&["serve", "--max-batch-size", "0"]).unwrap_err();
        assert!(err.to_string().contains("--max-batch-size"), "{err}");
        let err = parse(&["serve", "--cache-ttl", "0s"]).unwrap_err();
        assert!(err.to_string().contains("--cache-ttl"), "{err}");
        let err = parse(&["serve", "--watch-min-share", "1.5"]).unwrap_err();
        assert!(err.to_string().contains("--watch-min-share"), "{err}");
        let err = parse(&["demo", "--watch-poll-interval", "0s"]).unwrap_err();
        assert!(err.to_string().contains("--watch-poll-interval"), "{err}");
        let err = parse(&["serve", "--watch-heartbeat", "400days"]).unwrap_err();
        assert!(err.to_string().contains("--watch-heartbeat"), "{err}");
    }

    #[test]
    fn the_simulators_group_size_defaults_to_its_config() {
        let Command::Simulator(args) = parse(&["simulator"]).unwrap().command else {
            panic!("simulator parses as Simulator")
        };
        let default = crate::simulator::SimConfig::default().group_size;
        assert_eq!(usize::try_from(args.group_size).unwrap(), default);
        let err = parse(&["simulator", "--group-size", "0"]).unwrap_err();
        assert!(err.to_string().contains("--group-size"), "{err}");
    }

    #[test]
    fn attempt_timeout_may_not_exceed_operation_timeout() {
        let Command::Serve(args) = parse(&[
            "serve",
            "--upstream-attempt-timeout",
            "30s",
            "--upstream-operation-timeout",
            "10s",
        ])
        .unwrap()
        .command
        else {
            panic!("serve parses as Serve")
        };
        let err = args.validate().unwrap_err();
        assert!(
            err.to_string().contains("--upstream-attempt-timeout"),
            "{err}"
        );
    }

    #[test]
    fn watches_per_connection_stay_below_the_stream_bound() {
        for command in ["serve", "demo"] {
            let cli = parse(&[
                command,
                "--max-concurrent-streams",
                "100",
                "--watch-max-streams-per-connection",
                "100",
            ])
            .unwrap();
            let protection = match &cli.command {
                Command::Serve(args) => &args.protection,
                Command::Demo(args) => &args.protection,
                _ => unreachable!("parsed a gateway command"),
            };
            let err = protection.validate().unwrap_err().to_string();
            assert!(
                err.contains("--watch-max-streams-per-connection (100) must be below --max-concurrent-streams (100)"),
                "{command}: {err}"
            );
        }
    }
}
