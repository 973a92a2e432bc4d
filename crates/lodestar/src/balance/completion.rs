//! The pick guard and its completion (tower's `load/completion.rs`): a
//! [`Pick`] holds its candidate's in-flight count until the request is over,
//! then records the latency and the outcome.

use std::{fmt, sync::Arc};

use crate::{Endpoint, Instance, balance::Candidate};

/// One picked endpoint, and the guard that reports how the request went.
///
/// Call [`success`](Self::success) or [`failure`](Self::failure) when the
/// request completes. Both end the in-flight count and record the latency
/// (for policies that time requests); a failure also counts toward outlier
/// detection. Dropping the guard without either (a cancelled request)
/// records the latency but no outcome: the request occupied the endpoint,
/// but says nothing about its health.
#[must_use = "a pick reports its outcome with success() or failure()"]
pub struct Pick {
    candidate: Arc<Candidate>,
    /// Clock time of the pick; 0 if untimed.
    start: u64,
    /// Whether a successful latency replaces the estimate (a pick after a
    /// silence).
    probe: bool,
    done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Cancelled,
}

// === impl Pick ===

impl Pick {
    /// Starts a request on `candidate`; `start` is the clock time of the
    /// pick, 0 if untimed.
    pub(crate) fn start(candidate: Arc<Candidate>, start: u64, probe: bool) -> Self {
        candidate.load.start();
        Self {
            candidate,
            start,
            probe,
            done: false,
        }
    }

    /// The instance picked.
    pub fn instance(&self) -> &Instance {
        self.candidate.instance()
    }

    /// The candidate picked, with its weight and load.
    pub fn candidate(&self) -> &Candidate {
        &self.candidate
    }

    /// The picked instance's first endpoint with this scheme (`grpc`,
    /// `http`...).
    pub fn endpoint(&self, scheme: &str) -> Option<&Endpoint> {
        self.instance().endpoint(scheme)
    }

    /// The request succeeded.
    pub fn success(self) {
        self.finish(Outcome::Success);
    }

    /// The request failed in a way that blames the endpoint (connection
    /// refused, reset, `Unavailable`...): counts toward outlier detection.
    pub fn failure(self) {
        self.finish(Outcome::Failure);
    }

    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.complete(outcome);
    }

    fn complete(&self, outcome: Outcome) {
        let (candidate, feedback) = (&self.candidate, &self.candidate.feedback);
        let load = &candidate.load;
        load.finish();
        let now = if self.start != 0 || outcome == Outcome::Failure {
            feedback.clock.now()
        } else {
            0
        };
        if self.start != 0 {
            let latency = now.saturating_sub(self.start);
            // Only a served probe speaks for the endpoint now: a cancelled
            // one is a lower bound, and a fast failure is no sign of speed.
            if self.probe && outcome == Outcome::Success {
                load.reset(latency, now);
            } else {
                load.observe(latency, now);
            }
        }
        match outcome {
            Outcome::Success => feedback.outlier.on_success(load),
            Outcome::Failure => self.on_failure(now),
            Outcome::Cancelled => {}
        }
    }

    fn on_failure(&self, now: u64) {
        let feedback = &self.candidate.feedback;
        let load = &self.candidate.load;
        let instance = self.candidate.instance();
        if instance.is_retained() {
            if !feedback
                .outlier
                .on_retained_failure(load, &feedback.ejections, now)
            {
                return;
            }
            tracing::warn!(
                service = %instance.service, id = %instance.id,
                "ejecting an instance the registry no longer lists at its first failure"
            );
        } else {
            if !feedback.outlier.on_failure(load, &feedback.ejections, now) {
                return;
            }
            tracing::warn!(
                service = %instance.service, id = %instance.id,
                "ejecting an instance after consecutive failures"
            );
        }
        if let Some(balancer) = feedback.eject.upgrade() {
            balancer.ejected(&instance.id);
        }
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if !self.done {
            self.complete(Outcome::Cancelled);
        }
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("id", &self.candidate.id())
            .field("in_flight", &self.candidate.in_flight())
            .field("probe", &self.probe)
            .finish()
    }
}
