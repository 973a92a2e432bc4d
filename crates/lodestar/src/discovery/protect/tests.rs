use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::*;
use crate::{Registrar, memory::MemoryRegistry};

const WINDOW: Duration = Duration::from_secs(10);

fn snapshot(revision: u64, ids: &[&str]) -> Arc<Snapshot> {
    let instances = ids
        .iter()
        .map(|id| Instance::new("echo", *id).with_endpoint("grpc://127.0.0.1:1".parse().unwrap()))
        .collect();
    Arc::new(Snapshot::new("echo", revision, instances, 0))
}

fn guard(ids: &[&str]) -> Guard {
    Guard::new(Protection::new().window(WINDOW), snapshot(1, ids))
}

fn shown(guard: &Guard) -> Vec<(String, bool)> {
    guard
        .snapshot()
        .instances()
        .iter()
        .map(|i| (i.id.clone(), i.is_retained()))
        .collect()
}

fn pairs(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(id, r)| (id.to_string(), *r)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_removal_under_the_share_is_published_at_once() {
    let mut guard = guard(&["a", "b", "c", "d"]);
    guard.update(snapshot(2, &["a", "b", "c"]), Instant::now());
    assert_eq!(
        shown(&guard),
        pairs(&[("a", false), ("b", false), ("c", false)])
    );
    assert!(guard.retained().is_empty());
    assert_eq!(guard.next_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn everything_vanishing_at_once_is_kept_and_marked() {
    let mut guard = guard(&["a", "b", "c", "d"]);
    guard.update(snapshot(2, &[]), Instant::now());
    assert_eq!(
        shown(&guard),
        pairs(&[("a", true), ("b", true), ("c", true), ("d", true)])
    );
    let a = guard.snapshot();
    assert_eq!(a.instance("a").unwrap().metadata[RETAINED], "2");
    assert_eq!(a.revision(), 2);
}

#[tokio::test(start_paused = true)]
async fn one_at_a_time_at_least_the_rest_of_the_share_stays() {
    let mut guard = guard(&["a", "b", "c", "d"]);
    let now = Instant::now();
    guard.update(snapshot(2, &["b", "c", "d"]), now);
    guard.update(snapshot(3, &["c", "d"]), now + Duration::from_secs(1));
    assert!(
        guard.retained().is_empty(),
        "two of four is not more than half"
    );
    guard.update(snapshot(4, &["d"]), now + Duration::from_secs(2));
    guard.update(snapshot(5, &[]), now + Duration::from_secs(3));
    assert_eq!(guard.retained(), ["c", "d"]);
    assert_eq!(shown(&guard), pairs(&[("c", true), ("d", true)]));
}

#[tokio::test(start_paused = true)]
async fn removals_older_than_the_window_do_not_count() {
    let mut guard = guard(&["a", "b", "c", "d"]);
    let now = Instant::now();
    guard.update(snapshot(2, &["c", "d"]), now);
    // The first two left more than a window ago: one of the two left now
    // is half, not more.
    guard.update(snapshot(3, &["d"]), now + WINDOW + Duration::from_secs(1));
    assert!(guard.retained().is_empty());
    let mut guard = self::guard(&["a", "b", "c", "d"]);
    guard.update(snapshot(2, &["c", "d"]), now);
    guard.update(snapshot(3, &["d"]), now + Duration::from_secs(1));
    assert_eq!(guard.retained(), ["c"], "three of four within the window");
}

#[tokio::test(start_paused = true)]
async fn a_kept_instance_goes_when_the_window_passes() {
    let mut guard = guard(&["a", "b"]);
    let now = Instant::now();
    guard.update(snapshot(2, &[]), now);
    assert_eq!(guard.next_deadline(), Some(now + WINDOW));
    assert!(!guard.expire(now + WINDOW - Duration::from_millis(1)));
    assert_eq!(guard.retained(), ["a", "b"]);
    assert!(guard.expire(now + WINDOW));
    assert!(guard.snapshot().is_empty());
    assert!(
        guard.snapshot().revision() > 2,
        "a new snapshot, a new revision"
    );
    assert_eq!(guard.next_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn a_kept_instance_listed_again_is_the_registrys_record() {
    let mut guard = guard(&["a", "b", "c"]);
    let now = Instant::now();
    guard.update(snapshot(2, &[]), now);
    guard.update(snapshot(3, &["b"]), now + Duration::from_secs(1));
    assert_eq!(
        shown(&guard),
        pairs(&[("a", true), ("b", false), ("c", true)])
    );
    guard.update(snapshot(4, &["a", "b", "c"]), now + Duration::from_secs(2));
    assert!(guard.retained().is_empty());
    assert_eq!(guard.snapshot().revision(), 4);
}

#[test]
fn a_share_of_zero_or_one_or_a_zero_window_disables() {
    assert!(Protection::new().is_enabled());
    assert!(!Protection::disabled().is_enabled());
    assert!(!Protection::new().share(1.0).is_enabled());
    assert!(!Protection::new().share(f64::NAN).is_enabled());
    assert!(!Protection::new().window(Duration::ZERO).is_enabled());
}

#[tokio::test(start_paused = true)]
async fn the_layer_keeps_a_mass_removal_and_drops_it_after_the_window() {
    let registry = MemoryRegistry::new();
    let mut handles = Vec::new();
    for id in ["a", "b", "c"] {
        let instance =
            Instance::new("echo", id).with_endpoint("grpc://127.0.0.1:1".parse().unwrap());
        handles.push(registry.register(instance).await.unwrap());
    }
    let watch = crate::Discovery::watch(&registry, "echo").await.unwrap();
    let mut protected = protect(watch, Protection::new().window(WINDOW));
    assert_eq!(protected.next().await.unwrap().len(), 3);
    for handle in handles {
        handle.deregister().await.unwrap();
    }
    // Removals one by one keep the last two (more than half), or all three
    // if the guard saw them together.
    let mut latest = protected.next().await.unwrap();
    while latest.len() < 2 || !latest.instances().iter().all(|i| i.is_retained()) {
        latest = protected.next().await.unwrap();
    }
    tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
    let after = protected.next().await.unwrap();
    assert!(after.is_empty(), "{} left", after.len());
}

#[tokio::test]
async fn a_disabled_layer_is_the_watch_itself() {
    let registry = MemoryRegistry::new();
    let watch = crate::Discovery::watch(&registry, "echo").await.unwrap();
    let mut protected = protect(watch, Protection::disabled());
    assert!(protected.next().await.unwrap().is_empty());
}
