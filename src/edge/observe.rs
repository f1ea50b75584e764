//! The observation layer, in front of every service: each call is counted
//! in the gRPC server metrics ([`GrpcMetrics`]) and leaves one log line,
//! both written here, at the same moment, from the same status code, so
//! logs and metrics always agree.
//!
//! - The status code is read where the client reads it: from the response
//!   headers (a trailers-only answer, such as every error) or from the
//!   trailers after the last message. A call whose client leaves first ends
//!   as CANCELLED, with the line "caller went away".
//! - Messages are counted by their gRPC frames in the request and response
//!   bodies, as they pass.
//! - Handlers add what only they know (job id, cache source, batch and
//!   watch counts, the error's cause chain) to the call's [`CallNote`].
//! - Expected refusals (RATE_LIMITED, unauthenticated or unpermitted
//!   callers) are logged a few per interval ([`RefusalLog`]); every other
//!   failure gets its own line.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame};
use tokio::time::Instant;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};
use tracing::{debug, error, info, warn};

use crate::telemetry::refusals::{Kind, RefusalLog};
use crate::{
    domain::Source, domain::error::Failure, domain::error::GatewayError,
    security::auth::layer::Refused, security::peer::Peer, telemetry::metrics::grpc::GrpcMetrics,
    telemetry::metrics::grpc::Method, telemetry::metrics::grpc::RpcType,
};

/// Job ids in logs are cut to this many characters; invalid ids can be huge.
const LOGGED_ID_CHARS: usize = 80;

/// When the call reached the gateway: the moment tonic starts its own
/// `grpc-timeout` timer (this layer is the first it calls). Deadlines run
/// from here, not from when the handler first runs, which can be much later
/// (a message that comes after its headers, a busy host): otherwise tonic's
/// timer fires first and the caller gets its CANCELLED, not the gateway's
/// DEADLINE_EXCEEDED.
#[derive(Debug, Clone, Copy)]
pub struct Received(pub Instant);

impl Received {
    /// When the call `request` belongs to reached the gateway (now, outside
    /// the layer, as in handler unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> Instant {
        request
            .extensions()
            .get::<Self>()
            .map_or_else(Instant::now, |received| received.0)
    }
}

/// What a handler knows of its call, for the call's log line.
#[derive(Debug, Default)]
pub struct CallNote(Mutex<Details>);

#[derive(Debug, Default)]
struct Details {
    caller: Option<Arc<str>>,
    job_id: Option<String>,
    cache: Option<Source>,
    items: Option<usize>,
    ok: usize,
    failed: usize,
    watched_jobs: Option<usize>,
    events: u64,
    heartbeats: u64,
    cause: Option<String>,
    failure: Option<Failure>,
}

impl CallNote {
    /// The note of the call `request` belongs to (a detached one outside
    /// the layer, as in handler unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> Arc<Self> {
        request
            .extensions()
            .get::<Arc<Self>>()
            .cloned()
            .unwrap_or_default()
    }

    fn details(&self) -> MutexGuard<'_, Details> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who called.
    pub fn caller(&self, name: Arc<str>) {
        self.details().caller = Some(name);
    }

    /// The job asked about.
    pub fn job(&self, job_id: &str) {
        self.details().job_id = Some(job_id.chars().take(LOGGED_ID_CHARS).collect());
    }

    /// Where the answer came from.
    pub fn answered(&self, source: Source) {
        self.details().cache = Some(source);
    }

    /// Why the call failed, in full (the client sees a shorter message).
    pub fn failed(&self, err: &GatewayError) {
        let mut details = self.details();
        details.cause = Some(err.chain());
        details.failure = Some(err.failure());
    }

    /// Who called, as noted.
    pub fn caller_name(&self) -> Option<Arc<str>> {
        self.details().caller.clone()
    }

    /// A batch of `items`.
    pub fn batch(&self, items: usize) {
        self.details().items = Some(items);
    }

    /// One batch item's outcome.
    pub fn item(&self, ok: bool) {
        let mut details = self.details();
        if ok {
            details.ok += 1;
        } else {
            details.failed += 1;
        }
    }

    /// A watch of `jobs` jobs.
    pub fn watching(&self, jobs: usize) {
        self.details().watched_jobs = Some(jobs);
    }

    /// One watch event sent.
    pub fn event(&self, heartbeat: bool) {
        let mut details = self.details();
        if heartbeat {
            details.heartbeats += 1;
        } else {
            details.events += 1;
        }
    }
}

/// Observes every call of the services behind it.
#[derive(Clone)]
pub struct ObserveLayer {
    observer: Arc<Observer>,
}

struct Observer {
    metrics: Arc<GrpcMetrics>,
    refusals: Arc<RefusalLog>,
    message_timeout: Duration,
}

impl ObserveLayer {
    /// Counts in `metrics`, logs refusals through `refusals`, and ends a
    /// call whose request has not arrived within `message_timeout` of its
    /// headers with DEADLINE_EXCEEDED.
    pub fn new(
        metrics: Arc<GrpcMetrics>,
        refusals: Arc<RefusalLog>,
        message_timeout: Duration,
    ) -> Self {
        Self {
            observer: Arc::new(Observer {
                metrics,
                refusals,
                message_timeout,
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            observer: self.observer.clone(),
            inner,
        }
    }
}

/// A service behind [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S> {
    observer: Arc<Observer>,
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ObservedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = CallRecord::start(self.observer.clone(), &request);
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(call.note.clone());
        parts.extensions.insert(Received(call.received));
        let awaited = Awaited {
            // A bidi stream (reflection) may pause between messages; every
            // other call's request is one message and its end.
            until: match call.method().rpc_type {
                RpcType::BidiStream => Until::FirstMessage,
                RpcType::Unary | RpcType::ServerStream => Until::End,
            },
            at: call.received + call.observer.message_timeout,
            timer: None,
            note: call.note.clone(),
            timeout: call.observer.message_timeout,
        };
        let body = Body::new(Counted {
            body,
            frames: Frames::default(),
            count: Count::Received(call.observer.clone(), call.method),
            awaited: Some(awaited),
        });
        ObservedCall {
            inner: self.inner.call(http::Request::from_parts(parts, body)),
            call: Some(call),
        }
    }
}

/// One call being observed, until its status is known.
struct CallRecord {
    observer: Arc<Observer>,
    method: usize,
    received: Instant,
    peer: Option<Arc<str>>,
    note: Arc<CallNote>,
    refused: Option<Refused>,
}

impl CallRecord {
    fn start<B>(observer: Arc<Observer>, request: &http::Request<B>) -> Self {
        let method = observer.metrics.index(request.uri().path());
        observer.metrics.started(observer.metrics.at(method));
        let peer = request.extensions().get::<Peer>().map(|p| p.name.clone());
        Self {
            observer,
            method,
            received: Instant::now(),
            peer,
            note: Arc::default(),
            refused: None,
        }
    }

    fn method(&self) -> &Method {
        self.observer.metrics.at(self.method)
    }

    /// Counts the call as handled and writes its line.
    fn finish(self, ended: Ended) {
        let seconds = self.received.elapsed().as_secs_f64();
        let code = match &ended {
            Ended::Status(code, _) => *code,
            Ended::Dropped if std::thread::panicking() => Code::Internal,
            Ended::Dropped => Code::Cancelled,
        };
        let method = self.method();
        self.observer.metrics.handled(method, code, seconds);
        self.log(&ended, code, seconds * 1e3);
    }

    fn log(&self, ended: &Ended, code: Code, latency_ms: f64) {
        let method = self.method().method;
        let details = self.note.details();
        let caller = details
            .caller
            .as_deref()
            .or(self.refused.as_ref().and_then(|r| r.caller.as_deref()))
            .or(self.peer.as_deref())
            .unwrap_or_default();
        // The connection's address, where the caller has another name.
        let peer = self.peer.as_deref().filter(|peer| *peer != caller);
        let reason = match (&self.refused, &details.cause, ended) {
            (Some(refused), _, _) => Some(refused.reason.as_str()),
            (None, Some(cause), _) => Some(cause.as_str()),
            (None, None, Ended::Status(_, message)) => message.as_deref(),
            (None, None, Ended::Dropped) => None,
        };
        macro_rules! line {
            ($level:ident, $why:ident, $message:literal) => {
                $level!(
                    method,
                    caller,
                    peer,
                    job_id = details.job_id.as_deref(),
                    ?code,
                    latency_ms,
                    cache = details.cache.map(Source::name),
                    items = details.items,
                    ok = details.items.map(|_| details.ok),
                    failed = details.items.map(|_| details.failed),
                    jobs = details.watched_jobs,
                    events = details.watched_jobs.map(|_| details.events),
                    heartbeats = details.watched_jobs.map(|_| details.heartbeats),
                    $why = reason,
                    $message
                )
            };
        }
        let failure = match code {
            Code::Ok => None,
            _ if self.refused.is_some() => Some(Failure::Refusal),
            _ => Some(details.failure.unwrap_or(match code {
                Code::InvalidArgument | Code::NotFound | Code::Unimplemented => Failure::Answer,
                _ => Failure::Fault,
            })),
        };
        match (ended, failure) {
            (Ended::Dropped, _) if code == Code::Internal => {
                line!(error, error, "the handler panicked")
            }
            (Ended::Dropped, _) => {
                // The client left, its grpc-timeout passed, or the grace
                // period after a shutdown ran out. Anyone can open streams
                // and walk away: bounded like refusals.
                if self.observer.refusals.admit(Kind::Abandoned, method, code) {
                    line!(info, error, "caller went away; upstream work dropped");
                }
            }
            (_, None) if details.cache == Some(Source::Stale) => {
                // While AWS fails, stale answers stand in for errors at the
                // rate calls come: bounded like refusals.
                if self.observer.refusals.admit(Kind::Stale, method, code) {
                    line!(info, error, "call finished");
                }
            }
            (_, None) if details.cache == Some(Source::Hit) || self.is_probe() => {
                // The hot path (tens of thousands a second): a line for each
                // would cost a fifth of the gateway's throughput. Health
                // probes come every few seconds from every prober.
                line!(debug, error, "call finished");
            }
            (_, Some(Failure::Answer)) if self.is_probe() => {
                // A probe for a service this server does not name: the
                // prober's mistake, at the prober's rate.
                line!(debug, error, "call finished");
            }
            (_, None | Some(Failure::Answer)) => line!(info, error, "call finished"),
            (_, Some(Failure::Refusal)) => {
                if self.observer.refusals.admit(Kind::Refusal, method, code) {
                    line!(info, reason, "call refused");
                }
            }
            (_, Some(Failure::Shutdown)) => {
                line!(info, error, "call ended: the gateway is shutting down")
            }
            (_, Some(Failure::Fault)) => line!(warn, error, "call failed"),
        }
    }

    /// Whether the call is a health check.
    fn is_probe(&self) -> bool {
        self.method().service == HEALTH
    }
}

/// How a call ended, as far as the layer can tell.
enum Ended {
    /// The client was sent this status (and its message, unless OK).
    Status(Code, Option<String>),
    /// The call was dropped before its status was sent.
    Dropped,
}

impl Ended {
    /// The status in `headers` (a trailers-only answer) or trailers. Only
    /// the code is read for OK, the common case.
    fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let code = Code::from_bytes(headers.get("grpc-status")?.as_bytes());
        if code == Code::Ok {
            return Some(Self::Status(code, None));
        }
        let message = Status::from_header_map(headers).map(|s| s.message().to_owned());
        Some(Self::Status(code, message))
    }
}

/// The health service's name.
const HEALTH: &str = crate::pb::HEALTH_SERVICE;

pin_project_lite::pin_project! {
    /// The response future of an observed call.
    pub struct ObservedCall<F> {
        #[pin]
        inner: F,
        call: Option<CallRecord>,
    }

    impl<F> PinnedDrop for ObservedCall<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the handler answered.
            if let Some(call) = this.project().call.take() {
                call.finish(Ended::Dropped);
            }
        }
    }
}

impl<F, E> Future for ObservedCall<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut call) = this.call.take() else {
            return Poll::Ready(result);
        };
        let Ok(response) = result else {
            let failed = Some("the service failed".to_owned());
            call.finish(Ended::Status(Code::Internal, failed));
            return Poll::Ready(result);
        };
        call.refused = response.extensions().get::<Refused>().cloned();
        // A trailers-only answer (every error): the status is in the headers.
        if let Some(ended) = Ended::from_headers(response.headers()) {
            call.finish(ended);
            return Poll::Ready(Ok(response));
        }
        if response.body().is_end_stream() {
            // No message and no status: nothing more will come.
            let missing = Some("the response ended without a status".to_owned());
            call.finish(Ended::Status(Code::Unknown, missing));
            return Poll::Ready(Ok(response));
        }
        let (parts, body) = response.into_parts();
        let body = Body::new(Counted {
            body,
            frames: Frames::default(),
            count: Count::Sent(Some(call)),
            awaited: None,
        });
        Poll::Ready(Ok(http::Response::from_parts(parts, body)))
    }
}

/// What a body's messages count as.
enum Count {
    /// Requests of the method at this index.
    Received(Arc<Observer>, usize),
    /// Responses of this call, which ends with the body.
    Sent(Option<CallRecord>),
}

/// How much of a request must arrive within the message timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Its first message.
    FirstMessage,
    /// All of it.
    End,
}

/// A request still awaited: the deadline for its messages.
struct Awaited {
    until: Until,
    at: Instant,
    /// Made only once the request keeps the call waiting: most arrive
    /// whole with their headers and never need one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    note: Arc<CallNote>,
    timeout: Duration,
}

impl Awaited {
    /// Whether the deadline has passed (and, if not, wakes `cx` at it).
    fn passed(&mut self, cx: &mut Context<'_>) -> bool {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(self.at)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// The status that ends the call, noted as a refusal: the client held
    /// a stream open without sending its request.
    fn expired(&self) -> Status {
        let message = format!(
            "the request's message did not arrive within {} ms of its headers \
             (--request-message-timeout); send the request with its headers",
            self.timeout.as_millis()
        );
        let mut details = self.note.details();
        details.cause = Some(message.clone());
        details.failure = Some(Failure::Refusal);
        Status::deadline_exceeded(message)
    }
}

pin_project_lite::pin_project! {
    /// A body whose gRPC messages are counted as they pass (and, for a
    /// request, that must arrive in time).
    struct Counted<B> {
        #[pin]
        body: B,
        frames: Frames,
        count: Count,
        awaited: Option<Awaited>,
    }

    impl<B> PinnedDrop for Counted<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its trailers: the client left mid-stream.
            if let Count::Sent(call) = this.project().count
                && let Some(call) = call.take()
            {
                call.finish(Ended::Dropped);
            }
        }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = match this.body.poll_frame(cx) {
            Poll::Ready(frame) => frame.map(|frame| frame.map_err(Into::into)),
            Poll::Pending => {
                if let Some(awaited) = this.awaited
                    && awaited.passed(cx)
                {
                    let status = awaited.expired();
                    *this.awaited = None;
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                return Poll::Pending;
            }
        };
        if frame.is_none() {
            *this.awaited = None;
        }
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let messages = this.frames.feed(data.chunk());
                    if messages > 0
                        && this
                            .awaited
                            .as_ref()
                            .is_some_and(|a| a.until == Until::FirstMessage)
                    {
                        *this.awaited = None;
                    }
                    match this.count {
                        Count::Received(observer, method) => observer
                            .metrics
                            .received(observer.metrics.at(*method), messages),
                        Count::Sent(Some(call)) => {
                            call.observer.metrics.sent(call.method(), messages)
                        }
                        Count::Sent(None) => {}
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Count::Sent(call) = this.count
                    && let Some(call) = call.take()
                {
                    let ended = Ended::from_headers(trailers).unwrap_or_else(|| {
                        let missing = "the response ended without a status".to_owned();
                        Ended::Status(Code::Unknown, Some(missing))
                    });
                    call.finish(ended);
                }
            }
            Some(Err(_)) | None => {
                if let Count::Sent(call) = this.count
                    && let Some(call) = call.take()
                {
                    let ended = match frame {
                        None => Ended::Status(
                            Code::Unknown,
                            Some("the response ended without a status".to_owned()),
                        ),
                        Some(_) => Ended::Status(
                            Code::Internal,
                            Some("the response body failed".to_owned()),
                        ),
                    };
                    call.finish(ended);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Finds gRPC message boundaries in a byte stream: each message is a
/// 5-byte prefix (compressed flag, big-endian length) and its bytes, and
/// either may be split across chunks.
#[derive(Debug, Default)]
struct Frames {
    /// Bytes of the current message still to skip.
    remaining: u64,
    /// Prefix bytes seen so far.
    prefix: [u8; 5],
    filled: usize,
}

impl Frames {
    /// Reads `chunk`; returns how many messages started in it.
    fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let mut started = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip =
                    usize::try_from(self.remaining).map_or(chunk.len(), |r| r.min(chunk.len()));
                chunk = &chunk[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            let take = (5 - self.filled).min(chunk.len());
            self.prefix[self.filled..self.filled + take].copy_from_slice(&chunk[..take]);
            self.filled += take;
            chunk = &chunk[take..];
            if self.filled == 5 {
                started += 1;
                self.filled = 0;
                let length = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.remaining = u64::from(u32::from_be_bytes(length));
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, len as usize));
        bytes
    }

    #[test]
    fn messages_are_counted_however_the_chunks_split_them() {
        let stream: Vec<u8> = [message(3), message(0), message(300), message(1)].concat();
        for size in [1, 2, 4, 5, 6, 7, 64, stream.len()] {
            let mut frames = Frames::default();
            let counted: u64 = stream.chunks(size).map(|c| frames.feed(c)).sum();
            assert_eq!(counted, 4, "chunks of {size}");
        }
    }
}
