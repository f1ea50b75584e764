//! What the gateway counts, and `/metrics` in the Prometheus text format
//! (`--metrics-listen`).
//!
//! Counters live with the code that counts them, as plain handles from
//! `prometheus-client` (atomics; a label set is looked up once, not per
//! call): [`grpc::GrpcMetrics`] in the observation layer in front of every
//! service, [`crate::domain::metrics::JobsMetrics`] in the domain, the
//! connection counters in [`crate::security::connections`]; each registers
//! its own on [`Metrics::registry`]. Gauges that are a state rather
//! than a count (the rate limit's rate, cache entries, pollers, Redis
//! leases) are read from their owners when Prometheus scrapes
//! ([`sampled`]), so nothing on a request path keeps them.
//!
//! No label carries a job id, a caller or anything else unbounded.

pub mod grpc;
pub mod sampled;

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, metrics::info::Info, registry::Registry};
use tracing::{info, warn};

/// The media type of the OpenMetrics text format prometheus-client writes;
/// Prometheus asks for it first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of one gateway, ready to be scraped.
pub struct Metrics {
    registry: Registry,
    /// The domain's roles, settled before each scrape reads them.
    jobs: Option<crate::domain::Gauges>,
}

impl Metrics {
    /// The gateway's version and the gauges read from `sources` at each
    /// scrape; the counters' owners (the gRPC server's, the connections',
    /// the domain's) register theirs on [`Metrics::registry`].
    pub fn new(sources: sampled::Sources) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "iot_jobs_gateway_build",
            "The gateway's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let jobs = sources.jobs.clone();
        registry.register_collector(Box::new(sources));
        Self { registry, jobs }
    }

    /// Where counters are registered, before the first scrape.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The exposition, as served on `/metrics`: the caches' counts brought
    /// up to date first.
    pub async fn render(&self) -> String {
        if let Some(jobs) = &self.jobs {
            jobs.settle().await;
        }
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let scrape = move || {
        let metrics = metrics.clone();
        async move {
            (
                [(header::CONTENT_TYPE, CONTENT_TYPE)],
                metrics.render().await,
            )
                .into_response()
        }
    };
    let app = Router::new().route("/metrics", get(scrape));
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        warn!(error = %err, "the metrics listener failed");
    }
}

/// Logs where `/metrics` is served (tests and operators read this line).
pub fn announce(address: SocketAddr) {
    info!(%address, path = "/metrics", "metrics listening");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{Source, metrics::JobsMetrics},
        upstream::{UpstreamError, UpstreamErrorKind},
    };

    #[tokio::test]
    async fn the_exposition_names_counters_as_prometheus_expects() {
        let jobs = Arc::new(JobsMetrics::default());
        let describe_job = jobs.operation("DescribeJob");
        let listing = jobs.operation("ListJobExecutionsForJob");
        let throttled =
            UpstreamError::new(UpstreamErrorKind::Throttled).with_code("ThrottlingException");
        listing.aws_sent().answered(Err(&throttled));
        drop(describe_job.aws_sent());
        describe_job.answered(Source::Hit);
        let mut metrics = Metrics::new(sampled::Sources::default());
        jobs.register(metrics.registry());
        let text = metrics.render().await;
        assert!(
            text.contains(
                "iot_jobs_gateway_aws_attempts_total{operation=\"ListJobExecutionsForJob\",\
                 outcome=\"throttled\",aws_code=\"ThrottlingException\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "iot_jobs_gateway_aws_attempts_total{operation=\"DescribeJob\",\
                 outcome=\"abandoned\",aws_code=\"\"} 1"
            ),
            "a request dropped before its answer: {text}"
        );
        assert!(
            text.contains(
                "iot_jobs_gateway_cache_answers_total{operation=\"DescribeJob\",source=\"hit\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "iot_jobs_gateway_cache_answers_total{operation=\"ListJobExecutionsForJob\",\
                 source=\"stale\"} 0"
            ),
            "every operation's counters exist before its first call: {text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
