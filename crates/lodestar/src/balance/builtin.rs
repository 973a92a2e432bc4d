//! The policies lodestar ships, by name: what a configuration string or a
//! command-line flag selects.

use std::{fmt, str::FromStr, sync::Arc};

use crate::balance::{
    ConsistentHash, Error, LeastRequest, P2c, Policy, Random, RoundRobin, Weighted,
};

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
                expected: Self::names(),
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
