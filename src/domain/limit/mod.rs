//! The rate limit role: the one token bucket every AWS attempt passes, so
//! the account's DescribeJob quota is never exceeded however many clients
//! ask.
//!
//! What every implementation keeps:
//! - At most rate + burst AWS calls start in any second.
//! - A call that finds no token waits, but only if its turn can come before
//!   its deadline; otherwise it is turned away at once with a time to retry
//!   after. The number of waiting calls is bounded, and so is each caller's
//!   ([`Share::max_waiting`]).
//! - Callers take turns: while calls wait, tokens go to callers in weighted
//!   round robin ([`fair`], weights from [`Share::weight`]), each caller's
//!   calls in arrival order. However many calls one caller has waiting,
//!   another caller's call waits for about one token per caller with calls
//!   waiting, not for that backlog.
//! - When AWS throttles anyway (someone else uses the same account), the
//!   rate is lowered, and raised again while AWS stays quiet.
//! - Watch polls are background work: they take tokens no call is waiting
//!   for, plus a minimum share of the rate while calls wait, so neither side
//!   starves the other.
//!
//! [`crate::backends::local::limit`] is the bucket of one process;
//! [`crate::backends::redis::limit`] the bucket of a set of replicas, which
//! says how far the turns hold across the set.

pub mod aimd;
pub mod fair;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::time::Instant;

/// The AWS call budget.
#[async_trait]
pub trait RateLimit: Send + Sync + 'static {
    /// Takes a token, waiting for its turn among the callers (`share`
    /// says whose call it is) if that can come before `deadline`;
    /// otherwise says at once when to retry.
    async fn acquire(&self, deadline: Instant, share: &Share) -> Result<Permit, Rejected>;

    /// Takes a token for background work (watch polls), waiting as long as
    /// it takes, behind calls except for its minimum share.
    async fn acquire_background(&self) -> Permit;

    /// AWS throttled the call made with `permit`: lower the rate.
    fn throttled(&self, permit: Permit);

    /// AWS answered the call made with `permit` without throttling it.
    fn answered(&self, permit: Permit);

    /// The rate currently allowed (lower than configured while backing off).
    fn current_rate(&self) -> f64;

    /// Calls waiting for a token now.
    fn waiting(&self) -> usize;
}

/// Whose call takes a token: the caller it spends the budget of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Share {
    /// The caller (a client connection, or an identified caller).
    pub caller: Arc<str>,
    /// Its weight when several callers wait for tokens (at least 1).
    pub weight: u32,
    /// At most this many of its calls may wait for tokens at once
    /// (besides the limiter's own cap on all waiting calls).
    pub max_waiting: Option<usize>,
}

impl Share {
    /// A caller of weight 1 with no cap of its own.
    pub fn of(caller: impl Into<Arc<str>>) -> Self {
        Self {
            caller: caller.into(),
            weight: 1,
            max_waiting: None,
        }
    }
}

/// The rate, burst and queue of the limiter.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterSettings {
    /// AWS calls per second, sustained.
    pub rate: f64,
    /// Calls that may start at once after a quiet period.
    pub burst: u32,
    /// Calls that may wait for a token at the same time.
    pub max_waiters: usize,
    /// The share of the rate that watch polls keep while calls wait
    /// (0 to 1): polls otherwise only take tokens no call is waiting for.
    pub background_share: f64,
}

impl Default for LimiterSettings {
    /// AWS's published DescribeJob quota is 10 requests per second. The burst
    /// is half of that so the gateway's bucket always stays behind AWS's,
    /// even when network jitter bunches calls together on the way.
    fn default() -> Self {
        Self {
            rate: 10.0,
            burst: 5,
            max_waiters: 1000,
            background_share: 0.2,
        }
    }
}

/// Why a call got no token.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// What ran out.
    pub reason: RejectReason,
    /// When a new attempt could expect a token.
    pub retry_after: Duration,
    /// The rate the gateway was allowing AWS calls at.
    pub rate: f64,
}

/// What ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The next free token comes after the call's deadline.
    Deadline,
    /// The waiting queue is full.
    QueueFull,
    /// The caller already has its most calls waiting (its policy's
    /// `max_waiting`).
    CallerQueueFull,
}

/// A token: report what AWS answered to the call made with it.
#[derive(Debug, Clone, Copy)]
pub struct Permit {
    /// The AIMD generation the call was sent in.
    pub(crate) generation: u64,
    /// From the bucket shared by the replicas (not this process's own).
    pub(crate) shared: bool,
}
