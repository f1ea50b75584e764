//! What the domain counts: AWS attempts and their round trips, retries,
//! rate-limit waits and refusals, where answers came from, and what
//! watchers were sent. Plain `prometheus-client` handles (atomics; a label
//! set is looked up once, not per call), registered on the `/metrics`
//! registry by [`crate::telemetry::metrics`].
//!
//! Everything about AWS requests, the budget and the cache is labelled by
//! `operation` (AWS's name of it: a handful of values, fixed at build time);
//! each operation counts through its own [`OperationMetrics`], whose label
//! sets are looked up once, when the operation is built.
//!
//! No label carries a job id, a caller or anything else unbounded.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        histogram::Histogram,
    },
    registry::Registry,
};
use tokio::time::Instant;

use crate::{domain::Source, upstream::UpstreamError};

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

/// A fixed set of static labels.
pub type Labels<const N: usize> = [(&'static str, &'static str); N];

/// What the domain counts: AWS attempts, retries, refusals, where answers
/// came from (each by operation), and what watchers were sent.
pub struct JobsMetrics {
    aws_attempts: Family<Labels<3>, Counter>,
    aws_seconds: Family<Labels<2>, Histogram, Buckets>,
    retries: Family<Labels<1>, Counter>,
    rate_limited: Family<Labels<1>, Counter>,
    waits: Family<Labels<1>, Counter>,
    wait_seconds: Family<Labels<1>, Counter<f64>>,
    answers: Family<Labels<2>, Counter>,
    polls: Counter,
    events_sent: Counter,
    answer_age: Histogram,
}

impl Default for JobsMetrics {
    fn default() -> Self {
        Self {
            aws_attempts: Family::default(),
            aws_seconds: Family::new_with_constructor(Buckets(&AWS_SECONDS)),
            retries: Family::default(),
            rate_limited: Family::default(),
            waits: Family::default(),
            wait_seconds: Family::default(),
            answers: Family::default(),
            polls: Counter::default(),
            events_sent: Counter::default(),
            answer_age: Histogram::new(AGE_SECONDS.iter().copied()),
        }
    }
}

/// What one operation counts, its label sets looked up once. Every counter
/// of the operation exists (at 0) from the moment it is built, so a
/// dashboard sees every operation before its first call.
#[derive(Clone)]
pub struct OperationMetrics {
    operation: &'static str,
    all: Arc<JobsMetrics>,
    retries: Counter,
    rate_limited: Counter,
    waits: Counter,
    wait_seconds: Counter<f64>,
    answers: [Counter; 4],
}

/// An AWS request on its way: counted when it is answered, or as
/// `abandoned` when it is dropped first (the caller's deadline passed, or
/// the caller left), since AWS saw and charged it all the same.
pub struct InFlight<'a> {
    metrics: &'a OperationMetrics,
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
    /// The counters of `operation` (AWS's name of it).
    pub fn operation(self: &Arc<Self>, operation: &'static str) -> OperationMetrics {
        let of = [("operation", operation)];
        let answers = [Source::Hit, Source::Miss, Source::Coalesced, Source::Stale].map(|source| {
            self.answers
                .get_or_create_owned(&[("operation", operation), ("source", source.name())])
        });
        OperationMetrics {
            operation,
            all: self.clone(),
            retries: self.retries.get_or_create_owned(&of),
            rate_limited: self.rate_limited.get_or_create_owned(&of),
            waits: self.waits.get_or_create_owned(&of),
            wait_seconds: self.wait_seconds.get_or_create_owned(&of),
            answers,
        }
    }

    /// A job event sent on a watch stream, carrying an answer `age` old.
    pub fn event_sent(&self, age: Duration) {
        self.events_sent.inc();
        self.answer_age.observe(age.as_secs_f64());
    }

    /// Adds the counters to the `/metrics` registry.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "iot_jobs_gateway_aws_attempts",
            "Requests sent to AWS, by operation, outcome and AWS error code",
            self.aws_attempts.clone(),
        );
        r.register(
            "iot_jobs_gateway_aws_request_duration_seconds",
            "Time from sending a request to AWS to its answer, by operation and outcome",
            self.aws_seconds.clone(),
        );
        r.register(
            "iot_jobs_gateway_aws_retries",
            "AWS attempts that retried a failed one, by operation",
            self.retries.clone(),
        );
        r.register(
            "iot_jobs_gateway_rate_limited",
            "Calls and batch items refused with RATE_LIMITED, by operation: its AWS budget could \
             not fit them before their deadline, or too many waited",
            self.rate_limited.clone(),
        );
        r.register(
            "iot_jobs_gateway_rate_limit_waits",
            "Calls that waited for a token of their operation's AWS budget (1 ms or more)",
            self.waits.clone(),
        );
        r.register(
            "iot_jobs_gateway_rate_limit_wait_seconds",
            "Time calls spent waiting for tokens of their operation's AWS budget",
            self.wait_seconds.clone(),
        );
        r.register(
            "iot_jobs_gateway_cache_answers",
            "Answers to calls and batch items by operation and where they came from: hit \
             (cache), miss (the call's own AWS request), coalesced (another call's request), \
             stale (an expired answer served because AWS failed or was being asked again)",
            self.answers.clone(),
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

impl OperationMetrics {
    /// An AWS request sent now.
    pub fn aws_sent(&self) -> InFlight<'_> {
        InFlight {
            metrics: self,
            sent: Instant::now(),
            answered: false,
        }
    }

    fn aws_attempt(&self, outcome: &'static str, code: &'static str, took: Duration) {
        let operation = ("operation", self.operation);
        self.all
            .aws_attempts
            .get_or_create(&[operation, ("outcome", outcome), ("aws_code", code)])
            .inc();
        self.all
            .aws_seconds
            .get_or_create(&[operation, ("outcome", outcome)])
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

    /// A watch poll sent to AWS (watches poll DescribeJob).
    pub fn polled(&self) {
        self.all.polls.inc();
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

/// The `aws_code` label: AWS's error code when it is one the Jobs
/// operations are documented to return (or a common transport one), so a misbehaving
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

    #[test]
    fn unknown_aws_codes_share_one_label() {
        assert_eq!(aws_code(Some("ThrottlingException")), "ThrottlingException");
        assert_eq!(aws_code(Some("SomethingNew")), "Other");
        assert_eq!(aws_code(None), "");
    }
}
