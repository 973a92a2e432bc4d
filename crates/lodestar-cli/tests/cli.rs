//! The `lodestar` binary end to end, against a real etcd.

mod support;

use support::*;

use std::time::Duration;

use lodestar_test_support::{EtcdCluster, EtcdNode, eventually, free_port};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStderr},
};

/// A command against `registry`, with no inherited LODESTAR_ variables.

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
        "set",
        "subscribers",
        "demo",
        "--registry",
        "--output",
        "Exit status:",
        "3  the registry is unreachable",
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
    assert_eq!(out.code, Some(3), "exit 3: unreachable");
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    assert!(
        out.stderr.contains("`lodestar registry`") && out.stderr.contains("etcd"),
        "says how to start one: {}",
        out.stderr
    );

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

/// Every command is a fresh connect: with a member of the URL down, each
/// must still reach the others (the start-up check used to ask just one).
#[tokio::test]
async fn every_command_works_with_a_cluster_member_down() {
    let mut cluster = EtcdCluster::start(3).await;
    let url = cluster.url();
    let (_register, mut log) = spawn_register(&url, "a", "30");
    wait_for(&mut log, "registered echo/a").await;
    cluster.kill(0);
    cluster.wait_for_leader().await;
    for _ in 0..5 {
        assert_eq!(ids(&url, "echo").await, ["a"]);
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
    assert!(!table.stdout.contains('\x1b'), "no colour when piped");
    let row: Vec<&str> = table
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..7],
        [
            "a",
            "grpc://127.0.0.1:50051",
            "v1",
            "blue",
            "-",
            "100",
            "up"
        ]
    );
    assert!(row[7].ends_with('s'), "an age in seconds: {row:?}");
    let wide = run(&url, &["get", "echo", "-o", "wide"]).await;
    assert!(wide.stdout.contains("team=core"), "{}", wide.stdout);
    let ls = run(&url, &["ls", "--json"]).await;
    assert_eq!(
        ls.stdout.trim(),
        r#"{"down":0,"instances":1,"lanes":{"blue":1},"service":"echo","versions":{"v1":1}}"#
    );
    let ls = run(&url, &["ls"]).await;
    assert_eq!(
        ls.stdout.lines().collect::<Vec<_>>(),
        [
            "SERVICE  INSTANCES  DOWN  VERSIONS  LANES",
            "echo     1          0     v1=1      blue=1"
        ]
    );

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

fn spawn_echo(registry: &str, id: &str, extra: &[&str]) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut args = vec![
        "serve-echo",
        "--service",
        "echo",
        "--id",
        id,
        "--version",
        "v1",
    ];
    args.extend_from_slice(&["--propagation-delay-ms", "200"]);
    args.extend_from_slice(extra);
    let mut child = lodestar(registry, &args).spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, stderr)
}

#[tokio::test]
async fn serve_echo_and_call_report_the_distribution_as_json() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let (mut a, mut a_log) = spawn_echo(&url, "a", &["--http-listen", "127.0.0.1:0"]);
    let (_b, mut b_log) = spawn_echo(&url, "b", &["--meta", "color=blue"]);
    wait_for(&mut a_log, "serving echo/a").await;
    wait_for(&mut b_log, "serving echo/b").await;
    eventually("both registered", PATIENCE, || async {
        ids(&url, "echo").await.len() == 2
    })
    .await;

    // No colour: the base lane only.
    let out = run(
        &url,
        &[
            "call",
            "echo",
            "--count",
            "50",
            "--concurrency",
            "4",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let last: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["ok"], 50);
    assert_eq!(last["errors"], 0);
    assert_eq!(last["by_instance"], serde_json::json!({"a": 50}));
    for p in ["p50", "p90", "p99", "max"] {
        assert!(last["latency_ms"][p].as_f64().unwrap() > 0.0, "{last}");
    }
    let blue = run(
        &url,
        &["call", "echo", "--count", "20", "--color", "blue", "--json"],
    )
    .await;
    let blue: serde_json::Value =
        serde_json::from_str(blue.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(blue["by_instance"], serde_json::json!({"b": 20}));

    // A pin nobody matches: every call fails, summarised by code, exit 1.
    let out = run(&url, &["call", "echo", "--count", "3", "--version", "v9"]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("3 call(s) failed with Unavailable"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.starts_with("0 ok, 3 errors"), "{}", out.stdout);

    // The HTTP side answers JSON naming the instance.
    let get = run(&url, &["get", "echo", "--json"]).await;
    let http = get
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|i| i["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| {
            e.as_str()
                .and_then(|e| e.strip_prefix("http://"))
                .map(str::to_string)
        })
        .next()
        .expect("an http endpoint");
    let response = lodestar_test_support::http::get(&http, "/some/path")
        .await
        .unwrap();
    let body = response.json().unwrap();
    for (field, value) in [
        ("instance", "a"),
        ("service", "echo"),
        ("version", "v1"),
        ("method", "GET"),
        ("path", "/some/path"),
    ] {
        assert_eq!(body[field], value, "{body}");
    }

    // SIGTERM: the graceful sequence, then exit 0 and the record is gone.
    signal(&a, "-TERM");
    wait_for(&mut a_log, "released and stopped").await;
    assert!(
        tokio::time::timeout(PATIENCE, a.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    assert_eq!(ids(&url, "echo").await, ["b"]);
}

#[tokio::test]
async fn call_fails_clearly_when_nothing_serves() {
    let etcd = EtcdNode::start().await;
    let out = run(&etcd.url(), &["call", "nobody", "--count", "1"]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("no instance of nobody"),
        "{}",
        out.stderr
    );
    let out = run(&etcd.url(), &["call", "x", "--policy", "fastest"]).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("round_robin"), "{}", out.stderr);
}

#[tokio::test]
async fn subscribers_lists_the_clients_of_a_service() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let (_a, mut a_log) = spawn_echo(&url, "a", &[]);
    wait_for(&mut a_log, "serving echo/a").await;
    let out = run(&url, &["subscribers", "echo"]).await;
    assert_eq!(out.code, Some(0));
    assert!(
        out.stderr.contains("no subscriber of echo"),
        "{}",
        out.stderr
    );

    let caller = lodestar(&url, &["call", "echo", "--duration", "30"])
        .spawn()
        .unwrap();
    let pid = caller.id().unwrap();
    eventually("the caller listed", PATIENCE, || async {
        let out = run(&url, &["subscribers", "echo", "--json"]).await;
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|s| s["pid"] == pid && s["service"] == "echo")
    })
    .await;
    let table = run(&url, &["subscribers", "echo"]).await;
    assert!(table.stdout.starts_with("CLIENT ID"), "{}", table.stdout);
    assert!(table.stdout.contains(&pid.to_string()), "{}", table.stdout);

    // A call that ends takes its record with it (not at its lease's TTL).
    let out = run(&url, &["call", "echo", "--count", "5"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(&url, &["subscribers", "echo", "--json"]).await;
    let pids: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|s| s["pid"].clone())
        .collect();
    assert_eq!(pids, [serde_json::json!(pid)], "only the running caller");
}

#[tokio::test]
async fn kill_9_of_an_instance_mid_load_fails_only_the_calls_in_flight() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let mut servers = Vec::new();
    for id in ["a", "b", "c"] {
        let (child, mut log) = spawn_echo(&url, id, &["--delay-ms", "2"]);
        wait_for(&mut log, &format!("serving echo/{id}")).await;
        // Keep their stderr pipes (and the children) alive with the test.
        servers.push((child, log));
    }
    eventually("all registered", PATIENCE, || async {
        ids(&url, "echo").await.len() == 3
    })
    .await;
    let call = lodestar(
        &url,
        &[
            "call",
            "echo",
            "--duration",
            "3",
            "--concurrency",
            "8",
            "--json",
        ],
    )
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    servers[0].0.start_kill().unwrap();
    let output = tokio::time::timeout(PATIENCE, call.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // At most the calls in flight on the killed instance fail (they may have
    // run, so they are never retried); the rest go to b and c.
    let errors = summary["errors"].as_u64().unwrap();
    assert!(errors <= 8, "{summary}");
    assert!(summary["ok"].as_u64().unwrap() > 100, "{summary}");
    assert!(
        summary["by_instance"]["b"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

#[tokio::test]
async fn a_closed_stderr_does_not_kill_a_sidecar() {
    let mut etcd = EtcdNode::start().await;
    let url = etcd.url();
    let (mut register, log) = spawn_register(&url, "quiet", "2");
    drop(log); // nobody reads its messages any more
    eventually("registered", PATIENCE, || async {
        ids(&url, "echo").await == ["quiet"]
    })
    .await;
    // Losing the lease makes it log; it must carry on and register again.
    etcd.restart_empty().await;
    eventually("registered again", PATIENCE, || async {
        ids(&url, "echo").await == ["quiet"]
    })
    .await;
    signal(&register, "-TERM");
    let status = tokio::time::timeout(PATIENCE, register.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(ids(&url, "echo").await.is_empty());
}

#[tokio::test]
async fn register_json_prints_its_state_changes() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let mut register = lodestar(
        &url,
        &[
            "register",
            "--service",
            "echo",
            "--id",
            "a",
            "--endpoint",
            "grpc://127.0.0.1:50051",
            "--json",
        ],
    )
    .spawn()
    .unwrap();
    let mut events = BufReader::new(register.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&next_line(&mut events).await).unwrap();
    assert_eq!(first["event"], "registered", "{first}");
    assert_eq!(first["instance"]["id"], "a", "{first}");
    signal(&register, "-TERM");
    let last: serde_json::Value = serde_json::from_str(&next_line(&mut events).await).unwrap();
    assert_eq!(
        (&last["event"], &last["signal"]),
        (&"deregistered".into(), &"SIGTERM".into()),
        "{last}"
    );
    assert!(register.wait().await.unwrap().success());
}
