//! What a [`Picker`](crate::balance::Picker) sees of one request: the
//! candidates with their live load, the hash key, randomness, the time, and
//! the shared draws (a random pair, a forced pick) more than one policy
//! uses.

use std::{cell::Cell, sync::Arc};

use crate::{
    Instance,
    balance::{
        Candidate, Candidates,
        clock::{Clock, Rng},
    },
};

/// The view of one request a [`Picker`](crate::balance::Picker) picks with.
#[derive(Debug)]
pub struct Context<'a> {
    candidates: &'a Candidates,
    /// The same, as one slice when they fit one chunk: looked up once per
    /// request rather than on every access.
    flat: Option<&'a [Arc<Candidate>]>,
    len: usize,
    hash_key: Option<&'a str>,
    rng: &'a Rng,
    clock: &'a Clock,
    /// The force-pick interval, clock nanoseconds.
    force_after: u64,
    now: Cell<u64>,
    /// The index [`Context::force_pick`] claimed, if any.
    forced: Cell<Option<usize>>,
}

/// The parts of a [`Context`] that outlive one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Env<'a> {
    pub(crate) rng: &'a Rng,
    pub(crate) clock: &'a Clock,
    pub(crate) force_after: u64,
}

// === impl Context ===

impl<'a> Context<'a> {
    pub(crate) fn new(candidates: &'a Candidates, hash_key: Option<&'a str>, env: Env<'a>) -> Self {
        Self {
            candidates,
            flat: candidates.as_slice(),
            len: candidates.len(),
            hash_key,
            rng: env.rng,
            clock: env.clock,
            force_after: env.force_after,
            now: Cell::new(0),
            forced: Cell::new(None),
        }
    }

    /// The candidates, never empty, in instance-id order.
    pub fn candidates(&self) -> &'a Candidates {
        self.candidates
    }

    /// The number of candidates, at least 1.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a picker is never asked to pick from nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The candidate at `index`; panics when out of range.
    #[inline]
    pub fn candidate(&self, index: usize) -> &'a Candidate {
        self.shared(index)
    }

    /// The candidate at `index`, shared; panics when out of range.
    #[inline]
    pub(crate) fn shared(&self, index: usize) -> &'a Arc<Candidate> {
        match self.flat {
            Some(flat) => &flat[index],
            None => &self.candidates[index],
        }
    }

    /// The instance at `index`; panics when out of range.
    pub fn instance(&self, index: usize) -> &'a Instance {
        self.candidate(index).instance()
    }

    /// The request's hash key, if it has one.
    pub fn hash_key(&self) -> Option<&'a str> {
        self.hash_key
    }

    /// A uniform random number in `0..bound`; `bound` must be positive.
    #[inline]
    pub fn random(&self, bound: usize) -> usize {
        self.rng.below(bound)
    }

    /// A random 64-bit number.
    pub fn random_u64(&self) -> u64 {
        self.rng.next_u64()
    }

    /// Two distinct uniform random indices, for the "power of two choices"
    /// policies (Mitzenmacher, "The Power of Two Choices in Randomized Load
    /// Balancing", 2001); `(0, 0)` when there is a single candidate.
    #[inline]
    pub fn pair(&self) -> (usize, usize) {
        let n = self.len();
        if n < 2 {
            return (0, 0);
        }
        let a = self.random(n);
        let b = self.random(n - 1);
        (a, if b >= a { b + 1 } else { b })
    }

    /// The peak-EWMA cost of the candidate at `index`: its latency estimate
    /// (decayed since last measured, the default RTT if never measured)
    /// times its in-flight requests plus one. Lower is better.
    #[inline]
    pub fn cost(&self, index: usize) -> f64 {
        self.candidate(index).load.cost(self.now())
    }

    /// Requests picked on the candidate at `index` and not yet completed.
    #[inline]
    pub fn in_flight(&self, index: usize) -> u32 {
        self.candidate(index).load.in_flight()
    }

    /// Whether the candidate at `index` is due a forced pick: it has not been
    /// picked for the balancer's force-pick interval
    /// ([`Builder::force_pick`](crate::balance::Builder::force_pick)), or is
    /// within its first few picks. A `true` claims it, so concurrent picks do not all force it
    /// (go-zero's `forcePick`, kratos' `forcePick`); the picker should then
    /// return `index`. Pick times are recorded for policies that
    /// [observe latency](crate::balance::Policy::observes_latency).
    #[inline]
    pub fn force_pick(&self, index: usize) -> bool {
        let claimed = self
            .candidate(index)
            .load
            .claim_overdue(self.now(), self.force_after);
        if claimed {
            self.forced.set(Some(index));
        }
        claimed
    }

    /// The index a [`force_pick`](Self::force_pick) claimed.
    pub(crate) fn forced(&self) -> Option<usize> {
        self.forced.get()
    }

    /// The time, read once per request.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        if self.now.get() == 0 {
            self.now.set(self.clock.now());
        }
        self.now.get()
    }
}
