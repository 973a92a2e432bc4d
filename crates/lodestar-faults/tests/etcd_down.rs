//! A single etcd down for 30 s under call load: no call fails; on its
//! return every live instance is registered again and watchers converge.

use std::time::Duration;

use lodestar::Instance;
use lodestar_faults::{Load, connect, echo, figure, ids, listed, time_until};
use lodestar_test_support::EtcdNode;
use lodestar_tonic::Channel;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(20);
const DOWN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_etcd_down_for_30_s_loses_no_call() {
    let mut etcd = EtcdNode::start().await;
    let url = format!("{}?ttl=2s", etcd.url());
    let registry = connect(&url).await;
    let mut servers = Vec::new();
    for id in ["a", "b", "c"] {
        servers.push(echo(registry.clone(), Instance::new("down", id)).await);
    }
    let all = ids(&["a", "b", "c"]);
    time_until(LIMIT, || async { listed(&*registry, "down").await == all })
        .await
        .expect("three instances registered");
    let watcher = connect(&url).await;
    let watch = watcher.watch("down").await.unwrap();

    let channel = Channel::builder(registry.clone(), "down").connect();
    let load = Load::start(&channel, 4, Duration::from_secs(5));
    time_until(LIMIT, || async { load.tally().by_instance.len() == 3 })
        .await
        .expect("calls to reach all three instances");

    etcd.kill();
    let before = load.tally().ok;
    tokio::time::sleep(DOWN).await;
    let during = load.tally().ok - before;
    etcd.restart().await;
    let back = Instant::now();
    let registered = time_until(LIMIT, || async { listed(&*registry, "down").await == all })
        .await
        .expect("every live instance registered again");
    let converged = time_until(LIMIT, || async {
        let seen: std::collections::BTreeSet<String> = watch
            .latest()
            .instances()
            .iter()
            .map(|i| i.id.clone())
            .collect();
        seen == listed(&*registry, "down").await
    })
    .await
    .expect("the watcher to converge on the registry's view");
    let _ = converged;
    let converged_after = back.elapsed();
    assert!(
        load.progress(200, LIMIT).await,
        "calls go on after the return"
    );
    let tally = load.stop().await;
    figure(format_args!(
        "single etcd down {DOWN:?} under load (TTL 2 s, 3 instances): {} failed of {} calls \
         ({during} served while it was down); every instance listed {:.1} s after the restart, \
         the watcher converged {:.1} s after it",
        tally.failed,
        tally.ok + tally.failed,
        registered.as_secs_f64(),
        converged_after.as_secs_f64(),
    ));
    assert_eq!(tally.failed, 0, "{:?}", tally.errors);
    assert!(during > 0, "no call was served while etcd was down");
}
