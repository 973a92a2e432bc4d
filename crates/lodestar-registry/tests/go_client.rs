//! discovery's Go clients against lodestar nodes, replayed request for
//! request (see `support/go.rs`): they find their nodes through
//! `infra.discovery`, register, renew, poll, and are never made to spin.

mod support;

use std::time::Duration;

use lodestar_test_support::{eventually, free_port};
use serde_json::Value;
use support::{
    Node, PATIENCE,
    go::{DISCOVERY, GoClient, GoConfig, Polled},
    start, start_at,
};

fn go_config(nodes: &[&Node], zone: &str, host: &str) -> GoConfig {
    GoConfig {
        nodes: nodes.iter().map(|n| n.addr.to_string()).collect(),
        region: "sh".into(),
        zone: zone.into(),
        env: "dev".into(),
        host: host.into(),
        query_post: false,
    }
}

/// Turns of the client's poll loop until `done`, bounded.
async fn poll_until(client: &mut GoClient, what: &str, done: impl Fn(&GoClient) -> bool) {
    for _ in 0..50 {
        if done(client) {
            return;
        }
        client.poll().await;
    }
    panic!("{what}: not after 50 polls; sent {:#?}", client.sent);
}

/// Three nodes: two in sh001, one in sh002, replicating across zones.
async fn two_zones() -> Vec<Node> {
    let ports = [free_port(), free_port(), free_port()];
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let mut nodes = Vec::new();
    for (i, port) in ports.into_iter().enumerate() {
        let node = start_at(([127, 0, 0, 1], port).into(), |c| {
            if i < 2 {
                c.zone = "sh001".into();
                c.peers = vec![addr(1 - i)];
                c.cross_zone_peers = vec![("sh002".into(), addr(2))];
            } else {
                c.zone = "sh002".into();
                c.cross_zone_peers = vec![("sh001".into(), addr(0)), ("sh001".into(), addr(1))];
            }
        })
        .await;
        nodes.push(node);
    }
    nodes
}

#[tokio::test]
async fn new_finds_its_nodes_through_infra_discovery_then_registers_renews_and_polls() {
    let nodes = two_zones().await;
    let mut client = GoClient::new(go_config(&[&nodes[0]], "sh001", "go-1"))
        .await
        .unwrap();
    // New() polled infra.discovery first, with its env and hostname (no
    // zone), and nothing else before.
    let first = &client.sent[0];
    let expected = format!(
        "GET http://{}/discovery/polls?appid=infra.discovery&env=dev&hostname=go-1&latest_timestamp=0 ",
        nodes[0].addr
    );
    assert_eq!(first, &expected);
    assert!(client.sent.iter().all(|s| !s.contains("/discovery/nodes")));

    // Its node list: the http:// addresses of its zone, from every node's
    // own record (replicated, so it may take a change or two).
    let mut sh001 = vec![nodes[0].addr.to_string(), nodes[1].addr.to_string()];
    sh001.sort();
    poll_until(&mut client, "both sh001 nodes", |c| c.nodes() == sh001).await;
    assert!(!client.nodes().contains(&nodes[2].addr.to_string()));
    assert!(
        client
            .hostnames(DISCOVERY)
            .contains(&nodes[2].addr.to_string())
    );

    // Register, renew and poll through the nodes it found.
    assert!(sh001.contains(&client.pick_node()));
    assert_eq!(
        client
            .register("echo", &["grpc://127.0.0.1:9000"], r#"{"weight":"10"}"#)
            .await,
        0
    );
    client.build("echo");
    poll_until(&mut client, "echo to be seen", |c| {
        c.hostnames("echo") == ["go-1"]
    })
    .await;
    assert_eq!(client.renew("echo").await, 0);
    // Seen at the other zone's node too.
    eventually("echo to reach sh002", PATIENCE, || async {
        nodes[2].hostnames("echo").await == Some(vec!["go-1".into()])
    })
    .await;
    assert_eq!(client.cancel("echo").await, 0);
    assert_eq!(client.renew("echo").await, -404, "renew after cancel");
}

/// A client that moves to another node (after an error, or every 30 min)
/// resets every timestamp to 0, and the new node answers at once.
#[tokio::test]
async fn a_client_moving_node_gets_everything_again() {
    let nodes = support::cluster(2, |_| {}).await;
    let mut client = GoClient::new(go_config(&[&nodes[0]], "default", "go-1"))
        .await
        .unwrap();
    poll_until(&mut client, "both nodes", |c| c.nodes().len() == 2).await;
    assert_eq!(
        client.register("echo", &["grpc://127.0.0.1:1"], "").await,
        0
    );
    client.build("echo");
    poll_until(&mut client, "echo", |c| c.hostnames("echo") == ["go-1"]).await;
    eventually("echo on both nodes", PATIENCE, || async {
        nodes[0].hostnames("echo").await == Some(vec!["go-1".into()])
            && nodes[1].hostnames("echo").await == Some(vec!["go-1".into()])
    })
    .await;

    let before = client.pick_node();
    client.switch_node();
    assert_ne!(client.pick_node(), before);
    match client.poll().await {
        Polled::Answered { mut kept, skipped } => {
            kept.sort();
            assert_eq!(kept, ["echo", DISCOVERY]);
            assert!(skipped.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

/// discovery deletes an application whose last instance leaves and holds
/// later polls; the Go client skips an empty answer without keeping its
/// timestamp and polls again at once, so an empty answer would make it
/// spin.
#[tokio::test]
async fn no_empty_answer_when_the_last_instance_leaves_or_goes_down() {
    let node = start(|c| c.poll_hold = Duration::from_millis(300)).await;
    let mut client = GoClient::new(go_config(&[&node], "default", "go-1"))
        .await
        .unwrap();
    assert_eq!(
        client.register("echo", &["grpc://127.0.0.1:1"], "").await,
        0
    );
    client.build("echo");
    poll_until(&mut client, "echo", |c| c.hostnames("echo") == ["go-1"]).await;
    let kept = client.last_ts("echo");

    // Taken out of traffic: nothing up.
    let (_, reply) = node
        .post(
            "/discovery/set",
            "zone=default&env=dev&appid=echo&hostname=go-1&status=2",
        )
        .await;
    assert_eq!(reply["code"], 0);
    for _ in 0..3 {
        assert_eq!(client.poll().await, Polled::NotModified);
    }
    // Gone.
    assert_eq!(client.cancel("echo").await, 0);
    for _ in 0..3 {
        assert_eq!(client.poll().await, Polled::NotModified);
    }
    assert_eq!(client.last_ts("echo"), kept, "no answer to skip, none kept");

    // Back: answered.
    assert_eq!(
        client.register("echo", &["grpc://127.0.0.1:2"], "").await,
        0
    );
    match client.poll().await {
        Polled::Answered { kept, skipped } => {
            assert_eq!((kept, skipped), (vec!["echo".to_string()], vec![]));
        }
        other => panic!("{other:?}"),
    }
}

/// A poll held when the last instance leaves is not answered with the
/// empty application either.
#[tokio::test]
async fn a_held_poll_is_not_woken_with_an_empty_application() {
    let node = start(|c| c.poll_hold = Duration::from_secs(1)).await;
    let mut client = GoClient::new(go_config(&[&node], "default", "go-1"))
        .await
        .unwrap();
    let mut provider = GoClient::new(go_config(&[&node], "default", "provider-1"))
        .await
        .unwrap();
    assert_eq!(
        provider.register("echo", &["grpc://127.0.0.1:1"], "").await,
        0
    );
    client.build("echo");
    poll_until(&mut client, "echo", |c| {
        c.hostnames("echo") == ["provider-1"]
    })
    .await;

    let held = tokio::spawn(async move {
        let outcome = client.poll().await;
        (outcome, client)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(provider.cancel("echo").await, 0);
    let (outcome, client) = held.await.unwrap();
    assert_eq!(outcome, Polled::NotModified);
    // What the Go client keeps: the last instances it saw (it never empties
    // a view), as against discovery itself.
    assert_eq!(client.hostnames("echo"), ["provider-1"]);
}

#[tokio::test]
async fn set_status_2_takes_an_instance_out_of_a_go_consumers_view() {
    let node = start(|c| c.poll_hold = Duration::from_secs(1)).await;
    let mut consumer = GoClient::new(go_config(&[&node], "default", "consumer"))
        .await
        .unwrap();
    for host in ["a", "b"] {
        let mut provider = GoClient::new(go_config(&[&node], "default", host))
            .await
            .unwrap();
        assert_eq!(
            provider.register("echo", &["grpc://127.0.0.1:1"], "").await,
            0
        );
    }
    consumer.build("echo");
    poll_until(&mut consumer, "a and b", |c| {
        c.hostnames("echo") == ["a", "b"]
    })
    .await;

    let set = |status: &str| format!("zone=default&env=dev&appid=echo&hostname=b&status={status}");
    // Held poll woken by the operator's set: only a is left.
    let (_, reply) = node.post("/discovery/set", &set("2")).await;
    assert_eq!(reply["code"], 0);
    poll_until(&mut consumer, "b out of traffic", |c| {
        c.hostnames("echo") == ["a"]
    })
    .await;
    // Admin tools still see it, with its status.
    let (_, all) = node
        .get("/discovery/fetch?env=dev&appid=echo&status=3")
        .await;
    let statuses: Vec<(Value, Value)> = all["data"]["instances"]["default"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["hostname"].clone(), i["status"].clone()))
        .collect();
    assert!(statuses.contains(&("b".into(), 2.into())), "{all}");

    let (_, reply) = node.post("/discovery/set", &set("1")).await;
    assert_eq!(reply["code"], 0);
    poll_until(&mut consumer, "b back", |c| {
        c.hostnames("echo") == ["a", "b"]
    })
    .await;
}

/// kratos v2 sends the parameters of its POSTs in the query string.
#[tokio::test]
async fn kratos_v2_parameters_in_the_query_of_a_post() {
    let node = start(|_| {}).await;
    let mut config = go_config(&[&node], "default", "kratos-1");
    config.query_post = true;
    let mut client = GoClient::new(config).await.unwrap();
    let metadata = r#"{"kratos.v2.serviceinstance.id":"i-1"}"#;
    assert_eq!(
        client
            .register("helloworld", &["grpc://127.0.0.1:9000"], metadata)
            .await,
        0
    );
    assert_eq!(client.renew("helloworld").await, 0);
    client.build("helloworld");
    poll_until(&mut client, "helloworld", |c| {
        c.hostnames("helloworld") == ["kratos-1"]
    })
    .await;
    assert_eq!(client.cancel("helloworld").await, 0);
    assert!(
        client
            .sent
            .iter()
            .any(|s| s.contains("/discovery/register?"))
    );
}

/// The Go client's rhythm: register, then a renew every 30 s on its pooled
/// keep-alive connection, through several eviction rounds (90 s without a
/// renew evicts). Paused time: the minutes pass at once.
#[tokio::test(start_paused = true)]
async fn renews_every_30_s_keep_an_instance_through_eviction_rounds() {
    // No self-protection: one silent instance of two would turn it on.
    let node = start(|c| c.protect_threshold = 0.0).await;
    let mut client = GoClient::new(go_config(&[&node], "default", "go-1"))
        .await
        .unwrap();
    assert_eq!(
        client.register("echo", &["grpc://127.0.0.1:1"], "").await,
        0
    );
    for round in 0..8 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(client.renew("echo").await, 0, "renew {round}");
    }
    assert_eq!(node.hostnames("echo").await, Some(vec!["go-1".into()]));
    // Its registry node renewed its own record all along too.
    let (_, own) = node
        .get("/discovery/fetch?env=dev&appid=infra.discovery&status=1")
        .await;
    assert_eq!(own["code"], 0, "{own}");

    // Silent for longer than 90 s: evicted at the next round.
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(node.hostnames("echo").await, Some(vec![]));
    assert_eq!(
        client.renew("echo").await,
        -404,
        "a renew answered -404 registers again"
    );
}
