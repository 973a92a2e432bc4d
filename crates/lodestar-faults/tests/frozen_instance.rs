//! An instance frozen with SIGSTOP (its socket open, nothing answering):
//! calls to it time out on the channel's call timeout, outlier detection
//! ejects it, its lease expires after the TTL and it leaves discovery;
//! SIGCONT brings it back.

use std::time::Duration;

use lodestar::balance::{BuiltinPolicy, OutlierDetection};
use lodestar_faults::{Load, connect, figure, ids, listed, serve_echo, time_until};
use lodestar_test_support::EtcdNode;
use lodestar_tonic::Channel;
use tokio::time::Instant;

const CALL_TIMEOUT: Duration = Duration::from_millis(300);
const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_is_ejected_leaves_discovery_and_comes_back() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let instances = ["a", "b", "c"].map(|id| serve_echo(&url, "frozen", id, 2));
    let registry = connect(&url).await;
    let all = ids(&["a", "b", "c"]);
    time_until(LIMIT, || async {
        listed(&*registry, "frozen").await == all
    })
    .await
    .expect("the three serve-echo processes to register");

    let channel = Channel::builder(registry.clone(), "frozen")
        .policy(BuiltinPolicy::RoundRobin)
        .call_timeout(CALL_TIMEOUT)
        .outlier_detection(OutlierDetection::new().consecutive_failures(3))
        .connect();
    let load = Load::start(&channel, 4, Duration::from_secs(5));
    time_until(LIMIT, || async { load.tally().by_instance.len() == 3 })
        .await
        .expect("calls to reach all three instances");
    assert_eq!(load.tally().failed, 0, "{:?}", load.tally().errors);

    let frozen = &instances[2];
    frozen.freeze();
    let froze = Instant::now();
    let before = load.tally();
    // Ejected: failures stop growing while calls go on. Meanwhile its
    // lease runs out.
    let mut last = (before.failed, Instant::now());
    let ejected = time_until(LIMIT, || {
        let tally = load.tally();
        if tally.failed != last.0 {
            last = (tally.failed, Instant::now());
        }
        async move { tally.failed > before.failed && last.1.elapsed() > Duration::from_secs(2) }
    });
    let left = time_until(LIMIT, || async {
        listed(&*registry, "frozen").await == ids(&["a", "b"])
    });
    let (ejected, left) = tokio::join!(ejected, left);
    ejected.expect("failures to the frozen instance to stop (ejection)");
    let left_after = left.expect("the frozen instance's lease to expire");
    let ejected_after = last.1 - froze;
    let during = load.tally();
    assert!(
        during
            .errors
            .iter()
            .all(|e| e.contains("did not answer within the call timeout")),
        "{:?}",
        during.errors
    );
    assert!(load.progress(200, LIMIT).await, "calls go on to a and b");

    frozen.thaw();
    let thawed = Instant::now();
    time_until(LIMIT, || async {
        listed(&*registry, "frozen").await == all
    })
    .await
    .expect("the thawed instance to register again");
    let listed_after = thawed.elapsed();
    let served_c = load.tally().by_instance.get("c").copied().unwrap_or(0);
    time_until(LIMIT, || async {
        load.tally().by_instance.get("c").copied().unwrap_or(0) > served_c
    })
    .await
    .expect("calls to reach the thawed instance again");
    let serving_after = thawed.elapsed();
    let tally = load.stop().await;
    let failed = tally.failed - before.failed;
    figure(format_args!(
        "frozen instance (SIGSTOP, call timeout {CALL_TIMEOUT:?}, 3 failures eject, TTL 2 s): \
         {failed} of {} calls failed (timed out on it), then ejected after {:.1} s; \
         left discovery {:.1} s after the freeze; after SIGCONT listed again in {:.1} s \
         and serving calls in {:.1} s",
        tally.ok + tally.failed,
        ejected_after.as_secs_f64(),
        left_after.as_secs_f64(),
        listed_after.as_secs_f64(),
        serving_after.as_secs_f64(),
    ));
    assert!(
        failed > 0 && failed <= 12,
        "{failed} calls failed: {:?}",
        tally.errors
    );
    drop(instances);
}
