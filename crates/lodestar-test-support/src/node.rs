//! One real etcd process on loopback ports, with its own data and log.

use std::env;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::{etcd_binary, http, port};

/// How long a start or restart may take before the harness gives up.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How often startup and leader waits poll.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// How many fresh port sets a start tries when etcd finds its ports taken.
const PORT_ATTEMPTS: usize = 5;

/// How much of the log a startup failure quotes.
const LOG_TAIL_LINES: usize = 30;

/// Numbers temp dirs and cluster tokens uniquely within this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// One etcd server process on free loopback ports.
///
/// [`EtcdNode::start`] runs a single-node cluster; an [`EtcdCluster`]
/// is made of several nodes. Each node owns a scratch directory under
/// [`std::env::temp_dir`] holding its data dir (`data/`) and the log of its
/// stdout and stderr (`etcd.log`, kept across restarts). Dropping the node
/// kills the process and removes the directory; if the thread is panicking
/// (a failed test) the log is kept and its path printed.
///
/// Faults: [`kill`](Self::kill) (SIGKILL), [`restart`](Self::restart)
/// (same ports, same data) and [`restart_empty`](Self::restart_empty)
/// (same ports, all data lost).
///
/// # Examples
///
/// ```no_run
/// # async fn demo() {
/// use lodestar_test_support::EtcdNode;
///
/// let mut etcd = EtcdNode::start().await;
/// let url = etcd.url(); // "etcd://127.0.0.1:PORT"
/// etcd.kill();
/// assert!(!etcd.is_healthy().await);
/// etcd.restart().await;
/// # }
/// ```
///
/// [`EtcdCluster`]: crate::EtcdCluster
#[derive(Debug)]
pub struct EtcdNode {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster`: every member's `name=peer URL`.
    initial_cluster: String,
    /// `--initial-cluster-token`, unique per cluster (and per wipe).
    token: String,
    /// Scratch dir holding `data/` and `etcd.log`.
    root: PathBuf,
    child: Option<Child>,
    /// Length of the log when the current process was spawned.
    log_start: u64,
}

/// What `/v3/maintenance/status` says about a member's view of the cluster.
#[derive(Debug)]
pub(crate) struct Status {
    pub(crate) member_id: String,
    /// `"0"` when the member knows no leader.
    pub(crate) leader: String,
    pub(crate) raft_term: u64,
}

/// Why a process did not become healthy.
#[derive(Debug)]
enum StartError {
    /// etcd exited because a port it was given was taken meanwhile.
    PortTaken,
    Failed(String),
}

/// Starts `n` processes forming one cluster and waits until all are
/// healthy, retrying on fresh ports (boundedly) when a port was taken.
pub(crate) async fn start_members(n: usize) -> Vec<EtcdNode> {
    // Fail on a missing etcd before creating anything to clean up.
    etcd_binary();
    let mut attempt = 1;
    loop {
        let mut nodes = plan(n);
        nodes.iter_mut().for_each(EtcdNode::spawn);
        match wait_healthy(&mut nodes).await {
            Ok(()) => return nodes,
            Err((i, StartError::PortTaken)) if attempt < PORT_ATTEMPTS => {
                tracing::debug!(node = %nodes[i].name, attempt, "etcd port taken; retrying on new ports");
                attempt += 1;
            }
            Err((i, error)) => nodes[i].fail(&error),
        }
    }
}

/// Lays out `n` members on fresh ports, not yet started.
fn plan(n: usize) -> Vec<EtcdNode> {
    let ports = port::free_ports(2 * n);
    let token = format!("lodestar-{}-{}", std::process::id(), next_id());
    let names: Vec<String> = (0..n).map(|i| format!("node{i}")).collect();
    let initial_cluster = names
        .iter()
        .zip(ports.chunks(2))
        .map(|(name, p)| format!("{name}=http://127.0.0.1:{}", p[1]))
        .collect::<Vec<_>>()
        .join(",");
    names
        .into_iter()
        .zip(ports.chunks(2))
        .map(|(name, p)| EtcdNode::new(name, p[0], p[1], &initial_cluster, &token))
        .collect()
}

/// Waits until every node in `nodes` answers `/health` healthy.
///
/// Fails fast when a process exits; gives up after [`STARTUP_TIMEOUT`].
async fn wait_healthy(nodes: &mut [EtcdNode]) -> Result<(), (usize, StartError)> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut healthy = vec![false; nodes.len()];
    loop {
        for (i, node) in nodes.iter_mut().enumerate() {
            if let Some(error) = node.exited() {
                return Err((i, error));
            }
            healthy[i] = healthy[i] || node.is_healthy().await;
        }
        match healthy.iter().position(|h| !h) {
            None => return Ok(()),
            Some(i) if Instant::now() >= deadline => {
                let why = format!("not healthy after {STARTUP_TIMEOUT:?}");
                return Err((i, StartError::Failed(why)));
            }
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

// === impl EtcdNode ===

impl EtcdNode {
    /// Starts a single-node etcd cluster on free loopback ports and waits
    /// until `/health` reports it healthy.
    ///
    /// # Panics
    ///
    /// Panics, quoting the end of etcd's log, if etcd is missing (see
    /// [`etcd_binary`]), exits, or is not healthy within 20 seconds.
    pub async fn start() -> EtcdNode {
        let mut nodes = start_members(1).await;
        nodes.remove(0)
    }

    /// The client address, `127.0.0.1:PORT`.
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client address as a lodestar URL, `etcd://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.client_addr())
    }

    /// The member name given to etcd (`node0`, `node1`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id of the last process started, `None` after
    /// [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive (it was not killed and did not
    /// exit on its own).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Whether `GET /health` answers `{"health":"true"}` right now.
    ///
    /// etcd 3.4 reports healthy only once the member knows a leader and can
    /// serve a quorum read.
    pub async fn is_healthy(&self) -> bool {
        let Ok(rsp) = http::get(&self.client_addr(), "/health").await else {
            return false;
        };
        // The gateway spells the flag as a string, not a JSON boolean.
        rsp.json().is_ok_and(|body| body["health"] == "true")
    }

    /// The file etcd's stdout and stderr go to, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("etcd.log")
    }

    /// The etcd data dir (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Kills the process with SIGKILL and waits for it to exit. Does
    /// nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it already exited; the wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports with the same data, killing the
    /// running process first, and waits until it is healthy.
    ///
    /// A cluster member rejoins its cluster; health then needs a quorum.
    ///
    /// # Panics
    ///
    /// Panics, quoting the log, if it is not healthy within 20 seconds.
    pub async fn restart(&mut self) {
        self.kill();
        self.respawn().await;
    }

    /// Kills etcd, wipes its data dir and starts a brand-new etcd on the
    /// same ports: same address, but every key, lease and revision is gone.
    ///
    /// Meant for single nodes ([`start`](Self::start)): a wiped member of a
    /// multi-node cluster cannot bootstrap again.
    ///
    /// # Panics
    ///
    /// Panics, quoting the log, if it is not healthy within 20 seconds.
    pub async fn restart_empty(&mut self) {
        self.kill();
        let data = self.data_dir();
        if let Err(e) = fs::remove_dir_all(&data) {
            assert!(
                e.kind() == std::io::ErrorKind::NotFound,
                "wiping {}: {e}",
                data.display()
            );
        }
        // A new token gives the new cluster a new cluster id, as a really
        // re-provisioned etcd would have.
        self.token = format!("lodestar-{}-{}", std::process::id(), next_id());
        self.respawn().await;
    }

    /// This member's status, or `None` if it does not answer.
    pub(crate) async fn status(&self) -> Option<Status> {
        let body = serde_json::json!({});
        let rsp = http::post_json(&self.client_addr(), "/v3/maintenance/status", &body).await;
        let json = rsp.ok()?.json().ok()?;
        // The gateway encodes 64-bit integers as JSON strings.
        let header = &json["header"];
        Some(Status {
            member_id: header["member_id"].as_str()?.to_owned(),
            leader: json["leader"].as_str().unwrap_or("0").to_owned(),
            raft_term: header["raft_term"].as_str()?.parse().ok()?,
        })
    }

    /// Whether a process was started and not killed since.
    pub(crate) fn spawned(&self) -> bool {
        self.child.is_some()
    }

    fn new(name: String, client_port: u16, peer_port: u16, cluster: &str, token: &str) -> Self {
        let root = env::temp_dir().join(format!(
            "lodestar-etcd-{}-{}",
            std::process::id(),
            next_id()
        ));
        // A leftover from an earlier process that had our pid.
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        Self {
            name,
            client_port,
            peer_port,
            initial_cluster: cluster.to_owned(),
            token: token.to_owned(),
            root,
            child: None,
            log_start: 0,
        }
    }

    async fn respawn(&mut self) {
        self.spawn();
        if let Err((_, error)) = wait_healthy(std::slice::from_mut(self)).await {
            self.fail(&error);
        }
    }

    fn spawn(&mut self) {
        let bin = etcd_binary();
        let args = self.args();
        let mut log = self.open_log();
        self.log_start = log.seek(SeekFrom::End(0)).unwrap_or(0);
        // Marks each run so a log spanning restarts stays readable.
        let _ = writeln!(
            log,
            "=== lodestar-test-support: {} {}",
            bin.display(),
            args.join(" ")
        );
        let stdout = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning log handle: {e}"));
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        // etcd refuses to start when an ETCD_* variable shadows a flag we pass.
        for (key, _) in env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") && key != "ETCD_UNSUPPORTED_ARCH" {
                cmd.env_remove(key);
            }
        }
        if cfg!(target_arch = "aarch64") {
            // etcd 3.4 refuses to run on arm64 unless told this.
            cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        self.child = Some(child);
    }

    fn args(&self) -> Vec<String> {
        let client = format!("http://{}", self.client_addr());
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let pairs = [
            ("--name", self.name.clone()),
            ("--data-dir", self.data_dir().display().to_string()),
            ("--listen-client-urls", client.clone()),
            ("--advertise-client-urls", client),
            ("--listen-peer-urls", peer.clone()),
            ("--initial-advertise-peer-urls", peer),
            ("--initial-cluster", self.initial_cluster.clone()),
            ("--initial-cluster-token", self.token.clone()),
            ("--initial-cluster-state", "new".to_owned()),
            // Fast elections keep leader-loss tests short; loopback has no
            // real latency, so 50 ms heartbeats are safe.
            ("--heartbeat-interval", "50".to_owned()),
            ("--election-timeout", "500".to_owned()),
            ("--logger", "zap".to_owned()),
            ("--log-level", "warn".to_owned()),
        ];
        pairs
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_owned(), value])
            .collect()
    }

    fn open_log(&self) -> File {
        let path = self.log_path();
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
    }

    /// `Some` if the process has exited, saying why.
    fn exited(&mut self) -> Option<StartError> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        if self.log_since_spawn().contains("address already in use") {
            return Some(StartError::PortTaken);
        }
        Some(StartError::Failed(format!("etcd exited: {status}")))
    }

    fn log_since_spawn(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let _ = file.seek(SeekFrom::Start(self.log_start));
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines[start..].join("\n")
    }

    fn fail(&mut self, error: &StartError) -> ! {
        let why = match error {
            StartError::PortTaken => "a port it needs is already in use".to_owned(),
            StartError::Failed(why) => why.clone(),
        };
        let mut msg = format!(
            "etcd {} on {} failed to start: {why}",
            self.name,
            self.client_addr()
        );
        let _ = write!(
            msg,
            "\n--- last {LOG_TAIL_LINES} lines of {} ---\n{}",
            self.log_path().display(),
            self.log_tail()
        );
        self.kill();
        panic!("{msg}");
    }
}

impl Drop for EtcdNode {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // A failing test: keep the log for the post-mortem.
            let _ = fs::remove_dir_all(self.data_dir());
            eprintln!(
                "etcd {} log kept at {}",
                self.name,
                self.log_path().display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
