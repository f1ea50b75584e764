//! iot-jobs-gateway: one gRPC front door to AWS IoT Jobs for many backend
//! services.
//!
//! # The layers
//!
//! Every arrow runs one way (`tests/it/layers.rs` holds the crate to it):
//!
//! ```text
//!                          app   (wires everything; the commands)
//!                           |
//!          +----------------+------------------+
//!          v                v                  v
//!        edge            events               cli       simulator
//!   (gRPC service,    (AWS IoT Jobs        (client      (AWS IoT Jobs
//!    validation,       events: MQTT,        commands)    stand-in)
//!    status mapping,   in process)
//!    observation,          |
//!    server)               |
//!          |  \            |
//!          |   v           v
//!          |  security (callers, TLS, connection bounds, watched files)
//!          |   |
//!          v   v
//!        telemetry (logs, bounded refusal lines, metrics)
//!          |
//!          v
//!       backends (local/, redis/: the roles' implementations) ---+
//!          |                                                      |
//!          v                                                      |
//!        domain (Jobs, the fetcher, batches, stale answers,       |
//!                watches, the role traits, the job model and      |
//!                its error) <-------------------------------------+
//!          |
//!          v
//!       upstream (the AWS client, credentials, retries, SDK → model)
//!          |
//!          v
//!         pb (the generated contract)
//! ```
//!
//! # A call through them
//!
//! 1. [`edge::service`] receives the tonic request behind the
//!    observation layer ([`edge::observe`]) and the admission layer
//!    ([`security::auth`]), reads the caller's deadline ([`edge::deadline`])
//!    and validates the request into a [`upstream::JobQuery`]
//!    ([`edge::validate`], by AWS's rules in [`domain::rules`]). Bad input
//!    stops here and costs AWS nothing.
//! 2. [`domain::Jobs`] hands it to the operation's [`domain::Answers`]:
//!    the answer cache ([`domain::cache`], which also makes concurrent
//!    identical questions share one AWS call), answers past their lifetime
//!    when AWS fails, and the fetcher, the one place that talks to AWS: a
//!    token of the operation's rate limit ([`domain::limit`]), the request,
//!    retries. The roles are traits; [`backends`] holds their
//!    implementations, one bucket and one cache space per operation, in
//!    this process or shared through Redis behind one failover
//!    ([`backends::redis::failover`]).
//! 3. [`upstream`] is the seam to AWS: an [`upstream::Operation`] (one
//!    file each, such as [`upstream::describe_job`]) sends its one request
//!    with the `aws_sdk_iot` client of [`upstream::aws`], which classifies
//!    AWS's failures once; [`upstream::convert`] turns the SDK's answer
//!    into the wire model ([`pb`]'s types, which mirror AWS field for
//!    field).
//! 4. On the way back, [`edge::status`] is the one place a failure
//!    ([`domain::error`]) becomes a `tonic::Status` with rich details.
//!
//! A `WatchJobs` stream subscribes to one shared poller per job
//! ([`domain::watch`]); the watch scheduler spends background tokens of the
//! same rate limit through the same fetcher on the job answered longest
//! ago, and every AWS answer reaches the cache and the job's watchers alike.
//! [`events`] hastens those polls when AWS IoT says a job changed.
//!
//! [`app`] builds the gateway from its settings and runs the `serve`,
//! `demo` and `simulator` commands ([`app::commands`], from the command line
//! [`app::config`] reads); [`edge::server`] wires the service with health,
//! reflection and graceful shutdown; [`telemetry`] sets up the logs and
//! serves `/metrics`. [`cli`] holds the client subcommands and
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
