//! Where completed picks report: the balancer-wide settings and counters a
//! [`Pick`](crate::balance::Pick) needs when it completes, shared by every
//! candidate of one balancer.
//!
//! It sits below the candidates and the balancer so neither module needs the
//! other: an ejection reaches the balancer through the [`Eject`] hook.

use std::{fmt, sync::Weak};

use crate::balance::{
    clock::Clock,
    outlier::{Ejections, OutlierDetection},
};

/// What completing a pick needs besides its candidate.
#[derive(Debug)]
pub(crate) struct Feedback {
    pub(crate) clock: Clock,
    pub(crate) outlier: OutlierDetection,
    pub(crate) ejections: Ejections,
    /// Whether picks are timed (the policy reads latency).
    pub(crate) timed: bool,
    /// A pick after this long without one is a probe (clock nanoseconds).
    pub(crate) silence: u64,
    /// Told when outlier detection ejects an instance.
    pub(crate) eject: Weak<dyn Eject>,
}

/// The balancer's side of an ejection: take the instance out of rotation.
pub(crate) trait Eject: Send + Sync + fmt::Debug {
    /// Outlier detection ejected the instance `id`.
    fn ejected(&self, id: &str);
}

// === impl Feedback ===

impl Feedback {
    /// Feedback that reaches no balancer, for unit tests of the parts.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        #[derive(Debug)]
        struct Nobody;
        impl Eject for Nobody {
            fn ejected(&self, _: &str) {}
        }
        Self {
            clock: Clock::new(),
            outlier: OutlierDetection::default(),
            ejections: Ejections::default(),
            timed: true,
            silence: u64::MAX,
            eject: Weak::<Nobody>::new(),
        }
    }
}
