//! The driver against a scripted source: a fake is right here, since what is
//! tested is the driver's own state machine. The backends run it against
//! real registries in their integration tests and the conformance suite.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;

use super::*;
use crate::Change;

/// What the scripted source does on each call.
#[derive(Debug, Default)]
struct Script {
    lists: VecDeque<Result<Listing, Error>>,
    /// One receiver per `follow` call, in order.
    follows: VecDeque<mpsc::UnboundedReceiver<Result<Update, Interrupted>>>,
    /// The revisions `follow` was called with.
    followed_from: Vec<u64>,
    listed: usize,
}

#[derive(Clone, Debug, Default)]
struct Scripted(Arc<Mutex<Script>>);

struct Stream(mpsc::UnboundedReceiver<Result<Update, Interrupted>>);

impl Scripted {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().unwrap()
    }

    fn push_list(&self, listing: Result<Listing, Error>) {
        self.script().lists.push_back(listing);
    }

    /// A new follow stream the source hands out next; send to it to feed
    /// the driver.
    fn push_follow(&self) -> mpsc::UnboundedSender<Result<Update, Interrupted>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.script().follows.push_back(rx);
        tx
    }
}

impl Source for Scripted {
    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        let next = {
            let mut script = self.script();
            script.listed += 1;
            script.lists.pop_front()
        };
        Box::pin(async move {
            match next {
                Some(listing) => listing,
                None => std::future::pending().await,
            }
        })
    }

    fn follow(&self, after: u64) -> BoxFuture<'_, Result<Box<dyn Follow>, Error>> {
        let next = {
            let mut script = self.script();
            script.followed_from.push(after);
            script.follows.pop_front()
        };
        Box::pin(async move {
            match next {
                Some(rx) => Ok(Box::new(Stream(rx)) as Box<dyn Follow>),
                None => std::future::pending().await,
            }
        })
    }
}

impl Follow for Stream {
    fn next(&mut self) -> BoxFuture<'_, Result<Update, Interrupted>> {
        Box::pin(async move {
            match self.0.recv().await {
                Some(update) => update,
                None => std::future::pending().await,
            }
        })
    }
}

fn good(id: &str, version: &str) -> Record {
    Record::new(
        format!("/k/{id}"),
        1,
        Ok(Instance::new("s", id).with_version(version)),
    )
}

fn bad(id: &str, version: u64) -> Record {
    Record::new(
        format!("/k/{id}"),
        version,
        Err(Error::InvalidInstance("garbage".into())),
    )
}

fn changes(revision: u64, put: Vec<Record>, removed: &[&str]) -> Result<Update, Interrupted> {
    let removed = removed.iter().map(|id| Delta::Remove(format!("/k/{id}")));
    let changes = put.into_iter().map(Delta::Put).chain(removed).collect();
    Ok(Update::Changes { revision, changes })
}

fn ids(snapshot: &Snapshot) -> Vec<String> {
    snapshot.instances().iter().map(|i| i.id.clone()).collect()
}

fn unavailable() -> Error {
    Error::Closed("test registry")
}

/// Waits (in paused time) until the watch has a snapshot newer than the last.
async fn next(watch: &mut Watch) -> Arc<Snapshot> {
    tokio::time::timeout(Duration::from_secs(60), watch.next())
        .await
        .expect("a new snapshot")
        .expect("driver alive")
}

#[tokio::test(start_paused = true)]
async fn lists_then_follows_changes() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(10, vec![good("a", "1"), good("b", "1")])));
    let events = source.push_follow();
    let mut watch = watch("s", source.clone()).await.unwrap();
    let first = next(&mut watch).await;
    assert_eq!(
        (ids(&first), first.revision()),
        (vec!["a".into(), "b".into()], 10)
    );

    events
        .send(changes(11, vec![good("c", "1"), good("a", "2")], &["b"]))
        .unwrap();
    let second = next(&mut watch).await;
    assert_eq!(ids(&second), ["a", "c"]);
    assert_eq!(second.revision(), 11);
    assert_eq!(second.instance("a").unwrap().version, "2");
    let kinds: Vec<_> = second.changes(&first).iter().map(Change::kind).collect();
    assert_eq!(kinds, ["update", "add", "remove"]);
    assert_eq!(source.script().followed_from, [10]);
}

#[tokio::test(start_paused = true)]
async fn an_update_that_changes_nothing_is_not_published() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(10, vec![good("a", "1")])));
    let events = source.push_follow();
    let mut watch = watch("s", source.clone()).await.unwrap();
    next(&mut watch).await;

    // The same record again, a progress note, then a real change.
    events.send(changes(11, vec![good("a", "1")], &[])).unwrap();
    events.send(Ok(Update::Progress(12))).unwrap();
    events
        .send(Ok(Update::Reset(Listing::new(13, vec![good("a", "1")]))))
        .unwrap();
    events.send(changes(14, vec![good("b", "1")], &[])).unwrap();
    let snapshot = next(&mut watch).await;
    assert_eq!(ids(&snapshot), ["a", "b"]);
    assert_eq!(snapshot.revision(), 14);
    // Nothing else is pending: the no-op updates published nothing.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_reset_shares_unchanged_records() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(1, vec![good("a", "1"), good("b", "1")])));
    let events = source.push_follow();
    let mut watch = watch("s", source.clone()).await.unwrap();
    let first = next(&mut watch).await;
    events
        .send(Ok(Update::Reset(Listing::new(
            2,
            vec![good("a", "1"), good("b", "2")],
        ))))
        .unwrap();
    let second = next(&mut watch).await;
    let a = |s: &Snapshot| s.instances().get("a").unwrap().clone();
    assert!(
        Arc::ptr_eq(&a(&first), &a(&second)),
        "the unchanged record is shared"
    );
    assert_eq!(second.changes(&first).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn broken_streams_resume_from_the_last_revision_keeping_the_snapshot() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(10, vec![good("a", "1")])));
    let first = source.push_follow();
    let second = source.push_follow();
    let mut watch = watch("s", source.clone()).await.unwrap();
    next(&mut watch).await;
    first.send(changes(15, vec![good("b", "1")], &[])).unwrap();
    next(&mut watch).await;

    first.send(Err(Interrupted::Broken(unavailable()))).unwrap();
    second.send(changes(16, vec![], &["a"])).unwrap();
    let snapshot = next(&mut watch).await;
    assert_eq!(ids(&snapshot), ["b"]);
    assert_eq!(watch.latest().revision(), 16);
    let script = source.script();
    assert_eq!(
        script.followed_from,
        [10, 15],
        "resumed from the last revision"
    );
    assert_eq!(script.listed, 1, "no re-list after a plain break");
}

#[tokio::test(start_paused = true)]
async fn a_gap_lists_again_and_failed_lists_keep_the_snapshot() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(10, vec![good("a", "1"), good("b", "1")])));
    let first = source.push_follow();
    source.push_list(Err(unavailable()));
    source.push_list(Err(unavailable()));
    source.push_list(Ok(Listing::new(30, vec![good("b", "1"), good("c", "1")])));
    let _second = source.push_follow();
    let mut watch = watch("s", source.clone()).await.unwrap();
    next(&mut watch).await;

    first
        .send(Err(Interrupted::Gap("compacted".into())))
        .unwrap();
    let snapshot = next(&mut watch).await;
    assert_eq!(ids(&snapshot), ["b", "c"]);
    assert_eq!(snapshot.revision(), 30);
    let script = source.script();
    assert_eq!(script.listed, 4);
    assert_eq!(script.followed_from, [10, 30]);
}

#[tokio::test(start_paused = true)]
async fn revisions_never_go_backwards_when_the_registry_does() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(1_000, vec![good("a", "1")])));
    let first = source.push_follow();
    // Another node, or a registry that lost its data: its revisions are lower.
    source.push_list(Ok(Listing::new(5, vec![good("b", "1")])));
    let second = source.push_follow();
    let mut watch = watch("s", source.clone()).await.unwrap();
    let mut last = next(&mut watch).await.revision();

    first.send(Err(Interrupted::Lost(unavailable()))).unwrap();
    let snapshot = next(&mut watch).await;
    assert_eq!(ids(&snapshot), ["b"]);
    assert!(
        snapshot.revision() > last,
        "{} after {last}",
        snapshot.revision()
    );
    last = snapshot.revision();
    second.send(changes(6, vec![good("c", "1")], &[])).unwrap();
    let snapshot = next(&mut watch).await;
    assert!(snapshot.revision() > last);
    // The source is followed in its own numbers.
    assert_eq!(source.script().followed_from, [1_000, 5]);
}

#[tokio::test(start_paused = true)]
async fn bad_records_are_counted_and_replaced() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(1, vec![good("a", "1"), bad("b", 1)])));
    let events = source.push_follow();
    let mut watch = watch("s", source.clone()).await.unwrap();
    let snapshot = next(&mut watch).await;
    assert_eq!(
        (ids(&snapshot), snapshot.skipped()),
        (vec!["a".to_string()], 1)
    );

    // A good record turning bad leaves the snapshot; a bad one fixed joins it.
    events
        .send(changes(2, vec![bad("a", 2), good("b", "1")], &[]))
        .unwrap();
    let snapshot = next(&mut watch).await;
    assert_eq!(
        (ids(&snapshot), snapshot.skipped()),
        (vec!["b".to_string()], 1)
    );
    events.send(changes(3, vec![], &["a"])).unwrap();
    let snapshot = next(&mut watch).await;
    assert_eq!(snapshot.skipped(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_driver_stops_with_the_last_watch() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(1, vec![])));
    let events = source.push_follow();
    let watch = watch("s", source.clone()).await.unwrap();
    for _ in 0..100 {
        if !source.script().followed_from.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        source.script().followed_from,
        [1],
        "the driver is following"
    );
    drop(watch);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // The task is gone: its follow stream's receiver was dropped with it.
    assert!(events.send(Ok(Update::Progress(2))).is_err());
}

#[tokio::test]
async fn get_lists_once() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(
        4,
        vec![good("b", "1"), good("a", "1"), bad("c", 1)],
    )));
    let snapshot = get("s", &source).await.unwrap();
    assert_eq!(
        (ids(&snapshot), snapshot.skipped(), snapshot.revision()),
        (vec!["a".into(), "b".into()], 1, 4)
    );
}

fn overriding(id: &str, version: u64, value: Result<Override, Error>) -> Record {
    Record::overriding(format!("/o/{id}"), version, id, value)
}

fn down() -> Result<Override, Error> {
    Ok(Override::new().with_status(crate::Status::Down))
}

fn is_down(snapshot: &Snapshot, id: &str) -> Option<bool> {
    snapshot.instance(id).map(Instance::is_down)
}

#[tokio::test(start_paused = true)]
async fn overrides_are_merged_into_their_instance_whichever_comes_first() {
    let source = Scripted::default();
    // An override of an instance not registered yet, one of a registered one.
    let listing = vec![
        good("a", "1"),
        overriding("a", 1, down()),
        overriding("b", 1, down()),
    ];
    source.push_list(Ok(Listing::new(10, listing)));
    let events = source.push_follow();
    let mut watch = watch("s", source.clone()).await.unwrap();
    let first = next(&mut watch).await;
    assert_eq!(ids(&first), ["a"], "an override alone is no instance");
    assert_eq!(is_down(&first, "a"), Some(true));

    // b registers: its override applies; a re-registers: still down.
    events
        .send(changes(11, vec![good("b", "1"), good("a", "2")], &[]))
        .unwrap();
    let second = next(&mut watch).await;
    assert_eq!(
        (is_down(&second, "a"), is_down(&second, "b")),
        (Some(true), Some(true))
    );
    assert_eq!(second.instance("a").unwrap().version, "2");

    // a's override is deleted, b's replaced by a weight only.
    let weight = Ok(Override::new().with_weight(5));
    let update = Ok(Update::Changes {
        revision: 12,
        changes: vec![
            Delta::Remove("/o/a".into()),
            Delta::Put(overriding("b", 2, weight)),
        ],
    });
    events.send(update).unwrap();
    let third = next(&mut watch).await;
    assert_eq!(
        (is_down(&third, "a"), is_down(&third, "b")),
        (Some(false), Some(false))
    );
    assert_eq!(third.instance("b").unwrap().weight(), Ok(5));
    assert_eq!(third.skipped(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_override_is_skipped_and_counted() {
    let source = Scripted::default();
    source.push_list(Ok(Listing::new(
        10,
        vec![good("a", "1"), overriding("a", 1, down())],
    )));
    let events = source.push_follow();
    let mut watch = watch("s", source.clone()).await.unwrap();
    let first = next(&mut watch).await;
    assert_eq!(is_down(&first, "a"), Some(true));
    let garbage = Err(Error::InvalidInstance("not an override".into()));
    events
        .send(changes(11, vec![overriding("a", 2, garbage)], &[]))
        .unwrap();
    let second = next(&mut watch).await;
    assert_eq!(
        is_down(&second, "a"),
        Some(false),
        "the bad value replaced it"
    );
    assert_eq!(second.skipped(), 1);
    let update = Ok(Update::Changes {
        revision: 12,
        changes: vec![Delta::Remove("/o/a".into())],
    });
    events.send(update).unwrap();
    assert_eq!(next(&mut watch).await.skipped(), 0);
}
