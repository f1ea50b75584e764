//! The gRPC edge: the `JobsGateway` service's handlers ([`service`]), request
//! validation ([`validate`]) and the caller's deadline ([`deadline`]).

mod batch;
pub mod cache_control;
pub mod deadline;
pub mod incoming;
pub mod observe;
pub mod server;
pub mod service;
pub mod status;
pub mod validate;
