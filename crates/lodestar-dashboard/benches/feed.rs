//! How long a registry change takes to reach an open page's event stream:
//! register (or deregister) an instance, time until its `join` (`leave`)
//! arrives on `/api/events`. On the built-in registry (in-process node) and
//! on etcd (a real process), for a service the dashboard already follows
//! (the watch alone) and for a new service (found by the once-a-second
//! listing, then watched).
//!
//! Run: `cargo bench -p lodestar-dashboard --bench feed` (or `cargo xtask
//! bench`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use lodestar::{Instance, Registry};
use lodestar_dashboard::Config;
use lodestar_test_support::EtcdNode;

const ROUNDS: usize = 20;

fn instance(service: &str, id: &str) -> Instance {
    Instance::new(service, id).with_endpoint("grpc://127.0.0.1:9".parse().unwrap())
}

/// Register then deregister `ROUNDS` instances of `service` one at a time;
/// the join and leave latencies, in ms.
async fn rounds(
    registry: &Arc<dyn Registry>,
    served: &support::Served,
    new_services: bool,
) -> (Vec<f64>, Vec<f64>) {
    let mut events = served.events().await;
    let (mut joins, mut leaves) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let service = if new_services {
            format!("fresh-{round}")
        } else {
            "steady".to_string()
        };
        // Unique: a stream opened later replays the events kept.
        let id = format!("{service}-i{round}");
        let started = Instant::now();
        let registration = registry.register(instance(&service, &id)).await.unwrap();
        events
            .next_change("join", |e| e["id"] == id.as_str() && e["kind"] == "join")
            .await;
        joins.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        registration.deregister().await.unwrap();
        events
            .next_change("leave", |e| e["id"] == id.as_str() && e["kind"] == "leave")
            .await;
        leaves.push(started.elapsed().as_secs_f64() * 1e3);
    }
    (joins, leaves)
}

fn report(backend: &str, case: &str, what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "feed {backend:<9} {case:<16} {what:<5} n={:<3} p50 {:>7.1} ms  p90 {:>7.1} ms  max {:>7.1} ms",
        ms.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
}

async fn bench(backend: &str, registry: Arc<dyn Registry>, url: String) {
    // The followed service exists before the dashboard starts.
    let _anchor = registry
        .register(instance("steady", "anchor"))
        .await
        .unwrap();
    let served = support::dashboard(registry.clone(), Config::new(url)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (joins, leaves) = rounds(&registry, &served, false).await;
    report(backend, "followed service", "join", joins);
    report(backend, "followed service", "leave", leaves);
    let (joins, _) = rounds(&registry, &served, true).await;
    report(backend, "new service", "join", joins);
}

#[tokio::main]
async fn main() {
    use lodestar_registry::server::{Config as NodeConfig, Server};

    let server = Server::bind(NodeConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let url = format!("lodestar://{}", server.local_addr().unwrap());
    let node = tokio::spawn(server.serve(std::future::pending()));
    let registry = lodestar_connect::connect(&url).await.unwrap();
    bench("lodestar", registry, url).await;
    node.abort();

    let etcd = EtcdNode::start().await;
    let registry = lodestar_connect::connect(&etcd.url()).await.unwrap();
    bench("etcd", registry, etcd.url()).await;
}
