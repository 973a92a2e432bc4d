//! The lodestar web console: what is registered, who consumes it, what is
//! changing now, and (when allowed) taking an instance out of traffic.
//!
//! A [`Dashboard`] follows a registry through the [`lodestar::Discovery`]
//! trait: it lists the services about once a second, holds a
//! [`lodestar::Watch`] per service, and turns each new snapshot into events
//! (joins, leaves, status and weight changes) with [`Snapshot::changes`]. Its
//! [`Dashboard::router`] serves the page (hand-written HTML, CSS and
//! JavaScript embedded in the binary) and the JSON API the page uses:
//!
//! | route | what |
//! | --- | --- |
//! | `GET /api/status` | the registry (`reachable`, `last_ok`, `error`), whether writes are allowed |
//! | `GET /api/services` | every service: instance counts, versions, lanes, zones |
//! | `GET /api/services/{name}` | one service's instances, with health |
//! | `GET /api/services/{name}/subscribers` | who consumes it |
//! | `GET /api/events` | server-sent events: the recent feed, then live changes |
//! | `GET /api/registry` | the built-in registry's nodes, peers and self-protection |
//! | `GET /api/audit` | the writes made through the dashboard |
//! | `POST /api/services/{name}/instances/{id}` | a write (`--allow-writes` and the token) |
//!
//! [`Snapshot::changes`]: lodestar::Snapshot::changes
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use lodestar::memory::MemoryRegistry;
//! use lodestar_dashboard::{Config, Dashboard};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let registry = Arc::new(MemoryRegistry::new());
//! let dashboard = Dashboard::new(registry, Config::new("memory:demo"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(dashboard.serve(listener, async { let _ = stopped.await; }));
//! // ... open http://{addr}/ ...
//! let _ = stop.send(());
//! serving.await.unwrap()?;
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

mod api;
mod assets;
mod config;
mod events;
mod feed;
mod health;
mod nodes;
mod state;
mod writes;

use std::{future::Future, io, net::SocketAddr, sync::Arc};

use axum::serve::ListenerExt;
use lodestar::Registry;
use tokio::{net::TcpListener, task::JoinSet};

pub use config::{Config, generate_token};

use self::state::Shared;

/// A running console over one registry; see the [crate docs](crate).
///
/// Its background tasks (the service poller, the watches, health checks,
/// the node view) stop when it is dropped.
#[derive(Debug)]
pub struct Dashboard {
    shared: Arc<Shared>,
    _tasks: JoinSet<()>,
}

// === impl Dashboard ===

impl Dashboard {
    /// Starts following `registry`. Must be called inside a tokio runtime.
    pub fn new(registry: Arc<dyn Registry>, config: Config) -> Self {
        let shared = Arc::new(Shared::new(registry, config));
        let mut tasks = JoinSet::new();
        tasks.spawn(feed::run(shared.clone()));
        tasks.spawn(health::run(shared.clone()));
        if let Some(addrs) = nodes::addresses(&shared.config.registry_url) {
            tasks.spawn(nodes::run(shared.clone(), addrs));
        }
        Self {
            shared,
            _tasks: tasks,
        }
    }

    /// The page and the API. Writes read the caller's address from
    /// `ConnectInfo<SocketAddr>` when the server provides it (as
    /// [`Dashboard::serve`] does).
    pub fn router(&self) -> axum::Router {
        api::router(self.shared.clone())
    }

    /// Serves the router on `listener` until `shutdown` resolves; the event
    /// streams end then, so the shutdown never waits on an open page.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let router = self.router();
        let shared = self.shared.clone();
        let shutdown = async move {
            shutdown.await;
            shared.close();
        };
        // Events are small writes on a long response: no Nagle delay.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}
