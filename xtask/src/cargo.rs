//! Running cargo steps from the workspace root.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::{Failure, Outcome};

/// One cargo invocation, e.g. `cargo clippy --workspace --all-targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The arguments after `cargo`.
    pub args: Vec<OsString>,
}

impl Step {
    fn new(args: &[&str], extra: &[OsString]) -> Self {
        let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
        all.extend(extra.iter().cloned());
        Step { args: all }
    }

    /// The step as a shell-like line, for headers and error messages.
    pub fn display(&self) -> String {
        let mut line = String::from("cargo");
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }
}

/// The steps of `cargo xtask test`, after the tools are ensured.
pub fn test_steps(extra: &[OsString]) -> Vec<Step> {
    vec![
        Step::new(&["fmt", "--all", "--", "--check"], &[]),
        Step::new(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        ),
        Step::new(&["test", "--workspace"], extra),
    ]
}

/// The step of `cargo xtask demo`.
pub fn demo_step(extra: &[OsString]) -> Step {
    Step::new(
        &[
            "run",
            "--quiet",
            "-p",
            "lodestar-cli",
            "--bin",
            "lodestar",
            "--",
            "demo",
        ],
        extra,
    )
}

/// Prints a step header: `xtask: ==> <what>`.
pub fn header(what: &str) {
    println!("xtask: ==> {what}");
}

/// The cargo binary: `$CARGO` (set by cargo when it runs xtask), else `cargo`.
pub fn cargo_binary() -> OsString {
    std::env::var_os("CARGO")
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| OsString::from("cargo"))
}

/// The workspace root: the parent of this package's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Runs the steps in order from the workspace root, with `env` added to each
/// child's environment. Stops at the first failing step and returns its exit
/// code.
pub fn run_steps(steps: &[Step], env: &[(&'static str, PathBuf)]) -> Outcome {
    let cargo = cargo_binary();
    let root = workspace_root();
    for step in steps {
        let line = step.display();
        header(&line);
        let status = Command::new(&cargo)
            .args(&step.args)
            .current_dir(&root)
            .envs(env.iter().map(|(k, v)| (OsStr::new(k), v.as_os_str())))
            .status()
            .map_err(|e| {
                Failure::new(format!(
                    "could not start `{line}` (cargo binary {:?}): {e}",
                    cargo
                ))
            })?;
        if !status.success() {
            let code = exit_code(status);
            return Err(Failure {
                code,
                message: Some(format!("`{line}` failed (exit code {code})")),
            });
        }
    }
    Ok(())
}

/// The exit code to leave with after a child failed with `status`: its own
/// code, or 128 + the signal number if it was killed, never 0.
pub fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return clamp_code(code);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return clamp_code(128 + signal);
        }
    }
    1
}

/// Maps any integer to a non-zero process exit code.
fn clamp_code(code: i32) -> u8 {
    match u8::try_from(code) {
        Ok(0) | Err(_) => 1,
        Ok(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_steps_are_fmt_clippy_test_in_order() {
        let steps: Vec<String> = test_steps(&[]).iter().map(Step::display).collect();
        assert_eq!(
            steps,
            [
                "cargo fmt --all -- --check",
                "cargo clippy --workspace --all-targets -- -D warnings",
                "cargo test --workspace",
            ]
        );
    }

    #[test]
    fn extra_args_go_to_cargo_test_only() {
        let extra = vec![OsString::from("--"), OsString::from("--nocapture")];
        let steps = test_steps(&extra);
        assert_eq!(steps[0].display(), "cargo fmt --all -- --check");
        assert_eq!(steps[2].display(), "cargo test --workspace -- --nocapture");
    }

    #[test]
    fn demo_step_passes_args_through() {
        let extra = vec![OsString::from("--seed"), OsString::from("7")];
        assert_eq!(
            demo_step(&extra).display(),
            "cargo run --quiet -p lodestar-cli --bin lodestar -- demo --seed 7"
        );
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("xtask").join("Cargo.toml").is_file());
    }

    #[test]
    fn exit_codes_are_never_zero() {
        assert_eq!(clamp_code(0), 1);
        assert_eq!(clamp_code(101), 101);
        assert_eq!(clamp_code(-1), 1);
        assert_eq!(clamp_code(300), 1);
    }

    #[cfg(unix)]
    #[test]
    fn exit_code_of_real_children() {
        let status = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
        assert_eq!(exit_code(status), 3);
        let status = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        assert_eq!(exit_code(status), 137);
    }
}
