//! Round robin: each candidate in turn.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::balance::{Candidates, Context, Picker, Policy};

/// Picks each candidate in turn, in instance-id order, from a random start
/// (so clients that start together do not all begin with the same
/// instance, as grpc-go's `round_robin` does). Exact over every cycle of
/// `n` picks; one atomic increment per pick.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin;

#[derive(Debug)]
struct RoundRobinPicker {
    next: AtomicUsize,
}

// === impl RoundRobin ===

impl Policy for RoundRobin {
    fn name(&self) -> &str {
        "round_robin"
    }

    fn picker(&self, _candidates: &Candidates) -> Box<dyn Picker> {
        Box::new(RoundRobinPicker {
            next: AtomicUsize::new(rand::random::<u32>() as usize),
        })
    }
}

// === impl RoundRobinPicker ===

impl Picker for RoundRobinPicker {
    fn pick(&self, cx: &Context<'_>) -> usize {
        self.next.fetch_add(1, Relaxed) % cx.len()
    }
}
