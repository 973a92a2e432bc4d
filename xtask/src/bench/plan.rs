//! Which benches run, in what order, with which arguments.
//!
//! `--quick` scales the sizes and durations down (under 3 minutes of
//! measurement on 2 cores, builds aside); the full run uses the sizes the
//! issues named.

use std::ffi::OsString;

/// How long a run may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Scaled down: a smoke run of every figure.
    Quick,
    /// The sizes the issues named.
    Full,
}

/// One bench binary to run: `cargo bench --workspace --bench BENCH -- ARGS`
/// (bench names are unique in the workspace; `--workspace` keeps one
/// feature set, so no step rebuilds what another built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchStep {
    /// The package holding the bench.
    pub package: &'static str,
    /// The bench target's name.
    pub bench: &'static str,
    /// The arguments after `--`.
    pub args: Vec<String>,
    /// Variables set for this bench only.
    pub env: Vec<(String, String)>,
}

// === impl Mode ===

impl Mode {
    /// The mode asked for by the task's arguments (`--quick` or none); an
    /// unknown argument is an error.
    pub fn from_args(args: &[OsString]) -> Result<Mode, String> {
        match args {
            [] => Ok(Mode::Full),
            [one] if one == "--quick" => Ok(Mode::Quick),
            _ => Err(format!(
                "`cargo xtask bench` takes only `--quick`, not {:?}",
                args
            )),
        }
    }

    /// The flag that selects this mode, with its leading space (or nothing).
    pub fn flag(self) -> &'static str {
        match self {
            Mode::Quick => " --quick",
            Mode::Full => "",
        }
    }

    fn pick<'a>(self, quick: &'a str, full: &'a str) -> &'a str {
        match self {
            Mode::Quick => quick,
            Mode::Full => full,
        }
    }
}

// === impl BenchStep ===

impl BenchStep {
    fn new(package: &'static str, bench: &'static str, args: &str) -> Self {
        BenchStep {
            package,
            bench,
            args: args.split_whitespace().map(String::from).collect(),
            env: Vec::new(),
        }
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The arguments after `cargo`.
    pub fn cargo_args(&self) -> Vec<String> {
        let mut args = vec![
            "bench".to_string(),
            "--workspace".into(),
            "--bench".into(),
            self.bench.into(),
        ];
        if !self.args.is_empty() {
            args.push("--".into());
            args.extend(self.args.iter().cloned());
        }
        args
    }

    /// The step as a shell-like line.
    pub fn display(&self) -> String {
        let mut line = String::new();
        for (k, v) in &self.env {
            line.push_str(&format!("{k}={v} "));
        }
        line.push_str("cargo ");
        line.push_str(&self.cargo_args().join(" "));
        line
    }
}

/// The one cargo invocation that builds every bench of `mode`.
pub fn build_args(mode: Mode) -> Vec<String> {
    let mut args = vec!["bench".to_string(), "--workspace".into(), "--no-run".into()];
    for step in steps(mode) {
        if !args.iter().any(|a| *a == step.bench) {
            args.push("--bench".into());
            args.push(step.bench.into());
        }
    }
    args
}

/// The benches of one run, in order.
pub fn steps(mode: Mode) -> Vec<BenchStep> {
    let m = |quick, full| mode.pick(quick, full);
    vec![
        BenchStep::new(
            "lodestar",
            "balance",
            m(
                "--warm-up-time 0.1 --measurement-time 0.3 --sample-size 10 ^(pick|rebuild)/",
                "--warm-up-time 1 --measurement-time 3 ^(pick|rebuild)/",
            ),
        ),
        BenchStep::new("lodestar-etcd", "latency", m("100", "1000")),
        BenchStep::new("lodestar-registry", "registry", "wake renews fanout")
            .env("LODESTAR_BENCH_INSTANCES", m("10000", "100000"))
            .env("LODESTAR_BENCH_POLLS", m("200", "1000"))
            .env("LODESTAR_BENCH_ROUNDS", m("50", "300"))
            .env("LODESTAR_BENCH_RENEW_SECS", m("4", "10")),
        BenchStep::new(
            "lodestar-tonic",
            "channel",
            m("throughput slow rolling 1", "throughput slow rolling 3"),
        ),
        BenchStep::new("lodestar-cli", "crash", m("2", "5")),
        BenchStep::new("lodestar-cli", "removal", m("2 10", "5 30")),
        BenchStep::new("lodestar-gateway", "vs_nginx", "").env("WRK_DURATION", m("2", "5")),
        BenchStep::new("lodestar-cli", "scale", m("2000 50 20", "10000 200 50")),
        BenchStep::new("lodestar-xds", "xds", m("10 200 20", "50 1000 100")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_or_full_from_the_arguments() {
        assert_eq!(Mode::from_args(&[]), Ok(Mode::Full));
        assert_eq!(Mode::from_args(&["--quick".into()]), Ok(Mode::Quick));
        assert!(Mode::from_args(&["--fast".into()]).is_err());
    }

    #[test]
    fn steps_name_their_bench_and_scale_down_when_quick() {
        let quick = steps(Mode::Quick);
        let full = steps(Mode::Full);
        assert_eq!(quick.len(), full.len());
        assert_eq!(
            quick[1].display(),
            "cargo bench --workspace --bench latency -- 100"
        );
        assert_eq!(
            full[2].display(),
            "LODESTAR_BENCH_INSTANCES=100000 LODESTAR_BENCH_POLLS=1000 LODESTAR_BENCH_ROUNDS=300 \
             LODESTAR_BENCH_RENEW_SECS=10 cargo bench --workspace --bench registry -- wake renews fanout"
        );
        let gateway = full.iter().find(|s| s.bench == "vs_nginx").unwrap();
        assert_eq!(gateway.package, "lodestar-gateway");
        assert_eq!(
            gateway.cargo_args(),
            ["bench", "--workspace", "--bench", "vs_nginx"]
        );
        let build = build_args(Mode::Quick).join(" ");
        assert!(
            build.starts_with("bench --workspace --no-run --bench balance --bench latency"),
            "{build}"
        );
        assert_eq!(build.matches("--bench crash").count(), 1, "{build}");
    }
}
