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

mod body;
mod note;

pub use note::{CallNote, Received};

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::Body as HttpBody;
use tokio::time::Instant;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};
use tracing::{debug, error, info, warn};

use crate::{
    domain::{Source, error::Failure},
    security::{auth::layer::Refused, peer::Peer},
    telemetry::{
        metrics::grpc::{GrpcMetrics, Method, RpcType},
        refusals::{Kind, RefusalLog},
    },
};
use body::{Awaited, Count, Counted, Frames, Until};

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
                    thing = details.thing.as_deref(),
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
        self.method().service == crate::pb::HEALTH_SERVICE
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
        const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
        let code = Code::from_bytes(headers.get(GRPC_STATUS)?.as_bytes());
        if code == Code::Ok {
            return Some(Self::Status(code, None));
        }
        let message = Status::from_header_map(headers).map(|s| s.message().to_owned());
        Some(Self::Status(code, message))
    }
}

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
        if response.body().is_end_stream() {
            // A trailers-only answer (every error): the status is in the
            // headers. An answer with a body has it in its trailers.
            let ended = Ended::from_headers(response.headers()).unwrap_or_else(|| {
                // No message and no status: nothing more will come.
                let missing = "the response ended without a status".to_owned();
                Ended::Status(Code::Unknown, Some(missing))
            });
            call.finish(ended);
            return Poll::Ready(Ok(response));
        }
        let (mut parts, body) = response.into_parts();
        call.note.stamp(&mut parts.headers);
        let body = Body::new(Counted {
            body,
            frames: Frames::default(),
            count: Count::Sent(Some(call)),
            awaited: None,
        });
        Poll::Ready(Ok(http::Response::from_parts(parts, body)))
    }
}
