//! Following one application: `fetch`, then long polls from the last
//! `latest_timestamp`, kept going through every failure.

use std::{sync::Arc, time::Duration};

use lodestar::{Error, Snapshot, Watch, backoff::Backoff};
use tokio::sync::watch;

use super::Shared;
use crate::{
    form::Form,
    wire::{Code, Fetched, STATUS_UP},
};

/// Time allowed for a poll on top of the request timeout: the server holds
/// a poll 30 s when nothing changes.
const POLL_HOLD: Duration = Duration::from_secs(35);

/// One snapshot of `service` and the timestamp to poll from. An
/// application the registry does not know is empty, at timestamp 0.
pub(super) async fn fetch(shared: &Shared, service: &str) -> Result<(Snapshot, i64), Error> {
    let query = Form::new()
        .pair("appid", service)
        .pair("env", &shared.config.env)
        .pair("status", "3")
        .finish();
    let reply = shared.get(&format!("/discovery/fetch?{query}")).await?;
    if reply.code() == Some(Code::NotFound) {
        return Ok((Snapshot::new(service, 0, Vec::new(), 0), 0));
    }
    let fetched: Fetched = shared.data(reply)?;
    Ok((snapshot(service, &fetched), fetched.latest_timestamp))
}

/// Fetches `service` and starts the task that follows it.
pub(super) async fn start(shared: Arc<Shared>, service: String) -> Result<Watch, Error> {
    let (first, latest) = fetch(&shared, &service).await?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let task = tokio::spawn(follow(shared, service, latest, tx));
    Ok(Watch::new(rx, Some(task.abort_handle())))
}

/// Only instances that take traffic (status 1) are in a snapshot; records
/// that do not map to a lodestar instance are counted as skipped.
fn snapshot(service: &str, fetched: &Fetched) -> Snapshot {
    let mut instances = Vec::new();
    let mut skipped = 0;
    for record in fetched.instances.values().flatten() {
        if record.status != STATUS_UP {
            continue;
        }
        match record.to_lodestar() {
            Ok(instance) => instances.push(instance),
            Err(e) => {
                skipped += 1;
                tracing::debug!(%service, hostname = %record.hostname, error = %e, "skipping a record");
            }
        }
    }
    let revision = u64::try_from(fetched.latest_timestamp).unwrap_or_default();
    Snapshot::new(service, revision, instances, skipped)
}

async fn follow(
    shared: Arc<Shared>,
    service: String,
    mut latest: i64,
    tx: watch::Sender<Arc<Snapshot>>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut resync = false;
    while !tx.is_closed() {
        if resync {
            match fetch(&shared, &service).await {
                Ok((snapshot, at)) => {
                    latest = at;
                    resync = false;
                    publish(&tx, snapshot);
                }
                Err(e) => {
                    tracing::warn!(%service, error = %e, "registry unreachable; keeping the last snapshot");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
        }
        let node = shared.nodes.current();
        match poll(&shared, &service, latest).await {
            Ok(Some(fetched)) => {
                latest = fetched.latest_timestamp;
                backoff.reset();
                publish(&tx, snapshot(&service, &fetched));
            }
            Ok(None) => backoff.reset(),
            Err(e) => {
                tracing::warn!(%service, error = %e, "registry poll failed; keeping the last snapshot");
                resync = true;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        // Another node's timestamps are not comparable with this one's.
        resync |= shared.nodes.current() != node;
    }
}

fn publish(tx: &watch::Sender<Arc<Snapshot>>, snapshot: Snapshot) {
    tx.send_if_modified(|current| {
        let changed = **current != snapshot;
        if changed {
            *current = Arc::new(snapshot);
        }
        changed
    });
}

/// One long poll: the application when it changed, `None` when not.
async fn poll(shared: &Shared, service: &str, latest: i64) -> Result<Option<Fetched>, Error> {
    let query = Form::new()
        .pair("appid", service)
        .pair("env", &shared.config.env)
        .pair("latest_timestamp", &latest.to_string())
        .finish();
    let path = format!("/discovery/poll?{query}");
    let timeout = shared.config.request_timeout + POLL_HOLD;
    let reply = shared.nodes.get(&path, timeout).await?;
    if reply.code() == Some(Code::NotModified) {
        return Ok(None);
    }
    shared.data(reply)
}
