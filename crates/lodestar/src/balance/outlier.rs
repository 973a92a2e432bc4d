//! Outlier detection: endpoints that fail repeatedly leave the rotation for
//! a while.
//!
//! Modelled on Envoy's consecutive-5xx detector
//! (<https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier>):
//! `consecutive_failures` failures in a row eject an endpoint for
//! `base_ejection` times the number of times it was ejected (capped at
//! `max_ejection`); it then comes back on its own and is tried again. The
//! count of repeats is forgotten once an endpoint has stayed in for
//! `max_ejection`. Ejection never takes out more than `max_ejected_share` of
//! the service's instances, so a wide failure (the caller's own network)
//! cannot empty the set.

use std::{
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
    time::Duration,
};

use crate::balance::{clock::nanos, load::Load};

/// Outlier detection settings; see the [`Builder`](crate::balance::Builder).
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetection {
    consecutive_failures: u32,
    base_ejection: Duration,
    max_ejection: Duration,
    max_ejected_share: f64,
}

/// How many endpoints outlier detection holds out, against the cap.
#[derive(Debug, Default)]
pub(crate) struct Ejections {
    ejected: AtomicUsize,
    total: AtomicUsize,
}

// === impl OutlierDetection ===

impl OutlierDetection {
    /// The defaults: 5 consecutive failures eject for 30 s (growing with
    /// repeats up to 300 s), at most 50 % of the instances at once.
    pub fn new() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }

    /// Never ejects on failures (health verdicts still apply).
    pub fn disabled() -> Self {
        Self::new().consecutive_failures(0)
    }

    /// Failures in a row that eject an endpoint; 0 disables detection.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// The length of a first ejection.
    pub fn base_ejection(mut self, base: Duration) -> Self {
        self.base_ejection = base;
        self
    }

    /// The longest an ejection lasts, however often it repeats.
    pub fn max_ejection(mut self, max: Duration) -> Self {
        self.max_ejection = max;
        self
    }

    /// The largest share of instances ejected at once, from 0.0 to 1.0.
    pub fn max_ejected_share(mut self, share: f64) -> Self {
        self.max_ejected_share = if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }

    /// Records a success: the failure streak ends.
    pub(crate) fn on_success(&self, load: &Load) {
        // Read first: a store on every success would bounce the cache line
        // between threads completing calls on the same endpoint.
        if load.failures.load(Relaxed) != 0 {
            load.failures.store(0, Relaxed);
        }
    }

    /// Records a failure; true if it ejected the endpoint.
    pub(crate) fn on_failure(&self, load: &Load, ejections: &Ejections, now: u64) -> bool {
        let streak = load.failures.fetch_add(1, Relaxed).saturating_add(1);
        if self.consecutive_failures == 0 || streak < self.consecutive_failures {
            return false;
        }
        if load.ejected_until.load(Relaxed) != 0 || !ejections.reserve(self.max_ejected_share) {
            return false;
        }
        self.eject(load, ejections, now)
    }

    /// Ejects at the first failure, whatever the streak and the cap: an
    /// instance the registry no longer lists, kept by the client's
    /// self-protection ([`Instance::is_retained`](crate::Instance::is_retained)),
    /// is kept only while it answers. Still off when detection is disabled.
    pub(crate) fn on_retained_failure(&self, load: &Load, ejections: &Ejections, now: u64) -> bool {
        if self.consecutive_failures == 0 || load.ejected_until.load(Relaxed) != 0 {
            return false;
        }
        load.failures.fetch_add(1, Relaxed);
        ejections.ejected.fetch_add(1, Relaxed);
        self.eject(load, ejections, now)
    }

    /// Marks `load` ejected from now on; a slot in `ejections` is reserved.
    fn eject(&self, load: &Load, ejections: &Ejections, now: u64) -> bool {
        let until = now.saturating_add(self.ejection_length(load, now));
        if load
            .ejected_until
            .compare_exchange(0, until, Relaxed, Relaxed)
            .is_err()
        {
            ejections.release();
            return false;
        }
        load.failures.store(0, Relaxed);
        true
    }

    fn ejection_length(&self, load: &Load, now: u64) -> u64 {
        let max = nanos(self.max_ejection.max(self.base_ejection));
        let returned = load.returned_at.load(Relaxed);
        if returned != 0 && now.saturating_sub(returned) > max {
            load.ejections.store(0, Relaxed);
        }
        let times = load.ejections.fetch_add(1, Relaxed).saturating_add(1);
        nanos(self.base_ejection)
            .saturating_mul(u64::from(times))
            .min(max)
    }

    /// Brings an endpoint back if its ejection is over; true if it came back.
    pub(crate) fn expire(load: &Load, ejections: &Ejections, now: u64) -> bool {
        let until = load.ejected_until.load(Relaxed);
        if until == 0 || until > now {
            return false;
        }
        if load
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        load.returned_at.store(now, Relaxed);
        load.failures.store(0, Relaxed);
        ejections.release();
        true
    }

    /// Forgets a removed endpoint's ejection.
    pub(crate) fn retire(load: &Load, ejections: &Ejections) {
        if load.ejected_until.swap(0, Relaxed) != 0 {
            ejections.release();
        }
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Ejections ===

impl Ejections {
    /// Sets the number of instances the share applies to.
    pub(crate) fn set_total(&self, total: usize) {
        self.total.store(total, Relaxed);
    }

    /// Takes one ejection slot if the cap allows.
    fn reserve(&self, share: f64) -> bool {
        let cap = (self.total.load(Relaxed) as f64 * share).floor() as usize;
        self.ejected
            .fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1))
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .ejected
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }
}
