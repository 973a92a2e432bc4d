//! The instance record: what a server announces to a registry.
//!
//! An [`Instance`] names its service, its own id, an optional version, one or
//! more [`Endpoint`]s (`scheme://host:port`) and free-form metadata with three
//! well-known keys: [`COLOR`] (the lane; absent means the base lane),
//! [`WEIGHT`] (a positive integer, default [`DEFAULT_WEIGHT`]) and [`ZONE`].
//!
//! Its JSON form is the value stored in the registry:
//!
//! ```json
//! {"id":"echo-7f3a","service":"echo","version":"v1",
//!  "endpoints":["grpc://127.0.0.1:50051","http://127.0.0.1:8080"],
//!  "metadata":{"color":"blue","weight":"100","zone":"z1"}}
//! ```
//!
//! # Examples
//!
//! ```
//! use lodestar::Instance;
//!
//! let json = r#"{"id":"echo-1","service":"echo","version":"v1",
//!   "endpoints":["grpc://127.0.0.1:50051"],"metadata":{"weight":"20"}}"#;
//! let instance = Instance::from_json(json.as_bytes()).unwrap();
//! assert_eq!(instance.weight(), Ok(20));
//! assert_eq!(instance.endpoint("grpc").unwrap().address(), "127.0.0.1:50051");
//! assert_eq!(instance.color(), None);
//! ```

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::Error;

mod metadata;

pub use self::metadata::{Iter as MetadataIter, Metadata};

/// Metadata key of the colour lane. Absent means the base lane.
pub const COLOR: &str = "color";
/// Metadata key of the balancing weight, a positive integer.
pub const WEIGHT: &str = "weight";
/// Metadata key of the zone (availability zone, data centre...).
pub const ZONE: &str = "zone";
/// Metadata key of the traffic status an operator set: `up` (or absent) or
/// `down` (no new calls from any client). Backends merge an operator's
/// [`Override`](crate::Override) into the instance under this key.
pub const STATUS: &str = "status";
/// Metadata key of when the registry first saw the instance, in seconds
/// since the Unix epoch. Backends fill it in where they know it (etcd
/// stamps the stored record at registration; the built-in registry reports
/// its `reg_timestamp`); `lodestar get` shows it as the instance's age.
pub const REGISTERED: &str = "registered";
/// Metadata key a client's self-protection
/// ([`discovery::protect`](crate::discovery::protect)) sets on an instance
/// the registry no longer lists but the client keeps for a while, because
/// too many instances vanished at once. Its value is the revision of the
/// snapshot that removed it. Never written to a registry.
pub const RETAINED: &str = "lodestar.retained";
/// The weight of an instance that does not say.
pub const DEFAULT_WEIGHT: u32 = 100;

/// Longest service name, id or version accepted (etcd keys and HTTP headers
/// stay short; nothing legitimate comes close).
const MAX_NAME_LEN: usize = 253;

/// One server process (or one logical node) of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique within the service; stable across restarts if the caller wants.
    pub id: String,
    /// The service name clients look up.
    pub service: String,
    /// The version clients may pin to; empty when unversioned.
    #[serde(default)]
    pub version: String,
    /// Where the instance listens, one per protocol.
    pub endpoints: Vec<Endpoint>,
    /// Free-form metadata; see [`COLOR`], [`WEIGHT`] and [`ZONE`].
    #[serde(default)]
    pub metadata: Metadata,
}

/// A weight that is present but not a positive integer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("weight {0:?} is not a positive integer")]
pub struct InvalidWeight(pub String);

/// An address an instance listens on: `scheme://host:port`.
///
/// The scheme says which protocol (`grpc`, `http`, ...); the host is a name,
/// an IPv4 address or a bracketed IPv6 address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint {
    scheme: String,
    host: String,
    port: u16,
}

// === impl Instance ===

impl Instance {
    /// A new instance of `service` with `id`, no version, no endpoint yet.
    pub fn new(service: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            service: service.into(),
            version: String::new(),
            endpoints: Vec::new(),
            metadata: Metadata::new(),
        }
    }

    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Adds an endpoint.
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Sets a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The colour lane, or `None` for the base lane. An empty value counts as
    /// the base lane.
    pub fn color(&self) -> Option<&str> {
        self.metadata
            .get(COLOR)
            .map(String::as_str)
            .filter(|c| !c.is_empty())
    }

    /// The zone, if the instance names one.
    pub fn zone(&self) -> Option<&str> {
        self.metadata
            .get(ZONE)
            .map(String::as_str)
            .filter(|z| !z.is_empty())
    }

    /// Whether an operator took the instance out of traffic
    /// ([`STATUS`] is `down`): clients send it no new calls.
    pub fn is_down(&self) -> bool {
        self.metadata
            .get(STATUS)
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("down"))
    }

    /// Whether the client kept it after the registry dropped it
    /// ([`RETAINED`]): it leaves at its first failure.
    pub fn is_retained(&self) -> bool {
        self.metadata.contains_key(RETAINED)
    }

    /// When the registry first saw it ([`REGISTERED`]), in seconds since
    /// the Unix epoch, if the backend says.
    pub fn registered(&self) -> Option<u64> {
        self.metadata.get(REGISTERED)?.trim().parse().ok()
    }

    /// The balancing weight: [`DEFAULT_WEIGHT`] when absent, an error when
    /// present but not a positive integer (the balancer then uses the default
    /// and warns).
    pub fn weight(&self) -> Result<u32, InvalidWeight> {
        match self.metadata.get(WEIGHT) {
            None => Ok(DEFAULT_WEIGHT),
            Some(w) => match w.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(InvalidWeight(w.clone())),
            },
        }
    }

    /// The first endpoint with this scheme.
    pub fn endpoint(&self, scheme: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.scheme == scheme)
    }

    /// Checks what a registrar requires before announcing the instance:
    /// a service name and id without `/`, whitespace or control characters,
    /// at least one endpoint, a valid weight if one is given.
    pub fn validate(&self) -> Result<(), Error> {
        check_name("service", &self.service)?;
        check_name("id", &self.id)?;
        if !self.version.is_empty() {
            check_name("version", &self.version)?;
        }
        if self.endpoints.is_empty() {
            return Err(invalid(format!(
                "{}/{} has no endpoint (give at least one, e.g. grpc://127.0.0.1:50051)",
                self.service, self.id
            )));
        }
        if let Some(key) = self.metadata.keys().find(|k| k.is_empty()) {
            return Err(invalid(format!("empty metadata key {key:?}")));
        }
        self.weight().map_err(|e| invalid(e.to_string()))?;
        Ok(())
    }

    /// The JSON form stored in registries.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and string maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON form and checks its structure (names and endpoints;
    /// a bad weight is left for the balancer to handle).
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let instance: Instance = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("not an instance record: {e}")))?;
        check_name("service", &instance.service)?;
        check_name("id", &instance.id)?;
        Ok(instance)
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidInstance(reason)
}

fn check_name(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{what} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid(format!("{what} {value:?} contains {c:?}")));
    }
    Ok(())
}

// === impl Endpoint ===

impl Endpoint {
    /// Builds an endpoint from its parts.
    pub fn new(scheme: &str, host: &str, port: u16) -> Result<Self, Error> {
        format!("{scheme}://{}:{port}", bracket(host)).parse()
    }

    /// The protocol, e.g. `grpc` or `http`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host: a name, an IPv4 address, or an IPv6 address without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, with IPv6 hosts bracketed: what a socket connects to.
    pub fn address(&self) -> String {
        format!("{}:{}", bracket(&self.host), self.port)
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, bracket(&self.host), self.port)
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidEndpoint {
            endpoint: s.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, authority) = s
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host:port, e.g. grpc://127.0.0.1:50051"))?;
        let valid_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return Err(bad("scheme must be letters, digits, '+', '-' or '.'"));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("missing :port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("port is not a number from 0 to 65535"))?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
                .ok_or_else(|| bad("bad bracketed IPv6 address"))?,
            None => host,
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !valid_host || (host.contains(':') && !authority.starts_with('[')) {
            return Err(bad("bad host (IPv6 addresses go in brackets)"));
        }
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_string(),
            port,
        })
    }
}

impl TryFrom<String> for Endpoint {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> String {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    #[test]
    fn endpoint_round_trips() {
        for s in [
            "grpc://127.0.0.1:50051",
            "http://localhost:8080",
            "grpc://[::1]:1",
            "h2c://svc.ns.cluster.local:443",
        ] {
            assert_eq!(ep(s).to_string(), s);
        }
        assert_eq!(ep("grpc://[::1]:7").address(), "[::1]:7");
        assert_eq!(ep("grpc://[::1]:7").host(), "::1");
        assert_eq!(ep("GRPC://a:1").scheme(), "grpc");
    }

    #[test]
    fn endpoint_rejects_garbage() {
        for s in [
            "",
            "127.0.0.1:80",
            "grpc://",
            "grpc://host",
            "grpc://host:99999",
            "grpc://host:port",
            "grpc://:80",
            "grpc://::1:80",
            "grpc://[zz]:80",
            "grpc://host/path:80",
            "1grpc://host:80",
            "gr pc://host:80",
        ] {
            assert!(s.parse::<Endpoint>().is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn json_form_matches_the_design() {
        let instance = Instance::new("echo", "echo-7f3a")
            .with_version("v1")
            .with_endpoint(ep("grpc://127.0.0.1:50051"))
            .with_endpoint(ep("http://127.0.0.1:8080"))
            .with_metadata("color", "blue")
            .with_metadata("weight", "100")
            .with_metadata("zone", "z1");
        assert_eq!(
            instance.to_json(),
            r#"{"id":"echo-7f3a","service":"echo","version":"v1","endpoints":["grpc://127.0.0.1:50051","http://127.0.0.1:8080"],"metadata":{"color":"blue","weight":"100","zone":"z1"}}"#
        );
        assert_eq!(
            Instance::from_json(instance.to_json().as_bytes()).unwrap(),
            instance
        );
    }

    #[test]
    fn well_known_metadata() {
        let base = Instance::new("s", "i").with_endpoint(ep("grpc://a:1"));
        assert_eq!(base.color(), None);
        assert_eq!(base.zone(), None);
        assert_eq!(base.weight(), Ok(DEFAULT_WEIGHT));
        assert_eq!(base.clone().with_metadata("color", "").color(), None);
        assert_eq!(
            base.clone().with_metadata("color", "red").color(),
            Some("red")
        );
        assert_eq!(base.clone().with_metadata("weight", "7").weight(), Ok(7));
        for bad in ["0", "-1", "x", "", "1.5"] {
            let i = base.clone().with_metadata("weight", bad);
            assert!(i.weight().is_err(), "{bad:?}");
            assert!(i.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation() {
        let ok = Instance::new("echo", "echo-1").with_endpoint(ep("grpc://a:1"));
        assert!(ok.validate().is_ok());
        assert!(
            Instance::new("echo", "echo-1").validate().is_err(),
            "no endpoint"
        );
        for (service, id) in [
            ("", "i"),
            ("s", ""),
            ("a/b", "i"),
            ("s", "i d"),
            ("s", "i\n"),
        ] {
            let i = Instance::new(service, id).with_endpoint(ep("grpc://a:1"));
            assert!(i.validate().is_err(), "{service:?} {id:?}");
        }
        let long = "x".repeat(300);
        assert!(
            Instance::new(&long, "i")
                .with_endpoint(ep("grpc://a:1"))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let json = br#"{"id":"i","service":"s","endpoints":["grpc://a:1"],"added_later":1}"#;
        assert_eq!(Instance::from_json(json).unwrap().id, "i");
    }

    #[test]
    fn garbage_json_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"null",
            b"{}",
            b"[1,2]",
            b"\xff\xfe",
            br#"{"id":"","service":"s","endpoints":[]}"#,
            br#"{"id":"i","service":"s","endpoints":["nope"]}"#,
            br#"{"id":5,"service":"s","endpoints":[]}"#,
        ] {
            assert!(
                Instance::from_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
