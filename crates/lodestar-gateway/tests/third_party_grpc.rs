//! A gRPC client no one here wrote calls through the gateway: Python's
//! `grpcio` (from PyPI; `cargo xtask test` installs it in `target/python`
//! and names its interpreter in `LODESTAR_PYTHON`), running
//! `tests/python/echo_client.py` against real echo instances registered in
//! a built-in registry node.

mod support;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use lodestar_gateway::config::Config;
use serde_json::Value;
use support::*;

/// Runs the client: `calls` calls, with `color` if given; its JSON lines.
async fn run_client(addr: std::net::SocketAddr, calls: usize, color: Option<&str>) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/echo_client.py");
    let mut command = tokio::process::Command::new(lodestar_test_support::grpcio_python());
    command
        .arg(script)
        .arg(addr.to_string())
        .arg(calls.to_string())
        .kill_on_drop(true);
    if let Some(color) = color {
        command.arg(color);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the Python client finished in time")
        .expect("the Python client ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Python client failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_through_the_gateway_with_lanes_and_statuses() {
    let reg = builtin().await;
    let _a1 = Echo::start(&reg, "echo", "a1", "v1", None).await;
    let _a2 = Echo::start(&reg, "echo", "a2", "v1", None).await;
    let _blue = Echo::start(&reg, "echo", "blue", "v1", Some("blue")).await;
    // The client picks its lane: its headers are trusted.
    let config = Config::from_toml(
        "[trust]\nheaders = true\n\
         [[route]]\nprefix = \"/lodestar.echo.v1.Echo\"\nservice = \"echo\"\npolicy = \"round_robin\"\n\
         [[route]]\nprefix = \"/ghost.v1.Ghost\"\nservice = \"ghost\"\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    wait_for_instances(gw.addr, "/lodestar.echo.v1.Echo/", &[], &["a1", "a2"]).await;

    // No colour: the base lane only, spread over both instances.
    let lines = run_client(gw.addr, 40, None).await;
    let mut served = BTreeMap::<String, usize>::new();
    for line in &lines[..40] {
        let reply = &line["ok"];
        assert_eq!(reply["message"], "hello", "{line}");
        assert_eq!(reply["service"], "echo", "{line}");
        *served
            .entry(reply["instance"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        served,
        BTreeMap::from([("a1".to_string(), 20), ("a2".to_string(), 20)]),
        "round robin over the base lane, never the blue instance"
    );
    // The gateway's own error is a gRPC status naming the service.
    let unknown = &lines[40]["unknown_service"]["error"];
    assert_eq!(unknown["code"], "UNAVAILABLE", "{unknown}");
    assert!(
        unknown["details"].as_str().unwrap().contains("ghost"),
        "{unknown}"
    );

    // The colour header (gRPC metadata) picks the blue lane.
    let lines = run_client(gw.addr, 20, Some("blue")).await;
    for line in &lines[..20] {
        assert_eq!(line["ok"]["instance"], "blue", "{line}");
        assert_eq!(line["ok"]["color"], "blue", "{line}");
    }
}
