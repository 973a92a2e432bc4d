//! A gRPC client no one here wrote calls lodestar services through xDS:
//! Python's `grpcio` (PyPI; `cargo xtask setup` installs it in
//! `target/python`, `LODESTAR_PYTHON` names another) resolves
//! `xds:///echo` against `lodestar xds` and balances on what it sends, over
//! `lodestar serve-echo` processes registered in a `lodestar registry` node.

mod support;

use lodestar::{Override, Registrar, registry::Status};
use support::*;

const COLOR: &str = "lodestar-color";
const VERSION: &str = "lodestar-version";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_down_deregistration_and_new_instances() {
    let world = World::start(&[]).await;
    let _a = world.echo("a", &["--meta", "weight=100"]);
    let mut b = world.echo("b", &["--meta", "weight=300"]);
    let mut client = world.client("weights").await;
    client
        .until(
            "both instances in the client's rotation",
            20,
            &[],
            false,
            |batch| batch.got("a") > 0 && batch.got("b") > 0,
        )
        .await;

    // The spread follows the weights (1:3).
    let batch = client.calls(800, &[]).await;
    assert!(batch.errors.is_empty(), "{batch:?}");
    let (a, b_calls) = (batch.got("a") as f64, batch.got("b") as f64);
    let share = b_calls / (a + b_calls);
    assert!(
        (0.68..=0.82).contains(&share),
        "b (weight 300) should get ~75% beside a (weight 100): {batch:?}"
    );

    // An operator sets b down: it leaves the rotation, calls keep succeeding.
    let registrar: &dyn Registrar = &*world.registry;
    assert!(
        registrar
            .set("echo", "b", Override::new().with_status(Status::Down))
            .await
            .expect("set b down")
    );
    client
        .until("b out of rotation after `down`", 20, &[], true, |batch| {
            batch.got("b") == 0
        })
        .await;
    let batch = client.calls(100, &[]).await;
    assert_eq!((batch.got("a"), batch.errors.len()), (100, 0), "{batch:?}");
    registrar.clear("echo", "b").await.expect("clear b");
    client
        .until("b back in rotation", 20, &[], true, |batch| {
            batch.got("b") > 0
        })
        .await;

    // A new instance gets calls.
    let _c = world.echo("c", &[]);
    client
        .until("the new instance c gets calls", 20, &[], true, |batch| {
            batch.got("c") > 0
        })
        .await;

    // b deregisters (SIGTERM: NOT_SERVING, deregister, propagation delay,
    // drain): it leaves the rotation and no call fails meanwhile.
    b.term();
    client
        .until(
            "b out of rotation after deregistering",
            20,
            &[],
            true,
            |batch| batch.got("b") == 0,
        )
        .await;
    b.wait().await;
    let batch = client.calls(100, &[]).await;
    assert!(
        batch.errors.is_empty() && batch.only(&["a", "c"]),
        "{batch:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_lanes_fall_back_to_the_base_lane_and_versions_pin() {
    let world = World::start(&[]).await;
    let _a = world.echo("a", &["--version", "v1"]);
    let _blue = world.echo("blue", &["--version", "v1", "--meta", "color=blue"]);
    let _d = world.echo("d", &["--version", "v2"]);
    let mut client = world.client("lanes").await;
    client
        .until(
            "the blue lane routed",
            20,
            &[(COLOR, "blue")],
            false,
            |batch| batch.got("blue") == 20,
        )
        .await;

    // No colour: the base lane only (never the coloured instance).
    let batch = client.calls(60, &[]).await;
    assert!(
        batch.errors.is_empty() && batch.only(&["a", "d"]) && batch.got("a") > 0,
        "{batch:?}"
    );
    // A colour nobody has: the base lane.
    let batch = client.calls(40, &[(COLOR, "green")]).await;
    assert!(
        batch.errors.is_empty() && batch.only(&["a", "d"]),
        "{batch:?}"
    );
    // Version pins.
    let batch = client.calls(20, &[(VERSION, "v2")]).await;
    assert_eq!(batch.got("d"), 20, "{batch:?}");
    let batch = client.calls(20, &[(VERSION, "v1"), (COLOR, "blue")]).await;
    assert_eq!(batch.got("blue"), 20, "{batch:?}");
    let batch = client.calls(20, &[(VERSION, "v2"), (COLOR, "blue")]).await;
    assert_eq!(
        batch.got("d"),
        20,
        "v2 has no blue lane: its base lane: {batch:?}"
    );
    let batch = client.calls(5, &[(VERSION, "v9")]).await;
    assert_eq!(
        batch.errors.get("UNAVAILABLE"),
        Some(&5),
        "a pin to a version nobody has fails: {batch:?}"
    );

    // The blue instance set down: blue requests fall back to the base lane.
    let registrar: &dyn Registrar = &*world.registry;
    registrar
        .set("echo", "blue", Override::new().with_status(Status::Down))
        .await
        .expect("set blue down");
    client
        .until(
            "blue requests on the base lane",
            20,
            &[(COLOR, "blue")],
            true,
            |batch| batch.got("blue") == 0 && batch.total_ok() == 20,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_carries_on_through_an_xds_server_restart() {
    let mut world = World::start(&[]).await;
    let _a = world.echo("a", &[]);
    let mut client = world.client("restart").await;
    client
        .until("a in rotation", 20, &[], false, |batch| {
            batch.got("a") == 20
        })
        .await;

    // The server dies: the client keeps the configuration it has.
    world.xds.as_mut().expect("xds running").kill().await;
    let batch = client.calls(50, &[]).await;
    assert_eq!((batch.got("a"), batch.errors.len()), (50, 0), "{batch:?}");

    // A change while it is away reaches the client once it is back.
    let _b = world.echo("b", &[]);
    world.start_xds(&[]).await;
    client
        .until(
            "b, registered while the server was down",
            20,
            &[],
            true,
            |batch| batch.got("b") > 0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_answering_not_serving_leaves_the_rotation() {
    use lodestar::Instance;
    use lodestar_echo::{EchoService, echo_server::EchoServer};
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic_health::ServingStatus;

    let world = World::start(&[]).await;
    let _a = world.echo("a", &[]);
    // An echo server of our own, registered, whose health we set.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let record = Instance::new("echo", "h")
        .with_endpoint(format!("grpc://127.0.0.1:{port}").parse().unwrap());
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(EchoServer::new(EchoService::new(record.clone())))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let _h = world.registry.register(record).await.expect("register h");
    let mut client = world.client("health").await;
    client
        .until("h in rotation", 20, &[], false, |batch| {
            batch.got("h") > 0 && batch.got("a") > 0
        })
        .await;

    // NOT_SERVING, still registered: out of rotation, no call fails.
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    client
        .until("h out of rotation on NOT_SERVING", 20, &[], true, |batch| {
            batch.got("h") == 0
        })
        .await;
    let batch = client.calls(60, &[]).await;
    assert_eq!((batch.got("a"), batch.errors.len()), (60, 0), "{batch:?}");
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    client
        .until("h back on SERVING", 20, &[], true, |batch| {
            batch.got("h") > 0
        })
        .await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_zone_first_and_ring_hash_on_the_hash_key() {
    let world = World::start(&["--policy", "ring_hash"]).await;
    let _a = world.echo("a", &["--meta", "zone=z1"]);
    let _b = world.echo("b", &["--meta", "zone=z2"]);
    let _c = world.echo("c", &["--meta", "zone=z2"]);

    // A client in z2: z2's instances only, each hash key sticking to one.
    let mut client = world.client_in("zoned", "z2").await;
    client
        .until(
            "z2 routed",
            20,
            &[("lodestar-hash-key", "k0")],
            false,
            |batch| batch.total_ok() == 20 && batch.only(&["b", "c"]),
        )
        .await;
    let mut seen = std::collections::BTreeSet::new();
    for key in 0..16 {
        let key = format!("user-{key}");
        let batch = client.calls(10, &[("lodestar-hash-key", &key)]).await;
        assert_eq!(batch.ok.len(), 1, "one instance per key: {batch:?}");
        assert!(batch.only(&["b", "c"]), "the client's zone only: {batch:?}");
        seen.extend(batch.ok.keys().cloned());
    }
    assert_eq!(seen.len(), 2, "keys spread over z2's instances: {seen:?}");

    // z2 all down: every zone.
    let registrar: &dyn Registrar = &*world.registry;
    for id in ["b", "c"] {
        registrar
            .set("echo", id, Override::new().with_status(Status::Down))
            .await
            .expect("set down");
    }
    client
        .until(
            "z1 takes over",
            20,
            &[("lodestar-hash-key", "k1")],
            true,
            |batch| batch.got("a") == 20,
        )
        .await;
}
