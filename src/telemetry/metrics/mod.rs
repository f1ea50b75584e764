//! What the gateway counts, and `/metrics` in the Prometheus text format
//! (`--metrics-listen`).
//!
//! Counters live with the code that counts them, as plain handles from
//! `prometheus-client` (atomics; a label set is looked up once, not per
//! call): [`grpc::GrpcMetrics`] in the observation layer in front of every
//! service, [`JobsMetrics`] in the domain. Gauges that are a state rather
//! than a count (the rate limit's rate, cache entries, pollers, Redis
//! leases) are read from their owners when Prometheus scrapes
//! ([`sampled`]), so nothing on a request path keeps them.
//!
//! No label carries a job id, a caller or anything else unbounded.

pub mod grpc;
pub mod sampled;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        histogram::Histogram,
        info::Info,
    },
    registry::Registry,
};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{
    domain::Source, edge::server::Observation, security::connections::GuardedListener,
    upstream::UpstreamError,
};

/// The media type of the OpenMetrics text format prometheus-client writes;
/// Prometheus asks for it first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of one gateway, ready to be scraped.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Registers the gateway's metrics: the gRPC server's, the domain's,
    /// and gauges read from `sources` at each scrape.
    pub fn new(server: &Observation, jobs: &JobsMetrics, sources: sampled::Sources) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "iot_jobs_gateway_build",
            "The gateway's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        server.grpc.register(&mut registry);
        server.connections.register(&mut registry);
        jobs.register(&mut registry);
        registry.register_collector(Box::new(sources));
        Self { registry }
    }

    /// The exposition, as served on `/metrics`.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: GuardedListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let scrape = move || {
        let metrics = metrics.clone();
        async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()).into_response() }
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

/// Histogram buckets for AWS round trips, in seconds: a DescribeJob
/// usually answers in 20–200 ms; the top buckets catch attempt timeouts.
const AWS_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets for the age of a watched job's newest answer when it is sent:
/// from "just polled" to several poll intervals behind.
const AGE_SECONDS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Makes histograms with fixed buckets for a [`Family`].
#[derive(Clone, Copy)]
pub struct Buckets(pub &'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// What the domain counts: AWS attempts, retries, refusals, where answers
/// came from, and what watchers were sent.
pub struct JobsMetrics {
    aws_attempts: Family<Labels<2>, Counter>,
    aws_seconds: Family<Labels<1>, Histogram, Buckets>,
    retries: Counter,
    rate_limited: Counter,
    waits: Counter,
    wait_seconds: Counter<f64>,
    answers: [Counter; 4],
    answers_family: Family<Labels<1>, Counter>,
    polls: Counter,
    events_sent: Counter,
    answer_age: Histogram,
}

impl Default for JobsMetrics {
    fn default() -> Self {
        let answers_family = Family::<Labels<1>, Counter>::default();
        let answers = [Source::Hit, Source::Miss, Source::Coalesced, Source::Stale]
            .map(|source| answers_family.get_or_create_owned(&[("source", source.name())]));
        Self {
            aws_attempts: Family::default(),
            aws_seconds: Family::new_with_constructor(Buckets(&AWS_SECONDS)),
            retries: Counter::default(),
            rate_limited: Counter::default(),
            waits: Counter::default(),
            wait_seconds: Counter::default(),
            answers,
            answers_family,
            polls: Counter::default(),
            events_sent: Counter::default(),
            answer_age: Histogram::new(AGE_SECONDS.iter().copied()),
        }
    }
}

/// An AWS request on its way: counted when it is answered, or as
/// `abandoned` when it is dropped first (the caller's deadline passed, or
/// the caller left), since AWS saw and charged it all the same.
pub struct InFlight<'a> {
    metrics: &'a JobsMetrics,
    sent: Instant,
    answered: bool,
}

impl InFlight<'_> {
    /// AWS answered with `result`; returns how long it took.
    pub fn answered(mut self, result: Result<(), &UpstreamError>) -> Duration {
        self.answered = true;
        let took = self.sent.elapsed();
        let (outcome, code) = match result {
            Ok(()) => ("ok", ""),
            Err(err) => (outcome_name(err), aws_code(err.aws_code.as_deref())),
        };
        self.metrics.aws_attempt(outcome, code, took);
        took
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics
                .aws_attempt("abandoned", "", self.sent.elapsed());
        }
    }
}

impl JobsMetrics {
    /// An AWS request sent now.
    pub fn aws_sent(&self) -> InFlight<'_> {
        InFlight {
            metrics: self,
            sent: Instant::now(),
            answered: false,
        }
    }

    fn aws_attempt(&self, outcome: &'static str, code: &'static str, took: Duration) {
        self.aws_attempts
            .get_or_create(&[("outcome", outcome), ("aws_code", code)])
            .inc();
        self.aws_seconds
            .get_or_create(&[("outcome", outcome)])
            .observe(took.as_secs_f64());
    }

    /// An AWS attempt after a failed one, for the same question.
    pub fn retry(&self) {
        self.retries.inc();
    }

    /// A call refused with RATE_LIMITED.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// A call took a token after `waited` (counted as a wait from 1 ms).
    pub fn token_taken(&self, waited: Duration) {
        if waited >= Duration::from_millis(1) {
            self.waits.inc();
            self.wait_seconds.inc_by(waited.as_secs_f64());
        }
    }

    /// A call (or batch item) answered from `source`.
    pub fn answered(&self, source: Source) {
        let index = match source {
            Source::Hit => 0,
            Source::Miss => 1,
            Source::Coalesced => 2,
            Source::Stale => 3,
        };
        self.answers[index].inc();
    }

    /// A watch poll sent to AWS.
    pub fn polled(&self) {
        self.polls.inc();
    }

    /// A job event sent on a watch stream, carrying an answer `age` old.
    pub fn event_sent(&self, age: Duration) {
        self.events_sent.inc();
        self.answer_age.observe(age.as_secs_f64());
    }

    fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "iot_jobs_gateway_aws_attempts",
            "DescribeJob requests sent to AWS, by outcome and AWS error code",
            self.aws_attempts.clone(),
        );
        r.register(
            "iot_jobs_gateway_aws_request_duration_seconds",
            "Time from sending a DescribeJob request to AWS to its answer, by outcome",
            self.aws_seconds.clone(),
        );
        r.register(
            "iot_jobs_gateway_aws_retries",
            "AWS attempts that retried a failed one",
            self.retries.clone(),
        );
        r.register(
            "iot_jobs_gateway_rate_limited",
            "Calls and batch items refused with RATE_LIMITED: the AWS budget could not fit them \
             before their deadline, or too many waited",
            self.rate_limited.clone(),
        );
        r.register(
            "iot_jobs_gateway_rate_limit_waits",
            "Calls that waited for a token of the AWS budget (1 ms or more)",
            self.waits.clone(),
        );
        r.register(
            "iot_jobs_gateway_rate_limit_wait_seconds",
            "Time calls spent waiting for tokens of the AWS budget",
            self.wait_seconds.clone(),
        );
        r.register(
            "iot_jobs_gateway_cache_answers",
            "Answers to calls and batch items by where they came from: hit (cache), miss (the \
             call's own AWS request), coalesced (another call's request), stale (an expired \
             answer served because AWS failed or was being asked again)",
            self.answers_family.clone(),
        );
        r.register(
            "iot_jobs_gateway_watch_polls",
            "DescribeJob requests sent to AWS by watch pollers",
            self.polls.clone(),
        );
        r.register(
            "iot_jobs_gateway_watch_events_sent",
            "Job events sent on watch streams",
            self.events_sent.clone(),
        );
        r.register(
            "iot_jobs_gateway_watch_answer_age_seconds",
            "How old a watched job's newest AWS answer was when a watcher was sent it",
            self.answer_age.clone(),
        );
    }
}

/// The `outcome` label of a failed AWS attempt.
fn outcome_name(err: &UpstreamError) -> &'static str {
    use crate::upstream::UpstreamErrorKind::*;
    match err.kind {
        InvalidRequest => "invalid",
        NotFound => "not_found",
        Throttled => "throttled",
        Unavailable => "unavailable",
        AccessDenied => "denied",
        Unauthenticated => "unauthenticated",
        Timeout => "timeout",
        Internal => "error",
    }
}

/// The `aws_code` label: AWS's error code when it is one DescribeJob is
/// documented to return (or a common transport one), so a misbehaving
/// endpoint cannot grow the label set.
fn aws_code(code: Option<&str>) -> &'static str {
    const KNOWN: [&str; 12] = [
        "InvalidRequestException",
        "ResourceNotFoundException",
        "ThrottlingException",
        "ServiceUnavailableException",
        "UnauthorizedException",
        "AccessDeniedException",
        "InternalFailureException",
        "InternalServerException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "RequestTimeout",
    ];
    match code {
        None => "",
        Some(code) => KNOWN
            .iter()
            .find(|known| **known == code)
            .copied()
            .unwrap_or("Other"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamErrorKind;

    #[test]
    fn unknown_aws_codes_share_one_label() {
        assert_eq!(aws_code(Some("ThrottlingException")), "ThrottlingException");
        assert_eq!(aws_code(Some("SomethingNew")), "Other");
        assert_eq!(aws_code(None), "");
    }

    #[tokio::test]
    async fn the_exposition_names_counters_as_prometheus_expects() {
        let jobs = JobsMetrics::default();
        let throttled =
            UpstreamError::new(UpstreamErrorKind::Throttled).with_code("ThrottlingException");
        jobs.aws_sent().answered(Err(&throttled));
        drop(jobs.aws_sent());
        jobs.answered(Source::Hit);
        let server = Observation::new(crate::telemetry::refusals::RefusalLogSettings::default());
        let text = Metrics::new(&server, &jobs, sampled::Sources::default()).render();
        assert!(text.contains(
            "iot_jobs_gateway_aws_attempts_total{outcome=\"throttled\",aws_code=\"ThrottlingException\"} 1"
        ), "{text}");
        assert!(
            text.contains(
                "iot_jobs_gateway_aws_attempts_total{outcome=\"abandoned\",aws_code=\"\"} 1"
            ),
            "a request dropped before its answer: {text}"
        );
        assert!(
            text.contains("iot_jobs_gateway_cache_answers_total{source=\"hit\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("iot_jobs_gateway_cache_answers_total{source=\"stale\"} 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
