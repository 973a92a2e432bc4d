//! The backend conformance suite against the built-in registry
//! (`lodestar://`); see `lodestar_test_support::conformance`.
//!
//! The registry is two in-process nodes replicating to each other, and
//! every client's URL names both, as a production client's would: a
//! fail-over stops the node in use and the clients move to the other.
//! It has every capability the suite knows but lasting overrides:
//! discovery keeps an operator's `set` in the instance's record, so an
//! instance that registers again starts without it.

mod support;

use std::{net::SocketAddr, sync::Arc};

use lodestar::Registry;
use lodestar_registry::{LodestarRegistry, form::Form};
use lodestar_test_support::conformance::{Backend, Capability, PATIENCE};
use lodestar_test_support::{eventually, free_port};
use serde_json::Value;
use support::{Node, peered, start_at};

/// How many nodes the registry has.
const NODES: usize = 2;

/// Two replicating nodes on fixed ports, each of which may be stopped.
struct Lodestar {
    ports: Vec<u16>,
    nodes: Vec<Option<Node>>,
    /// The node the clients use: the first, until a fail-over stops it.
    in_use: usize,
}

async fn pair() -> Lodestar {
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let mut backend = Lodestar {
        nodes: (0..NODES).map(|_| None).collect(),
        ports,
        in_use: 0,
    };
    backend.start_all().await;
    backend
}

lodestar_test_support::conformance_suite!(pair);

// === impl Lodestar ===

impl Lodestar {
    fn addr(&self, i: usize) -> SocketAddr {
        ([127, 0, 0, 1], self.ports[i]).into()
    }

    /// Starts node `i` on its port, peered with the others; does not wait.
    async fn start(&mut self, i: usize) {
        let ports = self.ports.clone();
        let node = start_at(self.addr(i), |c| peered(c, &ports, ports[i], &|_| {})).await;
        self.nodes[i] = Some(node);
    }

    /// Starts every stopped node and waits until all serve reads.
    async fn start_all(&mut self) {
        for i in 0..NODES {
            if self.nodes[i].is_none() {
                self.start(i).await;
            }
        }
        for node in self.nodes.iter().flatten() {
            eventually("a registry node to serve reads", PATIENCE, || async {
                node.hostnames("any").await.is_some()
            })
            .await;
        }
    }

    async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.kill().await;
        }
    }

    fn running(&self) -> &Node {
        self.nodes[self.in_use]
            .as_ref()
            .expect("the node in use is running")
    }

    /// Waits until every running node holds the same instances.
    async fn replicated(&self) {
        let nodes: Vec<&Node> = self.nodes.iter().flatten().collect();
        eventually("the nodes to agree", PATIENCE, || async {
            let mut views = Vec::new();
            for node in &nodes {
                views.push(everything(node).await);
            }
            views.windows(2).all(|w| w[0] == w[1])
        })
        .await;
    }
}

/// Every application's hostnames on `node`, for comparing nodes.
async fn everything(node: &Node) -> Vec<(String, Vec<String>)> {
    let (_, reply) = node.get("/discovery/fetch/all").await;
    let mut apps: Vec<(String, Vec<String>)> = reply["data"]
        .as_object()
        .map(|apps| {
            apps.iter()
                .map(|(appid, list)| (appid.clone(), hostnames(list)))
                .collect()
        })
        .unwrap_or_default();
    apps.retain(|(_, hosts)| !hosts.is_empty());
    apps.sort();
    apps
}

fn hostnames(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["hostname"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

impl Backend for Lodestar {
    fn name(&self) -> &str {
        "lodestar"
    }

    fn lacks(&self, capability: Capability) -> Option<&'static str> {
        match capability {
            Capability::LastingOverrides => Some(
                "discovery's set changes the instance's record: a new registration of \
                 the id starts up, without the override, as in discovery",
            ),
            _ => None,
        }
    }

    async fn connect(&self) -> Arc<dyn Registry> {
        let nodes: Vec<String> = (0..NODES).map(|i| self.addr(i).to_string()).collect();
        let url = format!("lodestar://{}?ttl=2s&timeout=2s", nodes.join(","));
        let registry = LodestarRegistry::connect(url.parse().expect("a lodestar URL"))
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Arc::new(registry)
    }

    /// What discovery's API accepts but lodestar cannot use: an instance
    /// whose only address is not `scheme://host:port`.
    async fn write_garbage(&mut self, service: &str, key: &str) {
        let form = Form::new()
            .pair("zone", "z1")
            .pair("env", "dev")
            .pair("appid", service)
            .pair("hostname", key)
            .pair("addrs", "grpc://127.0.0.1:no-port")
            .pair("status", "1")
            .finish();
        let (status, reply) = self.running().post("/discovery/register", &form).await;
        assert_eq!(
            (status, &reply["code"]),
            (200, &Value::from(0)),
            "raw register: {reply}"
        );
    }

    /// Every node stops, connections and all; they keep nothing.
    async fn outage(&mut self) {
        for i in 0..NODES {
            self.kill(i).await;
        }
    }

    /// Every node again on its port, empty: the nodes keep no data.
    async fn restore(&mut self) {
        self.start_all().await;
    }

    async fn restart_empty(&mut self) {
        self.outage().await;
        self.restore().await;
    }

    /// Brings back a node stopped before (it warms up from the other), then
    /// stops the node in use once the two agree.
    async fn fail_over(&mut self) {
        self.start_all().await;
        self.replicated().await;
        let stopped = self.in_use;
        self.kill(stopped).await;
        self.in_use = (stopped + 1) % NODES;
    }
}
