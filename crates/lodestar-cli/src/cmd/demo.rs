//! `lodestar demo`: the story of lodestar in about a minute, on loopback.
//!
//! A registry (the built-in one in-process by default, or the one
//! `--registry` names), an echo fleet (three v1 instances, one v2, one in
//! the `blue` lane, one 50 ms slow) and the HTTP gateway in front; steady
//! traffic through the balanced channel and the gateway; then a script of
//! real events, each announced and measured: scale out, a rolling restart,
//! kill -9, an operator's `down`, pins and lanes, the slow instance under
//! p2c and round robin. A summary table ends it; the exit status is 0 only
//! if every promise held. SIGINT/SIGTERM stop it cleanly, deregistering
//! everything it started.
//!
//! ```text
//! fleet     the echo instances, the gateway, the crash step's child process
//! traffic   the load generators and what they measured
//! view      the live terminal view, or plain lines when piped
//! script    the steps, each announced, done and measured
//! summary   the closing table and the verdict
//! ```

mod fleet;
mod script;
mod summary;
mod traffic;
mod view;

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use lodestar::{Discovery, Registrar, balance::BuiltinPolicy};
use lodestar_registry::server;
use lodestar_tonic::Channel;
use tokio::task::JoinHandle;

use self::{
    fleet::{Fleet, SERVICE},
    script::{Script, Timing},
    traffic::{Load, Stats},
    view::{Live, Log},
};
use crate::{
    cmd::Shutdown,
    output::{errln, outln},
    registry,
};

/// Exit status after SIGINT/SIGTERM, as a shell reports a signalled process.
const INTERRUPTED: u8 = 130;

/// Flags of `lodestar demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Pause between steps, in milliseconds (default 5000, or 100 with --quick).
    #[arg(long, value_name = "MS")]
    pause_ms: Option<u64>,
    /// The short run, for tests and CI: short pauses and 1 s measuring windows.
    #[arg(long)]
    quick: bool,
    /// Plain lines even on a terminal (no live view).
    #[arg(long)]
    plain: bool,
}

/// The registry the demo runs on, and the in-process node when it is ours.
struct Registry {
    registrar: Arc<dyn Registrar>,
    discovery: Arc<dyn Discovery>,
    url: String,
    node: Option<JoinHandle<std::io::Result<()>>>,
}

// === impl Args ===

impl Args {
    fn timing(&self) -> Timing {
        let (pause, window) = if self.quick {
            (100, 1000)
        } else {
            (5000, 3000)
        };
        Timing {
            pause: Duration::from_millis(self.pause_ms.unwrap_or(pause)),
            window: Duration::from_millis(window),
        }
    }
}

/// Runs the demo on `url`: the default URL means an in-process node of the
/// built-in registry; any other is used as it is (etcd, a running node).
pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    // Before anything registers: a signal from here on deregisters it all.
    let mut shutdown = Shutdown::new()?;
    let log = Log::new(view::plain(args.plain));
    let registry = connect(url).await?;
    let propagation = Duration::from_millis(300);
    let mut fleet = Fleet::new(
        registry.registrar.clone(),
        registry.discovery.clone(),
        registry.url.clone(),
        propagation,
    );
    let stats = Stats::default();
    let live = Live::start(&log, &stats)?;
    let watcher = tokio::spawn(log.clone().follow(registry.discovery.clone()));
    let result = {
        let story = story(&mut fleet, &log, &stats, args.timing());
        tokio::select! {
            result = story => Ok(result),
            signal = shutdown.recv() => Err(signal),
        }
    };
    if let Some(live) = live {
        live.stop().await;
    }
    let released = fleet.shutdown().await;
    watcher.abort();
    if let Some(node) = registry.node {
        node.abort();
    }
    match result {
        Err(signal) => {
            errln!(
                "lodestar demo: {signal}: stopped; {released} instances stopped and deregistered"
            );
            Ok(ExitCode::from(INTERRUPTED))
        }
        Ok(Err(error)) => Err(error),
        Ok(Ok(outcomes)) => Ok(if summary::print(&outcomes) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
    }
}

/// Starts the fleet, the gateway and the traffic, then plays the script.
async fn story(
    fleet: &mut Fleet,
    log: &Log,
    stats: &Stats,
    timing: Timing,
) -> anyhow::Result<Vec<summary::Outcome>> {
    log.event(
        "1. the fleet: echo-1..3 (v1), echo-v2 (v2), echo-blue (blue lane), echo-slow (+50 ms), \
         the gateway in front; steady traffic through the balanced channel (p2c) and the gateway",
    );
    for spec in script::initial_fleet() {
        fleet.start(&spec).await?;
    }
    let gateway = fleet.start_gateway().await?;
    log.event(format!("   gateway on http://{gateway}/echo"));
    let channel = Channel::builder(fleet.discovery.clone(), SERVICE)
        .policy(BuiltinPolicy::P2c)
        .connect();
    log.routes(&script::routes(None));
    let load = Load::start(stats, &channel, gateway, (4, 2), Duration::from_millis(10));
    let mut script = Script {
        fleet,
        stats: stats.clone(),
        log: log.clone(),
        channel,
        gateway,
        http: traffic::http_client(),
        timing,
        outcomes: Vec::new(),
    };
    let played = script.run().await;
    load.stop().await;
    played?;
    Ok(script.outcomes)
}

/// The registry: an in-process node for the default URL, else `url`.
async fn connect(url: &str) -> anyhow::Result<Registry> {
    if url.starts_with("memory:") {
        anyhow::bail!(
            "the demo's kill -9 step runs a `lodestar serve-echo` process, which cannot see an \
             in-process memory: registry; leave --registry out (the built-in registry then runs \
             in-process) or give lodestar://... or etcd://..."
        );
    }
    let (url, node) = if url == registry::DEFAULT_URL {
        let config = server::Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        let node = server::Server::bind(config)
            .await
            .context("starting the built-in registry in-process")?;
        let addr = node.local_addr()?;
        let task = tokio::spawn(node.serve(std::future::pending()));
        outln!(
            "lodestar demo: the built-in registry runs in-process on {addr} (--registry etcd://... to use etcd)"
        );
        (format!("lodestar://{addr}"), Some(task))
    } else {
        outln!(
            "lodestar demo: on the registry at {shown}",
            shown = crate::registry::shown(url)
        );
        (url.to_string(), None)
    };
    let connected = registry::connect(&url, Some(Duration::from_secs(3))).await?;
    Ok(Registry {
        registrar: connected.registrar,
        discovery: connected.discovery,
        url,
        node,
    })
}
