//! What the gateway knows of a connection's peer, put in every request's
//! extensions by the listener ([`crate::edge::incoming`]) and read by the
//! admission layer ([`crate::security::auth`]) and the call log.

use std::{net::SocketAddr, sync::Arc};

use crate::security::auth::identity::IdentityError;

/// What the gateway knows of a connection's peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: Option<SocketAddr>,
    /// The address as text, made once per connection: the caller's name
    /// while callers are not authenticated.
    pub name: Arc<str>,
    /// With mTLS: the caller its certificate names, or why it names none.
    pub certified: Option<Result<Arc<str>, IdentityError>>,
}

impl Peer {
    pub(crate) fn new(
        addr: Option<SocketAddr>,
        certified: Option<Result<Arc<str>, IdentityError>>,
    ) -> Self {
        let name = addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        Self {
            addr,
            name: name.into(),
            certified,
        }
    }
}
