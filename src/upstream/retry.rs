//! The gateway's retry policy for upstream calls: capped exponential backoff
//! with full jitter, only for failures that another attempt may fix, and
//! never sleeping past the deadline. The SDK's own retries are off so this
//! is the one place attempts are counted.

use std::{future::Future, time::Duration};

use tokio::time::Instant;
use tracing::debug;

use crate::upstream::UpstreamError;

/// A failure that may or may not be worth another attempt.
pub trait Retryable: std::fmt::Display {
    /// Whether another attempt may succeed.
    fn retryable(&self) -> bool;
}

impl Retryable for UpstreamError {
    fn retryable(&self) -> bool {
        self.retryable
    }
}

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; doubles each retry.
    pub base_delay: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling before retry number `retry` (1-based).
    fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Runs `attempt` until it succeeds, fails for good, runs out of
    /// attempts, or the next backoff would end after `deadline`.
    pub async fn run<T, E, F, Fut>(&self, deadline: Instant, mut attempt: F) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let err = match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.retryable() || tries >= self.max_attempts.max(1) {
                return Err(err);
            }
            let ceiling = self.ceiling(tries);
            let pause = ceiling.mul_f64(fastrand::f64());
            if Instant::now() + pause >= deadline {
                return Err(err);
            }
            debug!(attempt = tries, backoff_ms = pause.as_millis() as u64, error = %err, "retrying AWS call");
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::upstream::UpstreamErrorKind;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_up_to_the_attempt_limit() {
        let calls = AtomicU32::new(0);
        let far = Instant::now() + Duration::from_secs(60);
        let result: Result<(), UpstreamError> = policy()
            .run(far, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(UpstreamError::new(UpstreamErrorKind::Throttled))
            })
            .await;
        assert_eq!(result.unwrap_err().kind, UpstreamErrorKind::Throttled);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_permanent_failures() {
        let calls = AtomicU32::new(0);
        let far = Instant::now() + Duration::from_secs(60);
        let _: Result<(), UpstreamError> = policy()
            .run(far, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(UpstreamError::new(UpstreamErrorKind::NotFound))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_backoff_would_pass_the_deadline() {
        let calls = AtomicU32::new(0);
        let now = Instant::now();
        let _: Result<(), UpstreamError> = policy()
            .run(now, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(UpstreamError::new(UpstreamErrorKind::Unavailable))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_a_transient_failure() {
        let calls = AtomicU32::new(0);
        let far = Instant::now() + Duration::from_secs(60);
        let result: Result<_, UpstreamError> = policy()
            .run(far, || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(UpstreamError::new(UpstreamErrorKind::Unavailable))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
    }

    #[test]
    fn backoff_ceiling_doubles_and_is_capped() {
        let p = policy();
        assert_eq!(p.ceiling(1), Duration::from_millis(10));
        assert_eq!(p.ceiling(2), Duration::from_millis(20));
        assert_eq!(p.ceiling(3), Duration::from_millis(40));
        assert_eq!(p.ceiling(30), Duration::from_millis(40));
    }
}
