//! `lodestar demo` as a process: the quick run piped (exit 0, no control
//! codes, a summary of what was measured), on the in-process registry and
//! on etcd, and SIGINT mid-run (prompt exit, everything deregistered).

mod support;

use std::{process::Stdio, sync::Arc, time::Duration};

use lodestar::Registry;
use lodestar_test_support::{EtcdNode, eventually};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

use support::{BIN, signal};

/// A quick run takes about 15 s alone; leave room for a loaded machine.
const RUN_LIMIT: Duration = Duration::from_secs(90);

fn demo(registry: Option<&str>) -> Command {
    let mut command = Command::new(BIN);
    command.arg("demo").arg("--quick");
    match registry {
        Some(url) => command.env("LODESTAR_REGISTRY", url),
        None => command.env_remove("LODESTAR_REGISTRY"),
    };
    command
        .env_remove("LODESTAR_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(registry: Option<&str>) -> Run {
    let output = tokio::time::timeout(RUN_LIMIT, demo(registry).output())
        .await
        .expect("the quick demo finished in time")
        .expect("lodestar ran");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The summary row of `step`, split on runs of two spaces or more.
fn row<'a>(stdout: &'a str, step: &str) -> Vec<&'a str> {
    let summary = stdout
        .split("== summary ==")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let line = summary
        .lines()
        .find(|l| l.starts_with(step))
        .unwrap_or_else(|| panic!("no {step:?} row in:\n{summary}"));
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// The numbers in `text`, in order ("p2c 1.1% of 1482" -> [1.1, 1482]).
fn numbers(text: &str) -> Vec<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.trim_matches('.').parse().ok())
        .collect()
}

/// What every successful quick run must show, whatever the registry.
fn check_story(run: &Run) {
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(!text.contains('\x1b'), "control codes on {name}:\n{text}");
    }
    let out = &run.stdout;
    for step in ["1. ", "2. ", "3. ", "4. ", "5. ", "6. ", "7. "] {
        assert!(
            out.contains(&format!("\n{step}")),
            "step {step} not announced:\n{out}"
        );
    }
    assert!(out.contains("== 7 of 7 promises held =="), "{out}");
    // Each row reports a measurement, consistent with what the run printed.
    let scale = row(out, "scale out");
    assert_eq!(scale.last(), Some(&"yes"), "{scale:?}");
    let first_call_ms = numbers(scale[2])[1];
    assert!(first_call_ms < 1000.0, "{scale:?}");
    let rolling = row(out, "rolling restart");
    let figures = numbers(rolling[2]);
    assert!(figures[0] > 0.0 && figures[1] == 0.0, "{rolling:?}");
    let kill = row(out, "kill -9");
    // The crashed record goes with its 3 s TTL, not before: the lease was
    // last renewed at most TTL/3 before the kill, so at least 2 s after it
    // (1.5 s leaves room for the registry's clock ticks).
    let gone_ms = *numbers(kill[2]).last().expect("a figure");
    assert!((1500.0..15000.0).contains(&gone_ms), "{kill:?}");
    assert!(
        numbers(kill[2])[0] > 0.0,
        "the others kept answering: {kill:?}"
    );
    assert!(out.contains("registry: remove echo-9"), "{out}");
    // The steps' counts come from the same counters as the rates tables:
    // the calls of the last table (cumulative per instance) cover them.
    let last_table = out
        .split("   INSTANCE ")
        .last()
        .and_then(|t| t.split("== summary ==").next())
        .expect("a rates table");
    let counted: f64 = last_table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    let stepped = numbers(rolling[2])[0] + numbers(kill[2])[0];
    assert!(counted >= stepped, "{counted} < {stepped}:\n{last_table}");
    let down = row(out, "operator down");
    assert!(down[2].contains("0 failed"), "{down:?}");
    let lanes = row(out, "pins and lanes");
    assert!(
        lanes[2].contains("v2 pin 130/130") && lanes[2].contains("blue 130/130"),
        "{lanes:?}"
    );
    let slow = row(out, "slow instance");
    let shares = numbers(slow[2]);
    let (p2c, rr) = (shares[0], shares[2]);
    assert!(p2c * 2.0 < rr && shares[1] > 0.0, "{slow:?}");
}

#[tokio::test]
async fn quick_run_piped_on_the_in_process_registry() {
    let run = run(None).await;
    check_story(&run);
    assert!(
        run.stdout.contains("the built-in registry runs in-process"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn quick_run_on_etcd_leaves_it_empty() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let run = run(Some(&url)).await;
    check_story(&run);
    assert!(run.stdout.contains(&format!("on the registry at {url}")));
    let registry = lodestar_connect::connect(&url).await.unwrap();
    assert_no_echo(registry).await;
}

#[tokio::test]
async fn sigint_mid_run_stops_promptly_and_deregisters_everything() {
    let node = lodestar_registry::server::Server::bind(lodestar_registry::server::Config::new(
        ([127, 0, 0, 1], 0).into(),
    ))
    .await
    .unwrap();
    let url = format!("lodestar://{}", node.local_addr().unwrap());
    let _node = AbortOnDrop(tokio::spawn(node.serve(std::future::pending())));
    let mut child = demo(Some(&url)).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Mid-run: the crash step's child process has registered.
    let seen = tokio::time::timeout(RUN_LIMIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("registry: add echo-9") {
                return true;
            }
        }
        false
    })
    .await
    .expect("the demo reached the crash step in time");
    assert!(seen, "the demo ended before the crash step");
    let registry = lodestar_connect::connect(&url).await.unwrap();
    let before = registry.services().await.unwrap();
    assert!(before.get("echo").is_some_and(|n| *n >= 6), "{before:?}");
    signal(&child, "-INT");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the demo exited within 10 s of SIGINT")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("lodestar demo: SIGINT: stopped;")
            && stderr.contains("instances stopped and deregistered"),
        "{stderr}"
    );
    assert_no_echo(registry).await;
}

/// The registry lists no echo instance (at once for the built-in registry
/// and etcd: deregistration is a synchronous write).
async fn assert_no_echo(registry: Arc<dyn Registry>) {
    eventually("no echo instance left", Duration::from_secs(2), || {
        let registry = registry.clone();
        async move {
            let services = registry.services().await.unwrap();
            services.get("echo").is_none_or(|n| *n == 0)
        }
    })
    .await;
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn a_memory_registry_or_an_unreachable_one_is_refused_with_the_reason() {
    let memory = run(Some("memory:demo")).await;
    assert_eq!(memory.code, Some(1), "{}", memory.stderr);
    assert!(
        memory
            .stderr
            .contains("cannot see an in-process memory: registry"),
        "{}",
        memory.stderr
    );
    let port = lodestar_test_support::free_port();
    let unreachable = run(Some(&format!("etcd://127.0.0.1:{port}"))).await;
    assert_eq!(unreachable.code, Some(3), "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains("unreachable"),
        "{}",
        unreachable.stderr
    );
}
