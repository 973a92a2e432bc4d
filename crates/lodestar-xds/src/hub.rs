//! One discovery watch per service, shared by every ADS stream that wants
//! the service, opened on the first one's request and dropped with the last.
//!
//! A [`Hub::subscribe`] returns an [`Interest`]: its [`Interest::view`]
//! is `None` until the registry answered, and its [`Interest::changed`]
//! resolves on every new snapshot and every health verdict that changed
//! (the watch task also probes the instances' own health, [`health`](crate::health)). The watch task retries a registry that
//! cannot be reached with `Backoff::watch`, so a stream never fails for it:
//! its clients wait, as they would for any management server.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, Weak},
};

use lodestar::{
    Discovery, Snapshot,
    backoff::Backoff,
    discovery::protect::{self, Protection},
};
use tokio::{
    sync::{mpsc, watch},
    task::AbortHandle,
};

use crate::{health::Probes, names, plan::View};

/// The shared watches, by service.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A stream's hold on one service's watch; the watch stops when the last
/// interest in it is dropped.
#[derive(Clone, Debug)]
pub struct Interest {
    entry: Arc<Entry>,
    rx: watch::Receiver<Option<Arc<View>>>,
}

struct Inner {
    discovery: Arc<dyn Discovery>,
    services: Mutex<HashMap<String, Weak<Entry>>>,
}

#[derive(Debug)]
struct Entry {
    service: String,
    rx: watch::Receiver<Option<Arc<View>>>,
    task: AbortHandle,
    hub: Weak<Inner>,
}

// === impl Hub ===

impl Hub {
    /// A hub over `discovery`.
    pub fn new(discovery: Arc<dyn Discovery>) -> Self {
        Self {
            inner: Arc::new(Inner {
                discovery,
                services: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// An interest in `service`, sharing its watch if one is open.
    pub fn subscribe(&self, service: &str) -> Interest {
        let mut services = lock(&self.inner.services);
        if let Some(entry) = services.get(service).and_then(Weak::upgrade) {
            let rx = entry.rx.clone();
            return Interest { entry, rx };
        }
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(follow(
            self.inner.discovery.clone(),
            service.to_string(),
            tx,
        ));
        let entry = Arc::new(Entry {
            service: service.to_string(),
            rx: rx.clone(),
            task: task.abort_handle(),
            hub: Arc::downgrade(&self.inner),
        });
        services.insert(service.to_string(), Arc::downgrade(&entry));
        Interest { entry, rx }
    }

    /// How many services have a watch open.
    pub fn watched(&self) -> usize {
        lock(&self.inner.services)
            .values()
            .filter(|e| e.strong_count() > 0)
            .count()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("watched", &self.watched())
            .finish_non_exhaustive()
    }
}

/// Follows `service` and publishes every snapshot, retrying the registry.
async fn follow(
    discovery: Arc<dyn Discovery>,
    service: String,
    tx: watch::Sender<Option<Arc<View>>>,
) {
    if !names::is_service_name(&service) {
        tracing::warn!(%service, "xds: a client asked for an invalid service name");
        return publish_empty(&service, &tx);
    }
    let mut backoff = Backoff::watch();
    let watch = loop {
        match discovery.watch(&service).await {
            Ok(watch) => break watch,
            Err(error) if error.is_invalid() => {
                tracing::warn!(%service, %error, "xds: the registry refuses the service name");
                return publish_empty(&service, &tx);
            }
            Err(error) => {
                tracing::warn!(%service, %error, "xds: cannot watch the service yet; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    };
    // Client-side self-protection, as the tonic channel has it: a mass
    // disappearance (an etcd frozen past the TTL revoking every lease at
    // once) keeps the vanished instances in the assignment for the window;
    // gRPC clients skip those whose connections fail by themselves.
    let mut watch = protect::protect(watch, Protection::default());
    tracing::debug!(%service, "xds: watching");
    let (verdicts, mut rx) = mpsc::unbounded_channel();
    let mut probes = Probes::new(verdicts);
    let mut view: Option<View> = None;
    loop {
        tokio::select! {
            snapshot = watch.next() => {
                let Some(snapshot) = snapshot else { return };
                probes.sync(&snapshot);
                let mut next = View::new(snapshot);
                if let Some(old) = view.take() {
                    next.not_serving = old.not_serving;
                    next.not_serving.retain(|id| next.snapshot.instance(id).is_some());
                }
                tx.send_replace(Some(Arc::new(next.clone())));
                view = Some(next);
            }
            Some((id, not_serving)) = rx.recv() => {
                let Some(current) = view.as_mut() else { continue };
                let changed = if not_serving {
                    current.not_serving.insert(id)
                } else {
                    current.not_serving.remove(&id)
                };
                if changed {
                    tx.send_replace(Some(Arc::new(current.clone())));
                }
            }
        }
    }
}

/// An empty view of a name no service can have: it answers the clients
/// (their calls fail UNAVAILABLE) instead of holding their other names back.
fn publish_empty(service: &str, tx: &watch::Sender<Option<Arc<View>>>) {
    let empty = Snapshot::new(service, 0, Vec::new(), 0);
    tx.send_replace(Some(Arc::new(View::new(Arc::new(empty)))));
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map stays consistent whatever panicked while holding it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl Interest ===

impl Interest {
    /// The service.
    pub fn service(&self) -> &str {
        &self.entry.service
    }

    /// The newest view of the service; `None` until the registry answered.
    pub fn view(&self) -> Option<Arc<View>> {
        self.rx.borrow().clone()
    }

    /// A receiver of the service's snapshots that does not keep the watch
    /// open: it ends when the last interest is dropped.
    pub(crate) fn receiver(&self) -> watch::Receiver<Option<Arc<View>>> {
        self.rx.clone()
    }

    /// Resolves when a newer snapshot is in (at once if one came since the
    /// last call); never if the watch task ended.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

// === impl Entry ===

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let mut services = lock(&hub.services);
        // A new entry for the service may already have replaced this one.
        if services
            .get(&self.service)
            .is_some_and(|e| e.strong_count() == 0)
        {
            services.remove(&self.service);
        }
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}
