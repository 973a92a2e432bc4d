//! Who consumes a service: a client that watches a service records itself as
//! a [`Subscriber`] for as long as it watches, so anyone can list them
//! (`lodestar subscribers S`).
//!
//! # Examples
//!
//! ```
//! use lodestar::{Discovery, Subscriber, memory::MemoryRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lodestar::Error> {
//! let registry = MemoryRegistry::new();
//! let me = Subscriber::this_process("echo");
//! let subscription = registry.subscribe(me.clone()).await?;
//! assert_eq!(registry.subscribers("echo").await?, [me]);
//! drop(subscription);
//! assert!(registry.subscribers("echo").await?.is_empty());
//! # Ok(())
//! # }
//! ```

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{BoxFuture, Error, Registration, registry::Lease};

/// A client consuming a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscriber {
    /// The service consumed.
    pub service: String,
    /// Unique per subscription: `<host>-<pid>-<n>`.
    pub client_id: String,
    /// The host the client runs on.
    pub host: String,
    /// The client's process id.
    pub pid: u32,
    /// When it subscribed, in seconds since the Unix epoch.
    pub since: u64,
}

/// A live subscription; dropping it (or [`Subscription::cancel`]) removes
/// the subscriber record.
#[derive(Debug)]
pub struct Subscription {
    lease: Option<Box<dyn Lease>>,
}

// === impl Subscriber ===

impl Subscriber {
    /// A subscriber record for this process.
    pub fn this_process(service: impl Into<String>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let host = hostname();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            service: service.into(),
            client_id: format!("{host}-{pid}-{n}"),
            host,
            pid,
            since,
        }
    }

    /// The JSON form stored in registries.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidInstance(format!("not a subscriber record: {e}")))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace(['/', ' '], "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

// === impl Subscription ===

impl Subscription {
    /// Wraps a backend lease that keeps the record alive.
    pub fn new(lease: Box<dyn Lease>) -> Self {
        Self { lease: Some(lease) }
    }

    /// A subscription kept as a registration, for backends that store
    /// subscribers as records of their own.
    pub fn from_registration(registration: Registration) -> Self {
        Self::new(Box::new(Held(registration)))
    }

    /// A subscription the backend does not record anywhere.
    pub fn unrecorded() -> Self {
        Self { lease: None }
    }

    /// Removes the subscriber record now.
    pub async fn cancel(mut self) -> Result<(), Error> {
        match self.lease.take() {
            Some(lease) => lease.deregister().await,
            None => Ok(()),
        }
    }
}

/// A registration standing for a subscriber record.
#[derive(Debug)]
struct Held(Registration);

impl Lease for Held {
    fn deregister(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(self.0.deregister())
    }
}
