//! The xDS server: the ADS service on a tonic server, and the policy of
//! each service's clusters.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use lodestar::Discovery;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::{Policy, ads::Ads, hub::Hub};

/// HTTP/2 pings on idle streams, so a client that vanished without closing
/// its connection releases its stream (and the watches it held).
const KEEPALIVE: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The policy of each service's clusters: a default and exceptions.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    default: Policy,
    services: HashMap<String, Policy>,
}

/// An xDS management server over a [`Discovery`]; see the [crate docs](crate).
#[derive(Debug)]
pub struct Server {
    hub: Hub,
    policies: Policies,
    streams: Arc<AtomicUsize>,
}

/// A server's live counts, cheap to clone (taken before it is served).
#[derive(Clone, Debug)]
pub struct Stats {
    hub: Hub,
    streams: Arc<AtomicUsize>,
}

// === impl Policies ===

impl Policies {
    /// The policy of `service`'s clusters.
    pub fn get(&self, service: &str) -> Policy {
        self.services.get(service).copied().unwrap_or(self.default)
    }
}

// === impl Server ===

impl Server {
    /// A server answering from `discovery` (any backend: etcd, the built-in
    /// registry, memory), every service balanced [`Policy::Weighted`].
    pub fn new(discovery: Arc<dyn Discovery>) -> Self {
        Self {
            hub: Hub::new(discovery),
            policies: Policies::default(),
            streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The policy of services not named by [`Server::policy`].
    pub fn default_policy(mut self, policy: Policy) -> Self {
        self.policies.default = policy;
        self
    }

    /// The policy of `service`'s clusters.
    pub fn policy(mut self, service: impl Into<String>, policy: Policy) -> Self {
        self.policies.services.insert(service.into(), policy);
        self
    }

    /// The ADS service, to add to a tonic server of one's own (beside other
    /// services).
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Ads> {
        AggregatedDiscoveryServiceServer::new(self.ads())
    }

    /// The ADS service itself.
    pub fn ads(&self) -> Ads {
        Ads::new(
            self.hub.clone(),
            Arc::new(self.policies.clone()),
            self.streams.clone(),
        )
    }

    /// Its live counts: streams open, services watched.
    pub fn stats(&self) -> Stats {
        Stats {
            hub: self.hub.clone(),
            streams: self.streams.clone(),
        }
    }

    /// Serves ADS on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        // tonic applies socket options only to listeners it binds itself;
        // without TCP_NODELAY a push written in pieces waits for the
        // client's delayed ACK (40 ms on Linux).
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(KEEPALIVE));
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}

// === impl Stats ===

impl Stats {
    /// ADS streams open now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Services with a discovery watch open now.
    pub fn services(&self) -> usize {
        self.hub.watched()
    }
}
