//! How the rate falls when AWS throttles anyway, and how it comes back.
//! Both implementations follow these rules; the shared one runs the same
//! arithmetic in its Lua script.
//!
//! - **Decrease.** A throttled call lowers the rate to [`DECREASE`] of the
//!   rate it was sent at, down to a floor. Calls sent before the last
//!   decrease do not lower it again (they belong to the same moment).
//! - **The working rate.** The first throttle after a quiet spell remembers
//!   the rate that was in use as the *working rate*: a neighbour's burst
//!   says nothing about our own rate. Throttles that follow without any
//!   call getting through in between are the same burst and keep it. A
//!   throttle after calls got through at the lowered rate says the rate
//!   itself is too high: the working rate becomes halfway between the rate
//!   the call was sent at and the decreased one (TCP CUBIC's "fast
//!   convergence").
//! - **Return.** From the decreased rate back to the working rate along a
//!   cubic curve (as the AWS SDKs' adaptive retry mode does): quickly at
//!   first, flattening as it nears the working rate, which it reaches
//!   after K = ∛((working − decreased) / C) seconds, C = [`RETURN`] × the
//!   configured rate per s³.
//! - **Probe.** Beyond the working rate the rate grows slowly, by [`PROBE`]
//!   of it per second, until it reaches the configured rate or AWS
//!   throttles again.

/// The rate after a throttle, as a fraction of the rate the call was sent at.
pub const DECREASE: f64 = 0.7;
/// The lowest rate, as a fraction of the configured one.
pub const MIN_RATE_FRACTION: f64 = 0.05;
/// How fast the rate returns to the working rate: the cubic's constant, as
/// a fraction of the configured rate per s³ (0.4/s³ at 10 calls/s, the AWS
/// SDKs' value).
pub const RETURN: f64 = 0.04;
/// How fast the rate grows beyond the working rate: this fraction of the
/// working rate per second.
pub const PROBE: f64 = 0.02;

/// A lowered rate on its way back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The rate that was working before the throttle.
    pub working: f64,
    /// The rate right after the last decrease.
    pub lowered: f64,
    /// When the last decrease happened, in seconds on the limiter's clock.
    pub since: f64,
}

impl Backoff {
    /// The rate `now` (seconds on the same clock), below `configured` or
    /// `None` once it has reached it.
    pub fn rate(&self, configured: f64, now: f64) -> Option<f64> {
        let c = RETURN * configured;
        let k = ((self.working - self.lowered).max(0.0) / c).cbrt();
        let elapsed = (now - self.since).max(0.0);
        let rate = if elapsed < k {
            self.working - c * (k - elapsed).powi(3)
        } else {
            self.working * (1.0 + PROBE * (elapsed - k))
        };
        (rate < configured).then_some(rate)
    }
}

/// The state both implementations keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    /// The configured rate.
    pub configured: f64,
    /// Set while the rate is below the configured one.
    pub backoff: Option<Backoff>,
    /// Counts decreases, so an answer can be matched to the rate its call
    /// was sent at.
    pub generation: u64,
    /// A call sent at the current generation got through.
    pub answered: bool,
}

impl Aimd {
    /// The configured rate, not backing off.
    pub fn new(configured: f64) -> Self {
        Self {
            configured,
            backoff: None,
            generation: 0,
            answered: false,
        }
    }

    /// The rate allowed `now`; clears a backoff that has run its course.
    pub fn rate(&mut self, now: f64) -> f64 {
        match self.backoff.and_then(|b| b.rate(self.configured, now)) {
            Some(rate) => rate,
            None => {
                self.backoff = None;
                self.configured
            }
        }
    }

    /// Whether the rate is below the configured one.
    pub fn backing_off(&self) -> bool {
        self.backoff.is_some()
    }

    /// A call sent at `generation` was throttled `now`: lowers the rate and
    /// returns (from, to), or `None` if an earlier throttle already covered
    /// it (or the rate is at its floor).
    pub fn throttled(&mut self, generation: u64, now: f64) -> Option<(f64, f64)> {
        if generation != self.generation {
            return None;
        }
        let from = self.rate(now);
        let to = (from * DECREASE).max(self.configured * MIN_RATE_FRACTION);
        if to >= from {
            return None;
        }
        let working = match self.backoff {
            None => from,
            Some(b) if !self.answered => b.working,
            Some(_) => (from + to) / 2.0,
        };
        self.backoff = Some(Backoff {
            working,
            lowered: to,
            since: now,
        });
        self.generation += 1;
        self.answered = false;
        Some((from, to))
    }

    /// A call sent at `generation` got an answer that was not a throttle.
    pub fn answered(&mut self, generation: u64) {
        if generation == self.generation {
            self.answered = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_throttles_returns_to_the_working_rate_within_seconds() {
        let mut aimd = Aimd::new(10.0);
        // Ten calls in a row throttled within a second, none getting
        // through between them: a neighbour's burst.
        let mut now = 0.0;
        for _ in 0..10 {
            assert!(aimd.throttled(aimd.generation, now).is_some());
            now += 0.1;
        }
        let last = aimd.backoff.unwrap();
        assert_eq!(last.working, 10.0, "the rate before the burst");
        assert!(last.lowered < 2.5, "{last:?}");
        // At most K = ∛(9.5 / 0.4) ≈ 2.87 s later it is back.
        assert!(aimd.rate(last.since + 2.0) > 9.0);
        assert_eq!(aimd.rate(last.since + 2.9), 10.0);
        assert!(!aimd.backing_off());
    }

    #[test]
    fn a_throttle_after_calls_got_through_finds_a_lower_working_rate() {
        let mut aimd = Aimd::new(20.0);
        aimd.throttled(0, 0.0);
        assert_eq!(aimd.rate(0.0), 14.0);
        let generation = aimd.generation;
        aimd.answered(generation);
        // Throttled again at 14/s although calls got through at it.
        aimd.throttled(generation, 0.0);
        let backoff = aimd.backoff.unwrap();
        assert_eq!(backoff.lowered, 14.0 * 0.7);
        assert!((backoff.working - (14.0 + 9.8) / 2.0).abs() < 1e-9);
        // Past the working rate, it grows by 2% of it per second.
        let k = ((backoff.working - backoff.lowered) / (RETURN * 20.0)).cbrt();
        let probed = aimd.rate(k + 10.0);
        assert!((probed - backoff.working * 1.2).abs() < 1e-6, "{probed}");
    }

    #[test]
    fn calls_sent_before_a_decrease_do_not_lower_the_rate_again() {
        let mut aimd = Aimd::new(10.0);
        assert_eq!(aimd.throttled(0, 0.0), Some((10.0, 7.0)));
        assert_eq!(aimd.throttled(0, 0.0), None);
        assert_eq!(aimd.rate(0.0), 7.0);
    }
}
