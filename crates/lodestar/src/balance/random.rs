//! Random: a uniform choice per request.

use crate::balance::{Candidates, Context, Picker, Policy};

/// Picks a candidate uniformly at random; no shared state but the random
/// stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Random;

#[derive(Debug)]
struct RandomPicker;

// === impl Random ===

impl Policy for Random {
    fn name(&self) -> &str {
        "random"
    }

    fn picker(&self, _candidates: &Candidates) -> Box<dyn Picker> {
        Box::new(RandomPicker)
    }
}

// === impl RandomPicker ===

impl Picker for RandomPicker {
    fn pick(&self, cx: &Context<'_>) -> usize {
        cx.random(cx.len())
    }
}
