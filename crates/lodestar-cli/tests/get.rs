//! `lodestar get --check` and `ls` against real servers: health asked of
//! each instance with tonic-health's client, status and counts by version
//! and lane.

mod support;

use support::*;

use lodestar_test_support::{EtcdNode, free_port};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn get_check_asks_each_instance_and_ls_counts_versions_lanes_and_down() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let mut a = lodestar(
        &url,
        &[
            "serve-echo",
            "--service",
            "echo",
            "--id",
            "a",
            "--version",
            "v2",
        ],
    )
    .spawn()
    .unwrap();
    let mut a_log = BufReader::new(a.stderr.take().unwrap()).lines();
    wait_for(&mut a_log, "serving echo/a").await;
    // b is registered but nothing listens where it says.
    let dead = format!("grpc://127.0.0.1:{}", free_port());
    let mut b = lodestar(
        &url,
        &[
            "register",
            "--service",
            "echo",
            "--id",
            "b",
            "--endpoint",
            &dead,
            "--meta",
            "color=blue",
        ],
    )
    .spawn()
    .unwrap();
    let mut b_log = BufReader::new(b.stderr.take().unwrap()).lines();
    wait_for(&mut b_log, "registered echo/b").await;

    let out = run(&url, &["get", "echo", "--check", "--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let health: Vec<(String, String)> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|i| {
            (
                i["id"].as_str().unwrap().into(),
                i["health"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        health,
        [
            ("a".into(), "SERVING".into()),
            ("b".into(), "unreachable".into())
        ]
    );
    let table = run(&url, &["get", "echo", "--check"]).await;
    let header = table.stdout.lines().next().unwrap();
    assert!(header.ends_with("HEALTH"), "{}", table.stdout);
    assert!(table.stdout.contains("SERVING"), "{}", table.stdout);

    let out = run(&url, &["set", "echo", "b", "--status", "down"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let ls = run(&url, &["ls", "-o", "json"]).await;
    assert_eq!(
        ls.stdout.trim(),
        r#"{"down":1,"instances":2,"lanes":{"base":1,"blue":1},"service":"echo","versions":{"":1,"v2":1}}"#
    );
    let ls = run(&url, &["ls"]).await;
    assert_eq!(
        ls.stdout.lines().nth(1).unwrap(),
        "echo     2          1     -=1 v2=1  base=1 blue=1"
    );
    let get = run(&url, &["get", "echo"]).await;
    let b_row = get.stdout.lines().find(|l| l.starts_with("b ")).unwrap();
    assert!(b_row.contains(" down "), "{}", get.stdout);
    assert!(!get.stdout.contains('\x1b'), "no colour when piped");

    // On a terminal (a pty from util-linux's `script`): colour, unless NO_COLOR.
    let coloured = on_a_terminal(&url, None).await;
    assert!(coloured.contains("\x1b[1mID\x1b[0m"), "{coloured:?}");
    assert!(coloured.contains("\x1b[31mdown\x1b[0m"), "{coloured:?}");
    let plain = on_a_terminal(&url, Some("1")).await;
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain:?}");
    assert!(plain.contains("down"), "{plain:?}");
}

/// `lodestar get echo` on a pseudo-terminal; what it printed.
async fn on_a_terminal(url: &str, no_color: Option<&str>) -> String {
    // `cargo xtask test` finds or installs it and exports SCRIPT_BIN.
    let script = std::env::var_os("SCRIPT_BIN").unwrap_or_else(|| "script".into());
    let mut command = tokio::process::Command::new(script);
    command
        .args(["-qec", &format!("{BIN} get echo"), "/dev/null"])
        .env("LODESTAR_REGISTRY", url)
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("script finished in time")
        .unwrap_or_else(|e| {
            panic!(
                "running util-linux's `script` (`cargo xtask setup` installs it, or \
                 apt-get install bsdutils): {e}"
            )
        });
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
