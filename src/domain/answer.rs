//! What AWS answered about a job: the one type the cache stores, watchers
//! observe and calls are served from, with the one rule for when a job
//! has stopped changing.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    domain::error::GatewayError,
    pb,
    upstream::{JobQuery, UpstreamError},
};

/// What AWS said about a job.
#[derive(Debug, Clone)]
pub enum JobState {
    /// The job, already in its wire form (converted once, served many times).
    Found(Arc<pb::DescribeJobResponse>),
    /// AWS said there is no such job.
    NotFound(UpstreamError),
}

/// One answer from AWS about a job, and when it came.
#[derive(Debug, Clone)]
pub struct JobAnswer {
    /// What AWS said.
    pub state: JobState,
    /// When AWS answered: the answer's age, for lifetimes and `x-cache`.
    pub answered_at: Instant,
    /// When the request that got it was sent. An answer to a later request
    /// is at least as new whatever happened on the way (a paused process
    /// receives an old answer late), so answers are ordered by this.
    pub asked_at: Instant,
}

impl JobAnswer {
    /// An answer AWS gave just now to a request sent at `asked_at`.
    pub fn new(state: JobState, asked_at: Instant) -> Self {
        Self {
            state,
            answered_at: Instant::now(),
            asked_at,
        }
    }

    /// An answer AWS gave just now to a request sent just now.
    pub fn now(state: JobState) -> Self {
        Self::new(state, Instant::now())
    }

    /// Whether the job has stopped changing: COMPLETED, CANCELED, or gone.
    /// (A deleted job's id can be used again, but not for the same job.)
    pub fn is_terminal(&self) -> bool {
        use pb::job::Status;
        match &self.state {
            JobState::Found(response) => matches!(
                response.job.as_ref().map(|job| job.status()),
                Some(Status::Completed | Status::Canceled)
            ),
            JobState::NotFound(_) => true,
        }
    }

    /// How long ago AWS answered.
    pub fn age(&self) -> Duration {
        self.answered_at.elapsed()
    }

    /// The job as a caller receives it, or the caller's NOT_FOUND error.
    pub fn response(&self, query: &JobQuery) -> Result<Arc<pb::DescribeJobResponse>, GatewayError> {
        match &self.state {
            JobState::Found(response) => Ok(response.clone()),
            JobState::NotFound(err) => Err(GatewayError::Upstream {
                job_id: query.job_id.clone(),
                source: err.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamErrorKind;

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
