//! Who may call, over what: the callers' identities and permissions
//! ([`auth`]), the listener's TLS ([`tls`]), the bounds on connections and
//! streams ([`connections`]), what is known of a connection's peer
//! ([`peer`]), and the files they re-read when they change ([`watched`]).

pub mod auth;
pub mod connections;
pub mod peer;
pub mod tls;
pub mod watched;
