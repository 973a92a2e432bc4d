//! Following a service: the [`Discovery`] trait, [`Watch`] and [`Snapshot`].
//!
//! A watch yields whole snapshots of a service (every instance, with the
//! registry revision they reflect), latest-wins: a slow reader skips
//! intermediate snapshots rather than queueing them, so memory stays bounded
//! however fast the registry changes. While the registry is unreachable the
//! last snapshot stays in force; the backend reconnects and resumes by itself.
//!
//! [`Snapshot::changes`] turns two snapshots into the adds, updates and
//! removals between them, for callers that think in events.

mod instances;
pub mod protect;
pub mod resync;

use std::{collections::BTreeMap, fmt, sync::Arc};

use tokio::{sync::watch, task::AbortHandle};

pub use self::instances::{Instances, Iter};
use crate::{BoxFuture, Error, Instance, Subscriber, Subscription};

/// Follows services in a registry.
pub trait Discovery: Send + Sync + fmt::Debug {
    /// Starts following `service`. Resolves once the first snapshot is in
    /// hand, so [`Watch::latest`] is always a real view of the registry.
    fn watch(&self, service: &str) -> BoxFuture<'_, Result<Watch, Error>>;

    /// One snapshot of `service`, now.
    fn get(&self, service: &str) -> BoxFuture<'_, Result<Snapshot, Error>>;

    /// Every service that has at least one instance, with its instance count.
    fn services(&self) -> BoxFuture<'_, Result<BTreeMap<String, usize>, Error>>;

    /// Records `subscriber` as a consumer of its service until the returned
    /// handle is dropped. Backends without a place for it return a
    /// subscription that records nothing.
    fn subscribe(&self, subscriber: Subscriber) -> BoxFuture<'_, Result<Subscription, Error>> {
        let _ = subscriber;
        Box::pin(async { Ok(Subscription::unrecorded()) })
    }

    /// The recorded consumers of `service`.
    fn subscribers(&self, service: &str) -> BoxFuture<'_, Result<Vec<Subscriber>, Error>> {
        let _ = service;
        Box::pin(async {
            Err(Error::Config(
                "this registry does not record subscribers".to_string(),
            ))
        })
    }
}

/// Every instance of one service at one registry revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    service: String,
    revision: u64,
    /// A persistent map shared with the backend's view and with older
    /// snapshots, so a change costs what changed, not a copy of every record.
    instances: Instances,
    skipped: usize,
}

/// One difference between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An instance appeared.
    Add(Arc<Instance>),
    /// An instance's record changed.
    Update(Arc<Instance>),
    /// An instance disappeared; this is its last known record.
    Remove(Arc<Instance>),
}

/// A live view of one service; see the [module docs](self).
///
/// Cloning a watch is cheap and shares the underlying registry watch, which
/// stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Watch {
    rx: watch::Receiver<Arc<Snapshot>>,
    _task: Arc<AbortOnDrop>,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
struct AbortOnDrop(Option<AbortHandle>);

// === impl Snapshot ===

impl Snapshot {
    /// A snapshot of `service` at `revision`. Instances are kept sorted by id;
    /// `skipped` counts registry records that could not be parsed.
    pub fn new(
        service: impl Into<String>,
        revision: u64,
        instances: Vec<Instance>,
        skipped: usize,
    ) -> Self {
        let instances = instances.into_iter().map(Arc::new).collect();
        Self::from_shared(service, revision, instances, skipped)
    }

    /// Like [`Snapshot::new`], from records the caller keeps shared.
    pub fn from_shared(
        service: impl Into<String>,
        revision: u64,
        instances: Vec<Arc<Instance>>,
        skipped: usize,
    ) -> Self {
        Self::from_instances(
            service,
            revision,
            Instances::from_unsorted(instances),
            skipped,
        )
    }

    /// A snapshot over a persistent [`Instances`] map: what backends that
    /// follow changes one by one use, so each new snapshot shares every
    /// unchanged record and chunk with the one before it.
    pub fn from_instances(
        service: impl Into<String>,
        revision: u64,
        instances: Instances,
        skipped: usize,
    ) -> Self {
        Self {
            service: service.into(),
            revision,
            instances,
            skipped,
        }
    }

    /// The service this is a snapshot of.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The version of the view this snapshot is. Within one [`Watch`] it
    /// strictly grows with every snapshot yielded, on every backend: it is
    /// the registry's own revision (etcd's revision, the built-in registry's
    /// `latest_timestamp` in nanoseconds) for as long as that grows, and
    /// carries on from the last one yielded when the registry's goes down
    /// (etcd restarted without its data, a client that moved to another
    /// registry node whose clock is behind). Compare revisions of one watch
    /// only.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The instances, sorted by id.
    pub fn instances(&self) -> &Instances {
        &self.instances
    }

    /// The instance with this id.
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id).map(|i| &**i)
    }

    /// How many records of this service were in the registry but could not
    /// be parsed (they are left out, with a warning in the log).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether there is no instance.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The number of instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// What changed from `older` to `self`: adds and updates in id order,
    /// then removals. Costs what changed when the two snapshots share
    /// history (see [`Instances::changes`]).
    pub fn changes(&self, older: &Snapshot) -> Vec<Change> {
        self.instances.changes(&older.instances)
    }
}

// === impl Change ===

impl Change {
    /// `add`, `update` or `remove`.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Add(_) => "add",
            Change::Update(_) => "update",
            Change::Remove(_) => "remove",
        }
    }

    /// The instance concerned.
    pub fn instance(&self) -> &Instance {
        match self {
            Change::Add(i) | Change::Update(i) | Change::Remove(i) => i,
        }
    }
}

// === impl Watch ===

impl Watch {
    /// Wraps the receiving end of a backend's snapshot channel. `task`, if
    /// given, is the backend's watch task: it is aborted when the last clone
    /// of this watch is dropped.
    pub fn new(rx: watch::Receiver<Arc<Snapshot>>, task: Option<AbortHandle>) -> Self {
        let mut rx = rx;
        // The first call to `next` returns the snapshot in hand.
        rx.mark_changed();
        Self {
            rx,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// The newest snapshot, without waiting.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// Waits for a snapshot newer than the last one this watch returned (the
    /// first call returns the current one at once). `None` once the backend
    /// has shut down.
    pub async fn next(&mut self) -> Option<Arc<Snapshot>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, version: &str) -> Instance {
        Instance::new("s", id)
            .with_version(version)
            .with_endpoint("grpc://127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn snapshot_sorts_and_finds() {
        let s = Snapshot::new(
            "s",
            3,
            vec![inst("b", "1"), inst("a", "1"), inst("c", "1")],
            0,
        );
        let ids: Vec<_> = s.instances().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(s.instance("b").unwrap().id, "b");
        assert!(s.instance("d").is_none());
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn changes_between_snapshots() {
        let old = Snapshot::new("s", 1, vec![inst("a", "1"), inst("b", "1")], 0);
        let new = Snapshot::new("s", 2, vec![inst("b", "2"), inst("c", "1")], 0);
        let kinds: Vec<_> = new
            .changes(&old)
            .iter()
            .map(|c| (c.kind(), c.instance().id.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("update", "b".into()),
                ("add", "c".into()),
                ("remove", "a".into())
            ]
        );
        assert!(new.changes(&new).is_empty());
    }

    #[tokio::test]
    async fn watch_is_latest_wins() {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::new("s", 1, vec![], 0)));
        let mut w = Watch::new(rx, None);
        assert_eq!(w.next().await.unwrap().revision(), 1);
        for rev in 2..100 {
            tx.send_replace(Arc::new(Snapshot::new("s", rev, vec![], 0)));
        }
        // A slow reader sees only the newest snapshot, not 98 queued ones.
        assert_eq!(w.next().await.unwrap().revision(), 99);
        drop(tx);
        assert!(w.next().await.is_none());
    }

    #[tokio::test]
    async fn dropping_the_last_clone_stops_the_task() {
        let task = tokio::spawn(std::future::pending::<()>());
        let (_tx, rx) = watch::channel(Arc::new(Snapshot::new("s", 1, vec![], 0)));
        let w = Watch::new(rx, Some(task.abort_handle()));
        let w2 = w.clone();
        drop(w);
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        drop(w2);
        assert!(task.await.unwrap_err().is_cancelled());
    }
}
