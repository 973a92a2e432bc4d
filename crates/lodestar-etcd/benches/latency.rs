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
//! `cargo bench -p lodestar-etcd --bench latency [-- ROUNDS]` (default 1000).

use std::time::{Duration, Instant};

use lodestar::{Discovery, Instance, Override, Registrar, Status, Watch};
use lodestar_etcd::{
    EtcdRegistry,
    etcd_client::{Client, EventType, PutOptions, WatchOptions, WatchStream},
};
use lodestar_test_support::EtcdNode;

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

    let (mut f, mut o) = (Stats(Vec::new()), Stats(Vec::new()));
    for i in 0..rounds {
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
}
