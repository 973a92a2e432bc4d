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

use std::fmt;

use tokio::sync::watch;

use crate::{BoxFuture, Discovery, Error, Instance};

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
