//! Domain rules for answering job questions: the cache first, then AWS
//! through the shared token bucket, with retries, all within the caller's
//! deadline (or the gateway's own operation timeout, whichever is sooner).
//!
//! One question (job id and `before_substitution`) costs at most one AWS
//! call at a time however many callers ask it: concurrent askers wait for
//! the same call, later ones get the cached answer. A batch is many
//! questions answered concurrently, duplicates asked once.
//!
//! Every AWS operation ([`crate::upstream::Operation`]) is answered the
//! same way, by its own [`Answers`] (`answers.rs`): its fetcher (`fetch.rs`,
//! the AWS exchange: tokens, requests, retries), its cache space and its
//! stale answers, over its own bucket. Ownership is a tree: [`Jobs`] holds
//! each operation's `Answers` and the [`watch`]es; the watch scheduler holds
//! DescribeJob's fetcher and cache, not `Jobs`. The roles are traits
//! ([`limit`], [`cache`], [`watch::ownership`]); their implementations are
//! the backends', which give each operation its own ([`Backend`]).

pub mod answer;
pub(crate) mod answers;
mod batch;
pub mod cache;
pub mod error;
mod fetch;
mod jobs;
pub mod limit;
pub mod listing;
pub mod metrics;
pub mod rules;
mod stale;
pub mod watch;

pub use answers::Answers;
pub use jobs::Jobs;

use std::{
    future::Future,
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::time::Instant;

use crate::upstream::{DescribeJob, Operation, retry::RetryPolicy};
use cache::{AnswerCache, CacheSettings, Held};
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
    /// DescribeJob's token bucket, which every DescribeJob attempt passes,
    /// and every other operation's unless it has its own below.
    pub limiter: LimiterSettings,
    /// The buckets of other operations, by AWS's name of the operation
    /// ([`Operation::NAME`]): each has its own quota at AWS.
    pub operation_limiters: std::collections::BTreeMap<&'static str, LimiterSettings>,
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
            operation_limiters: Default::default(),
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

impl JobsSettings {
    /// The bucket of operation `O`.
    pub fn limiter_of<O: Operation>(&self) -> &LimiterSettings {
        self.operation_limiters
            .get(O::NAME)
            .unwrap_or(&self.limiter)
    }

    /// The cache space of one operation: the same lifetimes, and an equal
    /// share of the memory bound (`--cache-max-mib` bounds the whole cache).
    pub fn cache_of_each(&self) -> CacheSettings {
        CacheSettings {
            max_bytes: self.cache.max_bytes / CACHED_OPERATIONS,
            ..self.cache.clone()
        }
    }
}

/// How many operations keep answers: the memory bound is shared by them.
pub const CACHED_OPERATIONS: u64 = 4;

/// An answer as served to one call: AWS's answer and how this call got it.
#[derive(Debug)]
pub struct Served<O: Operation = DescribeJob> {
    /// The answer in wire form, shared with the cache.
    pub response: Arc<O::Response>,
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

impl<O: Operation> Clone for Served<O> {
    fn clone(&self) -> Self {
        Self {
            response: self.response.clone(),
            source: self.source,
            age: self.age,
        }
    }
}

/// One item's result in a batch: its index and its answer.
pub type ItemResult<O = DescribeJob> = (usize, Result<Served<O>, GatewayError>);

/// One operation's roles: its own AWS budget and its own cache space.
pub struct OperationRoles<O: Operation> {
    /// The operation's AWS call budget.
    pub limit: Arc<dyn RateLimit>,
    /// Where its answers are kept.
    pub cache: Arc<dyn AnswerCache<O>>,
}

/// Where the roles the domain is built from come from. One gateway on its
/// own keeps them in-process ([`crate::backends::local::Local`]); replicas
/// share them ([`crate::backends::redis::Replicas`]).
pub trait Backend: Send + Sync {
    /// The roles of operation `O`: a bucket with `limiter` and a cache
    /// space with `cache`, apart from every other operation's.
    fn operation<O: Operation>(
        &self,
        limiter: &LimiterSettings,
        cache: &CacheSettings,
    ) -> impl Future<Output = OperationRoles<O>> + Send;

    /// Who polls which watched job.
    fn polls(&self) -> Arc<dyn PollOwnership>;
}

/// The roles whose state the metrics read at each scrape, held weakly: a
/// scrape after the gateway stopped reads nothing rather than keeping it
/// alive.
#[derive(Clone)]
pub struct Gauges {
    /// Each operation's budget and cache space.
    pub operations: Vec<OperationGauges>,
    /// Watch streams, pollers and poll leases.
    pub watches: Weak<Watches>,
}

impl Gauges {
    /// Brings each cache's counts up to date before they are read.
    pub async fn settle(&self) {
        for operation in &self.operations {
            if let Some(cache) = operation.cache.upgrade() {
                cache.settle().await;
            }
        }
    }
}

/// One operation's roles, as [`Gauges`] reads them.
#[derive(Clone)]
pub struct OperationGauges {
    /// AWS's name of the operation, the `operation` label.
    pub operation: &'static str,
    /// Its AWS budget: the current rate and the calls waiting.
    pub limit: Weak<dyn RateLimit>,
    /// Its cache space: entries and their size.
    pub cache: Weak<dyn Held>,
}
