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

/// An error and its sources on one line (`a: b: c`), for logs and states:
/// `tracing::warn!(error = %ErrorChain(&e), ...)` or `.to_string()`.
#[derive(Clone, Copy, Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

// === impl Error ===

impl Error {
    /// The record, endpoint or URL given is not valid: fix the input, do
    /// not retry.
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            Error::InvalidInstance(_) | Error::InvalidEndpoint { .. } | Error::Config(_)
        )
    }

    /// The registry could not be reached at all (every address tried).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }

    /// The registry did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// The registry answered with an error, or a request failed part-way.
    pub fn is_request(&self) -> bool {
        matches!(self, Error::Request { .. })
    }

    /// The registration or watch was already shut down.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed(_))
    }

    /// Whether trying again later may succeed (unreachable, timed out, a
    /// failed request), as opposed to bad input or a closed handle.
    pub fn is_transient(&self) -> bool {
        self.is_unreachable() || self.is_timeout() || self.is_request()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_and_sources() {
        let e = Error::Unreachable {
            registry: "a:1,b:2".into(),
            source: "connection refused".into(),
        };
        assert!(e.is_unreachable() && e.is_transient() && !e.is_invalid());
        // The message prints its own level; the cause is the source.
        assert_eq!(e.to_string(), "registry at a:1,b:2 is unreachable");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("connection refused"));
        let invalid = Error::InvalidInstance("id is empty".into());
        assert!(invalid.is_invalid() && !invalid.is_transient());
        assert!(Error::Closed("watch").is_closed());
    }
}
