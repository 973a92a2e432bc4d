//! Peer replication and warm-up.
//!
//! Every write a node accepts from a client is queued for each peer and
//! sent marked `replication=true`, so the peer applies it without
//! forwarding it again. One task per peer sends its queue in order and
//! retries a peer that is down with capped backoff; the queue is bounded, so
//! a write never waits on a peer, and what is dropped when it overflows is
//! repaired by the next renew. Conflicts resolve by dirty timestamp, as in
//! discovery: a peer with no copy or an older one answers a renew with
//! `-404` and is sent the whole instance; a peer with a newer copy answers
//! `-409` with it, and this node adopts it.
//!
//! A node with peers starts **warming up**: it pulls `fetch/all` from them
//! until one pull succeeds (or `warmup` passes), answering reads with 503
//! meanwhile, so a fresh node never serves an empty view. When every peer
//! answers that it is warming up too, the whole cluster is starting and
//! there is nothing to wait for.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use lodestar::backoff::Backoff;
use tokio::{sync::mpsc, task::JoinSet, time::Instant};

use super::{
    Config, Node,
    store::{AppKey, Store},
};
use crate::{
    form::Form,
    http::{CallError, HttpClient},
    wire::{Code, Instance, Reply},
};

/// How long one replication request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A write to replicate.
#[derive(Clone, Debug)]
pub(crate) enum Write {
    /// The whole instance, with its timestamps.
    Register(Box<Instance>),
    /// A renew, with the dirty timestamp of the copy renewed.
    Renew {
        key: AppKey,
        hostname: String,
        dirty: i64,
    },
    /// A cancel, with the dirty timestamp of the copy removed.
    Cancel {
        key: AppKey,
        hostname: String,
        dirty: i64,
    },
    /// Not a write: acknowledged once the writes queued before it are sent.
    Flush(mpsc::Sender<()>),
}

/// The queues to every peer.
#[derive(Debug)]
pub(crate) struct Peers {
    links: Vec<Link>,
}

#[derive(Debug)]
struct Link {
    addr: String,
    zone: String,
    queue: mpsc::Sender<Write>,
    up: Arc<AtomicBool>,
    dropped: AtomicU64,
}

/// One peer's replication state as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PeerStatus {
    /// Where the peer is reached.
    pub(crate) addr: String,
    /// The peer's zone.
    pub(crate) zone: String,
    /// Whether the last exchange with it succeeded.
    pub(crate) up: bool,
    /// Writes waiting to be sent to it.
    pub(crate) queued: usize,
    /// Writes dropped because its queue was full (renews repair them).
    pub(crate) dropped: u64,
}

/// The receiving ends, handed to [`spawn`].
pub(crate) struct Links(Vec<(String, Arc<AtomicBool>, mpsc::Receiver<Write>)>);

// === impl Peers ===

impl Peers {
    pub(crate) fn new(config: &Config) -> (Self, Links) {
        let mut links = Vec::new();
        let mut receivers = Vec::new();
        for (zone, addr) in config.all_peers() {
            let (queue, rx) = mpsc::channel(config.max_pending_replication.max(1));
            let up = Arc::new(AtomicBool::new(true));
            receivers.push((addr.clone(), up.clone(), rx));
            links.push(Link {
                addr,
                zone,
                queue,
                up,
                dropped: AtomicU64::new(0),
            });
        }
        (Self { links }, Links(receivers))
    }

    /// Queues `write` for every peer; never waits.
    pub(crate) fn forward(&self, write: &Write) {
        for link in &self.links {
            if link.queue.try_send(write.clone()).is_err() {
                let dropped = link.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(peer = %link.addr, dropped, "replication queue full; dropping writes (renews repair them)");
                }
            }
        }
    }

    /// Waits until every write queued so far has reached every peer, for
    /// `within` at most (a peer that is down gets them when it is back);
    /// whether they all did.
    pub(crate) async fn flush(&self, within: Duration) -> bool {
        let (done, mut acks) = mpsc::channel(self.links.len().max(1));
        let sent = async {
            for link in &self.links {
                // A closed queue (its sender gone) never acknowledges.
                let _ = link.queue.send(Write::Flush(done.clone())).await;
            }
            drop(done);
            let mut acked = 0;
            while acks.recv().await.is_some() {
                acked += 1;
            }
            acked == self.links.len()
        };
        tokio::time::timeout(within, sent).await.unwrap_or(false)
    }

    /// Each peer's replication state, for `/lodestar/status`.
    pub(crate) fn status(&self) -> Vec<PeerStatus> {
        self.links
            .iter()
            .map(|l| PeerStatus {
                addr: l.addr.clone(),
                zone: l.zone.clone(),
                up: l.up.load(Ordering::Relaxed),
                queued: l.queue.max_capacity() - l.queue.capacity(),
                dropped: l.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Each peer's address, zone and whether the last exchange succeeded.
    pub(crate) fn describe(&self) -> Vec<(String, String, bool)> {
        self.links
            .iter()
            .map(|l| (l.addr.clone(), l.zone.clone(), l.up.load(Ordering::Relaxed)))
            .collect()
    }
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Links").field(&self.0.len()).finish()
    }
}

/// Starts the replication tasks and the warm-up.
pub(crate) fn spawn(node: &Arc<Node>, links: Links, tasks: &mut JoinSet<()>) {
    // Peers are authenticated as clients are: with the node's token.
    let http = HttpClient::new(node.config.token.clone());
    for (addr, up, rx) in links.0 {
        let link = Sender {
            addr,
            up,
            store: node.store.clone(),
            http: http.clone(),
        };
        tasks.spawn(link.run(rx));
    }
    if !node.is_ready() {
        tasks.spawn(warm_up(node.clone(), http));
    }
}

/// Sends one peer's queue.
struct Sender {
    addr: String,
    up: Arc<AtomicBool>,
    store: Arc<Store>,
    http: HttpClient,
}

// === impl Sender ===

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Write>) {
        let mut backoff = Backoff::replication();
        while let Some(write) = rx.recv().await {
            // The same write until it gets through: a peer that is down
            // gets it when it is back.
            while let Err(e) = self.send(&write).await {
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(peer = %self.addr, error = %e, "peer unreachable; replication retrying");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            if !self.up.swap(true, Ordering::Relaxed) {
                tracing::info!(peer = %self.addr, "peer reachable again; replication resumed");
            }
            backoff.reset();
        }
    }

    async fn send(&self, write: &Write) -> Result<(), CallError> {
        match write {
            Write::Register(instance) => self.register(instance).await,
            Write::Renew {
                key,
                hostname,
                dirty,
            } => {
                let form = replicated(key, hostname, *dirty);
                let reply = self.post("/discovery/renew", form).await?;
                match reply.code() {
                    // The peer misses the instance or has an older copy.
                    Some(Code::NotFound) => match self.store.get(key, hostname) {
                        Some(instance) => self.register(&instance).await,
                        None => Ok(()),
                    },
                    _ => self.settle(reply),
                }
            }
            Write::Cancel {
                key,
                hostname,
                dirty,
            } => {
                let form = replicated(key, hostname, *dirty);
                let reply = self.post("/discovery/cancel", form).await?;
                self.settle(reply)
            }
            Write::Flush(done) => {
                let _ = done.try_send(());
                Ok(())
            }
        }
    }

    async fn register(&self, instance: &Instance) -> Result<(), CallError> {
        let reply = self
            .post("/discovery/register", instance.to_register_form(true))
            .await?;
        self.settle(reply)
    }

    /// Adopts a newer copy a peer answered with; other refusals are logged.
    fn settle(&self, reply: Reply) -> Result<(), CallError> {
        match reply.code() {
            Some(Code::Ok | Code::NotFound) => {}
            Some(Code::Conflict) => match serde_json::from_value::<Instance>(reply.data) {
                Ok(newer) => {
                    let _ = self.store.register(newer, true);
                }
                Err(e) => {
                    tracing::warn!(peer = %self.addr, error = %e, "peer sent a conflict without a usable instance")
                }
            },
            _ => {
                tracing::warn!(peer = %self.addr, code = reply.code, message = %reply.message, "peer refused a replicated write")
            }
        }
        Ok(())
    }

    async fn post(&self, path: &str, form: String) -> Result<Reply, CallError> {
        self.http.post(&self.addr, path, form, TIMEOUT).await
    }
}

/// Pulls every instance from a peer, until one answers or `warmup` passes;
/// then the node serves reads.
async fn warm_up(node: Arc<Node>, http: HttpClient) {
    let peers = node.config.all_peers();
    let deadline = Instant::now() + node.config.warmup;
    let mut backoff = Backoff::watch();
    loop {
        let mut all_warming = true;
        for (_, addr) in &peers {
            match pull(&http, addr, &node.store).await {
                Ok(count) => {
                    tracing::info!(peer = %addr, instances = count, "warmed up from a peer; serving reads");
                    node.set_ready();
                    return;
                }
                Err(e) => {
                    all_warming &= matches!(e, CallError::Status { status: 503, .. });
                    tracing::debug!(peer = %addr, error = %e, "warm-up pull failed");
                }
            }
        }
        if all_warming {
            // Every peer answered, and every one is starting too: the whole
            // cluster is starting, there is nothing to pull.
            tracing::info!("every peer is warming up too (a cluster start); serving reads");
            node.set_ready();
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(after = ?node.config.warmup, "no peer answered the warm-up; serving reads with what this node has");
            node.set_ready();
            return;
        }
        tokio::time::sleep(backoff.next_delay().min(deadline - now)).await;
    }
}

/// One `fetch/all` from `addr`, loaded into the store; how many instances.
async fn pull(http: &HttpClient, addr: &str, store: &Store) -> Result<usize, CallError> {
    let reply = http.get(addr, "/discovery/fetch/all", TIMEOUT).await?;
    if reply.code() != Some(Code::Ok) {
        return Err(CallError::Malformed(format!(
            "code {}: {}",
            reply.code, reply.message
        )));
    }
    let apps: std::collections::BTreeMap<String, Vec<Instance>> =
        serde_json::from_value(reply.data).map_err(|e| CallError::Malformed(e.to_string()))?;
    let mut count = 0;
    for instance in apps.into_values().flatten() {
        // Newer copies already here (written since start) win.
        if store.register(instance, true).is_ok() {
            count += 1;
        }
    }
    Ok(count)
}

/// The form of a renew or cancel forwarded to a peer.
fn replicated(key: &AppKey, hostname: &str, dirty: i64) -> String {
    Form::new()
        .pair("env", &key.env)
        .pair("appid", &key.appid)
        .pair("hostname", hostname)
        .pair("dirty_timestamp", &dirty.to_string())
        .pair("replication", "true")
        .finish()
}
