//! What AWS answered to one question of an operation: the one type the
//! cache stores, watchers observe and calls are served from, with the one
//! rule for when an answer has stopped changing.

use std::{fmt, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    domain::error::GatewayError,
    upstream::{DescribeJob, Operation, Subject, UpstreamError},
};

/// What AWS said.
pub enum State<O: Operation> {
    /// The answer, already in its wire form (converted once, served many
    /// times).
    Found(Arc<O::Response>),
    /// AWS said there is no such thing (job, execution).
    NotFound(UpstreamError),
}

/// One answer from AWS, and when it came.
pub struct Answer<O: Operation> {
    /// What AWS said.
    pub state: State<O>,
    /// When AWS answered: the answer's age, for lifetimes and `x-cache`.
    pub answered_at: Instant,
    /// When the request that got it was sent. An answer to a later request
    /// is at least as new whatever happened on the way (a paused process
    /// receives an old answer late), so answers are ordered by this.
    pub asked_at: Instant,
}

/// What AWS said about a job (DescribeJob).
pub type JobState = State<DescribeJob>;

/// One DescribeJob answer.
pub type JobAnswer = Answer<DescribeJob>;

impl<O: Operation> Answer<O> {
    /// An answer AWS gave just now to a request sent at `asked_at`.
    pub fn new(state: State<O>, asked_at: Instant) -> Self {
        Self {
            state,
            answered_at: Instant::now(),
            asked_at,
        }
    }

    /// An answer AWS gave just now to a request sent just now.
    pub fn now(state: State<O>) -> Self {
        Self::new(state, Instant::now())
    }

    /// Whether the answer has stopped changing ([`Operation::settled`]),
    /// or what it asked about is gone. (A deleted job's id can be used
    /// again, but not for the same job.)
    pub fn is_terminal(&self) -> bool {
        match &self.state {
            State::Found(response) => O::settled(response),
            State::NotFound(_) => true,
        }
    }

    /// How long ago AWS answered.
    pub fn age(&self) -> Duration {
        self.answered_at.elapsed()
    }

    /// The answer as a caller receives it, or the caller's NOT_FOUND error.
    pub fn response(&self, question: &O::Question) -> Result<Arc<O::Response>, GatewayError> {
        match &self.state {
            State::Found(response) => Ok(response.clone()),
            State::NotFound(err) => Err(GatewayError::Upstream {
                subject: Subject::of::<O>(question),
                source: Box::new(err.clone()),
            }),
        }
    }
}

impl<O: Operation> Clone for State<O> {
    fn clone(&self) -> Self {
        match self {
            Self::Found(response) => Self::Found(response.clone()),
            Self::NotFound(err) => Self::NotFound(err.clone()),
        }
    }
}

impl<O: Operation> fmt::Debug for State<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Found(response) => f.debug_tuple("Found").field(response).finish(),
            Self::NotFound(err) => f.debug_tuple("NotFound").field(err).finish(),
        }
    }
}

impl<O: Operation> Clone for Answer<O> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            answered_at: self.answered_at,
            asked_at: self.asked_at,
        }
    }
}

impl<O: Operation> fmt::Debug for Answer<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("operation", &O::NAME)
            .field("state", &self.state)
            .field("answered_at", &self.answered_at)
            .field("asked_at", &self.asked_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pb, upstream::UpstreamErrorKind};

    fn with_status(status: pb::job::Status) -> JobAnswer {
        JobAnswer::now(JobState::Found(Arc::new(pb::DescribeJobResponse {
            job: Some(pb::Job {
                status: Some(status as i32),
                ..Default::default()
            }),
            ..Default::default()
        })))
    }

    #[test]
    fn completed_canceled_and_missing_jobs_are_terminal() {
        use pb::job::Status::*;
        for (status, terminal) in [
            (InProgress, false),
            (Scheduled, false),
            (DeletionInProgress, false),
            (Completed, true),
            (Canceled, true),
        ] {
            assert_eq!(with_status(status).is_terminal(), terminal, "{status:?}");
        }
        let gone = JobState::NotFound(UpstreamError::new(UpstreamErrorKind::NotFound));
        assert!(JobAnswer::now(gone).is_terminal());
    }
}
