//! One pickable endpoint: an instance of the current snapshot with its
//! weight and its load state.

use std::sync::Arc;

use crate::{
    Instance,
    balance::{balancer::Feedback, load::Load},
};

/// An instance as the policies see it. Cheap to hold: it shares the
/// record with the snapshot it came from.
#[derive(Debug)]
pub struct Candidate {
    instance: Arc<Instance>,
    weight: u32,
    pub(crate) load: Arc<Load>,
    pub(crate) feedback: Arc<Feedback>,
}

// === impl Candidate ===

impl Candidate {
    pub(crate) fn new(
        instance: Arc<Instance>,
        weight: u32,
        load: Arc<Load>,
        feedback: Arc<Feedback>,
    ) -> Self {
        Self {
            instance,
            weight,
            load,
            feedback,
        }
    }

    /// The instance record.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.instance().id
    }

    /// The balancing weight: the instance's `weight` metadata, or
    /// [`DEFAULT_WEIGHT`](crate::instance::DEFAULT_WEIGHT) when absent or
    /// invalid.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Requests picked on it and not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.load.in_flight()
    }
}
