//! Wires the gateway into a tonic server: the JobsGateway service, gRPC
//! health (`""` and `iot.jobs.v1.JobsGateway`), server reflection v1 and
//! v1alpha (grpcurl 1.8 speaks only v1alpha), HTTP/2 keepalive, and
//! graceful shutdown with a deadline (watch streams end at once with
//! UNAVAILABLE), TLS ([`crate::edge::incoming`]) and the admission of callers
//! ([`crate::security::auth::layer`]) in front of every service.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot, time::Instant};
use tonic::transport::Server;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{
    domain::Jobs,
    edge::{observe::ObserveLayer, service::JobsGatewayService},
    pb::{self, jobs_gateway_server::JobsGatewayServer},
    security::{
        auth::{Auth, AuthSettings, layer::AdmitLayer},
        connections::{ConnectionLimits, ConnectionMetrics, Gate, HTTP2_PREFACE},
        tls::{RotatingTls, TlsError, TlsSettings},
        watched::FileError,
    },
    telemetry::{
        metrics::grpc::GrpcMetrics,
        refusals::{RefusalLog, RefusalLogSettings},
    },
};

/// How long a client has to answer an HTTP/2 PING before its connection
/// is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How the server treats client connections and shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// HTTP/2 PING (and TCP keepalive) interval on client connections, so
    /// idle watch streams survive load balancers that close quiet
    /// connections, and dead clients are found.
    pub keepalive: Duration,
    /// After a shutdown request, how long in-flight calls may take to finish.
    pub grace: Duration,
    /// TLS on the listener (plaintext without).
    pub tls: Option<TlsSettings>,
    /// How callers are authenticated and what they may do.
    pub auth: AuthSettings,
    /// A second, plaintext listener for health checks only.
    pub health_listen: Option<std::net::SocketAddr>,
    /// Where Prometheus metrics are served (none without).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How many expected refusals are logged one by one.
    pub refusal_log: RefusalLogSettings,
    /// Caps on open connections, and how soon a connection must speak.
    pub connections: ConnectionLimits,
    /// Streams (calls) open at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// How long a call's request messages may take to arrive.
    pub request_message_timeout: Duration,
}

/// Streams one connection may have open at once: hyper's own default,
/// which tonic's builder does not apply by itself.
pub const MAX_CONCURRENT_STREAMS: u32 = 200;

/// How long a call's request may take to arrive after its headers.
pub const REQUEST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(30),
            grace: Duration::from_secs(20),
            tls: None,
            auth: AuthSettings::default(),
            health_listen: None,
            metrics_listen: None,
            refusal_log: RefusalLogSettings::default(),
            connections: ConnectionLimits::default(),
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            request_message_timeout: REQUEST_MESSAGE_TIMEOUT,
        }
    }
}

/// The listener's TLS and the admission of callers, loaded from the
/// files of [`ServerSettings`] (and reloaded when they change).
#[derive(Debug, Clone)]
pub struct Security {
    /// TLS on the listener.
    pub tls: Option<Arc<RotatingTls>>,
    /// Who callers are and what they may do.
    pub auth: Arc<Auth>,
}

/// Why the TLS or authentication files cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A certificate, key or CA bundle.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A tokens, JWKS or policy file.
    #[error(transparent)]
    File(#[from] FileError),
}

impl Security {
    /// Reads every file `settings` names and starts watching them.
    pub fn load(settings: &ServerSettings) -> Result<Self, SecurityError> {
        let tls = settings.tls.clone().map(RotatingTls::load).transpose()?;
        if let Some(tls) = &tls {
            tls.spawn_reloader();
        }
        let mtls = tls
            .as_ref()
            .is_some_and(|t| t.requires_client_certificates());
        let auth = Auth::load(&settings.auth, mtls)?;
        Ok(Self {
            tls,
            auth: Arc::new(auth),
        })
    }

    /// Plaintext, no authentication, no policy.
    pub fn open() -> Self {
        Self {
            tls: None,
            auth: Arc::new(Auth::open()),
        }
    }
}

/// How the server was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight call finished within the grace period.
    Drained,
    /// The grace period ran out; remaining calls were cut off.
    GraceExpired,
}

/// Errors that stop the server from serving at all.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not read the embedded descriptors (a build defect).
    #[error("could not build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Where the server listens.
#[derive(Debug)]
pub struct Listeners {
    /// Every service, with TLS and the admission of callers when configured.
    pub grpc: TcpListener,
    /// Health checks only, in plaintext and open: for probes that cannot
    /// speak TLS (Kubernetes' gRPC probes) when the main listener does.
    pub health: Option<TcpListener>,
}

/// What the server reports to: the gRPC server metrics it counts, the
/// connection counters, and the bounded log of refusals.
#[derive(Clone)]
pub struct Reporting {
    /// The gRPC server's metric families.
    pub grpc: Arc<GrpcMetrics>,
    /// The listeners' connection counters.
    pub connections: ConnectionMetrics,
    /// Lines about refusals, a few per interval.
    pub refusals: Arc<RefusalLog>,
}

impl Reporting {
    /// Counters for a gateway that logs refusals as `settings` say (within
    /// a tokio runtime: the log's summaries are written by a task).
    pub fn new(settings: RefusalLogSettings) -> Self {
        Self {
            grpc: Arc::default(),
            connections: ConnectionMetrics::default(),
            refusals: RefusalLog::new(settings),
        }
    }

    /// The gate of `listener`: at most `max` connections, each to send
    /// `first_bytes` bytes within `limits`' preface timeout.
    pub fn gate(
        &self,
        listener: &'static str,
        max: usize,
        limits: &ConnectionLimits,
        first_bytes: usize,
    ) -> Gate {
        Gate::new(
            listener,
            max,
            limits.preface_timeout,
            first_bytes,
            &self.connections,
            self.refusals.clone(),
        )
    }
}

/// Serves the gateway on `listeners` until `shutdown` resolves, then drains
/// for at most `settings.grace`.
pub async fn run(
    listeners: Listeners,
    jobs: Jobs,
    settings: ServerSettings,
    security: Security,
    reporting: Reporting,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Stopped, ServeError> {
    let ServerSettings {
        keepalive,
        grace,
        connections,
        max_concurrent_streams,
        request_message_timeout,
        ..
    } = settings;
    let grpc_gate = reporting.gate("grpc", connections.max, &connections, HTTP2_PREFACE);
    let observe = ObserveLayer::new(
        reporting.grpc.clone(),
        reporting.refusals.clone(),
        request_message_timeout,
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (draining_tx, draining_rx) = oneshot::channel::<Instant>();
    let watching = jobs.clone();
    let signal = async move {
        shutdown.await;
        info!(
            watch_streams = watching.watches().open_streams(),
            "shutting down: health is NOT_SERVING, no new connections, watch streams end with \
             UNAVAILABLE, draining in-flight calls"
        );
        set_health(&health, ServingStatus::NotServing).await;
        // Watch streams never end by themselves: end them now so their
        // clients reconnect elsewhere instead of waiting out the grace period.
        watching.watches().close();
        let _ = draining_tx.send(Instant::now());
    };

    // The health listener serves until the main server has stopped.
    let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
    if let Some(listener) = listeners.health {
        let health_gate =
            reporting.gate("health", connections.max_probe, &connections, HTTP2_PREFACE);
        let health_only = Server::builder()
            .max_concurrent_streams(Some(max_concurrent_streams))
            .add_service(health_service.clone())
            .serve_with_incoming_shutdown(
                crate::edge::incoming::incoming(listener, None, health_gate),
                async {
                    let _ = stopped_rx.await;
                },
            );
        tokio::spawn(async move {
            if let Err(err) = health_only.await {
                warn!(error = %err, "the health listener failed");
            }
        });
    }
    let _stop_health = stopped_tx;

    let incoming = crate::edge::incoming::incoming(listeners.grpc, security.tls, grpc_gate);
    let serve = Server::builder()
        // Each stream holds memory until its call ends: without a bound, one
        // connection could open streams without end.
        .max_concurrent_streams(Some(max_concurrent_streams))
        // Idle watch streams must survive load balancers that close quiet
        // connections (AWS ELB: 60 s); PINGs also find dead clients.
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(keepalive))
        // Outermost, so refusals are counted and logged like every call.
        .layer(observe)
        .layer(AdmitLayer::new(security.auth))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(JobsGatewayServer::new(JobsGatewayService::new(jobs)))
        .serve_with_incoming_shutdown(incoming, signal);

    let grace_expired = async move {
        match draining_rx.await {
            Ok(started) => tokio::time::sleep_until(started + grace).await,
            // The server ended without a shutdown request.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = serve => {
            served?;
            info!("all calls drained; stopped");
            Ok(Stopped::Drained)
        }
        () = grace_expired => {
            warn!(grace_ms = grace.as_millis() as u64, "grace period over with calls still in flight; closing them");
            Ok(Stopped::GraceExpired)
        }
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc error details, so grpcurl can print ErrorInfo, BadRequest
        // and RetryInfo instead of raw bytes.
        .register_file_descriptor_set(error_details())
}

/// tonic-types' descriptors of the google.rpc error details, without its
/// copy of google.rpc.Status: the contract's `google/rpc/status.proto`
/// defines that type, and a client must not see it defined twice.
fn error_details() -> prost_types::FileDescriptorSet {
    use prost::Message as _;
    const THEIR_STATUS: &str = "status.proto";
    const OUR_STATUS: &str = "google/rpc/status.proto";
    let mut set = prost_types::FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .unwrap_or_default();
    set.file.retain(|file| file.name() != THEIR_STATUS);
    for file in &mut set.file {
        for dependency in &mut file.dependency {
            if dependency == THEIR_STATUS {
                OUR_STATUS.clone_into(dependency);
            }
        }
    }
    set
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(pb::SERVICE_NAME, status).await;
}

/// Registers SIGTERM and SIGINT handlers now and returns a future that
/// resolves on the first of them. Registering before the listener is bound
/// means a signal can never hit the default action (exit 143) instead of a
/// graceful shutdown.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => info!("received SIGTERM"),
            _ = interrupt.recv() => info!("received SIGINT"),
        }
    })
}

/// Resolves on Ctrl-C (the only signal outside Unix).
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!("received Ctrl-C");
        }
    })
}
