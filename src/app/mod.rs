//! The gateway put together: [`Application::build`] wires the edge, the
//! domain over its roles' backends, the upstream and the events, from
//! [`GatewaySettings`]. [`commands`] runs `serve`, `demo` and `simulator`
//! with it, from the command line [`config`] reads.

pub mod banner;
pub mod commands;
pub mod config;

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;

use crate::{
    backends::{
        local::Local,
        redis::{RedisSettings, Replicas, Shared},
    },
    domain::{Jobs, JobsSettings},
    edge::server::{self, Reporting, Security, ServeError, ServerSettings, Stopped},
    events::{self, EventSource, EventsSettings, Listener, mqtt::Subscriber},
    security::connections::{GuardedListener, HTTP1_START},
    telemetry::metrics::{self, Metrics, sampled::Sources},
    upstream::aws::{AwsConfigError, AwsJobsUpstream},
};

/// Why `serve` could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The AWS settings are unusable.
    #[error("configuration error: {0}")]
    Config(#[from] AwsConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        /// The flag that named it.
        flag: &'static str,
        /// The address.
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
    /// A TLS or authentication file cannot serve.
    #[error("configuration error: {0}")]
    Security(#[from] server::SecurityError),
    /// The Redis URL cannot work.
    #[error("configuration error: --redis-url / GATEWAY_REDIS_URL: {0}")]
    Redis(redis::RedisError),
    /// The events settings cannot work.
    #[error("configuration error: {0}")]
    Events(#[from] events::EventsError),
    /// The simulator cannot publish events to the broker given.
    #[error("configuration error: --events-mqtt-url: {0}")]
    SimulatorEvents(#[from] crate::simulator::publisher::PublishError),
    /// The simulator's HTTP server failed.
    #[error("the simulator failed: {0}")]
    Simulator(std::io::Error),
}

/// Everything a gateway is built from.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// How the domain protects AWS and answers.
    pub jobs: JobsSettings,
    /// Connections and shutdown.
    pub server: ServerSettings,
    /// Share the roles with other replicas through this Redis; `None`: a
    /// gateway on its own.
    pub redis: Option<RedisSettings>,
    /// Poll watched jobs when AWS IoT Jobs events say they changed.
    pub events: Option<EventsSettings>,
}

/// A gateway ready to serve: the listener bound and the domain service
/// built over its upstream, with every role chosen here, once. `serve`,
/// `demo` and the tests all build it this way.
pub struct Application {
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    address: SocketAddr,
    jobs: Jobs,
    server: ServerSettings,
    security: Security,
    reporting: Reporting,
    metrics: Option<(TcpListener, Arc<Metrics>)>,
    events: Option<Box<dyn EventSource>>,
}

/// Stops a background task when the gateway stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Application {
    /// Binds `settings.listen` and builds the domain over `upstream`.
    pub async fn build(
        settings: GatewaySettings,
        upstream: Arc<AwsJobsUpstream>,
    ) -> Result<Self, AppError> {
        let security = Security::load(&settings.server)?;
        let (listener, address) = bind(settings.listen).await?;
        let health_listener = match settings.server.health_listen {
            Some(addr) => Some(bind_for(HEALTH_FLAG, addr).await?.0),
            None => None,
        };
        let events = match &settings.events {
            Some(events) => Some(Box::new(Subscriber::new(events)?) as Box<dyn EventSource>),
            None => None,
        };
        let metrics_listener = match settings.server.metrics_listen {
            Some(addr) => Some(bind_for(METRICS_FLAG, addr).await?),
            None => None,
        };
        warn_if_open(address, &security);
        let (jobs, shared) = match &settings.redis {
            None => (Jobs::new(upstream, settings.jobs, &Local).await, None),
            Some(redis) => {
                let shared = Shared::connect(redis).await.map_err(AppError::Redis)?;
                let weak = Arc::downgrade(&shared);
                let replicas = Replicas(shared);
                (
                    Jobs::new(upstream, settings.jobs, &replicas).await,
                    Some(weak),
                )
            }
        };
        let reporting = Reporting::new(settings.server.refusal_log);
        let metrics = metrics_listener.map(|(listener, address)| {
            let mut metrics = Metrics::new(Sources {
                jobs: Some(jobs.gauges()),
                shared,
            });
            reporting.grpc.register(metrics.registry());
            reporting.connections.register(metrics.registry());
            jobs.metrics().register(metrics.registry());
            metrics::announce(address);
            (listener, Arc::new(metrics))
        });
        Ok(Self {
            listener,
            health_listener,
            address,
            jobs,
            server: settings.server,
            security,
            reporting,
            metrics,
            events,
        })
    }

    /// The address the gateway listens on (the port the OS picked for `:0`).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Takes AWS IoT Jobs events from `source` instead of the settings'
    /// MQTT broker.
    pub fn with_events(self, source: impl EventSource) -> Self {
        Self {
            events: Some(Box::new(source)),
            ..self
        }
    }

    /// The domain service, shared with the server.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Stopped, ServeError> {
        let listeners = server::Listeners {
            grpc: self.listener,
            health: self.health_listener,
        };
        // Events only ever hasten polls; they stop with the process.
        let _events = self
            .events
            .map(|events| AbortOnDrop(events.start(Listener::new(self.jobs.clone()))));
        // Metrics are served until the gateway has stopped, drain included.
        let (_stop_metrics, stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some((listener, metrics)) = self.metrics {
            let limits = &self.server.connections;
            let gate = self
                .reporting
                .gate("metrics", limits.max_probe, limits, HTTP1_START);
            let listener = GuardedListener::new(listener, gate);
            tokio::spawn(metrics::serve(listener, metrics, async {
                let _ = stopped.await;
            }));
        }
        server::run(
            listeners,
            self.jobs,
            self.server,
            self.security,
            self.reporting,
            shutdown,
        )
        .await
    }
}

/// Warns when anyone who can reach the port may call in plaintext, unknown.
fn warn_if_open(address: SocketAddr, security: &Security) {
    if open_to_anyone(
        address,
        security.tls.is_some(),
        security.auth.authenticates(),
    ) {
        tracing::warn!(
            %address,
            "listening beyond loopback in plaintext with no caller authentication: anyone who \
             can reach this port may call every RPC. Set --tls-cert/--tls-key and \
             --tls-client-ca or --auth-tokens/--jwt-jwks (README: Securing the gateway)"
        );
    }
}

/// Whether a listener on `address` lets anyone who reaches it call
/// unencrypted and unidentified.
fn open_to_anyone(address: SocketAddr, tls: bool, authenticates: bool) -> bool {
    !address.ip().is_loopback() && !tls && !authenticates
}

/// Names the health listener in errors.
const HEALTH_FLAG: &str = "--health-listen / GATEWAY_HEALTH_LISTEN";

/// Names the metrics listener in errors.
const METRICS_FLAG: &str = "--metrics-listen / GATEWAY_METRICS_LISTEN";

pub(crate) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AppError> {
    bind_for("--listen / GATEWAY_LISTEN", addr).await
}

async fn bind_for(
    flag: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), AppError> {
    let error = |source| AppError::Bind { flag, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plaintext_unauthenticated_listener_beyond_loopback_is_open_to_anyone() {
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let pod: SocketAddr = "10.1.2.3:50051".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let v6_loopback: SocketAddr = "[::1]:50051".parse().unwrap();
        assert!(open_to_anyone(any, false, false));
        assert!(open_to_anyone(pod, false, false));
        assert!(!open_to_anyone(loopback, false, false));
        assert!(!open_to_anyone(v6_loopback, false, false));
        assert!(!open_to_anyone(any, true, false), "TLS");
        assert!(!open_to_anyone(any, false, true), "tokens or mTLS");
    }
}
