//! iot-jobs-gateway: one gRPC front door to AWS IoT Jobs for many backend
//! services.
//!
//! A `DescribeJob` call flows through the modules like this:
//!
//! 1. [`grpc::service`] receives the tonic request, reads the caller's
//!    deadline ([`grpc::deadline`]) and validates the request into a
//!    [`upstream::JobQuery`] ([`grpc::validate`]). Bad input stops here and
//!    costs AWS nothing.
//! 2. [`jobs`] owns the domain rules: the answer [`jobs::cache`] (which also
//!    makes concurrent identical questions share one AWS call), the shared
//!    token bucket every AWS attempt passes ([`jobs::limit`]), retries with
//!    backoff ([`upstream::retry`]), the deadline that bounds the whole
//!    exchange, and the fan-out of batches.
//! 3. [`upstream`] is the seam: the [`upstream::JobsUpstream`] trait.
//!    [`upstream::aws`] implements it with `aws_sdk_iot` and classifies AWS
//!    failures once, by error code.
//! 4. On the way back, [`upstream::convert`] turns the SDK's output into the
//!    wire type ([`pb`]), and [`error`] is the one place a failure becomes a
//!    `tonic::Status` with rich details.
//!
//! A `WatchJobs` stream subscribes, through [`jobs`], to one shared poller
//! per job ([`jobs::watch`]); a scheduler spends background tokens of the
//! same [`jobs::limit`] on the job answered longest ago, and every AWS
//! answer reaches the cache and the job's watchers alike.
//!
//! [`app`] runs the `serve`, `demo` and `simulator` commands ([`banner`]
//! prints the demo's commands to try, [`events`] brings AWS IoT Jobs events
//! from MQTT or, in the demo, from the simulator); [`server`] wires the service with
//! health, reflection and graceful shutdown, and [`connections`] bounds the
//! connections of every listener; [`config`] and [`telemetry`]
//! serve the binary in `main.rs`. [`cli`] holds the client subcommands and
//! [`simulator`] the embedded AWS IoT Jobs stand-in.

#![forbid(unsafe_code)]

pub mod app;
pub mod backends;
pub mod cli;
pub mod domain;
pub mod edge;
pub mod events;
pub mod pb;
pub mod security;
pub mod simulator;
pub mod telemetry;
pub mod upstream;
