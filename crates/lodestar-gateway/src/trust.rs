//! Which clients may steer the balancer: lodestar's lane headers
//! (`lodestar-version`, `lodestar-color`, `lodestar-hash-key`, and any other
//! `lodestar-*`) come from trusted clients only.
//!
//! A route trusts them when its `trust_headers` says so (else the
//! gateway-wide `[trust] headers`, false by default), or when the client's
//! address is in `[trust] sources`. Otherwise they are removed before the
//! balancer reads them and before the request is forwarded, so an outside
//! client cannot pick a lane, a pinned version or a hash key.

use std::{fmt, net::IpAddr, str::FromStr};

use http::HeaderMap;
use serde::Deserialize;

/// The prefix of lodestar's internal headers.
pub const INTERNAL_PREFIX: &str = "lodestar-";

/// Gateway-wide trust settings (`[trust]` in the TOML).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Whether routes without their own `trust_headers` trust clients'
    /// `lodestar-*` headers (false).
    pub headers: bool,
    /// Clients from these networks (`10.0.0.0/8`, `::1/128`, a bare
    /// address) are trusted on every route.
    pub sources: Vec<Cidr>,
}

/// A network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

/// A network that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a network (10.0.0.0/8, fd00::/8 or an address)")]
pub struct BadCidr(String);

// === impl TrustConfig ===

impl TrustConfig {
    /// Whether a request from `client` on a route saying `route` (its
    /// `trust_headers`) keeps its `lodestar-*` headers.
    pub fn trusts(&self, route: Option<bool>, client: IpAddr) -> bool {
        route.unwrap_or(self.headers) || self.sources.iter().any(|net| net.contains(client))
    }
}

/// Removes every `lodestar-*` header; returns how many were removed.
pub fn strip_internal(headers: &mut HeaderMap) -> usize {
    let internal: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(INTERNAL_PREFIX))
        .cloned()
        .collect();
    let mut removed = 0;
    for name in internal {
        removed += headers.get_all(&name).iter().count();
        headers.remove(&name);
    }
    removed
}

// === impl Cidr ===

impl Cidr {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.bits,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), 128, self.bits)
            }
            _ => false,
        }
    }
}

/// Whether the first `bits` of `width`-bit numbers `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, width: u8, bits: u8) -> bool {
    if bits == 0 {
        return true;
    }
    let shift = u32::from(width - bits);
    (a >> shift) == (b >> shift)
}

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(text: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(text.to_string());
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => width,
            Some(bits) => bits.trim().parse::<u8>().map_err(|_| bad())?,
        };
        if bits > width {
            return Err(bad());
        }
        Ok(Self { addr, bits })
    }
}

impl TryFrom<String> for Cidr {
    type Error = BadCidr;

    fn try_from(text: String) -> Result<Self, BadCidr> {
        text.parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(net.contains(ip("::ffff:10.1.0.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("::1")));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_route_decides_then_the_default_and_sources_trust_anyway() {
        let trust = TrustConfig {
            headers: false,
            sources: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(!trust.trusts(None, ip("192.0.2.1")));
        assert!(trust.trusts(Some(true), ip("192.0.2.1")));
        assert!(trust.trusts(Some(false), ip("127.0.0.1")));
        let open = TrustConfig {
            headers: true,
            sources: vec![],
        };
        assert!(open.trusts(None, ip("192.0.2.1")));
        assert!(!open.trusts(Some(false), ip("192.0.2.1")));
    }

    #[test]
    fn strips_every_internal_header_and_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.insert("lodestar-version", "v2".parse().unwrap());
        headers.append("lodestar-color", "blue".parse().unwrap());
        headers.append("lodestar-color", "green".parse().unwrap());
        headers.insert("lodestar-hash-key", "k".parse().unwrap());
        headers.insert("x-lodestar-other", "kept".parse().unwrap());
        assert_eq!(strip_internal(&mut headers), 4);
        assert_eq!(headers.len(), 1);
    }
}
