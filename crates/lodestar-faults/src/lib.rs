//! Harness of lodestar's fault tests (`tests/`, one file per fault; the
//! promises they check are in `docs/RELIABILITY.md`).
//!
//! - [`Load`]: steady balanced calls through a lodestar-tonic channel,
//!   counting successes per instance and failures;
//! - [`echo`]: an in-process echo server registered through the serve
//!   helper; [`serve_echo`]: a `lodestar serve-echo` child process (for
//!   SIGSTOP);
//! - [`RegistryNode`]: a built-in registry node in-process, killed and
//!   restarted on its port;
//! - [`figure`]: prints a measured figure in the form docs/RELIABILITY.md
//!   quotes (`figure: ...`). Figures are reported, never asserted: the
//!   machine is shared.

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

mod echo;
mod load;
mod registry;

use std::{collections::BTreeSet, future::Future, sync::Arc, time::Duration};

use lodestar::Discovery;

pub use self::echo::{Echo, echo, serve_echo};
pub use self::load::{Load, Tally};
pub use self::registry::RegistryNode;

/// Prints one measured figure, `figure: <what>`, for docs/RELIABILITY.md.
pub fn figure(what: impl std::fmt::Display) {
    println!("figure: {what}");
}

/// The ids `discovery` lists for `service` now (empty when it cannot say).
pub async fn listed(discovery: &dyn Discovery, service: &str) -> BTreeSet<String> {
    match tokio::time::timeout(Duration::from_secs(3), discovery.get(service)).await {
        Ok(Ok(snapshot)) => snapshot.instances().iter().map(|i| i.id.clone()).collect(),
        _ => BTreeSet::new(),
    }
}

/// The set of `ids`.
pub fn ids(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// Waits until `check` holds, polling every 50 ms, at most `limit`; how
/// long it took, or `None` if it never held.
pub async fn time_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A shared registry handle, as `lodestar_connect::connect` gives it.
pub type Registry = Arc<dyn lodestar::Registry>;

/// Connects to `url`, retrying for up to 10 s.
///
/// # Panics
///
/// Panics when it never connects.
pub async fn connect(url: &str) -> Registry {
    for _ in 0..100 {
        if let Ok(registry) = lodestar_connect::connect(url).await {
            return registry;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {url}")
}
