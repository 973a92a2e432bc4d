//! The [`Policy`] trait every balancing algorithm implements, and the
//! [`Picker`] it prepares per candidate set. The built-in policies are in
//! their own modules and named by [`BuiltinPolicy`](crate::balance::BuiltinPolicy).

use std::fmt;

use crate::balance::{Candidates, Context};

/// A balancing algorithm. Object-safe, so users plug in their own as
/// `Arc<dyn Policy>`.
///
/// The balancer applies the route's filters first, then asks the policy for
/// a [`Picker`] over each distinct candidate set (built once per set and
/// change of the set, on the set's first pick), and the picker chooses per
/// request.
pub trait Policy: Send + Sync + fmt::Debug + 'static {
    /// The policy's name, as in [`BuiltinPolicy`](crate::balance::BuiltinPolicy).
    fn name(&self) -> &str;

    /// Prepares to pick among `candidates` (never empty, in instance-id
    /// order). Called again whenever the set changes.
    fn picker(&self, candidates: &Candidates) -> Box<dyn Picker>;

    /// Whether picks should be timed: the latency feeds the peak-EWMA
    /// estimate [`Context::cost`] reads, and pick times feed
    /// [`Context::force_pick`]. Policies that read neither say `false` and
    /// save a clock read per pick.
    fn observes_latency(&self) -> bool {
        false
    }
}

/// Picks one candidate per request; built by [`Policy::picker`].
pub trait Picker: Send + Sync + fmt::Debug {
    /// The index in [`Context::candidates`] of the chosen one. An index out
    /// of range is wrapped into range.
    fn pick(&self, cx: &Context<'_>) -> usize;
}
