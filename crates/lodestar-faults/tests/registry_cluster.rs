//! A built-in registry cluster under call load: one node killed and
//! restarted (empty: it warms up from its peer), then a partition between
//! the nodes (their replication goes through TCP proxies that blackhole).
//! Clients fail over, no call fails, replication repairs what the
//! partition kept apart, nothing is lost.

use std::{net::SocketAddr, time::Duration};

use lodestar::Instance;
use lodestar_faults::{Load, RegistryNode, connect, echo, figure, ids, listed, time_until};
use lodestar_test_support::{TcpProxy, free_port};
use lodestar_tonic::Channel;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(20);
const PARTITION: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_cluster_losing_a_node_and_then_partitioned_loses_nothing() {
    let a_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let b_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Each node reaches its peer through a proxy: the partition.
    let to_a = TcpProxy::start(a_addr.to_string()).await;
    let to_b = TcpProxy::start(b_addr.to_string()).await;
    let mut a = RegistryNode::start(a_addr, vec![to_b.addr()]).await;
    let _b = RegistryNode::start(b_addr, vec![to_a.addr()]).await;

    let registry = connect(&format!("lodestar://{a_addr},{b_addr}?ttl=2s")).await;
    let mut servers = Vec::new();
    for id in ["a", "b", "c"] {
        servers.push(echo(registry.clone(), Instance::new("reg", id)).await);
    }
    let only_a = connect(&format!("lodestar://{a_addr}")).await;
    let only_b = connect(&format!("lodestar://{b_addr}")).await;
    let three = ids(&["a", "b", "c"]);
    time_until(LIMIT, || async {
        listed(&*only_a, "reg").await == three && listed(&*only_b, "reg").await == three
    })
    .await
    .expect("three instances on both nodes");

    let clients = connect(&format!("lodestar://{b_addr},{a_addr}")).await;
    let channel = Channel::builder(clients.clone(), "reg").connect();
    let load = Load::start(&channel, 4, Duration::from_secs(5));
    time_until(LIMIT, || async { load.tally().by_instance.len() == 3 })
        .await
        .expect("calls to reach all three instances");

    // Node A killed for 3 s, restarted empty: it warms up from B.
    a.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.restart().await;
    let restarted = Instant::now();
    time_until(LIMIT, || async { listed(&*only_a, "reg").await == three })
        .await
        .expect("the restarted node to hold every instance again");
    let warmed = restarted.elapsed();
    assert!(load.progress(200, LIMIT).await, "calls go on");

    // Partition: replication between the nodes goes nowhere. A new
    // instance registers on A only meanwhile.
    to_a.blackhole();
    to_b.blackhole();
    let on_a = connect(&format!("lodestar://{a_addr}?ttl=2s")).await;
    servers.push(echo(on_a, Instance::new("reg", "d")).await);
    let four = ids(&["a", "b", "c", "d"]);
    time_until(LIMIT, || async { listed(&*only_a, "reg").await == four })
        .await
        .expect("d registered on A");
    tokio::time::sleep(PARTITION).await;
    let b_during = listed(&*only_b, "reg").await;
    to_a.restore();
    to_b.restore();
    let healed = Instant::now();
    time_until(LIMIT, || async {
        listed(&*only_a, "reg").await == four && listed(&*only_b, "reg").await == four
    })
    .await
    .expect("replication to repair: every instance on both nodes");
    let repaired = healed.elapsed();
    time_until(LIMIT, || async {
        load.tally().by_instance.get("d").copied().unwrap_or(0) > 10
    })
    .await
    .expect("the channel (following B) to call d");
    let tally = load.stop().await;
    figure(format_args!(
        "built-in registry, 2 nodes (TTL 2 s): node killed 3 s and restarted empty, warm again \
         {:.1} s after; partition {PARTITION:?} (B saw {:?} meanwhile), both nodes equal \
         {:.1} s after it healed; {} failed of {} calls",
        warmed.as_secs_f64(),
        b_during,
        repaired.as_secs_f64(),
        tally.failed,
        tally.ok + tally.failed,
    ));
    assert_eq!(tally.failed, 0, "{:?}", tally.errors);
}
