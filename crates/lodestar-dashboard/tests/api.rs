//! The JSON API and the event feed against real registries: an etcd
//! process and the built-in registry server, with real echo servers whose
//! gRPC health the dashboard checks.

mod support;

use std::time::Duration;

use lodestar::Subscriber;
use lodestar_dashboard::Config;
use lodestar_test_support::{EtcdNode, eventually};
use serde_json::json;
use support::{PATIENCE, dashboard, echo};

/// Services, instances with health, the live feed of joins and leaves, and
/// subscribers, on etcd.
#[tokio::test]
async fn follows_services_instances_and_changes_on_etcd() {
    let etcd = EtcdNode::start().await;
    let registry = lodestar_connect::connect(&etcd.url()).await.unwrap();
    let a = echo(registry.clone(), "echo", "a", "v1").await;
    let served = dashboard(registry.clone(), Config::new(etcd.url())).await;

    // The page and its assets are served.
    let (status, page) = served.text("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("/app.js"), "{page}");
    assert_eq!(served.text("/app.js").await.0, 200);
    assert_eq!(served.get("/api/nope").await.0, 404);

    eventually("echo to be listed", PATIENCE, || async {
        served.get("/api/services").await.1["services"][0]["name"] == "echo"
    })
    .await;
    let (_, list) = served.get("/api/services").await;
    assert_eq!(list["registry"]["reachable"], true, "{list}");
    let echo_line = &list["services"][0];
    assert_eq!(echo_line["instances"], 1, "{list}");
    assert_eq!(echo_line["versions"], json!({"v1": 1}));
    assert_eq!(echo_line["lanes"], json!({"base": 1}));
    assert_eq!(echo_line["zones"], json!({"z1": 1}));

    // The instance, and its gRPC health checked by the dashboard.
    eventually("a's health to be SERVING", PATIENCE, || async {
        served.get("/api/services/echo").await.1["instances"][0]["health"]["status"] == "SERVING"
    })
    .await;
    let (_, service) = served.get("/api/services/echo").await;
    let inst = &service["instances"][0];
    assert_eq!(inst["id"], "a");
    assert_eq!(inst["endpoints"], json!([format!("grpc://{}", a.addr)]));
    assert_eq!(inst["version"], "v1");
    assert_eq!(inst["lane"], "base");
    assert_eq!(inst["zone"], "z1");
    assert_eq!(inst["weight"], 100);
    assert_eq!(inst["status"], "up");
    assert!(inst["since_ms"].as_u64().is_some(), "{inst}");
    // etcd's records do not say when they registered.
    assert_eq!(inst["since_source"], "first seen by this dashboard");
    assert_eq!(served.get("/api/services/nope").await.0, 404);

    // A new instance and a leaving one reach an open event stream.
    let mut events = served.events().await;
    let b = echo(registry.clone(), "echo", "b", "v2").await;
    let join = events
        .next_change("b joins", |e| e["id"] == "b" && e["kind"] == "join")
        .await;
    assert_eq!(join["service"], "echo");
    assert_eq!(served.instances("echo").await.len(), 2);
    b.stop().await;
    events
        .next_change("b leaves", |e| e["id"] == "b" && e["kind"] == "leave")
        .await;
    assert_eq!(
        served.instances("echo").await,
        [("a".to_string(), "up".to_string())]
    );

    // A page opened later gets the feed kept so far first.
    let mut later = served.events().await;
    later
        .next_change("the backlog's join of b", |e| {
            e["id"] == "b" && e["kind"] == "join"
        })
        .await;

    // Subscribers recorded in etcd.
    let subscription = registry
        .subscribe(Subscriber::this_process("echo"))
        .await
        .unwrap();
    let (_, subs) = served.get("/api/services/echo/subscribers").await;
    let list = subs["subscribers"].as_array().expect("a list");
    assert_eq!(list.len(), 1, "{subs}");
    assert_eq!(list[0]["pid"], std::process::id());
    drop(subscription);

    // A shutdown ends open event streams.
    served.stop().await;
    assert!(events.ends_within(Duration::from_secs(5)).await);
    a.stop().await;
}

/// etcd killed: the registry is reported unreachable with the last known
/// state kept and the time it was last read; it comes back on restart.
#[tokio::test]
async fn reports_an_unreachable_registry_with_the_last_known_state() {
    let mut etcd = EtcdNode::start().await;
    let registry = lodestar_connect::connect(&etcd.url()).await.unwrap();
    let _a = echo(registry.clone(), "echo", "a", "v1").await;
    let served = dashboard(registry.clone(), Config::new(etcd.url())).await;
    eventually("echo to be listed", PATIENCE, || async {
        served.instances("echo").await.len() == 1
    })
    .await;

    etcd.kill();
    eventually(
        "the registry to be reported unreachable",
        PATIENCE,
        || async { served.get("/api/status").await.1["registry"]["reachable"] == false },
    )
    .await;
    let (_, status) = served.get("/api/status").await;
    let registry_json = &status["registry"];
    assert!(registry_json["error"].as_str().is_some(), "{status}");
    assert!(registry_json["last_ok"].as_u64().is_some(), "{status}");
    assert!(
        registry_json["failing_since"].as_u64().is_some(),
        "{status}"
    );
    // The last known state stays.
    assert_eq!(served.instances("echo").await.len(), 1);

    etcd.restart().await;
    eventually("the registry to be reachable again", PATIENCE, || async {
        served.get("/api/status").await.1["registry"]["reachable"] == true
    })
    .await;
}

/// Writes: refused on a read-only dashboard (403) and without the right
/// token (401, nothing recorded); with it, made through `Registrar::set`
/// and recorded in the audit list with who and from where.
#[tokio::test]
async fn writes_need_the_token_and_are_audited() {
    let etcd = EtcdNode::start().await;
    let registry = lodestar_connect::connect(&etcd.url()).await.unwrap();
    let _a = echo(registry.clone(), "echo", "a", "v1").await;
    let path = "/api/services/echo/instances/a";
    let down = json!({"who": "ann", "status": "down"});

    let read_only = dashboard(registry.clone(), Config::new(etcd.url())).await;
    assert_eq!(read_only.get("/api/status").await.1["writes"], false);
    let (status, body) = read_only.post(path, Some("t"), &down).await;
    assert_eq!(status, 403, "{body}");

    let served = dashboard(
        registry.clone(),
        Config::new(etcd.url()).with_writes("s3cret"),
    )
    .await;
    assert_eq!(served.get("/api/status").await.1["writes"], true);
    // The serve helper registers once serving, in the background.
    eventually("a to be listed", PATIENCE, || async {
        served.instances("echo").await.len() == 1
    })
    .await;
    for token in [None, Some("wrong"), Some("s3cret-and-more")] {
        let (status, body) = served.post(path, token, &down).await;
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    assert_eq!(served.get("/api/audit").await.1["audit"], json!([]));
    let (status, body) = served
        .post(path, Some("s3cret"), &json!({"status": "down"}))
        .await;
    assert_eq!(status, 400, "a write says who makes it: {body}");
    let (status, body) = served
        .post(path, Some("s3cret"), &json!({"who": "ann", "weight": 0}))
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = served.post(path, Some("s3cret"), &down).await;
    let (_, audit) = served.get("/api/audit").await;
    let entry = &audit["audit"][0];
    assert_eq!(entry["who"], "ann", "{audit}");
    assert!(
        entry["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{audit}"
    );
    assert_eq!(entry["service"], "echo");
    assert_eq!(entry["id"], "a");
    assert_eq!(entry["what"], "status down");
    assert_eq!(entry["result"], body["audit"]["result"], "{body}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(entry["result"], "ok");
    eventually("a to show down", PATIENCE, || async {
        served.instances("echo").await == [("a".to_string(), "down".to_string())]
    })
    .await;
}

/// The built-in registry: services through `lodestar://`, and the node
/// view (the node, its peers, self-protection's counters).
#[tokio::test]
async fn shows_the_built_in_registry_and_its_nodes() {
    use lodestar_registry::server::{Config as NodeConfig, Server};

    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    // A peer that is never there: shown as not replicating.
    config.peers = vec!["127.0.0.1:1".to_string()];
    config.warmup = Duration::from_millis(1);
    let server = Server::bind(config).await.unwrap();
    let node = server.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let url = format!("lodestar://{node}");
    let registry = lodestar_connect::connect(&url).await.unwrap();
    let _a = echo(registry.clone(), "echo", "a", "v1").await;
    let served = dashboard(registry.clone(), Config::new(url.clone())).await;

    eventually("echo to be listed", PATIENCE, || async {
        served.instances("echo").await.len() == 1
    })
    .await;
    eventually("the node to answer", PATIENCE, || async {
        served.get("/api/registry").await.1["nodes"][node.to_string()]["status"]["ready"] == true
    })
    .await;
    // The registry's own registration time, from the node.
    eventually("a's registration time from the node", PATIENCE, || async {
        let (_, body) = served.get("/api/services/echo").await;
        body["instances"][0]["since_source"] == "registered (the registry's record)"
    })
    .await;
    let (_, body) = served.get("/api/services/echo").await;
    let since = body["instances"][0]["since_ms"].as_u64().unwrap();
    let now = lodestar::Subscriber::this_process("x").since * 1000;
    assert!(
        since <= now + 1000 && since + 60_000 > now,
        "{since} vs {now}"
    );
    let (_, view) = served.get("/api/registry").await;
    assert_eq!(view["builtin"], true);
    let status = &view["nodes"][node.to_string()]["status"];
    assert_eq!(status["protection"]["protecting"], false, "{view}");
    assert_eq!(status["protection"]["threshold"], 0.85);
    assert_eq!(status["peers"][0]["addr"], "127.0.0.1:1");
    // The peer it names is followed too, and reported down.
    eventually("the missing peer to be reported", PATIENCE, || async {
        let (_, view) = served.get("/api/registry").await;
        view["nodes"]["127.0.0.1:1"]["error"].is_string()
    })
    .await;
    running.abort();
}

/// A node that guards reads (`--token-reads`): the node view sends the
/// registry's token; without it the node is shown refusing, not ready.
#[tokio::test]
async fn the_node_view_sends_the_registry_token() {
    use lodestar_registry::{
        Token,
        server::{Config as NodeConfig, Server},
    };

    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.warmup = Duration::from_millis(1);
    config.token = Some(Token::new("s3cret").unwrap());
    config.token_reads = true;
    let server = Server::bind(config).await.unwrap();
    let node = server.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let registry = lodestar_connect::connect(&format!("lodestar://{node}?token=s3cret"))
        .await
        .unwrap();
    let shown = format!("lodestar://{node}");

    let with = dashboard(
        registry.clone(),
        Config::new(shown.clone()).with_registry_token("s3cret"),
    )
    .await;
    eventually("the node to answer with the token", PATIENCE, || async {
        with.get("/api/registry").await.1["nodes"][node.to_string()]["status"]["ready"] == true
    })
    .await;

    let without = dashboard(registry, Config::new(shown)).await;
    eventually("the node to refuse without it", PATIENCE, || async {
        let (_, view) = without.get("/api/registry").await;
        view["nodes"][node.to_string()]["error"]
            .as_str()
            .is_some_and(|e| e.contains("401"))
    })
    .await;
    running.abort();
}

/// Writes on the built-in registry, which implements `set`: weight, down,
/// clear, each seen in the dashboard's view and feed; and the health of an
/// instance whose endpoint answers nothing.
#[tokio::test]
async fn writes_change_weight_and_status_on_the_built_in_registry() {
    use lodestar::Instance;
    use lodestar_registry::server::{Config as NodeConfig, Server};

    let server = Server::bind(NodeConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let url = format!("lodestar://{}", server.local_addr().unwrap());
    let node = tokio::spawn(server.serve(std::future::pending()));
    let registry = lodestar_connect::connect(&url).await.unwrap();
    let _a = echo(registry.clone(), "echo", "a", "v1").await;
    // Nothing listens there.
    let dead_port = lodestar_test_support::free_port();
    let dead = Instance::new("echo", "dead")
        .with_endpoint(format!("grpc://127.0.0.1:{dead_port}").parse().unwrap());
    let _dead = registry.register(dead).await.unwrap();
    let mut config = Config::new(url).with_writes("t");
    config.health_every = Duration::from_millis(300);
    let served = dashboard(registry.clone(), config).await;
    eventually("a and dead to be listed", PATIENCE, || async {
        served.instances("echo").await.len() == 2
    })
    .await;
    eventually("dead's health to be UNREACHABLE", PATIENCE, || async {
        let (_, body) = served.get("/api/services/echo").await;
        let dead = &body["instances"][1];
        dead["id"] == "dead" && dead["health"]["status"] == "UNREACHABLE"
    })
    .await;

    let mut events = served.events().await;
    let path = "/api/services/echo/instances/a";
    let write = |body: serde_json::Value| {
        let served = &served;
        async move {
            let (status, answer) = served.post(path, Some("t"), &body).await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    let a = || async {
        let (_, body) = served.get("/api/services/echo").await;
        body["instances"][0].clone()
    };

    write(json!({"who": "ann", "weight": 20})).await;
    let event = events
        .next_change("a's weight", |e| e["id"] == "a" && e["kind"] == "weight")
        .await;
    assert_eq!(event["detail"], "weight default -> 20", "{event}");
    assert_eq!(a().await["weight"], 20);

    write(json!({"who": "ann", "status": "down"})).await;
    events
        .next_change("a down", |e| e["id"] == "a" && e["kind"] == "down")
        .await;
    assert_eq!(a().await["status"], "down");
    let (_, list) = served.get("/api/services").await;
    assert_eq!(list["services"][0]["down"], 1, "{list}");

    write(json!({"who": "bob", "clear": true})).await;
    events
        .next_change("a up", |e| e["id"] == "a" && e["kind"] == "up")
        .await;
    eventually("a's weight back to the default", PATIENCE, || async {
        let a = a().await;
        a["weight"] == 100 && a["status"] == "up"
    })
    .await;

    // An unknown instance: 404, recorded.
    let (status, body) = served
        .post(
            "/api/services/echo/instances/nope",
            Some("t"),
            &json!({"who": "ann", "status": "down"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, audit) = served.get("/api/audit").await;
    let whats: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats, ["status down", "clear", "status down", "weight 20"]);
    node.abort();
}
