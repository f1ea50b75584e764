//! What the domain counts: AWS attempts and their round trips, retries,
//! rate-limit waits and refusals, where answers came from, and what
//! watchers were sent. Plain `prometheus-client` handles (atomics; a label
//! set is looked up once, not per call), registered on the `/metrics`
//! registry by [`crate::telemetry::metrics`].
//!
//! No label carries a job id, a caller or anything else unbounded.

use std::time::Duration;

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

    /// Adds the counters to the `/metrics` registry.
    pub fn register(&self, registry: &mut Registry) {
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

    #[test]
    fn unknown_aws_codes_share_one_label() {
        assert_eq!(aws_code(Some("ThrottlingException")), "ThrottlingException");
        assert_eq!(aws_code(Some("SomethingNew")), "Other");
        assert_eq!(aws_code(None), "");
    }
}
