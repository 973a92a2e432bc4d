//! `lodestar xds`: the xDS management server (`lodestar-xds`): gRPC clients
//! in any language resolve `xds:///SERVICE` against it.

use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context;
use lodestar_xds::{Policy, Server};
use tokio::net::TcpListener;

use crate::output::errln;
use crate::{cmd::Shutdown, registry};

/// Flags of `lodestar xds`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to serve ADS (gRPC, cleartext): the server_uri of the clients' bootstrap file.
    #[arg(long, default_value = "127.0.0.1:18000", value_name = "ADDR")]
    listen: SocketAddr,
    /// The clusters' policy for services not named by --service-policy: round_robin, weighted or ring_hash (lodestar's policy names map to these).
    #[arg(long, default_value = "weighted", value_name = "POLICY")]
    policy: Policy,
    /// The policy of one service's clusters (repeatable).
    #[arg(long = "service-policy", value_name = "SERVICE=POLICY", value_parser = parse_service_policy)]
    service_policies: Vec<(String, Policy)>,
}

/// Serves until SIGTERM/SIGINT.
pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::new()?;
    let registry = registry::connect(url, None).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut server = Server::new(registry.discovery).default_policy(args.policy);
    for (service, policy) in args.service_policies {
        server = server.policy(service, policy);
    }
    errln!(
        "lodestar: xDS (ADS v3) on {}; point GRPC_XDS_BOOTSTRAP's server_uri there and call xds:///SERVICE",
        listener.local_addr()?
    );
    server
        .serve(listener, shutdown.into_future())
        .await
        .context("the xDS server failed")?;
    errln!("lodestar: xDS server stopped");
    Ok(ExitCode::SUCCESS)
}

fn parse_service_policy(s: &str) -> Result<(String, Policy), String> {
    let (service, policy) = s
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=POLICY, got {s:?}"))?;
    let policy = policy.parse::<Policy>().map_err(|e| e.to_string())?;
    Ok((service.to_string(), policy))
}
