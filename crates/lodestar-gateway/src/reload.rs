//! Hot reload: the configuration file is read again on SIGHUP and when its
//! modification time or size changes (polled every second: cheap, and works
//! on every filesystem). A file that does not parse or validate is refused
//! with a log line naming the problem; the configuration in force stays.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use crate::{Gateway, config::Config};

/// How often the file's metadata is checked.
pub const POLL: Duration = Duration::from_secs(1);

/// Reads `path` (plus the `--route` flags) into a configuration.
pub fn load(path: &Path, route_flags: &[String]) -> Result<Config, crate::config::Error> {
    Config::from_file(path)?.with_route_flags(route_flags)
}

/// Reloads `gateway` from `path` on SIGHUP and on change, until dropped.
/// Fails only if the SIGHUP handler cannot be installed.
pub async fn follow(
    gateway: Gateway,
    path: PathBuf,
    route_flags: Vec<String>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut seen = stamp(&path);
    let mut poll = tokio::time::interval(POLL);
    loop {
        let why = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = poll.tick() => {
                let now = stamp(&path);
                if now == seen { continue; }
                seen = now;
                "file changed"
            }
        };
        match load(&path, &route_flags) {
            Ok(config) => {
                tracing::info!(file = %path.display(), why, "configuration reloaded");
                gateway.reload(config);
            }
            Err(error) => tracing::error!(
                file = %path.display(),
                why,
                error = %lodestar::ErrorChain(&error),
                "configuration refused; the previous one stays in force"
            ),
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
