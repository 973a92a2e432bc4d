//! The one resync driver behind every backend's [`Watch`]: list, follow, keep
//! the last snapshot through errors, back off, list again on a gap.
//!
//! A backend supplies only its requests, as a [`Source`]: [`Source::list`]
//! reads every record of a service at a revision, [`Source::follow`] opens a
//! [`Follow`] that yields what changed after a revision. The driver owns
//! everything else, the same way for every backend (linkerd2-proxy's
//! `recover.rs` does this for its resolutions):
//!
//! - the view of the service, kept by key, with records that do not parse
//!   left out, counted in [`Snapshot::skipped`] and warned about once per key
//!   and version;
//! - snapshots published only when the view changed, as a new version of a
//!   persistent [`Instances`] map, so a change costs what changed;
//! - errors: the last snapshot stays in force, the driver backs off
//!   ([`Backoff::watch`]) and resumes from the last revision, or lists again
//!   when the source says it cannot resume ([`Interrupted::Gap`],
//!   [`Interrupted::Lost`]);
//! - revisions that never go backwards (see [`Snapshot::revision`]): a
//!   registry whose revision went down (it lost its data, or the client
//!   moved to another node whose clock is behind) is followed from where the
//!   watch was, not from its own lower number.
//!
//! # Examples
//!
//! A source over a fixed list that never changes:
//!
//! ```
//! use lodestar::{BoxFuture, Error, Instance};
//! use lodestar::discovery::resync::{self, Follow, Listing, Record, Source};
//!
//! #[derive(Debug)]
//! struct Fixed;
//!
//! impl Source for Fixed {
//!     fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
//!         Box::pin(async {
//!             let instance = Instance::new("echo", "a");
//!             Ok(Listing::new(7, vec![Record::new("a", 1, Ok(instance))]))
//!         })
//!     }
//!
//!     fn follow(&self, _after: u64) -> BoxFuture<'_, Result<Box<dyn Follow>, Error>> {
//!         Box::pin(async { Ok(resync::never()) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let mut watch = resync::watch("echo", Fixed).await?;
//! let snapshot = watch.next().await.unwrap();
//! assert_eq!((snapshot.len(), snapshot.revision()), (1, 7));
//! # Ok(())
//! # }
//! ```

use std::{collections::HashMap, fmt, sync::Arc};

use tokio::sync::watch;

use crate::{
    BoxFuture, Error, ErrorChain, Instance, Override, Snapshot, Watch, backoff::Backoff,
    discovery::Instances,
};

/// A backend's requests for one service; see the [module docs](self).
pub trait Source: Send + Sync + fmt::Debug + 'static {
    /// Every record of the service now, and the revision it reflects.
    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>>;

    /// What changes after `after` (a revision from [`Source::list`] or a
    /// later [`Update`]).
    fn follow(&self, after: u64) -> BoxFuture<'_, Result<Box<dyn Follow>, Error>>;
}

/// An open stream of changes; see [`Source::follow`].
pub trait Follow: Send {
    /// The next change. An error ends this stream; the driver then backs off
    /// and resumes from the last revision, or lists again.
    fn next(&mut self) -> BoxFuture<'_, Result<Update, Interrupted>>;
}

/// What a [`Source::list`] returned: the whole service.
#[derive(Debug)]
pub struct Listing {
    revision: u64,
    records: Vec<Record>,
}

/// One record of the registry, as read: an instance, or an operator's
/// [`Override`] of one.
#[derive(Debug)]
pub struct Record {
    key: String,
    version: u64,
    value: Value,
}

/// What a [`Record`] holds.
#[derive(Debug)]
enum Value {
    Instance(Result<Instance, Error>),
    /// An override of the instance with this id.
    Override(String, Result<Override, Error>),
}

/// What a [`Follow`] yields.
#[derive(Debug)]
pub enum Update {
    /// Some keys changed (etcd's watch events), applied in order.
    Changes {
        /// The revision after these changes.
        revision: u64,
        /// What happened to each key.
        changes: Vec<Delta>,
    },
    /// The whole service again, replacing the view (a long poll answers with
    /// every instance). Unchanged records keep their place in the
    /// persistent map, so this still publishes only what changed.
    Reset(Listing),
    /// Nothing changed up to `revision` (a progress notification).
    Progress(u64),
}

/// What happened to one key, in an [`Update::Changes`].
#[derive(Debug)]
pub enum Delta {
    /// The record was added or replaced.
    Put(Record),
    /// The key was deleted.
    Remove(String),
}

/// Why a [`Follow`] stopped.
#[derive(Debug)]
pub enum Interrupted {
    /// The stream broke; resuming from the last revision is safe.
    Broken(Error),
    /// Resuming is impossible, though the registry answers (compaction, a
    /// registry that lost its data): list again at once.
    Gap(String),
    /// The stream broke and cannot be resumed (another node, whose
    /// revisions mean something else): list again after a backoff.
    Lost(Error),
}

/// The view of one service, kept by registry key.
struct View {
    service: String,
    entries: HashMap<String, Entry>,
    /// id -> the override in force.
    overrides: HashMap<String, Override>,
    /// id -> the key of the record shown for it.
    shown_by: HashMap<String, String>,
    instances: Instances,
    skipped: usize,
    /// The source's revision, to follow from.
    revision: u64,
    /// Added to the source's revision so the published one never goes down.
    offset: u64,
    /// The revision of the last snapshot published.
    published: Option<u64>,
}

/// One key of the view.
enum Entry {
    /// An instance: the owner's record, and what the snapshots show (the
    /// record with any override of its id applied).
    Good {
        record: Arc<Instance>,
        shown: Arc<Instance>,
    },
    /// An operator's override of the instance `id`.
    Override { id: String, value: Override },
    /// A value that does not parse, at this version (warned about once).
    Bad(u64),
}

/// A [`Follow`] that never yields, for sources that do not change.
#[derive(Debug)]
struct Never;

/// Lists `service` from `source` and starts the task that follows it.
/// Resolves once the first list is in hand.
pub async fn watch(service: &str, source: impl Source) -> Result<Watch, Error> {
    let mut view = View::new(service);
    view.reset(source.list().await?);
    let (tx, rx) = watch::channel(view.next_snapshot());
    let task = tokio::spawn(drive(source, view, tx));
    Ok(Watch::new(rx, Some(task.abort_handle())))
}

/// One snapshot of `service`, listed now.
pub async fn get(service: &str, source: &impl Source) -> Result<Snapshot, Error> {
    let mut view = View::new(service);
    view.reset(source.list().await?);
    Ok(Snapshot::clone(&view.snapshot()))
}

/// A [`Follow`] that never yields anything.
pub fn never() -> Box<dyn Follow> {
    Box::new(Never)
}

/// Follows until every [`Watch`] on `tx` is gone.
async fn drive(source: impl Source, mut view: View, tx: watch::Sender<Arc<Snapshot>>) {
    let mut backoff = Backoff::watch();
    let mut relist = false;
    while !tx.is_closed() {
        if relist {
            match source.list().await {
                Ok(listing) => {
                    relist = false;
                    backoff.reset();
                    view.reset(listing).then(|| view.publish(&tx));
                }
                Err(e) => {
                    view.warn("listing failed", &e);
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
        }
        match follow(&source, &mut view, &tx, &mut backoff).await {
            Interrupted::Gap(reason) => {
                tracing::info!(service = %view.service, %reason, "listing the service again");
                relist = true;
            }
            Interrupted::Broken(e) => {
                view.warn("watch interrupted", &e);
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Interrupted::Lost(e) => {
                view.warn("watch lost", &e);
                relist = true;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Follows from the view's revision until the stream stops.
async fn follow(
    source: &impl Source,
    view: &mut View,
    tx: &watch::Sender<Arc<Snapshot>>,
    backoff: &mut Backoff,
) -> Interrupted {
    let mut stream = match source.follow(view.revision).await {
        Ok(stream) => stream,
        Err(e) => return Interrupted::Broken(e),
    };
    loop {
        let update = match stream.next().await {
            Ok(update) => update,
            Err(stop) => return stop,
        };
        backoff.reset();
        if view.apply(update) {
            view.publish(tx);
        }
    }
}

// === impl Listing ===

impl Listing {
    /// Every record of a service at `revision`.
    pub fn new(revision: u64, records: Vec<Record>) -> Self {
        Self { revision, records }
    }

    /// Whether it holds no record at all.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

// === impl Record ===

impl Record {
    /// The record at `key`, written at `version` (etcd's mod revision, a
    /// dirty timestamp...: anything that changes when the value does), with
    /// its parsed value or why it did not parse.
    pub fn new(key: impl Into<String>, version: u64, value: Result<Instance, Error>) -> Self {
        Self {
            key: key.into(),
            version,
            value: Value::Instance(value),
        }
    }

    /// An operator's override of the instance `id` at `key` (kept apart
    /// from the instances' keys), written at `version`, or why it did not
    /// parse. The driver merges it into the instance `id` of every snapshot
    /// ([`Override::apply`]), whenever either of them changes; one that
    /// does not parse is skipped and counted like a bad record.
    pub fn overriding(
        key: impl Into<String>,
        version: u64,
        id: impl Into<String>,
        value: Result<Override, Error>,
    ) -> Self {
        Self {
            key: key.into(),
            version,
            value: Value::Override(id.into(), value),
        }
    }
}

// === impl View ===

impl View {
    fn new(service: &str) -> Self {
        Self {
            service: service.to_string(),
            entries: HashMap::new(),
            overrides: HashMap::new(),
            shown_by: HashMap::new(),
            instances: Instances::default(),
            skipped: 0,
            revision: 0,
            offset: 0,
            published: None,
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(Snapshot::from_instances(
            &self.service,
            self.revision + self.offset,
            self.instances.clone(),
            self.skipped,
        ))
    }

    /// The next snapshot to publish, its revision above every one before.
    fn next_snapshot(&mut self) -> Arc<Snapshot> {
        if let Some(published) = self.published {
            if self.revision + self.offset <= published {
                self.offset = published + 1 - self.revision;
            }
        }
        let snapshot = self.snapshot();
        self.published = Some(snapshot.revision());
        snapshot
    }

    fn publish(&mut self, tx: &watch::Sender<Arc<Snapshot>>) {
        tx.send_replace(self.next_snapshot());
    }

    /// Replaces the view with `listing`; whether anything changed.
    fn reset(&mut self, listing: Listing) -> bool {
        let mut stale: HashMap<String, Entry> = std::mem::take(&mut self.entries);
        let mut changed = false;
        for record in listing.records {
            if let Some(old) = stale.remove(&record.key) {
                self.entries.insert(record.key.clone(), old);
            }
            changed |= self.put(record);
        }
        for (key, entry) in stale {
            self.entries.insert(key.clone(), entry);
            changed |= self.remove(&key);
        }
        // A list may go backwards (a registry that lost its data, another
        // node); the published revision does not (see `next_snapshot`).
        self.revision = listing.revision;
        changed
    }

    /// Applies one update; whether anything changed.
    fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Changes { revision, changes } => {
                let mut changed = false;
                for delta in changes {
                    changed |= match delta {
                        Delta::Put(record) => self.put(record),
                        Delta::Remove(key) => self.remove(&key),
                    };
                }
                self.advance(revision);
                changed
            }
            Update::Reset(listing) => self.reset(listing),
            Update::Progress(revision) => {
                self.advance(revision);
                false
            }
        }
    }

    /// Moves the source revision forward: a stream never goes back.
    fn advance(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }

    /// Adds or replaces the record at its key; whether the view changed.
    fn put(&mut self, record: Record) -> bool {
        let Record {
            key,
            version,
            value,
        } = record;
        match value {
            Value::Instance(Ok(instance)) => self.put_good(key, instance),
            Value::Override(id, Ok(value)) => self.put_override(key, id, value),
            Value::Instance(Err(error)) | Value::Override(_, Err(error)) => {
                self.put_bad(key, version, &error)
            }
        }
    }

    fn put_good(&mut self, key: String, instance: Instance) -> bool {
        match self.entries.get(&key) {
            Some(Entry::Good { record, .. }) if **record == instance => return false,
            Some(Entry::Bad(_)) => self.skipped -= 1,
            _ => {}
        }
        self.drop_entry(&key);
        let record = Arc::new(instance);
        let shown = self.shown(&record);
        if let Some(other) = self.instances.insert(shown.clone()) {
            tracing::warn!(service = %self.service, id = %other.id, %key, "two registry keys hold the same instance id; the newest wins");
        }
        self.shown_by.insert(record.id.clone(), key.clone());
        self.entries.insert(key, Entry::Good { record, shown });
        true
    }

    /// The record as snapshots show it: with the override of its id, if any.
    fn shown(&self, record: &Arc<Instance>) -> Arc<Instance> {
        match self.overrides.get(&record.id) {
            None => record.clone(),
            Some(value) => {
                let mut shown = Instance::clone(record);
                value.apply(&mut shown);
                Arc::new(shown)
            }
        }
    }

    fn put_override(&mut self, key: String, id: String, value: Override) -> bool {
        match self.entries.get(&key) {
            Some(Entry::Override { id: old, value: v }) if *old == id && *v == value => {
                return false;
            }
            Some(Entry::Bad(_)) => self.skipped -= 1,
            _ => {}
        }
        self.drop_entry(&key);
        self.overrides.insert(id.clone(), value.clone());
        self.entries.insert(
            key,
            Entry::Override {
                id: id.clone(),
                value,
            },
        );
        self.refresh(&id);
        true
    }

    /// Shows the instance `id` again with the override now in force.
    fn refresh(&mut self, id: &str) {
        let Some(key) = self.shown_by.get(id).cloned() else {
            return;
        };
        let Some(Entry::Good { record, .. }) = self.entries.get(&key) else {
            return;
        };
        let record = record.clone();
        let shown = self.shown(&record);
        self.instances.insert(shown.clone());
        self.entries.insert(key, Entry::Good { record, shown });
    }

    /// Takes out what the entry at `key` contributes (its instance, its
    /// override), leaving the entry itself and the skipped count.
    fn drop_entry(&mut self, key: &str) {
        match self.entries.get(key) {
            Some(Entry::Good { shown, .. }) => {
                let shown = shown.clone();
                self.forget(&shown);
            }
            Some(Entry::Override { id, .. }) => {
                let id = id.clone();
                self.overrides.remove(&id);
                self.refresh(&id);
            }
            _ => {}
        }
    }

    fn put_bad(&mut self, key: String, version: u64, error: &Error) -> bool {
        let changed = match self.entries.get(&key) {
            Some(Entry::Bad(seen)) if *seen == version => return false,
            Some(Entry::Bad(_)) => false,
            Some(_) => {
                self.drop_entry(&key);
                self.skipped += 1;
                true
            }
            None => {
                self.skipped += 1;
                true
            }
        };
        tracing::warn!(service = %self.service, %key, error = %ErrorChain(error), "skipping a registry record that does not parse");
        self.entries.insert(key, Entry::Bad(version));
        changed
    }

    /// Removes the record at `key`; whether the view changed.
    fn remove(&mut self, key: &str) -> bool {
        self.drop_entry(key);
        match self.entries.remove(key) {
            Some(Entry::Good { .. } | Entry::Override { .. }) => true,
            Some(Entry::Bad(_)) => {
                self.skipped -= 1;
                true
            }
            None => false,
        }
    }

    /// Takes `old` out of the instances, unless another key has since put a
    /// record with the same id.
    fn forget(&mut self, old: &Arc<Instance>) {
        if self
            .instances
            .get(&old.id)
            .is_some_and(|current| Arc::ptr_eq(current, old))
        {
            self.instances.remove(&old.id);
            self.shown_by.remove(&old.id);
        }
    }

    fn warn(&self, what: &str, error: &Error) {
        tracing::warn!(service = %self.service, error = %ErrorChain(error), revision = self.revision, "{what}; keeping the last snapshot");
    }
}

// === impl Never ===

impl Follow for Never {
    fn next(&mut self) -> BoxFuture<'_, Result<Update, Interrupted>> {
        Box::pin(std::future::pending())
    }
}

#[cfg(test)]
mod tests;
