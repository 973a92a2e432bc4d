//! An echo gRPC server that registers itself, and leaves gracefully.
//!
//! ```sh
//! lodestar registry &                          # the built-in registry, 127.0.0.1:7171
//! cargo run --example server                   # echo, version v1, base lane
//! cargo run --example server -- --id blue-1 --color blue
//! cargo run --example server -- --id v2-1 --version v2
//! ```
//!
//! The serve helper binds (port 0: any free port), marks gRPC health
//! SERVING, and registers the real address only then. On Ctrl-C or SIGTERM
//! it goes NOT_SERVING, deregisters, waits for clients to notice and drains
//! the calls in flight before returning: no client call is lost.
//!
//! Every flag also reads an environment variable (`ECHO_ID`, `ECHO_VERSION`,
//! `ECHO_COLOR`, ...), and `LODESTAR_REGISTRY` picks the registry: any URL
//! `lodestar_connect::connect` takes (`lodestar://`, `etcd://`).
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![forbid(unsafe_code)]

use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use lodestar::Instance;
use lodestar_echo::{EchoService, echo_server::EchoServer};
use lodestar_tonic::serve;
use tonic::service::Routes;

/// Flags of the example server.
#[derive(Debug, Parser)]
struct Args {
    /// The registry URL.
    #[arg(
        long,
        env = "LODESTAR_REGISTRY",
        default_value = "lodestar://127.0.0.1:7171"
    )]
    registry: String,
    /// The service to register.
    #[arg(long, env = "ECHO_SERVICE", default_value = "echo")]
    service: String,
    /// This instance's id (default: `echo-<pid>`).
    #[arg(long, env = "ECHO_ID")]
    id: Option<String>,
    /// The version clients can pin.
    #[arg(long, env = "ECHO_VERSION", default_value = "v1")]
    version: String,
    /// The colour lane this instance serves (none: the base lane).
    #[arg(long, env = "ECHO_COLOR")]
    color: Option<String>,
    /// Where to listen; port 0 picks a free one (the real one is registered).
    #[arg(long, env = "ECHO_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Installed first, so a signal during start-up still releases cleanly.
    let shutdown = serve::shutdown_signal().context("installing signal handlers")?;
    let registry = lodestar_connect::connect(&args.registry).await?;

    let id = args
        .id
        .unwrap_or_else(|| format!("echo-{}", std::process::id()));
    let mut instance = Instance::new(&args.service, &id).with_version(&args.version);
    if let Some(color) = &args.color {
        instance = instance.with_metadata("color", color);
    }
    let bound = serve::Server::builder(registry, instance)
        .listen(args.listen)
        .bind()
        .await?;
    let lane = args.color.as_deref().unwrap_or("base");
    println!(
        "serving {}/{id} (version {}, {lane} lane) on {}; Ctrl-C releases it",
        args.service,
        args.version,
        bound.local_addr()
    );

    let echo = EchoServer::new(EchoService::new(bound.instance().clone()));
    bound.serve(Routes::new(echo), shutdown).await?;
    println!("released {}/{id}", args.service);
    Ok(())
}
