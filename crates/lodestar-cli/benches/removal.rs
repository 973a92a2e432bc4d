//! How long a registered `lodestar register` process stays visible after it
//! dies: kill -9 (the record waits for its lease, TTL 3 s) and SIGTERM (it
//! deregisters on the way out; goal: under 100 ms).
//!
//! The time runs from the signal to the moment a watching client's snapshot
//! no longer holds the instance.
//!
//! `cargo bench -p lodestar-cli --bench removal [-- KILL_ROUNDS TERM_ROUNDS]`
//! (defaults 5 and 30).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use lodestar::{Discovery, Watch};
use lodestar_etcd::EtcdRegistry;
use lodestar_test_support::{EtcdNode, bench::Record};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_lodestar");

fn register(url: &str, id: &str) -> Child {
    Command::new(BIN)
        .args([
            "--registry",
            url,
            "register",
            "--service",
            "removal",
            "--id",
            id,
        ])
        .args(["--endpoint", "grpc://127.0.0.1:50051", "--ttl", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("lodestar runs")
}

async fn until(watch: &mut Watch, id: &str, present: bool) {
    while watch.latest().instance(id).is_some() != present {
        watch.next().await.expect("watch alive");
    }
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .expect("kill runs");
}

async fn removal(url: &str, watch: &mut Watch, id: &str, how: &str) -> Duration {
    let mut child = register(url, id);
    until(watch, id, true).await;
    let start = Instant::now();
    signal(&child, how);
    until(watch, id, false).await;
    let elapsed = start.elapsed();
    let _ = child.wait().await;
    elapsed
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let title = "A `lodestar register` process's record after its death, on etcd: signal -> gone from a watch";
    Record::new("removal", title, name)
        .latency(&samples)
        .note("SIGTERM deregisters on the way out; after kill -9 the record waits for the lease's TTL (3 s). No peer: the kill -9 row is the floor a lease sets.")
        .emit();
    let at =
        |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "{name:<22} n={:<3} min {:>9.1?} p50 {:>9.1?} p99 {:>9.1?} max {:>9.1?}",
        samples.len(),
        samples[0],
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let kill_rounds = args.next().unwrap_or(5).max(1);
    let term_rounds = args.next().unwrap_or(30).max(1);
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let watcher = EtcdRegistry::connect(url.parse().unwrap()).await.unwrap();
    let mut watch = watcher.watch("removal").await.unwrap();

    let mut term = Vec::new();
    for i in 0..term_rounds {
        term.push(removal(&url, &mut watch, &format!("term-{i}"), "-TERM").await);
    }
    summary("SIGTERM -> removed", term);

    let mut kill = Vec::new();
    for i in 0..kill_rounds {
        kill.push(removal(&url, &mut watch, &format!("kill-{i}"), "-KILL").await);
    }
    summary("kill -9 -> removed (TTL 3 s)", kill);
}
