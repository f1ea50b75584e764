//! Limits on client connections, on every listener (gRPC, health-only,
//! metrics), so that clients that connect and never speak cannot use up
//! the process's file descriptors or memory:
//!
//! - **A cap on open connections** ([`Gate`]): at the cap a new connection
//!   is closed at once (a TCP reset), counted in
//!   `iot_jobs_gateway_connections_refused_total`, and logged a few lines
//!   per interval with a summary of the rest. Connections already open are
//!   not disturbed, and the file descriptors left under the process limit
//!   stay free for AWS, Redis and files.
//! - **A time limit for the first bytes** ([`Guarded`]): from accept, a
//!   connection has the preface timeout to finish its TLS handshake (if
//!   any) and send the protocol's first bytes (the 24-byte HTTP/2 preface;
//!   a request line on the metrics port). Silent connections are closed
//!   and counted in `iot_jobs_gateway_connections_timed_out_total`.
//!   Keepalive PINGs take over after the preface.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tracing::{info, warn};

use crate::telemetry::refusals::{Kind, RefusalLog};

/// The HTTP/2 client preface (RFC 9113 3.4): `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
pub const HTTP2_PREFACE: usize = 24;

/// Enough of an HTTP/1 request line (`GET /metrics HTTP/1.1`) to know
/// the client speaks.
pub const HTTP1_START: usize = 16;

/// Connections the health-only and metrics ports each accept by default:
/// probers and scrapers hold a few at most.
pub const PROBE_CONNECTIONS: usize = 32;

/// The most connections the gRPC listener accepts by default, whatever
/// the file limit.
const MAX_DEFAULT_CONNECTIONS: usize = 65_536;

/// The file limit assumed where the process cannot read its own.
const ASSUMED_FILE_LIMIT: usize = 1024;

/// How many connections a listener keeps, and how soon they must speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once on the gRPC listener.
    pub max: usize,
    /// Connections open at once on the health-only and on the metrics port.
    pub max_probe: usize,
    /// From accept to the end of the TLS handshake and the protocol's
    /// first bytes.
    pub preface_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::for_file_limit(file_limit(), PROBE_CONNECTIONS)
    }
}

impl ConnectionLimits {
    /// The defaults under a soft file limit of `files`: three quarters of
    /// it, less the probe ports' connections, for the gRPC listener (at
    /// most 65,536); the last quarter stays for AWS, Redis, files and logs.
    pub fn for_file_limit(files: usize, max_probe: usize) -> Self {
        let max = (files - files / 4)
            .saturating_sub(2 * max_probe)
            .clamp(1, MAX_DEFAULT_CONNECTIONS);
        Self {
            max,
            max_probe,
            preface_timeout: Duration::from_secs(10),
        }
    }
}

/// The process's soft limit on open files (`ulimit -n`), read from
/// `/proc/self/limits`.
pub fn file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| soft_file_limit(&limits))
        .unwrap_or(ASSUMED_FILE_LIMIT)
}

/// The soft `Max open files` of a `/proc/<pid>/limits` text.
fn soft_file_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line.trim_start_matches("Max open files").split_whitespace();
    values.next()?.parse().ok()
}

/// The connection counters, by listener.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    open: Family<[(&'static str, &'static str); 1], Gauge>,
    refused: Family<[(&'static str, &'static str); 1], Counter>,
    timed_out: Family<[(&'static str, &'static str); 1], Counter>,
}

impl ConnectionMetrics {
    /// Adds the families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "iot_jobs_gateway_connections_open",
            "Client connections open, by listener",
            self.open.clone(),
        );
        registry.register(
            "iot_jobs_gateway_connections_refused",
            "Client connections closed at once because the listener was at its cap",
            self.refused.clone(),
        );
        registry.register(
            "iot_jobs_gateway_connections_timed_out",
            "Client connections closed because the TLS handshake or the protocol's first \
             bytes did not arrive within the preface timeout",
            self.timed_out.clone(),
        );
    }
}

/// Admits a listener's connections up to its cap.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    listener: &'static str,
    max: usize,
    preface_timeout: Duration,
    first_bytes: usize,
    permits: Arc<Semaphore>,
    open: Gauge,
    refused: Counter,
    timed_out: Counter,
    log: Arc<RefusalLog>,
}

/// An accepted connection, before its first bytes.
pub struct Admitted {
    /// The socket.
    pub stream: TcpStream,
    /// The peer.
    pub addr: SocketAddr,
    /// When its handshake and first bytes must be done.
    pub deadline: Instant,
    slot: Slot,
}

/// A connection's place under the cap, given back when it closes.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Gate {
    /// The gate of `listener` (its name in metrics and logs), with room
    /// for `max` connections that must send `first_bytes` bytes within
    /// `preface_timeout`.
    pub fn new(
        listener: &'static str,
        max: usize,
        preface_timeout: Duration,
        first_bytes: usize,
        metrics: &ConnectionMetrics,
        log: Arc<RefusalLog>,
    ) -> Self {
        let labels = [("listener", listener)];
        Self {
            inner: Arc::new(GateInner {
                listener,
                max,
                preface_timeout,
                first_bytes,
                permits: Arc::new(Semaphore::new(max)),
                open: metrics.open.get_or_create_owned(&labels),
                refused: metrics.refused.get_or_create_owned(&labels),
                timed_out: metrics.timed_out.get_or_create_owned(&labels),
                log,
            }),
        }
    }

    /// The next connection of `listener` there is room for; connections
    /// past the cap are reset at once.
    pub async fn accept(&self, listener: &TcpListener) -> Admitted {
        let gate = &self.inner;
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little
                    // for some to close.
                    if gate.log.admit_connection(Kind::AcceptFailed, gate.listener) {
                        warn!(listener = gate.listener, error = %err, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = gate.permits.clone().try_acquire_owned() else {
                gate.refused.inc();
                if gate.log.admit_connection(Kind::AtCap, gate.listener) {
                    info!(
                        listener = gate.listener,
                        peer = %addr,
                        max_connections = gate.max,
                        "connection refused: the listener is at its connection cap"
                    );
                }
                // A reset, not a graceful close: nothing lingers.
                let _ = stream.set_zero_linger();
                drop(stream);
                continue;
            };
            gate.open.inc();
            let _ = stream.set_nodelay(true);
            return Admitted {
                stream,
                addr,
                deadline: Instant::now() + gate.preface_timeout,
                slot: Slot {
                    _permit: permit,
                    open: gate.open.clone(),
                },
            };
        }
    }

    /// Counts and logs (bounded) a connection that did not finish its
    /// `what` (TLS handshake, first bytes) in time.
    pub fn timed_out(&self, addr: SocketAddr, what: &'static str) {
        let gate = &self.inner;
        gate.timed_out.inc();
        if gate.log.admit_connection(Kind::Silent, gate.listener) {
            info!(
                listener = gate.listener,
                peer = %addr,
                timeout_ms = gate.preface_timeout.as_millis() as u64,
                "connection closed: its {what} did not arrive within the preface timeout"
            );
        }
    }

    /// Logs (bounded) a connection whose TLS handshake failed.
    pub fn handshake_failed(&self, addr: SocketAddr, reason: &dyn std::fmt::Display) {
        let gate = &self.inner;
        if gate.log.admit_connection(Kind::Handshake, gate.listener) {
            info!(listener = gate.listener, peer = %addr, %reason, "TLS handshake refused");
        }
    }

    /// `io` (the admitted connection's stream, or what TLS made of it),
    /// closed if its first bytes do not arrive by `admitted`'s deadline.
    pub fn guard<T>(&self, io: T, admitted: AdmittedParts) -> Guarded<T> {
        Guarded {
            io,
            first: Some(First {
                remaining: self.inner.first_bytes,
                deadline: Box::pin(tokio::time::sleep_until(admitted.deadline)),
                gate: self.clone(),
                addr: admitted.addr,
            }),
            _slot: admitted.slot,
        }
    }
}

impl Admitted {
    /// The socket, apart from what the gate keeps with it.
    pub fn split(self) -> (TcpStream, AdmittedParts) {
        (
            self.stream,
            AdmittedParts {
                addr: self.addr,
                deadline: self.deadline,
                slot: self.slot,
            },
        )
    }
}

/// What an admitted connection carries beside its socket.
pub struct AdmittedParts {
    /// The peer.
    pub addr: SocketAddr,
    /// When its handshake and first bytes must be done.
    pub deadline: Instant,
    slot: Slot,
}

/// A connection's stream, holding its place under the cap, and closed
/// with a timeout error if its first bytes come too late.
pub struct Guarded<T> {
    io: T,
    first: Option<First>,
    _slot: Slot,
}

struct First {
    remaining: usize,
    deadline: Pin<Box<Sleep>>,
    gate: Gate,
    addr: SocketAddr,
}

impl<T> Guarded<T> {
    /// The stream inside.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(first) = &mut this.first {
                    let read = buf.filled().len() - before;
                    first.remaining = first.remaining.saturating_sub(read);
                    if first.remaining == 0 || read == 0 {
                        this.first = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let Some(first) = &mut this.first else {
                    return Poll::Pending;
                };
                if first.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                first.gate.timed_out(first.addr, "first bytes");
                this.first = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing within the preface timeout",
                )))
            }
            ready => ready,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A listener of guarded plaintext connections, as axum serves them.
pub struct GuardedListener {
    listener: TcpListener,
    gate: Gate,
}

impl GuardedListener {
    /// `listener`'s connections, through `gate`.
    pub fn new(listener: TcpListener, gate: Gate) -> Self {
        Self { listener, gate }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, parts) = self.gate.accept(&self.listener).await.split();
        let addr = parts.addr;
        (self.gate.guard(stream, parts), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_a_quarter_of_the_file_limit_and_the_probe_ports() {
        assert_eq!(ConnectionLimits::for_file_limit(1024, 32).max, 704);
        assert_eq!(ConnectionLimits::for_file_limit(256, 32).max, 128);
        assert_eq!(
            ConnectionLimits::for_file_limit(1 << 20, 32).max,
            MAX_DEFAULT_CONNECTIONS
        );
        assert_eq!(ConnectionLimits::for_file_limit(16, 32).max, 1);
    }

    #[test]
    fn the_soft_file_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95119                95119                processes \n\
                      Max open files            256                  1048576              files     \n";
        assert_eq!(soft_file_limit(limits), Some(256));
        assert_eq!(
            soft_file_limit("Max open files  unlimited  unlimited  files"),
            None
        );
    }
}
