//! Power of two choices over peak-EWMA load.
//!
//! Two distinct candidates are drawn at random and the one with the lower
//! cost wins, where cost is the peak-EWMA latency estimate times (in-flight
//! requests + 1). Drawing two avoids both the herd behaviour of "always the
//! least loaded" and the blindness of random (Mitzenmacher, "The Power of
//! Two Choices in Randomized Load Balancing", 2001); the peak-sensitive
//! estimate reacts at once to a slow endpoint and forgets it slowly (Finagle's
//! `PeakEwma`, <https://twitter.github.io/finagle/guide/Clients.html#power-of-two-choices-p2c-least-loaded>,
//! also tower's `balance::p2c` with `load::PeakEwma` and linkerd2-proxy).
//! The decay window and the RTT a new endpoint starts from are
//! [`Builder`](crate::balance::Builder) options.

use std::sync::Arc;

use crate::balance::{Candidate, Context, Picker, Policy};

/// Power of two choices over peak-EWMA load; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct P2c;

#[derive(Debug)]
struct P2cPicker;

// === impl P2c ===

impl Policy for P2c {
    fn name(&self) -> &str {
        "p2c"
    }

    fn picker(&self, _candidates: &[Arc<Candidate>]) -> Box<dyn Picker> {
        Box::new(P2cPicker)
    }

    fn observes_latency(&self) -> bool {
        true
    }
}

// === impl P2cPicker ===

impl Picker for P2cPicker {
    fn pick(&self, cx: &Context<'_>) -> usize {
        let n = cx.len();
        if n == 1 {
            return 0;
        }
        let (a, b) = distinct_pair(cx, n);
        if cx.cost(b) < cx.cost(a) { b } else { a }
    }
}

/// Two distinct uniform indices in `0..n` (`n >= 2`).
pub(crate) fn distinct_pair(cx: &Context<'_>, n: usize) -> (usize, usize) {
    let a = cx.random(n);
    let b = cx.random(n - 1);
    (a, if b >= a { b + 1 } else { b })
}
