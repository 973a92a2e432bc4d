//! Register -> visible to a watching client, side by side with etcd's own
//! put -> watch latency (the physical floor), on one local etcd.
//!
//! The floor does what etcd's Go naming package does, with a raw client: a
//! put under a lease, seen by a prefix watch with previous values.
//!
//! Each round measures the floor and lodestar back to back, so both see the
//! same machine noise. Three workloads:
//!
//! - `churn`: register an instance, see it, deregister it (the service stays
//!   small; another instance keeps the session's lease alive);
//! - `grow`: register instances that stay, up to N (every snapshot carries
//!   them all);
//! - `cold`: a registrar with no lease yet (grant + put);
//! - `set`: an operator's `set` (status down, then up) until a watching
//!   client's snapshot shows it (a read of the records and of the override,
//!   then a transaction: three round trips against the floor's one).
//!
//! With `LODESTAR_GO_RESOLVER` naming the built `bench/go/resolver` (as
//! `cargo xtask bench` does), `churn` also times the same kind of put until
//! a grpc-go `ClientConn` on etcd's official naming resolver
//! (`clientv3/naming/resolver`, etcd 3.4) sees the address: the seeds'
//! own stack. The Go process prints a line per change; its time includes
//! the pipe to this process (tens of microseconds).
//!
//! `cargo bench -p lodestar-etcd --bench latency [-- ROUNDS]` (default 1000).

use std::time::{Duration, Instant};

use lodestar::{Discovery, Instance, Override, Registrar, Status, Watch};
use lodestar_etcd::{
    EtcdRegistry,
    etcd_client::{Client, EventType, PutOptions, WatchOptions, WatchStream},
};
use lodestar_test_support::{EtcdNode, bench::Record};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn instance(id: &str) -> Instance {
    Instance::new("bench", id)
        .with_version("v1")
        .with_endpoint("grpc://127.0.0.1:50051".parse().unwrap())
        .with_metadata("zone", "z1")
}

async fn wait_visible(watch: &mut Watch, id: &str, present: bool) {
    loop {
        let snapshot = watch.next().await.expect("watch alive");
        if snapshot.instance(id).is_some() == present {
            return;
        }
    }
}

async fn wait_down(watch: &mut Watch, id: &str, down: bool) {
    loop {
        let snapshot = watch.next().await.expect("watch alive");
        if snapshot.instance(id).is_some_and(|i| i.is_down() == down) {
            return;
        }
    }
}

/// put -> the watch event for that key, with a raw etcd client.
async fn floor(
    client: &mut Client,
    stream: &mut WatchStream,
    key: &str,
    value: &str,
    put: bool,
) -> Duration {
    let lease = PutOptions::new().with_lease(*FLOOR_LEASE.get().expect("granted"));
    let start = Instant::now();
    if put {
        client.put(key, value, Some(lease)).await.unwrap();
    } else {
        client.delete(key, None).await.unwrap();
    }
    let wanted = if put {
        EventType::Put
    } else {
        EventType::Delete
    };
    loop {
        let response = stream.message().await.unwrap().unwrap();
        if response.events().iter().any(|e| {
            e.event_type() == wanted && e.kv().is_some_and(|kv| kv.key() == key.as_bytes())
        }) {
            return start.elapsed();
        }
    }
}

/// The floor's lease, granted once and long enough for the whole run.
static FLOOR_LEASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

/// The grpc-go peer: a child process printing `visible ADDR` / `gone ADDR`.
struct GoPeer {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl GoPeer {
    /// Starts the peer named by `LODESTAR_GO_RESOLVER`, if set, watching
    /// `bench-go` on `etcd`; waits for its first state.
    async fn start(etcd: &str) -> Option<GoPeer> {
        let Some(binary) = std::env::var_os("LODESTAR_GO_RESOLVER") else {
            println!(
                "grpc-go peer: not run (LODESTAR_GO_RESOLVER unset; `cargo xtask bench` builds it)"
            );
            return None;
        };
        let mut child = Command::new(binary)
            .args([etcd, "bench-go"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the grpc-go peer");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut peer = GoPeer {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        };
        peer.wait_line("ready").await;
        Some(peer)
    }

    async fn wait_line(&mut self, wanted: &str) {
        let limit = Duration::from_secs(30);
        loop {
            let line = tokio::time::timeout(limit, self.lines.next_line())
                .await
                .expect("the grpc-go peer answers within 30 s")
                .expect("read the grpc-go peer")
                .expect("the grpc-go peer is alive");
            if line == wanted {
                return;
            }
        }
    }

    /// Put `TARGET/ADDR` as etcd's endpoint manager writes it, until grpc-go
    /// sees the address; then delete it until grpc-go drops it.
    async fn round(&mut self, client: &mut Client, i: usize) -> Duration {
        let addr = format!("127.0.0.1:{}", 20000 + i % 40000);
        let key = format!("bench-go/{addr}");
        let value = format!(r#"{{"Op":0,"Addr":"{addr}","Metadata":null}}"#);
        let lease = PutOptions::new().with_lease(*FLOOR_LEASE.get().expect("granted"));
        let start = Instant::now();
        client.put(key.as_str(), value, Some(lease)).await.unwrap();
        self.wait_line(&format!("visible {addr}")).await;
        let elapsed = start.elapsed();
        client.delete(key.as_str(), None).await.unwrap();
        self.wait_line(&format!("gone {addr}")).await;
        elapsed
    }
}

struct Stats(Vec<Duration>);

impl Stats {
    fn pct(&mut self, p: f64) -> Duration {
        self.0.sort();
        let at = ((self.0.len() as f64 * p).ceil() as usize).clamp(1, self.0.len()) - 1;
        self.0[at]
    }
}

fn report(name: &str, floor: &mut Stats, ours: &mut Stats) {
    report_as(name, "register->visible", floor, ours);
}

fn report_as(name: &str, what: &str, floor: &mut Stats, ours: &mut Stats) {
    let (f50, f99, o50, o99) = (
        floor.pct(0.5),
        floor.pct(0.99),
        ours.pct(0.5),
        ours.pct(0.99),
    );
    println!(
        "{name:<6} n={:<5} floor put->watch p50 {:>8.1?} p99 {:>8.1?} | lodestar {what} p50 {:>8.1?} p99 {:>8.1?} | ratio p50 {:.2}x p99 {:.2}x",
        ours.0.len(),
        f50,
        f99,
        o50,
        o99,
        o50.as_secs_f64() / f50.as_secs_f64(),
        o99.as_secs_f64() / f99.as_secs_f64(),
    );
}

const FLOOR: &str = "etcd put -> watch (floor)";

/// The churn figure: the floor, lodestar and (when run) grpc-go.
fn emit_churn(floor: &Stats, ours: &Stats, go: &Stats) {
    let title = "Discovery propagation on etcd: register -> visible to a watching client";
    let note = "Each round times the floor (a raw put under a lease until a raw prefix watch \
                sees it), lodestar (register until a `Watch` snapshot holds the instance) and \
                grpc-go (a put as etcd's endpoint manager writes it until a grpc-go \
                `ClientConn` on etcd's naming resolver sees the address), back to back.";
    Record::new("propagation-etcd", title, FLOOR)
        .latency(&floor.0)
        .note(note)
        .emit();
    Record::new("propagation-etcd", title, "lodestar on etcd")
        .peer(FLOOR)
        .headline("p50")
        .latency(&ours.0)
        .emit();
    if !go.0.is_empty() {
        let mut sorted = go.0.clone();
        sorted.sort();
        let q = |p| lodestar_test_support::bench::quantile(&sorted, p);
        println!(
            "churn  grpc-go + etcd naming resolver put->visible p50 {:>8.1?} p99 {:>8.1?} (n={})",
            q(0.5),
            q(0.99),
            sorted.len()
        );
        Record::new("propagation-etcd", title, "grpc-go + etcd naming resolver")
            .peer(FLOOR)
            .latency(&go.0)
            .emit();
    }
}

/// The other workloads, each beside its own floor.
fn emit_other(workload: &str, what: &str, floor: &Stats, ours: &Stats) {
    let title = "etcd: other propagation workloads (set, a growing service, a cold lease)";
    let floor_row = format!("{workload}: {FLOOR}");
    Record::new("propagation-etcd-more", title, &floor_row)
        .latency(&floor.0)
        .emit();
    Record::new(
        "propagation-etcd-more",
        title,
        &format!("{workload}: {what}"),
    )
    .peer(&floor_row)
    .latency(&ours.0)
    .emit();
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let registrar = EtcdRegistry::connect(url.parse().unwrap()).await.unwrap();
    let watcher = EtcdRegistry::connect(url.parse().unwrap()).await.unwrap();
    let mut raw = registrar.client();
    let mut raw_stream = watcher
        .client()
        .watch(
            "/floor/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let lease = raw.lease_grant(3600, None).await.unwrap().id();
    FLOOR_LEASE.set(lease).expect("set once");
    let mut watch = watcher.watch("bench").await.unwrap();
    let value = instance("x").to_json();

    // Warm up connections and the session's lease.
    let _anchor = registrar.register(instance("anchor")).await.unwrap();
    wait_visible(&mut watch, "anchor", true).await;

    let mut go = GoPeer::start(&format!("http://{}", etcd.client_addr())).await;
    let mut g = Stats(Vec::new());
    let (mut f, mut o) = (Stats(Vec::new()), Stats(Vec::new()));
    for i in 0..rounds {
        if let Some(go) = go.as_mut() {
            g.0.push(go.round(&mut raw, i).await);
        }
        let key = format!("/floor/{i}");
        f.0.push(floor(&mut raw, &mut raw_stream, &key, &value, true).await);
        floor(&mut raw, &mut raw_stream, &key, &value, false).await;
        let id = format!("churn-{i}");
        let start = Instant::now();
        let registration = registrar.register(instance(&id)).await.unwrap();
        wait_visible(&mut watch, &id, true).await;
        o.0.push(start.elapsed());
        registration.deregister().await.unwrap();
        wait_visible(&mut watch, &id, false).await;
    }
    report("churn", &mut f, &mut o);
    emit_churn(&f, &o, &g);
    drop(go);

    let (mut f, mut o) = (Stats(Vec::new()), Stats(Vec::new()));
    for i in 0..rounds {
        let key = format!("/floor/set-{i}");
        f.0.push(floor(&mut raw, &mut raw_stream, &key, &value, true).await);
        floor(&mut raw, &mut raw_stream, &key, &value, false).await;
        let down = i % 2 == 0;
        let status = if down { Status::Down } else { Status::Up };
        let start = Instant::now();
        let found = registrar
            .set("bench", "anchor", Override::new().with_status(status))
            .await
            .unwrap();
        assert!(found);
        wait_down(&mut watch, "anchor", down).await;
        o.0.push(start.elapsed());
    }
    registrar.clear("bench", "anchor").await.unwrap();
    report_as("set", "set->visible", &mut f, &mut o);
    emit_other("set", "lodestar set -> visible", &f, &o);

    let (mut f, mut o) = (Stats(Vec::new()), Stats(Vec::new()));
    let mut kept = Vec::new();
    for i in 0..rounds {
        f.0.push(
            floor(
                &mut raw,
                &mut raw_stream,
                &format!("/floor/grow-{i}"),
                &value,
                true,
            )
            .await,
        );
        let id = format!("grow-{i}");
        let start = Instant::now();
        kept.push(registrar.register(instance(&id)).await.unwrap());
        wait_visible(&mut watch, &id, true).await;
        o.0.push(start.elapsed());
    }
    report("grow", &mut f, &mut o);
    emit_other("grow", "lodestar register -> visible", &f, &o);
    drop(kept);
    drop(_anchor);

    let cold_rounds = rounds.min(200);
    let (mut f, mut o) = (Stats(Vec::new()), Stats(Vec::new()));
    for i in 0..cold_rounds {
        f.0.push(
            floor(
                &mut raw,
                &mut raw_stream,
                &format!("/floor/cold-{i}"),
                &value,
                true,
            )
            .await,
        );
        let id = format!("cold-{i}");
        let start = Instant::now();
        let registration = registrar.register(instance(&id)).await.unwrap();
        wait_visible(&mut watch, &id, true).await;
        o.0.push(start.elapsed());
        // The last record: the lease is revoked, so the next one grants anew.
        registration.deregister().await.unwrap();
        wait_visible(&mut watch, &id, false).await;
    }
    report("cold", &mut f, &mut o);
    emit_other("cold", "lodestar register (new lease) -> visible", &f, &o);
}
