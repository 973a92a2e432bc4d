//! `lodestar dashboard` as a process: flags, the write token (given,
//! from the environment, or generated and printed once) never in the log.

mod support;

use std::{process::Stdio, time::Duration};

use lodestar_test_support::{EtcdNode, free_port};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
};

/// `lodestar --registry URL dashboard ARGS...`, its stdout's first lines
/// read until the address line.
async fn start(url: &str, args: &[&str], env: &[(&str, &str)]) -> (Child, Vec<String>) {
    let mut command = Command::new(lodestar_test_support::lodestar_binary());
    command
        .args(["--registry", url, "dashboard"])
        .args(args)
        .env_remove("LODESTAR_DASHBOARD_TOKEN")
        .env("LODESTAR_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    let read = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            let done = line.starts_with("dashboard: ");
            lines.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the dashboard starts within 20 s");
    (child, lines)
}

/// Stops the process with SIGTERM; its stderr (the log).
async fn stop(mut child: Child) -> String {
    let pid = child.id().unwrap().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .await
        .unwrap();
    log
}

async fn post(addr: &str, token: &str) -> u16 {
    let served = support::Served::at(addr.parse().unwrap());
    let body = json!({"who": "ann", "status": "down"});
    served
        .post("/api/services/echo/instances/a", Some(token), &body)
        .await
        .0
}

#[tokio::test]
async fn a_generated_token_is_printed_once_and_never_logged() {
    let etcd = EtcdNode::start().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let (child, lines) = start(&etcd.url(), &["--listen", &addr, "--allow-writes"], &[]).await;
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix("write token: "))
        .unwrap_or_else(|| panic!("no token printed: {lines:?}"))
        .to_string();
    assert_eq!(token.len(), 32, "{token}");
    assert!(lines.last().unwrap().contains(&format!("http://{addr}/")));
    // A wrong token is refused; the right one gets through to the registry
    // (which has no instance `a`: whatever it answers, not 401).
    assert_eq!(post(&addr, "nope").await, 401);
    assert_ne!(post(&addr, &token).await, 401);
    let log = stop(child).await;
    assert!(!log.contains(&token), "the token is in the log:\n{log}");
    assert!(log.contains("write refused: wrong token"), "{log}");
}

#[tokio::test]
async fn the_token_from_the_environment_or_the_flag() {
    let etcd = EtcdNode::start().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [("LODESTAR_DASHBOARD_TOKEN", "from-env-token")];
    let (child, lines) = start(&etcd.url(), &["--listen", &addr, "--allow-writes"], &env).await;
    assert!(
        lines.iter().all(|l| !l.contains("from-env-token")),
        "{lines:?}"
    );
    assert_ne!(post(&addr, "from-env-token").await, 401);
    assert!(!stop(child).await.contains("from-env-token"));

    let (child, _) = start(
        &etcd.url(),
        &["--listen", &addr, "--allow-writes", "--token", "flag-token"],
        &[],
    )
    .await;
    assert_eq!(post(&addr, "from-env-token").await, 401);
    assert_ne!(post(&addr, "flag-token").await, 401);
    assert!(!stop(child).await.contains("flag-token"));

    // Read-only by default: writes are forbidden whatever the token.
    let (child, lines) = start(&etcd.url(), &["--listen", &addr], &env).await;
    assert!(lines.last().unwrap().contains("read-only"), "{lines:?}");
    assert_eq!(post(&addr, "from-env-token").await, 403);
    stop(child).await;
}

#[tokio::test]
async fn bad_flags_are_errors_not_panics() {
    async fn run(args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(lodestar_test_support::lodestar_binary())
            .args(args)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    }
    let (code, err) = run(&["dashboard", "--token", "t"]).await;
    assert_eq!(code, Some(2), "--token needs --allow-writes: {err}");
    let (code, err) = run(&["dashboard", "--listen", "nowhere"]).await;
    assert_eq!(code, Some(2), "{err}");
    // A registry that is not there: a clear error, the CLI's exit code 3.
    let url = format!("etcd://127.0.0.1:{}", free_port());
    let (code, err) = run(&["--registry", &url, "dashboard"]).await;
    assert_eq!(code, Some(3), "exit 3: registry unreachable: {err}");
    assert!(err.contains("connecting to the registry"), "{err}");
}
