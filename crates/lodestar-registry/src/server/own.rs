//! The node's own record: like every discovery node (`discovery/syncup.go`),
//! a lodestar node registers itself as an instance of
//! [`DISCOVERY_APPID`] with its advertised `http://host:port`, renews it
//! every renew interval, replicates it like any client's write, and cancels
//! it at shutdown. discovery's Go clients never call `/discovery/nodes`:
//! their `New()` polls that application and blocks until it has instances,
//! then uses the `http://` addresses in their zone as their node list.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Config, Node, peers::Write, store::AppKey};
use crate::wire::{DISCOVERY_APPID, Instance, STATUS_UP};

/// This node's record, and the key it is stored under.
#[derive(Clone, Debug)]
pub(crate) struct Own {
    key: AppKey,
    record: Instance,
    /// Whether the node has left: held across each renew, so a renew that
    /// finds the record gone never registers it again after the cancel.
    left: Arc<Mutex<bool>>,
}

// === impl Own ===

impl Own {
    /// The record of a node reached at `config.advertise`; `None` when it
    /// advertises nothing.
    pub(crate) fn new(config: &Config) -> Option<Self> {
        let addr = config.advertise.as_deref()?;
        let record = Instance {
            zone: config.zone.clone(),
            env: config.env.clone(),
            appid: DISCOVERY_APPID.to_string(),
            // Unique per node, unlike the machine's hostname that discovery
            // uses (two nodes on one machine would replace each other).
            hostname: addr.to_string(),
            addrs: vec![format!("http://{addr}")],
            version: env!("CARGO_PKG_VERSION").to_string(),
            status: STATUS_UP,
            ..Instance::default()
        };
        let key = AppKey {
            env: record.env.clone(),
            appid: record.appid.clone(),
        };
        Some(Self {
            key,
            record,
            left: Arc::new(Mutex::new(false)),
        })
    }

    /// Registers the record here and at the peers.
    pub(crate) fn join(&self, node: &Node) {
        match node.store.register(self.record.clone(), false) {
            Ok(stored) => node.peers.forward(&Write::Register(Box::new(stored))),
            Err(refusal) => {
                tracing::warn!(
                    ?refusal,
                    appid = DISCOVERY_APPID,
                    "could not register this node"
                );
            }
        }
    }

    /// Renews the record every `every`; registers it again when it is gone
    /// (evicted during a long pause, or cancelled by an operator).
    pub(crate) async fn keep(self, node: Arc<Node>, every: Duration) {
        let start = tokio::time::Instant::now() + every;
        let mut interval = tokio::time::interval_at(start, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let left = self.left.lock().unwrap_or_else(|p| p.into_inner());
            if *left {
                return;
            }
            match node.store.renew(&self.key, &self.record.hostname, None) {
                Ok(dirty) => node.peers.forward(&Write::Renew {
                    key: self.key.clone(),
                    hostname: self.record.hostname.clone(),
                    dirty,
                }),
                Err(_) => {
                    tracing::info!(
                        appid = DISCOVERY_APPID,
                        "this node's record was gone; registering it again"
                    );
                    self.join(&node);
                }
            }
        }
    }

    /// Cancels the record here and at the peers, for good.
    pub(crate) fn leave(&self, node: &Node) {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        *left = true;
        let hostname = &self.record.hostname;
        if let Ok(dirty) = node.store.cancel(&self.key, hostname, None) {
            node.peers.forward(&Write::Cancel {
                key: self.key.clone(),
                hostname: hostname.clone(),
                dirty,
            });
        }
    }
}
