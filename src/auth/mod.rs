//! Who is calling. Every call is answered for a [`Caller`]: the identity
//! its credentials prove, or, while callers are not authenticated, the
//! client connection it came on. The caller names the call in logs, and
//! keys its share of the AWS budget and its caps.

use std::{net::SocketAddr, sync::Arc};

use tonic::Request;

use crate::{error::WatchScope, jobs::limit::Share, jobs::watch::StreamOwner};

/// The caller of one gRPC call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its name in logs, shares and caps.
    name: Arc<str>,
    /// How it was told apart.
    source: CallerSource,
    /// The connection it came on, when known.
    peer: Option<SocketAddr>,
}

/// How a caller was told apart from others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerSource {
    /// Not authenticated: each client connection counts as a caller.
    Connection,
}

impl Caller {
    /// The caller of an unauthenticated connection from `peer` (no address:
    /// an in-process connection).
    pub fn connection(peer: Option<SocketAddr>) -> Self {
        let name = match peer {
            Some(peer) => peer.to_string(),
            None => "in-process".to_owned(),
        };
        Self {
            name: name.into(),
            source: CallerSource::Connection,
            peer,
        }
    }

    /// The caller of `request`: as authenticated on its way in, or its
    /// connection's.
    pub fn of<T>(request: &Request<T>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self::connection(request.remote_addr()))
    }

    /// Its name in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it was told apart.
    pub fn source(&self) -> CallerSource {
        self.source
    }

    /// Its share of the AWS budget.
    pub fn share(&self) -> Share {
        Share::of(self.name.clone())
    }

    /// Whose watch streams its streams count against: its connection's,
    /// capped at `per_connection` (none for an in-process connection).
    pub fn stream_owner(&self, per_connection: usize) -> Option<StreamOwner> {
        self.peer.is_some().then(|| StreamOwner {
            key: self.name.clone(),
            limit: per_connection,
            scope: WatchScope::Connection,
        })
    }
}
