//! Finding the etcd server binary.

use std::env;
use std::path::{Path, PathBuf};

/// Where etcd is commonly installed when it is not on `PATH`.
const FALLBACKS: [&str; 2] = ["/usr/bin/etcd", "/usr/local/bin/etcd"];

/// Returns the path of the etcd server binary the harness runs.
///
/// Looks at `$ETCD_BIN` first, then for `etcd` on `PATH`, then at
/// `/usr/bin/etcd` and `/usr/local/bin/etcd`.
///
/// # Panics
///
/// Panics when no etcd binary is found (or `$ETCD_BIN` names a missing
/// file). Tests that need etcd must fail loudly, never skip silently.
pub fn etcd_binary() -> PathBuf {
    if let Some(bin) = env::var_os("ETCD_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "ETCD_BIN={} does not exist: tests that need etcd cannot run. \
             Point ETCD_BIN at an etcd 3.4+ server binary, or unset it to search PATH",
            bin.display()
        );
        return bin;
    }
    on_path("etcd")
        .or_else(|| FALLBACKS.iter().map(PathBuf::from).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "etcd not found: tests that need etcd cannot run. Run `cargo xtask test` \
                 (it installs etcd), or install etcd 3.4+ and put it on PATH, or set ETCD_BIN"
            )
        })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
