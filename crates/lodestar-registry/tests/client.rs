//! The client backend (`lodestar://`) against in-process nodes: lodestar's
//! Registrar and Discovery, through restarts and node failures.

mod support;

use lodestar::{Discovery, Error, Instance, Registrar, RegistrationState};
use lodestar_registry::{ClientConfig, LodestarRegistry};
use lodestar_test_support::eventually;
use support::{PATIENCE, cluster, start, start_at};

fn echo(id: &str) -> Instance {
    Instance::new("echo", id)
        .with_version("v1")
        .with_endpoint("grpc://127.0.0.1:50051".parse().unwrap())
        .with_endpoint("http://127.0.0.1:8080".parse().unwrap())
        .with_metadata("color", "blue")
        .with_metadata("weight", "20")
}

async fn connect(url: &str) -> LodestarRegistry {
    LodestarRegistry::connect(url.parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn register_watch_get_services_deregister() {
    let node = start(|_| {}).await;
    let registry = connect(&format!("{}?zone=z9", node.url())).await;
    let mut watch = registry.watch("echo").await.unwrap();
    assert!(watch.next().await.unwrap().is_empty());

    let registration = registry.register(echo("echo-1")).await.unwrap();
    let snapshot = watch.next().await.unwrap();
    let seen = snapshot.instance("echo-1").unwrap();
    // The record survives the trip, with the zone of the URL added.
    let mut expected = echo("echo-1").with_metadata("zone", "z9");
    expected.endpoints.sort();
    let mut seen = seen.clone();
    seen.endpoints.sort();
    assert_eq!(seen, expected);
    assert!(snapshot.revision() > 0);

    assert_eq!(registry.get("echo").await.unwrap().len(), 1);
    assert_eq!(registry.services().await.unwrap().get("echo"), Some(&1));
    // The wire record keeps discovery's top-level colour too.
    let (_, fetched) = node
        .get("/discovery/fetch?env=dev&appid=echo&status=3")
        .await;
    assert_eq!(fetched["data"]["instances"]["z9"][0]["color"], "blue");

    let state = registration.subscribe();
    registration.deregister().await.unwrap();
    assert_eq!(*state.borrow(), RegistrationState::Deregistered);
    assert!(watch.next().await.unwrap().is_empty());
    // What is left is the node's own record (infra.discovery).
    assert!(!registry.services().await.unwrap().contains_key("echo"));
}

#[tokio::test]
async fn environments_are_separate() {
    let node = start(|_| {}).await;
    let prod = connect(&format!("{}?env=prod", node.url())).await;
    let dev = connect(&node.url()).await;
    let _registration = prod.register(echo("p")).await.unwrap();
    assert_eq!(prod.get("echo").await.unwrap().len(), 1);
    assert!(dev.get("echo").await.unwrap().is_empty());
}

#[tokio::test]
async fn admin_deregister_says_whether_there_was_one() {
    let node = start(|_| {}).await;
    let registry = connect(&node.url()).await;
    let _registration = registry.register(echo("a")).await.unwrap();
    assert!(registry.deregister("echo", "a").await.unwrap());
    assert!(!registry.deregister("echo", "a").await.unwrap());
}

#[tokio::test]
async fn a_registry_restarted_empty_gets_the_instance_back() {
    let node = start(|_| {}).await;
    let addr = node.addr;
    let registry = connect(&format!("{}?ttl=1", node.url())).await;
    let registration = registry.register(echo("survivor")).await.unwrap();
    let watch = registry.watch("echo").await.unwrap();

    node.kill().await;
    let node = start_at(addr, |_| {}).await;
    // The next renew is answered -404 and registers again.
    eventually("the instance to be back", PATIENCE, || async {
        node.hostnames("echo").await == Some(vec!["survivor".into()])
    })
    .await;
    eventually("the state to be registered", PATIENCE, || async {
        registration.state() == RegistrationState::Registered
    })
    .await;
    // The watcher resynchronises with the restarted node.
    eventually("the watch to see it", PATIENCE, || async {
        watch.latest().instance("survivor").is_some()
    })
    .await;
}

#[tokio::test]
async fn a_registry_down_shows_in_the_state_and_the_watch_keeps_its_snapshot() {
    let node = start(|_| {}).await;
    let addr = node.addr;
    let registry = connect(&format!("{}?ttl=1", node.url())).await;
    let registration = registry.register(echo("a")).await.unwrap();
    let watch = registry.watch("echo").await.unwrap();
    node.kill().await;
    eventually("the registration to be retrying", PATIENCE, || async {
        matches!(registration.state(), RegistrationState::Retrying { .. })
    })
    .await;
    assert_eq!(watch.latest().len(), 1, "the last snapshot stays in force");
    let _node = start_at(addr, |_| {}).await;
    eventually("the registration to be back", PATIENCE, || async {
        registration.state() == RegistrationState::Registered
    })
    .await;
}

#[tokio::test]
async fn a_dead_node_is_left_for_the_next_one() {
    let mut nodes = cluster(2, |_| {}).await;
    let url = format!("lodestar://{},{}?ttl=1", nodes[0].addr, nodes[1].addr);
    let registry = connect(&url).await;
    let mut watch = registry.watch("echo").await.unwrap();
    let _a = registry.register(echo("a")).await.unwrap();
    eventually("a to be seen", PATIENCE, || async {
        watch.latest().instance("a").is_some()
    })
    .await;

    nodes.remove(0).kill().await;
    let _b = registry.register(echo("b")).await.unwrap();
    eventually("b to be seen through the other node", PATIENCE, || async {
        watch.latest().len() == 2
    })
    .await;
    let _ = watch.next().await;
}

#[tokio::test]
async fn an_unreachable_registry_is_named() {
    let port = lodestar_test_support::free_port();
    let config: ClientConfig = format!("lodestar://127.0.0.1:{port}?connect_timeout=1s")
        .parse()
        .unwrap();
    let err = LodestarRegistry::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_instances_are_refused_before_the_network() {
    let node = start(|_| {}).await;
    let registry = connect(&node.url()).await;
    let err = registry
        .register(Instance::new("echo", "a"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInstance(_)), "{err}");
}

/// An operator's `set status=2` takes an instance out of the watch without
/// killing it (discovery's way to drain one), and `status=1` puts it back.
#[tokio::test]
async fn set_status_2_takes_an_instance_out_of_the_watch() {
    let node = start(|_| {}).await;
    let registry = connect(&format!("{}?zone=z1", node.url())).await;
    let _a = registry.register(echo("a")).await.unwrap();
    let _b = registry.register(echo("b")).await.unwrap();
    let watch = registry.watch("echo").await.unwrap();
    eventually("a and b", PATIENCE, || async { watch.latest().len() == 2 }).await;

    let set = |status: &str| format!("zone=z1&env=dev&appid=echo&hostname=b&status={status}");
    assert_eq!(node.post("/discovery/set", &set("2")).await.1["code"], 0);
    let only_a = || async {
        let snapshot = watch.latest();
        snapshot.len() == 1 && snapshot.instance("a").is_some()
    };
    eventually("b to leave the watch", PATIENCE, only_a).await;
    assert_eq!(
        registry.get("echo").await.unwrap().len(),
        1,
        "a fresh read too"
    );

    assert_eq!(node.post("/discovery/set", &set("1")).await.1["code"], 0);
    eventually("b to be back", PATIENCE, || async {
        watch.latest().len() == 2
    })
    .await;
}
