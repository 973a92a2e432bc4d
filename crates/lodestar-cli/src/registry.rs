//! From a `--registry` URL to a connected backend.

use std::{sync::Arc, time::Duration};

use anyhow::bail;
use lodestar::{Discovery, Registrar};
use lodestar_etcd::{EtcdConfig, EtcdRegistry};

/// Where the CLI looks when neither `--registry` nor `LODESTAR_REGISTRY` says.
pub(crate) const DEFAULT_URL: &str = "etcd://127.0.0.1:2379";

/// A connected registry, both halves.
pub(crate) struct Registry {
    pub(crate) registrar: Arc<dyn Registrar>,
    pub(crate) discovery: Arc<dyn Discovery>,
}

/// Connects to the registry at `url`; `ttl` overrides the URL's lease TTL.
pub(crate) async fn connect(url: &str, ttl: Option<Duration>) -> anyhow::Result<Registry> {
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    match scheme {
        "etcd" => {
            let mut config: EtcdConfig = url.parse()?;
            if let Some(ttl) = ttl {
                config.ttl = ttl;
            }
            // The error names the addresses already.
            let registry = EtcdRegistry::connect(config).await?;
            let registry = Arc::new(registry);
            Ok(Registry {
                registrar: registry.clone(),
                discovery: registry,
            })
        }
        "memory" => bail!(
            "memory: is an in-process registry for tests and the demo; another lodestar \
             process cannot see it. Point --registry (or LODESTAR_REGISTRY) at etcd://host:2379, \
             or run `lodestar demo` to see lodestar at work in one process"
        ),
        _ => bail!(
            "unsupported registry URL {url:?}: expected etcd://host:2379[,host:2379][/prefix]"
        ),
    }
}
