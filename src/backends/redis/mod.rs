//! What replicas share through Redis: one connection (commands, Lua
//! scripts and pub/sub over RESP3), the key layout, and the **mode**: shared
//! while Redis answers, in-process ("fallback") while it does not.
//!
//! - Every operation is bounded: by `--redis-timeout`, and by the caller's
//!   own deadline when that comes first. No call waits on Redis longer.
//! - The first operation that fails or times out switches the replica to
//!   fallback mode and logs one warning: each role then works in-process
//!   (the rate limit at `--redis-fallback-rate`). A probe pings Redis every
//!   second and switches back, logging it, as soon as Redis answers.
//! - Pub/sub messages sent while a replica was disconnected are lost; the
//!   roles that rely on them re-read their state when the subscription is
//!   back ([`Shared::resubscribed`]).
//! - Every key starts with `{prefix}:` — braces included, so in a Redis
//!   Cluster all of a gateway's keys would hash to one slot — and carries a
//!   TTL, so nothing accumulates.

pub mod cache;
pub mod failover;
pub mod limit;
pub mod polls;
mod roles;
pub mod wire;

pub use roles::Replicas;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncCommands as _, Client, IntoConnectionInfo, Msg, ProtocolVersion, PushInfo, PushKind,
    RedisError, RedisResult,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::{
    sync::{broadcast, mpsc, watch},
    time::Instant,
};
use tracing::{info, warn};

use crate::upstream::Operation;

/// How to reach Redis and what to do without it.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` (TLS), user and password in the URL.
    pub url: String,
    /// Starts every key, so gateways for different accounts or regions can
    /// share one Redis.
    pub key_prefix: String,
    /// The longest one Redis operation may take.
    pub timeout: Duration,
    /// AWS calls per second this replica allows itself while Redis is
    /// unreachable.
    pub fallback_rate: f64,
}

/// Whether the replica shares its roles through Redis right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redis answers: one budget, cache and set of pollers for all replicas.
    Shared,
    /// Redis does not answer: every role works in this process alone.
    Fallback,
}

/// Why a Redis operation gave no result. The replica is in fallback mode
/// afterwards unless only the caller's own deadline ran out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Redis: {0}")]
pub struct Trouble(String);

impl Trouble {
    /// Trouble described by `what`.
    pub fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

/// The names of a gateway's keys and channels.
#[derive(Debug, Clone)]
pub struct Keys {
    /// `{prefix}`, braces included.
    tag: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            tag: format!("{{{prefix}}}"),
        }
    }

    /// `{prefix}:<name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.tag)
    }

    /// `{prefix}:<name>` in `O`'s space: `{prefix}:<space>:<name>`
    /// (DescribeJob's space is the bare prefix).
    pub fn spaced<O: Operation>(&self, name: &str) -> String {
        self.in_space(O::SPACE, name)
    }

    /// `{prefix}:<space>:<name>`, or `{prefix}:<name>` in the empty space.
    pub fn in_space(&self, space: &str, name: &str) -> String {
        match space {
            "" => self.key(name),
            space => format!("{}:{space}:{name}", self.tag),
        }
    }

    /// `{prefix}:<kind>:<question>` in `O`'s space ([`Operation::key`]).
    pub fn of<O: Operation>(&self, kind: &str, question: &O::Question) -> String {
        self.spaced::<O>(&format!("{kind}:{}", O::key(question)))
    }
}

/// The connection to Redis shared by the roles of one replica.
pub struct Shared {
    conn: ConnectionManager,
    keys: Keys,
    settings: RedisSettings,
    /// This replica's name in leases and membership.
    replica: String,
    mode: watch::Sender<Mode>,
    /// Pub/sub channels this replica listens to, and their local listeners.
    channels: Mutex<HashMap<String, broadcast::Sender<Vec<u8>>>>,
    /// Counts the times the subscriptions came back after a disconnection.
    resubscribed: watch::Sender<u64>,
    /// Counts the switches between shared and fallback mode.
    epoch: AtomicU64,
    /// When a server error was last logged (ms since the Unix epoch).
    last_error_logged: AtomicU64,
    /// Operations that failed on Redis's account (for metrics).
    errors: AtomicU64,
}

impl Shared {
    /// Connects to `settings.url`, or starts in fallback mode (with a
    /// warning) if Redis does not answer yet; a URL that cannot work is an
    /// error.
    pub async fn connect(settings: &RedisSettings) -> Result<Arc<Self>, RedisError> {
        let info = settings.url.as_str().into_connection_info()?;
        let redis = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis);
        if settings.url.starts_with("rediss:") {
            // One TLS stack in the build; make it the process default.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let (pushes, received) = mpsc::unbounded_channel();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(usize::MAX)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1))
            .set_push_sender(pushes)
            .set_automatic_resubscription();
        let conn = ConnectionManager::new_lazy_with_config(Client::open(info)?, config)?;
        let shared = Arc::new(Self {
            conn,
            keys: Keys::new(&settings.key_prefix),
            settings: settings.clone(),
            replica: replica_name(),
            mode: watch::Sender::new(Mode::Shared),
            channels: Mutex::default(),
            resubscribed: watch::Sender::new(0),
            epoch: AtomicU64::new(0),
            last_error_logged: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        tokio::spawn(dispatch(Arc::downgrade(&shared), received));
        tokio::spawn(probe(Arc::downgrade(&shared)));
        let mut conn = shared.conn();
        // On failure `bounded` logs a warning and switches to fallback mode.
        if shared.bounded(None, conn.ping::<String>()).await.is_ok() {
            info!(
                redis = %redacted(&settings.url),
                replica = %shared.replica,
                "sharing the AWS budget, cache and watch polls with other replicas through Redis"
            );
        }
        Ok(shared)
    }

    /// The settings.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// A handle on the connection for one operation (cheap to clone).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Whether the roles share through Redis right now.
    pub fn is_shared(&self) -> bool {
        *self.mode.borrow() == Mode::Shared
    }

    /// The mode, to wait for changes.
    pub fn mode(&self) -> watch::Receiver<Mode> {
        self.mode.subscribe()
    }

    /// Operations that failed on Redis's account so far: errors, lost
    /// connections and timeouts (not a caller's own deadline).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Counts the switches between shared and fallback mode so far.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Changes each time the subscriptions came back after a disconnection
    /// (messages may have been missed).
    pub fn resubscribed(&self) -> watch::Receiver<u64> {
        self.resubscribed.subscribe()
    }

    /// Runs one Redis operation within `--redis-timeout` and before
    /// `deadline`. Failing, or timing out on Redis's account, switches the
    /// replica to fallback mode.
    pub async fn bounded<T>(
        &self,
        deadline: Option<Instant>,
        operation: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Trouble> {
        let own = Instant::now() + self.settings.timeout;
        let (until, callers) = match deadline {
            Some(d) if d < own => (d, true),
            _ => (own, false),
        };
        let result = tokio::time::timeout_at(until, operation).await;
        // A caller's own deadline coming first is not Redis's failure.
        let failed = match &result {
            Ok(Ok(_)) => false,
            Ok(Err(_)) => true,
            Err(_) => !callers,
        };
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            // Redis cannot be reached: work alone until it can.
            Ok(Err(err))
                if err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                    || err.is_timeout()
                    || err.is_unrecoverable_error() =>
            {
                Err(self.trouble(err.to_string()))
            }
            // Redis answered with an error (out of memory, say): this
            // operation fails, and the caller does without it.
            Ok(Err(err)) => {
                self.log_server_error(&err);
                Err(Trouble(err.to_string()))
            }
            Err(_) if callers => Err(Trouble("the call's deadline came first".into())),
            Err(_) => Err(self.trouble(format!(
                "no answer within {}",
                humantime::format_duration(self.settings.timeout)
            ))),
        }
    }

    /// Logs an error Redis answered with, at most every 10 s.
    fn log_server_error(&self, err: &RedisError) {
        let now = wire::wall_ms(Instant::now());
        let last = self.last_error_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_error_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(error = %err, "Redis answered with an error; the operation was done without it");
        }
    }

    /// Redis cannot be reached: fall back (once) and say so.
    fn trouble(&self, cause: String) -> Trouble {
        let changed = self.mode.send_if_modified(|mode| {
            let was = *mode;
            *mode = Mode::Fallback;
            was == Mode::Shared
        });
        if changed {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            warn!(
                error = %cause,
                fallback_rate_per_sec = self.settings.fallback_rate,
                "Redis is unreachable: this replica works on its own (rate limit, cache and watch \
                 polls in-process, AWS rate --redis-fallback-rate) until it is back"
            );
        }
        Trouble(cause)
    }

    /// Listens to `channel`: its messages' payloads, from now on.
    pub async fn listen(&self, channel: &str) -> broadcast::Receiver<Vec<u8>> {
        let (receiver, new) = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match channels.get(channel) {
                Some(sender) => (sender.subscribe(), false),
                None => {
                    let (sender, receiver) = broadcast::channel(4096);
                    channels.insert(channel.to_owned(), sender);
                    (receiver, true)
                }
            }
        };
        if new {
            let mut conn = self.conn();
            // If Redis is down now, the probe subscribes when it is back.
            let _ = self.bounded(None, conn.subscribe(channel)).await;
        }
        receiver
    }

    /// (Re)subscribes to every channel listened to (after fallback mode;
    /// a reconnect of the connection resubscribes by itself).
    async fn subscribe_all(&self) -> Result<(), Trouble> {
        let channels: Vec<String> = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut conn = self.conn();
        for channel in channels {
            self.bounded(None, conn.subscribe(&channel)).await?;
        }
        Ok(())
    }
}

/// Routes pub/sub messages to their local listeners, and notices when the
/// subscriptions come back after a disconnection.
async fn dispatch(shared: Weak<Shared>, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
    let mut disconnected = false;
    while let Some(push) = pushes.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match push.kind {
            PushKind::Disconnection => disconnected = true,
            PushKind::Subscribe if disconnected => {
                disconnected = false;
                shared.resubscribed.send_modify(|n| *n += 1);
            }
            PushKind::Message => {
                if let Some(msg) = Msg::from_push_info(push) {
                    let channels = shared.channels.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(sender) = channels.get(msg.get_channel_name()) {
                        let _ = sender.send(msg.get_payload_bytes().to_vec());
                    }
                }
            }
            _ => {}
        }
    }
}

/// In fallback mode, pings Redis every second and switches back to shared
/// mode as soon as it answers.
async fn probe(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let mut mode = strong.mode();
        drop(strong);
        if mode.wait_for(|m| *m == Mode::Fallback).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let mut conn = strong.conn();
        let timeout = strong.settings.timeout;
        let pong = tokio::time::timeout(timeout, conn.ping::<String>()).await;
        if matches!(pong, Ok(Ok(_))) && strong.subscribe_all().await.is_ok() {
            strong.epoch.fetch_add(1, Ordering::SeqCst);
            strong.mode.send_replace(Mode::Shared);
            // Messages sent while away were lost: state must be re-read.
            strong.resubscribed.send_modify(|n| *n += 1);
            info!("Redis is back: this replica shares its AWS budget, cache and watch polls again");
        }
    }
}

/// A name for this replica: host name, process id and a random suffix
/// (a restarted process is a new replica).
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "gateway".to_owned());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// `url` without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_job_keeps_the_bare_prefix() {
        use crate::upstream::{DescribeJob, JobQuery};
        let keys = Keys::new("iot-jobs-gateway");
        let query = JobQuery {
            job_id: "a".into(),
            before_substitution: Some(true),
        };
        assert_eq!(
            keys.of::<DescribeJob>("answer", &query),
            "{iot-jobs-gateway}:answer:a:1"
        );
        assert_eq!(
            keys.spaced::<DescribeJob>("limit"),
            "{iot-jobs-gateway}:limit"
        );
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("rediss://gw:s3cret@cache.example:6379/0"),
            "rediss://gw:***@cache.example:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
