//! Following discovery: the first stage of the channel (linkerd2-proxy's
//! resolve -> pool -> balance).
//!
//! A [`Resolution`] watches the service, retrying a registry that cannot be
//! reached yet, records this client as a subscriber for as long as it
//! lives, keeps instances that vanish en masse for a while (client-side
//! self-protection, [`lodestar::discovery::protect`]), and turns each new snapshot into the [`Change`]s since the one
//! before, so the stages after it do work in proportion to what changed.

use std::sync::Arc;

use lodestar::{
    Discovery, Snapshot, Subscriber, Subscription, Watch,
    backoff::Backoff,
    discovery::{
        Change,
        protect::{self, Protection},
    },
};

/// A live view of the service, as differences.
#[derive(Debug)]
pub(super) struct Resolution {
    watch: Watch,
    last: Arc<Snapshot>,
    /// Recorded as a consumer of the service while this lives.
    _subscription: Option<Subscription>,
}

/// One step of the resolution: the new snapshot and what changed.
#[derive(Debug)]
pub(super) struct Update {
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) changes: Vec<Change>,
}

// === impl Resolution ===

impl Resolution {
    /// Starts watching `service`, retrying until the registry answers,
    /// through the self-protection guard.
    pub(super) async fn start(
        discovery: &dyn Discovery,
        service: &str,
        protection: Protection,
    ) -> Self {
        let watch = protect::protect(watch(discovery, service).await, protection);
        let subscription = match discovery.subscribe(Subscriber::this_process(service)).await {
            Ok(subscription) => Some(subscription),
            Err(error) => {
                tracing::warn!(%service, %error, "cannot record this client as a subscriber");
                None
            }
        };
        Self {
            watch,
            last: Arc::new(Snapshot::new(service, 0, Vec::new(), 0)),
            _subscription: subscription,
        }
    }

    /// The next snapshot and its changes from the last one; `None` once the
    /// backend has shut down. Cancel-safe.
    pub(super) async fn next(&mut self) -> Option<Update> {
        let snapshot = self.watch.next().await?;
        let changes = snapshot.changes(&self.last);
        self.last = snapshot.clone();
        Some(Update { snapshot, changes })
    }
}

async fn watch(discovery: &dyn Discovery, service: &str) -> Watch {
    // Reaching a registry that is not up yet, like reaching an instance.
    let mut backoff = Backoff::connect();
    loop {
        match discovery.watch(service).await {
            Ok(watch) => return watch,
            Err(error) => {
                tracing::warn!(%service, %error, "cannot watch the service yet; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
