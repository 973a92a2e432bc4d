//! A registry with one of its three members down still connects, and every
//! operation works, through the multi-address URL a user would write: a
//! real three-member etcd cluster with one member killed, and three
//! in-process built-in registry nodes with one stopped. Each round is a
//! fresh `connect`, so the start-up check meets the dead member again and
//! again (it was the one that failed, 2 times in 5, before).

use std::{net::SocketAddr, time::Duration};

use lodestar::Instance;
use lodestar_registry::server::{Config, Server};
use lodestar_test_support::{EtcdCluster, eventually, free_port};
use tokio::{sync::oneshot, task::JoinHandle};

const ROUNDS: usize = 10;
const PATIENCE: Duration = Duration::from_secs(20);

/// One round: a fresh connect, then get, register, watch (which must see
/// the registration) and deregister, each of which must succeed.
async fn round(url: &str, service: &str, i: usize) {
    let registry = lodestar_connect::connect(url)
        .await
        .unwrap_or_else(|e| panic!("round {i}: connect to {url}: {e}"));
    let id = format!("r{i}");
    let before = registry
        .get(service)
        .await
        .unwrap_or_else(|e| panic!("round {i}: get: {e}"));
    assert!(
        before.instances().iter().all(|instance| instance.id != id),
        "round {i}: {id} registered before its round"
    );
    let registration = registry
        .register(instance(service, &id))
        .await
        .unwrap_or_else(|e| panic!("round {i}: register: {e}"));
    let watch = registry
        .watch(service)
        .await
        .unwrap_or_else(|e| panic!("round {i}: watch: {e}"));
    eventually(
        &format!("round {i}: the watch to see {id}"),
        PATIENCE,
        || {
            let watch = watch.clone();
            let id = id.clone();
            async move { watch.latest().instances().iter().any(|x| x.id == id) }
        },
    )
    .await;
    assert!(
        registry
            .get(service)
            .await
            .unwrap_or_else(|e| panic!("round {i}: get after register: {e}"))
            .instances()
            .iter()
            .any(|x| x.id == id),
        "round {i}: get does not show {id}"
    );
    registration
        .deregister()
        .await
        .unwrap_or_else(|e| panic!("round {i}: deregister: {e}"));
    drop(registry);
}

fn instance(service: &str, id: &str) -> Instance {
    Instance::new(service, id)
        .with_version("v1")
        .with_endpoint("grpc://127.0.0.1:50051".parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_a_member_killed_connects_and_serves_every_time() {
    let mut cluster = EtcdCluster::start(3).await;
    // The first member of the URL, whichever role it had.
    cluster.kill(0);
    cluster.wait_for_leader().await;
    let url = cluster.url();
    for i in 0..ROUNDS {
        round(&url, "echo", i).await;
    }

    cluster.kill(1);
    cluster.kill(2);
    none_answers(&url, &cluster.endpoints()).await;
}

/// With every member down, connecting fails as unreachable, naming them all.
async fn none_answers(url: &str, addrs: &[String]) {
    let error = match lodestar_connect::connect(url).await {
        Ok(_) => panic!("connected to {url} with every member down"),
        Err(error) => error,
    };
    assert!(
        matches!(error, lodestar::Error::Unreachable { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    for addr in addrs {
        assert!(text.contains(addr.as_str()), "{addr} not in: {text}");
    }
}

/// An in-process built-in registry node; dropping it stops it.
struct Node {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Node {
    async fn start(port: u16, ports: &[u16]) -> Node {
        let mut config = Config::new(([127, 0, 0, 1], port).into());
        config.peers = ports
            .iter()
            .filter(|p| **p != port)
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        config.poll_hold = Duration::from_secs(1);
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Node {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_registry_with_a_node_stopped_connects_and_serves_every_time() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for &port in &ports {
        nodes.push(Node::start(port, &ports).await);
    }
    let url = format!(
        "lodestar://{}",
        nodes
            .iter()
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    // Warm, then the first node of the URL goes away.
    let registry = lodestar_connect::connect(&url).await.unwrap();
    eventually("the cluster to serve reads", PATIENCE, || async {
        registry.get("echo").await.is_ok()
    })
    .await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    nodes.remove(0).stop().await;
    for i in 0..ROUNDS {
        round(&url, "echo", i).await;
    }

    for node in nodes {
        node.stop().await;
    }
    none_answers(&url, &addrs).await;
}
