//! Announcing instances: the [`Registrar`] trait and the [`Registration`]
//! handle it returns.
//!
//! A registration lives as long as its handle. While it lives, the backend
//! keeps the record alive (lease keep-alive, renew heartbeats) and puts it
//! back by itself whenever the registry loses it (restart, lost data, a
//! network cut longer than the TTL), retrying with capped backoff for as long
//! as it takes. [`Registration::state`] says where it stands.
//!
//! [`Registration::deregister`] removes the record at once: call it on a
//! clean exit. Dropping the handle without it also stops the keep-alive and
//! removes the record, on a best-effort basis in the background.
//!
//! Backends keep their registrations alive with the one loop in
//! [`keepalive`], supplying only their requests.

pub mod keepalive;

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    BoxFuture, Discovery, Error, Instance,
    instance::{STATUS, WEIGHT},
};

/// Announces instances to a registry.
pub trait Registrar: Send + Sync + fmt::Debug {
    /// Validates `instance`, writes it to the registry and keeps it alive
    /// until the returned handle is deregistered or dropped.
    ///
    /// Fails if the first write fails (the registry is unreachable, the
    /// record is invalid): once it has succeeded, the registration is
    /// maintained for as long as the handle lives, whatever happens to the
    /// registry.
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, Error>>;

    /// Removes the record of `service`/`id`, whoever registered it; `false`
    /// if there was none. An owner that is still alive notices and registers
    /// again (memory: at once; etcd: at once, since the owner's lease is
    /// revoked, which takes its other records with it until it puts them
    /// back; the built-in registry: at its next renew); this is for cleaning
    /// up after a crash without waiting for the TTL. To take a live instance
    /// out of traffic, an operator sets it down instead.
    fn deregister(&self, service: &str, id: &str) -> BoxFuture<'_, Result<bool, Error>>;

    /// Applies an operator's [`Override`] to `service`/`id` without touching
    /// its owner's record: the fields it gives replace those of any override
    /// already in force, the others stay. Every client's snapshot shows the
    /// result (status under [`STATUS`], weight under
    /// [`WEIGHT`]). `false` if no such instance is
    /// registered (nothing is written then).
    fn set(&self, service: &str, id: &str, change: Override) -> BoxFuture<'_, Result<bool, Error>> {
        let _ = (service, id, change);
        Box::pin(async { Err(Error::Config("this registry does not support set".into())) })
    }

    /// Removes every operator override of `service`/`id`: the owner's record
    /// is in force again. `false` if there was none.
    fn clear(&self, service: &str, id: &str) -> BoxFuture<'_, Result<bool, Error>> {
        let _ = (service, id);
        Box::pin(async { Err(Error::Config("this registry does not support clear".into())) })
    }
}

/// An operator's change to an instance's traffic settings, kept apart from
/// the owner's record so the owner re-registering does not undo it. `None`
/// fields are left as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Override {
    /// Up or down (down: no new calls from any client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The balancing weight, a positive integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Metadata entries to set over the owner's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// An instance's traffic status, as an operator sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In traffic (the default).
    Up,
    /// Out of traffic: clients send it no new calls; calls in flight finish.
    Down,
}

// === impl Override ===

impl Override {
    /// An override that changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the status.
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Sets a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.weight.is_none() && self.metadata.is_empty()
    }

    /// Checks what every backend requires before writing it: a positive
    /// weight, non-empty metadata keys, and no `status` or `weight` in the
    /// metadata (they have their own fields).
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = Error::InvalidInstance;
        if self.weight == Some(0) {
            return Err(invalid(
                "override weight 0 is not a positive integer".into(),
            ));
        }
        for key in self.metadata.keys() {
            if key.is_empty() {
                return Err(invalid("empty metadata key in an override".into()));
            }
            if key == STATUS || key == WEIGHT {
                return Err(invalid(format!(
                    "metadata key {key:?} is set with its own option, not as metadata"
                )));
            }
        }
        Ok(())
    }

    /// Lays `newer` over this override: the fields `newer` gives replace
    /// these, the others stay (what [`Registrar::set`] does to the override
    /// in force).
    pub fn merge(&mut self, newer: Override) {
        if newer.status.is_some() {
            self.status = newer.status;
        }
        if newer.weight.is_some() {
            self.weight = newer.weight;
        }
        self.metadata.extend(newer.metadata);
    }

    /// The owner's record with this override in force: status under
    /// [`STATUS`], weight under [`WEIGHT`], metadata entries over the
    /// owner's. What every backend's snapshots show.
    pub fn apply(&self, instance: &mut Instance) {
        instance
            .metadata
            .extend(self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(status) = self.status {
            instance
                .metadata
                .insert(STATUS.into(), status.as_str().into());
        }
        if let Some(weight) = self.weight {
            instance.metadata.insert(WEIGHT.into(), weight.to_string());
        }
    }
}

// === impl Status ===

impl Status {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "up" => Ok(Status::Up),
            "down" => Ok(Status::Down),
            other => Err(Error::Config(format!(
                "status {other:?} is neither up nor down"
            ))),
        }
    }
}

/// A registry: both halves, announcing ([`Registrar`]) and following
/// ([`Discovery`]). Every backend is one; `lodestar_connect::connect` gives
/// one from a URL as an `Arc<dyn Registry>`, which coerces to
/// `Arc<dyn Discovery>` or `Arc<dyn Registrar>` where only one half is needed.
pub trait Registry: Registrar + Discovery {}

impl<T: Registrar + Discovery + ?Sized> Registry for T {}

/// Where a registration stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// The record is in the registry and being kept alive.
    Registered,
    /// The record was lost (or could not be kept alive) and the backend is
    /// putting it back, with backoff.
    Retrying {
        /// Attempts made since the registration was lost.
        attempt: u32,
        /// The last error, as text.
        error: String,
    },
    /// The handle was deregistered; nothing is kept alive any more.
    Deregistered,
}

/// The backend half of a [`Registration`].
///
/// Backends implement it on the type that owns their keep-alive machinery;
/// dropping it must stop that machinery (without blocking) and should remove
/// the record on a best-effort basis.
pub trait Lease: Send + Sync + fmt::Debug {
    /// Removes the record now and stops the keep-alive.
    fn deregister(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>>;
}

/// A live registration; see the [module docs](self).
#[derive(Debug)]
pub struct Registration {
    instance: Instance,
    state: watch::Receiver<RegistrationState>,
    lease: Option<Box<dyn Lease>>,
}

// === impl Registration ===

impl Registration {
    /// Wraps a backend lease. `state` is the backend's view of this
    /// registration; it should start as [`RegistrationState::Registered`].
    pub fn new(
        instance: Instance,
        state: watch::Receiver<RegistrationState>,
        lease: Box<dyn Lease>,
    ) -> Self {
        Self {
            instance,
            state,
            lease: Some(lease),
        }
    }

    /// The registered record.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A receiver of state changes, for logging or health reporting.
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Removes the record from the registry now and stops keeping it alive.
    pub async fn deregister(mut self) -> Result<(), Error> {
        match self.lease.take() {
            Some(lease) => lease.deregister().await,
            None => Ok(()),
        }
    }
}
