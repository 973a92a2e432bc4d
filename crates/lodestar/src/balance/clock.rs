//! Time and randomness as the balancer sees them.
//!
//! The clock is tokio's ([`tokio::time::Instant`]): in a runtime whose time
//! is paused (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`)
//! latency, peak-EWMA decay, ejection and force-pick times all follow the
//! paused clock, so tests of them are deterministic. Outside a runtime, or
//! with time running, it is the system's monotonic clock (tokio reads
//! `std::time::Instant` unless some runtime ever paused time).

use std::{
    cell::Cell,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::time::Instant;

/// The clock's first reading: smaller values are free to mean something
/// else in the load state (0 is "never", a few more count warm-up picks).
pub(crate) const START: u64 = 1 << 10;

/// Nanoseconds since the balancer was built, on tokio's clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
}

/// A lock-free random stream: SplitMix64 (Steele, Lea and Flood, "Fast
/// splittable pseudorandom number generators", OOPSLA 2014). Unseeded, each
/// thread steps its own state, so pickers on different cores share no cache
/// line; seeded, one atomic state is shared, deterministic in a single
/// thread, which the tests rely on.
#[derive(Debug)]
pub(crate) enum Rng {
    Seeded(AtomicU64),
    PerThread,
}

thread_local! {
    static THREAD_STATE: Cell<u64> = Cell::new(rand::random());
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

// === impl Clock ===

impl Clock {
    /// A clock whose origin is now.
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the origin, plus [`START`].
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.origin)).saturating_add(START)
    }
}

/// A duration in nanoseconds, saturating (584 years is plenty).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// === impl Rng ===

impl Rng {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        seed.map_or(Self::PerThread, |seed| Self::Seeded(AtomicU64::new(seed)))
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = match self {
            Self::Seeded(state) => state.fetch_add(GOLDEN_GAMMA, Relaxed),
            Self::PerThread => THREAD_STATE.with(|state| {
                let z = state.get();
                state.set(z.wrapping_add(GOLDEN_GAMMA));
                z
            }),
        }
        .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`), by Lemire's multiply-shift,
    /// whose bias is below 2^-32 for any set a balancer sees.
    pub(crate) fn below(&self, bound: usize) -> usize {
        let wide = u128::from(self.next_u64()) * bound as u128;
        (wide >> 64) as usize
    }
}
