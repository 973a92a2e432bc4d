//! Why a pick (or a balancer option) failed.

/// Why the balancer could not pick an endpoint, or rejected an option.
///
/// Each reason is its own variant so a transport can map them precisely
/// (all of them are gRPC `Unavailable`, but the message tells an operator
/// which rule emptied the set).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service has no instance at all.
    #[error("no instance of {service}")]
    NoInstances {
        /// The service.
        service: String,
    },

    /// The route pins a version no instance has. Never silently served by
    /// another version.
    #[error("no instance of {service} with version {version}")]
    NoVersion {
        /// The service.
        service: String,
        /// The pinned version.
        version: String,
    },

    /// The request has no colour (or its colour lane is empty) and every
    /// instance left is in a colour lane: coloured instances never take
    /// base-lane traffic.
    #[error("no instance of {service} in the base lane (every candidate has a colour)")]
    NoBaseLane {
        /// The service.
        service: String,
    },

    /// Every candidate for the route is ejected (health NOT_SERVING or
    /// outlier detection).
    #[error("all {count} candidate instances of {service} are ejected")]
    AllEjected {
        /// The service.
        service: String,
        /// How many candidates are ejected.
        count: usize,
    },

    /// A policy name that is not built in.
    #[error("unknown balancing policy {name:?} (expected one of: {expected})")]
    UnknownPolicy {
        /// The name given.
        name: String,
        /// The built-in names, comma-separated.
        expected: String,
    },

    /// A route value that cannot be sent as an HTTP header.
    #[error("{header} value {value:?} is not a valid header value")]
    InvalidRoute {
        /// The header name.
        header: &'static str,
        /// The offending value.
        value: String,
    },
}
