//! Least request: the candidate with the fewest requests in flight among a
//! few drawn at random.
//!
//! As Envoy's `LEAST_REQUEST` and grpc-go's `least_request_experimental`
//! do: draw `choices` candidates (default 2) and take the one with the
//! fewest outstanding requests. Unlike [`P2c`](crate::balance::P2c) it
//! ignores latency. With `choices` at or above the set's size it scans every
//! candidate (O(n) per pick).

use crate::balance::{Candidates, Context, Picker, Policy};

/// Least outstanding requests among `choices` random candidates.
#[derive(Clone, Copy, Debug)]
pub struct LeastRequest {
    choices: usize,
}

#[derive(Debug)]
struct LeastRequestPicker {
    choices: usize,
}

// === impl LeastRequest ===

impl LeastRequest {
    /// Compares `choices` random candidates per pick (at least 2).
    pub fn new(choices: usize) -> Self {
        Self {
            choices: choices.max(2),
        }
    }
}

impl Default for LeastRequest {
    /// Two choices, as Envoy's default `choice_count`.
    fn default() -> Self {
        Self::new(2)
    }
}

impl Policy for LeastRequest {
    fn name(&self) -> &str {
        "least_request"
    }

    fn picker(&self, _candidates: &Candidates) -> Box<dyn Picker> {
        Box::new(LeastRequestPicker {
            choices: self.choices,
        })
    }
}

// === impl LeastRequestPicker ===

impl Picker for LeastRequestPicker {
    fn pick(&self, cx: &Context<'_>) -> usize {
        let n = cx.len();
        if n == 1 {
            0
        } else if self.choices >= n {
            scan(cx, n)
        } else if self.choices == 2 {
            let (a, b) = cx.pair();
            if cx.in_flight(b) < cx.in_flight(a) {
                b
            } else {
                a
            }
        } else {
            sample(cx, n, self.choices)
        }
    }
}

/// The least loaded of all, scanning from a random start so ties spread.
fn scan(cx: &Context<'_>, n: usize) -> usize {
    let start = cx.random(n);
    (0..n)
        .map(|i| (start + i) % n)
        .min_by_key(|&i| cx.in_flight(i))
        .unwrap_or(start)
}

/// The least loaded of `k` draws with replacement (Envoy's method).
fn sample(cx: &Context<'_>, n: usize, k: usize) -> usize {
    let first = cx.random(n);
    (1..k).fold(first, |best, _| {
        let other = cx.random(n);
        if cx.in_flight(other) < cx.in_flight(best) {
            other
        } else {
            best
        }
    })
}
