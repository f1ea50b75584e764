//! The implementations of the domain's roles (rate limit, answer cache,
//! poll ownership): in this process ([`local`]), or shared by the replicas
//! through Redis ([`redis`]). The domain holds only the traits.

pub mod local;
pub mod redis;
