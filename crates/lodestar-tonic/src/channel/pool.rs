//! The connection pool: the second stage of the channel (resolve -> pool ->
//! balance), one connection per instance and the readiness of each.
//!
//! The [`Driver`] task owns the pool's bookkeeping. It applies the
//! resolution's changes (a connection spawned per new instance, retired per
//! removed one) and the connectors' notices, which it takes in batches: the
//! balancer gets one batch of health verdicts (usable = connected and
//! SERVING) per wake-up, so N instances connecting cost N table changes
//! applied together, not N table rebuilds. New instances enter the balancer
//! out of rotation and join it when their connection is usable.
//!
//! The pool's [`Ready`] state is what the channel's `poll_ready` reports:
//! whether a call can go anywhere (the first snapshot's instances have all
//! settled and one of them is usable), and since when it cannot.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard},
};

use http::Request;
use hyper::client::conn::http2::SendRequest;
use lodestar::{
    Discovery, Instance,
    balance::{Balancer, Health},
    discovery::{Change, protect::Protection},
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tonic::body::Body;

use super::{
    conn::{Conn, Notice, NoticeKind, Settings},
    resolve::{Resolution, Update},
};

/// Endpoint schemes the channel dials, in order of preference.
const SCHEMES: [&str; 3] = ["grpc", "h2c", "http"];

/// Notices taken per batch at most.
const BATCH: usize = 1024;

/// The call path's handle on the pool. Cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Pool {
    shared: Arc<Shared>,
}

/// Whether a call can go anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ready {
    /// The first instances have settled and one instance is usable.
    pub(super) usable: bool,
    /// When it last stopped being usable (the channel's start, at first).
    pub(super) since: Instant,
}

#[derive(Debug)]
struct Shared {
    /// Read on every call, written when the snapshot changes.
    conns: RwLock<HashMap<String, Conn>>,
    balancer: Balancer,
    ready: watch::Sender<Ready>,
    notices: mpsc::UnboundedSender<Notice>,
    settings: Settings,
}

/// The task that keeps the pool in line with the resolution and the
/// connectors.
#[derive(Debug)]
pub(super) struct Driver {
    shared: Arc<Shared>,
    notices: mpsc::UnboundedReceiver<Notice>,
    /// What the balancer was last told, per instance.
    endpoints: HashMap<String, Tracked>,
    /// How many instances are usable.
    usable: usize,
    /// The first instances seen that have not settled yet; `None` until a
    /// snapshot with instances arrives.
    unsettled: Option<HashSet<String>>,
}

#[derive(Debug)]
struct Tracked {
    generation: u64,
    usable: bool,
}

// === impl Pool ===

impl Pool {
    /// A pool feeding `balancer`, and the driver to spawn.
    pub(super) fn new(balancer: Balancer, settings: Settings) -> (Self, Driver) {
        let (notices, rx) = mpsc::unbounded_channel();
        let ready = Ready {
            usable: false,
            since: Instant::now(),
        };
        let shared = Arc::new(Shared {
            conns: RwLock::default(),
            balancer,
            ready: watch::channel(ready).0,
            notices,
            settings,
        });
        let driver = Driver {
            shared: shared.clone(),
            notices: rx,
            endpoints: HashMap::new(),
            usable: 0,
            unsettled: None,
        };
        (Self { shared }, driver)
    }

    /// The readiness now.
    pub(super) fn ready(&self) -> Ready {
        *self.shared.ready.borrow()
    }

    /// Follows the readiness.
    pub(super) fn watch_ready(&self) -> watch::Receiver<Ready> {
        self.shared.ready.subscribe()
    }

    /// The live connection to the instance `id`, with `request` pointed
    /// at it; `None` if the instance has no live connection.
    pub(super) fn target(
        &self,
        id: &str,
        request: &mut Request<Body>,
    ) -> Option<SendRequest<Body>> {
        let conns = self.read_conns();
        let conn = conns.get(id)?;
        let sender = conn.sender()?;
        conn.target(request);
        Some(sender)
    }

    /// A picked instance could not take a call: out of rotation at once (so
    /// a retry does not pick it again), and the driver checks whether its
    /// connector has meanwhile brought it back.
    pub(super) fn unusable(&self, id: &str) {
        self.shared.balancer.set_health(id, Health::NotServing);
        let generation = self.read_conns().get(id).map(|c| c.generation);
        if let Some(generation) = generation {
            let _ = self.shared.notices.send(Notice {
                id: id.to_string(),
                generation,
                kind: NoticeKind::Resync,
            });
        }
    }

    fn read_conns(&self) -> RwLockReadGuard<'_, HashMap<String, Conn>> {
        self.shared.read_conns()
    }
}

// === impl Shared ===

impl Shared {
    fn read_conns(&self) -> RwLockReadGuard<'_, HashMap<String, Conn>> {
        self.conns.read().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Driver ===

impl Driver {
    /// Follows the service and the connectors until the channel is dropped
    /// (the task is aborted then) or the backend shuts down.
    pub(super) async fn run(
        mut self,
        discovery: Arc<dyn Discovery>,
        service: String,
        protection: Protection,
    ) {
        let mut resolution = Resolution::start(&*discovery, &service, protection).await;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                update = resolution.next() => match update {
                    Some(update) => self.apply(update),
                    None => return,
                },
                n = self.notices.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    self.record(batch.drain(..));
                }
            }
        }
    }

    /// Brings the balancer and the connections in line with a new snapshot.
    fn apply(&mut self, update: Update) {
        self.shared.balancer.update(update.snapshot.clone());
        if self.unsettled.is_none() && !update.snapshot.instances().is_empty() {
            let ids = update.snapshot.instances().iter().map(|i| i.id.clone());
            self.unsettled = Some(ids.collect());
        }
        let mut retired = Vec::new();
        {
            let shared = self.shared.clone();
            let mut conns = shared.conns.write().unwrap_or_else(PoisonError::into_inner);
            for change in &update.changes {
                match change {
                    Change::Add(instance) | Change::Update(instance) => {
                        retired.extend(self.connect(&mut conns, instance));
                    }
                    Change::Remove(instance) => {
                        retired.extend(conns.remove(&instance.id));
                        self.forget(&instance.id);
                    }
                }
            }
        }
        // Outside the lock: retiring wakes the connector tasks.
        retired.into_iter().for_each(Conn::retire);
        self.publish();
    }

    /// Connects a new instance, or one whose address changed; the
    /// connection it replaces, if any.
    fn connect(&mut self, conns: &mut HashMap<String, Conn>, instance: &Instance) -> Option<Conn> {
        let id = &instance.id;
        let address = dial_address(instance);
        if conns
            .get(id)
            .is_some_and(|c| Some(&c.address) == address.as_ref())
        {
            return None;
        }
        let old = conns.remove(id);
        self.untrack(id);
        if old.is_some() {
            // New instances start out of rotation; a new address joins it
            // again once connected.
            self.shared.balancer.set_health(id, Health::NotServing);
        }
        let spawned = address
            .ok_or_else(|| "no endpoint".to_string())
            .and_then(|address| {
                let (settings, notices) =
                    (self.shared.settings.clone(), self.shared.notices.clone());
                Conn::spawn(id.clone(), address, settings, notices).map_err(|e| e.to_string())
            });
        match spawned {
            Ok(conn) => {
                let tracked = Tracked {
                    generation: conn.generation,
                    usable: false,
                };
                self.endpoints.insert(id.clone(), tracked);
                conns.insert(id.clone(), conn);
            }
            Err(error) => {
                tracing::warn!(%id, %error, "cannot connect to the instance");
                self.settle(id);
            }
        }
        old
    }

    /// Drops what the pool knew of an instance that left.
    fn forget(&mut self, id: &str) {
        self.untrack(id);
        self.settle(id);
    }

    fn untrack(&mut self, id: &str) {
        if self.endpoints.remove(id).is_some_and(|t| t.usable) {
            self.usable -= 1;
        }
    }

    fn settle(&mut self, id: &str) {
        if let Some(unsettled) = &mut self.unsettled {
            unsettled.remove(id);
        }
    }

    /// Applies a batch of connector notices: one balancer change for all.
    fn record(&mut self, notices: impl Iterator<Item = Notice>) {
        let mut verdicts: Vec<(String, Health)> = Vec::new();
        {
            let shared = self.shared.clone();
            let conns = shared.read_conns();
            for notice in notices {
                let Some(tracked) = self.endpoints.get_mut(&notice.id) else {
                    continue;
                };
                if tracked.generation != notice.generation {
                    continue; // from a connection since replaced
                }
                let was = tracked.usable;
                if notice.kind == NoticeKind::Resync {
                    // The call path took it out of rotation already.
                    tracked.usable = false;
                }
                let usable = conns.get(&notice.id).is_some_and(Conn::usable);
                if usable != tracked.usable {
                    tracked.usable = usable;
                    verdicts.push((notice.id.clone(), health(usable)));
                }
                self.usable = self.usable + usize::from(tracked.usable) - usize::from(was);
                if notice.kind == NoticeKind::Settled {
                    self.settle(&notice.id);
                }
            }
        }
        let verdicts = verdicts.iter().map(|(id, h)| (id.as_str(), *h));
        self.shared.balancer.set_healths(verdicts);
        self.publish();
    }

    /// Publishes the readiness, if it changed.
    fn publish(&self) {
        let settled = self.unsettled.as_ref().is_some_and(HashSet::is_empty);
        let usable = settled && self.usable > 0;
        self.shared.ready.send_if_modified(|ready| {
            if ready.usable == usable {
                return false;
            }
            ready.usable = usable;
            if !usable {
                ready.since = Instant::now();
            }
            true
        });
    }
}

fn health(usable: bool) -> Health {
    if usable {
        Health::Serving
    } else {
        Health::NotServing
    }
}

/// The address the channel dials for an instance.
fn dial_address(instance: &Instance) -> Option<String> {
    SCHEMES
        .iter()
        .find_map(|scheme| instance.endpoint(scheme))
        .or_else(|| instance.endpoints.first())
        .map(|e| e.address())
}
