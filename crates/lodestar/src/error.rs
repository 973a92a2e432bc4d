use std::time::Duration;

/// A type-erased error, used at `tower::Service` boundaries and as the source
/// of backend failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The instance record is not valid (empty id, no endpoint, bad weight...).
    #[error("invalid instance: {0}")]
    InvalidInstance(String),

    /// An endpoint string is not `scheme://host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The text that failed to parse.
        endpoint: String,
        /// Why it failed.
        reason: String,
    },

    /// A registry URL or option is malformed.
    #[error("invalid registry configuration: {0}")]
    Config(String),

    /// The registry could not be reached at all.
    #[error("registry at {registry} is unreachable")]
    Unreachable {
        /// Where the registry was expected (addresses as configured).
        registry: String,
        /// The underlying transport error.
        #[source]
        source: BoxError,
    },

    /// The registry answered a request with an error, or the request failed
    /// part-way.
    #[error("request to registry at {registry} failed")]
    Request {
        /// Where the registry was expected.
        registry: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// A request did not complete in time.
    #[error("registry at {registry} did not answer within {timeout:?}")]
    Timeout {
        /// Where the registry was expected.
        registry: String,
        /// The time allowed.
        timeout: Duration,
    },

    /// The registration or watch has already been shut down.
    #[error("{0} is closed")]
    Closed(&'static str),
}
