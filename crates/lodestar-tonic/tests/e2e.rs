//! The balanced channel and the serve helper end to end, on real tonic
//! servers on loopback: every scenario runs against a real etcd and against
//! the built-in registry (`lodestar://`), so the channel and the serve helper
//! are shown to work the same on both.

use std::{
    collections::BTreeMap,
    future::poll_fn,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use lodestar::{Discovery, Instance, balance::BuiltinPolicy};
use lodestar::{Registrar, Snapshot, Subscriber};
use lodestar_echo::{
    EchoReply, EchoRequest, EchoService, echo_client::EchoClient, echo_server::EchoServer,
};
use lodestar_etcd::EtcdRegistry;
use lodestar_registry::{LodestarRegistry, server};
use lodestar_test_support::{EtcdNode, eventually, free_port};
use lodestar_tonic::{Channel, serve};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Request, service::Routes};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Service, ServiceExt};

const PATIENCE: Duration = Duration::from_secs(20);

/// Runs each scenario on both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name(super::Backend::etcd().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lodestar_registry() {
                super::$name(super::Backend::lodestar().await).await
            }
        }
    )*};
}

on_both_backends!(
    round_robin_spreads_evenly_and_p2c_uses_everyone,
    version_pins_and_colour_lanes,
    not_serving_instances_are_ejected_and_come_back,
    no_instance_fails_after_the_ready_wait_with_a_clear_error,
    poll_ready_follows_whether_any_instance_is_usable,
    p2c_one_call_at_a_time_uses_both_instances,
    a_rolling_restart_under_load_loses_no_call,
    the_registry_down_mid_load_loses_no_call,
    a_crashed_instance_is_routed_around,
    colour_propagates_through_a_two_hop_chain,
    the_serve_helper_registers_when_serving_and_deregisters_before_closing,
    every_policy_distributes_as_it_says,
    the_first_call_of_a_new_channel_sees_the_whole_initial_view,
    a_channel_records_itself_as_a_subscriber_while_it_lives,
    a_clean_shutdown_does_not_wait_for_the_drain_timeout,
);

/// Both halves of a registry, whichever backend is behind them.
#[derive(Clone)]
struct Reg {
    registrar: Arc<dyn Registrar>,
    discovery: Arc<dyn Discovery>,
}

impl Reg {
    async fn get(&self, service: &str) -> Result<Snapshot, lodestar::Error> {
        self.discovery.get(service).await
    }

    async fn subscribers(&self, service: &str) -> Result<Vec<Subscriber>, lodestar::Error> {
        self.discovery.subscribers(service).await
    }
}

/// A registry process (or in-process node) the tests can stop and restart.
enum Node {
    Etcd(EtcdNode),
    Lodestar {
        addr: std::net::SocketAddr,
        task: Option<JoinHandle<std::io::Result<()>>>,
    },
}

struct Backend {
    node: Node,
    registry: Reg,
}

impl Backend {
    async fn etcd() -> Self {
        let etcd = EtcdNode::start().await;
        let url = format!("{}?ttl=2s", etcd.url());
        let registry = Arc::new(EtcdRegistry::connect(url.parse().unwrap()).await.unwrap());
        Self {
            node: Node::Etcd(etcd),
            registry: Reg {
                registrar: registry.clone(),
                discovery: registry,
            },
        }
    }

    async fn lodestar() -> Self {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let task = start_registry(addr).await;
        let url = format!("lodestar://{addr}?ttl=2s");
        let registry = Arc::new(
            LodestarRegistry::connect(url.parse().unwrap())
                .await
                .unwrap(),
        );
        Self {
            node: Node::Lodestar {
                addr,
                task: Some(task),
            },
            registry: Reg {
                registrar: registry.clone(),
                discovery: registry,
            },
        }
    }

    fn registry(&self) -> Reg {
        self.registry.clone()
    }

    /// The address an error about this registry should name.
    fn address(&self) -> String {
        match &self.node {
            Node::Etcd(etcd) => etcd.client_addr(),
            Node::Lodestar { addr, .. } => addr.to_string(),
        }
    }

    fn kill(&mut self) {
        match &mut self.node {
            Node::Etcd(etcd) => etcd.kill(),
            Node::Lodestar { task, .. } => {
                if let Some(task) = task.take() {
                    task.abort();
                }
            }
        }
    }

    async fn restart(&mut self) {
        match &mut self.node {
            Node::Etcd(etcd) => etcd.restart().await,
            Node::Lodestar { addr, task } => *task = Some(start_registry(*addr).await),
        }
    }
}

async fn start_registry(addr: std::net::SocketAddr) -> JoinHandle<std::io::Result<()>> {
    let node = server::Server::bind(server::Config::new(addr))
        .await
        .unwrap();
    tokio::spawn(node.serve(std::future::pending()))
}

struct Echo {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), serve::Error>>,
    health: HealthReporter,
}

impl Echo {
    /// The graceful sequence, waited for.
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    /// A crash: the server task and its connections are gone at once.
    fn kill(self) {
        self.task.abort();
    }
}

async fn echo(registry: &Reg, instance: Instance) -> Echo {
    let bound = serve::Server::builder(registry.registrar.clone(), instance)
        .propagation_delay(Duration::from_millis(300))
        .drain_timeout(Duration::from_secs(5))
        .bind()
        .await
        .unwrap();
    let health = bound.health();
    let routes = Routes::new(EchoServer::new(EchoService::new(bound.instance().clone())));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(bound.serve(routes, async {
        let _ = stopped.await;
    }));
    Echo {
        stop: Some(stop),
        task,
        health,
    }
}

fn inst(id: &str, version: &str) -> Instance {
    Instance::new("echo", id).with_version(version)
}

fn client(registry: &Reg, policy: BuiltinPolicy) -> EchoClient<Channel> {
    EchoClient::new(
        Channel::builder(registry.discovery.clone(), "echo")
            .policy(policy)
            .connect(),
    )
}

fn request(headers: &[(&'static str, &str)]) -> Request<EchoRequest> {
    let mut request = Request::new(EchoRequest {
        message: "hi".into(),
        delay_ms: 0,
    });
    for (name, value) in headers {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    request
}

async fn say(
    client: &mut EchoClient<Channel>,
    headers: &[(&'static str, &str)],
) -> Result<EchoReply, tonic::Status> {
    client.say(request(headers)).await.map(|r| r.into_inner())
}

/// Calls until every id in `ids` has answered (all connected), bounded.
async fn until_all_answer(client: &EchoClient<Channel>, ids: &[&str]) {
    eventually("every instance answering", PATIENCE, || {
        let mut client = client.clone();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..ids.len() * 20 {
                if let Ok(reply) = say(&mut client, &[]).await {
                    seen.insert(reply.instance);
                }
            }
            ids.iter().all(|id| seen.contains(*id))
        }
    })
    .await;
}

async fn count(
    client: &mut EchoClient<Channel>,
    n: usize,
    headers: &[(&'static str, &str)],
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let reply = say(client, headers).await.unwrap();
        *counts.entry(reply.instance).or_default() += 1;
    }
    counts
}

/// Like [`count`], counting only the calls that succeed.
async fn count_ok(client: &mut EchoClient<Channel>, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        if let Ok(reply) = say(client, &[]).await {
            *counts.entry(reply.instance).or_default() += 1;
        }
    }
    counts
}

async fn round_robin_spreads_evenly_and_p2c_uses_everyone(backend: Backend) {
    let registry = backend.registry();
    let _servers = [
        echo(&registry, inst("a", "v1")).await,
        echo(&registry, inst("b", "v1")).await,
        echo(&registry, inst("c", "v1")).await,
    ];
    let mut rr = client(&registry, BuiltinPolicy::RoundRobin);
    until_all_answer(&rr, &["a", "b", "c"]).await;
    let counts = count(&mut rr, 300, &[]).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [100, 100, 100],
        "{counts:?}"
    );

    // p2c weighs peak-EWMA latency x in-flight, and an instance not picked
    // for a second is picked anyway: every instance takes calls.
    let p2c = client(&registry, BuiltinPolicy::P2c);
    until_all_answer(&p2c, &["a", "b", "c"]).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut p2c = p2c.clone();
            tokio::spawn(async move { count(&mut p2c, 75, &[]).await })
        })
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        for (id, n) in task.await.unwrap() {
            *counts.entry(id).or_default() += n;
        }
    }
    assert_eq!(counts.values().sum::<usize>(), 600);
    assert_eq!(counts.len(), 3, "{counts:?}");
}

async fn version_pins_and_colour_lanes(backend: Backend) {
    let registry = backend.registry();
    let _servers = [
        echo(&registry, inst("base-1", "v1")).await,
        echo(&registry, inst("base-2", "v2")).await,
        echo(
            &registry,
            inst("blue-1", "v1").with_metadata("color", "blue"),
        )
        .await,
    ];
    let mut client = client(&registry, BuiltinPolicy::RoundRobin);
    until_all_answer(&client, &["base-1", "base-2"]).await;
    // Coloured instances take coloured traffic only.
    let plain = count(&mut client, 60, &[]).await;
    assert!(!plain.contains_key("blue-1"), "{plain:?}");
    let blue = count(&mut client, 30, &[("lodestar-color", "blue")]).await;
    assert_eq!(blue.keys().collect::<Vec<_>>(), ["blue-1"]);
    // No green lane: the base lane serves it.
    let green = count(&mut client, 30, &[("lodestar-color", "green")]).await;
    assert!(
        !green.contains_key("blue-1") && !green.is_empty(),
        "{green:?}"
    );
    // A version pin never falls back.
    let v2 = count(&mut client, 30, &[("lodestar-version", "v2")]).await;
    assert_eq!(v2.keys().collect::<Vec<_>>(), ["base-2"]);
    let err = say(&mut client, &[("lodestar-version", "v9")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message()
            .contains("no instance of echo with version v9"),
        "{}",
        err.message()
    );
}

async fn not_serving_instances_are_ejected_and_come_back(backend: Backend) {
    let registry = backend.registry();
    let a = echo(&registry, inst("a", "v1")).await;
    let _b = echo(&registry, inst("b", "v1")).await;
    let client = client(&registry, BuiltinPolicy::RoundRobin);
    until_all_answer(&client, &["a", "b"]).await;

    a.health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    eventually("a out of rotation", PATIENCE, || {
        let mut client = client.clone();
        async move { count(&mut client, 20, &[]).await.keys().collect::<Vec<_>>() == ["b"] }
    })
    .await;
    a.health
        .set_service_status("", ServingStatus::Serving)
        .await;
    until_all_answer(&client, &["a", "b"]).await;
}

/// Whether the channel's `poll_ready` is ready right now (one poll, as
/// tower's `LoadShed` does).
async fn ready_now(channel: &mut Channel) -> bool {
    poll_fn(|cx| Poll::Ready(channel.poll_ready(cx).is_ready())).await
}

async fn no_instance_fails_after_the_ready_wait_with_a_clear_error(backend: Backend) {
    let registry = backend.registry();
    let mut channel = Channel::builder(registry.discovery.clone(), "nobody")
        .ready_timeout(Duration::from_millis(300))
        .connect();
    assert!(!ready_now(&mut channel).await, "nothing to call yet");
    // Ready once the wait is over: calls then fail at once.
    tokio::time::timeout(PATIENCE, channel.ready())
        .await
        .expect("ready (failing fast) after the ready timeout")
        .unwrap();
    let mut client = EchoClient::new(channel);
    let err = say(&mut client, &[("lodestar-color", "blue")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    for part in ["nobody", "blue", &backend.address()] {
        assert!(
            err.message().contains(part),
            "{part:?} missing from {:?}",
            err.message()
        );
    }
}

/// `poll_ready` says whether a call can go anywhere: pending while the only
/// instance is NOT_SERVING, ready again once it serves.
async fn poll_ready_follows_whether_any_instance_is_usable(backend: Backend) {
    let registry = backend.registry();
    let a = echo(&registry, inst("a", "v1")).await;
    let mut channel = Channel::builder(registry.discovery.clone(), "echo")
        .ready_timeout(Duration::from_secs(600))
        .connect();
    let client = EchoClient::new(channel.clone());
    until_all_answer(&client, &["a"]).await;
    assert!(ready_now(&mut channel).await);

    a.health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    eventually("poll_ready pending", PATIENCE, || {
        let mut channel = channel.clone();
        async move { !ready_now(&mut channel).await }
    })
    .await;
    a.health
        .set_service_status("", ServingStatus::Serving)
        .await;
    tokio::time::timeout(PATIENCE, channel.ready())
        .await
        .expect("ready once the instance serves again")
        .unwrap();
    let reply = say(&mut client.clone(), &[]).await.unwrap();
    assert_eq!(reply.instance, "a");
}

/// Calls one at a time over two identical instances: forced picks keep
/// the one p2c does not prefer in use.
async fn p2c_one_call_at_a_time_uses_both_instances(backend: Backend) {
    let registry = backend.registry();
    let _servers = [
        echo(&registry, inst("a", "v1")).await,
        echo(&registry, inst("b", "v1")).await,
    ];
    eventually("both registered", PATIENCE, || async {
        registry.get("echo").await.unwrap().len() == 2
    })
    .await;
    let mut client = client(&registry, BuiltinPolicy::P2c);
    let counts = count(&mut client, 300, &[]).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
}

/// Runs calls at concurrency `workers` until `stop`, counting outcomes.
fn load(
    client: &EchoClient<Channel>,
    workers: usize,
    stop: &Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>, Vec<JoinHandle<()>>) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks = (0..workers)
        .map(|_| {
            let (mut client, stop, ok, failed) =
                (client.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match say(&mut client, &[]).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            eprintln!("call failed: {status}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    (ok, failed, tasks)
}

async fn a_rolling_restart_under_load_loses_no_call(backend: Backend) {
    let registry = backend.registry();
    let mut servers = Vec::new();
    for id in ["a", "b", "c"] {
        servers.push(echo(&registry, inst(id, "v1")).await);
    }
    let client = client(&registry, BuiltinPolicy::P2c);
    until_all_answer(&client, &["a", "b", "c"]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = load(&client, 8, &stop);
    for (generation, old) in servers.drain(..).enumerate().collect::<Vec<_>>() {
        old.shutdown().await;
        let id = format!("new-{generation}");
        servers.push(echo(&registry, inst(&id, "v1")).await);
        // The replacement takes calls before the next instance goes.
        let before = ok.load(Ordering::Relaxed);
        eventually("the replacement in use", PATIENCE, || {
            let mut client = client.clone();
            let id = id.clone();
            async move { count(&mut client, 20, &[]).await.contains_key(&id) }
        })
        .await;
        eventually("calls going on", PATIENCE, || async {
            ok.load(Ordering::Relaxed) > before + 50
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "ok: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    let snapshot = registry.get("echo").await.unwrap();
    assert_eq!(snapshot.len(), 3);
}

async fn the_registry_down_mid_load_loses_no_call(mut backend: Backend) {
    let registry = backend.registry();
    let _servers = [
        echo(&registry, inst("a", "v1")).await,
        echo(&registry, inst("b", "v1")).await,
    ];
    let client = client(&registry, BuiltinPolicy::P2c);
    until_all_answer(&client, &["a", "b"]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = load(&client, 8, &stop);
    backend.kill();
    let during = ok.load(Ordering::Relaxed);
    eventually(
        "calls going on while the registry is down",
        PATIENCE,
        || async { ok.load(Ordering::Relaxed) > during + 200 },
    )
    .await;
    backend.restart().await;
    let after = ok.load(Ordering::Relaxed);
    eventually("calls going on after the restart", PATIENCE, || async {
        ok.load(Ordering::Relaxed) > after + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}

async fn a_crashed_instance_is_routed_around(backend: Backend) {
    let registry = backend.registry();
    let a = echo(&registry, inst("a", "v1")).await;
    let _b = echo(&registry, inst("b", "v1")).await;
    let client = client(&registry, BuiltinPolicy::RoundRobin);
    until_all_answer(&client, &["a", "b"]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = load(&client, 4, &stop);
    let started = ok.load(Ordering::Relaxed);
    eventually("calls under way", PATIENCE, || async {
        ok.load(Ordering::Relaxed) > started + 50
    })
    .await;
    a.kill();
    // Routed around once 200 calls in a row have gone to b alone.
    eventually("a out of rotation", PATIENCE, || {
        let mut client = client.clone();
        async move {
            let counts = count_ok(&mut client, 200).await;
            counts.keys().collect::<Vec<_>>() == ["b"]
        }
    })
    .await;
    let failed_at_crash = failed.load(Ordering::Relaxed);
    // Only calls in flight on the crashed instance may fail (they may have
    // run, so they are not retried); nothing after.
    assert!(failed_at_crash <= 4, "{failed_at_crash} failed");
    let before = ok.load(Ordering::Relaxed);
    eventually("calls going on", PATIENCE, || async {
        ok.load(Ordering::Relaxed) > before + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), failed_at_crash);
}

/// A front service whose handler calls `echo` through a balanced channel.
#[derive(Clone)]
struct Front {
    backend: EchoClient<Channel>,
}

#[tonic::async_trait]
impl lodestar_echo::echo_server::Echo for Front {
    async fn say(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        // No colour set here: the channel takes it from the incoming call.
        self.backend
            .clone()
            .say(Request::new(request.into_inner()))
            .await
    }
}

async fn colour_propagates_through_a_two_hop_chain(backend: Backend) {
    let registry = backend.registry();
    let _base = echo(&registry, inst("base", "v1")).await;
    let _blue = echo(&registry, inst("blue", "v1").with_metadata("color", "blue")).await;
    let backend = client(&registry, BuiltinPolicy::RoundRobin);
    until_all_answer(&backend, &["base"]).await;

    let bound = serve::Server::builder(
        registry.registrar.clone(),
        Instance::new("front", "front-1"),
    )
    .propagation_delay(Duration::from_millis(100))
    .bind()
    .await
    .unwrap();
    let routes = Routes::new(EchoServer::new(Front { backend }));
    tokio::spawn(bound.serve(routes, std::future::pending()));
    let mut front =
        EchoClient::new(Channel::builder(registry.discovery.clone(), "front").connect());

    let reply = say(&mut front, &[("lodestar-color", "blue")])
        .await
        .unwrap();
    assert_eq!(
        (reply.instance.as_str(), reply.color.as_str()),
        ("blue", "blue")
    );
    let reply = say(&mut front, &[]).await.unwrap();
    assert_eq!(
        (reply.instance.as_str(), reply.color.as_str()),
        ("base", "")
    );
}

async fn the_serve_helper_registers_when_serving_and_deregisters_before_closing(backend: Backend) {
    let registry = backend.registry();
    let server = echo(&registry, inst("a", "v1")).await;
    eventually("registered", PATIENCE, || async {
        registry.get("echo").await.unwrap().len() == 1
    })
    .await;
    let endpoint = registry
        .get("echo")
        .await
        .unwrap()
        .instances()
        .iter()
        .next()
        .unwrap()
        .endpoint("grpc")
        .unwrap()
        .clone();
    assert_eq!(endpoint.host(), "127.0.0.1");
    assert_ne!(endpoint.port(), 0, "the real bound port is registered");
    server.shutdown().await;
    assert!(registry.get("echo").await.unwrap().is_empty());

    // Listening on 0.0.0.0 needs an address clients can reach.
    let err = serve::Server::builder(registry.registrar.clone(), inst("x", "v1"))
        .listen("0.0.0.0:0".parse().unwrap())
        .bind()
        .await
        .unwrap_err();
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        cause.as_deref().is_some_and(|c| c.contains("advertise")),
        "{err}: {cause:?}"
    );
}

async fn a_channel_records_itself_as_a_subscriber_while_it_lives(backend: Backend) {
    let registry = backend.registry();
    let _a = echo(&registry, inst("a", "v1")).await;
    let client = client(&registry, BuiltinPolicy::P2c);
    until_all_answer(&client, &["a"]).await;
    eventually("the subscriber record", PATIENCE, || async {
        registry.subscribers("echo").await.unwrap().len() == 1
    })
    .await;
    let subscriber = registry.subscribers("echo").await.unwrap().remove(0);
    assert_eq!(subscriber.pid, std::process::id());
    assert_eq!(subscriber.service, "echo");
    assert!(!subscriber.host.is_empty());
    assert!(registry.subscribers("other").await.unwrap().is_empty());

    drop(client);
    eventually("the record gone with the channel", PATIENCE, || async {
        registry.subscribers("echo").await.unwrap().is_empty()
    })
    .await;
}

async fn every_policy_distributes_as_it_says(backend: Backend) {
    let registry = backend.registry();
    let _servers = [
        echo(&registry, inst("a", "v1").with_metadata("weight", "100")).await,
        echo(&registry, inst("b", "v1").with_metadata("weight", "300")).await,
    ];
    let mut weighted = client(&registry, BuiltinPolicy::Weighted);
    until_all_answer(&weighted, &["a", "b"]).await;
    let counts = count(&mut weighted, 400, &[]).await;
    assert_eq!((counts["a"], counts["b"]), (100, 300), "{counts:?}");

    let mut hashed = client(&registry, BuiltinPolicy::ConsistentHash);
    until_all_answer(&hashed, &["a", "b"]).await;
    for key in ["user-1", "user-2", "user-3"] {
        let counts = count(&mut hashed, 20, &[("lodestar-hash-key", key)]).await;
        assert_eq!(counts.len(), 1, "{key} moved: {counts:?}");
    }

    for policy in [BuiltinPolicy::Random, BuiltinPolicy::LeastRequest] {
        let mut client = client(&registry, policy);
        until_all_answer(&client, &["a", "b"]).await;
        let counts = count(&mut client, 200, &[]).await;
        assert!(
            counts.len() == 2 && counts.values().all(|n| *n >= 40),
            "{policy}: {counts:?}"
        );
    }
}

async fn the_first_call_of_a_new_channel_sees_the_whole_initial_view(backend: Backend) {
    let registry = backend.registry();
    let _base = echo(&registry, inst("base", "v1")).await;
    let _blue = echo(&registry, inst("blue", "v1").with_metadata("color", "blue")).await;
    eventually("both registered", PATIENCE, || async {
        registry.get("echo").await.unwrap().len() == 2
    })
    .await;
    // A fresh channel waits for every instance it first sees to settle, so a
    // blue call never falls back to the base lane while blue is connecting.
    for _ in 0..5 {
        let mut client = client(&registry, BuiltinPolicy::P2c);
        let reply = say(&mut client, &[("lodestar-color", "blue")])
            .await
            .unwrap();
        assert_eq!(reply.instance, "blue");
    }
}

/// A connected client keeps a health watch stream open on the server; the
/// drain must end it rather than wait for the drain timeout.
async fn a_clean_shutdown_does_not_wait_for_the_drain_timeout(backend: Backend) {
    let registry = backend.registry();
    let bound = serve::Server::builder(registry.registrar.clone(), inst("a", "v1"))
        .propagation_delay(Duration::from_millis(100))
        .drain_timeout(Duration::from_secs(600))
        .bind()
        .await
        .unwrap();
    let routes = Routes::new(EchoServer::new(EchoService::new(bound.instance().clone())));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(routes, async {
        let _ = stopped.await;
    }));
    let client = client(&registry, BuiltinPolicy::P2c);
    until_all_answer(&client, &["a"]).await;
    stop.send(()).unwrap();
    let done = tokio::time::timeout(PATIENCE, server).await;
    assert!(done.is_ok(), "the drain waited for its 600 s timeout");
    done.unwrap().unwrap().unwrap();
}
