//! An HTTP and gRPC gateway whose backends come from lodestar discovery.
//!
//! Requests are routed by path prefix (and optionally host) to a service;
//! the service's instances come from any [`Discovery`] (`etcd://`,
//! `lodestar://` through `lodestar_connect::connect`), and each request
//! goes to the instance the [`Balancer`](lodestar::balance::Balancer)
//! picks: the same balancer as the tonic channel, with its lanes
//! (`lodestar-version`, `lodestar-color`, `lodestar-hash-key` headers),
//! policies and outlier detection. Clients' lane headers are believed only
//! on routes that trust them (see [`trust`]).
//!
//! The modules, each on those before it:
//!
//! ```text
//! trust      whose lodestar-* headers are believed (routes, networks)
//! config     routes (flags and TOML), limits, validation
//! metrics    Prometheus counters and histograms, written by hand
//! ratelimit  the per-route token bucket
//! retry      what may be retried, and the retry budget
//! upstream   one discovery watch per service feeding its balancer
//! router     longest prefix (and host) wins
//! grpc       gRPC detection and trailers-only errors
//! proxy      the request path: route, limit, pick, forward, retry, stream
//! server     the listeners: HTTP/1.1 and HTTP/2, admin, graceful shutdown
//! workers    thread per core: one single-threaded runtime per SO_REUSEPORT socket
//! reload     SIGHUP and file polling re-read the configuration
//! log_writer the access log's writer: buffered, written by a background thread
//! ```
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use lodestar_gateway::{Gateway, config::Config};
//!
//! # async fn run(discovery: Arc<dyn lodestar::Discovery>) -> std::io::Result<()> {
//! let config = Config::default().with_route_flags(&["/api=echo"]).expect("valid routes");
//! let gateway = Gateway::new(discovery, config);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! gateway.serve(listener, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

pub mod config;
pub mod grpc;
pub mod log_writer;
pub mod metrics;
mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod retry;
pub mod router;
mod server;
pub mod trust;
pub mod upstream;
mod workers;

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use lodestar::Discovery;

pub use crate::workers::Listeners;

use crate::{
    config::{Config, Limits},
    metrics::Metrics,
    router::Router,
    trust::TrustConfig,
    upstream::Upstreams,
};

/// An error at a body or service boundary.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of the gateway's responses.
pub type Body = BoxBody<Bytes, BoxError>;

/// A running gateway's shared state; cheap to clone. See the [crate docs](crate).
#[derive(Clone, Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
}

/// What every request reads.
#[derive(Debug)]
struct Shared {
    current: RwLock<Arc<Current>>,
    upstreams: Upstreams,
    metrics: Arc<Metrics>,
}

/// The configuration in force, ready to route.
#[derive(Debug)]
struct Current {
    router: Router,
    limits: Limits,
    trust: TrustConfig,
}

// === impl Gateway ===

impl Gateway {
    /// A gateway routing by `config` to instances found in `discovery`.
    /// Must be called within a tokio runtime (it starts the watches).
    pub fn new(discovery: Arc<dyn Discovery>, config: Config) -> Self {
        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(Current {
                router: Router::default(),
                limits: Limits::default(),
                trust: TrustConfig::default(),
            })),
            upstreams: Upstreams::new(discovery, metrics.clone()),
            metrics,
        });
        let gateway = Self { shared };
        gateway.reload(config);
        gateway
    }

    /// Puts `config` in force: requests that start from now on use it;
    /// those in flight finish with the one they started with, and
    /// connections stay open. Services still routed keep their upstream
    /// (and what their balancer learnt).
    pub fn reload(&self, config: Config) {
        let shared = &self.shared;
        let router = Router::from_config(&config, |route| {
            shared.upstreams.get(&route.service, &route.policy)
        });
        let used: HashSet<(String, String)> = config
            .routes
            .iter()
            .map(|r| (r.service.clone(), r.policy.clone()))
            .collect();
        let current = Arc::new(Current {
            router,
            limits: config.limits,
            trust: config.trust,
        });
        *shared.current.write().unwrap_or_else(|p| p.into_inner()) = current;
        shared.upstreams.retain(&used);
        tracing::info!(routes = config.routes.len(), "configuration in force");
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.shared.current().limits.clone()
    }
}

// === impl Shared ===

impl Shared {
    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
