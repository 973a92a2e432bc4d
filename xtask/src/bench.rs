//! `cargo xtask bench [--quick]`: every figure the issues named, each beside
//! its peer, and the report.
//!
//! Each bench binary prints its figures and, with `LODESTAR_BENCH_JSON` set,
//! appends them as JSON lines (`lodestar_test_support::bench::Record`). This
//! task runs the benches in order ([`plan`]), collects the lines and the
//! criterion estimates ([`collect`]), and writes `docs/BENCHMARKS.md`
//! ([`report`]), `docs/benchmarks/results.json` and the SVG charts
//! ([`svg`]), with the machine's description ([`machine`]).

mod collect;
mod machine;
mod plan;
mod report;
mod svg;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use crate::cargo::{cargo_binary, header, workspace_root};
use crate::{Failure, Outcome};

pub use plan::Mode;

/// The Go peer's source (grpc-go with etcd's naming resolver).
pub const GO_RESOLVER: &str = "bench/go/resolver/main.go";

/// Builds the Go peer in GOPATH mode from Debian's packages into
/// `target/bench-go/resolver`; the error says why it could not.
pub fn build_go_resolver(root: &Path, go: &Path) -> Result<PathBuf, String> {
    let out = root.join("target").join("bench-go").join("resolver");
    let cache = root.join("target").join("bench-go").join("cache");
    let output = Command::new(go)
        .args(["build", "-o"])
        .arg(&out)
        .arg(root.join(GO_RESOLVER))
        .env("GO111MODULE", "off")
        .env("GOPATH", crate::tools::GOCODE)
        .env("GOCACHE", &cache)
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .output()
        .map_err(|e| format!("could not run {}: {e}", go.display()))?;
    if !output.status.success() {
        return Err(format!(
            "go build {GO_RESOLVER} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(out)
}

/// Runs the benches of `mode` with `env` (the tools found), then writes the
/// report. A bench that fails is reported (in the report too) and the task
/// fails at the end, after writing what the others measured.
pub fn run(mode: Mode, env: &[(&'static str, PathBuf)], go: Result<PathBuf, String>) -> Outcome {
    let root = workspace_root();
    let records_path = root.join("target").join("bench-records.jsonl");
    let _ = std::fs::create_dir_all(root.join("target"));
    let _ = std::fs::remove_file(&records_path);
    let mut failures: Vec<String> = Vec::new();
    let go_env = match &go {
        Ok(path) => vec![("LODESTAR_GO_RESOLVER", path.clone())],
        Err(why) => {
            failures.push(format!("grpc-go peer not built: {why}"));
            Vec::new()
        }
    };
    // Build every bench first, in one cargo invocation over the workspace
    // (so features unify once and no step rebuilds), so the run's time is
    // the measurements'.
    let build = plan::build_args(mode);
    header(&format!("cargo {}", build.join(" ")));
    let status = Command::new(cargo_binary())
        .args(&build)
        .current_dir(&root)
        .envs(env.iter().map(|(k, v)| (OsStr::new(k), v.as_os_str())))
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        return Err(Failure::new(format!("`cargo {}` failed", build.join(" "))));
    }
    let started = Instant::now();
    let mut timings = Vec::new();
    for step in plan::steps(mode) {
        let line = step.display();
        header(&line);
        let step_started = Instant::now();
        let status = Command::new(cargo_binary())
            .args(step.cargo_args())
            .current_dir(&root)
            .envs(env.iter().map(|(k, v)| (OsStr::new(k), v.as_os_str())))
            .envs(go_env.iter().map(|(k, v)| (OsStr::new(k), v.as_os_str())))
            .envs(step.env.iter().map(|(k, v)| (k, v)))
            .env(collect::ENV, &records_path)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => failures.push(format!("`{line}` failed ({s})")),
            Err(e) => failures.push(format!("`{line}` could not start: {e}")),
        }
        timings.push(json!({"step": line, "seconds": step_started.elapsed().as_secs()}));
    }
    let elapsed = started.elapsed();
    let mut records = collect::read_lines(&records_path).map_err(Failure::new)?;
    records.extend(collect::criterion(&root.join("target").join("criterion")));
    let machine = machine::describe();
    let command = format!("cargo xtask bench{}", mode.flag());
    let run = json!({
        "command": command,
        "machine": machine.to_json(),
        "elapsed_s": elapsed.as_secs(),
        "steps": timings,
        "failures": failures,
        "records": records,
    });
    write_outputs(&root, &run).map_err(Failure::new)?;
    println!(
        "xtask: wrote docs/BENCHMARKS.md, docs/benchmarks/results.json and charts ({} records, {:.0?})",
        records.len(),
        elapsed
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "some benches failed (the report lists them): {}",
            failures.join("; ")
        )))
    }
}

/// Renders the report and the charts again from
/// `docs/benchmarks/results.json` (`cargo xtask bench --render`), measuring
/// nothing: for a change of layout.
pub fn render() -> Outcome {
    let root = workspace_root();
    let path = root.join("docs").join("benchmarks").join("results.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failure::new(format!("reading {}: {e}", path.display())))?;
    let run: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::new(format!("{} does not parse: {e}", path.display())))?;
    write_outputs(&root, &run).map_err(Failure::new)?;
    println!(
        "xtask: rendered docs/BENCHMARKS.md and the charts from {}",
        path.display()
    );
    Ok(())
}

/// Writes the report, the JSON and the charts of one run.
fn write_outputs(root: &Path, run: &Value) -> Result<(), String> {
    let docs = root.join("docs");
    let dir = docs.join("benchmarks");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    let pretty = serde_json::to_string_pretty(run).map_err(|e| e.to_string())?;
    write(dir.join("results.json"), pretty + "\n")?;
    let figures = report::figures(run);
    for chart in svg::charts(&figures) {
        write(dir.join(&chart.file), chart.svg)?;
    }
    write(docs.join("BENCHMARKS.md"), report::markdown(run, &figures))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grpc-go peer compiles against Debian's packages. `cargo xtask
    /// test` installs Go and them first; without them this fails, saying so.
    #[test]
    fn the_go_resolver_compiles() {
        let path = std::env::var_os("PATH");
        let go = std::env::var_os("GO")
            .map(PathBuf::from)
            .or_else(|| crate::tools::find_on_path(OsStr::new("go"), path.as_deref().unwrap_or_default()))
            .expect("Go is missing: run `cargo xtask setup` (installs golang-go, golang-google-grpc-dev, golang-etcd-server-dev)");
        for (import, package) in crate::tools::GO_LIBRARIES {
            let dir = Path::new(crate::tools::GOCODE).join("src").join(import);
            assert!(
                dir.is_dir(),
                "{import} is missing: run `cargo xtask setup` (installs {package})"
            );
        }
        let built = build_go_resolver(&workspace_root(), &go).unwrap_or_else(|e| panic!("{e}"));
        assert!(built.is_file());
    }
}
