//! The one place a [`GatewayError`] becomes a `tonic::Status`.
//!
//! Every status carries a precise code, a message a person can act on, and
//! rich details (`google.rpc.ErrorInfo`, plus `BadRequest` for validation and
//! `RetryInfo` for throttling). AWS's request id and error code travel in
//! ErrorInfo's metadata; Rust debug output and credentials never do.

use std::{collections::HashMap, time::Duration};

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain::{
        error::{DeadlineSource, Denied, GatewayError, WatchScope},
        limit::{RejectReason, Rejected},
    },
    pb::ERROR_DOMAIN,
    upstream::{
        DEFAULT_THROTTLE_RETRY_AFTER, DescribeJobExecution, Operation as _, Subject, UpstreamError,
        UpstreamErrorKind,
    },
};

/// The error as a `google.rpc.Status`, with the same code, message and
/// details a unary call would carry (for batch items and watch events).
pub fn rpc_status(err: GatewayError) -> tonic_types::pb::Status {
    use prost::Message as _;
    let status = Status::from(err);
    tonic_types::pb::Status::decode(status.details()).unwrap_or_else(|_| tonic_types::pb::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    })
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
                subject,
                budget,
                limit,
            } => {
                let whose = match limit {
                    DeadlineSource::Caller => "caller",
                    DeadlineSource::Gateway => "gateway",
                };
                let metadata = HashMap::from([
                    (subject.about.field().to_owned(), subject.name.clone()),
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
            GatewayError::RateLimited {
                subject,
                operation,
                rejected,
            } => rate_limited_status(subject, operation, rejected, &mut details),
            GatewayError::Upstream { subject, source } => {
                upstream_status(subject, source, &mut details)
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
                    Denied::Thing(thing) => {
                        metadata.insert("thingName".to_owned(), thing.clone());
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
fn rate_limited_status(
    subject: &Subject,
    operation: &str,
    rejected: &Rejected,
    details: &mut ErrorDetails,
) -> String {
    // Never tell a client to retry sooner than a millisecond from now.
    let retry_after = rejected.retry_after.max(Duration::from_millis(1));
    details.set_retry_info(Some(retry_after));
    let metadata = HashMap::from([
        (subject.about.field().to_owned(), subject.name.clone()),
        ("ratePerSecond".to_owned(), format!("{}", rejected.rate)),
    ]);
    details.set_error_info("RATE_LIMITED", ERROR_DOMAIN, metadata);
    let rate = rejected.rate;
    let after = humantime_ms(retry_after);
    match rejected.reason {
        RejectReason::Deadline => format!(
            "the gateway's AWS rate limit ({rate} {operation} calls/s) has no call free for \
             {subject} before this call's deadline; retry after {after} or with a longer deadline"
        ),
        RejectReason::QueueFull => format!(
            "too many calls are already waiting for the gateway's AWS rate limit \
             ({rate} {operation} calls/s); retry after {after}"
        ),
        RejectReason::CallerQueueFull => format!(
            "this caller already has its most calls waiting for the gateway's AWS rate limit \
             ({rate} {operation} calls/s; its policy's max_waiting); retry after {after}"
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
fn upstream_status(subject: &Subject, err: &UpstreamError, details: &mut ErrorDetails) -> String {
    use UpstreamErrorKind::*;
    let code = err.aws_code.as_deref();
    let (reason, message) = match err.kind {
        InvalidRequest => (
            "UPSTREAM_INVALID_REQUEST",
            format!(
                "AWS IoT rejected the request for {subject}: {}",
                err.aws_message
                    .as_deref()
                    .unwrap_or("InvalidRequestException")
            ),
        ),
        NotFound if err.operation == DescribeJobExecution::NAME => (
            "EXECUTION_NOT_FOUND",
            format!(
                "{subject} has no such execution on that thing in the gateway's AWS account \
                 and region (the job or the thing does not exist, the thing is not one of the \
                 job's targets, or that execution number was never run)"
            ),
        ),
        NotFound => (
            "JOB_NOT_FOUND",
            format!("{subject} does not exist in the gateway's AWS account and region"),
        ),
        Throttled => {
            details.set_retry_info(Some(DEFAULT_THROTTLE_RETRY_AFTER));
            (
                "UPSTREAM_THROTTLED",
                format!(
                    "AWS IoT is throttling {} for the gateway's account; retry after {}s",
                    err.operation,
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
                "the gateway's AWS identity may not call {} for {subject} ({}); \
                 an operator must grant it iot:{}",
                err.operation,
                code.unwrap_or("AccessDeniedException"),
                err.operation
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
                (Some(code), _) => {
                    format!("AWS IoT {} failed for {subject} ({code})", err.operation)
                }
                (None, Some(message)) => {
                    format!("{} for {subject} failed: {message}", err.operation)
                }
                (None, None) => {
                    format!("{} for {subject} failed inside the gateway", err.operation)
                }
            },
        ),
    };
    let mut metadata = HashMap::from([(subject.about.field().to_owned(), subject.name.clone())]);
    if let Some(code) = code {
        metadata.insert("awsErrorCode".to_owned(), code.to_owned());
    }
    if let Some(id) = &err.request_id {
        metadata.insert("awsRequestId".to_owned(), id.clone());
    }
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    message
}
