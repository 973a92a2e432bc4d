//! The built-in registry's figures, printed:
//!
//! - `wake`: propagation within a node and across the nodes of a two-node
//!   cluster, p50/p99: discovery's own long poll (register sent -> `polls`
//!   answered, raw HTTP: the floor) beside lodestar's `lodestar://` backend
//!   (register -> another client's `Watch` shows it), interleaved;
//! - one node holding 100,000 instances: renews per second sustained (the
//!   load generator shares the two worker threads with the server), and
//!   the memory it takes (VmRSS before and after registering them);
//! - `fanout`: one register answering 1,000 held polls of its application
//!   (register sent -> the last poll answered), beside one held poll;
//! - `fetch` of an application with 1,000 instances, p50/p99;
//! - an operator's `set` (status down, then up) through the `lodestar://`
//!   client until another client's watch shows it, p50/p99.
//!
//! Run with `cargo bench -p lodestar-registry --bench registry [-- SECTION...]`
//! (sections: `wake`, `renews`, `fanout`, `fetch`, `set`; all by default).
//! `LODESTAR_BENCH_INSTANCES` (100,000), `LODESTAR_BENCH_POLLS` (1,000) and
//! `LODESTAR_BENCH_ROUNDS` (300) scale it down (`cargo xtask bench --quick`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use lodestar_registry::{
    form::Form,
    server::{Config, Server},
    wire::Reply,
};
use lodestar_test_support::bench::Record;

type Http = Client<HttpConnector, Full<Bytes>>;

const INSTANCES: usize = 100_000;
const POLLS: usize = 1_000;
const ROUNDS: usize = 300;

/// A size from the environment, else its default.
fn sized(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const CONNECTIONS: usize = 16;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    runtime.block_on(async {
        if run("wake") {
            wake_up().await;
        }
        if run("renews") {
            renews_and_memory(sized("LODESTAR_BENCH_INSTANCES", INSTANCES)).await;
        }
        if run("fanout") {
            fanout(sized("LODESTAR_BENCH_POLLS", POLLS)).await;
        }
        if run("fetch") {
            fetch_big_app().await;
        }
        if run("set") {
            set_visible().await;
        }
    });
}

fn http() -> Http {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(HttpConnector::new())
}

async fn call(http: &Http, method: Method, url: String, body: String) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = http.request(request).await.expect("response");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&body).expect("a discovery reply")
}

async fn node(tune: impl FnOnce(&mut Config)) -> String {
    let mut config = Config::new(([127, 0, 0, 1], 0).into());
    tune(&mut config);
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr().expect("addr").to_string();
    tokio::spawn(server.serve(std::future::pending()));
    addr
}

fn register_form(appid: &str, hostname: &str) -> String {
    Form::new()
        .pair("zone", "z1")
        .pair("env", "dev")
        .pair("appid", appid)
        .pair("hostname", hostname)
        .pair("addrs", "grpc://10.0.0.1:9000")
        .pair("status", "1")
        .pair("version", "v1")
        .pair("metadata", r#"{"weight":"100"}"#)
        .finish()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// discovery's own client: `polls` on `poll_at`, which holds an application
/// until it changes, answered by a register sent to `register_at`.
async fn raw_poll_round(
    http: &Http,
    register_at: &str,
    poll_at: &str,
    appid: &str,
    round: usize,
) -> Duration {
    let fetch =
        format!("http://{poll_at}/discovery/fetch?env=dev&appid={appid}&status=3&x={round}");
    let mut latest = match call(http, Method::GET, fetch, String::new()).await {
        reply if reply.code == 0 => reply.data["latest_timestamp"].as_i64().unwrap_or(0),
        _ => 0,
    };
    let hostname = format!("h{round}");
    let poller = {
        let (http, poll_at, appid, quoted) = (
            http.clone(),
            poll_at.to_string(),
            appid.to_string(),
            format!("\"{hostname}\""),
        );
        tokio::spawn(async move {
            // A poll answered by an older change (the last round's cancel
            // still replicating) is polled again from its timestamp.
            for _ in 0..100 {
                let url = format!(
                    "http://{poll_at}/discovery/polls?env=dev&hostname=bench&appid={appid}&latest_timestamp={latest}"
                );
                let reply = call(&http, Method::GET, url, String::new()).await;
                let at = Instant::now();
                assert_eq!(reply.code, 0, "the poll answered with a change");
                if reply.data.to_string().contains(&quoted) {
                    return at;
                }
                latest = reply.data[appid.as_str()]["latest_timestamp"]
                    .as_i64()
                    .unwrap_or(latest);
            }
            panic!("the poll never showed the registered instance");
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let started = Instant::now();
    let form = register_form(appid, &hostname);
    call(
        http,
        Method::POST,
        format!("http://{register_at}/discovery/register"),
        form,
    )
    .await;
    let woke = poller.await.expect("poller");
    // Cancel it, so the application stays one instance (as lodestar's rounds
    // do) and a reply does not grow with the rounds.
    let form = Form::new()
        .pair("zone", "z1")
        .pair("env", "dev")
        .pair("appid", appid)
        .pair("hostname", &hostname)
        .finish();
    call(
        http,
        Method::POST,
        format!("http://{register_at}/discovery/cancel"),
        form,
    )
    .await;
    woke.saturating_duration_since(started)
}

/// lodestar's backend: register through `registrar` until `watch` (another
/// client) shows the instance; then deregister until it is gone.
async fn lodestar_round(
    registrar: &lodestar_registry::LodestarRegistry,
    watch: &mut lodestar::Watch,
    service: &str,
    round: usize,
) -> Duration {
    use lodestar::{Instance, Registrar};
    let id = format!("r{round}");
    let instance = Instance::new(service, &id)
        .with_endpoint("grpc://127.0.0.1:9000".parse().expect("endpoint"));
    let started = Instant::now();
    let registration = registrar.register(instance).await.expect("register");
    loop {
        let snapshot = watch.next().await.expect("watch alive");
        if snapshot.instance(&id).is_some() {
            break;
        }
    }
    let elapsed = started.elapsed();
    registration.deregister().await.expect("deregister");
    while watch
        .next()
        .await
        .expect("watch alive")
        .instance(&id)
        .is_some()
    {}
    elapsed
}

async fn wake_up() {
    use lodestar::Discovery;
    use lodestar_registry::LodestarRegistry;

    let rounds = sized("LODESTAR_BENCH_ROUNDS", ROUNDS);
    let (a, b) = (free_port(), free_port());
    let (addr_a, addr_b) = (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}"));
    let (pa, pb) = (addr_b.clone(), addr_a.clone());
    node(|c| {
        c.listen = ([127, 0, 0, 1], a).into();
        c.peers = vec![pa];
    })
    .await;
    node(|c| {
        c.listen = ([127, 0, 0, 1], b).into();
        c.peers = vec![pb];
    })
    .await;
    let http = http();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connect = |addr: &str| {
        let url = format!("lodestar://{addr}");
        async move {
            LodestarRegistry::connect(url.parse().expect("url"))
                .await
                .expect("connect")
        }
    };
    let (registrar, watcher_a, watcher_b) = (
        connect(&addr_a).await,
        connect(&addr_a).await,
        connect(&addr_b).await,
    );
    let mut watch_a = watcher_a.watch("within").await.expect("watch");
    let mut watch_b = watcher_b.watch("across").await.expect("watch");
    let (mut raw_one, mut raw_two, mut ours_one, mut ours_two) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        raw_one.push(raw_poll_round(&http, &addr_a, &addr_a, "wake-one", round).await);
        ours_one.push(lodestar_round(&registrar, &mut watch_a, "within", round).await);
        raw_two.push(raw_poll_round(&http, &addr_a, &addr_b, "wake", round).await);
        ours_two.push(lodestar_round(&registrar, &mut watch_b, "across", round).await);
    }
    for (what, samples) in [
        (
            "discovery polls, register -> poll answered, one node",
            &mut raw_one,
        ),
        (
            "lodestar://, register -> another client's Watch, one node",
            &mut ours_one,
        ),
        (
            "discovery polls, register on node A -> poll on node B answered",
            &mut raw_two,
        ),
        (
            "lodestar://, register on node A -> Watch on node B",
            &mut ours_two,
        ),
    ] {
        samples.sort();
        println!(
            "{what} ({} rounds): p50 {:?}  p99 {:?}",
            samples.len(),
            percentile(samples, 0.5),
            percentile(samples, 0.99)
        );
    }
    let title = "Discovery propagation on the built-in registry: register -> visible";
    let note = "The floor is discovery's own client protocol (`polls` held on the node, answered \
                by a register; raw HTTP); lodestar's row is its `lodestar://` backend, register \
                until another client's `Watch` snapshot holds the instance. Two nodes replicate \
                to each other; all four run interleaved, round by round, and each round's \
                instance is removed again (cancel / deregister) before the next.";
    let floor_one = "discovery polls (raw HTTP), one node";
    let floor_two = "discovery polls (raw HTTP), across nodes";
    Record::new("propagation-builtin", title, floor_one)
        .latency(&raw_one)
        .note(note)
        .emit();
    Record::new("propagation-builtin", title, "lodestar://, one node")
        .peer(floor_one)
        .latency(&ours_one)
        .emit();
    Record::new("propagation-builtin", title, floor_two)
        .latency(&raw_two)
        .emit();
    Record::new("propagation-builtin", title, "lodestar://, across nodes")
        .peer(floor_two)
        .headline("p50")
        .latency(&ours_two)
        .emit();
}

/// `polls` held on one application, all answered by one register.
async fn fanout(polls: usize) {
    let addr = node(|c| c.max_polls = polls.max(10_000)).await;
    let http = http();
    let mut one = Vec::new();
    let mut all = Vec::new();
    for round in 0..5 {
        for (held, into) in [(1, &mut one), (polls, &mut all)] {
            let appid = format!("fan-{held}-{round}");
            let url = format!(
                "http://{addr}/discovery/polls?env=dev&hostname=bench&appid={appid}&latest_timestamp=0"
            );
            let pollers: Vec<_> = (0..held)
                .map(|_| {
                    let (http, url) = (http.clone(), url.clone());
                    tokio::spawn(async move {
                        let reply = call(&http, Method::GET, url, String::new()).await;
                        (Instant::now(), reply.code)
                    })
                })
                .collect();
            // Until every poll is held (each answers only on a change).
            tokio::time::sleep(Duration::from_millis(200 + held as u64 / 2)).await;
            let started = Instant::now();
            let form = register_form(&appid, "h");
            call(
                &http,
                Method::POST,
                format!("http://{addr}/discovery/register"),
                form,
            )
            .await;
            let mut last = Duration::ZERO;
            for poller in pollers {
                let (woke, code) = poller.await.expect("poller");
                assert_eq!(code, 0, "the poll answered with the change");
                last = last.max(woke - started);
            }
            into.push(last);
        }
    }
    one.sort();
    all.sort();
    println!(
        "poll fan-out: one register -> the last of {polls} held polls answered: median {:?} (one held poll: {:?}), 5 rounds",
        percentile(&all, 0.5),
        percentile(&one, 0.5)
    );
    let title =
        "Built-in registry: one register answering held polls (register -> last poll answered)";
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let one_row = "1 held poll";
    Record::new("registry-fanout", title, one_row)
        .metric("median", "ms", ms(percentile(&one, 0.5)), true)
        .metric("worst", "ms", ms(one[one.len() - 1]), true)
        .note(
            "5 rounds each; the polls are HTTP/1.1 requests held on one node, one connection each.",
        )
        .emit();
    Record::new("registry-fanout", title, &format!("{polls} held polls"))
        .peer(one_row)
        .headline("median")
        .metric("median", "ms", ms(percentile(&all, 0.5)), true)
        .metric("worst", "ms", ms(all[all.len() - 1]), true)
        .emit();
}

async fn renews_and_memory(instances: usize) {
    let rss_before = rss_kib();
    let addr = node(|c| c.max_instances_per_app = instances).await;
    let http = http();
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (http, addr, next) = (http.clone(), addr.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= instances {
                    break;
                }
                let form = register_form("bulk", &format!("host-{i:06}"));
                let reply = call(
                    &http,
                    Method::POST,
                    format!("http://{addr}/discovery/register"),
                    form,
                )
                .await;
                assert_eq!(reply.code, 0);
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let registered_in = started.elapsed();
    let rss_after = rss_kib();
    println!(
        "{instances} instances registered in {registered_in:.1?} ({:.0}/s); VmRSS {} MiB -> {} MiB (+{:.0} bytes/instance, whole process)",
        instances as f64 / registered_in.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024,
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / instances as f64,
    );

    let renewed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..CONNECTIONS {
        let (http, addr, renewed, stop) =
            (http.clone(), addr.clone(), renewed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let form = Form::new()
                    .pair("zone", "z1")
                    .pair("env", "dev")
                    .pair("appid", "bulk")
                    .pair("hostname", &format!("host-{:06}", i % instances))
                    .finish();
                let reply = call(
                    &http,
                    Method::POST,
                    format!("http://{addr}/discovery/renew"),
                    form,
                )
                .await;
                assert_eq!(reply.code, 0);
                renewed.fetch_add(1, Ordering::Relaxed);
                i += CONNECTIONS;
            }
        }));
    }
    let renew_for = Duration::from_secs(sized("LODESTAR_BENCH_RENEW_SECS", 10) as u64);
    tokio::time::sleep(renew_for).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }
    let rate = renewed.load(Ordering::Relaxed) as f64 / renew_for.as_secs_f64();
    println!(
        "renews sustained over {renew_for:?} with {instances} instances, {CONNECTIONS} keep-alive connections, server and load on 2 worker threads: {rate:.0}/s (needed at one renew per 30 s: {:.0}/s)",
        instances as f64 / 30.0
    );
    let title = format!(
        "Built-in registry holding {instances} instances (one node, server and load on 2 threads)"
    );
    let needed = "needed: one renew per 30 s per instance";
    Record::new("registry-scale", &title, needed)
        .metric("renews", "/s", instances as f64 / 30.0, false)
        .emit();
    Record::new("registry-scale", &title, "lodestar registry, sustained")
        .peer(needed)
        .headline("renews")
        .metric("renews", "/s", rate, false)
        .metric("registers", "/s", instances as f64 / registered_in.as_secs_f64(), false)
        .metric("memory", "bytes/instance", (rss_after.saturating_sub(rss_before) * 1024) as f64 / instances as f64, true)
        .note("Memory is the whole process's VmRSS growth (server, clients, buffers) divided by the instances.")
        .emit();
}

async fn fetch_big_app() {
    let addr = node(|_| {}).await;
    let http = http();
    for i in 0..1_000 {
        let form = register_form("big", &format!("host-{i:04}"));
        call(
            &http,
            Method::POST,
            format!("http://{addr}/discovery/register"),
            form,
        )
        .await;
    }
    let url = format!("http://{addr}/discovery/fetch?env=dev&appid=big&status=1");
    let mut samples = Vec::new();
    for _ in 0..2_000 {
        let started = Instant::now();
        let reply = call(&http, Method::GET, url.clone(), String::new()).await;
        samples.push(started.elapsed());
        assert_eq!(
            reply.data["instances"]["z1"].as_array().map(Vec::len),
            Some(1_000)
        );
    }
    samples.sort();
    println!(
        "fetch of an application with 1,000 instances (request, JSON of ~{} KiB, parse): p50 {:?}  p99 {:?}",
        fetched_kib(&http, &url).await,
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
}

async fn set_visible() {
    use lodestar::{Discovery, Instance, Override, Registrar, Status};
    use lodestar_registry::LodestarRegistry;

    let addr = node(|_| {}).await;
    let url = format!("lodestar://{addr}");
    let owner = LodestarRegistry::connect(url.parse().expect("url"))
        .await
        .expect("connect");
    let operator = LodestarRegistry::connect(url.parse().expect("url"))
        .await
        .expect("connect");
    let instance = Instance::new("bench", "a")
        .with_endpoint("grpc://127.0.0.1:9000".parse().expect("endpoint"));
    let _a = owner.register(instance).await.expect("register");
    let mut watch = operator.watch("bench").await.expect("watch");
    let mut samples = Vec::new();
    for round in 0..300 {
        let down = round % 2 == 0;
        let status = if down { Status::Down } else { Status::Up };
        let started = Instant::now();
        let found = operator
            .set("bench", "a", Override::new().with_status(status))
            .await
            .expect("set");
        assert!(found);
        loop {
            let snapshot = watch.next().await.expect("watch alive");
            if snapshot.instance("a").is_some_and(|a| a.is_down() == down) {
                break;
            }
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "set status down/up -> another client's watch shows it ({} rounds; fetch + set, then poll + fetch): p50 {:?}  p99 {:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
}

async fn fetched_kib(http: &Http, url: &str) -> usize {
    let reply = call(http, Method::GET, url.to_string(), String::new()).await;
    serde_json::to_vec(&reply).map_or(0, |b| b.len() / 1024)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
