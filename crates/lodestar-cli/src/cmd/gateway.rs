//! `lodestar gateway`: the HTTP/gRPC gateway over discovered instances
//! (`lodestar-gateway`); SIGHUP re-reads `--config`, SIGTERM drains.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use lodestar_gateway::{Gateway, Listeners, config::Config, reload};
use tokio::net::TcpListener;

use crate::output::errln;
use crate::{cmd::Shutdown, registry};

/// Flags of `lodestar gateway`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to serve HTTP/1.1 and HTTP/2 (cleartext).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Where to serve /metrics (Prometheus) and /healthz.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// A route: requests whose path starts with PREFIX go to SERVICE (repeatable; longest prefix wins).
    #[arg(long = "route", value_name = "PREFIX=SERVICE")]
    routes: Vec<String>,
    /// A TOML file of routes and limits (see docs/gateway.md); re-read on SIGHUP and on change.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Threads serving the proxy, each with its own socket (SO_REUSEPORT) and backend connections [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

/// Serves until SIGTERM/SIGINT, then drains.
pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::new()?;
    let config = match &args.config {
        Some(path) => reload::load(path, &args.routes),
        None => Config::default().with_route_flags(&args.routes),
    }
    .context("invalid gateway configuration")?;
    if config.routes.is_empty() {
        anyhow::bail!("no route: give --route PREFIX=SERVICE or a --config file with [[route]]s");
    }
    let registry = registry::connect(url, None).await?;
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let listeners = Listeners::bind(args.listen, workers)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let gateway = Gateway::new(registry.discovery, config);
    let admin = match args.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin)"))?,
        ),
        None => None,
    };
    errln!(
        "lodestar: gateway on {} ({} workers); SIGHUP reloads, SIGTERM drains",
        listeners.local_addr(),
        listeners.workers()
    );
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(admin) = admin {
        let gateway = gateway.clone();
        tasks.spawn(async move { gateway.serve_admin(admin, std::future::pending()).await });
    }
    if let Some(path) = args.config {
        let gateway = gateway.clone();
        let routes = args.routes.clone();
        tasks.spawn(async move {
            if let Err(error) = reload::follow(gateway, path, routes).await {
                tracing::error!(%error, "cannot install the SIGHUP handler; reload by file change only");
            }
        });
    }
    let served = gateway
        .serve_workers(listeners, shutdown.into_future())
        .await;
    tasks.abort_all();
    served.context("a gateway worker failed")?;
    errln!("lodestar: gateway stopped");
    Ok(ExitCode::SUCCESS)
}
