//! The load-balancing policy a service's clusters carry.
//!
//! gRPC clients balance with the policy the cluster names, so the server
//! chooses it per service. lodestar's policy names are accepted; those gRPC
//! has no equivalent for map to the closest one it has.

use std::{fmt, str::FromStr};

use lodestar::balance::BuiltinPolicy;

/// A cluster's policy, as gRPC clients run it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `ROUND_ROBIN`, every instance in rotation equally often (weights ignored).
    RoundRobin,
    /// `ROUND_ROBIN` over localities weighted by the instances' weights, so
    /// the spread follows `weight` (see [`resources`](crate::resources)).
    #[default]
    Weighted,
    /// `RING_HASH` on the `lodestar-hash-key` header, endpoint weights honoured.
    RingHash,
}

/// A policy name that is neither lodestar's nor `ring_hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPolicy(pub String);

// === impl Policy ===

impl Policy {
    /// Its name: `round_robin`, `weighted` or `ring_hash`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Weighted => "weighted",
            Self::RingHash => "ring_hash",
        }
    }

    /// The xDS equivalent of a lodestar policy: round robin and random go
    /// round robin; weighted, p2c and least request go weighted (gRPC's
    /// least request is experimental, p2c over latency has no xDS form);
    /// consistent hash goes ring hash.
    pub fn from_builtin(policy: BuiltinPolicy) -> Self {
        match policy {
            BuiltinPolicy::RoundRobin | BuiltinPolicy::Random => Self::RoundRobin,
            BuiltinPolicy::Weighted | BuiltinPolicy::P2c | BuiltinPolicy::LeastRequest => {
                Self::Weighted
            }
            BuiltinPolicy::ConsistentHash => Self::RingHash,
        }
    }
}

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "ring_hash" {
            return Ok(Self::RingHash);
        }
        s.parse::<BuiltinPolicy>()
            .map(Self::from_builtin)
            .map_err(|_| UnknownPolicy(s.to_string()))
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl UnknownPolicy ===

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown policy {:?}: expected ring_hash or one of {}",
            self.0,
            BuiltinPolicy::names()
        )
    }
}

impl std::error::Error for UnknownPolicy {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lodestar_names_map_to_grpc_policies() {
        assert_eq!("round_robin".parse(), Ok(Policy::RoundRobin));
        assert_eq!("random".parse(), Ok(Policy::RoundRobin));
        assert_eq!("weighted".parse(), Ok(Policy::Weighted));
        assert_eq!("p2c".parse(), Ok(Policy::Weighted));
        assert_eq!("consistent_hash".parse(), Ok(Policy::RingHash));
        assert_eq!("ring_hash".parse(), Ok(Policy::RingHash));
        let err = "maglevv".parse::<Policy>().unwrap_err();
        assert!(err.to_string().contains("maglevv"), "{err}");
    }
}
