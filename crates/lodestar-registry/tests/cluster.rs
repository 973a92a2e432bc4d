//! Three nodes replicating to each other: writes spread, long polls wake on
//! another node's write, a killed node warms up from its peers when it comes
//! back, and conflicting copies resolve by dirty timestamp.

mod support;

use std::{net::SocketAddr, time::Duration};

use lodestar_registry::form::Form;
use lodestar_test_support::eventually;
use support::{PATIENCE, cluster, peered, start_at};

async fn everywhere(nodes: &[support::Node], appid: &str, expected: &[&str]) {
    for node in nodes {
        eventually(
            &format!("{appid} = {expected:?} on {}", node.addr),
            PATIENCE,
            || async { node.hostnames(appid).await.is_some_and(|h| h == expected) },
        )
        .await;
    }
}

#[tokio::test]
async fn writes_spread_to_every_node() {
    let nodes = cluster(3, |_| {}).await;
    assert_eq!(
        nodes[0].register("echo", "h1", &[("color", "blue")]).await["code"],
        0
    );
    everywhere(&nodes, "echo", &["h1"]).await;
    let (_, fetched) = nodes[2]
        .get("/discovery/fetch?env=dev&appid=echo&status=3")
        .await;
    assert_eq!(fetched["data"]["instances"]["z1"][0]["color"], "blue");

    // Renewed through another node; cancelled through a third.
    assert_eq!(
        nodes[1].write("/discovery/renew", "echo", "h1").await["code"],
        0
    );
    let (_, reply) = nodes[1]
        .post("/discovery/set", "env=dev&appid=echo&hostname=h1&status=2")
        .await;
    assert_eq!(reply["code"], 0);
    for node in &nodes {
        eventually("the status change to spread", PATIENCE, || async {
            let (_, up) = node
                .get("/discovery/fetch?env=dev&appid=echo&status=1")
                .await;
            // Listed in its zone, with nothing up.
            up["data"]["instances"]["z1"] == serde_json::json!([])
        })
        .await;
    }
    assert_eq!(
        nodes[2].write("/discovery/cancel", "echo", "h1").await["code"],
        0
    );
    everywhere(&nodes, "echo", &[]).await;
}

#[tokio::test]
async fn a_long_poll_wakes_on_a_register_at_another_node() {
    let nodes = cluster(3, |c| c.poll_hold = Duration::from_secs(30)).await;
    nodes[0].register("echo", "h1", &[]).await;
    everywhere(&nodes, "echo", &["h1"]).await;
    let (_, fetched) = nodes[2]
        .get("/discovery/fetch?env=dev&appid=echo&status=3")
        .await;
    let latest = fetched["data"]["latest_timestamp"].as_i64().unwrap();

    let addr = nodes[2].addr.to_string();
    let poller = tokio::spawn(async move {
        let path = format!("/discovery/poll?env=dev&appid=echo&latest_timestamp={latest}");
        let response = lodestar_test_support::http::get(&addr, &path)
            .await
            .unwrap();
        response.json().unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    nodes[0].register("echo", "h2", &[]).await;
    let reply: serde_json::Value = poller.await.unwrap();
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(
        reply["data"]["instances"]["z1"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn a_killed_node_warms_up_from_its_peers_then_converges() {
    let mut nodes = cluster(3, |_| {}).await;
    let ports: Vec<u16> = nodes.iter().map(|n| n.addr.port()).collect();
    nodes[0].register("echo", "before", &[]).await;
    everywhere(&nodes, "echo", &["before"]).await;

    let dead = nodes.pop().unwrap();
    let addr: SocketAddr = dead.addr;
    dead.kill().await;
    // Written while it is down: retried until it is back.
    nodes[0].register("echo", "during", &[]).await;

    let restarted = start_at(addr, |c| peered(c, &ports, addr.port(), &|_| {})).await;
    // Never an empty or partial view: 503 until warm, then everything.
    eventually("the restarted node to serve both", PATIENCE, || async {
        match restarted.hostnames("echo").await {
            None => false,
            Some(hosts) => {
                assert_eq!(hosts, ["before", "during"], "served a partial view");
                true
            }
        }
    })
    .await;
    nodes.push(restarted);
    nodes[2].register("echo", "after", &[]).await;
    everywhere(&nodes, "echo", &["after", "before", "during"]).await;
}

#[tokio::test]
async fn a_warming_node_answers_reads_with_503_and_accepts_writes() {
    let [a, b] = [
        lodestar_test_support::free_port(),
        lodestar_test_support::free_port(),
    ];
    let ports = [a, b];
    let fresh = start_at(([127, 0, 0, 1], a).into(), |c| {
        peered(c, &ports, a, &|_| {})
    })
    .await;
    let (status, reply) = fresh
        .get("/discovery/fetch?env=dev&appid=echo&status=3")
        .await;
    assert_eq!((status, reply["code"].as_i64()), (503, Some(-503)));
    assert_eq!(fresh.register("echo", "h1", &[]).await["code"], 0);

    // The peer comes up: the pull succeeds and reads are served.
    let peer = start_at(([127, 0, 0, 1], b).into(), |c| {
        peered(c, &ports, b, &|_| {})
    })
    .await;
    everywhere(&[fresh, peer], "echo", &["h1"]).await;
}

#[tokio::test]
async fn conflicting_copies_resolve_by_dirty_timestamp() {
    let nodes = cluster(2, |_| {}).await;
    nodes[0].register("echo", "h", &[("version", "v1")]).await;
    everywhere(&nodes, "echo", &["h"]).await;
    let (_, fetched) = nodes[0]
        .get("/discovery/fetch?env=dev&appid=echo&status=3")
        .await;
    let dirty = fetched["data"]["instances"]["z1"][0]["dirty_timestamp"]
        .as_i64()
        .unwrap();

    // A newer copy that reached node 1 only (a write whose replication was
    // lost): node 0's next renew meets it, is answered -409, adopts it.
    let form = Form::new()
        .pair("zone", "z1")
        .pair("env", "dev")
        .pair("appid", "echo")
        .pair("hostname", "h")
        .pair("addrs", "grpc://127.0.0.1:9000")
        .pair("status", "1")
        .pair("version", "v2")
        .pair("replication", "true")
        .pair("dirty_timestamp", &(dirty + 1_000).to_string())
        .finish();
    assert_eq!(
        nodes[1].post("/discovery/register", &form).await.1["code"],
        0
    );
    assert_eq!(
        nodes[0].write("/discovery/renew", "echo", "h").await["code"],
        0
    );
    eventually("node 0 to adopt the newer copy", PATIENCE, || async {
        let (_, fetched) = nodes[0]
            .get("/discovery/fetch?env=dev&appid=echo&status=3")
            .await;
        fetched["data"]["instances"]["z1"][0]["version"] == "v2"
    })
    .await;

    // An older replicated copy is refused with the newer one.
    let stale = form
        .replace("v2", "v0")
        .replace(&(dirty + 1_000).to_string(), &(dirty - 1).to_string());
    let (_, reply) = nodes[1].post("/discovery/register", &stale).await;
    assert_eq!(reply["code"], -409);
    assert_eq!(reply["data"]["version"], "v2");
}

#[tokio::test]
async fn a_node_that_missed_a_register_gets_it_from_the_next_renew() {
    let nodes = cluster(2, |_| {}).await;
    // Registered at node 1 as a replicated write, so node 1 does not
    // forward it: node 0 never heard of it.
    let form = "zone=z1&env=dev&appid=echo&hostname=h&addrs=grpc%3A%2F%2F127.0.0.1%3A1&status=1&replication=true&dirty_timestamp=5";
    assert_eq!(
        nodes[1].post("/discovery/register", form).await.1["code"],
        0
    );
    eventually("node 0 to be warm, without it", PATIENCE, || async {
        nodes[0].hostnames("echo").await == Some(vec![])
    })
    .await;
    // A renew at node 1 is forwarded; node 0 answers -404 and is sent it.
    assert_eq!(
        nodes[1].write("/discovery/renew", "echo", "h").await["code"],
        0
    );
    everywhere(&nodes, "echo", &["h"]).await;
}
