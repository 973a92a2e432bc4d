//! The `lodestar` binary end to end, against a real etcd.

use std::{process::Stdio, time::Duration};

use lodestar_test_support::{EtcdNode, eventually, free_port};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStderr, Command},
};

const BIN: &str = env!("CARGO_BIN_EXE_lodestar");
const PATIENCE: Duration = Duration::from_secs(20);

/// A command against `registry`, with no inherited LODESTAR_ variables.
fn lodestar(registry: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("LODESTAR_REGISTRY", registry)
        .env_remove("LODESTAR_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(registry: &str, args: &[&str]) -> Output {
    let output = tokio::time::timeout(PATIENCE, lodestar(registry, args).output())
        .await
        .expect("lodestar finished in time")
        .expect("lodestar ran");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("child still running").to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn next_line<R: tokio::io::AsyncRead + Unpin>(lines: &mut Lines<BufReader<R>>) -> String {
    tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line in time")
        .expect("readable")
        .expect("not at end of output")
}

async fn ids(registry: &str, service: &str) -> Vec<String> {
    let out = run(registry, &["get", service, "--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn spawn_register(registry: &str, id: &str, ttl: &str) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut child = lodestar(
        registry,
        &[
            "register",
            "--service",
            "echo",
            "--id",
            id,
            "--endpoint",
            "grpc://127.0.0.1:50051",
            "--version",
            "v1",
            "--meta",
            "color=blue",
            "--meta",
            "team=core",
            "--ttl",
            ttl,
        ],
    )
    .spawn()
    .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, stderr)
}

async fn wait_for(lines: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> String {
    loop {
        let line = next_line(lines).await;
        if line.contains(needle) {
            return line;
        }
    }
}

#[tokio::test]
async fn help_lists_every_command() {
    let out = run("memory:", &["--help"]).await;
    assert_eq!(out.code, Some(0));
    for command in [
        "register",
        "deregister",
        "ls",
        "get",
        "watch",
        "demo",
        "--registry",
    ] {
        assert!(
            out.stdout.contains(command),
            "{command} missing from:\n{}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn bad_flags_are_usage_errors_not_panics() {
    for args in [
        &["register", "--service", "s", "--id", "i"][..],
        &[
            "register",
            "--service",
            "s",
            "--id",
            "i",
            "-e",
            "not-an-endpoint",
        ],
        &[
            "register",
            "--service",
            "s",
            "--id",
            "i",
            "-e",
            "grpc://h:1",
            "--meta",
            "novalue",
        ],
        &[
            "register",
            "--service",
            "s",
            "--id",
            "i",
            "-e",
            "grpc://h:1",
            "--ttl",
            "0",
        ],
        &["get"],
        &["frobnicate"],
    ] {
        let out = run("memory:", args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
    // Valid flags, invalid record: a clear error before touching the network.
    let out = run(
        "etcd://127.0.0.1:1",
        &[
            "register",
            "--service",
            "s",
            "--id",
            "a/b",
            "-e",
            "grpc://h:1",
        ],
    )
    .await;
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("invalid instance"), "{}", out.stderr);
}

#[tokio::test]
async fn bad_registry_urls_and_unreachable_registries_are_named() {
    let port = free_port();
    let url = format!("etcd://127.0.0.1:{port}?connect_timeout=1s");
    let out = run(&url, &["ls"]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);

    let out = run("memory:", &["ls"]).await;
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("in-process"), "{}", out.stderr);

    for bad in ["zk://h:1", "etcd://h", "etcd://h:1?ttl=soon"] {
        let out = run(bad, &["get", "echo"]).await;
        assert_eq!(out.code, Some(1), "{bad}");
        assert!(
            out.stderr.starts_with("lodestar: error:"),
            "{bad}: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn register_get_ls_watch_then_sigterm_deregisters() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let mut watch = lodestar(&url, &["watch", "echo", "--json"])
        .spawn()
        .unwrap();
    let mut events = BufReader::new(watch.stdout.take().unwrap()).lines();

    let (mut register, mut log) = spawn_register(&url, "a", "30");
    wait_for(&mut log, "registered echo/a").await;

    let added: serde_json::Value = serde_json::from_str(&next_line(&mut events).await).unwrap();
    assert_eq!(added["event"], "add");
    assert_eq!(added["instance"]["id"], "a");
    assert_eq!(added["instance"]["metadata"]["color"], "blue");

    assert_eq!(ids(&url, "echo").await, ["a"]);
    let table = run(&url, &["get", "echo"]).await;
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
    assert!(table.stdout.contains("grpc://127.0.0.1:50051") && table.stdout.contains("team=core"));
    let ls = run(&url, &["ls", "--json"]).await;
    assert_eq!(ls.stdout.trim(), r#"{"instances":1,"service":"echo"}"#);

    // SIGTERM: deregistered at once (long before the 30 s TTL), exit 0.
    signal(&register, "-TERM");
    let status = tokio::time::timeout(PATIENCE, register.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let removed: serde_json::Value = serde_json::from_str(&next_line(&mut events).await).unwrap();
    assert_eq!(removed["event"], "remove");
    assert_eq!(removed["instance"]["id"], "a");
    assert!(ids(&url, "echo").await.is_empty());

    signal(&watch, "-INT");
    let status = tokio::time::timeout(PATIENCE, watch.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn kill_9_leaves_the_record_until_the_ttl_expires() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let (mut register, mut log) = spawn_register(&url, "crashy", "2");
    wait_for(&mut log, "registered echo/crashy").await;
    register.start_kill().unwrap();
    register.wait().await.unwrap();
    // Nobody deregistered it: it is still there right after the crash...
    assert_eq!(ids(&url, "echo").await, ["crashy"]);
    // ...and gone once the lease expires.
    eventually("the record to expire", PATIENCE, || async {
        ids(&url, "echo").await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn register_logs_a_lost_lease_and_registers_again_by_itself() {
    let mut etcd = EtcdNode::start().await;
    let url = etcd.url();
    let (_register, mut log) = spawn_register(&url, "survivor", "2");
    wait_for(&mut log, "registered echo/survivor").await;
    etcd.restart_empty().await;
    wait_for(&mut log, "lost its registration").await;
    wait_for(&mut log, "echo/survivor registered again").await;
    assert_eq!(ids(&url, "echo").await, ["survivor"]);
}

#[tokio::test]
async fn deregister_removes_and_says_when_there_is_nothing() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let (mut register, mut log) = spawn_register(&url, "gone", "30");
    wait_for(&mut log, "registered echo/gone").await;
    register.start_kill().unwrap();
    register.wait().await.unwrap();

    let out = run(&url, &["deregister", "echo", "gone"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(ids(&url, "echo").await.is_empty());
    let out = run(&url, &["deregister", "echo", "gone"]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("no instance echo/gone"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn demo_runs_on_the_memory_registry() {
    let out = run("etcd://127.0.0.1:1", &["demo", "--pause-ms", "0"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for expected in [
        "add    echo/echo-a",
        "remove echo/echo-b",
        "echo now has 0 instance(s)",
    ] {
        assert!(
            out.stdout.contains(expected),
            "{expected:?} missing from:\n{}",
            out.stdout
        );
    }
}
