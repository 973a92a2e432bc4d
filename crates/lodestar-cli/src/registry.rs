//! From a `--registry` URL to a connected backend.

use std::{sync::Arc, time::Duration};

use anyhow::bail;
use lodestar::{Discovery, Registrar};
use lodestar_etcd::{EtcdConfig, EtcdRegistry};
use lodestar_registry::{ClientConfig, LodestarRegistry};

/// Where the CLI looks when neither `--registry` nor `LODESTAR_REGISTRY` says:
/// the built-in registry (`lodestar registry`), the zero-setup default.
pub(crate) const DEFAULT_URL: &str = "lodestar://127.0.0.1:7171";

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
        "lodestar" => {
            let mut config: ClientConfig = url.parse()?;
            if let Some(ttl) = ttl {
                config.ttl = Some(ttl);
            }
            // The error names the nodes already.
            let registry = Arc::new(LodestarRegistry::connect(config).await?);
            Ok(Registry {
                registrar: registry.clone(),
                discovery: registry,
            })
        }
        "memory" => bail!(
            "memory: is an in-process registry for tests and the demo; another lodestar \
             process cannot see it. Point --registry (or LODESTAR_REGISTRY) at lodestar://host:7171 \
             (`lodestar registry` runs one) or etcd://host:2379, \
             or run `lodestar demo` to see lodestar at work in one process"
        ),
        _ => bail!(
            "unsupported registry URL {url:?}: expected lodestar://host:7171[,host:7171] \
             or etcd://host:2379[,host:2379][/prefix]"
        ),
    }
}
