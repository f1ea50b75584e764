//! Everything a gateway call can fail with, in the domain's terms: what
//! happened, to which job, and what it means (an answer, a refusal, a
//! fault; whether an older answer may stand in for it). The edge turns it
//! into a `tonic::Status` with its message and details
//! ([`crate::edge::status`]); the gRPC code class of each failure is
//! [`GatewayError::code`], which the logs and watch versions use too.

use std::time::Duration;

use tonic::Code;

use crate::{
    domain::{
        limit::{RejectReason, Rejected},
        rules::FieldViolation,
    },
    upstream::{Subject, UpstreamError, UpstreamErrorKind},
};

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
    #[error("AWS IoT {} for {subject} failed", .source.operation)]
    Upstream {
        /// The job (or thing) the call was about.
        subject: Subject,
        /// What went wrong upstream (boxed: errors stay small on the
        /// answer path).
        #[source]
        source: Box<UpstreamError>,
    },
    /// Time ran out before AWS answered; the upstream request was dropped.
    #[error("no answer from AWS IoT for {subject} within {budget:?} ({limit:?} deadline)")]
    DeadlineExceeded {
        /// The job (or thing) the call was about.
        subject: Subject,
        /// How long the gateway waited.
        budget: Duration,
        /// Whose limit it was.
        limit: DeadlineSource,
    },
    /// The gateway's own AWS rate limit has no call to spare in time; AWS
    /// was not called.
    #[error("no AWS {operation} call for {subject} available in time under the gateway's rate limit ({:?}, retry after {:?})", .rejected.reason, .rejected.retry_after)]
    RateLimited {
        /// The job (or thing) the call was about.
        subject: Subject,
        /// The operation whose budget had no call to spare.
        operation: &'static str,
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
    /// Reading the executions on this thing.
    Thing(String),
    /// Watching these jobs (their index in the request and id).
    Jobs(Vec<(usize, String)>),
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rpc(rpc) => write!(f, "may not call {rpc}"),
            Self::Job(job_id) => write!(f, "may not read job {job_id:?}"),
            Self::Thing(thing) => write!(f, "may not read the executions on thing {thing:?}"),
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
    /// An upstream failure of `kind` about `subject` (a job id, unless
    /// said otherwise), described by `message`: for failures inside the
    /// gateway on the way to or from AWS.
    pub fn upstream(subject: impl Into<Subject>, kind: UpstreamErrorKind, message: &str) -> Self {
        Self::Upstream {
            subject: subject.into(),
            source: Box::new(UpstreamError::new(kind).with_message(message)),
        }
    }

    /// The error with its whole cause chain, for the server-side log.
    pub fn chain(&self) -> String {
        crate::upstream::error_chain(self)
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
