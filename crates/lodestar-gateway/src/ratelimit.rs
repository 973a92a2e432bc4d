//! Per-route rate limiting: a token bucket (refilled continuously, a burst
//! up to its size); a request that finds it empty is answered 429 with
//! `retry-after`.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// A token bucket; see the [module docs](self).
#[derive(Debug)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `per_sec`.
    pub fn new(per_sec: f64, burst: f64) -> Self {
        Self {
            per_sec,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token; `Err(wait)` when empty, `wait` being when the next
    /// one is due.
    pub fn acquire(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.per_sec).min(self.burst);
        state.1 = now;
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - state.0) / self.per_sec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_refill_rate() {
        let bucket = TokenBucket::new(2.0, 3.0);
        for _ in 0..3 {
            assert!(bucket.acquire().is_ok());
        }
        let wait = bucket.acquire().unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.acquire().is_ok());
        assert!(bucket.acquire().is_err());
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert!(bucket.acquire().is_ok());
        }
        assert!(bucket.acquire().is_err());
    }
}
