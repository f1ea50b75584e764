//! The gRPC edge: the `JobsGateway` service's handlers ([`service`]), request
//! validation ([`validate`]), the caller's deadline ([`deadline`]) and the
//! conversion of AWS's answers into the wire types ([`convert`]).

pub mod cache_control;
pub mod convert;
pub mod deadline;
pub mod observe;
pub mod refusals;
pub mod service;
pub mod validate;
