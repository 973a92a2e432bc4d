//! The registry server: discovery's HTTP API over an in-memory store, with
//! renews, eviction, self-protection, long polls, peer replication and
//! warm-up.
//!
//! [`Server::bind`] binds the listener; [`Server::serve`] runs the node until
//! the shutdown future resolves, then cancels the node's own record, lets
//! requests in flight finish (held polls answer at once) and the cancel
//! reach the peers. Dropping the `serve` future stops everything at once,
//! connections included: tests use that to "kill" a node.
//!
//! Like every discovery node, a node registers itself as an instance of
//! [`DISCOVERY_APPID`](crate::wire::DISCOVERY_APPID) at its advertised
//! address ([`Config::advertise`]): discovery's Go clients find their nodes
//! that way.
//!
//! Idle keep-alive connections are never closed (discovery's are not): Go
//! clients reuse a pooled connection every renew interval (30 s), and a
//! server that closes idle connections near that age races them, and Go
//! does not retry a POST it has written. Accepted connections get TCP
//! keep-alives, so those of vanished clients still go. What is timed is a
//! request in progress: its head must arrive within
//! [`Config::header_timeout`] of its first byte and its body within
//! [`Config::body_timeout`], so slow (slowloris) clients are cut off while
//! others are served.
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
mod own;
mod peers;
mod slow;
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
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
};

pub use config::Config;

use self::{own::Own, peers::Peers, store::Store};

/// How long requests in flight may take to finish after a shutdown, and
/// the node's cancel to reach its peers.
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

/// The connections of a node, served until drained.
struct Connections {
    graceful: GracefulShutdown,
    tasks: JoinSet<()>,
}

// === impl Server ===

impl Server {
    /// Binds `config.listen` (port 0 picks a free port).
    pub async fn bind(config: Config) -> io::Result<Self> {
        let addr = config.listen;
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // What `TcpListener::bind` does on Unix: a restarted node rebinds
        // at once.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        // Inherited by accepted connections: since idle ones are kept
        // open, those of vanished clients must still end.
        socket.set_keepalive(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        Ok(Self { listener, config })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The `host:port` this node registers itself with under
    /// `infra.discovery`: [`Config::advertise`], else the address bound
    /// unless it is unspecified (`0.0.0.0`, `[::]`), which no client can
    /// reach: then `None`, and the node does not register itself.
    pub fn advertised(&self) -> io::Result<Option<String>> {
        Ok(advertised(
            self.config.advertise.as_deref(),
            self.local_addr()?,
        ))
    }

    /// Serves until `shutdown` resolves, then drains requests in flight.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let mut config = self.config.clone();
        // Port 0 becomes the port bound, for `/discovery/nodes`.
        config.listen = self.listener.local_addr()?;
        config.advertise = self.advertised()?;
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
        let own = Own::new(&node.config);
        let keeping = own.clone().map(|own| {
            own.join(&node);
            tasks.spawn(own.keep(node.clone(), node.config.renew_interval))
        });
        announce(&node.config);
        let connections = accept(&self.listener, &node, shutdown).await;
        drop(self.listener);
        if let (Some(keeping), Some(own)) = (keeping, &own) {
            own.leave(&node);
            keeping.abort();
        }
        // Held polls answer at once; other requests and the cancel's
        // replication get DRAIN.
        stop_tx.send_replace(true);
        let (_, flushed) = tokio::join!(connections.drain(), node.peers.flush(DRAIN));
        if !flushed {
            tracing::warn!("some peers did not get this node's last writes within {DRAIN:?}");
        }
        Ok(())
    }
}

/// Logs what the node serves, and says when discovery's Go clients cannot
/// find it.
fn announce(config: &Config) {
    match &config.advertise {
        Some(advertised) => tracing::info!(
            addr = %config.listen, %advertised, zone = %config.zone, env = %config.env,
            "registry serving"
        ),
        None => tracing::warn!(
            addr = %config.listen,
            "registry serving, but not registered under infra.discovery: the address \
             listened on is unspecified; discovery's Go clients need --advertise host:port"
        ),
    }
}

/// What a node bound at `bound` advertises; see [`Server::advertised`].
fn advertised(configured: Option<&str>, bound: SocketAddr) -> Option<String> {
    match configured {
        Some(addr) => Some(addr.to_string()),
        None if bound.ip().is_unspecified() => None,
        None => Some(bound.to_string()),
    }
}

/// Accepts connections until `shutdown`.
async fn accept(
    listener: &TcpListener,
    node: &Arc<Node>,
    shutdown: impl Future<Output = ()>,
) -> Connections {
    let router = api::router(node.clone());
    let mut connections = Connections {
        graceful: GracefulShutdown::new(),
        tasks: JoinSet::new(),
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => connections.serve(stream, &router, node.config.header_timeout),
                Err(e) => {
                    // Out of file descriptors, mostly: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.tasks.join_next(), if !connections.tasks.is_empty() => {}
        }
    }
    connections
}

// === impl Connections ===

impl Connections {
    fn serve(&mut self, stream: TcpStream, router: &axum::Router, header_timeout: Duration) {
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        // hyper's header read timeout also runs while a keep-alive
        // connection waits for its next request, closing idle connections
        // at that age: not used (see the module docs); `HeadDeadline` times
        // heads from their first byte instead.
        let stream = slow::HeadDeadline::new(stream, header_timeout);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(stream), service);
        let connection = self.graceful.watch(connection);
        self.tasks.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }

    /// Lets requests in flight finish, for DRAIN at most.
    async fn drain(self) {
        if tokio::time::timeout(DRAIN, self.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {DRAIN:?}; closing them");
        }
        drop(self.tasks);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_not_advertised() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(advertised(None, at("0.0.0.0:7171")), None);
        assert_eq!(advertised(None, at("[::]:7171")), None);
        assert_eq!(
            advertised(None, at("127.0.0.1:7171")).as_deref(),
            Some("127.0.0.1:7171")
        );
        assert_eq!(
            advertised(Some("10.0.0.1:80"), at("0.0.0.0:7171")).as_deref(),
            Some("10.0.0.1:80")
        );
    }

    /// Idle connections stay open, so dead clients' must go by TCP
    /// keep-alive, set on the listener and inherited by what it accepts.
    #[tokio::test]
    async fn accepted_connections_have_tcp_keepalive() {
        let server = Server::bind(Config::new(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(TcpStream::connect(addr), server.listener.accept());
        let (stream, _) = accepted.unwrap();
        let socket = TcpSocket::from_std_stream(stream.into_std().unwrap());
        assert!(socket.keepalive().unwrap());
    }
}
