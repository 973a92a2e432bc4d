//! Client-side self-protection: etcd frozen (SIGSTOP) past the TTL revokes
//! every lease at once when it resumes. The registry's view empties; the
//! channel keeps the vanished instances (they still answer), no call fails,
//! the instances register again and the retained marks clear.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use lodestar::{
    Instance,
    discovery::protect::{self, Protection},
};
use lodestar_faults::{Load, connect, echo, figure, ids, listed, time_until};
use lodestar_test_support::{EtcdNode, signal};
use lodestar_tonic::Channel;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(20);
const FROZEN: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_lease_expiry_does_not_empty_the_client() {
    let etcd = EtcdNode::start().await;
    let url = format!("{}?ttl=2s", etcd.url());
    let registry = connect(&url).await;
    // Each instance through its own client, so each has its own lease, as
    // separate processes would: the revocations are separate changes.
    let mut servers = Vec::new();
    for id in ["a", "b", "c"] {
        let own = connect(&url).await;
        servers.push(echo(own, Instance::new("mass", id)).await);
    }
    let all = ids(&["a", "b", "c"]);
    time_until(LIMIT, || async { listed(&*registry, "mass").await == all })
        .await
        .expect("three instances registered");

    // What the registry shows, and what the channel's guard makes of it
    // (the same layer the channel runs, with its defaults).
    let raw = registry.watch("mass").await.unwrap();
    let guarded = protect::protect(registry.watch("mass").await.unwrap(), Protection::new());
    let view = guarded.clone();
    let seen = Seen::follow(raw, guarded);

    let channel = Channel::builder(registry.clone(), "mass").connect();
    let load = Load::start(&channel, 4, Duration::from_secs(5));
    time_until(LIMIT, || async { load.tally().by_instance.len() == 3 })
        .await
        .expect("calls to reach all three instances");

    let pid = etcd.pid().expect("etcd running");
    assert!(signal(pid, "STOP"), "SIGSTOP etcd");
    tokio::time::sleep(FROZEN).await;
    assert!(signal(pid, "CONT"), "SIGCONT etcd");
    let thawed = Instant::now();

    time_until(LIMIT, || async { seen.raw_min.load(Relaxed) < 2 })
        .await
        .expect("etcd to revoke the expired leases (the registry's view loses more than half)");
    let healed = time_until(LIMIT, || async {
        listed(&*registry, "mass").await == all && seen.guarded_clear.load(Relaxed)
    })
    .await;
    if healed.is_none() {
        let shown: Vec<(String, bool)> = view
            .latest()
            .instances()
            .iter()
            .map(|i| (i.id.clone(), i.is_retained()))
            .collect();
        panic!(
            "the instances did not all register again with the marks cleared: \
             the registry lists {:?}, the guarded view shows {shown:?}",
            listed(&*registry, "mass").await
        );
    }
    let back = thawed.elapsed();
    assert!(load.progress(200, LIMIT).await, "calls go on");
    let tally = load.stop().await;
    figure(format_args!(
        "mass lease expiry (etcd SIGSTOP {FROZEN:?}, TTL 2 s, 3 instances): the registry's view \
         fell to {}, the guarded view never below {} ({} retained at most); {} failed of {} calls; \
         re-registered and marks cleared {:.1} s after SIGCONT",
        seen.raw_min.load(Relaxed),
        seen.guarded_min.load(Relaxed),
        seen.retained_max.load(Relaxed),
        tally.failed,
        tally.ok + tally.failed,
        back.as_secs_f64(),
    ));
    assert_eq!(tally.failed, 0, "{:?}", tally.errors);
    // Revocations may arrive one by one: then the first (one of three)
    // goes, and the rest, which would take more than half, stay.
    assert!(
        seen.guarded_min.load(Relaxed) >= 2,
        "the guarded view lost more than half"
    );
    assert!(seen.retained_max.load(Relaxed) >= 2, "nothing was retained");
}

/// The smallest views seen, raw and guarded, and the most retained.
struct Seen {
    raw_min: AtomicUsize,
    guarded_min: AtomicUsize,
    retained_max: AtomicUsize,
    /// The guarded view shows no retained mark (after some were seen).
    guarded_clear: AtomicBool,
}

impl Seen {
    fn follow(mut raw: lodestar::Watch, mut guarded: lodestar::Watch) -> Arc<Seen> {
        let seen = Arc::new(Seen {
            raw_min: AtomicUsize::new(usize::MAX),
            guarded_min: AtomicUsize::new(usize::MAX),
            retained_max: AtomicUsize::new(0),
            guarded_clear: AtomicBool::new(false),
        });
        let s = seen.clone();
        tokio::spawn(async move {
            while let Some(snapshot) = raw.next().await {
                s.raw_min.fetch_min(snapshot.len(), Relaxed);
            }
        });
        let s = seen.clone();
        tokio::spawn(async move {
            while let Some(snapshot) = guarded.next().await {
                s.guarded_min.fetch_min(snapshot.len(), Relaxed);
                let retained = snapshot
                    .instances()
                    .iter()
                    .filter(|i| i.is_retained())
                    .count();
                s.retained_max.fetch_max(retained, Relaxed);
                let clear = retained == 0 && s.retained_max.load(Relaxed) > 0;
                s.guarded_clear.store(clear, Relaxed);
            }
        });
        seen
    }
}
