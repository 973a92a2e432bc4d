use std::time::Duration;

use tokio::time::advance;

use super::*;

fn config(tune: impl FnOnce(&mut Config)) -> Arc<Config> {
    let mut config = Config::new(([127, 0, 0, 1], 0).into());
    config.renew_interval = Duration::from_secs(1);
    config.evict_after = Duration::from_secs(5);
    config.evict_every = Duration::from_secs(1);
    config.protect_window = Duration::from_secs(4);
    tune(&mut config);
    Arc::new(config)
}

fn inst(appid: &str, hostname: &str) -> Instance {
    Instance {
        zone: "z1".into(),
        env: "dev".into(),
        appid: appid.into(),
        hostname: hostname.into(),
        addrs: vec!["grpc://127.0.0.1:1".into()],
        status: crate::wire::STATUS_UP,
        ..Instance::default()
    }
}

fn key(appid: &str) -> AppKey {
    AppKey {
        env: "dev".into(),
        appid: appid.into(),
    }
}

fn hosts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("h{i:02}")).collect()
}

/// One second: renew `renewing`, then an eviction tick.
async fn second(store: &Store, renewing: &[String]) -> Vec<Instance> {
    advance(Duration::from_secs(1)).await;
    for host in renewing {
        let _ = store.renew(&key("a"), host, None);
    }
    store.tick()
}

#[tokio::test(start_paused = true)]
async fn register_renew_cancel_and_timestamps() {
    let store = Store::new(config(|_| {}));
    let stored = store.register(inst("a", "h1"), false).unwrap();
    assert!(stored.dirty_timestamp > 0);
    assert_eq!(stored.reg_timestamp, stored.dirty_timestamp);
    let before = store.fetch(&key("a"), None, 3).unwrap().latest_timestamp;

    // A renew changes the renew timestamp, not the application's.
    assert_eq!(
        store.renew(&key("a"), "h1", None).unwrap(),
        stored.dirty_timestamp
    );
    let after = store.fetch(&key("a"), None, 3).unwrap();
    assert_eq!(after.latest_timestamp, before);
    assert!(after.instances["z1"][0].renew_timestamp > stored.renew_timestamp);

    assert!(matches!(
        store.renew(&key("a"), "nope", None),
        Err(Refusal::NotFound)
    ));
    store.cancel(&key("a"), "h1", None).unwrap();
    assert!(matches!(
        store.cancel(&key("a"), "h1", None),
        Err(Refusal::NotFound)
    ));
    assert!(store.fetch(&key("a"), None, 3).is_none());
}

#[tokio::test(start_paused = true)]
async fn fetch_filters_by_zone_and_status() {
    let store = Store::new(config(|_| {}));
    store.register(inst("a", "up"), false).unwrap();
    let mut waiting = inst("a", "waiting");
    waiting.status = crate::wire::STATUS_WAITING;
    waiting.zone = "z2".into();
    store.register(waiting, false).unwrap();
    let count = |zone, status| {
        store
            .fetch(&key("a"), zone, status)
            .map_or(0, |f| f.instances.values().map(Vec::len).sum::<usize>())
    };
    assert_eq!(count(None, 3), 2);
    assert_eq!(count(None, 1), 1);
    assert_eq!(count(None, 2), 1);
    assert_eq!(count(Some("z2"), 3), 1);
    assert_eq!(count(Some("z9"), 3), 0);
    assert!(store.fetch(&key("a"), Some("z9"), 3).is_none());
    // Every zone is listed, empty when the status filter leaves nothing.
    let up = store.fetch(&key("a"), None, 1).unwrap();
    assert!(up.instances["z2"].is_empty());
    assert_eq!(up.instances["z1"].len(), 1);
    assert_eq!(count(None, 4), 0);
}

#[tokio::test(start_paused = true)]
async fn unrenewed_instances_are_evicted() {
    let store = Store::new(config(|c| c.protect_threshold = 0.0));
    store.register(inst("a", "alive"), false).unwrap();
    store.register(inst("a", "dead"), false).unwrap();
    let alive = vec!["alive".to_string()];
    let mut evicted = Vec::new();
    for _ in 0..5 {
        evicted.extend(second(&store, &alive).await);
    }
    assert!(evicted.is_empty(), "not yet past evict_after");
    evicted.extend(second(&store, &alive).await);
    let names: Vec<_> = evicted.iter().map(|i| i.hostname.as_str()).collect();
    assert_eq!(names, ["dead"]);
    assert_eq!(store.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_round_evicts_at_most_about_15_percent() {
    let store = Store::new(config(|c| c.protect_threshold = 0.0));
    for host in hosts(20) {
        store.register(inst("a", &host), false).unwrap();
    }
    let mut rounds = Vec::new();
    for _ in 0..12 {
        rounds.push(second(&store, &[]).await.len());
    }
    assert!(rounds.iter().all(|n| *n <= 3), "{rounds:?}");
    assert!(store.len() < 20, "{rounds:?}");
}

#[tokio::test(start_paused = true)]
async fn own_ttl_evicts_within_a_second_even_under_protection() {
    let store = Store::new(config(|c| c.protect_threshold = 2.0));
    let mut leased = inst("a", "leased");
    leased.ttl = 2;
    store.register(leased, false).unwrap();
    store.register(inst("a", "plain"), false).unwrap();
    for _ in 0..2 {
        assert!(second(&store, &[]).await.is_empty());
    }
    let evicted = second(&store, &[]).await;
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].hostname, "leased");
}

#[tokio::test(start_paused = true)]
async fn self_protection_is_entered_and_left() {
    let store = Store::new(config(|c| c.protect_ceiling = Duration::from_secs(3600)));
    let all = hosts(20);
    for host in &all {
        store.register(inst("a", host), false).unwrap();
    }
    // Two windows of full renews: no protection.
    for _ in 0..8 {
        assert!(second(&store, &all).await.is_empty());
    }
    assert!(!store.protecting());

    // Half the providers are cut off: protection goes on at the end of the
    // window, before they are due, and nothing is evicted while it lasts.
    for _ in 0..12 {
        assert!(second(&store, &all[..10]).await.is_empty());
    }
    assert!(store.protecting());
    assert_eq!(store.len(), 20);

    // The partition heals: renews are back, protection goes off.
    for _ in 0..8 {
        second(&store, &all).await;
    }
    assert!(!store.protecting());
    assert_eq!(store.len(), 20);
}

/// The tick that rolls a window can come late (a busy node, a tick a hair
/// short of the window): the renews expected are those of the time the
/// window lasted, not of its configured length.
#[tokio::test(start_paused = true)]
async fn a_window_rolled_late_expects_renews_for_its_real_length() {
    let store = Store::new(config(|c| c.protect_ceiling = Duration::from_secs(3600)));
    let all = hosts(10);
    for host in &all {
        store.register(inst("a", host), false).unwrap();
    }
    for _ in 0..8 {
        second(&store, &all).await;
    }
    assert!(!store.protecting());
    // Half renew, and the window is rolled only after twice its length:
    // 40 renews over 8 s where 80 were due (the configured 4 s window would
    // expect 40 and miss it).
    for _ in 0..8 {
        advance(Duration::from_secs(1)).await;
        for host in &all[..5] {
            let _ = store.renew(&key("a"), host, None);
        }
    }
    store.tick();
    let p = store.protection();
    assert!(store.protecting(), "{p:?}");
    assert_eq!(p.renews_last_window, Some(40));
    assert_eq!(p.expected_last_window, Some(80.0));
}

#[tokio::test(start_paused = true)]
async fn the_hard_ceiling_evicts_even_under_protection() {
    let store = Store::new(config(|c| c.protect_ceiling = Duration::from_secs(10)));
    let all = hosts(20);
    for host in &all {
        store.register(inst("a", host), false).unwrap();
    }
    for _ in 0..4 {
        second(&store, &all).await;
    }
    let mut evicted = 0;
    for _ in 0..8 {
        evicted += second(&store, &all[..10]).await.len();
    }
    assert!(store.protecting());
    assert_eq!(evicted, 0, "protected, not yet past the ceiling");
    for _ in 0..20 {
        evicted += second(&store, &all[..10]).await.len();
    }
    // Past the ceiling they go (and with them the reason for protection).
    assert_eq!(evicted, 10);
    assert_eq!(store.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn replicated_writes_resolve_by_dirty_timestamp() {
    let store = Store::new(config(|_| {}));
    let mut theirs = inst("a", "h");
    theirs.dirty_timestamp = 1_000;
    theirs.version = "old".into();
    store.register(theirs.clone(), true).unwrap();

    // An older copy loses, and is answered with ours.
    let mut older = theirs.clone();
    older.dirty_timestamp = 500;
    match store.register(older, true) {
        Err(Refusal::Conflict(ours)) => assert_eq!(ours.dirty_timestamp, 1_000),
        other => panic!("{other:?}"),
    }
    // A newer copy wins.
    let mut newer = theirs.clone();
    newer.dirty_timestamp = 2_000;
    newer.version = "new".into();
    store.register(newer, true).unwrap();
    assert_eq!(store.get(&key("a"), "h").unwrap().version, "new");

    // Renews: the sender has newer (we miss a write) or older (it does).
    assert!(matches!(
        store.renew(&key("a"), "h", Some(3_000)),
        Err(Refusal::NotFound)
    ));
    assert!(matches!(
        store.renew(&key("a"), "h", Some(1_000)),
        Err(Refusal::Conflict(_))
    ));
    assert_eq!(store.renew(&key("a"), "h", Some(2_000)).unwrap(), 2_000);

    // A replicated cancel of an older copy leaves the newer one.
    assert!(matches!(
        store.cancel(&key("a"), "h", Some(1_000)),
        Err(Refusal::Conflict(_))
    ));
    assert_eq!(store.cancel(&key("a"), "h", Some(2_000)).unwrap(), 2_000);
}

#[tokio::test(start_paused = true)]
async fn polls_answer_at_once_or_wait_for_a_change() {
    let store = Store::new(config(|_| {}));
    let stored = store.register(inst("a", "h"), false).unwrap();
    for kind in [PollKind::One, PollKind::Many] {
        match store.poll(&[(key("a"), 0)], None, kind) {
            Polled::Ready { changed, missing } => {
                assert_eq!(changed["a"].latest_timestamp, stored.latest_timestamp);
                assert!(missing.is_empty());
            }
            other => panic!("a newer application should answer at once: {other:?}"),
        }
    }
    let wants = [(key("a"), stored.latest_timestamp), (key("b"), 0)];
    let waits = match store.poll(&wants, None, PollKind::Many) {
        Polled::Wait(waits) => waits,
        other => panic!("nothing newer: {other:?}"),
    };
    let mut b = waits.into_iter().nth(1).unwrap();
    store.register(inst("b", "h"), false).unwrap();
    b.changed().await.unwrap();
}

/// discovery's Go clients skip an empty answer without keeping its
/// timestamp: `polls` must not answer one at once, or they spin.
#[tokio::test(start_paused = true)]
async fn polls_hold_views_with_nothing_up_and_poll_answers_them() {
    let store = Store::new(config(|_| {}));
    let stored = store.register(inst("a", "h"), false).unwrap();
    let down = Changes {
        status: Some(crate::wire::STATUS_WAITING),
        ..Changes::default()
    };
    store.set(&key("a"), vec![("h".into(), down)]).unwrap();
    let seen = [(key("a"), stored.latest_timestamp)];
    assert!(matches!(
        store.poll(&seen, None, PollKind::Many),
        Polled::Wait(_)
    ));
    match store.poll(&seen, None, PollKind::One) {
        Polled::Ready { changed, .. } => assert!(changed["a"].instances["z1"].is_empty()),
        other => panic!("poll tells a client that keeps timestamps: {other:?}"),
    }

    // The last instance leaves: the application is unknown.
    store.cancel(&key("a"), "h", None).unwrap();
    assert!(store.fetch(&key("a"), None, 3).is_none());
    assert!(matches!(
        store.poll(&seen, None, PollKind::Many),
        Polled::Wait(_)
    ));
    assert!(matches!(
        store.poll(&seen, None, PollKind::One),
        Polled::Unknown(appid) if appid == "a"
    ));
    // Unknown ones are listed next to those answered.
    store.register(inst("b", "h"), false).unwrap();
    match store.poll(&[(key("b"), 0), (key("a"), 0)], None, PollKind::Many) {
        Polled::Ready { changed, missing } => {
            assert_eq!(changed.keys().collect::<Vec<_>>(), ["b"]);
            assert_eq!(missing, ["a"]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_poll_in_a_zone_the_application_lacks_finds_nothing() {
    let store = Store::new(config(|_| {}));
    store.register(inst("a", "h"), false).unwrap();
    assert!(matches!(
        store.poll(&[(key("a"), 0)], Some("z9"), PollKind::One),
        Polled::Unknown(_)
    ));
    assert!(matches!(
        store.poll(&[(key("a"), 0)], Some("z1"), PollKind::One),
        Polled::Ready { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn colour_and_status_are_set() {
    let store = Store::new(config(|_| {}));
    let stored = store.register(inst("a", "h"), false).unwrap();
    let changes = Changes {
        status: Some(crate::wire::STATUS_WAITING),
        color: Some("red".into()),
        metadata: None,
    };
    let updated = store.set(&key("a"), vec![("h".into(), changes)]).unwrap();
    assert_eq!(updated[0].metadata["color"], "red");
    assert_eq!(updated[0].color, "red");
    assert!(updated[0].dirty_timestamp > stored.dirty_timestamp);
    // Listed, with nothing up.
    assert!(store.fetch(&key("a"), None, 1).unwrap().instances["z1"].is_empty());
}

#[tokio::test(start_paused = true)]
async fn set_merges_metadata_and_changes_all_or_none() {
    let store = Store::new(config(|_| {}));
    let mut first = inst("a", "h1");
    first.metadata.insert("team".into(), "core".into());
    store.register(first, false).unwrap();
    store.register(inst("a", "h2"), false).unwrap();
    let metadata = |pairs: &[(&str, &str)]| Changes {
        metadata: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Changes::default()
    };
    let updated = store
        .set(
            &key("a"),
            vec![("h1".into(), metadata(&[("weight", "5"), ("color", "blue")]))],
        )
        .unwrap();
    assert_eq!(updated[0].metadata["team"], "core", "kept");
    assert_eq!(updated[0].metadata["weight"], "5");
    assert_eq!(updated[0].color, "blue");

    let before = store.get(&key("a"), "h2").unwrap();
    let refused = store.set(
        &key("a"),
        vec![
            ("h2".into(), metadata(&[("k", "v")])),
            ("ghost".into(), metadata(&[("k", "v")])),
        ],
    );
    assert_eq!(refused.unwrap_err(), "ghost");
    assert_eq!(store.get(&key("a"), "h2").unwrap(), before, "none changed");
    assert_eq!(
        store
            .set(&key("nope"), vec![("h".into(), Changes::default())])
            .unwrap_err(),
        "h"
    );
}

#[tokio::test(start_paused = true)]
async fn applications_are_bounded() {
    let store = Store::new(config(|c| c.max_instances_per_app = 2));
    store.register(inst("a", "1"), false).unwrap();
    store.register(inst("a", "2"), false).unwrap();
    assert!(matches!(
        store.register(inst("a", "3"), false),
        Err(Refusal::TooMany)
    ));
    // Replacing one is fine.
    store.register(inst("a", "2"), false).unwrap();
}
