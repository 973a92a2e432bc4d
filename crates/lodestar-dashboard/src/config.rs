//! What a dashboard is told at start.

use std::{fmt, time::Duration};

use rand::Rng;

/// How a [`Dashboard`](crate::Dashboard) runs.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The registry's URL, shown on the page; a `lodestar://` URL also turns
    /// on the node view (each node's `/lodestar/status`).
    pub registry_url: String,
    /// Whether writes (`set`) are accepted, with [`Config::token`].
    pub allow_writes: bool,
    /// The token a write must carry (`Authorization: Bearer ...`). Writes
    /// are refused when it is `None`, even with `allow_writes`.
    pub token: Option<String>,
    /// The built-in registry's token (`lodestar registry --token`), sent as
    /// `Authorization: Bearer ...` with the node view's requests, for nodes
    /// that guard reads (`--token-reads`). The URL shown never carries it.
    pub registry_token: Option<String>,
    /// How often the service list is read.
    pub poll_every: Duration,
    /// How often every instance's gRPC health is checked.
    pub health_every: Duration,
    /// How often the built-in registry's nodes are asked for their status.
    pub nodes_every: Duration,
    /// The events kept for a page that opens (the feed's ring).
    pub max_events: usize,
    /// The writes kept in the audit list.
    pub max_audit: usize,
}

// === impl Config ===

impl Config {
    /// Read-only, with the default periods.
    pub fn new(registry_url: impl Into<String>) -> Self {
        Self {
            registry_url: registry_url.into(),
            allow_writes: false,
            token: None,
            registry_token: None,
            poll_every: Duration::from_secs(1),
            health_every: Duration::from_secs(5),
            nodes_every: Duration::from_secs(2),
            max_events: 500,
            max_audit: 500,
        }
    }

    /// Accepts writes carrying `token`.
    pub fn with_writes(mut self, token: impl Into<String>) -> Self {
        self.allow_writes = true;
        self.token = Some(token.into());
        self
    }

    /// Sends `token` to the built-in registry's nodes with the node view's
    /// requests; see [`Config::registry_token`].
    pub fn with_registry_token(mut self, token: impl Into<String>) -> Self {
        self.registry_token = Some(token.into());
        self
    }

    /// Whether a write may be made at all.
    pub(crate) fn writable(&self) -> bool {
        self.allow_writes && self.token.as_deref().is_some_and(|t| !t.is_empty())
    }
}

/// The token is never printed, so a `{:?}` in a log cannot leak it.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("registry_url", &self.registry_url)
            .field("allow_writes", &self.allow_writes)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "registry_token",
                &self.registry_token.as_ref().map(|_| "<redacted>"),
            )
            .field("poll_every", &self.poll_every)
            .field("health_every", &self.health_every)
            .field("nodes_every", &self.nodes_every)
            .field("max_events", &self.max_events)
            .field("max_audit", &self.max_audit)
            .finish()
    }
}

/// A fresh random write token: 32 hex digits (128 bits).
pub fn generate_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token() {
        let config = Config::new("memory:x").with_writes("s3cret-token");
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret-token"), "{printed}");
        assert!(printed.contains("redacted"));
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn writes_need_a_token() {
        let mut config = Config::new("memory:x");
        assert!(!config.writable());
        config.allow_writes = true;
        assert!(!config.writable());
        assert!(config.with_writes("t").writable());
    }
}
