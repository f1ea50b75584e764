//! Bounded logging of expected refusals (and of stale answers).
//!
//! Under excess demand the gateway refuses calls on purpose (RATE_LIMITED,
//! a caller's queue full, unauthenticated callers retrying): expected
//! behaviour, not an incident, and at thousands a second one line each
//! would drown everything else. The same goes for the stale answers that
//! stand in for errors while AWS fails. Every one is counted in the
//! metrics (`grpc_server_handled_total`, `cache_answers_total`); the log
//! gets the first few of each kind (what, method and status code) per
//! interval, and then one summary line per kind and interval with how many
//! more there were.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::time::Instant;
use tonic::Code;
use tracing::info;

/// How refusals are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalLogSettings {
    /// Lines per kind of refusal and interval; more are only counted.
    pub lines: u32,
    /// The interval; zero logs every refusal.
    pub every: Duration,
}

impl Default for RefusalLogSettings {
    /// Ten lines a kind per 10 s: enough to see who is refused and why,
    /// a few hundred lines a minute at most whatever the load.
    fn default() -> Self {
        Self {
            lines: 10,
            every: Duration::from_secs(10),
        }
    }
}

/// What a bounded line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A call refused on purpose.
    Refusal,
    /// A call answered with an expired answer.
    Stale,
    /// A call its client left before the answer.
    Abandoned,
    /// A connection reset at the listener's cap.
    AtCap,
    /// A connection closed for sending nothing in time.
    Silent,
    /// A TLS handshake that failed.
    Handshake,
    /// A failed accept (out of file descriptors).
    AcceptFailed,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// What lines are bounded by: kind, method (or listener) and status code
/// (none for connections).
type Key = (Kind, &'static str, Option<Code>);

/// Decides which refusals get a line of their own.
#[derive(Debug)]
pub struct RefusalLog {
    settings: RefusalLogSettings,
    windows: Mutex<HashMap<Key, Window>>,
}

impl RefusalLog {
    /// A log with `settings`; with an interval, starts the task that writes
    /// the summaries (so it must be called within a tokio runtime).
    pub fn new(settings: RefusalLogSettings) -> Arc<Self> {
        let log = Arc::new(Self {
            settings,
            windows: Mutex::default(),
        });
        if !settings.every.is_zero() {
            tokio::spawn(summarise(Arc::downgrade(&log), settings.every));
        }
        log
    }

    /// Whether this `kind` of line for `method` with `code` gets written.
    pub fn admit(&self, kind: Kind, method: &'static str, code: Code) -> bool {
        self.admit_key((kind, method, Some(code)))
    }

    /// Whether this `kind` of line about a connection to `listener` gets
    /// written.
    pub fn admit_connection(&self, kind: Kind, listener: &'static str) -> bool {
        self.admit_key((kind, listener, None))
    }

    fn admit_key(&self, key: Key) -> bool {
        if self.settings.every.is_zero() {
            return true;
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows.entry(key).or_insert(Window {
            started: now,
            logged: 0,
            suppressed: 0,
        });
        if window.logged < self.settings.lines {
            window.logged += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }

    /// Writes a summary for each kind with refusals not logged, and starts
    /// new windows.
    fn flush(&self) {
        crate::telemetry::summarise_protocol();
        let ended: Vec<_> = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *windows).into_iter().collect()
        };
        for ((kind, method, code), window) in ended {
            if window.suppressed == 0 {
                continue;
            }
            let seconds = window.started.elapsed().as_secs_f64().round();
            let (all, not_logged) = (
                u64::from(window.logged) + window.suppressed,
                window.suppressed,
            );
            let code = code.map(|code| format!("{code:?}"));
            let code = code.as_deref();
            macro_rules! summary {
                ($count:ident, $message:literal) => {
                    info!(
                        method = code.map(|_| method),
                        listener = code.is_none().then_some(method),
                        code,
                        $count = all,
                        not_logged,
                        seconds,
                        $message
                    )
                };
            }
            match kind {
                Kind::Refusal => summary!(
                    refused,
                    "more refusals than are logged one by one; all are counted in \
                     grpc_server_handled_total"
                ),
                Kind::Stale => summary!(
                    stale,
                    "more stale answers than are logged one by one; all are counted in \
                     iot_jobs_gateway_cache_answers_total"
                ),
                Kind::Abandoned => summary!(
                    abandoned,
                    "more calls whose callers went away than are logged one by one; all are \
                     counted in grpc_server_handled_total (Canceled)"
                ),
                Kind::AtCap => summary!(
                    refused,
                    "more connections refused at the cap than are logged one by one; all are \
                     counted in iot_jobs_gateway_connections_refused_total"
                ),
                Kind::Silent => summary!(
                    closed,
                    "more silent connections closed than are logged one by one; all are \
                     counted in iot_jobs_gateway_connections_timed_out_total"
                ),
                Kind::Handshake => summary!(
                    refused,
                    "more TLS handshakes refused than are logged one by one"
                ),
                Kind::AcceptFailed => {
                    summary!(failed, "more failed accepts than are logged one by one")
                }
            }
        }
    }
}

impl Drop for RefusalLog {
    /// The last interval's summaries, at shutdown.
    fn drop(&mut self) {
        self.flush();
    }
}

async fn summarise(log: Weak<RefusalLog>, every: Duration) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tick.tick().await;
        let Some(log) = log.upgrade() else { return };
        log.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_few_lines_per_kind_and_interval_then_counts() {
        let log = RefusalLog::new(RefusalLogSettings {
            lines: 2,
            every: Duration::from_secs(10),
        });
        let limited = || log.admit(Kind::Refusal, "DescribeJob", Code::ResourceExhausted);
        assert_eq!([limited(), limited(), limited()], [true, true, false]);
        assert!(
            log.admit(Kind::Refusal, "DescribeJob", Code::Unauthenticated),
            "another kind has its own lines"
        );
        assert!(
            log.admit(Kind::Stale, "DescribeJob", Code::Ok),
            "stale answers have lines of their own"
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(limited(), "a new interval logs again");
    }

    #[tokio::test]
    async fn no_interval_logs_every_refusal() {
        let log = RefusalLog::new(RefusalLogSettings {
            lines: 0,
            every: Duration::ZERO,
        });
        assert!((0..100).all(|_| log.admit(Kind::Refusal, "DescribeJob", Code::ResourceExhausted)));
    }
}
