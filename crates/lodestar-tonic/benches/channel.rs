//! The balanced channel against tonic's own channels, side by side, on the
//! same four local echo servers (in-process registry, so only the channels
//! differ).
//!
//! 1. Throughput at concurrency 64: lodestar (p2c) vs tonic's
//!    `Channel::balance_list` over the four vs one direct tonic `Channel`;
//!    the four servers run in one child process, the same for every client.
//! 2. Latency with one of four instances 50 ms slower: each lodestar policy
//!    vs tonic's `balance_list`, and p2c with no slow instance as the
//!    reference.
//! 3. Failed calls during a rolling restart of the four at steady load
//!    (NOT_SERVING, deregister, propagation delay, drain), with a timeline
//!    of calls/s and errors. The contrast with the graceful sequence off
//!    needs processes to kill: `lodestar-cli`'s `crash` bench.
//! 4. `share`: p2c over two identical instances, the share of calls the
//!    busier one takes: a fresh channel's first 300 calls one at a time (the
//!    demo's case), then calls at concurrency 1 and 16. Three fresh
//!    channels, so the spread of results shows; with the default force-pick
//!    interval and with 250 ms.
//! 5. `first-snapshot`: the time from `connect()` until picks see every
//!    instance of a first snapshot of 1,000 and of 10,000 instances (each its
//!    own connection; the servers run in a child process, as the two ends
//!    of 10,000 connections exceed the usual 20,000 descriptors of one).
//!
//! `cargo bench -p lodestar-tonic --bench channel [-- SECTION... SECONDS]`:
//! sections `throughput`, `slow`, `rolling`, `share`, `first-snapshot`
//! (default: all); SECONDS per measurement (default 3).

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lodestar::{
    Instance, Registrar,
    balance::{Balancer, BuiltinPolicy, Route},
    memory::MemoryRegistry,
};
use lodestar_echo::{EchoRequest, EchoService, echo_client::EchoClient, echo_server::EchoServer};
use lodestar_test_support::bench::Record;
use lodestar_tonic::{Channel, serve};
use tokio::sync::oneshot;
use tonic::{
    service::Routes,
    transport::{Channel as TonicChannel, Endpoint},
};

struct Server {
    address: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), serve::Error>>,
}

async fn server(
    registry: &Arc<MemoryRegistry>,
    service: &str,
    id: &str,
    delay: Duration,
) -> Server {
    let bound = serve::Server::builder(registry.clone(), Instance::new(service, id))
        .propagation_delay(Duration::from_millis(200))
        .bind()
        .await
        .expect("bind");
    let address = bound.local_addr().to_string();
    let echo = EchoService::new(bound.instance().clone()).with_delay(delay);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(bound.serve(Routes::new(EchoServer::new(echo)), async {
        let _ = stopped.await;
    }));
    Server {
        address,
        stop,
        task,
    }
}

impl Server {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Calls at `concurrency` for `time`; returns (ok, failed, latencies).
async fn drive<T>(
    client: EchoClient<T>,
    concurrency: usize,
    time: Duration,
) -> (u64, u64, Vec<Duration>)
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Future: Send,
    T::ResponseBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
    T::Error: Into<tonic::codegen::StdError>,
{
    let deadline = Instant::now() + time;
    let failed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (mut client, failed) = (client.clone(), failed.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let request = EchoRequest {
                        message: "x".into(),
                        delay_ms: 0,
                    };
                    match client.say(request).await {
                        Ok(_) => latencies.push(start.elapsed()),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("worker"));
    }
    latencies.sort();
    (
        latencies.len() as u64,
        failed.load(Ordering::Relaxed),
        latencies,
    )
}

fn p99(latencies: &[Duration]) -> Duration {
    latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

async fn lodestar_client(
    registry: &Arc<MemoryRegistry>,
    service: &str,
    policy: BuiltinPolicy,
    warm: usize,
) -> EchoClient<Channel> {
    let client = EchoClient::new(
        Channel::builder(registry.clone(), service)
            .policy(policy)
            .connect(),
    );
    // Until every instance is connected.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        if let Ok(reply) = client
            .clone()
            .say(EchoRequest {
                message: "warm".into(),
                delay_ms: 0,
            })
            .await
        {
            seen.insert(reply.into_inner().instance);
        }
        if seen.len() == warm {
            break;
        }
    }
    client
}

async fn tonic_balanced(addresses: &[String]) -> EchoClient<TonicChannel> {
    let endpoints = addresses
        .iter()
        .map(|a| Endpoint::from_shared(format!("http://{a}")).expect("endpoint"));
    EchoClient::new(TonicChannel::balance_list(endpoints))
}

async fn tonic_direct(address: &str) -> EchoClient<TonicChannel> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    EchoClient::new(channel)
}

async fn throughput(time: Duration) {
    let remote = Remote::start(4);
    let registry = Arc::new(MemoryRegistry::new());
    let mut registrations = Vec::new();
    for (i, address) in remote.addresses.iter().enumerate() {
        let instance = Instance::new("fast", format!("fast-{i}"))
            .with_endpoint(format!("grpc://{address}").parse().expect("endpoint"));
        registrations.push(registry.register(instance).await.expect("register"));
    }
    let addresses = remote.addresses.clone();
    let ours = lodestar_client(&registry, "fast", BuiltinPolicy::P2c, 4).await;
    let balanced = tonic_balanced(&addresses).await;
    let direct = tonic_direct(&addresses[0]).await;
    let (mut l, mut b, mut d) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ln, mut bn, mut dn) = (0u64, 0u64, 0u64);
    // Two interleaved rounds so all three see the same machine noise.
    for _ in 0..2 {
        let run = drive(ours.clone(), 64, time).await;
        ln += run.0;
        l.extend(run.2);
        let run = drive(balanced.clone(), 64, time).await;
        bn += run.0;
        b.extend(run.2);
        let run = drive(direct.clone(), 64, time).await;
        dn += run.0;
        d.extend(run.2);
    }
    let rate = |n: u64| n as f64 / (2.0 * time.as_secs_f64());
    let (lr, br, dr) = (rate(ln), rate(bn), rate(dn));
    println!(
        "throughput c=64, 4 instances (one server process): lodestar p2c {lr:.0}/s | tonic balance_list {br:.0}/s | tonic direct {dr:.0}/s | lodestar/balance_list {:.2}x, lodestar/direct {:.2}x",
        lr / br,
        lr / dr
    );
    let title =
        "Echo throughput, concurrency 64, 4 instances (the same server process for every client)";
    let peer = "tonic balance_list";
    let row = |name: &str, calls_per_s: f64, latencies: &mut Vec<Duration>| {
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Record::new("throughput", title, name)
            .metric("calls", "/s", calls_per_s, false)
            .metric(
                "p50",
                "ms",
                ms(lodestar_test_support::bench::quantile(latencies, 0.5)),
                true,
            )
            .metric(
                "p99",
                "ms",
                ms(lodestar_test_support::bench::quantile(latencies, 0.99)),
                true,
            )
    };
    row(peer, br, &mut b)
        .note("Client and servers share the machine's 2 cores (client runtime: 2 worker threads; the servers' process: 1); two interleaved rounds each.")
        .emit();
    row("lodestar channel (p2c)", lr, &mut l)
        .peer(peer)
        .headline("calls")
        .emit();
    row("one direct tonic Channel", dr, &mut d)
        .peer(peer)
        .emit();
    drop(registrations);
}

async fn slow_instance(registry: &Arc<MemoryRegistry>, time: Duration) {
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(server(registry, "mixed", &format!("ok-{i}"), Duration::ZERO).await);
    }
    servers.push(server(registry, "mixed", "slow", Duration::from_millis(50)).await);
    for i in 0..4 {
        servers.push(server(registry, "even", &format!("even-{i}"), Duration::ZERO).await);
    }
    let addresses: Vec<String> = servers[..4].iter().map(|s| s.address.clone()).collect();
    let c = 16;
    let title = "Latency with one slow instance of four (+50 ms), concurrency 16";
    let peer = "tonic balance_list";
    let balanced = tonic_balanced(&addresses).await;
    let mut tonic = drive(balanced, c, time).await.2;
    Record::new("slow", title, peer)
        .latency(&tonic)
        .note("Each client runs alone for the same time over the same four in-process servers; the reference is p2c over four equal instances.")
        .emit();
    let reference = lodestar_client(registry, "even", BuiltinPolicy::P2c, 4).await;
    let base = drive(reference, c, time).await.2;
    Record::new("slow", title, "reference: p2c, no slow instance")
        .peer(peer)
        .latency(&base)
        .emit();
    let mut line = format!(
        "p99, one of 4 instances +50 ms, c={c}: tonic balance_list {:.1?}",
        p99(&tonic)
    );
    for policy in BuiltinPolicy::ALL {
        let client = lodestar_client(registry, "mixed", policy, 4).await;
        let latencies = drive(client, c, time).await.2;
        line.push_str(&format!(
            " | lodestar {} {:.1?}",
            policy.name(),
            p99(&latencies)
        ));
        let record = Record::new("slow", title, &format!("lodestar {}", policy.name())).peer(peer);
        let record = if policy == BuiltinPolicy::P2c {
            record.headline("p99")
        } else {
            record
        };
        record.latency(&latencies).emit();
    }
    tonic.sort();
    println!("{line} | p2c with no slow instance {:.1?}", p99(&base));
    for s in servers {
        s.shutdown().await;
    }
}

const BUCKET: Duration = Duration::from_millis(100);

/// Calls at concurrency 16 until `stop`, counted per [`BUCKET`] since
/// `start`: (ok, failed) per bucket.
fn steady_load(
    client: EchoClient<Channel>,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<u64>, Vec<u64>)> {
    let slots = 600;
    let ok: Arc<Vec<AtomicU64>> = Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect());
    let failed: Arc<Vec<AtomicU64>> = Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect());
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (mut client, stop, ok, failed) =
                (client.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = client.say(echo_request()).await;
                    let slot = ((start.elapsed().as_millis() / BUCKET.as_millis()) as usize)
                        .min(slots - 1);
                    let counter = if result.is_ok() {
                        &ok[slot]
                    } else {
                        &failed[slot]
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        for w in workers {
            let _ = w.await;
        }
        let last = ((start.elapsed().as_millis() / BUCKET.as_millis()) as usize).min(slots);
        let read = |v: &Vec<AtomicU64>| {
            v[..last]
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .collect()
        };
        (read(&ok), read(&failed))
    })
}

async fn rolling_restart(registry: &Arc<MemoryRegistry>) {
    let title = "Rolling restart of 4 in-process instances at concurrency 16 (serve helper)";
    let mut servers = Vec::new();
    for i in 0..4 {
        servers.push(server(registry, "rolling", &format!("gen0-{i}"), Duration::ZERO).await);
    }
    let client = lodestar_client(registry, "rolling", BuiltinPolicy::P2c, 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let load = steady_load(client, start, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..4 {
        let old = servers.remove(0);
        old.shutdown().await;
        servers.push(server(registry, "rolling", &format!("gen1-{i}"), Duration::ZERO).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.await.expect("load");
    let (n_ok, n_failed): (u64, u64) = (ok.iter().sum(), failed.iter().sum());
    println!("rolling restart of 4 instances at c=16: {n_ok} calls ok, {n_failed} failed");
    Record::new("rolling-inprocess", title, "lodestar channel, graceful shutdown")
        .metric("failed", "calls", n_failed as f64, true)
        .metric("ok", "calls", n_ok as f64, false)
        .timeline(BUCKET, &ok, &failed)
        .note("Each instance: NOT_SERVING, deregister, 200 ms propagation delay, drain; its successor starts at once; one every ~300 ms after 0.5 s of steady load. Successful calls/s per 100 ms; failed calls in red.")
        .emit();
    for s in servers {
        s.shutdown().await;
    }
}

/// Counts replies per instance of calls at `concurrency` for `time`.
async fn spread(
    client: &EchoClient<Channel>,
    concurrency: usize,
    time: Duration,
) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + time;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut counts = BTreeMap::<String, u64>::new();
                while Instant::now() < deadline {
                    if let Ok(reply) = client.say(echo_request()).await {
                        *counts.entry(reply.into_inner().instance).or_default() += 1;
                    }
                }
                counts
            })
        })
        .collect();
    let mut counts = BTreeMap::new();
    for task in tasks {
        for (id, n) in task.await.expect("worker") {
            *counts.entry(id).or_default() += n;
        }
    }
    counts
}

fn echo_request() -> EchoRequest {
    EchoRequest {
        message: "x".into(),
        delay_ms: 0,
    }
}

/// The busier instance's share of the calls.
fn busiest(counts: &BTreeMap<String, u64>) -> f64 {
    let total: u64 = counts.values().sum();
    counts.values().copied().max().unwrap_or(0) as f64 / total.max(1) as f64
}

async fn share(registry: &Arc<MemoryRegistry>, time: Duration) {
    let servers = [
        server(registry, "twins", "twin-0", Duration::ZERO).await,
        server(registry, "twins", "twin-1", Duration::ZERO).await,
    ];
    share_with(registry, time, None).await;
    share_with(registry, time, Some(Duration::from_millis(250))).await;
    for s in servers {
        s.shutdown().await;
    }
}

/// A p2c channel to the twins, with this force-pick interval if given.
fn twins(registry: &Arc<MemoryRegistry>, force_pick: Option<Duration>) -> Channel {
    let mut builder = Channel::builder(registry.clone(), "twins").policy(BuiltinPolicy::P2c);
    if let Some(interval) = force_pick {
        builder = builder.force_pick(interval);
    }
    builder.connect()
}

async fn share_with(registry: &Arc<MemoryRegistry>, time: Duration, force_pick: Option<Duration>) {
    let interval = force_pick.map_or_else(|| "default".to_string(), |i| format!("{i:?}"));
    let (mut first, mut one, mut sixteen) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let client = EchoClient::new(twins(registry, force_pick));
        let mut counts = BTreeMap::<String, u64>::new();
        for _ in 0..300 {
            if let Ok(reply) = client.clone().say(echo_request()).await {
                *counts.entry(reply.into_inner().instance).or_default() += 1;
            }
        }
        first.push(busiest(&counts));
        one.push(busiest(&spread(&client, 1, time).await));
        sixteen.push(busiest(&spread(&client, 16, time).await));
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "p2c over 2 identical instances, force pick {interval}, share of the busier (3 fresh channels): first 300 calls c=1: {} | c=1 for {time:?}: {} | c=16 for {time:?}: {}",
        show(&first),
        show(&one),
        show(&sixteen)
    );
}

/// Echo servers in a child process (this bench, run with `__serve`).
struct Remote {
    child: Child,
    addresses: Vec<String>,
}

impl Remote {
    fn start(servers: usize) -> Self {
        let exe = std::env::current_exe().expect("bench path");
        let mut child = Command::new(exe)
            .args(["__serve", &servers.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("child servers");
        let stdout = child.stdout.take().expect("stdout");
        let addresses = BufReader::new(stdout)
            .lines()
            .take(servers)
            .map(|line| line.expect("address"))
            .collect();
        Self { child, addresses }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: `servers` echo servers, addresses on stdout, until
/// stdin closes.
fn serve_children(servers: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let registry = Arc::new(MemoryRegistry::new());
        let mut running = Vec::new();
        for i in 0..servers {
            let s = server(&registry, "remote", &format!("remote-{i}"), Duration::ZERO).await;
            println!("{}", s.address);
            running.push(s);
        }
        let _ = std::io::stdout().flush();
        // Until the parent goes.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await;
    });
}

/// Whether `n` round-robin picks reach `n` distinct instances.
fn sees_all(balancer: &Balancer, n: usize) -> bool {
    let mut seen = HashSet::with_capacity(n);
    for _ in 0..n {
        let Ok(pick) = balancer.pick(&Route::new()) else {
            return false;
        };
        seen.insert(pick.instance().id.clone());
    }
    seen.len() == n
}

async fn first_snapshot(sizes: &[usize]) {
    let remote = Remote::start(4);
    for &n in sizes {
        let registry = Arc::new(MemoryRegistry::new());
        let mut registrations = Vec::with_capacity(n);
        for i in 0..n {
            let address = &remote.addresses[i % remote.addresses.len()];
            let instance = Instance::new("wide", format!("w{i:05}"))
                .with_endpoint(format!("grpc://{address}").parse().expect("endpoint"));
            registrations.push(registry.register(instance).await.expect("register"));
        }
        let start = Instant::now();
        let channel = Channel::builder(registry.clone(), "wide")
            .policy(BuiltinPolicy::RoundRobin)
            .connect();
        let limit = Duration::from_secs(600);
        let mut seen = false;
        while start.elapsed() < limit {
            if sees_all(channel.balancer(), n) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = start.elapsed();
        if seen {
            println!("first snapshot of {n} instances: picks see all of them after {elapsed:.2?}");
        } else {
            println!("first snapshot of {n} instances: not all seen after {limit:?}");
        }
        drop(channel);
        drop(registrations);
        // Let the connections close before the next size.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__serve") {
        let servers = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(4);
        return serve_children(servers);
    }
    let secs: f64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(3.0);
    let time = Duration::from_secs_f64(secs);
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    let run = |section: &str| named.is_empty() || named.contains(&section);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let registry = Arc::new(MemoryRegistry::new());
        let _keep: &dyn Registrar = registry.as_ref();
        if run("throughput") {
            throughput(time).await;
        }
        if run("slow") {
            slow_instance(&registry, time).await;
        }
        if run("rolling") {
            rolling_restart(&registry).await;
        }
        if run("share") {
            share(&registry, time).await;
        }
        if run("first-snapshot") {
            first_snapshot(&[1_000, 10_000]).await;
        }
    });
}
