//! The answer cache of a whole set of replicas, in Redis, with a small
//! in-process first tier.
//!
//! - **Second tier (Redis).** One hash per question, `{prefix}:answer:<q>`,
//!   holding the answer's protobuf and when its request was sent, with a
//!   TTL of what is left of its lifetime (status-aware, as in one process).
//!   An answer replaces a stored one only if its request was sent later (a
//!   paused replica that wakes up with an old answer cannot overwrite a
//!   newer one).
//! - **First tier (in-process).** Answers read or fetched here stay in this
//!   process for at most [`NEAR_STAY`], never past their own lifetime, so a
//!   hot job's cache hits pay no Redis round trip. That is safe: an answer
//!   served from it is never older than its TTL allows, the promise a
//!   single gateway makes; it only means another replica may already hold
//!   an answer up to [`NEAR_STAY`] newer. `cache-control: no-cache` skips
//!   both tiers.
//! - **One AWS call per cold question across the set.** A replica that
//!   misses in its first tier reads the answer or, if there is none, claims
//!   the question (`{prefix}:fetching:<q>`, renewed while it asks AWS) in
//!   the same round trip, and publishes the outcome, answer or error, on
//!   `{prefix}:answers`; replicas that find the claim taken wait for that
//!   message (their callers see `x-cache: coalesced`). If the claimant dies,
//!   its claim lapses within [`CLAIM`] and a waiter claims the question
//!   itself.
//! - **Kept past their lifetime.** With a stale window set, every answer is
//!   also written to `{prefix}:kept:<q>`, which lives as much longer as the
//!   windows keep answers about a job ("no such job": no longer than its
//!   lifetime, but it replaces the copy). A call asking for a newer answer
//!   drops only the fresh hash, so the copy still serves other calls when
//!   AWS fails. The first tier never holds an answer past its lifetime.
//! - While Redis is unreachable, an in-process cache of the usual lifetimes
//!   takes over; it keeps a copy of every answer this replica served while
//!   Redis was there, so hot jobs stay cache hits.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use async_trait::async_trait;
use prost::Message as _;
use redis::{AsyncCommands as _, Script};
use tokio::{sync::broadcast, time::Instant};

use crate::{
    backends::{
        local::cache::LocalCache,
        redis::{
            Shared, Trouble,
            wire::{Outcome, StoredAnswer, StoredError, wall_ms},
        },
    },
    domain::{
        answer::Answer,
        cache::{AnswerCache, Ask, CacheSettings, Cached, Fetch, Held, Usage},
        error::GatewayError,
    },
    upstream::{Operation, Subject},
};

/// The longest an answer stays in a replica's first tier.
pub const NEAR_STAY: Duration = Duration::from_secs(1);
/// How long a claim to ask AWS lasts unless its holder renews it.
pub const CLAIM: Duration = Duration::from_secs(2);
/// How often the holder of a claim renews it.
const RENEW: Duration = Duration::from_millis(700);

/// Reads an answer, or claims the question when there is none. KEYS: the
/// answer's hash, the claim. ARGV: the claim's value, its TTL (ms).
/// Replies {1, answer}, {2} (claimed: ask AWS) or {3} (another asks).
const LOOKUP: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3}
";

/// What a lookup found.
enum Lookup<O: Operation> {
    /// An answer, stored by some replica.
    Found(Answer<O>),
    /// No answer, and this replica now asks AWS for the set.
    Claimed,
    /// No answer; another replica is asking AWS.
    Taken,
}

/// A Lua function for the scripts that store answers: puts an answer into
/// a hash with a TTL (ms) unless the hash holds a later one.
macro_rules! put_lua {
    () => {
        r"
local function put(key, at, v, ttl)
  local old = redis.call('HGET', key, 'at')
  if old and tonumber(old) > tonumber(at) then return 0 end
  redis.call('HSET', key, 'at', at, 'v', v)
  redis.call('PEXPIRE', key, ttl)
  return 1
end
"
    };
}

/// Stores an answer unless a later one is there, and its kept copy.
/// KEYS: the answer's hash, the kept copy. ARGV: when its request was sent
/// (ms), the stored answer, its TTL (ms), the copy's TTL (ms; 0: no copy).
const STORE: &str = concat!(
    put_lua!(),
    r"
local stored = put(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if tonumber(ARGV[4]) > 0 then put(KEYS[2], ARGV[1], ARGV[2], ARGV[4]) end
return stored
"
);

/// The fresh answer, or else the kept copy. KEYS: the answer's hash, the
/// kept copy. Replies {1, answer} (fresh), {0, answer} (kept) or {}.
const PEEK: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if v then return {1, v} end
v = redis.call('HGET', KEYS[2], 'v')
if v then return {0, v} end
return {}
";

/// Ends a claim: stores the answer and its kept copy (if any, unless a
/// later one is there), gives the claim up if it is still ours, and
/// publishes the outcome. KEYS: the answer's hash, the claim, the kept
/// copy. ARGV: the claim's value, the channel, the outcome, when its
/// request was sent (ms, or empty for an error), the stored answer, its TTL
/// (ms), the copy's TTL (ms; 0: no copy).
const DONE: &str = concat!(
    put_lua!(),
    r"
if ARGV[4] ~= '' then
  put(KEYS[1], ARGV[4], ARGV[5], ARGV[6])
  if tonumber(ARGV[7]) > 0 then put(KEYS[3], ARGV[4], ARGV[5], ARGV[7]) end
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"
);

/// Drops an answer asked for before ARGV[1] (ms). KEYS[1] the answer's hash.
const FORGET: &str = r"
local at = redis.call('HGET', KEYS[1], 'at')
if at and tonumber(at) < tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end
return 1
";

static LOOKUP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LOOKUP));
static STORE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(STORE));
static PEEK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PEEK));
static DONE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DONE));
static FORGET_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FORGET));

/// Answers shared by every replica.
#[derive(Clone)]
pub struct SharedCache<O: Operation>(Arc<Inner<O>>);

struct Inner<O: Operation> {
    shared: Arc<Shared>,
    settings: CacheSettings,
    /// The first tier, in front of Redis.
    near: LocalCache<O>,
    /// The whole cache while Redis is away ([`SharedCache::alone`]), kept
    /// warm meanwhile with every answer this replica sees.
    fallback: LocalCache<O>,
    /// Where fetch outcomes are published.
    channel: String,
}

impl<O: Operation> SharedCache<O> {
    /// The shared cache of `O`'s answers with `settings`; listens for fetch
    /// outcomes.
    pub async fn new(shared: Arc<Shared>, settings: CacheSettings) -> Self {
        let channel = shared.keys().spaced::<O>("answers");
        // Subscribe now, so the first waiter does not pay for it.
        drop(shared.listen(&channel).await);
        let near = CacheSettings {
            max_bytes: settings.max_bytes / 4,
            ..settings.clone()
        };
        Self(Arc::new(Inner {
            near: LocalCache::with_longest_stay(&near, Some(NEAR_STAY)),
            fallback: LocalCache::new(&settings),
            shared,
            settings,
            channel,
        }))
    }

    /// The cache this replica uses alone while Redis is away (the
    /// [`super::failover::Failover`] stand-in).
    pub fn alone(&self) -> LocalCache<O> {
        self.0.fallback.clone()
    }
}

impl<O: Operation> Inner<O> {
    fn answer_key(&self, query: &O::Question) -> String {
        self.shared.keys().of::<O>("answer", query)
    }

    /// Where the answer's copy kept past its lifetime lives.
    fn kept_key(&self, query: &O::Question) -> String {
        self.shared.keys().of::<O>("kept", query)
    }

    /// What is left of `answer`'s lifetime, for its TTL in Redis (≥ 1 ms).
    fn ttl_ms(&self, answer: &Answer<O>) -> u64 {
        let left = self.settings.lifetime(answer).saturating_sub(answer.age());
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// What is left of `answer`'s lifetime and of the stale windows after
    /// it, for its kept copy's TTL in Redis (≥ 1 ms); 0 when the gateway
    /// keeps nothing past lifetimes.
    fn kept_ms(&self, answer: &Answer<O>) -> u64 {
        if !self.settings.keeps_stale() {
            return 0;
        }
        let left = self.settings.lifetime(answer).saturating_sub(answer.age());
        let kept = left.saturating_add(self.settings.kept_past_lifetime(answer));
        u64::try_from(kept.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// The fresh answer in Redis, or else its kept copy; one round trip.
    async fn peek_both(&self, query: &O::Question) -> Result<Option<Cached<O>>, Trouble> {
        let mut invocation = PEEK_SCRIPT.prepare_invoke();
        invocation
            .key(self.answer_key(query))
            .key(self.kept_key(query));
        let mut conn = self.shared.conn();
        let reply: Vec<redis::Value> = self
            .shared
            .bounded(None, invocation.invoke_async(&mut conn))
            .await?;
        let (fresh, bytes) = match reply.as_slice() {
            [] => return Ok(None),
            [redis::Value::Int(fresh), redis::Value::BulkString(bytes)] => (*fresh == 1, bytes),
            other => {
                return Err(Trouble::new(format!(
                    "unexpected reply from the peek script: {other:?}"
                )));
            }
        };
        let answer = StoredAnswer::decode_answer::<O>(bytes)
            .ok_or_else(|| Trouble::new("an unreadable answer in Redis"))?;
        Ok(Some(Cached {
            answer: Arc::new(answer),
            fresh,
        }))
    }

    /// The answer stored in Redis, if any.
    async fn read(&self, query: &O::Question) -> Result<Option<Answer<O>>, Trouble> {
        let mut conn = self.shared.conn();
        let key = self.answer_key(query);
        let bytes: Option<Vec<u8>> = self.shared.bounded(None, conn.hget(key, "v")).await?;
        Ok(bytes.as_deref().and_then(StoredAnswer::decode_answer::<O>))
    }

    /// A miss in the first tier: Redis, then the set's one AWS call.
    async fn through_redis(
        self: &Arc<Self>,
        query: &O::Question,
        ask: Ask<'_, '_, O>,
    ) -> Result<Arc<Answer<O>>, GatewayError> {
        // Listen before claiming, so no outcome can slip past.
        let mut outcomes = self.shared.listen(&self.channel).await;
        let claim_key = self.shared.keys().of::<O>("fetching", query);
        let claim = format!("{}:{:016x}", self.shared.replica(), fastrand::u64(..));
        loop {
            match self.lookup(query, &claim_key, &claim).await {
                Ok(Lookup::Found(answer)) => return Ok(Arc::new(answer)),
                Ok(Lookup::Claimed) => {
                    return self.fetch_for_all(query, &claim_key, &claim, ask).await;
                }
                Ok(Lookup::Taken) => {
                    if let Some(outcome) = self.wait_for(query, &mut outcomes).await {
                        return outcome;
                    }
                    // No word within a claim's life: the answer may have
                    // landed unseen, or its fetcher died. Look again.
                }
                // Redis went away: what this replica kept, or AWS.
                Err(_) => {
                    return match self.fallback.peek(query).await {
                        Some(answer) => Ok(answer),
                        None => ask().await,
                    };
                }
            }
        }
    }

    /// One round trip: the stored answer, or else the claim to ask AWS.
    async fn lookup(
        &self,
        query: &O::Question,
        claim_key: &str,
        claim: &str,
    ) -> Result<Lookup<O>, Trouble> {
        let mut invocation = LOOKUP_SCRIPT.prepare_invoke();
        invocation
            .key(self.answer_key(query))
            .key(claim_key)
            .arg(claim)
            .arg(CLAIM.as_millis() as u64);
        let mut conn = self.shared.conn();
        let reply: Vec<redis::Value> = self
            .shared
            .bounded(None, invocation.invoke_async(&mut conn))
            .await?;
        match reply.as_slice() {
            [redis::Value::Int(1), redis::Value::BulkString(bytes)] => {
                StoredAnswer::decode_answer::<O>(bytes)
                    .map(Lookup::Found)
                    .ok_or_else(|| Trouble::new("an unreadable answer in Redis"))
            }
            [redis::Value::Int(2)] => Ok(Lookup::Claimed),
            [redis::Value::Int(3)] => Ok(Lookup::Taken),
            other => Err(Trouble::new(format!(
                "unexpected reply from the lookup script: {other:?}"
            ))),
        }
    }

    /// Runs `ask`'s fetch under the claim (renewed beside it), then stores and
    /// publishes the outcome without making the caller wait for that.
    async fn fetch_for_all(
        self: &Arc<Self>,
        query: &O::Question,
        claim_key: &str,
        claim: &str,
        ask: Ask<'_, '_, O>,
    ) -> Result<Arc<Answer<O>>, GatewayError> {
        let renewal = tokio::spawn(renew(self.shared.clone(), claim_key.to_owned()));
        let mut claimed = Claimed {
            inner: self.clone(),
            query: query.clone(),
            claim_key: claim_key.to_owned(),
            claim: claim.to_owned(),
            renewal: renewal.abort_handle(),
            done: false,
        };
        let result = ask().await;
        claimed.finish(Some(&result));
        result
    }

    /// Stores `result` (an answer) and publishes it or the error, or, with
    /// no result, tells the waiters the fetch was abandoned; gives the claim
    /// up. Runs in the background.
    fn publish_outcome(
        self: &Arc<Self>,
        query: &O::Question,
        claim_key: String,
        claim: String,
        result: Option<&Result<Arc<Answer<O>>, GatewayError>>,
    ) {
        let outcome = Outcome {
            query: O::key(query),
            answer: result
                .and_then(|r| r.as_ref().ok())
                .map(|a| StoredAnswer::from(a.as_ref())),
            error: result
                .and_then(|r| r.as_ref().err())
                .map(StoredError::from_error),
        };
        let (at, stored, ttl, kept) = match result {
            Some(Ok(answer)) => (
                wall_ms(answer.asked_at).to_string(),
                StoredAnswer::from(answer.as_ref()).encode_to_vec(),
                self.ttl_ms(answer),
                self.kept_ms(answer),
            ),
            _ => (String::new(), Vec::new(), 1, 0),
        };
        let answer_key = self.answer_key(query);
        let kept_key = self.kept_key(query);
        let this = self.clone();
        // Also from a drop: only if a runtime is there to run it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut invocation = DONE_SCRIPT.prepare_invoke();
            invocation
                .key(answer_key)
                .key(claim_key)
                .key(kept_key)
                .arg(claim)
                .arg(&this.channel)
                .arg(outcome.encode_to_vec())
                .arg(at)
                .arg(stored)
                .arg(ttl)
                .arg(kept);
            let mut conn = this.shared.conn();
            let _: Result<i64, _> = this
                .shared
                .bounded(None, invocation.invoke_async(&mut conn))
                .await;
        });
    }

    /// The outcome another replica publishes for `query`, if it comes
    /// within a claim's life.
    async fn wait_for(
        &self,
        query: &O::Question,
        outcomes: &mut broadcast::Receiver<Vec<u8>>,
    ) -> Option<Result<Arc<Answer<O>>, GatewayError>> {
        let wanted = O::key(query);
        let until = Instant::now() + CLAIM;
        loop {
            let message = match tokio::time::timeout_at(until, outcomes.recv()).await {
                Ok(Ok(message)) => message,
                // Missed some messages: look in Redis instead.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => return None,
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
            };
            let Ok(outcome) = Outcome::decode(message.as_slice()) else {
                continue;
            };
            if outcome.query != wanted {
                continue;
            }
            if let Some(answer) = outcome.answer.and_then(StoredAnswer::answer::<O>) {
                return Some(Ok(Arc::new(answer)));
            }
            if let Some(error) = outcome.error {
                return Some(Err(error.into_error(Subject::of::<O>(query), O::NAME)));
            }
            // The fetch was abandoned: look again (and claim it).
            return None;
        }
    }
}

/// This replica's claim on a question while it asks AWS. If the asking is
/// abandoned (its caller went away), the waiters are told at once, so one
/// of them claims the question instead of waiting for the claim to lapse.
struct Claimed<O: Operation> {
    inner: Arc<Inner<O>>,
    query: O::Question,
    claim_key: String,
    claim: String,
    renewal: tokio::task::AbortHandle,
    done: bool,
}

impl<O: Operation> Claimed<O> {
    /// Ends the claim with `result`, or as abandoned with none.
    fn finish(&mut self, result: Option<&Result<Arc<Answer<O>>, GatewayError>>) {
        self.renewal.abort();
        self.done = true;
        let (claim_key, claim) = (self.claim_key.clone(), self.claim.clone());
        self.inner
            .publish_outcome(&self.query, claim_key, claim, result);
    }
}

impl<O: Operation> Drop for Claimed<O> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(None);
        }
    }
}

/// Keeps a claim alive while its holder asks AWS.
async fn renew(shared: Arc<Shared>, claim_key: String) {
    let mut every = tokio::time::interval_at(Instant::now() + RENEW, RENEW);
    loop {
        every.tick().await;
        let mut conn = shared.conn();
        let ttl = CLAIM.as_millis() as i64;
        let _ = shared
            .bounded(None, conn.pexpire::<_, bool>(&claim_key, ttl))
            .await;
    }
}

#[async_trait]
impl<O: Operation> Held for SharedCache<O> {
    async fn settle(&self) {
        self.0.near.settle().await;
    }

    /// The first tier; Redis's own memory is Redis's to report.
    fn usage(&self) -> Usage {
        self.0.near.usage()
    }
}

#[async_trait]
impl<O: Operation> AnswerCache<O> for SharedCache<O> {
    async fn get_or_fetch(
        &self,
        query: &O::Question,
        ask: Ask<'_, '_, O>,
    ) -> Result<Arc<Answer<O>>, Arc<GatewayError>> {
        let this = &self.0;
        let miss = move || -> Fetch<'_, O> {
            Box::pin(async move {
                let answer = this.through_redis(query, ask).await?;
                // Kept here too, so hits go on if Redis goes away.
                this.fallback.store(query, answer.clone()).await;
                Ok(answer)
            })
        };
        this.near.get_or_fetch(query, &miss).await
    }

    async fn peek(&self, query: &O::Question) -> Option<Arc<Answer<O>>> {
        let this = &self.0;
        if let Some(answer) = this.near.peek(query).await {
            return Some(answer);
        }
        this.read(query).await.ok().flatten().map(Arc::new)
    }

    /// The first tier's fresh answer, else Redis's (copied into the first
    /// tier and the fallback, as a lookup would) or its kept copy; if Redis
    /// fails to answer, what this replica kept.
    async fn cached(&self, query: &O::Question) -> Option<Cached<O>> {
        let this = &self.0;
        if let Some(answer) = this.near.peek(query).await {
            return Some(Cached {
                answer,
                fresh: true,
            });
        }
        match this.peek_both(query).await {
            Ok(Some(cached)) => {
                if cached.fresh {
                    this.near.store(query, cached.answer.clone()).await;
                    this.fallback.store(query, cached.answer.clone()).await;
                }
                Some(cached)
            }
            Ok(None) => None,
            Err(_) => this.fallback.cached(query).await,
        }
    }

    async fn store(&self, query: &O::Question, answer: Arc<Answer<O>>) {
        let this = &self.0;
        this.near.store(query, answer.clone()).await;
        this.fallback.store(query, answer.clone()).await;
        let mut invocation = STORE_SCRIPT.prepare_invoke();
        invocation
            .key(this.answer_key(query))
            .key(this.kept_key(query))
            .arg(wall_ms(answer.asked_at))
            .arg(StoredAnswer::from(answer.as_ref()).encode_to_vec())
            .arg(this.ttl_ms(&answer))
            .arg(this.kept_ms(&answer));
        let mut conn = this.shared.conn();
        let _: Result<i64, _> = this
            .shared
            .bounded(None, invocation.invoke_async(&mut conn))
            .await;
    }

    async fn forget_older_than(&self, query: &O::Question, instant: Instant) {
        let this = &self.0;
        this.near.forget_older_than(query, instant).await;
        this.fallback.forget_older_than(query, instant).await;
        let mut invocation = FORGET_SCRIPT.prepare_invoke();
        invocation.key(this.answer_key(query)).arg(wall_ms(instant));
        let mut conn = this.shared.conn();
        let _: Result<i64, _> = this
            .shared
            .bounded(None, invocation.invoke_async(&mut conn))
            .await;
    }
}
