//! The harness of the xDS tests: real `lodestar` processes (a registry node,
//! `serve-echo` instances, `lodestar xds`) and grpcio's xDS client in Python,
//! every child killed when its guard drops.

#![allow(dead_code)] // Each test file uses its own part of the harness.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use lodestar::Registry;
pub use lodestar_test_support::{free_port, grpcio_python as python, lodestar_binary};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

/// A child process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    fn spawn(name: &str, command: &mut Command) -> Proc {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// SIGTERM: the graceful sequence (serve-echo deregisters first).
    pub fn term(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// SIGKILL, and waits for the exit.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait(&mut self) {
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} exits", self.name))
            .expect("wait");
    }
}

/// A running world: a registry node and `lodestar xds`, both processes.
pub struct World {
    pub bin: PathBuf,
    pub registry_url: String,
    pub registry: Arc<dyn Registry>,
    pub xds_port: u16,
    pub xds: Option<Proc>,
    _registry: Proc,
    pub dir: tempdir::Dir,
}

impl World {
    /// Starts a registry node and an xDS server over it.
    pub async fn start(xds_args: &[&str]) -> World {
        let bin = lodestar_binary();
        let port = free_port();
        let registry_proc = Proc::spawn(
            "lodestar registry",
            Command::new(&bin).args(["registry", "--listen", &format!("127.0.0.1:{port}")]),
        );
        let registry_url = format!("lodestar://127.0.0.1:{port}");
        wait_tcp(port).await;
        let registry = lodestar_connect::connect(&registry_url)
            .await
            .expect("connect to the registry");
        let mut world = World {
            bin,
            registry_url,
            registry,
            xds_port: free_port(),
            xds: None,
            _registry: registry_proc,
            dir: tempdir::Dir::new(),
        };
        world.start_xds(xds_args).await;
        world
    }

    /// Starts `lodestar xds` on the world's port (again, after a kill).
    pub async fn start_xds(&mut self, extra: &[&str]) {
        let listen = format!("127.0.0.1:{}", self.xds_port);
        let mut command = Command::new(&self.bin);
        command
            .args(["--registry", &self.registry_url, "xds", "--listen", &listen])
            .args(extra);
        self.xds = Some(Proc::spawn("lodestar xds", &mut command));
        wait_tcp(self.xds_port).await;
    }

    /// Starts `lodestar serve-echo` with `args` (after `--service echo`).
    pub fn echo(&self, id: &str, args: &[&str]) -> Proc {
        Proc::spawn(
            &format!("serve-echo {id}"),
            Command::new(&self.bin)
                .args([
                    "--registry",
                    &self.registry_url,
                    "serve-echo",
                    "--service",
                    "echo",
                    "--id",
                    id,
                    "--propagation-delay-ms",
                    "500",
                ])
                .args(args),
        )
    }

    /// The bootstrap file naming this world's xDS server.
    pub fn bootstrap(&self, node: &str) -> PathBuf {
        self.bootstrap_in(node, None)
    }

    /// The bootstrap file of a client in `zone`.
    pub fn bootstrap_in(&self, node: &str, zone: Option<&str>) -> PathBuf {
        let locality = match zone {
            Some(zone) => serde_json::json!({"zone": zone}),
            None => serde_json::json!({}),
        };
        let path = self.dir.path().join(format!("bootstrap-{node}.json"));
        let json = serde_json::json!({
            "xds_servers": [{
                "server_uri": format!("127.0.0.1:{}", self.xds_port),
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }],
            "node": {"id": node, "locality": locality},
        });
        std::fs::write(&path, json.to_string()).expect("write the bootstrap file");
        path
    }

    /// grpcio's client of `xds:///echo`, configured by this world's bootstrap.
    pub async fn client(&self, node: &str) -> PyClient {
        PyClient::start(&self.bootstrap(node), "echo").await
    }

    /// grpcio's client of `xds:///echo`, its node in `zone`.
    pub async fn client_in(&self, node: &str, zone: &str) -> PyClient {
        PyClient::start(&self.bootstrap_in(node, Some(zone)), "echo").await
    }
}

/// Waits until something listens on `port` (bounded).
pub async fn wait_tcp(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port} after 10 s");
}

/// What a batch of calls got.
#[derive(Debug, Default)]
pub struct Batch {
    pub ok: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub detail: Option<String>,
}

impl Batch {
    pub fn total_ok(&self) -> u64 {
        self.ok.values().sum()
    }

    pub fn got(&self, id: &str) -> u64 {
        self.ok.get(id).copied().unwrap_or(0)
    }

    pub fn only(&self, ids: &[&str]) -> bool {
        self.ok.keys().all(|k| ids.contains(&k.as_str()))
    }
}

/// `tests/python/xds_client.py` running: one grpcio channel to
/// `xds:///SERVICE` for its whole life, driven line by line.
pub struct PyClient {
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl PyClient {
    pub async fn start(bootstrap: &Path, service: &str) -> PyClient {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/xds_client.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(service)
            .env("GRPC_XDS_BOOTSTRAP", bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the Python client");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        PyClient {
            stdin,
            stdout,
            _child: child,
        }
    }

    /// `n` calls with these headers.
    pub async fn calls(&mut self, n: usize, headers: &[(&str, &str)]) -> Batch {
        let mut line = format!("calls {n}");
        for (k, v) in headers {
            line.push_str(&format!(" {k}={v}"));
        }
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the client");
        let answer = tokio::time::timeout(Duration::from_secs(90), self.stdout.next_line())
            .await
            .expect("the Python client answers in time")
            .expect("read the client")
            .expect("the Python client is alive");
        let v: Value = serde_json::from_str(&answer).expect("a JSON line");
        let counts = |key: &str| -> BTreeMap<String, u64> {
            v[key]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        };
        Batch {
            ok: counts("ok"),
            errors: counts("errors"),
            detail: v["detail"].as_str().map(str::to_string),
        }
    }

    /// Batches of `n` calls until `done` holds for one (at most `tries`
    /// batches); every batch must be free of errors when `no_errors`.
    /// Returns the batch that satisfied `done`.
    pub async fn until(
        &mut self,
        what: &str,
        n: usize,
        headers: &[(&str, &str)],
        no_errors: bool,
        done: impl Fn(&Batch) -> bool,
    ) -> Batch {
        let mut last = Batch::default();
        for _ in 0..100 {
            last = self.calls(n, headers).await;
            if no_errors {
                assert!(
                    last.errors.is_empty(),
                    "calls failed while waiting for {what}: {last:?}"
                );
            }
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: not after 100 batches; last {last:?}");
    }
}

/// A temporary directory, removed on drop.
pub mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!(
                "lodestar-xds-test-{}-{}",
                std::process::id(),
                lodestar_test_support::free_port()
            ));
            std::fs::create_dir_all(&path).expect("create a temp dir");
            Dir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
