//! Child processes for fault tests: the `lodestar` binary, and signals that
//! freeze (SIGSTOP) and thaw (SIGCONT) a process without closing its
//! sockets.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child process killed (SIGKILL, after a SIGCONT in case it is stopped)
/// and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
}

/// The `lodestar` binary of this workspace, built first (a no-op when
/// fresh): cargo gives a package's tests the paths of its own binaries only.
///
/// # Panics
///
/// Panics, saying so, when the build fails.
pub fn lodestar_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "lodestar-cli",
            "--bin",
            "lodestar",
        ])
        .current_dir(&root)
        .status()
        .unwrap_or_else(|e| panic!("running cargo build -p lodestar-cli: {e}"));
    assert!(
        status.success(),
        "building the lodestar binary failed (cargo build -p lodestar-cli --bin lodestar)"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/lodestar");
    assert!(
        bin.is_file(),
        "{} missing after building lodestar-cli",
        bin.display()
    );
    bin
}

/// The Python interpreter with grpcio, for third-party gRPC client tests:
/// `LODESTAR_PYTHON`, else the venv `cargo xtask setup` makes in
/// `target/python`.
///
/// # Panics
///
/// Panics, saying how to get one, when it cannot import `grpc`: a test that
/// needs it fails, never skips.
pub fn grpcio_python() -> PathBuf {
    let path = std::env::var_os("LODESTAR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/python/bin/python")
        });
    let imports = Command::new(&path)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        imports,
        "{} cannot import grpc: run `cargo xtask setup` (it installs grpcio into target/python) \
         or set LODESTAR_PYTHON to a python with grpcio",
        path.display()
    );
    path
}

/// Sends `signal` (a name `kill` knows: `STOP`, `CONT`, `KILL`, `TERM`) to
/// `pid`; whether it was delivered.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// === impl Process ===

impl Process {
    /// Starts `command`, its output inherited (shown by a failing test).
    ///
    /// # Panics
    ///
    /// Panics when the command cannot be started.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Process {
        let name = name.into();
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process { name, child }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes it (SIGSTOP): its sockets stay open and nothing answers.
    pub fn freeze(&self) {
        assert!(signal(self.pid(), "STOP"), "SIGSTOP {}", self.name);
    }

    /// Thaws it (SIGCONT) after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        assert!(signal(self.pid(), "CONT"), "SIGCONT {}", self.name);
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Whether it has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        signal(self.pid(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
