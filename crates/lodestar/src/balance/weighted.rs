//! Smooth weighted round robin, as nginx does.
//!
//! nginx's algorithm (`ngx_http_upstream_get_peer` in
//! `src/http/ngx_http_upstream_round_robin.c`, smooth since nginx 1.3.1):
//! at every pick each peer's `current` grows by its weight, the peer with
//! the largest `current` wins (the first in order on a tie) and loses the
//! total weight. Over a cycle of `total / gcd` picks each peer is picked
//! exactly `weight / gcd` times, spread out rather than in runs: weights
//! 5, 1, 1 give `a a b a c a a`.
//!
//! nginx scans every peer per pick under a lock. Here, after `k` picks a
//! peer's `current` is `k * weight - picks * total`, so among peers of equal
//! weight the one picked least (then the first) leads: a heap per distinct
//! weight steps in O(distinct weights + log n). The whole cycle is
//! computed once per candidate set and picks read it lock-free; a cycle too
//! long to store (coprime odd weights) falls back to stepping live under a
//! per-set lock, as nginx does.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
};

use crate::balance::{Candidates, Context, Picker, Policy};

/// Longest cycle precomputed (4 MiB of indices).
const MAX_CYCLE: u64 = 1 << 20;

/// Smooth weighted round robin on the `weight` metadata; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Weighted;

#[derive(Debug)]
enum WeightedPicker {
    Cycle { order: Vec<u32>, next: AtomicUsize },
    Live(Mutex<Smooth>),
}

/// nginx's state, stepped by weight class.
#[derive(Debug)]
pub(crate) struct Smooth {
    classes: Vec<Class>,
    total: u64,
    step: u64,
}

#[derive(Debug)]
struct Class {
    weight: u64,
    /// Members by (times picked, index), least first.
    members: BinaryHeap<Reverse<(u64, u32)>>,
}

// === impl Weighted ===

impl Policy for Weighted {
    fn name(&self) -> &str {
        "weighted"
    }

    fn picker(&self, candidates: &Candidates) -> Box<dyn Picker> {
        let weights: Vec<u64> = candidates.iter().map(|c| u64::from(c.weight())).collect();
        let mut smooth = Smooth::new(&weights);
        if smooth.total > MAX_CYCLE {
            return Box::new(WeightedPicker::Live(Mutex::new(smooth)));
        }
        let order = (0..smooth.total).map(|_| smooth.next()).collect();
        Box::new(WeightedPicker::Cycle {
            order,
            next: AtomicUsize::new(0),
        })
    }
}

// === impl WeightedPicker ===

impl Picker for WeightedPicker {
    fn pick(&self, _cx: &Context<'_>) -> usize {
        match self {
            Self::Cycle { order, next } => {
                let at = next.fetch_add(1, Relaxed) % order.len().max(1);
                order.get(at).map_or(0, |&i| i as usize)
            }
            Self::Live(smooth) => {
                smooth.lock().unwrap_or_else(PoisonError::into_inner).next() as usize
            }
        }
    }
}

// === impl Smooth ===

impl Smooth {
    /// The state before the first pick, for positive `weights`. Weights are
    /// divided by their gcd: the sequence is the same, the cycle shorter.
    pub(crate) fn new(weights: &[u64]) -> Self {
        let g = weights.iter().fold(0, |g, &w| gcd(g, w.max(1))).max(1);
        let mut classes: BTreeMap<u64, Class> = BTreeMap::new();
        for (index, &w) in weights.iter().enumerate() {
            let weight = w.max(1) / g;
            let class = classes.entry(weight).or_insert_with(|| Class {
                weight,
                members: BinaryHeap::new(),
            });
            class.members.push(Reverse((0, index as u32)));
        }
        let total = weights.iter().map(|&w| w.max(1) / g).sum();
        Self {
            classes: classes.into_values().collect(),
            total,
            step: 0,
        }
    }

    /// The index of the next peer.
    pub(crate) fn next(&mut self) -> u32 {
        self.step += 1;
        let Some(class) = self.leading_class() else {
            return 0;
        };
        let class = &mut self.classes[class];
        let Some(Reverse((picks, index))) = class.members.pop() else {
            return 0;
        };
        class.members.push(Reverse((picks + 1, index)));
        index
    }

    /// The class whose leader has the largest `current`, ties to the lowest
    /// index.
    fn leading_class(&self) -> Option<usize> {
        let current = |c: &Class| {
            c.members.peek().map(|Reverse((picks, index))| {
                let value = i128::from(self.step) * i128::from(c.weight)
                    - i128::from(*picks) * i128::from(self.total);
                (value, Reverse(*index))
            })
        };
        (0..self.classes.len()).max_by_key(|&i| current(&self.classes[i]))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// nginx's loop, verbatim in spirit: the reference the fast one must match.
    fn nginx(weights: &[u64], picks: usize) -> Vec<u32> {
        let total: i64 = weights.iter().map(|&w| w as i64).sum();
        let mut current = vec![0i64; weights.len()];
        (0..picks)
            .map(|_| {
                let mut best = 0;
                for i in 0..weights.len() {
                    current[i] += weights[i] as i64;
                    if current[i] > current[best] {
                        best = i;
                    }
                }
                current[best] -= total;
                best as u32
            })
            .collect()
    }

    fn run(weights: &[u64], picks: usize) -> Vec<u32> {
        let mut smooth = Smooth::new(weights);
        (0..picks).map(|_| smooth.next()).collect()
    }

    #[test]
    fn interleaves_like_nginx() {
        assert_eq!(run(&[5, 1, 1], 7), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(run(&[100, 100, 100], 6), [0, 1, 2, 0, 1, 2]);
    }

    proptest! {
        #[test]
        fn matches_nginx_and_is_exact_over_a_cycle(
            weights in prop::collection::vec(1u64..=20, 1..12),
        ) {
            let g = weights.iter().fold(0, |g, &w| gcd(g, w));
            let cycle = (weights.iter().sum::<u64>() / g) as usize;
            let picks = run(&weights, 2 * cycle);
            prop_assert_eq!(&picks, &nginx(&weights, 2 * cycle));
            for (i, &w) in weights.iter().enumerate() {
                let n = picks[..cycle].iter().filter(|&&p| p as usize == i).count();
                prop_assert_eq!(n as u64, w / g);
            }
            prop_assert_eq!(&picks[..cycle], &picks[cycle..]);
        }
    }
}
