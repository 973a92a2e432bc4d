//! The registry server: discovery's HTTP API over an in-memory store, with
//! renews, eviction, self-protection, long polls, peer replication and
//! warm-up.
//!
//! [`Server::bind`] binds the listener; [`Server::serve`] runs the node until
//! the shutdown future resolves, then lets requests in flight finish (held
//! polls answer at once). Dropping the `serve` future stops everything at
//! once, connections included: tests use that to "kill" a node.
//!
//! # Examples
//!
//! ```
//! use lodestar_registry::server::{Config, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = Server::bind(Config::new("127.0.0.1:0".parse().unwrap())).await?;
//! let addr = server.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(server.serve(async { let _ = stopped.await; }));
//! // ... point clients at lodestar://{addr} ...
//! # let _ = addr;
//! let _ = stop.send(());
//! running.await.unwrap()?;
//! # Ok(())
//! # }
//! ```

mod api;
mod config;
mod peers;
mod store;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
};

pub use config::Config;

use self::{peers::Peers, store::Store};

/// How long requests in flight may take to finish after a shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// A bound registry node; see the [module docs](self).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: Config,
}

/// What the handlers and background tasks of one node share.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<Store>,
    pub(crate) peers: Peers,
    /// Whether reads are served (false while warming up).
    ready: AtomicBool,
    /// Turns true at shutdown, to release held polls.
    stop: watch::Receiver<bool>,
    /// Permits for held polls.
    polls: Arc<Semaphore>,
}

// === impl Server ===

impl Server {
    /// Binds `config.listen` (port 0 picks a free port).
    pub async fn bind(config: Config) -> io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Self { listener, config })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains requests in flight.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let mut config = self.config;
        // Port 0 becomes the port bound, for `/discovery/nodes`.
        config.listen = self.listener.local_addr()?;
        let config = Arc::new(config);
        let (stop_tx, stop) = watch::channel(false);
        let store = Arc::new(Store::new(config.clone()));
        let (peers, links) = Peers::new(&config);
        let node = Arc::new(Node {
            polls: Arc::new(Semaphore::new(config.max_polls)),
            ready: AtomicBool::new(config.all_peers().is_empty()),
            config,
            store,
            peers,
            stop,
        });
        // Owned here: dropping `serve` aborts them with the connections.
        let mut tasks = JoinSet::new();
        tasks.spawn(evict(node.clone()));
        peers::spawn(&node, links, &mut tasks);
        tracing::info!(addr = %self.listener.local_addr()?, zone = %node.config.zone, "registry serving");
        accept(&self.listener, &node, shutdown, &stop_tx).await;
        drop(self.listener);
        Ok(())
    }
}

/// Accepts connections until `shutdown`, then drains them.
async fn accept(
    listener: &TcpListener,
    node: &Arc<Node>,
    shutdown: impl Future<Output = ()>,
    stop: &watch::Sender<bool>,
) {
    let router = api::router(node.clone());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_connection(stream, &router, &graceful, &mut connections),
                Err(e) => {
                    // Out of file descriptors, mostly: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Held polls answer at once; other requests get DRAIN to finish.
    stop.send_replace(true);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN:?}; closing them");
    }
}

fn serve_connection(
    stream: TcpStream,
    router: &axum::Router,
    graceful: &GracefulShutdown,
    connections: &mut JoinSet<()>,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router.clone());
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    connections.spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// The eviction loop: a tick every second at most.
async fn evict(node: Arc<Node>) {
    let period = node.config.evict_every.min(Duration::from_secs(1));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for instance in node.store.tick() {
            tracing::info!(appid = %instance.appid, hostname = %instance.hostname, env = %instance.env, "evicted: not renewed in time");
        }
    }
}

// === impl Node ===

impl Node {
    /// Whether reads are served yet.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Ends the warm-up.
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}
