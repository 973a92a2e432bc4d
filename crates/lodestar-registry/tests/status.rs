//! `GET /lodestar/status`: lodestar's read-only view of a node for
//! operators (the dashboard): the node, its peers' replication state and
//! self-protection's counters.

mod support;

use std::time::Duration;

use lodestar_test_support::eventually;
use support::{PATIENCE, start};

#[tokio::test]
async fn reports_the_node_its_peers_and_renews() {
    let node = start(|c| {
        c.zone = "sh001".into();
        // A peer that is never there: replication to it fails.
        c.peers = vec!["127.0.0.1:1".into()];
        c.warmup = Duration::from_millis(1);
        c.protect_window = Duration::from_secs(1);
        c.renew_interval = Duration::from_secs(1);
    })
    .await;
    eventually("warm-up to give up", PATIENCE, || async {
        node.get("/lodestar/status").await.1["ready"] == true
    })
    .await;
    node.register("a", "h1", &[]).await;
    for _ in 0..3 {
        let reply = node.write("/discovery/renew", "a", "h1").await;
        assert_eq!(reply["code"], 0, "{reply}");
    }

    let (status, body) = node.get("/lodestar/status").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["addr"], node.addr.to_string());
    assert_eq!(body["zone"], "sh001");
    // The node's own record under infra.discovery, and h1.
    assert_eq!(body["instances"], 2, "{body}");
    let protection = &body["protection"];
    assert!(
        protection["renews_current"].as_u64().unwrap() >= 3,
        "{body}"
    );
    assert_eq!(protection["window_secs"], 1.0);
    assert_eq!(protection["threshold"], 0.85);
    // Two instances renewing every second, over a one-second window.
    assert_eq!(protection["expected_now"], 2.0, "{body}");
    let peers = body["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["addr"], "127.0.0.1:1");

    // The write to the missing peer fails: it is reported down, with writes
    // queued behind the one retried.
    eventually("the dead peer to be reported down", PATIENCE, || async {
        node.get("/lodestar/status").await.1["peers"][0]["up"] == false
    })
    .await;
}

#[tokio::test]
async fn reports_self_protection_when_renews_stop() {
    let node = start(|c| {
        c.protect_window = Duration::from_secs(1);
        c.renew_interval = Duration::from_millis(200);
        c.evict_after = Duration::from_secs(60);
    })
    .await;
    node.register("a", "h1", &[]).await;
    // h1 never renews (only the node's own record does): a whole window
    // later, renews are under the threshold.
    eventually("self-protection to turn on", PATIENCE, || async {
        let body = node.get("/lodestar/status").await.1;
        let p = &body["protection"];
        let renews = p["renews_last_window"].as_f64().unwrap_or(f64::MAX);
        let expected = p["expected_last_window"].as_f64().unwrap_or(0.0);
        p["protecting"] == true && expected > 0.0 && renews < 0.85 * expected
    })
    .await;
}
