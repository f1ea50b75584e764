//! The gateway's failures and the one place they become a `tonic::Status`.
//!
//! Every status carries a precise code, a message a person can act on, and
//! rich details (`google.rpc.ErrorInfo`, plus `BadRequest` for validation and
//! `RetryInfo` for throttling). AWS's request id and error code travel in
//! ErrorInfo's metadata; Rust debug output and credentials never do.

use std::{collections::HashMap, error::Error as StdError, fmt::Write as _, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain::limit::RejectReason,
    domain::limit::Rejected,
    domain::rules::FieldViolation,
    upstream::{DEFAULT_THROTTLE_RETRY_AFTER, UpstreamError, UpstreamErrorKind},
};

/// The `ErrorInfo.domain` of every error the gateway reports.
pub const ERROR_DOMAIN: &str = "iot-jobs-gateway";

/// Which time limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineSource {
    /// The caller's gRPC deadline.
    Caller,
    /// The gateway's own upstream operation timeout.
    Gateway,
}

/// What a failure is to whoever reads the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An answer about the request: the id is invalid, the job does not exist.
    Answer,
    /// The caller refused on purpose: the AWS budget, a cap, its
    /// credentials, the policy. Expected under excess demand.
    Refusal,
    /// The gateway is shutting down.
    Shutdown,
    /// Something went wrong: AWS failing, time running out, the gateway's
    /// own AWS credentials or permissions.
    Fault,
}

/// Everything a gateway call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The request was malformed; AWS was not called.
    #[error("invalid request: {}", .0.description)]
    InvalidArgument(FieldViolation),
    /// AWS (or the way to it) failed.
    #[error("AWS IoT DescribeJob for job {job_id:?} failed")]
    Upstream {
        /// The job the call was about.
        job_id: String,
        /// What went wrong upstream.
        #[source]
        source: UpstreamError,
    },
    /// Time ran out before AWS answered; the upstream request was dropped.
    #[error("no answer from AWS IoT for job {job_id:?} within {budget:?} ({limit:?} deadline)")]
    DeadlineExceeded {
        /// The job the call was about.
        job_id: String,
        /// How long the gateway waited.
        budget: Duration,
        /// Whose limit it was.
        limit: DeadlineSource,
    },
    /// The gateway's own AWS rate limit has no call to spare in time; AWS
    /// was not called.
    #[error("no AWS call for job {job_id:?} available in time under the gateway's rate limit ({:?}, retry after {:?})", .rejected.reason, .rejected.retry_after)]
    RateLimited {
        /// The job the call was about.
        job_id: String,
        /// What the limiter said.
        rejected: Rejected,
    },
    /// A watch stream would exceed a cap on open streams; AWS was not called.
    #[error("too many watch streams: {scope:?} limit of {limit} reached")]
    TooManyWatches {
        /// The cap that was reached.
        limit: usize,
        /// Whose cap it is.
        scope: WatchScope,
    },
    /// The gateway is shutting down and ends its watch streams.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The call's credentials are missing or prove nothing; AWS was not
    /// called.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (the gateway's policy, not AWS's IAM);
    /// AWS was not called.
    #[error("caller {caller:?} {denied}")]
    NotPermitted {
        /// The caller.
        caller: String,
        /// What it may not do.
        denied: Denied,
    },
}

/// What a caller's policy does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Calling this RPC.
    Rpc(&'static str),
    /// Reading this job.
    Job(String),
    /// Watching these jobs (their index in the request and id).
    Jobs(Vec<(usize, String)>),
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rpc(rpc) => write!(f, "may not call {rpc}"),
            Self::Job(job_id) => write!(f, "may not read job {job_id:?}"),
            Self::Jobs(jobs) => {
                let ids: Vec<&str> = jobs.iter().map(|(_, id)| id.as_str()).collect();
                write!(f, "may not watch jobs {ids:?}")
            }
        }
    }
}

/// Which cap on watch streams was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchScope {
    /// All streams of the gateway (`--watch-max-streams`).
    Gateway,
    /// The streams of one client connection (`--watch-max-streams-per-connection`).
    Connection,
    /// The streams of one identified caller (its policy's
    /// `max_watch_streams`, else `--watch-max-streams-per-connection`).
    Caller,
}

impl GatewayError {
    /// An upstream failure of `kind` about `job_id`, described by `message`:
    /// for failures inside the gateway on the way to or from AWS.
    pub fn upstream(job_id: impl Into<String>, kind: UpstreamErrorKind, message: &str) -> Self {
        Self::Upstream {
            job_id: job_id.into(),
            source: UpstreamError::new(kind).with_message(message),
        }
    }

    /// The error with its whole cause chain, for the server-side log.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = self.source();
        while let Some(cause) = next {
            let _ = write!(out, ": {cause}");
            next = cause.source();
        }
        out
    }

    /// Whether the failure says nothing about the job itself: AWS could not
    /// answer (unavailable, internal, an attempt timeout, throttled after
    /// retries), the rate limit had no call for it in time, or the gateway's
    /// own operation timeout ran out. An older answer may stand in for such
    /// a failure (`--cache-stale-if-error`); never for NOT_FOUND, a bad
    /// request or an access error, nor once the caller's own deadline passed.
    pub fn says_nothing_about_the_job(&self) -> bool {
        use UpstreamErrorKind::{Internal, Throttled, Timeout, Unavailable};
        match self {
            Self::Upstream { source, .. } => {
                matches!(source.kind, Unavailable | Internal | Timeout | Throttled)
            }
            Self::RateLimited { .. } => true,
            Self::DeadlineExceeded { limit, .. } => *limit == DeadlineSource::Gateway,
            _ => false,
        }
    }

    /// Whether the call failed only because its time ran out (its deadline
    /// passed, or the rate limit could not fit it in before it); a caller
    /// with more time may still succeed.
    pub fn is_out_of_time(&self) -> bool {
        match self {
            Self::DeadlineExceeded { .. } => true,
            Self::RateLimited { rejected, .. } => rejected.reason == RejectReason::Deadline,
            _ => false,
        }
    }

    /// The error as a `google.rpc.Status`, with the same code, message and
    /// details a unary call would carry (for batch items).
    pub fn into_rpc_status(self) -> tonic_types::pb::Status {
        use prost::Message as _;
        let status = Status::from(self);
        tonic_types::pb::Status::decode(status.details()).unwrap_or_else(|_| {
            tonic_types::pb::Status {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: Vec::new(),
            }
        })
    }

    /// What the failure is to the logs. AWS throttling after the retries,
    /// and AWS refusing the gateway's own credentials or permissions, are
    /// faults, though their codes are those of the caller's refusals.
    pub fn failure(&self) -> Failure {
        use UpstreamErrorKind::{InvalidRequest, NotFound};
        match self {
            Self::InvalidArgument(_) => Failure::Answer,
            Self::Upstream { source, .. } if matches!(source.kind, NotFound | InvalidRequest) => {
                Failure::Answer
            }
            Self::RateLimited { .. }
            | Self::TooManyWatches { .. }
            | Self::Unauthenticated(_)
            | Self::NotPermitted { .. } => Failure::Refusal,
            Self::ShuttingDown => Failure::Shutdown,
            Self::Upstream { .. } | Self::DeadlineExceeded { .. } => Failure::Fault,
        }
    }

    /// The gRPC code this error maps to (also used for call logs).
    pub fn code(&self) -> Code {
        use UpstreamErrorKind::*;
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Self::RateLimited { .. } | Self::TooManyWatches { .. } => Code::ResourceExhausted,
            Self::ShuttingDown => Code::Unavailable,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::NotPermitted { .. } => Code::PermissionDenied,
            Self::Upstream { source, .. } => match source.kind {
                InvalidRequest => Code::InvalidArgument,
                NotFound => Code::NotFound,
                Throttled => Code::ResourceExhausted,
                Unavailable => Code::Unavailable,
                AccessDenied => Code::PermissionDenied,
                Unauthenticated => Code::Unauthenticated,
                Timeout => Code::DeadlineExceeded,
                Internal => Code::Internal,
            },
        }
    }
}

impl From<GatewayError> for Status {
    fn from(err: GatewayError) -> Self {
        let code = err.code();
        let mut details = ErrorDetails::new();
        let message = match &err {
            GatewayError::InvalidArgument(v) => {
                details.add_bad_request_violation(&v.field, &v.description);
                v.description.clone()
            }
            GatewayError::DeadlineExceeded {
                job_id,
                budget,
                limit,
            } => {
                let whose = match limit {
                    DeadlineSource::Caller => "caller",
                    DeadlineSource::Gateway => "gateway",
                };
                let metadata = HashMap::from([
                    ("jobId".to_owned(), job_id.clone()),
                    ("deadline".to_owned(), whose.to_owned()),
                ]);
                details.set_error_info("DEADLINE_EXCEEDED", ERROR_DOMAIN, metadata);
                match limit {
                    DeadlineSource::Caller => format!(
                        "the call's deadline passed before AWS IoT answered (waited {budget:?}); \
                         the AWS request was abandoned"
                    ),
                    DeadlineSource::Gateway => format!(
                        "AWS IoT did not answer within the gateway's upstream operation timeout ({budget:?})"
                    ),
                }
            }
            GatewayError::RateLimited { job_id, rejected } => {
                rate_limited_status(job_id, rejected, &mut details)
            }
            GatewayError::Upstream { job_id, source } => {
                upstream_status(job_id, source, &mut details)
            }
            GatewayError::TooManyWatches { limit, scope } => {
                let metadata = HashMap::from([("limit".to_owned(), limit.to_string())]);
                details.set_error_info("TOO_MANY_WATCHES", ERROR_DOMAIN, metadata);
                match scope {
                    WatchScope::Gateway => format!(
                        "the gateway already serves its maximum of {limit} watch streams \
                         (--watch-max-streams); retry later or on another replica"
                    ),
                    WatchScope::Connection => format!(
                        "this connection already has the maximum of {limit} watch streams open \
                         (--watch-max-streams-per-connection); watch several jobs per stream \
                         or open another connection"
                    ),
                    WatchScope::Caller => format!(
                        "this caller already has the maximum of {limit} watch streams open on \
                         this gateway (its policy's max_watch_streams); watch several jobs per \
                         stream or close one"
                    ),
                }
            }
            GatewayError::Unauthenticated(problem) => {
                let metadata = HashMap::from([("problem".to_owned(), problem.clone())]);
                details.set_error_info("CALLER_UNAUTHENTICATED", ERROR_DOMAIN, metadata);
                format!("{problem}; AWS was not called")
            }
            GatewayError::NotPermitted { caller, denied } => {
                let mut metadata = HashMap::from([("caller".to_owned(), caller.clone())]);
                match denied {
                    Denied::Rpc(rpc) => {
                        metadata.insert("rpc".to_owned(), (*rpc).to_owned());
                    }
                    Denied::Job(job_id) => {
                        metadata.insert("jobId".to_owned(), job_id.clone());
                    }
                    Denied::Jobs(jobs) => {
                        for (index, job_id) in jobs {
                            details.add_bad_request_violation(
                                format!("job_ids[{index}]"),
                                format!("caller {caller:?} may not read job {job_id:?}"),
                            );
                        }
                    }
                }
                details.set_error_info("CALLER_NOT_PERMITTED", ERROR_DOMAIN, metadata);
                format!(
                    "caller {caller:?} {denied} under the gateway's policy (--auth-policy); \
                     ask its operator for access"
                )
            }
            GatewayError::ShuttingDown => {
                details.set_error_info("SHUTTING_DOWN", ERROR_DOMAIN, HashMap::new());
                "the gateway is shutting down; reconnect (another replica will answer) and pass \
                 the versions you last saw in resume_from"
                    .to_owned()
            }
        };
        Status::with_error_details(code, message, details)
    }
}

/// Fills in the details and returns the message when the gateway's own rate
/// limit turned a call away.
fn rate_limited_status(job_id: &str, rejected: &Rejected, details: &mut ErrorDetails) -> String {
    // Never tell a client to retry sooner than a millisecond from now.
    let retry_after = rejected.retry_after.max(Duration::from_millis(1));
    details.set_retry_info(Some(retry_after));
    let metadata = HashMap::from([
        ("jobId".to_owned(), job_id.to_owned()),
        ("ratePerSecond".to_owned(), format!("{}", rejected.rate)),
    ]);
    details.set_error_info("RATE_LIMITED", ERROR_DOMAIN, metadata);
    let rate = rejected.rate;
    let after = humantime_ms(retry_after);
    match rejected.reason {
        RejectReason::Deadline => format!(
            "the gateway's AWS rate limit ({rate} DescribeJob calls/s) has no call free for job \
             {job_id:?} before this call's deadline; retry after {after} or with a longer deadline"
        ),
        RejectReason::QueueFull => format!(
            "too many calls are already waiting for the gateway's AWS rate limit \
             ({rate} DescribeJob calls/s); retry after {after}"
        ),
        RejectReason::CallerQueueFull => format!(
            "this caller already has its most calls waiting for the gateway's AWS rate limit \
             ({rate} DescribeJob calls/s; its policy's max_waiting); retry after {after}"
        ),
    }
}

/// A duration for people, to the millisecond ("1.25s", "40ms").
fn humantime_ms(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms as f64 / 1000.0)
    }
}

/// Fills in the details and returns the message for an upstream failure.
fn upstream_status(job_id: &str, err: &UpstreamError, details: &mut ErrorDetails) -> String {
    use UpstreamErrorKind::*;
    let code = err.aws_code.as_deref();
    let (reason, message) = match err.kind {
        InvalidRequest => (
            "UPSTREAM_INVALID_REQUEST",
            format!(
                "AWS IoT rejected the request for job {job_id:?}: {}",
                err.aws_message
                    .as_deref()
                    .unwrap_or("InvalidRequestException")
            ),
        ),
        NotFound => (
            "JOB_NOT_FOUND",
            format!("job {job_id:?} does not exist in the gateway's AWS account and region"),
        ),
        Throttled => {
            details.set_retry_info(Some(DEFAULT_THROTTLE_RETRY_AFTER));
            (
                "UPSTREAM_THROTTLED",
                format!(
                    "AWS IoT is throttling DescribeJob for the gateway's account; retry after {}s",
                    DEFAULT_THROTTLE_RETRY_AFTER.as_secs()
                ),
            )
        }
        Unavailable => (
            "UPSTREAM_UNAVAILABLE",
            match code {
                Some(code) => format!("AWS IoT is unavailable ({code}); retry with backoff"),
                None => "the gateway could not reach AWS IoT; retry with backoff".to_owned(),
            },
        ),
        // AWS's AccessDenied message names the gateway's IAM principal, so
        // it stays in the server log.
        AccessDenied => (
            "UPSTREAM_ACCESS_DENIED",
            format!(
                "the gateway's AWS identity may not describe job {job_id:?} ({}); \
                 an operator must grant it iot:DescribeJob",
                code.unwrap_or("AccessDeniedException")
            ),
        ),
        Unauthenticated => (
            "UPSTREAM_UNAUTHENTICATED",
            format!(
                "the gateway has no valid AWS credentials ({}); an operator must fix its AWS configuration",
                code.unwrap_or("credentials could not be loaded")
            ),
        ),
        Timeout => (
            "UPSTREAM_TIMEOUT",
            "AWS IoT did not answer within the gateway's upstream attempt timeout".to_owned(),
        ),
        Internal => (
            "UPSTREAM_INTERNAL",
            match (code, &err.aws_message) {
                (Some(code), _) => format!("AWS IoT failed to describe job {job_id:?} ({code})"),
                (None, Some(message)) => format!("describing job {job_id:?} failed: {message}"),
                (None, None) => format!("describing job {job_id:?} failed inside the gateway"),
            },
        ),
    };
    let mut metadata = HashMap::from([("jobId".to_owned(), job_id.to_owned())]);
    if let Some(code) = code {
        metadata.insert("awsErrorCode".to_owned(), code.to_owned());
    }
    if let Some(id) = &err.request_id {
        metadata.insert("awsRequestId".to_owned(), id.clone());
    }
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_own_aws_troubles_are_faults_though_their_codes_look_like_refusals() {
        use UpstreamErrorKind::*;
        for kind in [Throttled, AccessDenied, Unauthenticated, Unavailable] {
            let err = GatewayError::upstream("job", kind, "from AWS");
            assert_eq!(err.failure(), Failure::Fault, "{kind:?}");
        }
        let refused = GatewayError::Unauthenticated("no credentials".into());
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(refused.failure(), Failure::Refusal);
        let missing = GatewayError::upstream("job", NotFound, "no such job");
        assert_eq!(missing.failure(), Failure::Answer);
        assert_eq!(GatewayError::ShuttingDown.failure(), Failure::Shutdown);
    }
}
