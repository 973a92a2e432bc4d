//! Resource names. A listener and its route configuration are named after
//! the service (`xds:///echo` asks for listener `echo`); a cluster is one
//! lane of a service:
//!
//! ```text
//! echo               the base lane: instances with no colour, any version
//! echo/c=blue        the blue lane, any version
//! echo/v=v2          the base lane of version v2
//! echo/v=v2/c=blue   the blue lane of version v2
//! echo/none          nothing: a version pin no instance has
//! ```
//!
//! Service names never hold `/` (lodestar refuses them), so the service is
//! everything before the first one. Any well-formed cluster name resolves,
//! lane present or not: a client that still holds a route to a lane that just
//! emptied gets an empty assignment, never a missing resource.

use std::fmt;

/// A cluster: one lane of one service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName {
    /// The service.
    pub service: String,
    /// Which of its instances.
    pub lane: Lane,
}

/// Which instances of a service a cluster holds, as lodestar's balancer
/// resolves a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Instances of `version` (any, if `None`) with colour `color` (none, if `None`).
    Subset {
        /// A version pin.
        version: Option<String>,
        /// A colour lane; `None` is the base lane.
        color: Option<String>,
    },
    /// No instance: what a pin to a version no instance has resolves to.
    Nothing,
}

/// The service a resource name belongs to (the part before the first `/`),
/// or `None` for a name no service has.
pub fn service_of(name: &str) -> Option<&str> {
    let service = name.split('/').next().unwrap_or_default();
    (!service.is_empty()).then_some(service)
}

/// Whether `name` can be a lodestar service name: not empty, no `/`, no
/// whitespace or control characters (what lodestar's registrars require).
pub fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

// === impl ClusterName ===

impl ClusterName {
    /// The base lane of `service`.
    pub fn base(service: &str) -> Self {
        Self::subset(service, None, None)
    }

    /// A lane of `service`.
    pub fn subset(service: &str, version: Option<&str>, color: Option<&str>) -> Self {
        Self {
            service: service.to_string(),
            lane: Lane::Subset {
                version: version.map(str::to_string),
                color: color.map(str::to_string),
            },
        }
    }

    /// The cluster for pins to versions `service` does not have.
    pub fn nothing(service: &str) -> Self {
        Self {
            service: service.to_string(),
            lane: Lane::Nothing,
        }
    }

    /// Parses a name written by [`Display`](fmt::Display); `None` when it is
    /// not one.
    pub fn parse(name: &str) -> Option<Self> {
        let (service, rest) = match name.split_once('/') {
            None => return service_of(name).map(Self::base),
            Some(parts) => parts,
        };
        if service.is_empty() {
            return None;
        }
        if rest == "none" {
            return Some(Self::nothing(service));
        }
        let (version, color) = match rest.strip_prefix("v=") {
            Some(rest) => match rest.split_once("/c=") {
                Some((version, color)) => (Some(version), Some(color)),
                None => (Some(rest), None),
            },
            None => (None, Some(rest.strip_prefix("c=")?)),
        };
        if version.is_some_and(str::is_empty) || color.is_some_and(str::is_empty) {
            return None;
        }
        Some(Self::subset(service, version, color))
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.service)?;
        match &self.lane {
            Lane::Nothing => f.write_str("/none"),
            Lane::Subset { version, color } => {
                if let Some(version) = version {
                    write!(f, "/v={version}")?;
                }
                if let Some(color) = color {
                    write!(f, "/c={color}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            ClusterName::base("echo"),
            ClusterName::subset("echo", Some("v2"), None),
            ClusterName::subset("echo", None, Some("blue")),
            ClusterName::subset("echo", Some("1.0"), Some("blue")),
            ClusterName::nothing("echo"),
        ] {
            let text = name.to_string();
            assert_eq!(ClusterName::parse(&text), Some(name), "{text}");
        }
        assert_eq!(
            ClusterName::subset("echo", Some("v2"), Some("blue")).to_string(),
            "echo/v=v2/c=blue"
        );
    }

    #[test]
    fn malformed_names_are_none() {
        for bad in ["", "/v=1", "echo/x=1", "echo/v=", "echo/c=", "echo/v=1/c="] {
            assert_eq!(ClusterName::parse(bad), None, "{bad:?}");
        }
        assert_eq!(service_of("echo/c=blue"), Some("echo"));
        assert_eq!(service_of("/x"), None);
        assert!(is_service_name("echo.v1-x_2"));
        for bad in ["", "a b", "a/b", "a\u{7}"] {
            assert!(!is_service_name(bad), "{bad:?}");
        }
    }
}
