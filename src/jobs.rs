//! Domain rules for answering a job question: how long the gateway may
//! spend (the caller's deadline or its own operation timeout, whichever is
//! sooner) and how it retries inside that time.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    error::{DeadlineSource, GatewayError},
    retry::RetryPolicy,
    upstream::{JobDescription, JobQuery, JobsUpstream},
};

/// Answers job questions through an upstream.
#[derive(Clone)]
pub struct Jobs {
    upstream: Arc<dyn JobsUpstream>,
    retry: RetryPolicy,
    /// Bounds all attempts and backoffs of one question together.
    operation_timeout: Duration,
}

impl Jobs {
    /// A domain service over `upstream`.
    pub fn new(
        upstream: Arc<dyn JobsUpstream>,
        retry: RetryPolicy,
        operation_timeout: Duration,
    ) -> Self {
        Self {
            upstream,
            retry,
            operation_timeout,
        }
    }

    /// Describes one job, finishing by `caller_deadline` if there is one.
    /// When time runs out the upstream request is dropped, not left running.
    pub async fn describe(
        &self,
        query: &JobQuery,
        caller_deadline: Option<Instant>,
    ) -> Result<JobDescription, GatewayError> {
        let started = Instant::now();
        let own_deadline = started + self.operation_timeout;
        let (deadline, limit) = match caller_deadline {
            Some(d) if d < own_deadline => (d, DeadlineSource::Caller),
            _ => (own_deadline, DeadlineSource::Gateway),
        };
        let attempts = self
            .retry
            .run(deadline, || self.upstream.describe_job(query));
        match tokio::time::timeout_at(deadline, attempts).await {
            Ok(Ok(description)) => Ok(description),
            Ok(Err(source)) => Err(GatewayError::Upstream {
                job_id: query.job_id.clone(),
                source,
            }),
            Err(_elapsed) => Err(GatewayError::DeadlineExceeded {
                job_id: query.job_id.clone(),
                budget: deadline.saturating_duration_since(started),
                limit,
            }),
        }
    }
}
