//! Per-endpoint load state: in-flight requests, a peak-EWMA latency
//! estimate, health and outlier state.
//!
//! One [`Load`] per instance id lives in the balancer's map and survives
//! updates, so a new snapshot never forgets what it learnt about the
//! endpoints that stay. Readers (the pick path) only load atomics.
//!
//! Besides the estimate, a load remembers when it was last picked: a
//! candidate not picked for the force-pick interval is picked when drawn
//! even if it costs more, and the latency of a pick after such a silence
//! replaces the estimate instead of being averaged into it (see
//! [`P2c`](crate::balance::P2c)).

use std::{
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use crate::balance::clock::nanos;

/// How latency estimates behave; see [`Load::cost`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ewma {
    /// Estimate of an endpoint never measured, in nanoseconds.
    pub(crate) default_rtt: f64,
    /// Decay window (time constant), in nanoseconds.
    pub(crate) tau: f64,
}

/// The shared state of one endpoint.
///
/// Laid out by hand: what a pick reads or writes (the estimate, the
/// in-flight count, the last pick) comes first, together; what failures
/// and health touch follows. (Aligning it to a cache line measured no
/// faster, and aligned allocations are slower to make.)
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Load {
    /// The RTT estimate in nanoseconds, as `f64` bits.
    rtt: AtomicU64,
    /// When `rtt` was last updated (clock nanoseconds).
    stamp: AtomicU64,
    tau: f64,
    /// When it was last picked (clock nanoseconds); below [`WARM_UP`], the
    /// picks so far (0: never), as clock times are larger.
    picked_at: AtomicU64,
    in_flight: AtomicU32,
    pub(crate) failures: AtomicU32,
    serving: AtomicBool,
    weight_warned: AtomicBool,
    /// Clock nanoseconds until which outlier detection ejects it; 0 if not.
    pub(crate) ejected_until: AtomicU64,
    /// Ejections so far, multiplying the next ejection's length.
    pub(crate) ejections: AtomicU32,
    /// When it last came back from an ejection.
    pub(crate) returned_at: AtomicU64,
}

// === impl Ewma ===

impl Ewma {
    pub(crate) fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self {
            default_rtt: nanos(default_rtt) as f64,
            tau: nanos(decay).max(1) as f64,
        }
    }
}

// === impl Load ===

impl Load {
    /// A fresh load at `now`, serving or not.
    pub(crate) fn new(ewma: Ewma, now: u64, serving: bool) -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            picked_at: AtomicU64::new(0),
            rtt: AtomicU64::new(ewma.default_rtt.to_bits()),
            stamp: AtomicU64::new(now),
            tau: ewma.tau,
            serving: AtomicBool::new(serving),
            weight_warned: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            returned_at: AtomicU64::new(0),
        }
    }

    /// Requests picked and not yet completed.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    pub(crate) fn finish(&self) {
        // Saturating: a stray extra finish must not wrap to 4 billion.
        let _ = self
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    /// The RTT estimate at `now`, decayed toward zero since its last update
    /// so an idle endpoint is tried again (tower's `PeakEwma`).
    pub(crate) fn rtt(&self, now: u64) -> f64 {
        let rtt = f64::from_bits(self.rtt.load(Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Relaxed)) as f64;
        rtt * (-elapsed / self.tau).exp()
    }

    /// Peak-EWMA cost: the RTT estimate times (in-flight + 1), as Finagle's
    /// `PeakEwma` and tower's `balance::p2c` with `load::PeakEwma` do.
    pub(crate) fn cost(&self, now: u64) -> f64 {
        self.rtt(now) * f64::from(self.in_flight().saturating_add(1))
    }

    /// Folds one observed latency into the estimate: a sample above the
    /// estimate replaces it at once (the "peak"), one below is averaged in
    /// with a weight that grows with the time since the last update.
    ///
    /// Lock-free: two samples completing at the same instant may overwrite
    /// each other, which loses one sample of an estimate that is an average
    /// anyway; a lock here cost more than the rest of a pick.
    pub(crate) fn observe(&self, latency: u64, now: u64) {
        let rtt = f64::from_bits(self.rtt.load(Relaxed));
        let sample = latency as f64;
        let next = if sample > rtt {
            sample
        } else {
            let elapsed = now.saturating_sub(self.stamp.load(Relaxed)) as f64;
            let decay = (-elapsed / self.tau).exp();
            rtt * decay + sample * (1.0 - decay)
        };
        self.rtt.store(next.to_bits(), Relaxed);
        self.stamp.store(now, Relaxed);
    }

    /// Replaces the estimate with one sample: the first measurement after a
    /// silence (see the module docs) says more about the endpoint now than
    /// an estimate that could not be refreshed.
    pub(crate) fn reset(&self, latency: u64, now: u64) {
        self.rtt.store((latency as f64).to_bits(), Relaxed);
        self.stamp.store(now, Relaxed);
    }

    /// Records a pick at `now`; true if it is a probe: one of the first
    /// [`WARM_UP`], or after a silence of at least `silence`. `u64::MAX`
    /// turns probes off.
    pub(crate) fn mark_picked(&self, now: u64, silence: u64) -> bool {
        if silence == u64::MAX {
            return false;
        }
        let last = self.picked_at.load(Relaxed);
        let next = if last + 1 < WARM_UP { last + 1 } else { now };
        // A plain store: two picks at once may both see the silence, which
        // costs one extra probe; an atomic swap on every pick costs more.
        self.picked_at.store(next, Relaxed);
        last < WARM_UP || now.saturating_sub(last) >= silence
    }

    /// Claims a forced pick: true if it is warming up, or was not picked for
    /// `silence` and no concurrent pick claimed it first (go-zero's
    /// `forcePick` CAS). A warm-up pick is not claimed: there are only
    /// [`WARM_UP`] of them.
    pub(crate) fn claim_overdue(&self, now: u64, silence: u64) -> bool {
        if silence == u64::MAX {
            return false;
        }
        let last = self.picked_at.load(Relaxed);
        last < WARM_UP
            || (now.saturating_sub(last) >= silence
                && self
                    .picked_at
                    .compare_exchange(last, now, Relaxed, Relaxed)
                    .is_ok())
    }

    /// Whether the health checker says it serves.
    pub(crate) fn serving(&self) -> bool {
        self.serving.load(Relaxed)
    }

    /// Records the health checker's verdict; true if it changed.
    pub(crate) fn set_serving(&self, serving: bool) -> bool {
        self.serving.swap(serving, Relaxed) != serving
    }

    /// Whether it is out of rotation at `now`, for either reason.
    pub(crate) fn ejected(&self, now: u64) -> bool {
        !self.serving() || self.ejected_until.load(Relaxed) > now
    }

    /// True the first time it is called since the weight was last valid:
    /// an invalid weight is warned about once, not on every rebuild.
    pub(crate) fn warn_weight(&self, invalid: bool) -> bool {
        if invalid {
            !self.weight_warned.swap(true, Relaxed)
        } else {
            self.weight_warned.store(false, Relaxed);
            false
        }
    }
}

/// The first picks of an endpoint are probes, and forced when drawn: the
/// first call on a new connection is slower than the rest, and a cold
/// sample alone would hold a healthy endpoint out until its next forced
/// pick. Counted in `picked_at`, below the clock's [`START`](super::clock::START).
const WARM_UP: u64 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn load() -> Load {
        Load::new(
            Ewma::new(Duration::from_millis(30), Duration::from_secs(10)),
            1,
            true,
        )
    }

    #[test]
    fn starts_from_the_default_rtt_and_counts_in_flight() {
        let load = load();
        assert_eq!(load.rtt(1), 30.0 * MS as f64);
        load.start();
        load.start();
        assert_eq!(load.cost(1), 90.0 * MS as f64);
        load.finish();
        load.finish();
        load.finish();
        assert_eq!(load.in_flight(), 0);
    }

    #[test]
    fn a_probe_replaces_the_estimate() {
        let load = load();
        load.observe(500 * MS, 1);
        load.reset(2 * MS, 1 + 1_000 * MS);
        assert_eq!(load.rtt(1 + 1_000 * MS), 2.0 * MS as f64);
    }

    #[test]
    fn the_first_picks_and_picks_after_a_silence_are_probes() {
        let load = load();
        for (at, probe) in [(10, true), (20, true), (30, true), (40, false), (50, false)] {
            assert_eq!(load.mark_picked(at, 1_000), probe, "pick at {at}");
        }
        assert!(load.mark_picked(1_050, 1_000), "after a silence");
        assert!(!load.mark_picked(1_060, 1_000));
    }

    #[test]
    fn overdue_ones_are_claimed_once() {
        let load = load();
        assert!(load.claim_overdue(5, 1_000), "never picked");
        for at in [10, 20, 30] {
            load.mark_picked(at, 1_000);
        }
        assert!(!load.claim_overdue(500, 1_000), "picked 470 ns ago");
        assert!(load.claim_overdue(1_030, 1_000));
        assert!(!load.claim_overdue(1_030, 1_000), "already claimed");
    }

    #[test]
    fn with_forced_picks_off_nothing_is_a_probe_or_overdue() {
        let load = load();
        assert!(!load.claim_overdue(5, u64::MAX));
        assert!(!load.mark_picked(10, u64::MAX));
    }

    #[test]
    fn peaks_at_once_and_decays_slowly() {
        let load = load();
        load.observe(500 * MS, 1);
        assert_eq!(load.rtt(1), 500.0 * MS as f64);
        // A fast sample right away barely moves a peak...
        load.observe(MS, 1 + MS);
        assert!(load.rtt(1 + MS) > 499.0 * MS as f64);
        // ...and an idle endpoint's estimate fades over the decay window.
        let later = 1 + MS + 20_000 * MS;
        assert!(load.rtt(later) < 70.0 * MS as f64);
    }
}
