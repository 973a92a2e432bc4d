//! Every node registers itself under `infra.discovery`, as discovery's
//! nodes do: its advertised `http://host:port`, zone and env as configured;
//! renewed, replicated, cancelled at shutdown.

mod support;

use std::time::Duration;

use lodestar_test_support::{eventually, free_port};
use serde_json::Value;
use support::{Node, PATIENCE, cluster, start_at};

/// The records of `infra.discovery` in `env`, as a node has them (any status).
async fn records(node: &Node, env: &str) -> Vec<Value> {
    let (_, reply) = node
        .get(&format!(
            "/discovery/fetch?env={env}&appid=infra.discovery&status=3"
        ))
        .await;
    let mut list: Vec<Value> = reply["data"]["instances"]
        .as_object()
        .map(|zones| {
            zones
                .values()
                .flat_map(|l| l.as_array().unwrap().clone())
                .collect()
        })
        .unwrap_or_default();
    list.sort_by_key(|r| r["hostname"].as_str().unwrap_or_default().to_string());
    list
}

async fn hostnames(node: &Node) -> Vec<String> {
    records(node, "dev")
        .await
        .iter()
        .map(|r| r["hostname"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(nodes: &[&Node]) -> Vec<String> {
    let mut addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    addrs.sort();
    addrs
}

#[tokio::test]
async fn every_node_registers_itself_and_renews_and_replicates_it() {
    let nodes = cluster(2, |c| c.renew_interval = Duration::from_millis(200)).await;
    let both = sorted(&[&nodes[0], &nodes[1]]);
    for node in &nodes {
        eventually("both records on every node", PATIENCE, || async {
            hostnames(node).await == both
        })
        .await;
    }
    let own = records(&nodes[0], "dev")
        .await
        .into_iter()
        .find(|r| r["hostname"] == nodes[0].addr.to_string())
        .unwrap();
    assert_eq!(own["appid"], "infra.discovery");
    assert_eq!(
        own["addrs"],
        serde_json::json!([format!("http://{}", nodes[0].addr)])
    );
    assert_eq!(
        (&own["zone"], &own["env"], &own["status"]),
        (&"default".into(), &"dev".into(), &1.into())
    );
    eventually("the record to be renewed", PATIENCE, || async {
        records(&nodes[0], "dev").await.into_iter().any(|r| {
            r["hostname"] == nodes[0].addr.to_string()
                && r["renew_timestamp"].as_i64() > r["reg_timestamp"].as_i64()
        })
    })
    .await;
}

#[tokio::test]
async fn a_stopped_node_has_cancelled_its_record_at_its_peers() {
    let mut nodes = cluster(2, |_| {}).await;
    let both = sorted(&[&nodes[0], &nodes[1]]);
    eventually("node 0 to have both records", PATIENCE, || async {
        hostnames(&nodes[0]).await == both
    })
    .await;
    // A graceful stop returns once the cancel has reached the peer.
    nodes.pop().unwrap().stop().await;
    assert_eq!(hostnames(&nodes[0]).await, [nodes[0].addr.to_string()]);
}

#[tokio::test]
async fn a_record_cancelled_by_an_operator_comes_back_at_the_next_renew() {
    let port = free_port();
    let node = start_at(([127, 0, 0, 1], port).into(), |c| {
        c.renew_interval = Duration::from_millis(200);
    })
    .await;
    let form = format!("zone=default&env=dev&appid=infra.discovery&hostname=127.0.0.1:{port}");
    assert_eq!(node.post("/discovery/cancel", &form).await.1["code"], 0);
    eventually("the record to be back", PATIENCE, || async {
        hostnames(&node).await == [node.addr.to_string()]
    })
    .await;
}

#[tokio::test]
async fn advertise_zone_and_env_are_as_configured() {
    let port = free_port();
    let node = start_at(([127, 0, 0, 1], port).into(), |c| {
        c.advertise = Some(format!("localhost:{port}"));
        c.zone = "sh001".into();
        c.env = "prod".into();
    })
    .await;
    let records = records(&node, "prod").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["hostname"], format!("localhost:{port}"));
    assert_eq!(
        records[0]["addrs"],
        serde_json::json!([format!("http://localhost:{port}")])
    );
    assert_eq!(records[0]["zone"], "sh001");
    assert!(hostnames(&node).await.is_empty(), "not in dev");
    let (_, nodes) = node.get("/discovery/nodes").await;
    assert_eq!(nodes["data"][0]["addr"], format!("localhost:{port}"));
}
