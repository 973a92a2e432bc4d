//! What a backend gives the suite: the [`Backend`] trait, the optional
//! [`Capability`]s and how a case reports that it ran or was skipped.

use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;

use lodestar::Registry;

/// A registry backend under test: fresh clients of one registry, and the
/// faults it can inject.
///
/// Clients should use short TTLs (a few seconds), so records lost in a
/// fault come back within the suite's [`PATIENCE`](super::PATIENCE).
///
/// The fault methods have defaults that panic: a backend either implements
/// one or declares, in [`lacks`](Self::lacks), that it lacks it.
pub trait Backend: Send + Sync {
    /// A short name for reports and messages: `memory`, `etcd`, `lodestar`.
    fn name(&self) -> &str;

    /// A new client of the registry, connected (its own connections where
    /// the backend has any). Every client of one backend sees the same
    /// registry.
    fn connect(&self) -> impl Future<Output = Arc<dyn Registry>> + Send;

    /// Why this backend lacks `capability`, or `None` if it has it. The
    /// cases that need a capability it lacks are skipped with this reason.
    fn lacks(&self, capability: Capability) -> Option<&'static str> {
        let _ = capability;
        None
    }

    /// Writes a record of `service` under `key` that does not parse as an
    /// instance, the way a foreign or broken writer would
    /// ([`Capability::Garbage`]).
    fn write_garbage(&mut self, service: &str, key: &str) -> impl Future<Output = ()> + Send {
        let _ = (service, key);
        async { unimplemented(Capability::Garbage) }
    }

    /// Makes the registry unreachable, keeping its data where it keeps
    /// any ([`Capability::Outage`]).
    fn outage(&mut self) -> impl Future<Output = ()> + Send {
        async { unimplemented(Capability::Outage) }
    }

    /// Ends an [`outage`](Self::outage): the registry serves again on the
    /// same addresses, and this resolves once it does.
    fn restore(&mut self) -> impl Future<Output = ()> + Send {
        async { unimplemented(Capability::Outage) }
    }

    /// Restarts the registry on the same addresses with none of its data
    /// ([`Capability::RestartEmpty`]); resolves once it serves again.
    fn restart_empty(&mut self) -> impl Future<Output = ()> + Send {
        async { unimplemented(Capability::RestartEmpty) }
    }

    /// Stops the node the clients use (or, when the backend cannot tell
    /// which, the next one in turn), bringing back the one stopped by the
    /// previous call first, so the clients must move to another node that
    /// has the same data ([`Capability::FailOver`]).
    fn fail_over(&mut self) -> impl Future<Output = ()> + Send {
        async { unimplemented(Capability::FailOver) }
    }
}

/// What only some backends can do; the cases that need one are skipped on
/// a backend that declares lacking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// [`Backend::write_garbage`]: a record that does not parse.
    Garbage,
    /// `subscribe` and `subscribers` record and list subscribers.
    Subscribers,
    /// [`Backend::outage`] and [`Backend::restore`].
    Outage,
    /// [`Backend::restart_empty`].
    RestartEmpty,
    /// [`Backend::fail_over`]: several nodes with the same data.
    FailOver,
    /// Operator overrides kept apart from the records, so they outlive an
    /// instance's re-registration until cleared.
    LastingOverrides,
}

/// A case that did not run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The capability the case needs.
    pub capability: Capability,
    /// Why the backend lacks it, as it declared.
    pub reason: &'static str,
}

/// What a case returns: it ran (and passed: failures panic) or was skipped.
pub type Outcome = Result<(), Skipped>;

/// `Ok` if `backend` has `capability`, else the [`Skipped`] a case returns
/// with `?`.
pub fn require<B: Backend>(backend: &B, capability: Capability) -> Outcome {
    match backend.lacks(capability) {
        Some(reason) => Err(Skipped { capability, reason }),
        None => Ok(()),
    }
}

/// Prints whether `case` ran on `backend` or was skipped and why, straight
/// to stderr, past the test harness's output capture.
pub fn report<B: Backend>(case: &str, backend: &B, outcome: Outcome) {
    let line = match outcome {
        Ok(()) => format!("conformance [{}] {case}: ran\n", backend.name()),
        Err(skipped) => format!(
            "conformance [{}] {case}: SKIPPED, lacks {:?}: {}\n",
            backend.name(),
            skipped.capability,
            skipped.reason
        ),
    };
    // Not `eprintln!`: the harness would capture it for passing tests.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The default of a fault method the backend neither implements nor
/// declares lacking.
fn unimplemented(capability: Capability) {
    panic!(
        "the backend implements no {capability:?} but does not declare lacking it: \
         implement it, or return a reason from Backend::lacks"
    )
}
