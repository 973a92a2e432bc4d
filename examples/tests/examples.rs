//! Runs the built `server` and `client` examples as a user would, against an
//! in-process built-in registry node: the client's calls are served by the
//! pinned version in the asked lane, and a SIGTERM to a server releases it
//! (deregistered before it exits).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use lodestar_registry::server::{Config, Server};
use lodestar_test_support::eventually;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};

const PATIENCE: Duration = Duration::from_secs(20);

/// The example binary `name`, built by cargo (a no-op when up to date) with
/// this test's profile into this test's target directory, so that running
/// only this test (`--test examples`) never runs stale examples.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let profile_dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/examples-<hash>
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps")
            .to_path_buf();
        build_examples(&profile_dir);
        profile_dir
    });
    profile_dir.join("examples").join(name)
}

fn build_examples(profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo
        // `test --no-run`, as this test was built: the same features (dev-
        // dependencies included), so nothing is built twice.
        .args(["test", "--no-run", "--quiet", "-p", "lodestar-examples"])
        .env("CARGO_TARGET_DIR", target_dir);
    // What cargo set for this test, not for the build: with these, some
    // build scripts rerun and the whole tree is rebuilt every time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_MANIFEST_") {
            cargo.env_remove(&*key);
        }
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(profile) => {
            cargo.args(["--profile", profile]);
        }
        None => panic!("no profile directory in {}", profile_dir.display()),
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "building the examples: {status}");
}

/// A built-in registry node in this process; dropping it stops it.
struct RegistryNode {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RegistryNode {
    async fn start() -> RegistryNode {
        let server = Server::bind(Config::new(([127, 0, 0, 1], 0).into()))
            .await
            .expect("bind the registry");
        let addr = server.local_addr().expect("registry address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        RegistryNode {
            addr,
            _stop: stop,
            task,
        }
    }

    fn url(&self) -> String {
        format!("lodestar://{}", self.addr)
    }
}

impl Drop for RegistryNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `cargo run --example server -- <args>`, pointed at `registry`.
fn spawn_server(registry: &str, args: &[&str]) -> Child {
    Command::new(example("server"))
        .args(args)
        .env("LODESTAR_REGISTRY", registry)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the server example starts")
}

/// Runs the client example; every line it printed as `(instance, version)`
/// of the instance that served the call.
async fn run_client(registry: &str, args: &[&str]) -> Vec<(String, String)> {
    let run = Command::new(example("client"))
        .args(["--interval-ms", "0"])
        .args(args)
        .env("LODESTAR_REGISTRY", registry)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the client finishes in time")
        .expect("the client example runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client {args:?}: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(served_by).collect()
}

/// `call 1: served by a-1, version v1 (request lane: base)` -> `(a-1, v1)`.
fn served_by(line: &str) -> (String, String) {
    let rest = line
        .split_once("served by ")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("not a call line: {line:?}"));
    let (instance, rest) = rest.split_once(", version ").expect("a version");
    let version = rest.split_whitespace().next().expect("a version");
    (instance.to_string(), version.to_string())
}

fn all(instance: &str, version: &str, n: usize) -> Vec<(String, String)> {
    vec![(instance.to_string(), version.to_string()); n]
}

async fn ids(registry: &str) -> Vec<String> {
    let registry = lodestar_connect::connect(registry).await.expect("connect");
    let snapshot = registry.get("echo").await.expect("get echo");
    snapshot.instances().iter().map(|i| i.id.clone()).collect()
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_served_by_the_pinned_version_in_its_lane_and_servers_release_on_sigterm() {
    let node = RegistryNode::start().await;
    let url = node.url();
    let mut base = spawn_server(&url, &["--id", "base-v1", "--version", "v1"]);
    let _blue = spawn_server(
        &url,
        &["--id", "blue-v1", "--version", "v1", "--color", "blue"],
    );
    let _v2 = spawn_server(&url, &["--id", "base-v2", "--version", "v2"]);
    eventually("the three servers to register", PATIENCE, || async {
        ids(&url).await.len() == 3
    })
    .await;

    // Pinned to v1, no colour: the base lane of v1 only.
    assert_eq!(
        run_client(&url, &["--count", "6"]).await,
        all("base-v1", "v1", 6)
    );
    // The blue lane of v1.
    assert_eq!(
        run_client(&url, &["--count", "6", "--color", "blue"]).await,
        all("blue-v1", "v1", 6)
    );
    // Pinned to v2.
    assert_eq!(
        run_client(&url, &["--count", "4", "--version", "v2"]).await,
        all("base-v2", "v2", 4)
    );

    // SIGTERM: the server deregisters before it exits, and says so.
    let mut stdout = BufReader::new(base.stdout.take().expect("stdout")).lines();
    sigterm(&base);
    let status = tokio::time::timeout(PATIENCE, base.wait())
        .await
        .expect("the server exits in time")
        .expect("wait");
    assert!(status.success(), "{status}");
    let mut said = Vec::new();
    while let Some(line) = stdout.next_line().await.expect("readable") {
        said.push(line);
    }
    assert!(
        said.iter().any(|l| l.starts_with("serving echo/base-v1")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|l| l == "released echo/base-v1"),
        "{said:?}"
    );
    assert_eq!(ids(&url).await, ["base-v2", "blue-v1"]);
}
