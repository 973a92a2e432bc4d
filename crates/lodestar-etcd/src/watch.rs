//! Following one service: a prefix get, then a watch from the revision after
//! it, kept going through every failure.
//!
//! - The connection drops: the last snapshot stays in force; the task
//!   reconnects with backoff and resumes from the last revision it saw, so
//!   nothing that happened meanwhile is missed.
//! - The resume revision was compacted away, or etcd came back with a lower
//!   revision than the one seen (it lost its data): the task lists the prefix
//!   again and carries on from there (a reset).
//! - A value does not parse: it is left out of the snapshot and counted in
//!   [`Snapshot::skipped`], with one warning per key and version; the good
//!   records are unaffected.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions, WatchResponse};
use lodestar::{Error, Instance, Snapshot, Watch, backoff::Backoff};
use tokio::sync::watch;

use crate::{Shared, session::error_chain};

/// The view of one service, built from a list and kept by events.
struct View {
    service: String,
    prefix: String,
    entries: Entries,
    /// The newest revision reflected.
    revision: i64,
}

/// key -> the record, or the mod revision of a value that did not parse.
type Entries = BTreeMap<String, Result<Arc<Instance>, i64>>;

/// Why a watch stream stopped.
enum Stop {
    /// Resuming is impossible (compaction, a registry that lost its data):
    /// list again.
    Relist,
    /// The stream broke; resume from the last revision.
    Broken(String),
}

// === impl View ===

impl View {
    fn new(shared: &Shared, service: &str) -> Self {
        Self {
            service: service.to_string(),
            prefix: shared.layout.service_prefix(service),
            entries: BTreeMap::new(),
            revision: 0,
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        let instances = self
            .entries
            .values()
            .filter_map(|e| e.as_ref().ok().cloned())
            .collect();
        let skipped = self.entries.values().filter(|e| e.is_err()).count();
        let revision = u64::try_from(self.revision).unwrap_or_default();
        Arc::new(Snapshot::from_shared(
            &self.service,
            revision,
            instances,
            skipped,
        ))
    }

    /// Replaces the view with a fresh list of the prefix.
    async fn list(&mut self, shared: &Shared) -> Result<(), Error> {
        let prefix = self.prefix.clone();
        let response = shared
            .call(|mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let old = std::mem::take(&mut self.entries);
        for kv in response.kvs() {
            self.put(shared, kv, Some(&old));
        }
        self.revision = response.header().map(|h| h.revision()).unwrap_or_default();
        Ok(())
    }

    /// Adds or replaces the entry of `kv`. `old` holds the entries before a
    /// re-list (`None`: the current ones), to warn once per bad value.
    fn put(&mut self, shared: &Shared, kv: &KeyValue, old: Option<&Entries>) {
        let Ok(key) = kv.key_str() else {
            tracing::warn!(service = %self.service, key = ?kv.key(), "skipping a non-UTF-8 key");
            return;
        };
        // Under a Go target, a deeper key belongs to another service.
        if shared
            .layout
            .split_key(key)
            .is_none_or(|(s, _)| s != self.service)
        {
            return;
        }
        let entry = shared
            .layout
            .decode(&self.service, key, kv.value())
            .map(Arc::new)
            .map_err(|e| {
                let revision = kv.mod_revision();
                let known = old.unwrap_or(&self.entries);
                if !matches!(known.get(key), Some(Err(seen)) if *seen == revision) {
                    tracing::warn!(
                        service = %self.service, key, error = %e,
                        "skipping a registry record that does not parse"
                    );
                }
                revision
            });
        self.entries.insert(key.to_string(), entry);
    }

    /// Applies one watch response; whether the view changed.
    fn apply(&mut self, shared: &Shared, response: &WatchResponse) -> bool {
        let mut changed = false;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => self.put(shared, kv, None),
                EventType::Delete => {
                    if let Ok(key) = kv.key_str() {
                        self.entries.remove(key);
                    }
                }
            }
            self.revision = self.revision.max(kv.mod_revision());
            changed = true;
        }
        if let Some(header) = response.header() {
            self.revision = self.revision.max(header.revision());
        }
        changed
    }
}

/// Lists `service` and starts the task that follows it.
pub(crate) async fn start(shared: Shared, service: &str) -> Result<Watch, Error> {
    let mut view = View::new(&shared, service);
    view.list(&shared).await?;
    let (tx, rx) = watch::channel(view.snapshot());
    let task = tokio::spawn(follow(shared, view, tx));
    Ok(Watch::new(rx, Some(task.abort_handle())))
}

/// One snapshot of `service`.
pub(crate) async fn get(shared: &Shared, service: &str) -> Result<Snapshot, Error> {
    let mut view = View::new(shared, service);
    view.list(shared).await?;
    Ok(Snapshot::clone(&view.snapshot()))
}

async fn follow(shared: Shared, mut view: View, tx: watch::Sender<Arc<Snapshot>>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut relist = false;
    while !tx.is_closed() {
        if relist {
            match view.list(&shared).await {
                Ok(()) => {
                    relist = false;
                    tx.send_replace(view.snapshot());
                }
                Err(e) => {
                    tracing::warn!(service = %view.service, error = %error_chain(&e), "etcd re-list failed; keeping the last snapshot");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
        }
        match stream(&shared, &mut view, &tx, &mut backoff).await {
            Stop::Relist => relist = true,
            Stop::Broken(error) => {
                tracing::warn!(service = %view.service, %error, revision = view.revision, "etcd watch interrupted; keeping the last snapshot and resuming");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Watches from the revision after the view's until the stream stops.
async fn stream(
    shared: &Shared,
    view: &mut View,
    tx: &watch::Sender<Arc<Snapshot>>,
    backoff: &mut Backoff,
) -> Stop {
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_progress_notify()
        .with_start_revision(view.revision + 1);
    let prefix = view.prefix.clone();
    let open = shared.call(|mut c| {
        let (prefix, options) = (prefix.clone(), options.clone());
        async move { c.watch(prefix, Some(options)).await }
    });
    let mut stream = match open.await {
        Ok(stream) => stream,
        Err(e) => return Stop::Broken(error_chain(&e)),
    };
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Stop::Broken("watch stream ended".into()),
            Err(e) => return Stop::Broken(crate::concise(e).to_string()),
        };
        if response.canceled() {
            if response.compact_revision() > 0 {
                tracing::info!(service = %view.service, compacted = response.compact_revision(), "etcd compacted past the watch; listing again");
                return Stop::Relist;
            }
            return Stop::Broken(format!("watch canceled: {}", response.cancel_reason()));
        }
        if response.created() {
            backoff.reset();
            let current = response.header().map(|h| h.revision()).unwrap_or_default();
            if current < view.revision {
                tracing::warn!(service = %view.service, seen = view.revision, current, "etcd revision went backwards (data lost?); listing again");
                return Stop::Relist;
            }
        }
        if view.apply(shared, &response) {
            tx.send_replace(view.snapshot());
        }
    }
}
