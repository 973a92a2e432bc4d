//! Built-in registry nodes, in-process on loopback ports.

use std::{net::SocketAddr, time::Duration};

use lodestar_registry::server::{Config, Server};
use tokio::task::JoinHandle;

/// A built-in registry node serving from a task; killed (listener and
/// connections closed at once) by [`kill`](Self::kill) or drop.
#[derive(Debug)]
pub struct RegistryNode {
    config: Config,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

// === impl RegistryNode ===

impl RegistryNode {
    /// A node on `addr` with `peers` (`host:port`), renews expected every
    /// second and instances evicted after 3 s without one, and a 1 s poll
    /// hold (short timers for tests).
    pub async fn start(addr: SocketAddr, peers: Vec<String>) -> RegistryNode {
        let mut config = Config::new(addr);
        config.peers = peers;
        config.poll_hold = Duration::from_secs(1);
        config.renew_interval = Duration::from_secs(1);
        config.evict_after = Duration::from_secs(3);
        config.warmup = Duration::from_secs(5);
        let mut node = RegistryNode { config, task: None };
        node.restart().await;
        node
    }

    /// `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    /// Kills it: the listener and every connection close at once, and its
    /// data is gone.
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Starts it again on its port, empty (it warms up from its peers).
    ///
    /// # Panics
    ///
    /// Panics when the port stays taken for 5 s.
    pub async fn restart(&mut self) {
        self.kill().await;
        for _ in 0..50 {
            match Server::bind(self.config.clone()).await {
                Ok(server) => {
                    self.task = Some(tokio::spawn(server.serve(std::future::pending())));
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("binding a registry node on {}: {e}", self.config.listen),
            }
        }
        panic!("{} still in use after 5 s", self.config.listen)
    }
}

impl Drop for RegistryNode {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
