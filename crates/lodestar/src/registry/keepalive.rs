//! The keep-alive driver: the one loop that keeps registrations alive, for
//! every backend.
//!
//! A registration is kept alive by a loop that every backend would otherwise
//! write again: keep alive on a schedule; when that fails, *resume* on the
//! same lease if the failure was transient, or *re-establish* everything if
//! the registry says the lease is gone; retry with [`Backoff`] for as long
//! as it takes; and tell every handle where it stands. [`Driver`] is that
//! loop, written once. A backend implements [`Backend`], which is only its
//! requests (grant and put, keep alive, resume), each failing with a
//! [`Failure`] that says whether the registry still has the lease.
//!
//! The driver is a state machine:
//!
//! ```text
//!          establish ok                     keep_alive / broken fails
//!  Idle ────────────────▶ Live ──────────────────────────────────────▶ Lost
//!                          ▲  ◀── resume ok (Transient) ──────────────  │
//!                          └───── establish ok (Gone, or no lease) ─────┘
//!                                 retried with backoff until one works
//! ```
//!
//! The first attempt after a live lease fails is made at once (a broken
//! stream is usually one reconnect away); later ones back off. It publishes
//! [`RegistrationState`] to every handle it serves ([`Driver::serve`]) and
//! logs each real change once: a warning when the registration is lost, an
//! info line when it is back.
//!
//! # Using it
//!
//! A backend with nothing else to do spawns [`Driver::run`] after a first
//! [`Driver::establish`] whose error goes back to the caller (the built-in
//! registry's client does this, one driver per instance). A backend whose
//! task also serves commands (etcd's lease session registers and
//! deregisters records in the same task) selects on [`Driver::ready`], which
//! is cancel-safe, and hands what it returns to [`Driver::advance`]:
//!
//! ```
//! use lodestar::registry::keepalive::{Backend, Driver};
//! use tokio::sync::mpsc;
//!
//! /// A session task: keeps its records alive and serves commands.
//! async fn session<B: Backend>(mut driver: Driver<B>, mut commands: mpsc::Receiver<u64>) {
//!     loop {
//!         tokio::select! {
//!             command = commands.recv() => match command {
//!                 // Add or remove a record through `driver.backend_mut()`,
//!                 // `serve` or `release` its handle.
//!                 Some(_record) => {}
//!                 None => break,
//!             },
//!             ready = driver.ready() => driver.advance(ready).await,
//!         }
//!     }
//!     let _lease = driver.stop(); // revoke it, if the registry has leases
//! }
//! ```
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//!
//! use lodestar::{
//!     RegistrationState,
//!     backoff::Backoff,
//!     registry::keepalive::{Backend, Driver, Failure},
//! };
//!
//! /// A registry that keeps a heartbeat per instance; this one never fails.
//! struct Heartbeat;
//!
//! impl Backend for Heartbeat {
//!     type Lease = ();
//!
//!     async fn establish(&mut self) -> Result<(), Failure> {
//!         Ok(()) // register the instance
//!     }
//!
//!     async fn keep_alive(&mut self, _: &mut ()) -> Result<(), Failure> {
//!         Ok(()) // renew it; a "not found" answer is `Failure::Gone`
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lodestar::Error> {
//! let every = Duration::from_secs(10);
//! let mut driver = Driver::new(Heartbeat, every, Backoff::registration(3 * every));
//! let (state, handle) = tokio::sync::watch::channel(RegistrationState::Registered);
//! driver.serve(0, state);
//! driver.establish().await?; // the first error goes to the caller
//! let task = tokio::spawn(driver.run()); // then it never gives up
//! assert_eq!(*handle.borrow(), RegistrationState::Registered);
//! task.abort(); // dropping the driver stops it
//! # Ok(())
//! # }
//! ```

use std::{collections::BTreeMap, fmt, future::Future, mem, time::Duration};

use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};

use crate::{Error, ErrorChain, RegistrationState, backoff::Backoff};

/// Why a request to keep a registration alive failed.
#[derive(Debug)]
pub enum Failure {
    /// The registry no longer has the lease or the record (it restarted
    /// empty, or a cut outlasted the TTL): everything must be put back.
    Gone(Error),
    /// The registry could not be reached, or the keep-alive stream broke:
    /// the lease may still be alive, so resuming on it is worth a try.
    Transient(Error),
}

/// The requests a backend supplies to a [`Driver`]; see the
/// [module docs](self).
///
/// Each returns a [`Failure`] that says whether the registry still has the
/// lease; the driver decides what to do about it.
pub trait Backend: Send {
    /// What a live registration holds: etcd's lease id and keep-alive
    /// stream, or nothing for a registry renewed by plain requests.
    type Lease: Send;

    /// Puts everything in the registry from scratch (grant a lease and put
    /// every record under it; register the instance) and returns the lease.
    fn establish(&mut self) -> impl Future<Output = Result<Self::Lease, Failure>> + Send;

    /// Sends one keep-alive; the driver calls it on its schedule.
    fn keep_alive(
        &mut self,
        lease: &mut Self::Lease,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Picks keep-alives up again on the same lease after a transient
    /// failure (etcd: open a new keep-alive stream). By default, one
    /// keep-alive.
    fn resume(
        &mut self,
        lease: &mut Self::Lease,
    ) -> impl Future<Output = Result<(), Failure>> + Send {
        self.keep_alive(lease)
    }

    /// Resolves when keep-alives fail between two of them (etcd's stream
    /// says the lease expired, or ends); by default, never. Must be
    /// cancel-safe: the driver drops it whenever a keep-alive is due.
    fn broken(&mut self, lease: &mut Self::Lease) -> impl Future<Output = Failure> + Send {
        let _ = lease;
        std::future::pending()
    }
}

/// Keeps a backend's registrations alive; see the [module docs](self).
pub struct Driver<B: Backend> {
    backend: B,
    state: State<B::Lease>,
    /// Time between keep-alives.
    every: Duration,
    backoff: Backoff,
    handles: BTreeMap<u64, watch::Sender<RegistrationState>>,
    /// What the handles were last told; a new handle starts from it.
    published: RegistrationState,
}

/// What the driver has to do next: returned by [`Driver::ready`], to hand
/// to [`Driver::advance`].
#[derive(Debug)]
#[must_use = "hand it to `Driver::advance`"]
pub struct Ready(Due);

#[derive(Debug)]
enum Due {
    KeepAlive,
    Failed(Failure),
    Retry,
}

enum State<L> {
    /// Nothing to keep alive.
    Idle,
    Live {
        lease: L,
        next: Instant,
    },
    /// Keep-alives failed; the next attempt is due at `retry_at`. `lease`
    /// is the old lease if it is worth resuming.
    Lost {
        lease: Option<L>,
        retry_at: Instant,
    },
}

// === impl Failure ===

impl Failure {
    /// Whether the registry said the lease or record is gone.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Gone(_))
    }

    /// The error behind the failure.
    pub fn into_error(self) -> Error {
        match self {
            Self::Gone(e) | Self::Transient(e) => e,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gone(e) | Self::Transient(e) => f.write_str(&ErrorChain(e).to_string()),
        }
    }
}

// === impl Driver ===

impl<B: Backend> Driver<B> {
    /// A driver with nothing to keep alive yet: [`serve`](Self::serve) its
    /// handles, then [`establish`](Self::establish). It keeps alive
    /// `every` so often and retries with `backoff` (usually
    /// [`Backoff::registration`]).
    pub fn new(backend: B, every: Duration, backoff: Backoff) -> Self {
        Self {
            backend,
            state: State::Idle,
            every,
            backoff,
            handles: BTreeMap::new(),
            published: RegistrationState::Registered,
        }
    }

    /// The backend, for the records it holds.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to add or remove records.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The lease being kept alive, if one is.
    pub fn live(&self) -> Option<&B::Lease> {
        match &self.state {
            State::Live { lease, .. } => Some(lease),
            State::Idle | State::Lost { .. } => None,
        }
    }

    /// The current lease: live, or lost and to be resumed.
    pub fn lease(&self) -> Option<&B::Lease> {
        match &self.state {
            State::Live { lease, .. } => Some(lease),
            State::Lost { lease, .. } => lease.as_ref(),
            State::Idle => None,
        }
    }

    /// Whether the driver has nothing to keep alive (before the first
    /// [`establish`](Self::establish), after [`stop`](Self::stop)).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Publishes this driver's state to `state` from now on, as handle
    /// `id` (unique among the handles it serves), starting with where the
    /// registration stands now.
    pub fn serve(&mut self, id: u64, state: watch::Sender<RegistrationState>) {
        publish_to(&state, &self.published);
        self.handles.insert(id, state);
    }

    /// Tells handle `id` it is deregistered and stops publishing to it.
    pub fn release(&mut self, id: u64) {
        if let Some(state) = self.handles.remove(&id) {
            state.send_replace(RegistrationState::Deregistered);
        }
    }

    /// How many handles the driver serves.
    pub fn handles(&self) -> usize {
        self.handles.len()
    }

    /// Establishes now, whatever the state: the first registration, or one
    /// that cannot wait for the next retry. On failure the error is
    /// returned and the driver retries with backoff.
    pub async fn establish(&mut self) -> Result<(), Error> {
        match self.backend.establish().await {
            Ok(lease) => {
                self.up(lease);
                Ok(())
            }
            Err(failure) => {
                let error = failure.into_error();
                self.retry_later(None, ErrorChain(&error).to_string());
                Err(error)
            }
        }
    }

    /// Reports a failure the backend noticed outside the driver (a put
    /// under the live lease answered that the lease is gone): a live lease
    /// is lost; a lost one is re-established rather than resumed if
    /// `failure` says it is gone.
    pub fn fail(&mut self, failure: Failure) {
        match &mut self.state {
            State::Live { .. } => self.lost(failure),
            State::Lost { lease, .. } if failure.is_gone() => *lease = None,
            State::Lost { .. } | State::Idle => {}
        }
    }

    /// Stops keeping alive: tells every handle it is deregistered, goes
    /// idle and gives back the lease (live, or lost but maybe still in the
    /// registry) for the backend to revoke.
    pub fn stop(&mut self) -> Option<B::Lease> {
        for (_, state) in mem::take(&mut self.handles) {
            state.send_replace(RegistrationState::Deregistered);
        }
        self.published = RegistrationState::Registered;
        match mem::replace(&mut self.state, State::Idle) {
            State::Live { lease, .. } => Some(lease),
            State::Lost { lease, .. } => lease,
            State::Idle => None,
        }
    }

    /// Resolves when the driver has work to do: a keep-alive is due, the
    /// backend reports keep-alives [broken](Backend::broken), or a retry is
    /// due; never while idle. Cancel-safe: it only waits, so it can be a
    /// `tokio::select!` branch beside other work.
    pub async fn ready(&mut self) -> Ready {
        match &mut self.state {
            State::Live { lease, next } => tokio::select! {
                () = sleep_until(*next) => Ready(Due::KeepAlive),
                failure = self.backend.broken(lease) => Ready(Due::Failed(failure)),
            },
            State::Lost { retry_at, .. } => {
                sleep_until(*retry_at).await;
                Ready(Due::Retry)
            }
            State::Idle => std::future::pending().await,
        }
    }

    /// Does the work [`ready`](Self::ready) found: sends the keep-alive,
    /// or marks the lease lost, or makes one attempt to get it back. Not
    /// cancel-safe: run it to completion, outside a `select!` branch.
    pub async fn advance(&mut self, ready: Ready) {
        match ready.0 {
            Due::KeepAlive => self.keep_alive().await,
            Due::Failed(failure) => self.fail(failure),
            Due::Retry => self.retry().await,
        }
    }

    /// Keeps alive until the driver is dropped (abort the task running
    /// it), for backends with nothing else to do in the same task.
    pub async fn run(mut self) {
        loop {
            let ready = self.ready().await;
            self.advance(ready).await;
        }
    }

    async fn keep_alive(&mut self) {
        let State::Live { lease, next } = &mut self.state else {
            return;
        };
        // From now, not from the last due time: a slow answer does not
        // bunch up the next keep-alives.
        *next = Instant::now() + self.every;
        if let Err(failure) = self.backend.keep_alive(lease).await {
            self.lost(failure);
        }
    }

    /// A live lease failed: the first attempt to get it back is at once.
    fn lost(&mut self, failure: Failure) {
        let State::Live { lease, .. } = mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        let gone = failure.is_gone();
        let error = failure.to_string();
        tracing::warn!(gone, %error, "registration lost; putting it back");
        self.publish(RegistrationState::Retrying { attempt: 0, error });
        self.state = State::Lost {
            lease: (!gone).then_some(lease),
            retry_at: Instant::now(),
        };
    }

    /// One attempt to get back to a live lease: resume the old one if it
    /// is worth it, else (or if the registry says it is gone) establish.
    async fn retry(&mut self) {
        let State::Lost { lease, .. } = mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        if self.handles.is_empty() {
            // Nothing left to keep: the last handle went while it was lost.
            self.published = RegistrationState::Registered;
            return;
        }
        let established = match lease {
            Some(mut lease) => match self.backend.resume(&mut lease).await {
                Ok(()) => return self.up(lease),
                Err(Failure::Transient(e)) => {
                    return self.retry_later(Some(lease), ErrorChain(&e).to_string());
                }
                // Gone: put everything back within this same attempt.
                Err(Failure::Gone(_)) => self.backend.establish().await,
            },
            None => self.backend.establish().await,
        };
        match established {
            Ok(lease) => self.up(lease),
            Err(failure) => self.retry_later(None, failure.to_string()),
        }
    }

    /// A lease is live (again).
    fn up(&mut self, lease: B::Lease) {
        self.backoff.reset();
        if self.published != RegistrationState::Registered {
            tracing::info!("registration back");
        }
        self.publish(RegistrationState::Registered);
        self.state = State::Live {
            lease,
            next: Instant::now() + self.every,
        };
    }

    /// An attempt failed: the next one after the backoff delay.
    fn retry_later(&mut self, lease: Option<B::Lease>, error: String) {
        let attempt = self.backoff.attempt() + 1;
        let delay = self.backoff.next_delay();
        tracing::debug!(attempt, %error, ?delay, "registration not back yet; retrying");
        self.publish(RegistrationState::Retrying { attempt, error });
        self.state = State::Lost {
            lease,
            retry_at: Instant::now() + delay,
        };
    }

    fn publish(&mut self, state: RegistrationState) {
        for handle in self.handles.values() {
            publish_to(handle, &state);
        }
        self.published = state;
    }
}

impl<B: Backend + fmt::Debug> fmt::Debug for Driver<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Idle => "idle",
            State::Live { .. } => "live",
            State::Lost { .. } => "lost",
        };
        f.debug_struct("Driver")
            .field("backend", &self.backend)
            .field("state", &state)
            .field("every", &self.every)
            .field("handles", &self.handles.len())
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

/// Sends `state` unless the handle already has it, so subscribers wake
/// only on real changes.
fn publish_to(handle: &watch::Sender<RegistrationState>, state: &RegistrationState) {
    handle.send_if_modified(|current| {
        let changed = current != state;
        if changed {
            current.clone_from(state);
        }
        changed
    });
}

#[cfg(test)]
mod tests;
