//! The client backend (`lodestar://`) against in-process nodes: what is
//! specific to it (zones and environments from the URL, the wire record,
//! naming unreachable nodes). What every backend must do, restarts and node
//! failures included, is in the conformance suite (tests/conformance.rs).

mod support;

use lodestar::{Discovery, Error, Instance, Registrar};
use lodestar_registry::{ClientConfig, LodestarRegistry};
use lodestar_test_support::eventually;
use support::{PATIENCE, start};

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
async fn the_url_zone_fills_in_and_the_wire_keeps_the_top_level_colour() {
    let node = start(|_| {}).await;
    let registry = connect(&format!("{}?zone=z9", node.url())).await;
    let _registration = registry.register(echo("echo-1")).await.unwrap();
    let snapshot = registry.get("echo").await.unwrap();
    // The record survives the trip, with the zone of the URL added, and
    // when the registry registered it.
    let mut expected = echo("echo-1").with_metadata("zone", "z9");
    expected.endpoints.sort();
    let mut seen = snapshot.instance("echo-1").unwrap().clone();
    seen.endpoints.sort();
    let registered = seen.registered().expect("reg_timestamp as registered");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(registered) < 60, "{registered} vs now {now}");
    seen.metadata.remove(lodestar::instance::REGISTERED);
    assert_eq!(seen, expected);
    // The wire record keeps discovery's top-level colour too.
    let (_, fetched) = node
        .get("/discovery/fetch?env=dev&appid=echo&status=3")
        .await;
    assert_eq!(fetched["data"]["instances"]["z9"][0]["color"], "blue");
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

/// An operator's `set status=2` marks an instance down in the watch without
/// killing it (discovery's way to drain one), and `status=1` puts it back.
#[tokio::test]
async fn set_status_2_marks_an_instance_down_in_the_watch() {
    let node = start(|_| {}).await;
    let registry = connect(&format!("{}?zone=z1", node.url())).await;
    let _a = registry.register(echo("a")).await.unwrap();
    let _b = registry.register(echo("b")).await.unwrap();
    let watch = registry.watch("echo").await.unwrap();
    eventually("a and b", PATIENCE, || async { watch.latest().len() == 2 }).await;

    // Set down by a foreign client (discovery's own API): the instance stays
    // in snapshots, marked down, so no lodestar client sends it new calls.
    let set = |status: &str| format!("zone=z1&env=dev&appid=echo&hostname=b&status={status}");
    assert_eq!(node.post("/discovery/set", &set("2")).await.1["code"], 0);
    let b_down = |snapshot: &lodestar::Snapshot| {
        snapshot.len() == 2
            && snapshot.instance("b").is_some_and(|b| b.is_down())
            && snapshot.instance("a").is_some_and(|a| !a.is_down())
    };
    eventually("b marked down in the watch", PATIENCE, || async {
        b_down(&watch.latest())
    })
    .await;
    assert!(
        b_down(&registry.get("echo").await.unwrap()),
        "a fresh read too"
    );

    assert_eq!(node.post("/discovery/set", &set("1")).await.1["code"], 0);
    eventually("b to be back", PATIENCE, || async {
        watch.latest().instance("b").is_some_and(|b| !b.is_down())
    })
    .await;
}

/// An application whose every instance is down stays in the watch, marked
/// down, and follows further changes (polls answer up instances only).
#[tokio::test]
async fn a_watch_follows_an_application_with_every_instance_down() {
    use lodestar::{Override, Status};
    let node = start(|_| {}).await;
    let registry = connect(&node.url()).await;
    let _a = registry.register(echo("a")).await.unwrap();
    let watch = registry.watch("echo").await.unwrap();
    let down = Override::new().with_status(Status::Down);
    assert!(registry.set("echo", "a", down).await.unwrap());
    eventually("a down in the watch", PATIENCE, || async {
        watch.latest().instance("a").is_some_and(|a| a.is_down())
    })
    .await;
    // A change while every instance is down still reaches the watch.
    let weight = Override::new().with_weight(3);
    assert!(registry.set("echo", "a", weight).await.unwrap());
    eventually(
        "a's weight changed while all are down",
        PATIENCE,
        || async {
            watch
                .latest()
                .instance("a")
                .is_some_and(|a| a.is_down() && a.weight() == Ok(3))
        },
    )
    .await;
    let _b = registry.register(echo("b")).await.unwrap();
    eventually("b added beside the down a", PATIENCE, || async {
        let snapshot = watch.latest();
        snapshot.len() == 2 && snapshot.instance("a").is_some_and(|a| a.is_down())
    })
    .await;
    assert!(registry.clear("echo", "a").await.unwrap());
    eventually("a up again", PATIENCE, || async {
        watch.latest().instance("a").is_some_and(|a| !a.is_down())
    })
    .await;
}

/// A watch started on an application that is not there yet, then an
/// instance registered and at once set down: whatever order the watch's
/// first poll, its fetch and the two writes come in, the watch ends up
/// showing the instance down. (`polls` holds until an instance is up: a
/// watch that went back to it after fetching the up instance missed the
/// set until the next change.) Repeated, on fresh services, to meet the
/// interleavings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_set_down_at_once_reaches_a_watch_started_before_it() {
    use lodestar::{Override, Status};
    let node = start(|_| {}).await;
    let registry = connect(&node.url()).await;
    let operator = connect(&node.url()).await;
    for round in 0..30 {
        let service = format!("race{round}");
        let watch = registry.watch(&service).await.unwrap();
        let instance = Instance::new(service.clone(), "a")
            .with_endpoint("grpc://127.0.0.1:50051".parse().unwrap());
        let _a = registry.register(instance).await.unwrap();
        let down = Override::new().with_status(Status::Down);
        assert!(operator.set(&service, "a", down).await.unwrap());
        eventually(
            &format!("a down in the watch of {service}"),
            PATIENCE,
            || async { watch.latest().instance("a").is_some_and(|a| a.is_down()) },
        )
        .await;
    }
}

/// Records written by other discovery clients that lodestar cannot use (no
/// address it can dial), or with odd but harmless content (huge values,
/// non-string metadata, unknown keys), never stop a watch: the unusable
/// ones are skipped and counted, the rest are served, and the watch goes
/// on seeing changes.
#[tokio::test]
async fn records_other_tools_wrote_are_skipped_and_counted_never_fatal() {
    let node = start(|_| {}).await;
    // Only an address lodestar cannot dial.
    let form = lodestar_registry::form::Form::new()
        .pair("zone", "z1")
        .pair("env", "dev")
        .pair("appid", "echo")
        .pair("hostname", "no-address")
        .pair("addrs", "x://no-port")
        .pair("status", "1")
        .finish();
    let (_, reply) = node.post("/discovery/register", &form).await;
    assert_eq!(reply["code"], 0, "{reply}");
    let huge = "v".repeat(60_000);
    let odd = format!(r#"{{"weight":20,"nested":{{"a":[1,2]}},"big":"{huge}","":"empty key"}}"#);
    let reply = node.register("echo", "odd", &[("metadata", &odd)]).await;
    assert_eq!(reply["code"], 0, "{reply}");
    let reply = node.register("echo", "good", &[]).await;
    assert_eq!(reply["code"], 0, "{reply}");

    let registry = connect(&node.url()).await;
    let mut watch = registry.watch("echo").await.unwrap();
    let snapshot = watch.next().await.unwrap();
    let mut ids: Vec<&str> = snapshot.instances().iter().map(|i| i.id.as_str()).collect();
    ids.sort();
    // The record with an empty metadata key fails validation: skipped too.
    assert!(ids.contains(&"good"), "{ids:?}");
    assert!(!ids.contains(&"no-address"), "{ids:?}");
    assert_eq!(
        snapshot.skipped() + ids.len(),
        3,
        "{ids:?}, skipped {}",
        snapshot.skipped()
    );
    assert!(snapshot.skipped() >= 1);

    // Still watching.
    let _later = registry.register(echo("later")).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let next = tokio::time::timeout_at(deadline, watch.next()).await;
        let snapshot = next
            .expect("a change within PATIENCE")
            .expect("the watch goes on");
        if snapshot.instance("later").is_some() {
            assert!(snapshot.skipped() >= 1);
            break;
        }
    }
}
