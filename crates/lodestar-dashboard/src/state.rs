//! What the background tasks learn and the handlers read: one mutex over
//! the services' snapshots, the registry's reachability, the event ring,
//! health verdicts, the node view and the audit list; a broadcast channel
//! tells open pages that something changed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use lodestar::{Registry, Snapshot};
use serde::Serialize;
use tokio::{
    sync::{broadcast, watch},
    task::AbortHandle,
};

use crate::{
    Config,
    events::{Draft, Event, Ring},
    writes::Audit,
};

/// What the handlers and tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) config: Config,
    inner: Mutex<Inner>,
    notices: broadcast::Sender<Notice>,
    closing: watch::Sender<bool>,
}

/// What an open page is told.
#[derive(Clone, Debug)]
pub(crate) enum Notice {
    /// An event of the feed.
    Event(Arc<Event>),
    /// Something else changed (the registry's reachability, the node view,
    /// the audit list): read again.
    Refresh,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) services: BTreeMap<String, Service>,
    pub(crate) reach: Reach,
    pub(crate) events: Ring,
    /// By (service, id).
    pub(crate) health: HashMap<(String, String), Health>,
    /// By node address: its `/lodestar/status`, or why it did not answer.
    pub(crate) nodes: BTreeMap<String, NodeView>,
    pub(crate) audit: Audit,
}

/// One followed service.
#[derive(Debug, Default)]
pub(crate) struct Service {
    /// `None` until its watch yields its first snapshot.
    pub(crate) snapshot: Option<Arc<Snapshot>>,
    /// When the dashboard first saw each instance (ms since the epoch).
    pub(crate) first_seen: HashMap<String, u64>,
    /// The watch task, aborted when the service is forgotten.
    pub(crate) task: Option<AbortHandle>,
}

/// Whether the registry answers, as the API reports it.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Reach {
    /// Whether the last listing succeeded (false until the first one does).
    pub(crate) reachable: bool,
    /// When a listing last succeeded (ms since the epoch).
    pub(crate) last_ok: Option<u64>,
    /// Why the last listing failed, while it fails.
    pub(crate) error: Option<String>,
    /// Since when it fails (ms since the epoch).
    pub(crate) failing_since: Option<u64>,
}

/// The verdict of one gRPC health check.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Health {
    /// `SERVING`, `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN`, or
    /// `UNREACHABLE` when the check itself failed.
    pub(crate) status: String,
    /// Why the check failed, if it did.
    pub(crate) error: Option<String>,
    /// When (ms since the epoch).
    pub(crate) checked_ms: u64,
}

/// One node of the built-in registry.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct NodeView {
    /// Its `/lodestar/status`, the last time it answered.
    pub(crate) status: Option<serde_json::Value>,
    /// When it last answered (ms since the epoch).
    pub(crate) last_ok: Option<u64>,
    /// Why the last request failed, while it fails.
    pub(crate) error: Option<String>,
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(registry: Arc<dyn Registry>, config: Config) -> Self {
        let (notices, _) = broadcast::channel(1024);
        let inner = Inner {
            services: BTreeMap::new(),
            reach: Reach::default(),
            events: Ring::new(config.max_events),
            health: HashMap::new(),
            nodes: BTreeMap::new(),
            audit: Audit::new(config.max_audit),
        };
        Self {
            registry,
            config,
            inner: Mutex::new(inner),
            notices,
            closing: watch::channel(false).0,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the maps usable: a panic elsewhere mid-update
        // must not take the console down.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records events and tells open pages.
    pub(crate) fn record(&self, drafts: Vec<Draft>) {
        if drafts.is_empty() {
            return self.refresh();
        }
        let at = now_ms();
        let events: Vec<Event> = {
            let mut inner = self.lock();
            drafts
                .into_iter()
                .map(|d| inner.events.push(at, d))
                .collect()
        };
        for event in events {
            let _ = self.notices.send(Notice::Event(Arc::new(event)));
        }
    }

    /// Tells open pages to read again.
    pub(crate) fn refresh(&self) {
        let _ = self.notices.send(Notice::Refresh);
    }

    /// A receiver of notices from now on.
    pub(crate) fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Turns true when the server shuts down: event streams end then.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends the event streams.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
