//! Time and randomness as the balancer sees them, injectable for tests.

use std::{
    cell::Cell,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

/// Where the balancer reads the time: the system clock, or a manual clock a
/// test advances by hand (latency, peak-EWMA decay and ejection times all
/// follow it).
#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System(Instant),
    Manual(Arc<AtomicU64>),
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
    /// The system's monotonic clock.
    pub fn system() -> Self {
        Self(Source::System(Instant::now()))
    }

    /// A clock that stands still until [`advance`](Self::advance)d. Clones
    /// share the same time.
    pub fn manual() -> Self {
        Self(Source::Manual(Arc::new(AtomicU64::new(1))))
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(now) = &self.0 {
            now.fetch_add(nanos(by), Relaxed);
        }
    }

    /// Nanoseconds since the clock's origin, never 0 (0 means "never" in the
    /// load state).
    pub(crate) fn now(&self) -> u64 {
        match &self.0 {
            Source::System(origin) => nanos(origin.elapsed()).saturating_add(1),
            Source::Manual(now) => now.load(Relaxed),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::System(_) => f.write_str("Clock::System"),
            Source::Manual(now) => write!(f, "Clock::Manual({}ns)", now.load(Relaxed)),
        }
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
