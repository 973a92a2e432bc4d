//! Registry nodes run in-process on loopback ports, and a raw HTTP client
//! to talk discovery's API to them.
#![allow(dead_code)] // each test file uses its own share of these helpers

pub mod go;

use std::{net::SocketAddr, time::Duration};

use lodestar_registry::{
    form::Form,
    server::{Config, Server},
};
use lodestar_test_support::http;
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

/// A running node. Dropping it kills it (connections included).
pub struct Node {
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

/// Short timers for tests.
pub fn config(addr: SocketAddr) -> Config {
    let mut config = Config::new(addr);
    config.poll_hold = Duration::from_secs(1);
    config.warmup = Duration::from_secs(30);
    config
}

/// Starts a node on a free port.
pub async fn start(tune: impl FnOnce(&mut Config)) -> Node {
    start_at(([127, 0, 0, 1], 0).into(), tune).await
}

/// Starts a node on `addr`.
pub async fn start_at(addr: SocketAddr, tune: impl FnOnce(&mut Config)) -> Node {
    let mut config = config(addr);
    tune(&mut config);
    let server = bind(config).await;
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Node {
        addr,
        task,
        stop: Some(stop),
    }
}

/// Binds, retrying for a while when the port is in use: a node restarted on
/// its port may find it taken for a moment as the local end of another
/// test's outgoing connection (free ports come from the ephemeral range).
async fn bind(config: Config) -> Server {
    for _ in 0..50 {
        match Server::bind(config.clone()).await {
            Ok(server) => return server,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("bind {}: {e}", config.listen),
        }
    }
    panic!("bind {}: still in use after 5 s", config.listen)
}

/// `n` nodes on free ports, each with the others as peers.
pub async fn cluster(n: usize, tune: impl Fn(&mut Config)) -> Vec<Node> {
    let ports: Vec<u16> = (0..n).map(|_| lodestar_test_support::free_port()).collect();
    let mut nodes = Vec::new();
    for &port in &ports {
        nodes.push(
            start_at(([127, 0, 0, 1], port).into(), |c| {
                peered(c, &ports, port, &tune)
            })
            .await,
        );
    }
    nodes
}

/// Sets the peers of the node on `port`.
pub fn peered(config: &mut Config, ports: &[u16], port: u16, tune: &impl Fn(&mut Config)) {
    config.peers = ports
        .iter()
        .filter(|p| **p != port)
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    tune(config);
}

impl Node {
    pub fn url(&self) -> String {
        format!("lodestar://{}", self.addr)
    }

    /// Abruptly: the listener and every connection close at once.
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Gracefully: held polls answer, then the node stops.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stopped in time")
            .expect("no panic")
            .expect("served");
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = http::get(&self.addr.to_string(), path).await.expect("GET");
        (response.status, response.json().unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, form: &str) -> (u16, Value) {
        let response = http::request(&self.addr.to_string(), "POST", path, form.as_bytes())
            .await
            .expect("POST");
        (response.status, response.json().unwrap_or(Value::Null))
    }

    pub async fn register(&self, appid: &str, hostname: &str, extra: &[(&str, &str)]) -> Value {
        // The first value of a key counts: `extra` overrides the defaults.
        let mut form = Form::new();
        for (k, v) in extra {
            form = form.pair(k, v);
        }
        let form = form
            .pair("zone", "z1")
            .pair("env", "dev")
            .pair("appid", appid)
            .pair("hostname", hostname)
            .pair("addrs", "grpc://127.0.0.1:9000")
            .pair("status", "1");
        self.post("/discovery/register", &form.finish()).await.1
    }

    pub async fn write(&self, path: &str, appid: &str, hostname: &str) -> Value {
        let form = Form::new()
            .pair("zone", "z1")
            .pair("env", "dev")
            .pair("appid", appid)
            .pair("hostname", hostname)
            .finish();
        self.post(path, &form).await.1
    }

    /// Hostnames of `appid` in `dev` (any status), or `None` when the node
    /// does not answer reads (warming up).
    pub async fn hostnames(&self, appid: &str) -> Option<Vec<String>> {
        let (status, reply) = self
            .get(&format!("/discovery/fetch?env=dev&appid={appid}&status=3"))
            .await;
        if status == 503 {
            return None;
        }
        let mut names: Vec<String> = reply["data"]["instances"]
            .as_object()
            .map(|zones| {
                zones
                    .values()
                    .flat_map(|l| l.as_array().cloned().unwrap_or_default())
                    .map(|i| i["hostname"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Some(names)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const PATIENCE: Duration = Duration::from_secs(10);
