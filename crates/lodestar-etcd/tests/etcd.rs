//! The etcd backend against real etcd processes: what is specific to etcd
//! (keys, leases, compaction, the Go layout, clusters, auth). What every
//! backend must do is in the conformance suite (tests/conformance.rs).

use std::time::Duration;

use lodestar::{Discovery, Error, Instance, Registrar, RegistrationState, Watch};
use lodestar_etcd::{EtcdConfig, EtcdRegistry, etcd_client::GetOptions};
use lodestar_test_support::{EtcdCluster, EtcdNode, TcpProxy, eventually, free_port};

const PATIENCE: Duration = Duration::from_secs(20);

fn instance(service: &str, id: &str, port: u16) -> Instance {
    Instance::new(service, id)
        .with_version("v1")
        .with_endpoint(format!("grpc://127.0.0.1:{port}").parse().unwrap())
        .with_metadata("zone", "z1")
}

async fn connect(url: &str) -> EtcdRegistry {
    EtcdRegistry::connect(url.parse().unwrap()).await.unwrap()
}

async fn connect_ttl(url: &str, ttl: &str) -> EtcdRegistry {
    let url = if url.contains('?') {
        format!("{url}&ttl={ttl}")
    } else {
        format!("{url}?ttl={ttl}")
    };
    connect(&url).await
}

fn ids(watch: &Watch) -> Vec<String> {
    watch
        .latest()
        .instances()
        .iter()
        .map(|i| i.id.clone())
        .collect()
}

async fn wait_ids(what: &str, watch: &Watch, expected: &[&str]) {
    eventually(what, PATIENCE, || async { ids(watch) == expected }).await;
}

/// Keys under the lodestar prefix, read with a client of its own.
async fn keys(registry: &EtcdRegistry) -> Vec<String> {
    let mut client = registry.client();
    let response = client
        .get(
            "/lodestar/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn records_are_keys_under_the_prefix_and_none_is_left_behind() {
    let etcd = EtcdNode::start().await;
    let registry = connect(&etcd.url()).await;
    let a = registry.register(instance("echo", "a", 1)).await.unwrap();
    let b = registry.register(instance("echo", "b", 2)).await.unwrap();
    assert_eq!(
        keys(&registry).await,
        ["/lodestar/services/echo/a", "/lodestar/services/echo/b"]
    );
    a.deregister().await.unwrap();
    assert_eq!(keys(&registry).await, ["/lodestar/services/echo/b"]);
    // Dropping the last handle revokes the lease: no key is left.
    drop(b);
    eventually("no key left", PATIENCE, || async {
        keys(&registry).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_etcd_is_named() {
    let port = free_port();
    let url = format!("etcd://127.0.0.1:{port}?connect_timeout=500ms");
    let err = EtcdRegistry::connect(url.parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_values_are_skipped_and_counted_never_fatal() {
    let etcd = EtcdNode::start().await;
    let registry = connect(&etcd.url()).await;
    let _good = registry
        .register(instance("echo", "good", 1))
        .await
        .unwrap();
    let mut client = registry.client();
    client
        .put("/lodestar/services/echo/junk", "{not json", None)
        .await
        .unwrap();
    let elsewhere = instance("echo", "other-id", 2).to_json();
    client
        .put("/lodestar/services/echo/mismatch", elsewhere, None)
        .await
        .unwrap();

    let watch = registry.watch("echo").await.unwrap();
    assert_eq!(ids(&watch), ["good"]);
    assert_eq!(watch.latest().skipped(), 2);

    // More garbage while watching, then a good record: the watch carries on.
    client
        .put("/lodestar/services/echo/bin", vec![0xff, 0xfe], None)
        .await
        .unwrap();
    let _late = registry
        .register(instance("echo", "late", 3))
        .await
        .unwrap();
    wait_ids("the late instance", &watch, &["good", "late"]).await;
    assert_eq!(watch.latest().skipped(), 3);

    // Fixing a bad value brings it in.
    client
        .put(
            "/lodestar/services/echo/junk",
            instance("echo", "junk", 4).to_json(),
            None,
        )
        .await
        .unwrap();
    wait_ids("the fixed record", &watch, &["good", "junk", "late"]).await;
    assert_eq!(watch.latest().skipped(), 2);
}

#[tokio::test]
async fn a_watch_resumes_after_a_cut_and_re_lists_after_compaction() {
    let etcd = EtcdNode::start().await;
    let proxy = TcpProxy::start(etcd.client_addr()).await;
    let direct = connect(&etcd.url()).await;
    let through_proxy = connect(&format!("etcd://{}", proxy.addr())).await;
    let _a = direct.register(instance("echo", "a", 1)).await.unwrap();
    let watch = through_proxy.watch("echo").await.unwrap();
    assert_eq!(ids(&watch), ["a"]);

    // A plain cut: changes made meanwhile arrive once it heals.
    proxy.cut();
    let b = direct.register(instance("echo", "b", 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids(&watch), ["a"]);
    proxy.restore();
    wait_ids("b after the cut", &watch, &["a", "b"]).await;

    // A cut during which etcd compacts past the watcher's revision.
    proxy.cut();
    b.deregister().await.unwrap();
    let _c = direct.register(instance("echo", "c", 3)).await.unwrap();
    let mut client = direct.client();
    let revision = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.compact(revision, None).await.unwrap();
    proxy.restore();
    wait_ids("the view after compaction", &watch, &["a", "c"]).await;
}

#[tokio::test]
async fn a_cut_longer_than_the_ttl_loses_the_lease_and_registers_again() {
    let etcd = EtcdNode::start().await;
    let proxy = TcpProxy::start(etcd.client_addr()).await;
    let observer = connect(&etcd.url()).await;
    let registry = connect_ttl(&format!("etcd://{}", proxy.addr()), "2s").await;
    let registration = registry.register(instance("echo", "a", 1)).await.unwrap();
    let watch = observer.watch("echo").await.unwrap();
    assert_eq!(ids(&watch), ["a"]);

    proxy.cut();
    wait_ids("the lease expired during the cut", &watch, &[]).await;
    eventually(
        "the registration to say it is retrying",
        PATIENCE,
        || async { matches!(registration.state(), RegistrationState::Retrying { .. }) },
    )
    .await;

    proxy.restore();
    wait_ids("registered again after the cut", &watch, &["a"]).await;
    eventually("registered state", PATIENCE, || async {
        registration.state() == RegistrationState::Registered
    })
    .await;
}

#[tokio::test]
async fn a_registration_outlives_many_ttls() {
    let etcd = EtcdNode::start().await;
    let registry = connect_ttl(&etcd.url(), "1s").await;
    let _a = registry.register(instance("echo", "a", 1)).await.unwrap();
    let watch = registry.watch("echo").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(ids(&watch), ["a"]);
    assert_eq!(keys(&registry).await, ["/lodestar/services/echo/a"]);
}

#[tokio::test]
async fn three_node_cluster_loses_its_leader_with_a_registration_and_a_watch_live() {
    let mut cluster = EtcdCluster::start(3).await;
    let registry = connect_ttl(&cluster.url(), "2s").await;
    let registration = registry.register(instance("echo", "a", 1)).await.unwrap();
    let watch = registry.watch("echo").await.unwrap();
    assert_eq!(ids(&watch), ["a"]);

    let leader = cluster.leader().await;
    cluster.kill(leader);
    cluster.wait_for_leader().await;

    // Longer than the TTL: the lease must have been kept alive meanwhile.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(registry.get("echo").await.unwrap().len(), 1);
    assert_eq!(ids(&watch), ["a"]);
    eventually("registered", PATIENCE, || async {
        registration.state() == RegistrationState::Registered
    })
    .await;

    // The watch still follows changes.
    let _b = registry.register(instance("echo", "b", 2)).await.unwrap();
    wait_ids("b after the leader loss", &watch, &["a", "b"]).await;
    cluster.restart(leader).await;
}

#[tokio::test]
async fn admin_deregister_deletes_a_record_nobody_keeps_alive() {
    let etcd = EtcdNode::start().await;
    let admin = connect(&etcd.url()).await;
    let watch = admin.watch("echo").await.unwrap();
    // A record put without a lease: deregister deletes the key itself.
    let mut client = admin.client();
    client
        .put(
            "/lodestar/services/echo/stale",
            instance("echo", "stale", 2).to_json(),
            None,
        )
        .await
        .unwrap();
    wait_ids("the stale record", &watch, &["stale"]).await;
    assert!(admin.deregister("echo", "stale").await.unwrap());
    wait_ids("gone for good", &watch, &[]).await;
    assert!(keys(&admin).await.is_empty());
}

#[tokio::test]
async fn go_naming_layout_interoperates() {
    let etcd = EtcdNode::start().await;
    let go = connect(&format!("{}/services?layout=go", etcd.url())).await;
    let config: EtcdConfig = format!("{}/services?layout=go", etcd.url())
        .parse()
        .unwrap();
    assert_eq!(config.prefix, "services");

    let _r = go.register(instance("echo", "e1", 50051)).await.unwrap();
    let mut client = go.client();
    let response = client
        .get("services/echo/127.0.0.1:50051", None)
        .await
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(response.kvs()[0].value()).unwrap();
    assert_eq!(value["Addr"], "127.0.0.1:50051");
    assert!(
        value["Metadata"].is_string(),
        "grpc-go needs null or a string"
    );

    // What a Go server registers with etcd's endpoints manager.
    client
        .put(
            "services/echo/10.0.0.9:9000",
            r#"{"Addr":"10.0.0.9:9000","Metadata":null}"#,
            None,
        )
        .await
        .unwrap();
    let watch = go.watch("echo").await.unwrap();
    assert_eq!(ids(&watch), ["10.0.0.9:9000", "e1"]);
    let from_go = watch.latest().instance("10.0.0.9:9000").unwrap().clone();
    assert_eq!(from_go.endpoint("grpc").unwrap().address(), "10.0.0.9:9000");
    // The record as given, plus when it was registered.
    let mut e1 = watch.latest().instance("e1").unwrap().clone();
    assert!(e1.registered().is_some(), "{e1:?}");
    e1.metadata.remove(lodestar::instance::REGISTERED);
    assert_eq!(e1, instance("echo", "e1", 50051));
}

#[tokio::test]
async fn registering_while_the_lease_is_lost_still_lands_under_a_live_lease() {
    let mut etcd = EtcdNode::start().await;
    let registry = connect_ttl(&etcd.url(), "2s").await;
    let _a = registry.register(instance("echo", "a", 1)).await.unwrap();
    // etcd forgets the lease; the session may not have noticed yet, so this
    // registration starts on the fast path with a dead lease.
    etcd.restart_empty().await;
    let b = registry.register(instance("echo", "b", 2)).await;
    let b = match b {
        Ok(b) => b,
        // The connection may still be re-dialling; a retry must succeed.
        Err(_) => registry.register(instance("echo", "b", 2)).await.unwrap(),
    };
    eventually("both records under a live lease", PATIENCE, || async {
        keys(&registry).await == ["/lodestar/services/echo/a", "/lodestar/services/echo/b"]
    })
    .await;
    // Still there after several TTLs: the lease they are under is kept alive.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(keys(&registry).await.len(), 2);
    assert_eq!(b.state(), RegistrationState::Registered);
}

#[tokio::test]
async fn user_and_password_are_passed_through() {
    let etcd = EtcdNode::start().await;
    let mut admin = connect(&etcd.url()).await.client();
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.role_add("root").await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let url = etcd.url().replace("etcd://", "etcd://root:s3cret@");
    let registry = connect(&url).await;
    let _a = registry.register(instance("echo", "a", 1)).await.unwrap();
    assert_eq!(registry.get("echo").await.unwrap().len(), 1);

    let wrong = etcd.url().replace("etcd://", "etcd://root:wrong@");
    let err = EtcdRegistry::connect(wrong.parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    // The cause is named: etcd's own words.
    let text = lodestar::ErrorChain(&err).to_string();
    assert!(text.contains("authentication failed"), "{text}");
    // No credentials at all against an etcd with auth on: registering is
    // refused with etcd's reason, and nothing is written.
    let anonymous = connect(&etcd.url()).await;
    let err = anonymous
        .register(instance("echo", "b", 1))
        .await
        .unwrap_err();
    let text = lodestar::ErrorChain(&err).to_string();
    assert!(
        text.contains("user name is empty") || text.contains("permission denied"),
        "{text}"
    );
    assert_eq!(registry.get("echo").await.unwrap().len(), 1);
}

#[tokio::test]
async fn overrides_are_keys_apart_and_bad_ones_are_skipped_and_counted() {
    use lodestar::{Override, Status};
    let etcd = EtcdNode::start().await;
    let registry = connect(&etcd.url()).await;
    let _a = registry.register(instance("echo", "a", 1)).await.unwrap();
    let watch = registry.watch("echo").await.unwrap();
    let down = Override::new().with_status(Status::Down);
    assert!(registry.set("echo", "a", down).await.unwrap());
    let mut client = registry.client();
    let stored = client
        .get("/lodestar/overrides/echo/a", None)
        .await
        .unwrap();
    let kv = &stored.kvs()[0];
    assert_eq!(kv.value_str().unwrap(), r#"{"status":"down"}"#);
    assert_eq!(kv.lease(), 0, "an override outlives the owner's lease");
    eventually("a down", PATIENCE, || async {
        watch.latest().instance("a").is_some_and(Instance::is_down)
    })
    .await;

    // A foreign writer breaks the override: skipped and counted, a is up.
    client
        .put("/lodestar/overrides/echo/a", "{not json", None)
        .await
        .unwrap();
    eventually("the bad override skipped", PATIENCE, || async {
        let snapshot = watch.latest();
        snapshot.skipped() == 1 && snapshot.instance("a").is_some_and(|a| !a.is_down())
    })
    .await;
    assert_eq!(registry.get("echo").await.unwrap().skipped(), 1);
    // set replaces it; clear deletes it.
    let down = Override::new().with_status(Status::Down);
    assert!(registry.set("echo", "a", down).await.unwrap());
    eventually("a down again", PATIENCE, || async {
        let snapshot = watch.latest();
        snapshot.skipped() == 0 && snapshot.instance("a").is_some_and(Instance::is_down)
    })
    .await;
    assert!(registry.clear("echo", "a").await.unwrap());
    assert!(
        keys(&registry)
            .await
            .iter()
            .all(|k| !k.contains("overrides"))
    );
}

#[tokio::test]
async fn overrides_work_in_the_go_layout() {
    use lodestar::{Override, Status};
    let etcd = EtcdNode::start().await;
    let url = format!("{}/services?layout=go", etcd.url());
    let registry = connect(&url).await;
    let _a = registry
        .register(instance("echo", "a", 7001))
        .await
        .unwrap();
    let change = Override::new().with_status(Status::Down).with_weight(5);
    assert!(registry.set("echo", "a", change).await.unwrap());
    assert!(
        !registry
            .set("echo", "zz", Override::new().with_weight(5))
            .await
            .unwrap()
    );
    let got = registry.get("echo").await.unwrap();
    let a = got.instance("a").unwrap();
    assert!(a.is_down());
    assert_eq!(a.weight(), Ok(5));
    assert_eq!(
        registry
            .services()
            .await
            .unwrap()
            .into_keys()
            .collect::<Vec<_>>(),
        ["echo"],
        "overrides are not a service"
    );
    assert!(registry.clear("echo", "a").await.unwrap());
    assert!(
        !registry
            .get("echo")
            .await
            .unwrap()
            .instance("a")
            .unwrap()
            .is_down()
    );
}
