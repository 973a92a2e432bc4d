//! The [`Policy`] trait every balancing algorithm implements, the view of
//! the candidates it picks from, and the built-in policies by name.

use std::{cell::Cell, fmt, str::FromStr, sync::Arc};

use crate::{
    Instance,
    balance::{
        ConsistentHash, Error, LeastRequest, P2c, Random, RoundRobin, Weighted,
        candidate::Candidate, clock::Clock, clock::Rng,
    },
};

/// A balancing algorithm. Object-safe, so users plug in their own as
/// `Arc<dyn Policy>`.
///
/// The balancer applies the route's filters first, then asks the policy for
/// a [`Picker`] over each distinct candidate set (built once per set and
/// snapshot, on the set's first pick), and the picker chooses per request.
pub trait Policy: Send + Sync + fmt::Debug + 'static {
    /// The policy's name, as in [`BuiltinPolicy`].
    fn name(&self) -> &str;

    /// Prepares to pick among `candidates` (never empty, in instance-id
    /// order). Called again whenever the set changes.
    fn picker(&self, candidates: &[Arc<Candidate>]) -> Box<dyn Picker>;

    /// Whether picks should be timed: the latency feeds the peak-EWMA
    /// estimate [`Context::cost`] reads. Policies that never read it say
    /// `false` and save a clock read per pick.
    fn observes_latency(&self) -> bool {
        false
    }
}

/// Picks one candidate per request; built by [`Policy::picker`].
pub trait Picker: Send + Sync + fmt::Debug {
    /// The index in [`Context::candidates`] of the chosen one. An index out
    /// of range is wrapped into range.
    fn pick(&self, cx: &Context<'_>) -> usize;
}

/// What a [`Picker`] sees of one request: the candidates with their live
/// load, the hash key, randomness and the time.
#[derive(Debug)]
pub struct Context<'a> {
    candidates: &'a [Arc<Candidate>],
    hash_key: Option<&'a str>,
    rng: &'a Rng,
    clock: &'a Clock,
    now: Cell<u64>,
}

/// The policies lodestar ships, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuiltinPolicy {
    /// [`RoundRobin`]: `round_robin`.
    RoundRobin,
    /// [`Random`]: `random`.
    Random,
    /// [`Weighted`]: `weighted`.
    Weighted,
    /// [`P2c`]: `p2c`.
    P2c,
    /// [`LeastRequest`]: `least_request`.
    LeastRequest,
    /// [`ConsistentHash`]: `consistent_hash`.
    ConsistentHash,
}

// === impl Context ===

impl<'a> Context<'a> {
    pub(crate) fn new(
        candidates: &'a [Arc<Candidate>],
        hash_key: Option<&'a str>,
        rng: &'a Rng,
        clock: &'a Clock,
    ) -> Self {
        Self {
            candidates,
            hash_key,
            rng,
            clock,
            now: Cell::new(0),
        }
    }

    /// The candidates, never empty.
    pub fn candidates(&self) -> &'a [Arc<Candidate>] {
        self.candidates
    }

    /// The number of candidates, at least 1.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// Always false: a picker is never asked to pick from nothing.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The instance at `index`.
    pub fn instance(&self, index: usize) -> &'a Instance {
        self.candidates[index].instance()
    }

    /// The request's hash key, if it has one.
    pub fn hash_key(&self) -> Option<&'a str> {
        self.hash_key
    }

    /// A uniform random number in `0..bound`; `bound` must be positive.
    pub fn random(&self, bound: usize) -> usize {
        self.rng.below(bound)
    }

    /// A random 64-bit number.
    pub fn random_u64(&self) -> u64 {
        self.rng.next_u64()
    }

    /// The peak-EWMA cost of the candidate at `index`: its latency estimate
    /// (decayed since last measured, the default RTT if never measured)
    /// times its in-flight requests plus one. Lower is better.
    pub fn cost(&self, index: usize) -> f64 {
        self.candidates[index].load.cost(self.now())
    }

    /// Requests picked on the candidate at `index` and not yet completed.
    pub fn in_flight(&self, index: usize) -> u32 {
        self.candidates[index].load.in_flight()
    }

    /// The time, read once per request.
    pub(crate) fn now(&self) -> u64 {
        if self.now.get() == 0 {
            self.now.set(self.clock.now());
        }
        self.now.get()
    }
}

// === impl BuiltinPolicy ===

impl BuiltinPolicy {
    /// Every built-in policy.
    pub const ALL: [BuiltinPolicy; 6] = [
        Self::RoundRobin,
        Self::Random,
        Self::Weighted,
        Self::P2c,
        Self::LeastRequest,
        Self::ConsistentHash,
    ];

    /// Its name: `round_robin`, `random`, `weighted`, `p2c`,
    /// `least_request` or `consistent_hash`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
            Self::Weighted => "weighted",
            Self::P2c => "p2c",
            Self::LeastRequest => "least_request",
            Self::ConsistentHash => "consistent_hash",
        }
    }

    /// The names of all built-in policies, comma-separated.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// The policy with its default settings.
    pub fn policy(self) -> Arc<dyn Policy> {
        match self {
            Self::RoundRobin => Arc::new(RoundRobin),
            Self::Random => Arc::new(Random),
            Self::Weighted => Arc::new(Weighted),
            Self::P2c => Arc::new(P2c),
            Self::LeastRequest => Arc::new(LeastRequest::default()),
            Self::ConsistentHash => Arc::new(ConsistentHash),
        }
    }
}

impl FromStr for BuiltinPolicy {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name.trim())
            .ok_or_else(|| Error::UnknownPolicy {
                name: name.to_string(),
            })
    }
}

impl fmt::Display for BuiltinPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for policy in BuiltinPolicy::ALL {
            assert_eq!(policy.name().parse::<BuiltinPolicy>(), Ok(policy));
            assert_eq!(policy.policy().name(), policy.name());
        }
    }

    #[test]
    fn a_bad_name_lists_the_valid_ones() {
        let err = "p3c".parse::<BuiltinPolicy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown balancing policy \"p3c\" (expected one of: round_robin, random, \
             weighted, p2c, least_request, consistent_hash)"
        );
    }
}
