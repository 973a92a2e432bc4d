//! `lodestar set` under load, on etcd and on the built-in registry: real
//! `serve-echo` servers, a running balanced channel and a running
//! `lodestar call`; setting an instance down takes it out of both with no
//! failed call, setting it up brings it back; on etcd the override survives
//! the instance's restart until `--clear`.

mod support;

use support::*;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use lodestar::Discovery;
use lodestar_echo::{EchoRequest, echo_client::EchoClient};
use lodestar_test_support::{EtcdNode, eventually, free_port};
use lodestar_tonic::Channel;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStderr},
};

/// Calls a running balanced channel made, by instance, and how many failed.
#[derive(Debug, Default)]
struct Tally {
    by_instance: BTreeMap<String, u64>,
    failed: u64,
}

/// A balanced channel under constant load (4 callers) until dropped.
struct Load {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(url: &str) -> Self {
        let registry = lodestar_connect::connect(url).await.unwrap();
        let discovery: Arc<dyn Discovery> = registry;
        let channel = Channel::builder(discovery, "echo")
            .policy(lodestar::balance::BuiltinPolicy::RoundRobin)
            .connect();
        let (tally, stop) = (Arc::default(), Arc::new(AtomicBool::new(false)));
        let tasks = (0..4)
            .map(|_| {
                let mut client = EchoClient::new(channel.clone());
                let (tally, stop): (Arc<Mutex<Tally>>, _) = (Arc::clone(&tally), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let request = EchoRequest {
                            message: "hi".into(),
                            delay_ms: 1,
                        };
                        let result = client.say(request).await;
                        let mut tally = tally.lock().unwrap();
                        match result {
                            Ok(reply) => {
                                *tally
                                    .by_instance
                                    .entry(reply.into_inner().instance)
                                    .or_default() += 1
                            }
                            Err(_) => tally.failed += 1,
                        }
                    }
                })
            })
            .collect();
        Self { tally, stop, tasks }
    }

    /// Starts a new count; what the callers did since the last one.
    fn take(&self) -> Tally {
        std::mem::take(&mut *self.tally.lock().unwrap())
    }

    /// Waits until a window of calls all went to `expected`, then checks a
    /// second window does too, with no failure in either.
    async fn settle_on(&self, what: &str, expected: &[&str]) {
        eventually(what, PATIENCE, || async {
            self.take();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let window = self.take();
            window.failed == 0 && window.by_instance.keys().eq(expected.iter())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let window = self.take();
        assert_eq!(window.failed, 0, "{what}: {window:?}");
        assert!(
            window.by_instance.keys().eq(expected.iter()),
            "{what}: calls went to {window:?}"
        );
    }

    async fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        self.take()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn_echo(url: &str, id: &str) -> (Child, Lines<BufReader<ChildStderr>>) {
    let args = [
        "serve-echo",
        "--service",
        "echo",
        "--id",
        id,
        "--ttl",
        "2",
        "--propagation-delay-ms",
        "200",
    ];
    let mut child = lodestar(url, &args).spawn().unwrap();
    let log = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, log)
}

async fn serve(url: &str, id: &str) -> (Child, Lines<BufReader<ChildStderr>>) {
    let (child, mut log) = spawn_echo(url, id);
    wait_for(&mut log, &format!("serving echo/{id}")).await;
    (child, log)
}

/// `lodestar set echo ID ARGS...`, which must succeed.
async fn set(url: &str, id: &str, args: &[&str]) {
    let mut all = vec!["set", "echo", id];
    all.extend_from_slice(args);
    let out = run(url, &all).await;
    assert_eq!(out.code, Some(0), "lodestar {all:?}: {}", out.stderr);
}

/// What `lodestar get echo --json` says of `id`'s status.
async fn status(url: &str, id: &str) -> Option<String> {
    let out = run(url, &["get", "echo", "--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|i| i["id"] == id)
        .map(|i| i["metadata"]["status"].as_str().unwrap_or("up").to_string())
}

/// A `lodestar call` running for `secs` seconds; its JSON summary.
fn spawn_call(url: &str, secs: &str) -> tokio::task::JoinHandle<serde_json::Value> {
    let url = url.to_string();
    let secs = secs.to_string();
    tokio::spawn(async move {
        let args = [
            "call",
            "echo",
            "--duration",
            &secs,
            "--concurrency",
            "4",
            "--json",
        ];
        let child = lodestar(&url, &args).spawn().unwrap();
        let output = tokio::time::timeout(PATIENCE * 2, child.wait_with_output())
            .await
            .expect("lodestar call finished")
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&output.stderr)))
    })
}

/// The story both backends share: a and b serve under load; a is set down
/// (no new calls, none failed), then up (back).
async fn down_and_up(url: &str) -> Load {
    let load = Load::start(url).await;
    load.settle_on("a and b to take calls", &["a", "b"]).await;
    let call = spawn_call(url, "4");
    tokio::time::sleep(Duration::from_millis(500)).await;

    set(url, "a", &["--status", "down"]).await;
    assert_eq!(status(url, "a").await.as_deref(), Some("down"));
    load.settle_on("only b to take calls once a is down", &["b"])
        .await;
    // A `lodestar call` started now never sends a call to a.
    let out = run(
        url,
        &[
            "call",
            "echo",
            "--count",
            "200",
            "--concurrency",
            "4",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        summary["by_instance"],
        serde_json::json!({"b": 200}),
        "{summary}"
    );
    // The one that ran across the change failed no call.
    let summary = call.await.unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(summary["ok"].as_u64().unwrap() > 0, "{summary}");

    set(url, "a", &["--status", "up"]).await;
    load.settle_on("a to take calls again", &["a", "b"]).await;
    load
}

#[tokio::test]
async fn set_down_and_up_under_load_on_etcd_and_the_override_outlives_a_restart() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let (mut a, _a_log) = serve(&url, "a").await;
    let (_b, _b_log) = serve(&url, "b").await;
    let load = down_and_up(&url).await;

    // Down again, then a restarts: still down until --clear.
    set(&url, "a", &["--status", "down"]).await;
    load.settle_on("only b once a is down again", &["b"]).await;
    signal(&a, "-TERM");
    a.wait().await.unwrap();
    let (_a, _a_log) = serve(&url, "a").await;
    eventually("a registered again", PATIENCE, || async {
        status(&url, "a").await.is_some()
    })
    .await;
    assert_eq!(
        status(&url, "a").await.as_deref(),
        Some("down"),
        "the override outlived a"
    );
    load.settle_on("a restarted but still down", &["b"]).await;
    set(&url, "a", &["--clear"]).await;
    assert_eq!(status(&url, "a").await.as_deref(), Some("up"));
    load.settle_on("a back once cleared", &["a", "b"]).await;
    let rest = load.stop().await;
    assert_eq!(rest.failed, 0, "{rest:?}");
}

#[tokio::test]
async fn set_down_and_up_under_load_on_the_built_in_registry() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut registry = lodestar("memory:", &["registry", "--listen", &addr])
        .spawn()
        .unwrap();
    let mut log = BufReader::new(registry.stderr.take().unwrap()).lines();
    wait_for(&mut log, "registry listening on").await;
    let url = format!("lodestar://{addr}");
    let (_a, _a_log) = serve(&url, "a").await;
    let (_b, _b_log) = serve(&url, "b").await;
    let load = down_and_up(&url).await;

    // --clear puts the owner's record back: down, then cleared.
    set(&url, "a", &["--status", "down", "--weight", "7"]).await;
    load.settle_on("only b once a is down again", &["b"]).await;
    set(&url, "a", &["--clear"]).await;
    assert_eq!(status(&url, "a").await.as_deref(), Some("up"));
    load.settle_on("a back once cleared", &["a", "b"]).await;
    let rest = load.stop().await;
    assert_eq!(rest.failed, 0, "{rest:?}");
}

#[tokio::test]
async fn set_refuses_bad_flags_and_unknown_instances() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let (_a, _a_log) = serve(&url, "a").await;
    for (args, needle) in [
        (vec!["set", "echo", "a"], "nothing to set"),
        (
            vec!["set", "echo", "a", "--status", "sideways"],
            "neither up nor down",
        ),
        (vec!["set", "echo", "a", "--weight", "0"], "weight"),
        (vec!["set", "echo", "a", "--meta", "novalue"], "key=value"),
        (
            vec!["set", "echo", "a", "--clear", "--status", "down"],
            "cannot be used",
        ),
    ] {
        let out = run(&url, &args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
    let out = run(&url, &["set", "echo", "nobody", "--status", "down"]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("no instance echo/nobody"),
        "{}",
        out.stderr
    );
    let out = run(&url, &["set", "echo", "a", "--clear"]).await;
    assert_eq!(out.code, Some(1), "nothing to clear: {}", out.stderr);
    let out = run(
        &url,
        &[
            "set", "echo", "a", "--weight", "3", "--meta", "k=v", "--json",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(line["found"], true);
    assert_eq!(
        line["override"],
        serde_json::json!({"weight": 3, "metadata": {"k": "v"}})
    );
}
