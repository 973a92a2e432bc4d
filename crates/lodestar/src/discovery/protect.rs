//! Client-side self-protection: a layer over a [`Watch`] that does not let a
//! mass disappearance empty the client.
//!
//! bilibili discovery and Eureka protect the registry: when renews drop
//! below a threshold they stop expiring instances, because a registry that
//! suddenly misses most renews is more likely cut off than looking at a
//! fleet that died. A client can make the same bet, whatever the backend:
//! an etcd that was frozen past the TTL revokes every lease at once when it
//! resumes; a built-in registry node that restarted answers "no instance"
//! until the next renews. Either way the instances still run and answer.
//!
//! [`protect`] follows a watch and republishes its snapshots. When an update
//! removes instances and the instances gone within the last
//! [`window`](Protection::window) would then exceed
//! [`share`](Protection::share) of those there were, the removed ones stay
//! in the published snapshots, marked [`RETAINED`]
//! (a warning is logged once per episode). A retained instance goes when:
//!
//! - the window passes (counted from its removal);
//! - the registry lists it again (it registered again): the registry's
//!   record replaces the retained one;
//! - the client's transport finds it does not answer: the balancer ejects a
//!   retained instance at its first failure, and the tonic channel takes it
//!   out of rotation when its connection drops or its gRPC health check
//!   stops saying SERVING. It then stays in the snapshots, out of rotation,
//!   until one of the two above.
//!
//! Removals that stay under the share are published at once. The share
//! bounds what the guard keeps: at least `1 - share` of the instances
//! present within the window stay in the snapshots. A share of 0 disables
//! the guard. A service's only instance leaving is a removal of all of its
//! instances, so it is retained too; a graceful shutdown (NOT_SERVING, then
//! the connection closes) takes it out of rotation at once all the same.
//!
//! It is a layer, not part of every [`Watch`]: what a watch shows is what
//! the registry holds (`lodestar watch`, the dashboard), and a client that
//! sends calls opts in (the tonic channel does by default).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lodestar::{Discovery, Instance, memory::MemoryRegistry, Registrar};
//! use lodestar::discovery::protect::{self, Protection};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lodestar::Error> {
//! let registry = MemoryRegistry::new();
//! let endpoint = "grpc://127.0.0.1:50051".parse()?;
//! let a = registry.register(Instance::new("echo", "a").with_endpoint(endpoint)).await?;
//! let watch = registry.watch("echo").await?;
//! let mut protected = protect::protect(watch, Protection::new().window(Duration::from_secs(10)));
//! assert_eq!(protected.next().await.unwrap().len(), 1);
//!
//! a.deregister().await?; // every instance gone at once: kept, marked
//! let snapshot = protected.next().await.unwrap();
//! assert!(snapshot.instance("a").unwrap().is_retained());
//! # Ok(())
//! # }
//! ```

use std::{collections::HashMap, collections::VecDeque, sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};

use crate::{Instance, Snapshot, Watch, discovery::Change, instance::RETAINED};

/// How much may vanish at once before the client keeps it; see the
/// [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct Protection {
    share: f64,
    window: Duration,
}

/// The guard's state, apart from any task so it is tested in paused time.
#[derive(Debug)]
pub struct Guard {
    protection: Protection,
    /// The last snapshot from the registry.
    truth: Arc<Snapshot>,
    /// Removals published within the window: when, how many.
    removals: VecDeque<(Instant, usize)>,
    /// Id -> the instance kept (marked) and until when.
    retained: HashMap<String, (Arc<Instance>, Instant)>,
    /// Whether this episode was warned about.
    warned: bool,
    /// Added to the registry's revision: dropping kept instances publishes
    /// a new snapshot, and revisions only grow within a watch.
    bumps: u64,
}

/// Follows `watch` and republishes its snapshots through a [`Guard`]; the
/// task ends with the last clone of the returned watch or with `watch`'s
/// backend. With a share of 0 it returns `watch` itself.
pub fn protect(watch: Watch, protection: Protection) -> Watch {
    if !protection.is_enabled() {
        return watch;
    }
    let guard = Guard::new(protection, watch.latest());
    let (tx, rx) = watch::channel(guard.snapshot());
    let task = tokio::spawn(follow(watch, guard, tx));
    Watch::new(rx, Some(task.abort_handle()))
}

async fn follow(mut watch: Watch, mut guard: Guard, tx: watch::Sender<Arc<Snapshot>>) {
    loop {
        let deadline = guard.next_deadline();
        let expire = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let changed = tokio::select! {
            next = watch.next() => match next {
                Some(snapshot) => guard.update(snapshot, Instant::now()),
                None => return,
            },
            () = expire => guard.expire(Instant::now()),
            () = tx.closed() => return,
        };
        if changed {
            tx.send_replace(guard.snapshot());
        }
    }
}

// === impl Protection ===

impl Protection {
    /// Keeps what vanishes beyond half of the instances within 30 s.
    pub fn new() -> Self {
        Self {
            share: 0.5,
            window: Duration::from_secs(30),
        }
    }

    /// No protection: every removal is published at once.
    pub fn disabled() -> Self {
        Self::new().share(0.0)
    }

    /// The share of the instances (0 to 1) that may vanish within the window
    /// before the rest is kept; 0 disables the guard, and NaN counts as 0.
    pub fn share(mut self, share: f64) -> Self {
        self.share = if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }

    /// How far back removals count, and how long a retained instance is
    /// kept at most. Two or three times the registry's TTL covers instances
    /// re-registering after a mass expiry.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Whether the guard does anything (a share above 0, a window above 0).
    pub fn is_enabled(&self) -> bool {
        self.share > 0.0 && self.share < 1.0 && !self.window.is_zero()
    }
}

impl Default for Protection {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Guard ===

impl Guard {
    /// A guard whose first truth is `first`.
    pub fn new(protection: Protection, first: Arc<Snapshot>) -> Self {
        Self {
            protection,
            truth: first,
            removals: VecDeque::new(),
            retained: HashMap::new(),
            warned: false,
            bumps: 0,
        }
    }

    /// The snapshot to publish: the registry's, plus the instances kept.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        if self.retained.is_empty() && self.bumps == 0 {
            return self.truth.clone();
        }
        let mut instances = self.truth.instances().clone();
        for (instance, _) in self.retained.values() {
            instances.insert(instance.clone());
        }
        Arc::new(Snapshot::from_instances(
            self.truth.service(),
            self.truth.revision() + self.bumps,
            instances,
            self.truth.skipped(),
        ))
    }

    /// Ids of the instances kept now.
    pub fn retained(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.retained.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Takes the registry's new snapshot; whether the published one changed.
    pub fn update(&mut self, snapshot: Arc<Snapshot>, now: Instant) -> bool {
        if Arc::ptr_eq(&snapshot, &self.truth) {
            // The first snapshot again (a watch yields the one in hand first).
            return false;
        }
        self.prune(now);
        let removed: Vec<Arc<Instance>> = snapshot
            .changes(&self.truth)
            .into_iter()
            .filter_map(|change| match change {
                Change::Remove(instance) => Some(instance),
                _ => None,
            })
            .collect();
        let before = self.truth.len();
        self.truth = snapshot;
        // Back in the registry: its record replaces the one kept.
        self.retained
            .retain(|id, _| self.truth.instance(id).is_none());
        if !removed.is_empty() {
            self.removed(removed, before, now);
        }
        self.settle();
        true
    }

    /// Drops the instances kept past the window; whether any went.
    pub fn expire(&mut self, now: Instant) -> bool {
        self.prune(now);
        let before = self.retained.len();
        self.retained.retain(|_, (_, until)| *until > now);
        let gone = before - self.retained.len();
        if gone > 0 {
            self.bumps += 1;
            tracing::info!(
                service = %self.truth.service(), released = gone,
                "self-protection window passed; dropping instances the registry no longer lists"
            );
        }
        self.settle();
        gone > 0
    }

    /// When the next retained instance is due to go.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.retained.values().map(|(_, until)| *until).min()
    }

    /// Counts `removed` against the window, keeping them if they take the
    /// share over.
    fn removed(&mut self, removed: Vec<Arc<Instance>>, before: usize, now: Instant) {
        let gone_before: usize =
            self.removals.iter().map(|(_, n)| n).sum::<usize>() + self.retained.len();
        let base = before + gone_before;
        let gone = gone_before + removed.len();
        if (gone as f64) <= self.protection.share * base as f64 {
            self.removals.push_back((now, removed.len()));
            return;
        }
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                service = %self.truth.service(), gone, of = base,
                window = ?self.protection.window,
                "self-protection: more than {:.0} % of the instances vanished from the registry \
                 at once; keeping them until they stop answering or the window passes",
                self.protection.share * 100.0
            );
        }
        let until = now + self.protection.window;
        let revision = self.truth.revision().to_string();
        for instance in removed {
            let mut kept = Instance::clone(&instance);
            kept.metadata.insert(RETAINED.to_string(), revision.clone());
            self.retained
                .insert(kept.id.clone(), (Arc::new(kept), until));
        }
    }

    /// Forgets removals older than the window.
    fn prune(&mut self, now: Instant) {
        let window = self.protection.window;
        while self
            .removals
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= window)
        {
            self.removals.pop_front();
        }
    }

    /// Ends an episode once nothing is kept.
    fn settle(&mut self) {
        if self.retained.is_empty() && self.warned {
            self.warned = false;
            tracing::info!(service = %self.truth.service(), "self-protection: nothing retained any more");
        }
    }
}

#[cfg(test)]
mod tests;
