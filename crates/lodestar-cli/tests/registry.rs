//! `lodestar registry` end to end: the server as a child process, and the
//! other commands using it through `lodestar://`.

mod support;

use support::*;

use std::time::Duration;

use lodestar_test_support::{eventually, free_port};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStderr},
};

/// A registry node on a free port, with its URL and log.
async fn registry(extra: &[&str]) -> (Child, String, Lines<BufReader<ChildStderr>>) {
    let addr = format!("127.0.0.1:{}", free_port());
    registry_at(&addr, extra).await
}

async fn registry_at(addr: &str, extra: &[&str]) -> (Child, String, Lines<BufReader<ChildStderr>>) {
    let mut args = vec!["registry", "--listen", addr];
    args.extend_from_slice(extra);
    let mut child = lodestar("memory:", &args).spawn().unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    wait_for(&mut log, "registry listening on").await;
    (child, format!("lodestar://{addr}"), log)
}

#[tokio::test]
async fn register_get_ls_watch_on_the_built_in_registry() {
    let (mut server, url, mut server_log) = registry(&[]).await;
    let mut watch = lodestar(&url, &["watch", "echo", "--json"])
        .spawn()
        .unwrap();
    let mut events = BufReader::new(watch.stdout.take().unwrap()).lines();

    let (mut register, mut log) = spawn_register(&url, "a", "30");
    wait_for(&mut log, "registered echo/a").await;
    let added = tokio::time::timeout(PATIENCE, events.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let added: serde_json::Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["event"], "add");
    assert_eq!(added["instance"]["metadata"]["color"], "blue");
    assert_eq!(ids(&url, "echo").await, ["a"]);
    let ls = run(&url, &["ls", "--json"]).await;
    // The node's own record (infra.discovery) may be listed too.
    let services: Vec<&str> = ls
        .stdout
        .lines()
        .filter(|l| !l.contains(r#""service":"infra.discovery""#))
        .collect();
    assert_eq!(
        services,
        [r#"{"down":0,"instances":1,"lanes":{"blue":1},"service":"echo","versions":{"v1":1}}"#]
    );

    signal(&register, "-TERM");
    assert!(register.wait().await.unwrap().success());
    let removed = tokio::time::timeout(PATIENCE, events.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(removed.contains(r#""event":"remove""#), "{removed}");
    signal(&watch, "-INT");
    assert!(watch.wait().await.unwrap().success());

    // SIGTERM stops the registry cleanly.
    signal(&server, "-TERM");
    wait_for(&mut server_log, "SIGTERM: registry stopped").await;
    assert!(server.wait().await.unwrap().success());
}

#[tokio::test]
async fn a_killed_sidecar_goes_after_its_ttl() {
    let (_server, url, _log) = registry(&[]).await;
    let (mut register, mut log) = spawn_register(&url, "crashy", "2");
    wait_for(&mut log, "registered echo/crashy").await;
    register.start_kill().unwrap();
    register.wait().await.unwrap();
    assert_eq!(ids(&url, "echo").await, ["crashy"]);
    // Evicted after its own TTL, long before the 90 s of the general rule.
    eventually("the record to expire", PATIENCE, || async {
        ids(&url, "echo").await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_restarted_registry_gets_the_sidecar_back() {
    let addr = format!("127.0.0.1:{}", free_port());
    let (mut server, url, _log) = registry_at(&addr, &[]).await;
    let (_register, mut log) = spawn_register(&url, "survivor", "2");
    wait_for(&mut log, "registered echo/survivor").await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let (_server, _, _log) = registry_at(&addr, &[]).await;
    eventually("the sidecar to register again", PATIENCE, || async {
        ids(&url, "echo").await == ["survivor"]
    })
    .await;
}

#[tokio::test]
async fn two_nodes_replicate() {
    let (a, b) = (free_port(), free_port());
    let (addr_a, addr_b) = (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}"));
    let (_na, url_a, _la) = registry_at(&addr_a, &["--peers", &addr_b]).await;
    let (_nb, url_b, _lb) = registry_at(&addr_b, &["--peers", &addr_a]).await;
    let (_register, mut log) = spawn_register(&url_a, "r", "30");
    wait_for(&mut log, "registered echo/r").await;
    eventually("the other node to have it", PATIENCE, || async {
        let out = run(&url_b, &["get", "echo", "--json"]).await;
        out.code == Some(0) && out.stdout.contains(r#""id":"r""#)
    })
    .await;
}

#[tokio::test]
async fn the_built_in_registry_is_the_default_and_documented() {
    let mut help = lodestar("unused", &["--help"]);
    help.env_remove("LODESTAR_REGISTRY");
    let out = help.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[default: lodestar://127.0.0.1:7171]"),
        "{stdout}"
    );
    assert!(stdout.contains("registry "), "{stdout}");
    let out = run("memory:", &["registry", "--help"]).await;
    for flag in [
        "--listen",
        "--peers",
        "--zone",
        "--env",
        "--advertise",
        "--renew-interval",
        "--evict-after",
        "--evict-every",
    ] {
        assert!(
            out.stdout.contains(flag),
            "{flag} missing from:\n{}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn bad_flags_and_a_busy_port_are_errors_not_panics() {
    for args in [
        &["registry", "--listen", "nope"][..],
        &["registry", "--renew-interval", "0"],
        &["registry", "--evict-after", "-3"],
        &["registry", "--cross-zone-peers", "noequals"],
        &["registry", "--advertise", "nope"],
        &["registry", "--advertise", "http://h:7171"],
        &["registry", "--advertise", "h:0"],
    ] {
        let out = run("memory:", args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
    let (_server, url, _log) = registry(&[]).await;
    let addr = url.trim_start_matches("lodestar://");
    let out = run("memory:", &["registry", "--listen", addr]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(&format!("listening on {addr}")),
        "{}",
        out.stderr
    );

    let port = free_port();
    let out = run(
        &format!("lodestar://127.0.0.1:{port}?connect_timeout=1s"),
        &["ls"],
    )
    .await;
    assert_eq!(out.code, Some(3));
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    assert!(out.stderr.contains(&port.to_string()), "{}", out.stderr);
}

fn spawn_echo(url: &str, id: &str) -> (Child, Lines<BufReader<ChildStderr>>) {
    let args = [
        "serve-echo",
        "--service",
        "echo",
        "--id",
        id,
        "--version",
        "v1",
        "--ttl",
        "2",
        "--propagation-delay-ms",
        "500",
    ];
    let mut child = lodestar(url, &args).spawn().unwrap();
    let log = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, log)
}

async fn call(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["call", "echo", "--json"];
    all.extend_from_slice(args);
    let out = run(url, &all).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// The tonic side on this backend: calls balanced over instances found
/// through `lodestar://`, and a graceful release under load that loses none.
#[tokio::test]
async fn balanced_calls_and_a_graceful_release_on_the_built_in_registry() {
    let (_server, url, _log) = registry(&[]).await;
    let (mut a, mut log_a) = spawn_echo(&url, "a");
    let (_b, mut log_b) = spawn_echo(&url, "b");
    wait_for(&mut log_a, "serving echo/a").await;
    wait_for(&mut log_b, "serving echo/b").await;
    eventually("both instances to be registered", PATIENCE, || async {
        ids(&url, "echo").await.len() == 2
    })
    .await;

    let report = call(
        &url,
        &[
            "--count",
            "400",
            "--concurrency",
            "8",
            "--policy",
            "round_robin",
        ],
    )
    .await;
    assert_eq!(report["ok"], 400, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let by_instance = report["by_instance"].as_object().unwrap();
    assert_eq!(by_instance.len(), 2, "{report}");

    // a leaves under load: NOT_SERVING, cancel, propagation delay, drain.
    let load = {
        let url = url.clone();
        tokio::spawn(async move { call(&url, &["--duration", "3", "--concurrency", "8"]).await })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    signal(&a, "-TERM");
    wait_for(&mut log_a, "released and stopped").await;
    assert!(a.wait().await.unwrap().success());
    let report = load.await.unwrap();
    assert_eq!(
        report["errors"], 0,
        "a graceful release loses no call: {report}"
    );
    assert_eq!(ids(&url, "echo").await, ["b"]);
}

/// The records of `infra.discovery` a node has in `env`: (hostname, addrs, zone).
async fn own_records(addr: &str, env: &str) -> Vec<(String, serde_json::Value, String)> {
    let path = format!("/discovery/fetch?env={env}&appid=infra.discovery&status=3");
    let reply = lodestar_test_support::http::get(addr, &path)
        .await
        .unwrap()
        .json()
        .unwrap();
    let mut records: Vec<_> = reply["data"]["instances"]
        .as_object()
        .into_iter()
        .flat_map(|zones| zones.values())
        .flat_map(|list| list.as_array().cloned().unwrap_or_default())
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (text("hostname"), r["addrs"].clone(), text("zone"))
        })
        .collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    records
}

/// Every node registers itself under infra.discovery (where discovery's
/// Go clients find their nodes) at its advertised address, in its zone and
/// env; the record reaches the peers and is cancelled there at SIGTERM.
#[tokio::test]
async fn a_node_registers_itself_where_advertised_and_leaves_at_sigterm() {
    let (a, b) = (free_port(), free_port());
    let (addr_a, addr_b) = (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}"));
    let advertised = format!("localhost:{a}");
    let (mut node_a, _, mut log_a) = registry_at(
        &addr_a,
        &[
            "--peers",
            &addr_b,
            "--advertise",
            &advertised,
            "--zone",
            "sh001",
            "--env",
            "prod",
        ],
    )
    .await;
    wait_for(
        &mut log_a,
        &format!("registered as http://{advertised} under infra.discovery (zone sh001, env prod)"),
    )
    .await;
    let (_node_b, _, _log_b) = registry_at(&addr_b, &["--peers", &addr_a, "--env", "prod"]).await;
    let expected = vec![
        (
            addr_b.clone(),
            serde_json::json!([format!("http://{addr_b}")]),
            "default".to_string(),
        ),
        (
            advertised.clone(),
            serde_json::json!([format!("http://{advertised}")]),
            "sh001".to_string(),
        ),
    ];
    eventually("both records at node b", PATIENCE, || async {
        own_records(&addr_b, "prod").await == expected
    })
    .await;

    signal(&node_a, "-TERM");
    wait_for(&mut log_a, "SIGTERM: registry stopped").await;
    assert!(node_a.wait().await.unwrap().success());
    // It waited for its cancel to reach b before exiting.
    assert_eq!(own_records(&addr_b, "prod").await, expected[..1]);
}

/// An operator's `set status=2` takes an instance out of a live balanced
/// channel (discovery's way to drain an instance without killing it), and
/// `status=1` puts it back.
#[tokio::test]
async fn set_status_2_takes_an_instance_out_of_a_balanced_channel() {
    use lodestar::Discovery;
    use lodestar_echo::{EchoRequest, echo_client::EchoClient};
    use lodestar_registry::LodestarRegistry;
    use lodestar_tonic::Channel;

    let (_server, url, _log) = registry(&[]).await;
    let (_a, mut log_a) = spawn_echo(&url, "a");
    let (_b, mut log_b) = spawn_echo(&url, "b");
    wait_for(&mut log_a, "serving echo/a").await;
    wait_for(&mut log_b, "serving echo/b").await;

    let registry = LodestarRegistry::connect(url.parse().unwrap())
        .await
        .unwrap();
    let discovery: std::sync::Arc<dyn Discovery> = std::sync::Arc::new(registry);
    let channel = Channel::builder(discovery, "echo")
        .policy(lodestar::balance::BuiltinPolicy::RoundRobin)
        .connect();
    let client = EchoClient::new(channel);
    // Who answers `n` calls.
    let answered = |n: usize| {
        let mut client = client.clone();
        async move {
            let mut who = std::collections::BTreeSet::new();
            for _ in 0..n {
                let request = EchoRequest {
                    message: "hi".into(),
                    delay_ms: 0,
                };
                if let Ok(reply) = client.say(request).await {
                    who.insert(reply.into_inner().instance);
                }
            }
            who.into_iter().collect::<Vec<_>>()
        }
    };
    eventually("a and b to answer", PATIENCE, || async {
        answered(20).await == ["a", "b"]
    })
    .await;

    let addr = url.trim_start_matches("lodestar://").to_string();
    let set = |status: &str| {
        let addr = addr.clone();
        let form = format!("zone=default&env=dev&appid=echo&hostname=a&status={status}");
        async move {
            let reply = lodestar_test_support::http::request(
                &addr,
                "POST",
                "/discovery/set",
                form.as_bytes(),
            )
            .await
            .unwrap();
            assert_eq!(reply.json().unwrap()["code"], 0);
        }
    };
    set("2").await;
    eventually("only b to answer", PATIENCE, || async {
        answered(20).await == ["b"]
    })
    .await;
    // And it stays out: a is still running, but takes no call.
    assert_eq!(answered(100).await, ["b"]);

    set("1").await;
    eventually("a to answer again", PATIENCE, || async {
        answered(20).await == ["a", "b"]
    })
    .await;
}

/// `lodestar registry --token`: writes need the token, given in the URL or
/// by `LODESTAR_TOKEN`; reads stay open; the token appears in no output of
/// the server (logging at trace) or of the clients.
#[tokio::test]
async fn a_token_guards_writes_and_never_prints() {
    const SECRET: &str = "cli-s3cret-Token";
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = lodestar(
        "memory:",
        &["registry", "--listen", &addr, "--token", SECRET],
    )
    .env("LODESTAR_LOG", "trace")
    .spawn()
    .unwrap();
    let mut server_log = BufReader::new(server.stderr.take().unwrap()).lines();
    let banner = wait_for(&mut server_log, "registry listening on").await;
    assert!(banner.contains("token required for writes"), "{banner}");
    let url = format!("lodestar://{addr}");

    // No token: refused, and says why.
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
        ],
    )
    .spawn()
    .unwrap();
    let mut log = BufReader::new(register.stderr.take().unwrap()).lines();
    let line = wait_for(&mut log, "HTTP 401").await;
    assert!(line.contains("needs a token"), "{line}");
    assert_ne!(register.wait().await.unwrap().code(), Some(0));
    // Reads are open.
    assert!(ids(&url, "echo").await.is_empty());

    // The token in the URL.
    let with_token = format!("{url}?token={SECRET}");
    let (mut register, mut log) = spawn_register(&with_token, "a", "30");
    let line = wait_for(&mut log, "registered echo/a").await;
    assert!(
        line.contains("token=<redacted>") && !line.contains(SECRET),
        "{line}"
    );
    // The token from LODESTAR_TOKEN.
    let mut from_env = lodestar(
        &url,
        &[
            "register",
            "--service",
            "echo",
            "--id",
            "b",
            "--endpoint",
            "grpc://127.0.0.1:50052",
        ],
    )
    .env("LODESTAR_TOKEN", SECRET)
    .spawn()
    .unwrap();
    let mut env_log = BufReader::new(from_env.stderr.take().unwrap()).lines();
    let line = wait_for(&mut env_log, "registered echo/b").await;
    assert!(!line.contains(SECRET), "{line}");
    eventually("both registered", PATIENCE, || async {
        ids(&url, "echo").await == ["a", "b"]
    })
    .await;

    for child in [&register, &from_env] {
        signal(child, "-TERM");
    }
    assert!(register.wait().await.unwrap().success());
    assert!(from_env.wait().await.unwrap().success());
    signal(&server, "-TERM");
    let mut rest = Vec::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(PATIENCE, server_log.next_line()).await {
        rest.push(line);
    }
    assert!(server.wait().await.unwrap().success());
    let rest = rest.join("\n");
    assert!(rest.contains("registry stopped"), "{rest}");
    assert!(
        rest.contains("TRACE") || rest.contains("DEBUG"),
        "logging at trace: {rest}"
    );
    assert!(
        !rest.contains(SECRET),
        "the token in the server's log:\n{rest}"
    );
    for mut lines in [log, env_log] {
        while let Ok(Ok(Some(line))) = tokio::time::timeout(PATIENCE, lines.next_line()).await {
            assert!(!line.contains(SECRET), "{line}");
        }
    }
}
