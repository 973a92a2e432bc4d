//! Helpers shared by the CLI's end-to-end tests: run `lodestar` as a child
//! process against a registry and read what it prints.
#![allow(dead_code, unreachable_pub)] // each test file uses a different subset

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStderr, Command},
};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_lodestar");
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) fn lodestar(registry: &str, args: &[&str]) -> Command {
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

pub(crate) struct Output {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) async fn run(registry: &str, args: &[&str]) -> Output {
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

pub(crate) fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("child still running").to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

pub(crate) async fn next_line<R: tokio::io::AsyncRead + Unpin>(
    lines: &mut Lines<BufReader<R>>,
) -> String {
    tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line in time")
        .expect("readable")
        .expect("not at end of output")
}

pub(crate) async fn ids(registry: &str, service: &str) -> Vec<String> {
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

pub(crate) fn spawn_register(
    registry: &str,
    id: &str,
    ttl: &str,
) -> (Child, Lines<BufReader<ChildStderr>>) {
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

pub(crate) async fn wait_for(lines: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> String {
    loop {
        let line = next_line(lines).await;
        if line.contains(needle) {
            return line;
        }
    }
}
