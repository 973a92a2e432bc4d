//! One entry point for every lodestar registry: [`connect`] a URL, get a
//! [`Registry`] (both [`Registrar`] and [`Discovery`]) and never dispatch on
//! schemes yourself. The CLI, the gateway and user code all start here.
//!
//! | URL | backend | feature |
//! | --- | --- | --- |
//! | `lodestar://host:7171[,host:7171...][?env=&zone=&ttl=]` | the built-in registry (`lodestar registry`) | `registry` (default) |
//! | `etcd://[user:pass@]host:2379[,host:2379...][/prefix][?ttl=&layout=go&ca=...]` | etcd | `etcd` (default) |
//! | `memory:` or `memory:NAME` | an in-process registry shared by every `connect` of the same name in this process | always |
//!
//! A backend whose feature is off is refused with an error naming the feature.
//!
//! # Examples
//!
//! ```
//! use lodestar::Instance;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lodestar::Error> {
//! // Any URL above; `memory:` needs no server.
//! let registry = lodestar_connect::connect("memory:").await?;
//! let registration = registry
//!     .register(Instance::new("echo", "echo-1").with_endpoint("grpc://127.0.0.1:50051".parse()?))
//!     .await?;
//!
//! // Another connect to the same name sees it.
//! let again = lodestar_connect::connect("memory:").await?;
//! assert_eq!(again.get("echo").await?.len(), 1);
//! registration.deregister().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Registrar`]: lodestar::Registrar
//! [`Discovery`]: lodestar::Discovery
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

pub use lodestar::Registry;
use lodestar::{Error, memory::MemoryRegistry};

/// How [`Connect`] overrides what a URL says.
#[derive(Clone, Debug, Default)]
pub struct Connect {
    ttl: Option<Duration>,
}

/// Connects to the registry at `url`, with what the URL says.
pub async fn connect(url: &str) -> Result<Arc<dyn Registry>, Error> {
    Connect::new().connect(url).await
}

// === impl Connect ===

impl Connect {
    /// Options that change nothing the URL says.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lease TTL (etcd) or renew TTL (built-in registry) of
    /// registrations, over the URL's `?ttl=`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Connects to the registry at `url`. Resolves once the registry has
    /// answered (etcd, the built-in registry: any one of the addresses
    /// listed), so a wrong address fails here, with the addresses named.
    pub async fn connect(&self, url: &str) -> Result<Arc<dyn Registry>, Error> {
        match scheme(url) {
            "etcd" => self.etcd(url).await,
            "lodestar" => self.lodestar(url).await,
            "memory" => Ok(memory(url)),
            _ => Err(Error::Config(format!(
                "unsupported registry URL {url:?}: expected lodestar://host:7171[,host:7171], \
                 etcd://host:2379[,host:2379][/prefix] or memory:"
            ))),
        }
    }

    #[cfg(feature = "etcd")]
    async fn etcd(&self, url: &str) -> Result<Arc<dyn Registry>, Error> {
        let mut config: lodestar_etcd::EtcdConfig = url.parse()?;
        if let Some(ttl) = self.ttl {
            config.ttl = ttl;
        }
        Ok(Arc::new(
            lodestar_etcd::EtcdRegistry::connect(config).await?,
        ))
    }

    #[cfg(not(feature = "etcd"))]
    async fn etcd(&self, url: &str) -> Result<Arc<dyn Registry>, Error> {
        Err(disabled(url, "etcd"))
    }

    #[cfg(feature = "registry")]
    async fn lodestar(&self, url: &str) -> Result<Arc<dyn Registry>, Error> {
        let mut config: lodestar_registry::ClientConfig = url.parse()?;
        if let Some(ttl) = self.ttl {
            config.ttl = Some(ttl);
        }
        Ok(Arc::new(
            lodestar_registry::LodestarRegistry::connect(config).await?,
        ))
    }

    #[cfg(not(feature = "registry"))]
    async fn lodestar(&self, url: &str) -> Result<Arc<dyn Registry>, Error> {
        Err(disabled(url, "registry"))
    }
}

/// The scheme of `url`: what comes before the first `:`.
fn scheme(url: &str) -> &str {
    url.split_once(':').map_or(url, |(scheme, _)| scheme)
}

#[allow(dead_code, reason = "used only when a backend feature is off")]
fn disabled(url: &str, feature: &str) -> Error {
    Error::Config(format!(
        "{url:?} needs lodestar-connect's `{feature}` feature, which this build leaves out"
    ))
}

/// The process-wide memory registry called `memory:NAME` (`memory:` is the
/// one named ""), made on first use.
fn memory(url: &str) -> Arc<dyn Registry> {
    static REGISTRIES: OnceLock<Mutex<HashMap<String, MemoryRegistry>>> = OnceLock::new();
    let name = url.split_once(':').map_or("", |(_, name)| name);
    let mut registries = REGISTRIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    Arc::new(registries.entry(name.to_string()).or_default().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schemes_are_dispatched_and_bad_ones_named() {
        let error = connect("zk://127.0.0.1:2181").await.err().unwrap();
        assert!(
            error
                .to_string()
                .contains("unsupported registry URL \"zk://"),
            "{error}"
        );
        let error = connect("etcd://127.0.0.1:notaport").await.err().unwrap();
        assert!(matches!(error, Error::Config(_)), "{error:?}");
        let error = connect("lodestar://").await.err().unwrap();
        assert!(matches!(error, Error::Config(_)), "{error:?}");
    }

    #[tokio::test]
    async fn memory_names_are_separate_registries() {
        use lodestar::Instance;
        let a = connect("memory:a").await.unwrap();
        let b = connect("memory:b").await.unwrap();
        let instance =
            Instance::new("svc", "1").with_endpoint("grpc://127.0.0.1:1".parse().unwrap());
        let _registration = a.register(instance).await.unwrap();
        assert_eq!(
            connect("memory:a")
                .await
                .unwrap()
                .get("svc")
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(b.get("svc").await.unwrap().is_empty());
        // An Arc<dyn Registry> is also an Arc<dyn Discovery>.
        let discovery: Arc<dyn lodestar::Discovery> = a;
        assert_eq!(discovery.get("svc").await.unwrap().len(), 1);
    }
}
