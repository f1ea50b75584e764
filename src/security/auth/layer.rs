//! The tower layer in front of every gRPC service: admits each call
//! ([`Auth::admit`]) and hands the [`crate::security::auth::Caller`] to the handlers in the
//! request's extensions, or answers the refusal itself (marked
//! [`Refused`] for the observation layer, which logs it). Health checks
//! pass untouched: probes carry no credentials.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::{
    domain::error::GatewayError,
    security::{auth::Auth, peer::Peer},
};

/// Marks a call the admission layer refused before any handler ran.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The caller, when it is known.
    pub caller: Option<Arc<str>>,
    /// Why, for the log.
    pub reason: String,
}

/// Admits calls with an [`Auth`].
#[derive(Clone)]
pub struct AdmitLayer {
    auth: Arc<Auth>,
}

impl AdmitLayer {
    /// Admits calls with `auth`.
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            auth: self.auth.clone(),
            inner,
        }
    }
}

/// A service behind [`AdmitLayer`].
#[derive(Clone)]
pub struct Admit<S> {
    auth: Arc<Auth>,
    inner: S,
}

/// What a request path is, for the policy.
enum Target {
    /// Health checks: always open.
    Health,
    /// An RPC the policy names.
    Rpc(&'static str),
    /// Anything else (tonic answers UNIMPLEMENTED once the caller is known).
    Other,
}

fn target(path: &str) -> Target {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Target::Other;
    };
    match service {
        crate::pb::HEALTH_SERVICE => Target::Health,
        service if crate::pb::REFLECTION_SERVICES.contains(&service) => Target::Rpc("Reflection"),
        crate::pb::SERVICE_NAME => crate::security::auth::policy::RPCS
            .iter()
            .find(|rpc| **rpc == method)
            .map_or(Target::Other, |rpc| Target::Rpc(rpc)),
        _ => Target::Other,
    }
}

impl<S, B> Service<http::Request<B>> for Admit<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Nothing to check: the handlers name the caller by its connection.
        if self.auth.is_open() {
            return Either::Right(self.inner.call(request));
        }
        let rpc = match target(request.uri().path()) {
            Target::Health => return Either::Right(self.inner.call(request)),
            Target::Rpc(rpc) => Some(rpc),
            Target::Other => None,
        };
        let peer = request.extensions().get::<Peer>();
        let authorization = request.headers().get(http::header::AUTHORIZATION);
        match self.auth.admit(rpc, peer, authorization) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Right(self.inner.call(request))
            }
            Err(refusal) => {
                // The observation layer logs it, with its reason.
                let refused = Refused {
                    caller: match &refusal {
                        GatewayError::NotPermitted { caller, .. } => Some(caller.as_str().into()),
                        _ => None,
                    },
                    reason: refusal.to_string(),
                };
                let mut response = Status::from(refusal).into_http();
                response.extensions_mut().insert(refused);
                Either::Left(ready(Ok(response)))
            }
        }
    }
}
