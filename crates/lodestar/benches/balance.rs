//! Pick and rebuild costs of the balancer.
//!
//! `select/<policy>/<n>`: the pick alone (choosing an endpoint and starting
//! its load guard), single-threaded; the guards are completed off the clock
//! in batches of 64, so up to 64 requests are in flight as in a busy client.
//! `pick/<policy>/<n>`: one pick and its `success()` report, single-threaded.
//! `pick_2_threads/<policy>/<n>`: the same while another thread picks from
//! the same balancer (time per pick per thread).
//! `rebuild/...`: a 10,000-instance snapshot swapped in.

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lodestar::{
    Instance, Snapshot,
    balance::{Balancer, BuiltinPolicy, Pick, Route},
};

const SIZES: [usize; 3] = [3, 100, 1000];

fn snapshot(n: usize) -> Arc<Snapshot> {
    let instances = (0..n)
        .map(|i| {
            Instance::new("echo", format!("echo-{i:05}"))
                .with_version("v1")
                .with_endpoint(
                    format!("grpc://10.0.{}.{}:50051", i / 250, i % 250)
                        .parse()
                        .unwrap(),
                )
                .with_metadata("weight", ["100", "200", "300"][i % 3])
                .with_metadata("zone", ["z1", "z2"][i % 2])
        })
        .collect();
    Arc::new(Snapshot::new("echo", 1, instances, 0))
}

fn route(policy: BuiltinPolicy) -> Route {
    match policy {
        BuiltinPolicy::ConsistentHash => Route::new().with_hash_key("user-42"),
        _ => Route::new(),
    }
}

fn balancer(policy: BuiltinPolicy, n: usize) -> Balancer {
    Balancer::builder()
        .policy_arc(policy.policy())
        .build(snapshot(n))
}

fn pick(balancer: &Balancer, route: &Route) {
    let pick = balancer.pick(route).unwrap();
    black_box(pick.instance());
    pick.success();
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for policy in BuiltinPolicy::ALL {
        for n in SIZES {
            let (b, r) = (balancer(policy, n), route(policy));
            pick(&b, &r); // builds the lazy policy state
            group.bench_function(BenchmarkId::new(policy.name(), n), |bench| {
                bench.iter(|| pick(&b, &r))
            });
        }
    }
    group.finish();
}

/// Times `iters` picks, completing them untimed every `BATCH`.
fn select_only(balancer: &Balancer, route: &Route, iters: u64) -> Duration {
    const BATCH: u64 = 64;
    let mut held: Vec<Pick> = Vec::with_capacity(BATCH as usize);
    let (mut total, mut left) = (Duration::ZERO, iters);
    while left > 0 {
        let k = left.min(BATCH);
        let start = Instant::now();
        for _ in 0..k {
            held.push(balancer.pick(route).unwrap());
        }
        total += start.elapsed();
        held.drain(..).for_each(Pick::success);
        left -= k;
    }
    total
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for policy in BuiltinPolicy::ALL {
        for n in SIZES {
            let (b, r) = (balancer(policy, n), route(policy));
            pick(&b, &r);
            group.bench_function(BenchmarkId::new(policy.name(), n), |bench| {
                bench.iter_custom(|iters| select_only(&b, &r, iters))
            });
        }
    }
    group.finish();
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_2_threads");
    for policy in BuiltinPolicy::ALL {
        for n in SIZES {
            let (b, r) = (balancer(policy, n), route(policy));
            pick(&b, &r);
            group.bench_function(BenchmarkId::new(policy.name(), n), |bench| {
                bench.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..2 {
                            s.spawn(|| (0..iters).for_each(|_| pick(&b, &r)));
                        }
                    });
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    let (a, b) = (snapshot(10_000), snapshot(10_000));
    let balancer = Balancer::new(a.clone());
    group.bench_function("update_10000", |bench| {
        let mut flip = false;
        bench.iter(|| {
            flip = !flip;
            balancer.update(if flip { b.clone() } else { a.clone() });
        })
    });
    group.bench_function("new_10000", |bench| {
        bench.iter(|| black_box(Balancer::new(a.clone())))
    });
    for policy in [BuiltinPolicy::Weighted, BuiltinPolicy::ConsistentHash] {
        let balancer = Balancer::builder()
            .policy_arc(policy.policy())
            .build(a.clone());
        let r = route(policy);
        group.bench_function(
            format!("update_and_first_pick_10000/{}", policy.name()),
            |bench| {
                let mut flip = false;
                bench.iter(|| {
                    flip = !flip;
                    balancer.update(if flip { b.clone() } else { a.clone() });
                    pick(&balancer, &r);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, select, single_thread, two_threads, rebuild);
criterion_main!(benches);
