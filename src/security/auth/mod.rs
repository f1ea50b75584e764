//! Who is calling, and what it may do.
//!
//! Every call is answered for a [`Caller`]. When caller authentication is
//! on (a client CA for mTLS, a tokens file, or a JWKS for JWTs), the caller
//! is the identity its credentials prove: a bearer token's when the call
//! carries `authorization: Bearer …`, else its client certificate's
//! ([`identity`]); a call with neither is refused with UNAUTHENTICATED.
//! Without caller authentication, each client connection is a caller.
//! Callers' names say their kind ([`identity`]): `spiffe://…`, `dns:…`,
//! `cn:…`, `token:…`, `jwt:…`.
//!
//! The caller's [`Grants`] come from the policy file ([`policy`]): which
//! RPCs and jobs, its weight in the AWS budget and its caps. [`layer`]
//! checks credentials and the RPC before any service sees the call (health
//! stays open for probes); the handlers check the jobs. Neither refusal
//! costs an AWS call.

pub mod identity;
pub mod jwt;
pub mod layer;
pub mod policy;
pub mod tokens;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use http::HeaderValue;
use tonic::Request;

use crate::{
    domain::{
        error::{Denied, GatewayError, WatchScope},
        limit::Share,
        watch::StreamOwner,
    },
    security::{
        peer::Peer,
        watched::{FileError, Watched},
    },
};
use jwt::{Jwks, JwtSettings};
use policy::{Grants, Policy};
use tokens::Tokens;

/// The name of the caller of an in-process connection (no peer address).
const IN_PROCESS: &str = "in-process";

/// How callers prove who they are, and the policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// Opaque bearer tokens: token hashes and caller names.
    pub tokens: Option<PathBuf>,
    /// Bearer JWTs.
    pub jwt: Option<JwtSettings>,
    /// What each caller may do.
    pub policy: Option<PathBuf>,
}

/// The caller of one gRPC call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its name in logs, shares and caps.
    name: Arc<str>,
    /// How it was told apart.
    source: CallerSource,
    /// What it may do.
    grants: Arc<Grants>,
}

/// How a caller was told apart from others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerSource {
    /// Not authenticated: each client connection counts as a caller (with
    /// its address, if known).
    Connection(Option<SocketAddr>),
    /// Its client certificate (mTLS).
    Certificate,
    /// An opaque bearer token from the tokens file.
    Token,
    /// A bearer JWT.
    Jwt,
}

impl CallerSource {
    /// How it reads in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection(_) => "connection",
            Self::Certificate => "certificate",
            Self::Token => "token",
            Self::Jwt => "jwt",
        }
    }
}

impl Caller {
    /// The caller of an unauthenticated connection from `peer` (no address:
    /// an in-process connection), with everything granted.
    pub fn connection(peer: Option<SocketAddr>) -> Self {
        let name = match peer {
            Some(peer) => peer.to_string(),
            None => IN_PROCESS.to_owned(),
        };
        Self {
            name: name.into(),
            source: CallerSource::Connection(peer),
            grants: everything(),
        }
    }

    /// The caller of `request`: as admitted on its way in, or its
    /// connection's.
    pub fn of<T>(request: &Request<T>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| match request.extensions().get::<Peer>() {
                Some(peer) => Self {
                    name: peer.name.clone(),
                    source: CallerSource::Connection(peer.addr),
                    grants: everything(),
                },
                None => Self::connection(request.remote_addr()),
            })
    }

    /// Its name in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its name, shared (for logs that outlive the call's borrow).
    pub fn name_shared(&self) -> Arc<str> {
        self.name.clone()
    }

    /// How it was told apart.
    pub fn source(&self) -> CallerSource {
        self.source
    }

    /// What it may do.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Its share of the AWS budget.
    pub fn share(&self) -> Share {
        Share {
            caller: self.name.clone(),
            weight: self.grants.weight,
            max_waiting: self.grants.max_waiting,
        }
    }

    /// Refuses a job it may not read.
    pub fn may_read(&self, job_id: &str) -> Result<(), GatewayError> {
        if self.grants.may_read(job_id) {
            return Ok(());
        }
        Err(GatewayError::NotPermitted {
            caller: self.name.to_string(),
            denied: Denied::Job(job_id.to_owned()),
        })
    }

    /// Refuses a thing whose executions it may not read.
    pub fn may_read_thing(&self, thing_name: &str) -> Result<(), GatewayError> {
        if self.grants.may_read_thing(thing_name) {
            return Ok(());
        }
        Err(GatewayError::NotPermitted {
            caller: self.name.to_string(),
            denied: Denied::Thing(thing_name.to_owned()),
        })
    }

    /// The most items one of its batches may have, within the gateway's `max`.
    pub fn max_batch_size(&self, max: usize) -> (usize, bool) {
        match self.grants.max_batch_size {
            Some(own) if own < max => (own, true),
            _ => (max, false),
        }
    }

    /// Whose watch streams its streams count against: an identified
    /// caller's own (its policy's cap, else `per_connection`), else its
    /// connection's (capped at `per_connection`; none in-process).
    pub fn stream_owner(&self, per_connection: usize) -> Option<StreamOwner> {
        let scope = match self.source {
            CallerSource::Connection(None) => return None,
            CallerSource::Connection(Some(_)) => WatchScope::Connection,
            _ => WatchScope::Caller,
        };
        Some(StreamOwner {
            key: self.name.clone(),
            limit: self.grants.max_watch_streams.unwrap_or(per_connection),
            scope,
        })
    }
}

/// Admits calls: who the caller is, and whether it may call the RPC.
pub struct Auth {
    /// Clients present certificates (the TLS layer verified them).
    mtls: bool,
    tokens: Option<Arc<Watched<Tokens>>>,
    jwt: Option<(Arc<Watched<Jwks>>, JwtSettings)>,
    policy: Option<Arc<Watched<Policy>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mtls", &self.mtls)
            .field("tokens", &self.tokens.is_some())
            .field("jwt", &self.jwt.as_ref().map(|(_, s)| s))
            .field("policy", &self.policy.is_some())
            .finish()
    }
}

impl Auth {
    /// Reads the files of `settings` (and watches them for changes);
    /// `mtls`: the listener verifies client certificates.
    pub fn load(settings: &AuthSettings, mtls: bool) -> Result<Self, FileError> {
        let tokens = settings
            .tokens
            .as_deref()
            .map(|path| Watched::load("tokens file (--auth-tokens)", path, Tokens::parse))
            .transpose()?;
        let jwt = settings
            .jwt
            .as_ref()
            .map(|jwt| {
                Watched::load("JWKS file (--jwt-jwks)", &jwt.jwks, Jwks::parse)
                    .map(|keys| (keys, jwt.clone()))
            })
            .transpose()?;
        let policy = settings
            .policy
            .as_deref()
            .map(|path| Watched::load("policy file (--auth-policy)", path, Policy::parse))
            .transpose()?;
        Ok(Self {
            mtls,
            tokens,
            jwt,
            policy,
        })
    }

    /// No authentication and no policy: every connection may call everything.
    pub fn open() -> Self {
        Self {
            mtls: false,
            tokens: None,
            jwt: None,
            policy: None,
        }
    }

    /// Whether every connection may call everything: nobody authenticates
    /// and there is no policy (each call's caller is then its connection's,
    /// with nothing to check).
    pub fn is_open(&self) -> bool {
        !self.authenticates() && self.policy.is_none()
    }

    /// Whether callers must prove who they are.
    pub fn authenticates(&self) -> bool {
        self.mtls || self.tokens.is_some() || self.jwt.is_some()
    }

    /// The caller of a call on connection `peer` with `authorization`, if
    /// it may call `rpc` (`None`: an RPC the policy cannot name).
    pub fn admit(
        &self,
        rpc: Option<&'static str>,
        peer: Option<&Peer>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Caller, GatewayError> {
        let (name, source) = if self.authenticates() {
            self.authenticate(peer, authorization)?
        } else {
            match peer {
                Some(peer) => (peer.name.clone(), CallerSource::Connection(peer.addr)),
                None => (Arc::from(IN_PROCESS), CallerSource::Connection(None)),
            }
        };
        let grants = match &self.policy {
            Some(policy) => policy.get().grants(&name),
            None => everything(),
        };
        if let Some(rpc) = rpc
            && !grants.may_call(rpc)
        {
            return Err(GatewayError::NotPermitted {
                caller: name.to_string(),
                denied: Denied::Rpc(rpc),
            });
        }
        Ok(Caller {
            name,
            source,
            grants,
        })
    }

    fn authenticate(
        &self,
        peer: Option<&Peer>,
        authorization: Option<&HeaderValue>,
    ) -> Result<(Arc<str>, CallerSource), GatewayError> {
        let refused = |problem: String| GatewayError::Unauthenticated(problem);
        if let Some(value) = authorization {
            let token = bearer(value).ok_or_else(|| {
                refused("the authorization header must be `Bearer <token>`".to_owned())
            })?;
            return self.token_caller(token).map_err(refused);
        }
        match peer.and_then(|p| p.certified.as_ref()) {
            Some(Ok(name)) => Ok((name.clone(), CallerSource::Certificate)),
            Some(Err(problem)) => Err(refused(problem.to_string())),
            None => Err(refused(self.accepted_credentials())),
        }
    }

    /// The caller a bearer token names: a JWT when it looks like one and
    /// JWTs are accepted, else an entry of the tokens file.
    fn token_caller(&self, token: &str) -> Result<(Arc<str>, CallerSource), String> {
        let looks_like_jwt = token.split('.').count() == 3;
        if let Some((keys, settings)) = &self.jwt
            && (looks_like_jwt || self.tokens.is_none())
        {
            return keys
                .get()
                .verify(token, settings)
                .map(|sub| (Arc::from(identity::jwt(&sub)), CallerSource::Jwt))
                .map_err(|refusal| refusal.to_string());
        }
        match &self.tokens {
            Some(tokens) => tokens
                .get()
                .caller(token)
                .map(|name| (Arc::from(identity::token(name)), CallerSource::Token))
                .ok_or_else(|| "the bearer token is not one this gateway knows".to_owned()),
            None => Err(
                "this gateway accepts no bearer tokens; present a client certificate".to_owned(),
            ),
        }
    }

    /// What a call without credentials should have brought.
    fn accepted_credentials(&self) -> String {
        let mut ways = Vec::new();
        if self.mtls {
            ways.push("a client certificate from the gateway's client CA");
        }
        if self.tokens.is_some() || self.jwt.is_some() {
            ways.push("an `authorization: Bearer <token>` header");
        }
        format!(
            "the call carries no credentials; this gateway requires {}",
            ways.join(" or ")
        )
    }
}

/// The grants of every caller when there is no policy, made once.
fn everything() -> Arc<Grants> {
    static EVERYTHING: std::sync::OnceLock<Arc<Grants>> = std::sync::OnceLock::new();
    EVERYTHING.get_or_init(Arc::default).clone()
}

/// The token of a `Bearer` authorization value.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
