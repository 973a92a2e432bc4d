//! Capped exponential backoff with jitter, shared by the backends' retry
//! loops (re-registering, reconnecting a watch).
//!
//! Each delay is drawn uniformly from the upper half of the current window
//! ("equal jitter"): never near zero, so a flapping registry is not hammered,
//! and spread out, so a thousand clients that lost the same registry do not
//! come back in lock-step.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lodestar::backoff::Backoff;
//!
//! let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
//! let first = backoff.next_delay();
//! assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
//! for _ in 0..20 {
//!     assert!(backoff.next_delay() <= Duration::from_secs(5));
//! }
//! backoff.reset();
//! assert!(backoff.next_delay() <= Duration::from_millis(100));
//! ```

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start at `base` and double up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The number of delays handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let window = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = window / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Starts again from `base`, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 5 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}
