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
    let mut connect = Connect::new();
    if let Some(ttl) = ttl {
        connect = connect.ttl(ttl);
    }
    // The error names the addresses already.
    let registry = connect.connect(url).await?;
    Ok(Registry {
        registrar: registry.clone(),
        discovery: registry,
    })
}
