//! A network cut between a client and one instance: the instance keeps
//! running and stays registered, but nothing gets through (a TCP proxy in
//! front of it blackholes: connections stay open, nothing is forwarded).
//! Calls to it time out on the channel's call timeout, it is ejected, the
//! others take the load; when the network is back it serves again.
//!
//! A proxy rather than network namespaces and veth pairs: those need
//! CAP_NET_ADMIN, which CI containers often lack; the proxy runs anywhere
//! and holds connections open as a silent network does.

use std::{sync::Arc, time::Duration};

use lodestar::{
    Instance,
    balance::{BuiltinPolicy, OutlierDetection},
    memory::MemoryRegistry,
};
use lodestar_faults::{Load, connect, echo, figure, ids, listed, time_until};
use lodestar_test_support::{EtcdNode, TcpProxy};
use lodestar_tonic::Channel;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(20);
const CALL_TIMEOUT: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_instance_is_ejected_and_serves_again_when_the_network_is_back() {
    let etcd = EtcdNode::start().await;
    let url = format!("{}?ttl=2s", etcd.url());
    let registry = connect(&url).await;
    let mut servers = Vec::new();
    for id in ["a", "b"] {
        servers.push(echo(registry.clone(), Instance::new("cut", id)).await);
    }
    // c serves on its own port and is registered at the proxy's address.
    let hidden = echo(Arc::new(MemoryRegistry::new()), Instance::new("cut", "c")).await;
    let proxy = TcpProxy::start(hidden.addr().to_string()).await;
    let endpoint = format!("grpc://{}", proxy.addr()).parse().unwrap();
    let _c = registry
        .register(Instance::new("cut", "c").with_endpoint(endpoint))
        .await
        .unwrap();
    let all = ids(&["a", "b", "c"]);
    time_until(LIMIT, || async { listed(&*registry, "cut").await == all })
        .await
        .expect("three instances registered");

    let channel = Channel::builder(registry.clone(), "cut")
        .policy(BuiltinPolicy::RoundRobin)
        .call_timeout(CALL_TIMEOUT)
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(3)
                .base_ejection(Duration::from_secs(2)),
        )
        .connect();
    let load = Load::start(&channel, 4, Duration::from_secs(5));
    time_until(LIMIT, || async { load.tally().by_instance.len() == 3 })
        .await
        .expect("calls to reach all three instances");
    assert_eq!(load.tally().failed, 0, "{:?}", load.tally().errors);

    proxy.blackhole();
    let cut = Instant::now();
    let before = load.tally();
    let mut last = (before.failed, Instant::now());
    time_until(LIMIT, || {
        let tally = load.tally();
        if tally.failed != last.0 {
            last = (tally.failed, Instant::now());
        }
        async move { tally.failed > before.failed && last.1.elapsed() > Duration::from_secs(3) }
    })
    .await
    .expect("failures to the cut instance to stop (ejected or out of rotation)");
    let settled_after = last.1 - cut;
    let failed_during = load.tally().failed - before.failed;
    assert_eq!(
        listed(&*registry, "cut").await,
        all,
        "the cut instance stays registered"
    );
    assert!(load.progress(200, LIMIT).await, "calls go on to a and b");

    proxy.restore();
    let restored = Instant::now();
    let served_c = load.tally().by_instance.get("c").copied().unwrap_or(0);
    time_until(LIMIT, || async {
        load.tally().by_instance.get("c").copied().unwrap_or(0) > served_c + 10
    })
    .await
    .expect("calls to reach the instance again after the network is back");
    let back_after = restored.elapsed();
    let tally = load.stop().await;
    figure(format_args!(
        "network cut to one of 3 instances (blackholing proxy, call timeout {CALL_TIMEOUT:?}, \
         3 failures eject for 2 s and more on repeats): {failed_during} of {} calls failed, \
         the last {:.1} s after the cut; serving again {:.1} s after the network came back",
        tally.ok + tally.failed,
        settled_after.as_secs_f64(),
        back_after.as_secs_f64(),
    ));
    assert!(
        tally
            .errors
            .iter()
            .all(|e| e.contains("did not answer within the call timeout")),
        "{:?}",
        tally.errors
    );
    drop(hidden);
}
