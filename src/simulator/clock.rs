//! Time for the simulator: the system clock, or a manual clock that tests
//! move forward so job lifecycles can be checked without sleeping.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Milliseconds since the Unix epoch, as AWS timestamps count them.
pub type EpochMillis = i64;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in epoch milliseconds.
    fn now(&self) -> EpochMillis;
}

/// The machine's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> EpochMillis {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at `start`.
    pub fn new(start: EpochMillis) -> Self {
        Self(AtomicI64::new(start))
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(super::millis(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> EpochMillis {
        self.0.load(Ordering::SeqCst)
    }
}
