//! The table the demo ends with: each step's promise, what was measured,
//! and whether the promise held. The exit status is 0 only if every promise
//! held.

use crate::output::{outln, table};

/// What one step promised and measured.
#[derive(Clone, Debug)]
pub(super) struct Outcome {
    /// The step's short name.
    pub(super) step: &'static str,
    /// What the step promised, in words.
    pub(super) promise: String,
    /// What it measured.
    pub(super) measured: String,
    /// Whether the promise held.
    pub(super) held: bool,
}

// === impl Outcome ===

impl Outcome {
    /// The outcome's one line, as the event log shows it.
    pub(super) fn line(&self) -> String {
        let verdict = if self.held { "held" } else { "BROKEN" };
        format!("   => {}: {} [{verdict}]", self.step, self.measured)
    }
}

/// Prints the summary table; whether every promise held.
pub(super) fn print(outcomes: &[Outcome]) -> bool {
    let mut rows = vec![vec![
        "STEP".to_string(),
        "PROMISE".to_string(),
        "MEASURED".to_string(),
        "HELD".to_string(),
    ]];
    for outcome in outcomes {
        rows.push(vec![
            outcome.step.to_string(),
            outcome.promise.clone(),
            outcome.measured.clone(),
            if outcome.held { "yes" } else { "NO" }.to_string(),
        ]);
    }
    outln!("== summary ==");
    for line in table(&rows).lines() {
        outln!("{line}");
    }
    let held = outcomes.iter().all(|o| o.held);
    let count = outcomes.iter().filter(|o| o.held).count();
    outln!(
        "== {count} of {} promises held{} ==",
        outcomes.len(),
        if held { "" } else { ": exit 1" }
    );
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_broken_promise_fails_the_run() {
        let held = |held| Outcome {
            step: "pins and lanes",
            promise: "exact".into(),
            measured: "130/130".into(),
            held,
        };
        assert!(print(&[held(true), held(true)]));
        assert!(!print(&[held(true), held(false)]));
        assert!(print(&[]));
    }

    #[test]
    fn a_broken_promise_says_so() {
        let outcome = Outcome {
            step: "rolling restart",
            promise: "0 failed calls".into(),
            measured: "2 failed".into(),
            held: false,
        };
        assert_eq!(outcome.line(), "   => rolling restart: 2 failed [BROKEN]");
    }
}
