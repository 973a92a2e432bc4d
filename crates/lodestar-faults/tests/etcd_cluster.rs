//! A three-node etcd cluster under call load and live registrations: kill
//! -9 the leader, restart it; kill two of three (no quorum) for 20 s, then
//! restore. No call fails; every registration is there once quorum is back
//! (registered again where its lease expired); a watch resumes without a
//! missed change: its final snapshot equals the registry's.

use std::{collections::BTreeSet, time::Duration};

use lodestar::{Instance, Watch};
use lodestar_faults::{Load, connect, echo, figure, ids, listed, time_until};
use lodestar_test_support::EtcdCluster;
use lodestar_tonic::Channel;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(30);
const NO_QUORUM: Duration = Duration::from_secs(20);

fn shown(watch: &Watch) -> BTreeSet<String> {
    watch
        .latest()
        .instances()
        .iter()
        .map(|i| i.id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_cluster_losing_its_leader_then_its_quorum_loses_no_call() {
    let mut cluster = EtcdCluster::start(3).await;
    let url = format!("{}?ttl=2s", cluster.url());
    let registry = connect(&url).await;
    let mut servers = Vec::new();
    for id in ["a", "b", "c"] {
        servers.push(echo(registry.clone(), Instance::new("quorum", id)).await);
    }
    time_until(LIMIT, || async {
        listed(&*registry, "quorum").await == ids(&["a", "b", "c"])
    })
    .await
    .expect("three instances registered");
    let watcher = connect(&url).await;
    let watch = watcher.watch("quorum").await.unwrap();
    let channel = Channel::builder(registry.clone(), "quorum").connect();
    let load = Load::start(&channel, 4, Duration::from_secs(5));
    time_until(LIMIT, || async { load.tally().by_instance.len() == 3 })
        .await
        .expect("calls to reach all three instances");

    // The leader, kill -9, a change while it is down, then back.
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let killed = Instant::now();
    // A new registration is refused until a leader is elected (register()
    // fails rather than queue); the live ones ride it out.
    cluster.wait_for_leader().await;
    servers.push(echo(registry.clone(), Instance::new("quorum", "d")).await);
    let four = ids(&["a", "b", "c", "d"]);
    if time_until(LIMIT, || async { shown(&watch) == four })
        .await
        .is_none()
    {
        panic!(
            "a registration made after the leader died did not reach the watch: \
             it shows {:?}, the registry lists {:?}",
            shown(&watch),
            listed(&*registry, "quorum").await
        );
    }
    let change_seen = killed.elapsed();
    cluster.restart(leader).await;
    assert!(load.progress(200, LIMIT).await, "calls go on");

    // No quorum for 20 s.
    let leader = cluster.leader().await;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    cluster.kill(leader);
    cluster.kill(others[0]);
    let before = load.tally().ok;
    tokio::time::sleep(NO_QUORUM).await;
    let during = load.tally().ok - before;
    cluster.restart(leader).await;
    cluster.restart(others[0]).await;
    let back = Instant::now();
    time_until(LIMIT, || async {
        listed(&*registry, "quorum").await == four
    })
    .await
    .expect("every registration present once quorum is back");
    let registered = back.elapsed();

    // A change after the outage, then the watch must equal the truth.
    if let Some(d) = servers.pop() {
        d.stop().await; // deregisters, then drains
    }
    let three = ids(&["a", "b", "c"]);
    time_until(LIMIT, || async {
        let truth = listed(&*registry, "quorum").await;
        truth == three && shown(&watch) == truth
    })
    .await
    .expect("the watch's final snapshot to equal the registry's");
    let converged = back.elapsed();
    assert!(
        load.progress(200, LIMIT).await,
        "calls go on after quorum returns"
    );
    let tally = load.stop().await;
    figure(format_args!(
        "etcd 3-node cluster (TTL 2 s): leader kill -9, a registration seen by the watch \
         {:.1} s after; no quorum {NO_QUORUM:?} ({during} calls served meanwhile); \
         {} failed of {} calls; every registration listed {:.1} s after quorum returned, \
         watch equal to the registry {:.1} s after",
        change_seen.as_secs_f64(),
        tally.failed,
        tally.ok + tally.failed,
        registered.as_secs_f64(),
        converged.as_secs_f64(),
    ));
    assert_eq!(tally.failed, 0, "{:?}", tally.errors);
    assert!(during > 0, "no call was served without quorum");
}
