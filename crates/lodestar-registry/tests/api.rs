//! discovery's HTTP API on one node, route by route, bad input included.

mod support;

use std::time::Duration;

use lodestar_test_support::eventually;
use serde_json::{Value, json};
use support::{PATIENCE, start};

#[tokio::test]
async fn register_fetch_renew_cancel() {
    let node = start(|_| {}).await;
    let reply = node
        .register(
            "echo",
            "echo-1",
            &[
                ("addrs", "http://127.0.0.1:9001"),
                ("version", "v1"),
                ("color", "blue"),
                ("metadata", r#"{"weight":"20","team":"core"}"#),
            ],
        )
        .await;
    assert_eq!(reply["code"], 0, "{reply}");

    let (status, fetched) = node
        .get("/discovery/fetch?appid=echo&env=dev&status=1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(fetched["code"], 0);
    let data = &fetched["data"];
    let instance = &data["instances"]["z1"][0];
    assert_eq!(instance["hostname"], "echo-1");
    assert_eq!(
        instance["addrs"],
        serde_json::json!(["http://127.0.0.1:9001", "grpc://127.0.0.1:9000"])
    );
    assert_eq!(instance["color"], "blue");
    assert_eq!(instance["metadata"]["color"], "blue");
    assert_eq!(instance["metadata"]["weight"], "20");
    assert_eq!(instance["status"], 1);
    for ts in [
        "reg_timestamp",
        "up_timestamp",
        "renew_timestamp",
        "dirty_timestamp",
        "latest_timestamp",
    ] {
        // Wall-clock nanoseconds: after 2020.
        assert!(
            instance[ts].as_i64().unwrap() > 1_577_836_800_000_000_000,
            "{ts}: {instance}"
        );
    }
    assert_eq!(data["latest_timestamp"], instance["latest_timestamp"]);

    assert_eq!(
        node.write("/discovery/renew", "echo", "echo-1").await["code"],
        0
    );
    assert_eq!(
        node.write("/discovery/cancel", "echo", "echo-1").await["code"],
        0
    );
    let (_, gone) = node
        .get("/discovery/fetch?appid=echo&env=dev&status=3")
        .await;
    assert_eq!(gone["code"], -404);
    assert_eq!(
        node.write("/discovery/cancel", "echo", "echo-1").await["code"],
        -404
    );
}

#[tokio::test]
async fn a_renew_of_an_unknown_instance_is_404() {
    let node = start(|_| {}).await;
    let reply = node.write("/discovery/renew", "echo", "ghost").await;
    assert_eq!(reply["code"], -404, "{reply}");
}

#[tokio::test]
async fn bad_input_is_400_never_500() {
    let node = start(|c| c.max_body = 1024).await;
    let ok = "zone=z1&env=dev&appid=a&hostname=h&addrs=grpc%3A%2F%2F1.2.3.4%3A5";
    let posts = [
        ("/discovery/register", ""),
        (
            "/discovery/register",
            "zone=z1&env=dev&appid=a&hostname=h&status=1",
        ),
        (
            "/discovery/register",
            "zone=z1&env=dev&hostname=h&addrs=grpc://1.2.3.4:5&status=1",
        ),
        (
            "/discovery/register",
            "zone=z1&env=dev&appid=a&hostname=h&addrs=nope&status=1",
        ),
        ("/discovery/register", &format!("{ok}&status=9")[..]),
        ("/discovery/register", ok),
        (
            "/discovery/register",
            "zone=z1&env=dev&appid=a&hostname=h&addrs=grpc://1.2.3.4:5&status=x",
        ),
        (
            "/discovery/register",
            &format!("{ok}&status=1&metadata=notjson"),
        ),
        (
            "/discovery/register",
            &format!("{ok}&status=1&metadata=%5B1%5D"),
        ),
        ("/discovery/register", &format!("{ok}&status=1&ttl=0")),
        ("/discovery/register", &format!("{ok}&status=1&ttl=many")),
        (
            "/discovery/register",
            "zone=z1&env=dev&appid=a%20b&hostname=h&addrs=grpc://1.2.3.4:5&status=1",
        ),
        (
            "/discovery/register",
            "zone=z1&env=dev&appid=a&hostname=h%00&addrs=grpc://1.2.3.4:5&status=1",
        ),
        ("/discovery/renew", "env=dev&appid=a"),
        ("/discovery/renew", "env=dev&hostname=h"),
        ("/discovery/cancel", "appid=a&hostname=h"),
        ("/discovery/set", "env=dev&appid=a&hostname=h"),
        ("/discovery/set", "env=dev&appid=a&status=1"),
        ("/discovery/set", "env=dev&appid=a&hostname=h&status=7"),
        ("/discovery/set", "env=dev&appid=a&hostname=h&metadata=%7B"),
        ("/discovery/register", &"x".repeat(4096)),
        ("/discovery/register", "\u{fffd}=%ff%fe"),
    ];
    for (path, body) in posts {
        let (status, reply) = node.post(path, body).await;
        // A body over the limit is also an HTTP 413; the others are 200.
        let expected = if body.len() == 4096 { 413 } else { 200 };
        assert_eq!(status, expected, "{path} {body:?}");
        assert_eq!(reply["code"], -400, "{path} {body:?}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let gets = [
        "/discovery/fetch?env=dev",
        "/discovery/fetch?appid=a",
        // discovery requires the status mask of a read.
        "/discovery/fetch?appid=a&env=dev",
        "/discovery/fetch?appid=a&env=dev&status=0",
        "/discovery/fetch?appid=a&env=dev&status=up",
        "/discovery/fetchs?env=dev&status=1",
        "/discovery/fetchs?env=dev&appid=a",
        "/discovery/poll?env=dev",
        "/discovery/poll?appid=a",
        "/discovery/polls?env=dev&appid=a&latest_timestamp=soon",
        // polls: one timestamp per appid.
        "/discovery/polls?env=dev&appid=a&appid=b&latest_timestamp=0",
        "/discovery/polls?env=dev&appid=a",
    ];
    for path in gets {
        let (status, reply) = node.get(path).await;
        assert_eq!(
            (status, reply["code"].clone()),
            (200, Value::from(-400)),
            "{path}: {reply}"
        );
    }
    let (_, reply) = node.get("/discovery/nope").await;
    assert_eq!(reply["code"], -404);
}

#[tokio::test]
async fn fetchs_and_polls_cover_several_appids() {
    let node = start(|_| {}).await;
    node.register("a", "h1", &[]).await;
    node.register("b", "h2", &[]).await;
    let (_, reply) = node
        .get("/discovery/fetchs?env=dev&appid=a&appid=b&appid=c&status=3")
        .await;
    assert_eq!(reply["code"], 0);
    assert_eq!(reply["data"]["a"]["instances"]["z1"][0]["hostname"], "h1");
    assert_eq!(reply["data"]["b"]["instances"]["z1"][0]["hostname"], "h2");
    assert!(reply["data"]["c"].is_null());
    // None known: an empty success, as in discovery (not -404).
    let (_, reply) = node
        .get("/discovery/fetchs?env=dev&appid=x&appid=y&status=3")
        .await;
    assert_eq!(
        (reply["code"].as_i64(), &reply["data"]),
        (Some(0), &json!({}))
    );

    let latest_a = reply_latest(&node, "a").await;
    let path = format!(
        "/discovery/polls?env=dev&hostname=c1&appid=a&appid=b&appid=c\
         &latest_timestamp={latest_a}&latest_timestamp=0&latest_timestamp=0"
    );
    let (_, reply) = node.get(&path).await;
    assert_eq!(reply["code"], 0);
    assert!(reply["data"]["a"].is_null(), "a is not newer: {reply}");
    assert_eq!(reply["data"]["b"]["instances"]["z1"][0]["hostname"], "h2");
    assert!(reply["data"]["c"].is_null());
    assert_eq!(reply["error"]["-404"], json!(["c"]), "{reply}");
}

async fn reply_latest(node: &support::Node, appid: &str) -> i64 {
    let (_, reply) = node
        .get(&format!("/discovery/fetch?env=dev&appid={appid}&status=3"))
        .await;
    reply["data"]["latest_timestamp"].as_i64().unwrap()
}

#[tokio::test]
async fn a_poll_answers_the_instances_themselves_and_an_unknown_appid_at_once() {
    let node = start(|c| c.poll_hold = Duration::from_secs(30)).await;
    // Unknown: -404 at once (a 30 s hold would fail the test's timeout).
    let (_, reply) = node
        .get("/discovery/poll?env=dev&appid=nope&latest_timestamp=0")
        .await;
    assert_eq!(reply["code"], -404, "{reply}");
    assert_eq!(reply["message"], "nope not found");

    node.register("a", "h1", &[]).await;
    // Fewer timestamps than appids: poll takes them all as 0.
    let (_, reply) = node.get("/discovery/poll?env=dev&appid=a").await;
    assert_eq!(reply["code"], 0, "{reply}");
    // The InstancesInfo itself, not a map keyed by appid.
    assert_eq!(reply["data"]["instances"]["z1"][0]["hostname"], "h1");
    assert_eq!(
        reply["data"]["latest_timestamp"],
        reply_latest(&node, "a").await
    );
    assert!(reply["data"]["a"].is_null());
}

#[tokio::test]
async fn a_poll_holds_then_answers_not_modified_or_the_change() {
    let node = start(|c| c.poll_hold = Duration::from_millis(500)).await;
    node.register("a", "h1", &[]).await;
    let (_, reply) = node
        .get("/discovery/poll?env=dev&appid=a&latest_timestamp=0")
        .await;
    let latest = reply["data"]["latest_timestamp"].as_i64().unwrap();

    let path = format!("/discovery/poll?env=dev&appid=a&latest_timestamp={latest}");
    let (_, reply) = node.get(&path).await;
    assert_eq!(reply["code"], -304);

    // A change during the hold answers at once.
    let node = std::sync::Arc::new(node);
    let poller = {
        let node = node.clone();
        tokio::spawn(async move { node.get(&path).await.1 })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.register("a", "h2", &[]).await;
    let reply = poller.await.unwrap();
    assert_eq!(reply["code"], 0, "{reply}");
    assert!(reply["data"]["latest_timestamp"].as_i64().unwrap() > latest);
    assert_eq!(
        reply["data"]["instances"]["z1"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn held_polls_are_bounded_and_released_at_shutdown() {
    let node = start(|c| {
        c.max_polls = 1;
        c.poll_hold = Duration::from_secs(30);
    })
    .await;
    let addr = node.addr.to_string();
    let held = tokio::spawn(async move {
        let path = "/discovery/polls?env=dev&hostname=c&appid=a&latest_timestamp=0";
        let response = lodestar_test_support::http::get(&addr, path).await.unwrap();
        (response.status, response.json().unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, reply) = node
        .get("/discovery/polls?env=dev&hostname=c&appid=b&latest_timestamp=0")
        .await;
    assert_eq!((status, reply["code"].clone()), (503, Value::from(-503)));

    // A graceful stop answers the held poll at once.
    let stopping = tokio::spawn(node.stop());
    let (_, reply) = held.await.unwrap();
    assert_eq!(reply["code"], -304);
    stopping.await.unwrap();
}

#[tokio::test]
async fn set_changes_status_colour_and_metadata() {
    let node = start(|_| {}).await;
    node.register("a", "h1", &[("metadata", r#"{"team":"core"}"#)])
        .await;
    node.register("a", "h2", &[]).await;
    let (_, reply) = node
        .post(
            "/discovery/set",
            "zone=z1&env=dev&appid=a&hostname=h1&hostname=h2&status=2&status=1&color=red",
        )
        .await;
    assert_eq!(reply["code"], 0, "{reply}");
    let (_, up) = node.get("/discovery/fetch?env=dev&appid=a&status=1").await;
    let up = &up["data"]["instances"]["z1"];
    assert_eq!(up.as_array().unwrap().len(), 1);
    assert_eq!(up[0]["hostname"], "h2");
    assert_eq!(up[0]["color"], "red");
    assert_eq!(up[0]["metadata"]["color"], "red");
    // Admin tools still see the instance taken out of traffic.
    let (_, waiting) = node.get("/discovery/fetch?env=dev&appid=a&status=2").await;
    assert_eq!(waiting["data"]["instances"]["z1"][0]["hostname"], "h1");
    assert_eq!(waiting["data"]["instances"]["z1"][0]["status"], 2);

    // Metadata is merged, as discovery's json.Unmarshal into the map does.
    let (_, reply) = node
        .post(
            "/discovery/set",
            "zone=z1&env=dev&appid=a&hostname=h1&metadata=%7B%22k%22%3A%22v%22%7D",
        )
        .await;
    assert_eq!(reply["code"], 0);
    let (_, all) = node.get("/discovery/fetch?env=dev&appid=a&status=3").await;
    let h1 = all["data"]["instances"]["z1"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["hostname"] == "h1")
        .unwrap()
        .clone();
    assert_eq!(
        (&h1["metadata"]["k"], &h1["metadata"]["team"]),
        (&json!("v"), &json!("core")),
        "{h1}"
    );

    // discovery answers -400 for an unknown hostname, and for one status
    // or metadata that is not per hostname; nothing is changed.
    for body in [
        "zone=z1&env=dev&appid=a&hostname=ghost&status=1",
        "zone=z1&env=dev&appid=a&hostname=h1&hostname=ghost&status=1&status=1",
        "zone=z1&env=dev&appid=ghost&hostname=h1&status=1",
        "zone=z1&env=dev&appid=a&hostname=h1&hostname=h2&status=1",
        "zone=z1&env=dev&appid=a&hostname=h1&metadata=%7B%22n%22%3A1%7D",
    ] {
        let (_, reply) = node.post("/discovery/set", body).await;
        assert_eq!(reply["code"], -400, "{body}: {reply}");
    }
    let (_, after) = node.get("/discovery/fetch?env=dev&appid=a&status=2").await;
    assert_eq!(after["data"]["instances"]["z1"][0]["hostname"], "h1");
}

#[tokio::test]
async fn fetch_takes_discoverys_status_mask_and_zone() {
    let node = start(|_| {}).await;
    node.register("a", "up", &[]).await;
    node.register("a", "down", &[("zone", "z2"), ("status", "2")])
        .await;
    let hosts = |reply: &Value| {
        let mut names: Vec<String> = reply["data"]["instances"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|l| l.as_array().unwrap().clone())
            .map(|i| i["hostname"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    for (query, expected) in [
        ("status=1", &["up"][..]),
        ("status=2", &["down"]),
        ("status=3", &["down", "up"]),
        ("status=4", &[]),
        ("status=3&zone=z2", &["down"]),
        ("status=1&zone=z2", &[]),
    ] {
        let (_, reply) = node
            .get(&format!("/discovery/fetch?env=dev&appid=a&{query}"))
            .await;
        assert_eq!(reply["code"], 0, "{query}: {reply}");
        assert_eq!(hosts(&reply), expected, "{query}");
    }
    // Every zone is listed, empty when filtered out; a zone the app lacks
    // is not found.
    let (_, up) = node.get("/discovery/fetch?env=dev&appid=a&status=1").await;
    assert_eq!(up["data"]["instances"]["z2"], json!([]));
    let (_, none) = node
        .get("/discovery/fetch?env=dev&appid=a&status=3&zone=z9")
        .await;
    assert_eq!(none["code"], -404);
}

#[tokio::test]
async fn nodes_and_fetch_all() {
    let node = start(|c| {
        c.zone = "sh001".into();
        c.peers = vec!["127.0.0.1:1".into()];
        c.warmup = Duration::from_millis(1);
    })
    .await;
    eventually("warm-up to give up", PATIENCE, || async {
        node.get("/discovery/fetch/all").await.0 == 200
    })
    .await;
    node.register("a", "h1", &[]).await;
    node.register("b", "h2", &[("env", "prod")]).await;
    let (_, reply) = node.get("/discovery/nodes").await;
    let nodes = reply["data"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["addr"], node.addr.to_string());
    assert_eq!(nodes[0]["zone"], "sh001");
    assert_eq!(nodes[1]["addr"], "127.0.0.1:1");

    let (_, all) = node.get("/discovery/fetch/all").await;
    assert_eq!(all["data"]["a"][0]["hostname"], "h1");
    let (_, dev) = node.get("/discovery/fetch/all?env=dev").await;
    assert!(dev["data"]["b"].is_null(), "{dev}");
}

#[tokio::test]
async fn unrenewed_and_ttl_instances_are_evicted() {
    let node = start(|c| {
        c.evict_after = Duration::from_secs(1);
        c.evict_every = Duration::from_secs(1);
        c.protect_threshold = 0.0;
    })
    .await;
    node.register("a", "plain", &[]).await;
    node.register("leased", "h", &[("ttl", "1")]).await;
    eventually("both to be evicted", PATIENCE, || async {
        node.hostnames("a").await == Some(vec![]) && node.hostnames("leased").await == Some(vec![])
    })
    .await;
}

#[tokio::test]
async fn a_ttl_instance_goes_within_its_ttl_plus_a_second() {
    let node = start(|_| {}).await;
    node.register("leased", "h", &[("ttl", "1")]).await;
    // Far sooner than the 90 s of the general rule.
    eventually("the leased instance to go", PATIENCE, || async {
        node.hostnames("leased").await == Some(vec![])
    })
    .await;
}

/// discovery never closes idle keep-alive connections; Go clients reuse a
/// pooled one every renew interval (30 s) and do not retry a POST they
/// have written, so a node that closed idle connections at 30 s would race
/// them. Paused time: the hold of 95 s passes at once.
#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_outlives_the_renew_interval() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let node = start(|_| {}).await;
    let mut stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let renew = "zone=z1&env=dev&appid=a&hostname=h";
    for round in 0..3 {
        let request = format!(
            "POST /discovery/renew HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{renew}",
            renew.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let mut buf = [0; 4096];
        while !complete(&response) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "round {round}: the node closed the connection");
            response.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&response);
        assert!(text.contains(r#""code":-404"#), "{text}");
        tokio::time::sleep(Duration::from_secs(95)).await;
    }
}

/// Whether `raw` holds a whole response with a Content-Length body.
fn complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>())
        })
        .and_then(Result::ok);
    length.is_some_and(|n| body.len() >= n)
}
