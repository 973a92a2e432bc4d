//! An in-process registry: both traits over a map in memory.
//!
//! For unit tests and single-process demos: every clone of a
//! [`MemoryRegistry`] shares one map, and nothing outside the process can see
//! it. Registrations never lose their lease here, so their state stays
//! [`RegistrationState::Registered`] until they are deregistered.
//!
//! # Examples
//!
//! ```
//! use lodestar::{memory::MemoryRegistry, Discovery, Instance, Registrar};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lodestar::Error> {
//! let registry = MemoryRegistry::new();
//! let a = registry
//!     .register(Instance::new("echo", "a").with_endpoint("grpc://127.0.0.1:1".parse()?))
//!     .await?;
//! assert_eq!(registry.get("echo").await?.len(), 1);
//! drop(a); // dropping the handle removes the record too
//! assert!(registry.get("echo").await?.is_empty());
//! # Ok(())
//! # }
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, Weak},
};

use tokio::sync::watch;

use crate::{
    BoxFuture, Discovery, Error, Instance, Override, Registrar, Registration, RegistrationState,
    Snapshot, Subscriber, Subscription, Watch, discovery::Instances, registry::Lease,
};

/// How long a live owner takes to put back a record an operator removed.
const OWNER_NOTICES: std::time::Duration = std::time::Duration::from_millis(50);

/// An in-process registry; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct MemoryRegistry {
    shared: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    revision: u64,
    next_owner: u64,
    /// owner token -> the record of a live registration, so that a record an
    /// operator removed comes back, as a live owner puts it back on the
    /// other backends.
    live: HashMap<u64, Instance>,
    services: BTreeMap<String, Service>,
    watchers: HashMap<String, watch::Sender<Arc<Snapshot>>>,
    /// service -> client id -> subscriber
    subscribers: BTreeMap<String, BTreeMap<String, Subscriber>>,
    /// service -> id -> operator override; kept apart from the records so
    /// it outlives re-registrations until cleared.
    overrides: HashMap<String, HashMap<String, Override>>,
}

/// One service's records.
#[derive(Debug, Default)]
struct Service {
    /// The records with any override applied, in the persistent map
    /// snapshots share.
    instances: Instances,
    /// id -> the owner's record as registered (without override).
    records: HashMap<String, Instance>,
    /// id -> owner token of the registration that wrote it.
    owners: HashMap<String, u64>,
}

/// The record of one memory subscription.
#[derive(Debug)]
struct MemorySubscription {
    registry: Weak<Mutex<State>>,
    service: String,
    client_id: String,
}

/// The lease of one memory registration.
#[derive(Debug)]
struct MemoryLease {
    registry: Weak<Mutex<State>>,
    service: String,
    id: String,
    owner: u64,
    state: watch::Sender<RegistrationState>,
}

// === impl MemoryRegistry ===

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// A live owner notices a record an operator removed and puts it back,
    /// shortly, as a keep-alive would on the other backends.
    fn put_back_later(&self, owner: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            tokio::time::sleep(OWNER_NOTICES).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut state = lock(&shared);
            if let Some(instance) = state.live.get(&owner).cloned() {
                state.insert(instance, owner);
            }
        });
    }
}

/// A poisoned lock only means a panic elsewhere mid-update; the maps are
/// still consistent enough to serve, so carry on rather than panic again.
fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registrar for MemoryRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, Error>> {
        Box::pin(async move {
            instance.validate()?;
            let owner = {
                let mut state = self.lock();
                state.next_owner += 1;
                let owner = state.next_owner;
                state.live.insert(owner, instance.clone());
                state.insert(instance.clone(), owner);
                owner
            };
            let (tx, rx) = watch::channel(RegistrationState::Registered);
            let lease = MemoryLease {
                registry: Arc::downgrade(&self.shared),
                service: instance.service.clone(),
                id: instance.id.clone(),
                owner,
                state: tx,
            };
            Ok(Registration::new(instance, rx, Box::new(lease)))
        })
    }

    fn deregister(&self, service: &str, id: &str) -> BoxFuture<'_, Result<bool, Error>> {
        let mut state = self.lock();
        let owner = state
            .services
            .get(service)
            .and_then(|s| s.owners.get(id).copied());
        let removed = state.remove(service, id, None);
        drop(state);
        if let Some(owner) = owner {
            self.put_back_later(owner);
        }
        Box::pin(async move { Ok(removed) })
    }

    fn set(&self, service: &str, id: &str, change: Override) -> BoxFuture<'_, Result<bool, Error>> {
        let result = change
            .validate()
            .map(|()| self.lock().set(service, id, change));
        Box::pin(async move { result })
    }

    fn clear(&self, service: &str, id: &str) -> BoxFuture<'_, Result<bool, Error>> {
        let cleared = self.lock().clear(service, id);
        Box::pin(async move { Ok(cleared) })
    }
}

impl Discovery for MemoryRegistry {
    fn watch(&self, service: &str) -> BoxFuture<'_, Result<Watch, Error>> {
        let rx = {
            let mut state = self.lock();
            let snapshot = state.snapshot(service);
            let tx = state
                .watchers
                .entry(service.to_string())
                .or_insert_with(|| watch::channel(snapshot).0);
            tx.subscribe()
        };
        Box::pin(async move { Ok(Watch::new(rx, None)) })
    }

    fn get(&self, service: &str) -> BoxFuture<'_, Result<Snapshot, Error>> {
        let snapshot = Snapshot::clone(&self.lock().snapshot(service));
        Box::pin(async move { Ok(snapshot) })
    }

    fn subscribe(&self, subscriber: Subscriber) -> BoxFuture<'_, Result<Subscription, Error>> {
        let lease = MemorySubscription {
            registry: Arc::downgrade(&self.shared),
            service: subscriber.service.clone(),
            client_id: subscriber.client_id.clone(),
        };
        self.lock()
            .subscribers
            .entry(subscriber.service.clone())
            .or_default()
            .insert(subscriber.client_id.clone(), subscriber);
        Box::pin(async move { Ok(Subscription::new(Box::new(lease))) })
    }

    fn subscribers(&self, service: &str) -> BoxFuture<'_, Result<Vec<Subscriber>, Error>> {
        let subscribers = self
            .lock()
            .subscribers
            .get(service)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        Box::pin(async move { Ok(subscribers) })
    }

    fn services(&self) -> BoxFuture<'_, Result<BTreeMap<String, usize>, Error>> {
        let services = self
            .lock()
            .services
            .iter()
            .map(|(name, service)| (name.clone(), service.instances.len()))
            .collect();
        Box::pin(async move { Ok(services) })
    }
}

// === impl State ===

impl State {
    fn snapshot(&self, service: &str) -> Arc<Snapshot> {
        let instances = self
            .services
            .get(service)
            .map(|s| s.instances.clone())
            .unwrap_or_default();
        Arc::new(Snapshot::from_instances(
            service,
            self.revision,
            instances,
            0,
        ))
    }

    fn insert(&mut self, instance: Instance, owner: u64) {
        let name = instance.service.clone();
        let applied = self.applied(&instance);
        let service = self.services.entry(name.clone()).or_default();
        service.owners.insert(instance.id.clone(), owner);
        service.records.insert(instance.id.clone(), instance);
        service.instances.insert(Arc::new(applied));
        self.changed(&name);
    }

    /// The owner's record with the override in force, if any.
    fn applied(&self, record: &Instance) -> Instance {
        let mut instance = record.clone();
        if let Some(o) = self
            .overrides
            .get(&record.service)
            .and_then(|s| s.get(&record.id))
        {
            o.apply(&mut instance);
        }
        instance
    }

    /// Merges `change` into the override of a registered instance; false
    /// (nothing kept) if there is no such instance.
    fn set(&mut self, service: &str, id: &str, change: Override) -> bool {
        if !self
            .services
            .get(service)
            .is_some_and(|s| s.records.contains_key(id))
        {
            return false;
        }
        self.overrides
            .entry(service.to_string())
            .or_default()
            .entry(id.to_string())
            .or_default()
            .merge(change);
        self.reapply(service, id);
        true
    }

    /// Drops the override of `service`/`id`; false if there was none.
    fn clear(&mut self, service: &str, id: &str) -> bool {
        let Some(overrides) = self.overrides.get_mut(service) else {
            return false;
        };
        let cleared = overrides.remove(id).is_some();
        if overrides.is_empty() {
            self.overrides.remove(service);
        }
        if cleared {
            self.reapply(service, id);
        }
        cleared
    }

    /// Puts the record of `service`/`id` back with the override in force.
    fn reapply(&mut self, service: &str, id: &str) {
        let Some(record) = self.services.get(service).and_then(|s| s.records.get(id)) else {
            return;
        };
        let applied = Arc::new(self.applied(record));
        if let Some(entry) = self.services.get_mut(service) {
            entry.instances.insert(applied);
        }
        self.changed(service);
    }

    /// Removes `service`/`id` if it is there and, when `owner` is given, was
    /// written by that owner (a later registration of the same id is not
    /// removed by an older handle).
    fn remove(&mut self, service: &str, id: &str, owner: Option<u64>) -> bool {
        let Some(entry) = self.services.get_mut(service) else {
            return false;
        };
        let owned = entry
            .owners
            .get(id)
            .is_some_and(|o| owner.is_none_or(|owner| owner == *o));
        if !owned {
            return false;
        }
        entry.owners.remove(id);
        entry.records.remove(id);
        entry.instances.remove(id);
        if entry.instances.is_empty() {
            self.services.remove(service);
        }
        self.changed(service);
        true
    }

    fn changed(&mut self, service: &str) {
        self.revision += 1;
        let snapshot = self.snapshot(service);
        if let Some(tx) = self.watchers.get(service) {
            tx.send_replace(snapshot);
            if tx.receiver_count() == 0 {
                self.watchers.remove(service);
            }
        }
    }
}

// === impl MemoryLease ===

impl MemoryLease {
    fn remove(&self) {
        if let Some(shared) = self.registry.upgrade() {
            let mut state = lock(&shared);
            state.live.remove(&self.owner);
            state.remove(&self.service, &self.id, Some(self.owner));
        }
        self.state.send_replace(RegistrationState::Deregistered);
    }
}

impl Lease for MemoryLease {
    fn deregister(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        // Drop does the work.
        drop(self);
        Box::pin(async { Ok(()) })
    }
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        self.remove();
    }
}

// === impl MemorySubscription ===

impl Lease for MemorySubscription {
    fn deregister(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        drop(self);
        Box::pin(async { Ok(()) })
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        let Some(shared) = self.registry.upgrade() else {
            return;
        };
        let mut state = lock(&shared);
        if let Some(subscribers) = state.subscribers.get_mut(&self.service) {
            subscribers.remove(&self.client_id);
            if subscribers.is_empty() {
                state.subscribers.remove(&self.service);
            }
        }
    }
}

/// What every backend must do is in the conformance suite
/// (`tests/conformance.rs`); these are the memory backend's own.
#[cfg(test)]
mod tests {
    // What every backend must do is in the conformance suite
    // (tests/conformance.rs); these are the memory backend's own.

    use super::*;

    fn inst(id: &str) -> Instance {
        Instance::new("echo", id).with_endpoint("grpc://127.0.0.1:1".parse().unwrap())
    }

    #[tokio::test]
    async fn an_old_handle_does_not_remove_a_newer_registration() {
        let r = MemoryRegistry::new();
        let old = r.register(inst("a")).await.unwrap();
        let new = r.register(inst("a").with_version("v2")).await.unwrap();
        drop(old);
        let snap = r.get("echo").await.unwrap();
        assert_eq!(snap.instances().iter().next().unwrap().version, "v2");
        drop(new);
        assert!(r.get("echo").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_override_is_merged_into_snapshots_and_outlives_the_owner() {
        let r = MemoryRegistry::new();
        let a = r
            .register(inst("a").with_metadata("weight", "10"))
            .await
            .unwrap();
        let mut watch = r.watch("echo").await.unwrap();
        let change = Override::new().with_status(crate::Status::Down);
        assert!(r.set("echo", "a", change).await.unwrap());
        let got = |s: &Snapshot| s.instance("a").cloned();
        let a_now = got(&watch.next().await.unwrap()).unwrap();
        assert!(a_now.is_down());
        assert_eq!(a_now.weight(), Ok(10), "the owner's weight stays");
        // A second set merges over the first.
        assert!(
            r.set("echo", "a", Override::new().with_weight(3))
                .await
                .unwrap()
        );
        let a_now = got(&r.get("echo").await.unwrap()).unwrap();
        assert!(a_now.is_down());
        assert_eq!(a_now.weight(), Ok(3));
        // The owner leaves and comes back: the override is still in force.
        drop(a);
        assert!(r.get("echo").await.unwrap().is_empty());
        let _a = r.register(inst("a")).await.unwrap();
        assert!(got(&r.get("echo").await.unwrap()).unwrap().is_down());
        assert!(r.clear("echo", "a").await.unwrap());
        assert!(!r.clear("echo", "a").await.unwrap());
        let a_now = got(&r.get("echo").await.unwrap()).unwrap();
        assert!(!a_now.is_down());
        assert_eq!(a_now.metadata.get("weight"), None);
    }

    #[tokio::test]
    async fn set_of_an_unknown_instance_keeps_nothing() {
        let r = MemoryRegistry::new();
        let down = Override::new().with_status(crate::Status::Down);
        assert!(!r.set("echo", "a", down).await.unwrap());
        let _a = r.register(inst("a")).await.unwrap();
        assert!(
            !r.get("echo")
                .await
                .unwrap()
                .instances()
                .get("a")
                .unwrap()
                .is_down()
        );
        assert!(
            r.set("echo", "a", Override::new().with_weight(0))
                .await
                .is_err()
        );
    }
}
