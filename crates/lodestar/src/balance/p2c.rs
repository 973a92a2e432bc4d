//! Power of two choices over peak-EWMA load, with forced picks.
//!
//! Two distinct candidates are drawn at random and the one with the lower
//! cost wins, where cost is the peak-EWMA latency estimate times (in-flight
//! requests + 1). Drawing two avoids both the herd behaviour of "always the
//! least loaded" and the blindness of random (Mitzenmacher, "The Power of
//! Two Choices in Randomized Load Balancing", 2001); the peak-sensitive
//! estimate reacts at once to a slow endpoint and forgets it slowly (Finagle's
//! `PeakEwma`, <https://twitter.github.io/finagle/guide/Clients.html#power-of-two-choices-p2c-least-loaded>,
//! also tower's `balance::p2c` with `load::PeakEwma` and linkerd2-proxy).
//!
//! Peak-EWMA alone can starve a healthy endpoint: with calls one at a time
//! nothing is ever in flight, so the lower estimate wins every pair, and an
//! endpoint whose estimate is high after one slow early call is not tried
//! again until its estimate has decayed, tens of seconds with the default
//! 10 s window. So, as go-zero (`forcePick`, 1 s) and go-kratos
//! (`forcePick`, 3 s) do, the loser of a pair that has not been picked for
//! the force-pick interval is picked anyway, once per interval. Its latency
//! then replaces the stale estimate rather than being averaged into it
//! (kratos gets the same effect from a 600 ms decay window), so a healthy
//! endpoint is back in the running after one call, and a slow one goes
//! straight back out at the cost of one call per interval. An endpoint's
//! first three picks are such probes too, and forced when drawn: the first
//! call on a new connection is slower than the rest, and a cold sample
//! would otherwise hold a healthy endpoint out until its next forced pick.
//!
//! With calls one at a time, the preferred endpoint then changes at least
//! once per interval, so two identical endpoints share calls evenly over a
//! few intervals. A shorter interval shares sooner, but a slow endpoint
//! gets one call per interval however little traffic there is.
//!
//! The decay window, the RTT a new endpoint starts from and the force-pick
//! interval are [`Builder`](crate::balance::Builder) options.

use crate::balance::{Candidates, Context, Picker, Policy};

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

    fn picker(&self, _candidates: &Candidates) -> Box<dyn Picker> {
        Box::new(P2cPicker)
    }

    fn observes_latency(&self) -> bool {
        true
    }
}

/// Costs within this factor of each other count as equal.
const TIE: f64 = 1.25;

// === impl P2cPicker ===

impl Picker for P2cPicker {
    fn pick(&self, cx: &Context<'_>) -> usize {
        if cx.len() == 1 {
            return 0;
        }
        let (a, b) = cx.pair();
        let (cost_a, cost_b) = (cx.cost(a), cx.cost(b));
        // Costs this close are noise between equal replicas, and at low
        // concurrency nothing in flight separates them: the first drawn (a
        // random one) wins, so twins share calls instead of the one with
        // the luckier last sample taking them all.
        if cost_a.max(cost_b) <= cost_a.min(cost_b) * TIE {
            return a;
        }
        let (winner, loser) = if cost_b < cost_a { (b, a) } else { (a, b) };
        if cx.force_pick(loser) { loser } else { winner }
    }
}
