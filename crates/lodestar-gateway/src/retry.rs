//! Retry rules: what may be tried again and the budget that bounds status
//! and timeout retries.
//!
//! - A request that was never sent (the connection was refused, or it
//!   failed before its body was read) goes to another instance whatever its
//!   method: the backend never saw it. These retries are free of the budget
//!   (they add no load to the service).
//! - An idempotent request (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`,
//!   `TRACE`) whose body can be sent again (empty, or not read yet) is also
//!   retried on a configured status, on a per-try timeout, or on a
//!   connection that broke after it was written; each such retry takes a
//!   token from the route's [`Budget`] (Finagle's retry budget: a share of
//!   the requests plus a floor per second), so a sick service is not
//!   hammered by retries.

use std::sync::Mutex;

use http::Method;
use tokio::time::Instant;

/// The most tokens a budget holds, so a quiet spell does not store up a
/// retry storm.
const MAX_TOKENS: f64 = 100.0;

/// A retry budget; see the [module docs](self).
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    min_per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

/// Whether `method` is idempotent (RFC 9110 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

// === impl Budget ===

impl Budget {
    /// A budget allowing `ratio` retries per request plus `min_per_sec`.
    pub fn new(ratio: f64, min_per_sec: f64) -> Self {
        Self {
            ratio,
            min_per_sec,
            state: Mutex::new((min_per_sec.min(MAX_TOKENS), Instant::now())),
        }
    }

    /// Counts a request (deposits its share).
    pub fn deposit(&self) {
        let mut state = self.lock();
        state.0 = (state.0 + self.ratio).min(MAX_TOKENS);
    }

    /// Takes a retry's token if there is one.
    pub fn withdraw(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.min_per_sec).min(MAX_TOKENS);
        state.1 = now;
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_a_share_of_requests_plus_a_floor() {
        let budget = Budget::new(0.5, 0.0);
        assert!(!budget.withdraw());
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw());

        let floor = Budget::new(0.0, 2.0);
        assert!(floor.withdraw());
        assert!(floor.withdraw());
        assert!(!floor.withdraw());
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert!(floor.withdraw());
        assert!(!floor.withdraw());
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
