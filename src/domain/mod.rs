//! Domain rules for answering job questions: the cache first, then AWS
//! through the shared token bucket, with retries, all within the caller's
//! deadline (or the gateway's own operation timeout, whichever is sooner).
//!
//! One question (job id and `before_substitution`) costs at most one AWS
//! call at a time however many callers ask it: concurrent askers wait for
//! the same call, later ones get the cached answer. A batch is many
//! questions answered concurrently, duplicates asked once.
//!
//! Ownership is a tree: [`Jobs`] holds the fetcher (`fetch.rs`, the AWS exchange:
//! tokens, requests, retries, conversion), the cache, the stale answers and
//! the [`watch`]es; the watch scheduler holds the fetcher and the cache, not
//! `Jobs`. The roles are traits ([`limit`], [`cache`],
//! [`watch::ownership`]); their implementations are the backends'.

pub mod answer;
mod batch;
pub mod cache;
pub mod error;
mod fetch;
mod jobs;
pub mod limit;
pub mod metrics;
pub mod rules;
mod stale;
pub mod watch;

pub use jobs::Jobs;

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::time::Instant;

use crate::{pb, upstream::retry::RetryPolicy};
use cache::{AnswerCache, CacheSettings};
use error::GatewayError;
use limit::{LimiterSettings, RateLimit, Share};
use watch::{WatchSettings, Watches, ownership::PollOwnership};

/// Everything that shapes how [`Jobs`] protects AWS.
#[derive(Debug, Clone)]
pub struct JobsSettings {
    /// How failed AWS attempts are retried.
    pub retry: RetryPolicy,
    /// Bounds all attempts, waits and backoffs of one question together.
    pub operation_timeout: Duration,
    /// The token bucket every AWS attempt passes.
    pub limiter: LimiterSettings,
    /// How long answers are kept.
    pub cache: CacheSettings,
    /// The most items one batch may ask about.
    pub max_batch_size: usize,
    /// How watch streams poll and what they may cost.
    pub watch: WatchSettings,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            operation_timeout: Duration::from_secs(15),
            limiter: LimiterSettings::default(),
            cache: CacheSettings::default(),
            max_batch_size: 1000,
            watch: WatchSettings::default(),
        }
    }
}

/// How the gateway got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This call's own AWS request.
    Miss,
    /// Another caller's AWS request that was in flight when this call arrived.
    Coalesced,
    /// A cached answer from before this call arrived.
    Hit,
    /// An expired cached answer (`--cache-stale-if-error`,
    /// `--cache-stale-while-revalidate`).
    Stale,
}

impl Source {
    /// How the source reads in headers, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Miss => "miss",
            Source::Coalesced => "coalesced",
            Source::Stale => "stale",
        }
    }
}

/// A job as served to one call: AWS's answer and how this call got it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The job in wire form, shared with the cache.
    pub response: Arc<pb::DescribeJobResponse>,
    /// Where it came from.
    pub source: Source,
    /// How long ago AWS gave it.
    pub age: Duration,
}

/// What a call brings besides its question: its time, its wish for a
/// fresh answer, and whose share of the AWS budget it spends.
#[derive(Debug, Clone)]
pub struct Call {
    /// The caller's gRPC deadline, if it set one.
    pub deadline: Option<Instant>,
    /// Wants an answer AWS gave after the call arrived (`cache-control: no-cache`).
    pub fresh: bool,
    /// The most an answer may be past its lifetime for this call
    /// (`cache-control: max-stale=N`); `None`: whatever the stale windows
    /// allow; zero: never (as for a `fresh` call).
    pub max_stale: Option<Duration>,
    /// Whose share of the AWS budget the call spends.
    pub share: Share,
}

/// One item's result in a batch: its index and its answer.
pub type ItemResult = (usize, Result<Served, GatewayError>);

/// The roles the domain is built from. One gateway on its own keeps them
/// in-process ([`crate::backends::local::roles`]); replicas share them
/// ([`crate::backends::redis::roles`]).
pub struct Roles {
    /// The AWS call budget.
    pub limit: Arc<dyn RateLimit>,
    /// Where answers are kept.
    pub cache: Arc<dyn AnswerCache>,
    /// Who polls which watched job.
    pub polls: Arc<dyn PollOwnership>,
}

/// The roles whose state the metrics read at each scrape, held weakly: a
/// scrape after the gateway stopped reads nothing rather than keeping it
/// alive.
#[derive(Clone)]
pub struct Gauges {
    /// The AWS budget: its current rate and the calls waiting.
    pub limit: Weak<dyn RateLimit>,
    /// The answer cache: entries and their size.
    pub cache: Weak<dyn AnswerCache>,
    /// Watch streams, pollers and poll leases.
    pub watches: Weak<Watches>,
}
