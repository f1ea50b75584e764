//! Poll ownership shared by a set of replicas, in Redis.
//!
//! - **Interest.** Every replica lists the jobs watched through it in the
//!   sorted set `{prefix}:watched` (score: when the interest lapses unless
//!   renewed) and itself in `{prefix}:replicas`.
//! - **Leases.** Exactly one replica polls a watched job: the holder of
//!   `{prefix}:lease:<q>`, whose value is a fencing token (from
//!   `{prefix}:lease-seq`, always increasing) and the holder's name. Every
//!   [`CYCLE`] each replica renews its leases, gives up those nobody
//!   watches any more, and takes free ones up to its fair share (watched
//!   jobs / live replicas, rounded up; one more for a job watched through
//!   it), so the set's poll budget is spread evenly and each job is polled
//!   about every J/R seconds across the set.
//! - **Takeover.** A lease lapses [`LEASE`] after its holder stopped
//!   renewing (killed, paused, cut off); the next cycle of another replica
//!   takes it: polling resumes elsewhere within [`LEASE`] + [`CYCLE`]. A
//!   replica shutting down gives its leases up at once.
//! - **Fencing.** An answer is published only by the current holder and
//!   only if it is newer than the last published one (by token, then the
//!   holder's own request order), in one script: a paused former holder
//!   that wakes up with an old answer cannot put it over a newer one.
//! - **Fan-out.** Published answers go out on `{prefix}:observations`;
//!   every replica hands them to its own subscribers, and keeps the last one
//!   per job in `{prefix}:latest:<q>` for a new subscriber or after a
//!   reconnect (messages sent while a replica was away are lost).
//! - While Redis is unreachable, each replica polls the jobs watched through
//!   it, as a gateway on its own does.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex, OnceLock, Weak},
    time::Duration,
};

use prost::Message as _;
use redis::Script;
use tokio::{sync::Notify, time::Instant};
use tracing::{debug, info};

use crate::{
    backends::redis::{
        Shared,
        wire::{Published, StoredAnswer, StoredError},
    },
    domain::watch::{
        Observed, Watches,
        observation::{Observation, Order, Trigger},
        ownership::{MakeObservation, PollOwnership},
    },
    upstream::{DescribeJob, JobQuery, Operation as _},
};

/// How long a lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(6);
/// How often each replica renews its leases and takes free ones.
pub const CYCLE: Duration = Duration::from_secs(2);
/// How long the last published answer of a job is kept.
const LATEST_TTL: Duration = Duration::from_secs(600);

/// One replica's lease cycle. KEYS: replicas, watched, lease-seq.
/// ARGV: replica, now-or-empty, lease ms, key tag, then the count of jobs
/// watched here and their keys, then the count of leases held and their
/// (job, token) pairs. Returns the leases held afterwards, as (job, token).
const CYCLE_SCRIPT: &str = r"
local now
if ARGV[2] ~= '' then now = tonumber(ARGV[2]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local me, lease, tag = ARGV[1], tonumber(ARGV[3]), ARGV[4]
local function lease_key(q) return tag .. ':lease:' .. q end
redis.call('ZADD', KEYS[1], now + lease, me)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], lease * 10)
local i = 5
local here = {}
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('ZADD', KEYS[2], now + lease, ARGV[i]); here[ARGV[i]] = true; i = i + 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], lease * 10)
local replicas = math.max(1, redis.call('ZCARD', KEYS[1]))
local fair = math.ceil(redis.call('ZCARD', KEYS[2]) / replicas)
local mine = {}
local held = tonumber(ARGV[i]); i = i + 1
for _ = 1, held do
  local q, token = ARGV[i], ARGV[i + 1]; i = i + 2
  local k = lease_key(q)
  if redis.call('GET', k) == token .. ' ' .. me then
    if redis.call('ZSCORE', KEYS[2], q) and #mine / 2 < fair + 1 then
      redis.call('PEXPIRE', k, lease); table.insert(mine, q); table.insert(mine, token)
    else
      redis.call('DEL', k)
    end
  end
end
-- Tokens only grow: from Redis's clock (ms) if the counter is new or
-- behind it (it expired, or Redis restarted empty).
local function claim(q)
  local k = lease_key(q)
  if redis.call('EXISTS', k) == 0 then
    local token = redis.call('INCR', KEYS[3])
    if token < now then token = now; redis.call('SET', KEYS[3], token) end
    redis.call('SET', k, token .. ' ' .. me, 'PX', lease)
    table.insert(mine, q); table.insert(mine, tostring(token))
  end
end
for q, _ in pairs(here) do
  if #mine / 2 >= fair + 1 then break end
  claim(q)
end
if #mine / 2 < fair then
  for _, q in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if #mine / 2 >= fair then break end
    claim(q)
  end
end
redis.call('PEXPIRE', KEYS[3], lease * 100000)
return mine
";

/// Publishes an observation if its sender holds the lease and it is newer
/// than the last one. KEYS: the lease, the last published. ARGV: the
/// lease's value, token, seq, channel, message.
const PUBLISH_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local last = redis.call('HMGET', KEYS[2], 'token', 'seq')
if last[1] then
  local t, s = tonumber(last[1]), tonumber(last[2])
  local mt, ms = tonumber(ARGV[2]), tonumber(ARGV[3])
  if t > mt or (t == mt and s >= ms) then return 0 end
end
redis.call('HSET', KEYS[2], 'token', ARGV[2], 'seq', ARGV[3], 'msg', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

/// Gives up every lease of a replica that shuts down. KEYS: replicas.
/// ARGV: replica, key tag, then the jobs and tokens held.
const RELEASE_SCRIPT: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 3, #ARGV, 2 do
  local k = ARGV[2] .. ':lease:' .. ARGV[i]
  if redis.call('GET', k) == ARGV[i + 1] .. ' ' .. ARGV[1] then redis.call('DEL', k) end
end
return 1
";

static CYCLE_LUA: LazyLock<Script> = LazyLock::new(|| Script::new(CYCLE_SCRIPT));
static PUBLISH_LUA: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_SCRIPT));
static RELEASE_LUA: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_SCRIPT));

/// A lease this replica holds.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Its fencing token.
    token: u64,
    /// When this replica took it: answers to requests sent before are not
    /// published under it.
    since: Instant,
}

/// Pollers shared by a set of replicas.
pub struct SharedPolls {
    shared: Arc<Shared>,
    /// The leases this replica holds.
    held: Mutex<HashMap<JobQuery, Lease>>,
    /// Runs a lease cycle now (a job got its first subscriber here).
    cycle_now: Arc<Notify>,
    channel: String,
    /// The watches this replica serves (set by [`PollOwnership::start`]).
    watches: OnceLock<Weak<Watches>>,
}

impl SharedPolls {
    /// Pollers shared through `shared`.
    pub fn new(shared: Arc<Shared>) -> Arc<Self> {
        let channel = shared.keys().key("observations");
        Arc::new(Self {
            shared,
            held: Mutex::default(),
            cycle_now: Arc::new(Notify::new()),
            channel,
            watches: OnceLock::new(),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<JobQuery, Lease>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One lease cycle: renew, give up, take; tells the scheduler.
    async fn cycle(&self, watches: &Watches) {
        let keys = self.shared.keys();
        let watched = watches.watched_here();
        // A lease taken now covers requests sent from now on.
        let since = Instant::now();
        let held: Vec<(JobQuery, u64)> = self
            .held()
            .iter()
            .map(|(q, lease)| (q.clone(), lease.token))
            .collect();
        let mut invocation = CYCLE_LUA.prepare_invoke();
        invocation
            .key(keys.key("replicas"))
            .key(keys.key("watched"))
            .key(keys.key("lease-seq"))
            .arg(self.shared.replica())
            .arg("")
            .arg(LEASE.as_millis() as u64)
            .arg(keys.key("").trim_end_matches(':'))
            .arg(watched.len());
        for query in &watched {
            invocation.arg(DescribeJob::key(query));
        }
        invocation.arg(held.len());
        for (query, token) in &held {
            invocation
                .arg(DescribeJob::key(query))
                .arg(token.to_string());
        }
        let mut conn = self.shared.conn();
        let Ok(reply) = self
            .shared
            .bounded(None, invocation.invoke_async::<Vec<String>>(&mut conn))
            .await
        else {
            return;
        };
        let now: HashMap<JobQuery, u64> = reply
            .chunks(2)
            .filter_map(|pair| Some((JobQuery::from_key(&pair[0])?, pair.get(1)?.parse().ok()?)))
            .collect();
        let (taken, lost) = {
            let mut held = self.held();
            let taken: Vec<JobQuery> = now
                .iter()
                .filter(|(q, token)| held.get(*q).is_none_or(|lease| lease.token != **token))
                .map(|(q, _)| q.clone())
                .collect();
            let lost = held.keys().filter(|q| !now.contains_key(*q)).count();
            let renewed: HashMap<JobQuery, Lease> = now
                .into_iter()
                .map(|(q, token)| {
                    let since = match held.get(&q) {
                        Some(lease) if lease.token == token => lease.since,
                        _ => since,
                    };
                    (q, Lease { token, since })
                })
                .collect();
            *held = renewed;
            (taken, lost)
        };
        for query in &taken {
            debug!(job_id = %query.job_id, "took the poll lease");
            watches.adopt(query);
        }
        if !taken.is_empty() || lost > 0 {
            watches.wake();
        }
    }

    /// Hands the last published answers of `queries` to their subscribers
    /// here (one round trip).
    async fn catch_up(&self, watches: &Watches, queries: &[JobQuery]) {
        if queries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for query in queries {
            pipe.hget(self.shared.keys().of::<DescribeJob>("latest", query), "msg");
        }
        let mut conn = self.shared.conn();
        let Ok(messages) = self
            .shared
            .bounded(None, pipe.query_async::<Vec<Option<Vec<u8>>>>(&mut conn))
            .await
        else {
            return;
        };
        let epoch = self.shared.epoch();
        for message in messages.into_iter().flatten() {
            deliver(watches, &message, epoch);
        }
    }

    /// Publishes `observation` of `query` under the lease with `token`.
    async fn publish_under(
        &self,
        watches: &Watches,
        query: &JobQuery,
        token: u64,
        observation: Observation,
    ) {
        let message = Published {
            query: DescribeJob::key(query),
            token,
            seq: observation.order.seq,
            answer: match &observation.state {
                Observed::Answer(answer) => Some(StoredAnswer::from(answer.as_ref())),
                Observed::Failed(_) => None,
            },
            failed: match &observation.state {
                Observed::Failed(err) => Some(StoredError::from_error(err)),
                Observed::Answer(_) => None,
            },
            trigger: observation.trigger.code(),
        }
        .encode_to_vec();
        let keys = self.shared.keys();
        let mut invocation = PUBLISH_LUA.prepare_invoke();
        invocation
            .key(keys.of::<DescribeJob>("lease", query))
            .key(keys.of::<DescribeJob>("latest", query))
            .arg(format!("{token} {}", self.shared.replica()))
            .arg(token)
            .arg(observation.order.seq)
            .arg(&self.channel)
            .arg(message)
            .arg(LATEST_TTL.as_millis() as u64);
        let mut conn = self.shared.conn();
        match self
            .shared
            .bounded(None, invocation.invoke_async::<i64>(&mut conn))
            .await
        {
            Ok(1) => {}
            Ok(_) => debug!(
                job_id = %query.job_id,
                "not published: the poll lease moved on, or a newer answer is out"
            ),
            // Redis went away: the watchers here still get it.
            Err(_) => {
                let mut observation = observation;
                observation.order.epoch = self.shared.epoch();
                watches.deliver(query, || observation)
            }
        }
    }
}

/// Decodes a published observation and hands it to the subscribers here,
/// in this process's `epoch`.
fn deliver(watches: &Watches, message: &[u8], epoch: u64) {
    let Ok(published) = Published::decode(message) else {
        return;
    };
    let Some(query) = JobQuery::from_key(&published.query) else {
        return;
    };
    let order = Order {
        epoch,
        term: published.token,
        seq: published.seq,
    };
    let state = match (
        published
            .answer
            .and_then(StoredAnswer::answer::<DescribeJob>),
        published.failed,
    ) {
        (Some(answer), _) => Observed::Answer(Arc::new(answer)),
        (None, Some(failed)) => {
            Observed::Failed(failed.into_error(query.job_id.as_str().into(), DescribeJob::NAME))
        }
        (None, None) => return,
    };
    let trigger = Trigger::from_code(published.trigger);
    watches.deliver(&query, || Observation {
        trigger,
        ..Observation::ordered(state, Instant::now(), order)
    });
}

impl PollOwnership for Arc<SharedPolls> {
    fn leases_held(&self) -> usize {
        self.held().len()
    }

    fn start(&self, watches: Weak<Watches>) {
        let _ = self.watches.set(watches.clone());
        tokio::spawn(leases(self.clone(), watches.clone()));
        tokio::spawn(fan_out(self.clone(), watches));
    }

    fn watched(&self, query: &JobQuery) {
        // Claim it now if it is free, and give the new subscriber the
        // newest published answer.
        self.cycle_now.notify_one();
        let Some(watches) = self.watches.get().and_then(Weak::upgrade) else {
            return;
        };
        let (this, query) = (self.clone(), query.clone());
        tokio::spawn(async move { this.catch_up(&watches, &[query]).await });
    }

    fn owns(&self, query: &JobQuery, _watched_here: bool) -> bool {
        self.held().contains_key(query)
    }

    fn publish(&self, _watches: &Watches, query: &JobQuery, make: MakeObservation<'_>) {
        let Some(lease) = self.held().get(query).copied() else {
            // Not ours to publish: the holder's polls reach the watchers.
            return;
        };
        let observation = make();
        if observation.sent < lease.since {
            // Asked before this lease began: a later holder's answer may
            // already be out under an earlier token.
            return;
        }
        let token = lease.token;
        let this = self.clone();
        let query = query.clone();
        let Some(watches) = self.watches.get().and_then(Weak::upgrade) else {
            return;
        };
        tokio::spawn(async move {
            this.publish_under(&watches, &query, token, observation)
                .await;
        });
    }
}

/// The lease cycle of this replica, until shutdown; then gives its leases
/// up.
async fn leases(polls: Arc<SharedPolls>, watches: Weak<Watches>) {
    let Some(mut closing) = watches.upgrade().map(|w| w.closing()) else {
        return;
    };
    let mut mode = polls.shared.mode();
    loop {
        let Some(strong) = watches.upgrade() else {
            return;
        };
        if polls.shared.is_shared() {
            polls.cycle(&strong).await;
        } else if !polls.held().is_empty() {
            // Cut off: the leases lapse; the jobs watched here are polled here.
            polls.held().clear();
            strong.wake();
        }
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(CYCLE) => {}
            () = polls.cycle_now.notified() => {}
            _ = mode.changed() => {}
            _ = closing.wait_for(|closing| *closing) => break,
        }
    }
    let held: Vec<(JobQuery, u64)> = polls
        .held()
        .drain()
        .map(|(query, lease)| (query, lease.token))
        .collect();
    let keys = polls.shared.keys();
    let mut invocation = RELEASE_LUA.prepare_invoke();
    invocation
        .key(keys.key("replicas"))
        .arg(polls.shared.replica())
        .arg(keys.key("").trim_end_matches(':'));
    for (query, token) in &held {
        invocation
            .arg(DescribeJob::key(query))
            .arg(token.to_string());
    }
    let mut conn = polls.shared.conn();
    if polls
        .shared
        .bounded(None, invocation.invoke_async::<i64>(&mut conn))
        .await
        .is_ok()
        && !held.is_empty()
    {
        info!(
            leases = held.len(),
            "gave up the poll leases for the other replicas"
        );
    }
}

/// Hands every published observation to the subscribers here, and catches
/// up after a reconnect.
async fn fan_out(polls: Arc<SharedPolls>, watches: Weak<Watches>) {
    let mut messages = polls.shared.listen(&polls.channel).await;
    let mut resubscribed = polls.shared.resubscribed();
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    let Some(watches) = watches.upgrade() else { return };
                    deliver(&watches, &message, polls.shared.epoch());
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let Some(watches) = watches.upgrade() else { return };
                    polls.catch_up(&watches, &watches.watched_here()).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            changed = resubscribed.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(watches) = watches.upgrade() else { return };
                polls.catch_up(&watches, &watches.watched_here()).await;
            }
        }
    }
}
