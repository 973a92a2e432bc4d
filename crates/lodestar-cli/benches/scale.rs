//! One change in a 10,000-instance service, seen by watchers: what a change
//! costs each client when the service is large.
//!
//! On one local etcd holding N instances of one service (default 10,000):
//!
//! - **one watcher**: a put that changes one instance, timed until etcd's own
//!   prefix watch (a raw client: the floor) and lodestar's `Watch` (in this
//!   process) each see it, both following the same put;
//! - **many watchers**: W `lodestar watch --json` processes (default 50),
//!   timed from the put until each prints the change, beside W raw etcd
//!   watch streams in this process;
//! - **memory**: the resident size of a `lodestar watch` of the large
//!   service minus that of one watching an empty service, per instance,
//!   beside an estimate of the records' own size.
//!
//! `cargo bench -p lodestar-cli --bench scale [-- INSTANCES WATCHERS ROUNDS]`
//! (defaults 10000 50 100).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use lodestar::{Discovery, Instance, Watch};
use lodestar_etcd::{
    EtcdRegistry,
    etcd_client::{Client, EventType, Txn, TxnOp, WatchOptions, WatchStream},
};
use lodestar_test_support::EtcdNode;
use lodestar_test_support::bench::Record;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

const BIN: &str = env!("CARGO_BIN_EXE_lodestar");
const SERVICE: &str = "scale";
const PREFIX: &str = "/lodestar/services/scale/";

fn instance(n: usize, round: usize) -> Instance {
    Instance::new(SERVICE, format!("scale-{n:05}"))
        .with_version("v1")
        .with_endpoint(
            format!("grpc://10.0.{}.{}:50051", n / 250, n % 250)
                .parse()
                .unwrap(),
        )
        .with_metadata("zone", "z1")
        .with_metadata("round", round.to_string())
}

fn key(n: usize) -> String {
    format!("{PREFIX}scale-{n:05}")
}

fn value(instance: &Instance) -> String {
    serde_json::to_string(instance).unwrap()
}

/// Puts N instances, 100 per transaction.
async fn fill(client: &mut Client, n: usize) {
    for start in (0..n).step_by(100) {
        let puts: Vec<TxnOp> = (start..n.min(start + 100))
            .map(|i| TxnOp::put(key(i), value(&instance(i, 0)), None))
            .collect();
        client.txn(Txn::new().and_then(puts)).await.unwrap();
    }
}

async fn raw_watch(client: &mut Client) -> WatchStream {
    let options = WatchOptions::new().with_prefix().with_prev_key();
    client.watch(PREFIX, Some(options)).await.unwrap()
}

/// Until the raw stream shows a put of `key`.
async fn raw_seen(stream: &mut WatchStream, key: &str) -> Instant {
    loop {
        let response = stream.message().await.unwrap().unwrap();
        if response.events().iter().any(|e| {
            e.event_type() == EventType::Put && e.kv().is_some_and(|kv| kv.key() == key.as_bytes())
        }) {
            return Instant::now();
        }
    }
}

/// Until the lodestar watch shows instance `n` at `round`.
async fn lodestar_seen(watch: &mut Watch, n: usize, round: usize) -> Instant {
    let id = format!("scale-{n:05}");
    let wanted = round.to_string();
    loop {
        let snapshot = watch.next().await.expect("watch alive");
        let seen = snapshot
            .instance(&id)
            .is_some_and(|i| i.metadata.get("round") == Some(&wanted));
        if seen {
            return Instant::now();
        }
    }
}

struct Stats(Vec<Duration>);

impl Stats {
    fn pct(&mut self, p: f64) -> Duration {
        self.0.sort();
        let at = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[at]
    }

    fn line(&mut self, name: &str) -> (Duration, Duration) {
        let (p50, p99) = (self.pct(0.5), self.pct(0.99));
        println!(
            "  {name:<34} p50 {:>9.3} ms   p99 {:>9.3} ms   (n={})",
            ms(p50),
            ms(p99),
            self.0.len()
        );
        (p50, p99)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A `lodestar watch --json` process and the arrival times of its lines.
struct Watcher {
    child: Child,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
}

fn spawn_watcher(url: &str, service: &str) -> Watcher {
    let mut child = Command::new(BIN)
        .args(["--registry", url, "watch", service, "--json"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("lodestar runs");
    let stdout = child.stdout.take().expect("piped");
    let (tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    Watcher { child, lines }
}

impl Watcher {
    /// Until a line mentions `marker`; its arrival time.
    async fn until(&mut self, marker: &str) -> Instant {
        loop {
            let (at, line) = self.lines.recv().await.expect("watcher alive");
            if line.contains(marker) {
                return at;
            }
        }
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The bytes a record's fields take, with no allocator overhead: the
/// struct, its strings, endpoint list and metadata entries.
fn record_bytes(instance: &Instance) -> usize {
    let strings =
        instance.id.capacity() + instance.service.capacity() + instance.version.capacity();
    let endpoints = instance.endpoints.capacity() * std::mem::size_of::<lodestar::Endpoint>()
        + instance
            .endpoints
            .iter()
            .map(|e| e.scheme().len() + e.host().len())
            .sum::<usize>();
    let metadata = instance
        .metadata
        .iter()
        .map(|(k, v)| k.capacity() + v.capacity() + 2 * std::mem::size_of::<String>())
        .sum::<usize>();
    std::mem::size_of::<Instance>() + strings + endpoints + metadata
}

async fn one_watcher(client: &mut Client, url: &str, n: usize, rounds: usize) -> (f64, f64) {
    let registry = EtcdRegistry::connect(url.parse().unwrap()).await.unwrap();
    let mut watch = registry.watch(SERVICE).await.unwrap();
    assert_eq!(watch.latest().len(), n, "every instance listed");
    let mut raw = raw_watch(client).await;
    let (mut floor, mut ours) = (Stats(Vec::new()), Stats(Vec::new()));
    for round in 1..=rounds {
        let i = (round * 7919) % n;
        let changed = instance(i, round);
        let start = Instant::now();
        client.put(key(i), value(&changed), None).await.unwrap();
        let k = key(i);
        let (a, b) = tokio::join!(raw_seen(&mut raw, &k), lodestar_seen(&mut watch, i, round));
        floor.0.push(a - start);
        ours.0.push(b - start);
    }
    println!("one watcher, one change in {n} instances ({rounds} rounds):");
    let (f50, f99) = floor.line("etcd put -> raw watch (floor)");
    let (o50, o99) = ours.line("put -> lodestar Watch");
    let title = format!("One change in a {n}-instance service on etcd -> watchers");
    let floor_row = "1 watcher: etcd put -> raw watch (floor)";
    Record::new("scale-etcd", &title, floor_row)
        .latency(&floor.0)
        .note("One in-process `Watch` beside a raw etcd watch; then W `lodestar watch --json` processes beside W raw watch streams, all following the same puts. `the last of them`: per change, the time until every watcher printed it.")
        .emit();
    Record::new("scale-etcd", &title, "1 watcher: lodestar Watch")
        .peer(floor_row)
        .latency(&ours.0)
        .emit();
    let ratio = (ms(o50) / ms(f50), ms(o99) / ms(f99));
    println!(
        "  ratio to the floor: p50 {:.2}x, p99 {:.2}x (goal 1.2x)",
        ratio.0, ratio.1
    );
    ratio
}

async fn many_watchers(
    client: &mut Client,
    url: &str,
    n: usize,
    w: usize,
    first: usize,
    rounds: usize,
) {
    let mut watchers: Vec<Watcher> = (0..w).map(|_| spawn_watcher(url, SERVICE)).collect();
    // Each prints every instance as an add first.
    let last = format!("\"scale-{:05}\"", n - 1);
    for watcher in &mut watchers {
        tokio::time::timeout(Duration::from_secs(120), watcher.until(&last))
            .await
            .expect("watcher listed the service");
    }
    let mut empty = spawn_watcher(url, "scale-empty");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (full_kib, empty_kib) = (watchers[0].rss_kib(), empty.rss_kib());
    let mut raws = Vec::new();
    for _ in 0..w {
        raws.push(raw_watch(client).await);
    }
    let (mut floor, mut ours, mut all) = (Stats(Vec::new()), Stats(Vec::new()), Stats(Vec::new()));
    for round in first + 1..=first + rounds {
        let i = (round * 7919) % n;
        let marker = format!("\"round\":\"{round}\"");
        let start = Instant::now();
        client
            .put(key(i), value(&instance(i, round)), None)
            .await
            .unwrap();
        let k = key(i);
        let raw_waits = raws.iter_mut().map(|s| raw_seen(s, &k));
        let ours_waits = watchers.iter_mut().map(|w| w.until(&marker));
        let (raw_times, our_times) = tokio::join!(
            futures_join_all(raw_waits.collect()),
            futures_join_all(ours_waits.collect())
        );
        floor.0.extend(raw_times.iter().map(|t| *t - start));
        ours.0.extend(our_times.iter().map(|t| *t - start));
        all.0
            .push(our_times.iter().max().copied().unwrap_or(start) - start);
    }
    println!("{w} watchers, one change in {n} instances ({rounds} rounds):");
    floor.line(&format!("put -> {w} raw etcd watch streams"));
    let (p50, _) = ours.line(&format!("put -> {w} `lodestar watch` procs"));
    all.line("put -> the last of them");
    println!("  goal: p50 within 20 ms: {:.2} ms", ms(p50));
    let title = format!("One change in a {n}-instance service on etcd -> watchers");
    let floor_row = format!("{w} watchers: raw etcd watch streams (floor)");
    Record::new("scale-etcd", &title, &floor_row)
        .latency(&floor.0)
        .emit();
    Record::new(
        "scale-etcd",
        &title,
        &format!("{w} watchers: `lodestar watch` processes"),
    )
    .peer(&floor_row)
    .latency(&ours.0)
    .headline("p50")
    .emit();
    Record::new(
        "scale-etcd",
        &title,
        &format!("{w} watchers: the last of them"),
    )
    .peer(&floor_row)
    .latency(&all.0)
    .emit();
    let sample = instance(0, 0);
    let per = (full_kib.saturating_sub(empty_kib) * 1024) as f64 / n as f64;
    let record = record_bytes(&sample) as f64;
    println!(
        "memory: `lodestar watch` RSS {full_kib} KiB with {n} instances, {empty_kib} KiB with none: \
         {per:.0} B per instance, of which the record itself ~{record:.0} B: {:.0} B beyond it (goal < 1 KB)",
        per - record
    );
    let title =
        format!("Watcher memory with {n} instances (`lodestar watch` RSS growth per instance)");
    let peer = "the record's fields (no allocator overhead)";
    Record::new("scale-memory", &title, peer)
        .metric("memory", "bytes/instance", record, true)
        .emit();
    Record::new("scale-memory", &title, "`lodestar watch` process")
        .peer(peer)
        .metric("memory", "bytes/instance", per, true)
        .note("RSS of a `lodestar watch` of the large service minus that of one watching an empty service, divided by the instances.")
        .emit();
    empty.child.kill().await.ok();
    for mut watcher in watchers {
        watcher.child.kill().await.ok();
    }
}

/// Awaits every future, concurrently, on this task.
async fn futures_join_all<F: std::future::Future<Output = Instant>>(
    futures: Vec<F>,
) -> Vec<Instant> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<Instant>> = vec![None; futures.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, future) in done.iter_mut().zip(futures.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(at) => *slot = Some(at),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (n, w, rounds) = (arg(1, 10_000), arg(2, 50), arg(3, 100));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let node = EtcdNode::start().await;
        let url = node.url();
        let mut client = Client::connect([node.client_addr()], None).await.unwrap();
        let started = Instant::now();
        fill(&mut client, n).await;
        println!(
            "{n} instances of {SERVICE} put in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        one_watcher(&mut client, &url, n, rounds).await;
        // Rounds go on from the first phase's, so every put changes a value.
        many_watchers(&mut client, &url, n, w, rounds, rounds.min(50)).await;
        drop(node);
    });
}
