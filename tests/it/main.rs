//! The integration tests, in one binary: each module is one user-visible
//! capability checked against the real gateway (in process or as the built
//! binary), the real aws-sdk-iot client and the real tools a user has
//! (grpcurl, boto3, moto, redis-server, Mosquitto). One binary links the SDK
//! once; `support` is what the modules share.
//!
//! Run one module with `cargo test --test it watch::` (a name filter).

mod support;

mod binary;
mod cli;
mod cli_executions;
mod contract;
mod credentials;
mod deploy;
mod describe_job;
mod docs;
mod error_mapping;
mod events;
mod examples;
mod executions;
mod executions_failing;
mod fairness;
mod grpcurl;
mod layers;
mod limiter_logs;
mod metrics;
mod moto;
mod protection;
mod replicas;
mod roles;
mod security;
mod simulator;
mod simulator_events;
mod stale;
mod thing_executions;
mod watch;
