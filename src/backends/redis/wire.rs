//! How answers, failures and watch observations travel between replicas:
//! protobuf messages (prost), so a stored answer is the same bytes the
//! gateway would send, plus when AWS gave it (wall clock, milliseconds).

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prost::Message;
use tokio::time::Instant;

use crate::{
    domain::{
        answer::{Answer, State},
        error::{DeadlineSource, GatewayError},
        limit::{RejectReason, Rejected},
    },
    upstream::{DescribeJob, Operation, Subject, UpstreamError, UpstreamErrorKind},
};

/// An [`Answer`] as stored in Redis and published.
#[derive(Clone, PartialEq, Message)]
pub struct StoredAnswer {
    /// When AWS answered, milliseconds since the Unix epoch.
    #[prost(uint64, tag = "1")]
    pub answered_at_ms: u64,
    /// The answer's response message (`Operation::Response`), if AWS
    /// found what was asked about.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub found: Option<Vec<u8>>,
    /// Why there is nothing (AWS said it does not exist).
    #[prost(message, optional, tag = "3")]
    pub not_found: Option<StoredError>,
    /// When the request that got it was sent, milliseconds since the Unix
    /// epoch.
    #[prost(uint64, tag = "4")]
    pub asked_at_ms: u64,
}

/// A [`GatewayError`] a fetch ended with, for the callers on other replicas
/// that waited for it.
#[derive(Clone, PartialEq, Message)]
pub struct StoredError {
    /// Which [`GatewayError`]: 0 upstream, 1 rate limited, 2 deadline.
    #[prost(uint32, tag = "1")]
    pub variant: u32,
    /// [`UpstreamErrorKind`] as a number (see [`kind_code`]).
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    #[prost(string, optional, tag = "3")]
    pub aws_code: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub aws_message: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub request_id: Option<String>,
    #[prost(bool, tag = "6")]
    pub retryable: bool,
    /// Rate limited: retry after, or deadline: the budget (milliseconds).
    #[prost(uint64, tag = "7")]
    pub millis: u64,
    /// Rate limited: the rate at the time.
    #[prost(double, tag = "8")]
    pub rate: f64,
    /// Rate limited: 0 deadline, 1 queue full; deadline: 0 caller, 1 gateway.
    #[prost(uint32, tag = "9")]
    pub reason: u32,
}

/// The outcome of one fetch, published to the replicas waiting for it.
#[derive(Clone, PartialEq, Message)]
pub struct Outcome {
    /// The question ([`crate::upstream::Operation::key`]).
    #[prost(string, tag = "1")]
    pub query: String,
    #[prost(message, optional, tag = "2")]
    pub answer: Option<StoredAnswer>,
    #[prost(message, optional, tag = "3")]
    pub error: Option<StoredError>,
}

/// A watch observation published by a job's poller.
#[derive(Clone, PartialEq, Message)]
pub struct Published {
    /// The question ([`crate::upstream::Operation::key`]).
    #[prost(string, tag = "1")]
    pub query: String,
    /// The poll lease's fencing token.
    #[prost(uint64, tag = "2")]
    pub token: u64,
    /// The poller's own order of requests, within the token.
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    #[prost(message, optional, tag = "4")]
    pub answer: Option<StoredAnswer>,
    /// The poll failed (the state is the failure).
    #[prost(message, optional, tag = "5")]
    pub failed: Option<StoredError>,
    /// Why the poller asked ([`crate::domain::watch::observation::Trigger::code`];
    /// 0 from replicas that do not say).
    #[prost(uint32, tag = "6")]
    pub trigger: u32,
}

/// Milliseconds since the Unix epoch of the local instant `at`.
pub fn wall_ms(at: Instant) -> u64 {
    let wall = SystemTime::now()
        .checked_sub(at.elapsed())
        .unwrap_or(UNIX_EPOCH);
    u64::try_from(
        wall.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// The local instant of `ms` since the Unix epoch (never in the future:
/// another machine's clock may run ahead of this one's).
pub fn instant_of(ms: u64) -> Instant {
    let now_ms = wall_ms(Instant::now());
    let ago = Duration::from_millis(now_ms.saturating_sub(ms));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

impl<O: Operation> From<&Answer<O>> for StoredAnswer {
    fn from(answer: &Answer<O>) -> Self {
        let (found, not_found) = match &answer.state {
            State::Found(response) => (Some(response.encode_to_vec()), None),
            State::NotFound(err) => (None, Some(StoredError::upstream(err))),
        };
        Self {
            answered_at_ms: wall_ms(answer.answered_at),
            found,
            not_found,
            asked_at_ms: wall_ms(answer.asked_at),
        }
    }
}

impl StoredAnswer {
    /// The answer, or `None` if the message holds neither a readable
    /// response nor a "no such thing".
    pub fn answer<O: Operation>(self) -> Option<Answer<O>> {
        let state = match (self.found, self.not_found) {
            (Some(bytes), _) => State::Found(Arc::new(O::Response::decode(bytes.as_slice()).ok()?)),
            (None, Some(err)) => State::NotFound(err.upstream_error().of(O::NAME)),
            (None, None) => return None,
        };
        Some(Answer {
            state,
            answered_at: instant_of(self.answered_at_ms),
            asked_at: instant_of(self.asked_at_ms),
        })
    }

    /// Decodes a stored answer; `None` if the bytes are not one.
    pub fn decode_answer<O: Operation>(bytes: &[u8]) -> Option<Answer<O>> {
        Self::decode(bytes).ok()?.answer()
    }
}

impl StoredError {
    fn upstream(err: &UpstreamError) -> Self {
        Self {
            variant: 0,
            kind: kind_code(err.kind),
            aws_code: err.aws_code.clone(),
            aws_message: err.aws_message.clone(),
            request_id: err.request_id.clone(),
            retryable: err.retryable,
            ..Self::default()
        }
    }

    /// The upstream error, as DescribeJob's until the caller says whose.
    fn upstream_error(&self) -> UpstreamError {
        UpstreamError {
            operation: DescribeJob::NAME,
            kind: kind_of(self.kind),
            aws_code: self.aws_code.clone(),
            aws_message: self.aws_message.clone(),
            request_id: self.request_id.clone(),
            retryable: self.retryable,
            source: None,
        }
    }

    /// The error as it travels; errors a fetch cannot end with travel as
    /// an internal one.
    pub fn from_error(err: &GatewayError) -> Self {
        match err {
            GatewayError::Upstream { source, .. } => Self::upstream(source),
            GatewayError::RateLimited { rejected, .. } => Self {
                variant: 1,
                millis: millis(rejected.retry_after),
                rate: rejected.rate,
                reason: match rejected.reason {
                    RejectReason::Deadline => 0,
                    RejectReason::QueueFull => 1,
                    RejectReason::CallerQueueFull => 2,
                },
                ..Self::default()
            },
            GatewayError::DeadlineExceeded { budget, limit, .. } => Self {
                variant: 2,
                millis: millis(*budget),
                reason: match limit {
                    DeadlineSource::Caller => 0,
                    DeadlineSource::Gateway => 1,
                },
                ..Self::default()
            },
            other => Self::upstream(
                &UpstreamError::new(UpstreamErrorKind::Internal).with_message(other.to_string()),
            ),
        }
    }

    /// The error of `operation` about `subject`.
    pub fn into_error(self, subject: Subject, operation: &'static str) -> GatewayError {
        match self.variant {
            1 => GatewayError::RateLimited {
                subject,
                operation,
                rejected: Rejected {
                    reason: match self.reason {
                        1 => RejectReason::QueueFull,
                        2 => RejectReason::CallerQueueFull,
                        _ => RejectReason::Deadline,
                    },
                    retry_after: Duration::from_millis(self.millis),
                    rate: self.rate,
                },
            },
            2 => GatewayError::DeadlineExceeded {
                subject,
                budget: Duration::from_millis(self.millis),
                limit: if self.reason == 1 {
                    DeadlineSource::Gateway
                } else {
                    DeadlineSource::Caller
                },
            },
            _ => GatewayError::Upstream {
                subject,
                source: Box::new(self.upstream_error().of(operation)),
            },
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// [`UpstreamErrorKind`] as a number on the wire.
fn kind_code(kind: UpstreamErrorKind) -> u32 {
    use UpstreamErrorKind::*;
    match kind {
        InvalidRequest => 1,
        NotFound => 2,
        Throttled => 3,
        Unavailable => 4,
        AccessDenied => 5,
        Unauthenticated => 6,
        Timeout => 7,
        Internal => 0,
    }
}

fn kind_of(code: u32) -> UpstreamErrorKind {
    use UpstreamErrorKind::*;
    match code {
        1 => InvalidRequest,
        2 => NotFound,
        3 => Throttled,
        4 => Unavailable,
        5 => AccessDenied,
        6 => Unauthenticated,
        7 => Timeout,
        _ => Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::answer::{JobAnswer, JobState},
        pb,
    };

    #[test]
    fn answers_and_errors_survive_the_trip() {
        let response = pb::DescribeJobResponse {
            job: Some(pb::Job {
                job_id: Some("j-1".into()),
                status: Some(pb::job::Status::InProgress as i32),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer = JobAnswer::now(JobState::Found(Arc::new(response.clone())));
        let bytes = StoredAnswer::from(&answer).encode_to_vec();
        let back = StoredAnswer::decode_answer::<DescribeJob>(&bytes).unwrap();
        assert!(back.age() < Duration::from_secs(1));
        match back.state {
            JobState::Found(r) => assert_eq!(*r, response),
            JobState::NotFound(_) => panic!("found became not found"),
        }

        for err in [
            GatewayError::upstream("j-1", UpstreamErrorKind::Throttled, "slow down"),
            GatewayError::RateLimited {
                subject: "j-1".into(),
                operation: "DescribeJob",
                rejected: Rejected {
                    reason: RejectReason::QueueFull,
                    retry_after: Duration::from_millis(1500),
                    rate: 7.5,
                },
            },
            GatewayError::DeadlineExceeded {
                subject: "j-1".into(),
                budget: Duration::from_millis(200),
                limit: DeadlineSource::Caller,
            },
        ] {
            let back = StoredError::from_error(&err).into_error("j-1".into(), "DescribeJob");
            assert_eq!(back.code(), err.code(), "{err:?}");
            assert_eq!(back.is_out_of_time(), err.is_out_of_time(), "{err:?}");
            assert_eq!(back.to_string(), err.to_string());
        }
    }
}
