//! Capped exponential backoff with jitter, shared by every retry loop
//! (re-registering, following a watch, reconnecting to an instance, retrying
//! a request, replicating to a peer).
//!
//! Each loop takes one of the named policies below rather than its own
//! numbers, so the whole project backs off the same way and a policy is
//! tuned in one place:
//!
//! | policy | first delay | cap | used by |
//! | --- | --- | --- | --- |
//! | [`Backoff::registration`] | 100 ms | min(TTL, 5 s) | putting a lost registration back |
//! | [`Backoff::watch`] | 50 ms | 2 s | a watch re-listing or resuming after an error |
//! | [`Backoff::request`] | 10 ms | 500 ms | one request retried within its deadline (a dead member of a cluster) |
//! | [`Backoff::connect`] | 50 ms | 5 s | redialling an instance, re-opening its health watch |
//! | [`Backoff::replication`] | 100 ms | 5 s | a registry node sending to a peer that is down |
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

    /// Putting back a registration the registry lost: 100 ms doubling up to
    /// the TTL or 5 s, whichever is less, so a record is back within one TTL
    /// of the registry coming back.
    pub fn registration(ttl: Duration) -> Self {
        Self::new(Duration::from_millis(100), ttl.min(Duration::from_secs(5)))
    }

    /// A watch that lost its stream: 50 ms doubling up to 2 s. Short, since
    /// a watcher misses changes for as long as it waits.
    pub fn watch() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(2))
    }

    /// One request retried on another member within its own deadline: 10 ms
    /// doubling up to 500 ms.
    pub fn request() -> Self {
        Self::new(Duration::from_millis(10), Duration::from_millis(500))
    }

    /// Redialling an instance, or re-opening its health watch: 50 ms doubling
    /// up to 5 s.
    pub fn connect() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// A registry node sending writes to a peer that is down: 100 ms doubling
    /// up to 5 s.
    pub fn replication() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
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
    /// 100 ms doubling up to 5 s (the same as [`Backoff::replication`]).
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}
