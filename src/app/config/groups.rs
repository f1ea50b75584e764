//! The groups of `serve`'s flags (and the demo's protection flags), each
//! flattened into the commands that take it, and what each turns into.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, CommandFactory, error::ErrorKind};

use super::{Cli, parse::*};
use crate::{
    domain::{JobsSettings, cache::CacheSettings, limit::LimiterSettings, watch::WatchSettings},
    edge::server::ServerSettings,
    events::EventsSettings,
    security::{
        auth::{AuthSettings, jwt::JwtSettings},
        connections::{self, ConnectionLimits},
        tls::TlsSettings,
    },
    telemetry::refusals::RefusalLogSettings,
    upstream::{
        DescribeJobExecution, ListJobExecutionsForJob, ListJobExecutionsForThing, Operation as _,
        retry::RetryPolicy,
    },
};

/// How the gateway protects AWS: answer cache, rate limit, batch size.
#[derive(Debug, Clone, Args)]
pub struct ProtectionArgs {
    /// How long an answer about an active job is served from cache.
    #[arg(long, env = "GATEWAY_CACHE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub cache_ttl: Duration,

    /// How long an answer about a COMPLETED or CANCELED job is served from cache.
    #[arg(long, env = "GATEWAY_CACHE_TERMINAL_TTL", default_value = "5m", value_parser = parse_duration)]
    pub cache_terminal_ttl: Duration,

    /// How long "no such job" is remembered.
    #[arg(long, env = "GATEWAY_CACHE_NOT_FOUND_TTL", default_value = "2s", value_parser = parse_duration)]
    pub cache_not_found_ttl: Duration,

    /// When AWS fails (unavailable, internal, timeout, throttled) or the rate limit has no call in time, serve a cached answer that expired less than this long ago, marked `x-cache: stale` with its age; never for NOT_FOUND or access errors; 0 = off. 5m by default: jobs change over minutes to hours, and callers can tell and refuse (`cache-control: no-cache` or `max-stale=0`).
    #[arg(long, env = "GATEWAY_CACHE_STALE_IF_ERROR", default_value = "5m", value_parser = parse_window)]
    pub cache_stale_if_error: Duration,

    /// Answer at once with a cached answer that expired less than this long ago (`x-cache: stale`) while one background AWS call renews it; 0 = off (the default: it loosens the TTL's promise of freshness).
    #[arg(long, env = "GATEWAY_CACHE_STALE_WHILE_REVALIDATE", default_value = "0s", value_parser = parse_window)]
    pub cache_stale_while_revalidate: Duration,

    /// Memory the cached answers may use, in MiB (estimated).
    #[arg(long, env = "GATEWAY_CACHE_MAX_MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub cache_max_mib: u64,

    /// AWS DescribeJob calls per second, for all clients together (AWS's default quota is 10).
    #[arg(long, env = "GATEWAY_UPSTREAM_RATE", default_value_t = 10.0, value_parser = parse_rate)]
    pub upstream_rate: f64,

    /// AWS calls that may start at once after a quiet period.
    #[arg(long, env = "GATEWAY_UPSTREAM_BURST", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub upstream_burst: u32,

    /// AWS DescribeJobExecution calls per second, for all clients together: a bucket of its own, apart from DescribeJob's (AWS's default quota is 10; Service Quotas code L-B731A266).
    #[arg(long, env = "GATEWAY_DESCRIBE_JOB_EXECUTION_RATE", default_value_t = 10.0, value_parser = parse_rate)]
    pub describe_job_execution_rate: f64,

    /// DescribeJobExecution calls that may start at once after a quiet period.
    #[arg(long, env = "GATEWAY_DESCRIBE_JOB_EXECUTION_BURST", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub describe_job_execution_burst: u32,

    /// AWS ListJobExecutionsForJob calls (pages) per second, for all clients together: a bucket of its own (AWS's default quota is 10; Service Quotas code L-9CCB5F90).
    #[arg(long, env = "GATEWAY_LIST_JOB_EXECUTIONS_FOR_JOB_RATE", default_value_t = 10.0, value_parser = parse_rate)]
    pub list_job_executions_for_job_rate: f64,

    /// ListJobExecutionsForJob calls that may start at once after a quiet period.
    #[arg(long, env = "GATEWAY_LIST_JOB_EXECUTIONS_FOR_JOB_BURST", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub list_job_executions_for_job_burst: u32,

    /// AWS ListJobExecutionsForThing calls (pages) per second, for all clients together: a bucket of its own (AWS's default quota is 10; Service Quotas lists it as ListJobExecutionsForThing API TPS).
    #[arg(long, env = "GATEWAY_LIST_JOB_EXECUTIONS_FOR_THING_RATE", default_value_t = 10.0, value_parser = parse_rate)]
    pub list_job_executions_for_thing_rate: f64,

    /// ListJobExecutionsForThing calls that may start at once after a quiet period.
    #[arg(long, env = "GATEWAY_LIST_JOB_EXECUTIONS_FOR_THING_BURST", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub list_job_executions_for_thing_burst: u32,

    /// Calls that may wait for the rate limit at once; more are turned away.
    #[arg(long, env = "GATEWAY_UPSTREAM_MAX_WAITERS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub upstream_max_waiters: u64,

    /// The most jobs one BatchDescribeJobs or StreamDescribeJobs call may ask about.
    #[arg(long, env = "GATEWAY_MAX_BATCH_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_batch_size: u64,

    /// Watch streams: polling, heartbeats and caps.
    #[command(flatten)]
    pub watch: WatchArgs,

    /// Metrics and log volume.
    #[command(flatten)]
    pub operations: OperationsArgs,

    /// Connections and streams: caps and time limits.
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// What one client may hold open: connections, streams, and how long it
/// may stay silent.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Client connections open at once on --listen; past it, new ones are reset at once (counted in metrics, logged summarised). Default: three quarters of the soft file limit (ulimit -n) less the probe ports', at most 65536.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: Option<u64>,

    /// Client connections open at once on each of --health-listen and --metrics-listen.
    #[arg(long, env = "GATEWAY_MAX_PROBE_CONNECTIONS", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_probe_connections: u64,

    /// From accept, the time a connection has to finish its TLS handshake and send the HTTP/2 preface (a request line on the metrics port); silent ones are closed.
    #[arg(long, env = "GATEWAY_CONNECTION_PREFACE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connection_preface_timeout: Duration,

    /// Calls (HTTP/2 streams) open at once on one connection; more wait in the client.
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT_STREAMS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_streams: u32,

    /// A call whose request message has not arrived this long after its headers ends with DEADLINE_EXCEEDED.
    #[arg(long, env = "GATEWAY_REQUEST_MESSAGE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_message_timeout: Duration,
}

impl ConnectionArgs {
    /// The connection limits.
    pub fn limits(&self) -> ConnectionLimits {
        let probe = usize::try_from(self.max_probe_connections).unwrap_or(usize::MAX);
        let defaults = ConnectionLimits::for_file_limit(connections::file_limit(), probe);
        ConnectionLimits {
            max: self
                .max_connections
                .map_or(defaults.max, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_probe: probe,
            preface_timeout: self.connection_preface_timeout,
        }
    }
}

/// What operators see: metrics, and how many refusals are logged.
#[derive(Debug, Clone, Args)]
pub struct OperationsArgs {
    /// Serve Prometheus metrics at http://ADDRESS/metrics (off unless set), e.g. 0.0.0.0:9464.
    #[arg(long, env = "GATEWAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Expected refusals (RATE_LIMITED, unauthenticated or unpermitted callers) logged one by one per kind and interval; the rest are summarised (all are counted in metrics).
    #[arg(long, env = "GATEWAY_REFUSAL_LOG_LINES", default_value_t = 10)]
    pub refusal_log_lines: u32,

    /// The interval of --refusal-log-lines; 0s logs every refusal.
    #[arg(long, env = "GATEWAY_REFUSAL_LOG_INTERVAL", default_value = "10s", value_parser = parse_window)]
    pub refusal_log_interval: Duration,
}

/// How WatchJobs streams poll AWS and what they may cost.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// How often each watched job is polled, budget permitting (one poll per job for all its watchers).
    #[arg(long, env = "GATEWAY_WATCH_POLL_INTERVAL", default_value = "5s", value_parser = parse_watch_duration)]
    pub watch_poll_interval: Duration,

    /// Share of --upstream-rate that watch polls keep while calls wait for it (0 to 1).
    #[arg(long, env = "GATEWAY_WATCH_MIN_SHARE", default_value_t = 0.2, value_parser = parse_share)]
    pub watch_min_share: f64,

    /// A watch stream with no event for this long gets a heartbeat event.
    #[arg(long, env = "GATEWAY_WATCH_HEARTBEAT", default_value = "15s", value_parser = parse_watch_duration)]
    pub watch_heartbeat: Duration,

    /// HTTP/2 PING interval on client connections, so idle streams survive load balancers.
    #[arg(long, env = "GATEWAY_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_watch_duration)]
    pub keepalive_interval: Duration,

    /// The most distinct jobs one WatchJobs stream may watch.
    #[arg(long, env = "GATEWAY_WATCH_MAX_JOBS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub watch_max_jobs: u64,

    /// The most WatchJobs streams open at once, gateway-wide.
    #[arg(long, env = "GATEWAY_WATCH_MAX_STREAMS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub watch_max_streams: u64,

    /// The most WatchJobs streams open at once on one client connection; below --max-concurrent-streams, so unary calls still fit beside them.
    #[arg(long, env = "GATEWAY_WATCH_MAX_STREAMS_PER_CONNECTION", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub watch_max_streams_per_connection: u64,
}

impl WatchArgs {
    /// The watch settings.
    pub fn settings(&self) -> WatchSettings {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        WatchSettings {
            poll_interval: self.watch_poll_interval,
            heartbeat: self.watch_heartbeat,
            max_jobs: count(self.watch_max_jobs),
            max_streams: count(self.watch_max_streams),
            max_streams_per_connection: count(self.watch_max_streams_per_connection),
        }
    }
}

impl ProtectionArgs {
    /// Checks rules between these settings.
    pub fn validate(&self) -> Result<(), clap::Error> {
        let watches = self.watch.watch_max_streams_per_connection;
        let streams = self.connections.max_concurrent_streams;
        if watches >= u64::from(streams) {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--watch-max-streams-per-connection ({watches}) must be below --max-concurrent-streams ({streams}): a watch past the HTTP/2 bound would wait in the client for ever instead of getting TOO_MANY_WATCHES, and no unary call would fit beside the watches"
                ),
            ));
        }
        Ok(())
    }

    /// The server's connection and shutdown settings.
    pub fn server(&self, grace: Duration) -> ServerSettings {
        ServerSettings {
            keepalive: self.watch.keepalive_interval,
            grace,
            metrics_listen: self.operations.metrics_listen,
            refusal_log: RefusalLogSettings {
                lines: self.operations.refusal_log_lines,
                every: self.operations.refusal_log_interval,
            },
            connections: self.connections.limits(),
            max_concurrent_streams: self.connections.max_concurrent_streams,
            request_message_timeout: self.connections.request_message_timeout,
            ..ServerSettings::default()
        }
    }

    /// An operation's bucket at `rate` and `burst`, queueing as DescribeJob's.
    fn bucket(&self, rate: f64, burst: u32) -> LimiterSettings {
        LimiterSettings {
            rate,
            burst,
            max_waiters: usize::try_from(self.upstream_max_waiters).unwrap_or(usize::MAX),
            background_share: self.watch.watch_min_share,
        }
    }

    /// The domain settings, with `retry` and `operation_timeout` from elsewhere.
    pub fn jobs(&self, retry: RetryPolicy, operation_timeout: Duration) -> JobsSettings {
        JobsSettings {
            retry,
            operation_timeout,
            limiter: LimiterSettings {
                rate: self.upstream_rate,
                burst: self.upstream_burst,
                max_waiters: usize::try_from(self.upstream_max_waiters).unwrap_or(usize::MAX),
                background_share: self.watch.watch_min_share,
            },
            operation_limiters: [
                (
                    DescribeJobExecution::NAME,
                    self.bucket(
                        self.describe_job_execution_rate,
                        self.describe_job_execution_burst,
                    ),
                ),
                (
                    ListJobExecutionsForJob::NAME,
                    self.bucket(
                        self.list_job_executions_for_job_rate,
                        self.list_job_executions_for_job_burst,
                    ),
                ),
                (
                    ListJobExecutionsForThing::NAME,
                    self.bucket(
                        self.list_job_executions_for_thing_rate,
                        self.list_job_executions_for_thing_burst,
                    ),
                ),
            ]
            .into(),
            cache: CacheSettings {
                ttl: self.cache_ttl,
                terminal_ttl: self.cache_terminal_ttl,
                not_found_ttl: self.cache_not_found_ttl,
                max_bytes: self.cache_max_mib * 1024 * 1024,
                stale_if_error: self.cache_stale_if_error,
                stale_while_revalidate: self.cache_stale_while_revalidate,
            },
            max_batch_size: usize::try_from(self.max_batch_size).unwrap_or(usize::MAX),
            watch: self.watch.settings(),
        }
    }
}

/// Where AWS IoT Jobs events come from.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Poll a watched job as soon as AWS IoT says it changed: mqtts://<the account's AWS IoT data endpoint>:8883 (with --events-mqtt-cert/--events-mqtt-key), or mqtt://host:port for any broker.
    #[arg(long, env = "GATEWAY_EVENTS_MQTT_URL")]
    pub events_mqtt_url: Option<String>,

    /// The X.509 certificate (PEM) the gateway connects to AWS IoT Core with.
    #[arg(long, env = "GATEWAY_EVENTS_MQTT_CERT", requires_all = ["events_mqtt_url", "events_mqtt_key"])]
    pub events_mqtt_cert: Option<PathBuf>,

    /// Its private key (PEM).
    #[arg(long, env = "GATEWAY_EVENTS_MQTT_KEY", requires = "events_mqtt_cert")]
    pub events_mqtt_key: Option<PathBuf>,

    /// CA bundle (PEM) for mqtts:// (Amazon Root CA 1 for AWS IoT Core); the system's roots without it.
    #[arg(long, env = "GATEWAY_EVENTS_MQTT_CA", requires = "events_mqtt_url")]
    pub events_mqtt_ca: Option<PathBuf>,

    /// MQTT client id, unique per replica (an IoT policy may name it); default iot-jobs-gateway-<HOSTNAME, else the process id>.
    #[arg(
        long,
        env = "GATEWAY_EVENTS_MQTT_CLIENT_ID",
        requires = "events_mqtt_url"
    )]
    pub events_mqtt_client_id: Option<String>,
}

impl EventsArgs {
    /// The events settings, when an URL is given.
    pub fn settings(&self) -> Option<EventsSettings> {
        let url = self.events_mqtt_url.clone()?;
        let client_id = self.events_mqtt_client_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| std::process::id().to_string());
            format!("iot-jobs-gateway-{host}")
        });
        Some(EventsSettings {
            url,
            client_id,
            ca: self.events_mqtt_ca.clone(),
            client_auth: self
                .events_mqtt_cert
                .clone()
                .zip(self.events_mqtt_key.clone()),
        })
    }
}

/// TLS on the listener, who callers are and what they may do.
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Serve TLS with this certificate chain (PEM, leaf first); re-read when the file changes.
    #[arg(long, env = "GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM); re-read when the file changes.
    #[arg(long, env = "GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// mTLS: clients must present a certificate that chains to one of these CAs (PEM bundle); the caller is its SPIFFE ID, else its first DNS SAN, else its CN.
    #[arg(long, env = "GATEWAY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Bearer tokens: a file of `<sha256 of the token, hex> <caller name>` lines; re-read when it changes.
    #[arg(long, env = "GATEWAY_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,

    /// Bearer JWTs: the issuer's public keys (JWKS file); the caller is the token's `sub`. Needs --jwt-issuer and --jwt-audience.
    #[arg(long, env = "GATEWAY_JWT_JWKS", requires_all = ["jwt_issuer", "jwt_audience"])]
    pub jwt_jwks: Option<PathBuf>,

    /// The `iss` every JWT must carry.
    #[arg(long, env = "GATEWAY_JWT_ISSUER", requires = "jwt_jwks")]
    pub jwt_issuer: Option<String>,

    /// The `aud` every JWT must carry.
    #[arg(long, env = "GATEWAY_JWT_AUDIENCE", requires = "jwt_jwks")]
    pub jwt_audience: Option<String>,

    /// Refuse JWTs valid for longer than this (`exp` - `iat`, or what is left without `iat`); unset: any lifetime.
    #[arg(long, env = "GATEWAY_JWT_MAX_LIFETIME", requires = "jwt_jwks", value_parser = parse_duration)]
    pub jwt_max_lifetime: Option<Duration>,

    /// What each caller may do: RPCs, job ids, share weight and limits (YAML); re-read when it changes.
    #[arg(long, env = "GATEWAY_AUTH_POLICY")]
    pub auth_policy: Option<PathBuf>,

    /// Also serve gRPC health checks (only) in plaintext, without credentials, on this address: for probes that cannot speak TLS, such as Kubernetes' gRPC probes.
    #[arg(long, env = "GATEWAY_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

impl SecurityArgs {
    /// TLS on the listener, if configured.
    pub fn tls(&self) -> Option<TlsSettings> {
        Some(TlsSettings {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// How callers are authenticated and what they may do.
    pub fn auth(&self) -> AuthSettings {
        let jwt = match (&self.jwt_jwks, &self.jwt_issuer, &self.jwt_audience) {
            (Some(jwks), Some(issuer), Some(audience)) => Some(JwtSettings {
                jwks: jwks.clone(),
                issuer: issuer.clone(),
                audience: audience.clone(),
                max_lifetime: self.jwt_max_lifetime,
            }),
            _ => None,
        };
        AuthSettings {
            tokens: self.auth_tokens.clone(),
            jwt,
            policy: self.auth_policy.clone(),
        }
    }
}

/// Several replicas as one gateway: what they share in Redis.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Share the AWS budget, cache and watch polls with the other replicas through this Redis (redis:// or rediss://, user and password in the URL).
    #[arg(long, env = "GATEWAY_REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

    /// Starts every Redis key, so gateways for different accounts or regions can share one Redis.
    #[arg(long, env = "GATEWAY_REDIS_KEY_PREFIX", default_value = "iot-jobs-gateway", value_parser = parse_key_prefix)]
    pub redis_key_prefix: String,

    /// The longest one Redis operation may take.
    #[arg(long, env = "GATEWAY_REDIS_TIMEOUT", default_value = "250ms", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// AWS calls per second this replica allows itself while Redis is unreachable (default: a third of --upstream-rate; set it to the quota divided by the most replicas you run).
    #[arg(long, env = "GATEWAY_REDIS_FALLBACK_RATE", value_parser = parse_rate)]
    pub redis_fallback_rate: Option<f64>,
}
