//! From a `--registry` URL to a connected backend.

use std::{sync::Arc, time::Duration};

use anyhow::bail;
use lodestar::{Discovery, Registrar};
use lodestar_connect::Connect;

/// Where the CLI looks when neither `--registry` nor `LODESTAR_REGISTRY` says:
/// the built-in registry (`lodestar registry`), the zero-setup default.
pub(crate) const DEFAULT_URL: &str = "lodestar://127.0.0.1:7171";

/// A connected registry, both halves.
pub(crate) struct Registry {
    pub(crate) registrar: Arc<dyn Registrar>,
    pub(crate) discovery: Arc<dyn Discovery>,
}

/// Connects to the registry at `url` through the library's one entry point;
/// `ttl` overrides the URL's lease TTL. The CLI refuses `memory:`: another
/// process could not see it.
pub(crate) async fn connect(url: &str, ttl: Option<Duration>) -> anyhow::Result<Registry> {
    if url.starts_with("memory:") {
        bail!(
            "memory: is an in-process registry for tests and the demo; another lodestar \
             process cannot see it. Point --registry (or LODESTAR_REGISTRY) at lodestar://host:7171 \
             (`lodestar registry` runs one) or etcd://host:2379, \
             or run `lodestar demo` to see lodestar at work in one process"
        );
    }
    let url = with_env_token(url);
    let mut connect = Connect::new();
    if let Some(ttl) = ttl {
        connect = connect.ttl(ttl);
    }
    // The error names the addresses already.
    let registry = connect.connect(&url).await?;
    Ok(Registry {
        registrar: registry.clone(),
        discovery: registry,
    })
}

/// `url` as messages show it: its token redacted.
pub(crate) fn shown(url: &str) -> String {
    lodestar_registry::token::redact_url(url)
}

/// The token of a `lodestar://` URL, if it has one (and parses).
pub(crate) fn token(url: &str) -> Option<String> {
    let config: lodestar_registry::ClientConfig = url.parse().ok()?;
    Some(config.token?.expose().to_string())
}

/// A `lodestar://` URL without a `token` gets `LODESTAR_TOKEN`'s, if set.
pub(crate) fn with_env_token(url: &str) -> String {
    let token = std::env::var("LODESTAR_TOKEN").unwrap_or_default();
    add_token(url, &token)
}

fn add_token(url: &str, token: &str) -> String {
    let has_token = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("token=")));
    if token.is_empty() || has_token || !url.starts_with("lodestar://") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}token={token}")
}

#[cfg(test)]
mod tests {
    use super::add_token;

    #[test]
    fn the_token_of_a_lodestar_url() {
        assert_eq!(
            super::token("lodestar://h:1?env=p&token=T").as_deref(),
            Some("T")
        );
        assert_eq!(super::token("lodestar://h:1"), None);
        assert_eq!(super::token("etcd://h:1"), None);
    }

    #[test]
    fn the_env_token_goes_to_lodestar_urls_that_have_none() {
        assert_eq!(add_token("lodestar://h:1", "T"), "lodestar://h:1?token=T");
        assert_eq!(
            add_token("lodestar://h:1?env=p", "T"),
            "lodestar://h:1?env=p&token=T"
        );
        assert_eq!(
            add_token("lodestar://h:1?token=U", "T"),
            "lodestar://h:1?token=U"
        );
        assert_eq!(add_token("etcd://h:1", "T"), "etcd://h:1");
        assert_eq!(add_token("lodestar://h:1", ""), "lodestar://h:1");
    }
}
