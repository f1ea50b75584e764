//! A configuration file the gateway re-reads when it changes (tokens,
//! JWKS, policy, and the listener's certificates in [`crate::security::tls`]):
//! read at start, where a broken file stops the gateway, then checked every
//! [`RELOAD_EVERY`]. A broken replacement is logged once and the previous
//! contents kept.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use tracing::{info, warn};

/// How often the watched files are checked for new contents.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Runs `check` on `target` every [`RELOAD_EVERY`] until `target` is dropped.
pub(crate) fn every_reload<T: Send + Sync + 'static>(target: &Arc<T>, check: fn(&T)) {
    let target = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RELOAD_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(target) = target.upgrade() else {
                return;
            };
            check(&target);
        }
    });
}

/// Turns a file's bytes into its meaning, or says what is wrong.
pub type Parse<T> = fn(&[u8]) -> Result<T, String>;

/// Why a watched file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {problem}", .path.display())]
pub struct FileError {
    /// Which file it is (its flag).
    pub what: &'static str,
    /// Where.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

/// The parsed contents of a file, current as of the last good read.
pub struct Watched<T> {
    what: &'static str,
    path: PathBuf,
    parse: Parse<T>,
    /// The parsed contents and the bytes last read (good or not).
    current: RwLock<(Arc<T>, Vec<u8>)>,
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads and parses `path` (`what` names it in errors and logs).
    pub fn load(what: &'static str, path: &Path, parse: Parse<T>) -> Result<Arc<Self>, FileError> {
        let error = |problem: String| FileError {
            what,
            path: path.to_owned(),
            problem,
        };
        let bytes = std::fs::read(path).map_err(|e| error(format!("cannot be read: {e}")))?;
        let value = parse(&bytes).map_err(error)?;
        let this = Arc::new(Self {
            what,
            path: path.to_owned(),
            parse,
            current: RwLock::new((Arc::new(value), bytes)),
        });
        this.spawn_reloader();
        Ok(this)
    }

    /// The contents as of the last good read.
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn spawn_reloader(self: &Arc<Self>) {
        // Outside a runtime (unit tests of parsing) there is nothing to watch with.
        if tokio::runtime::Handle::try_current().is_ok() {
            every_reload(self, Self::reload);
        }
    }

    fn reload(&self) {
        let (what, path) = (self.what, self.path.display());
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) => {
                warn!(file = %path, error = %err, "{what} unreadable; keeping what was read before");
                return;
            }
        };
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == bytes {
            return;
        }
        let parsed = (self.parse)(&bytes);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        match parsed {
            Ok(value) => {
                *current = (Arc::new(value), bytes);
                info!(file = %path, "{what} re-read");
            }
            Err(problem) => {
                // Reported once per broken version; the good contents stay.
                current.1 = bytes;
                warn!(file = %path, error = %problem, "{what} changed but is broken; keeping what was read before");
            }
        }
    }
}
