//! Following the registry: the service list read about once a second, a
//! watch per service, each new snapshot diffed into events.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use lodestar::{Error, Snapshot};
use tokio::time::{MissedTickBehavior, timeout};

use crate::{
    events::{self, Draft},
    state::{Service, Shared, now_ms},
};

/// The bound on one listing and on starting one watch: an unreachable
/// registry must show on the page within a few seconds, whatever the
/// backend's own timeouts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The poller: lists the services every `poll_every`, starts a watch for
/// each new one and forgets those gone.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.poll_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tick.tick().await;
        let listed = timeout(REQUEST_TIMEOUT, shared.registry.services()).await;
        let listed = listed.unwrap_or_else(|_| {
            Err(Error::Timeout {
                registry: shared.config.registry_url.clone(),
                timeout: REQUEST_TIMEOUT,
            })
        });
        match listed {
            Ok(services) => {
                reached(&shared);
                follow(&shared, &services, first);
                first = false;
            }
            Err(e) => unreached(&shared, &e),
        }
    }
}

fn reached(shared: &Shared) {
    let changed = {
        let mut inner = shared.lock();
        let reach = &mut inner.reach;
        let changed = !reach.reachable;
        if changed {
            tracing::info!("registry reachable");
        }
        reach.reachable = true;
        reach.last_ok = Some(now_ms());
        reach.error = None;
        reach.failing_since = None;
        changed
    };
    if changed {
        shared.refresh();
    }
}

fn unreached(shared: &Shared, error: &Error) {
    let message = lodestar::ErrorChain(error).to_string();
    let changed = {
        let mut inner = shared.lock();
        let reach = &mut inner.reach;
        let changed = reach.reachable || reach.error.as_deref() != Some(message.as_str());
        if reach.reachable || reach.failing_since.is_none() {
            tracing::warn!(error = %message, "registry unreachable; showing the last known state");
            reach.failing_since = Some(now_ms());
        }
        reach.reachable = false;
        reach.error = Some(message);
        changed
    };
    if changed {
        shared.refresh();
    }
}

/// Starts watches for services not followed yet; forgets followed services
/// that are not listed and whose last snapshot is empty (their leaves are
/// in the feed already).
fn follow(shared: &Arc<Shared>, services: &BTreeMap<String, usize>, first: bool) {
    let mut inner = shared.lock();
    for name in services.keys() {
        let service = inner.services.entry(name.clone()).or_default();
        if service.task.is_none() {
            let task = tokio::spawn(watch(shared.clone(), name.clone(), !first));
            service.task = Some(task.abort_handle());
        }
    }
    let gone: Vec<String> = inner
        .services
        .iter()
        .filter(|(name, s)| !services.contains_key(*name) && is_empty(s))
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        if let Some(task) = inner.services.remove(&name).and_then(|s| s.task) {
            task.abort();
        }
        inner.health.retain(|(service, _), _| *service != name);
    }
}

fn is_empty(service: &Service) -> bool {
    service.snapshot.as_ref().is_some_and(|s| s.is_empty())
}

/// Follows one service. `announce`: whether the instances of its first
/// snapshot are joins (a service that appeared after the dashboard
/// started) rather than what was already there.
async fn watch(shared: Arc<Shared>, name: String, announce: bool) {
    let mut watch = match timeout(REQUEST_TIMEOUT, shared.registry.watch(&name)).await {
        Ok(Ok(watch)) => watch,
        failed => {
            let error = match failed {
                Ok(Err(e)) => lodestar::ErrorChain(&e).to_string(),
                _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
            };
            tracing::debug!(service = %name, %error, "watch failed; retrying at the next listing");
            // The next listing starts it again.
            if let Some(service) = shared.lock().services.get_mut(&name) {
                service.task = None;
            }
            return;
        }
    };
    let empty = Arc::new(Snapshot::new(name.clone(), 0, Vec::new(), 0));
    let mut announce = announce;
    while let Some(snapshot) = watch.next().await {
        let drafts = apply(&shared, &name, snapshot, &empty, announce);
        announce = true;
        shared.record(drafts);
    }
    // The backend stopped this watch: the next listing starts another.
    if let Some(service) = shared.lock().services.get_mut(&name) {
        service.task = None;
    }
}

/// Stores a new snapshot; the events since the one before.
fn apply(
    shared: &Shared,
    name: &str,
    snapshot: Arc<Snapshot>,
    empty: &Arc<Snapshot>,
    announce: bool,
) -> Vec<Draft> {
    let mut inner = shared.lock();
    let Some(service) = inner.services.get_mut(name) else {
        return Vec::new();
    };
    let before = service.snapshot.clone().unwrap_or_else(|| empty.clone());
    let now = now_ms();
    for instance in snapshot.instances().iter() {
        service.first_seen.entry(instance.id.clone()).or_insert(now);
    }
    service
        .first_seen
        .retain(|id, _| snapshot.instance(id).is_some());
    service.snapshot = Some(snapshot.clone());
    if !announce {
        return Vec::new();
    }
    snapshot
        .changes(&before)
        .iter()
        .map(|change| events::describe(change, before.instance(&change.instance().id)))
        .collect()
}
