//! `lodestar serve-echo`: a gRPC (and optionally HTTP) echo service that
//! registers itself through the serve helper; SIGTERM runs the graceful
//! sequence.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;
use lodestar::{Endpoint, Instance};
use lodestar_echo::{EchoService, echo_server::EchoServer, http};
use lodestar_tonic::serve;
use tokio::net::TcpListener;

use crate::output::errln;
use crate::{
    cmd::{Shutdown, register::InstanceArgs},
    registry,
};

/// Flags of `lodestar serve-echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    instance: InstanceArgs,
    /// Where to serve gRPC (port 0: any free port; the real one is registered).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: SocketAddr,
    /// Also serve the HTTP echo here (JSON naming the instance, body echo, /status/NNN, /delay/MS, /ws).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// The host to register when listening on 0.0.0.0.
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Latency added to every call, in milliseconds (for balancer tests).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    delay_ms: u64,
    /// Time between deregistering and closing, for clients to notice.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    propagation_delay_ms: u64,
}

/// Serves until SIGTERM/SIGINT, then releases gracefully.
pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::new()?;
    let mut instance = args.instance.instance();
    let name = format!("{}/{}", instance.service, instance.id);
    let delay = Duration::from_millis(args.delay_ms);
    let mut http = None;
    if let Some(addr) = args.http_listen {
        let (endpoint, server) = serve_http(addr, instance.clone(), delay).await?;
        instance.endpoints.push(endpoint);
        http = Some(server);
    }
    let registry = registry::connect(url, args.instance.ttl).await?;
    let mut builder = serve::Server::builder(registry.registrar, instance)
        .listen(args.listen)
        .propagation_delay(Duration::from_millis(args.propagation_delay_ms));
    if let Some(host) = args.advertise {
        builder = builder.advertise(host);
    }
    let bound = builder.bind().await?;
    let echo = EchoService::new(bound.instance().clone()).with_delay(delay);
    errln!(
        "lodestar: serving {name} on {} (gRPC); SIGTERM or Ctrl-C releases it gracefully",
        bound.local_addr()
    );
    let routes = tonic::service::Routes::new(EchoServer::new(echo));
    // The HTTP side answers through the whole gRPC sequence (deregister,
    // propagation delay, drain): clients still routing here during the
    // delay are served; then it drains its own requests in flight.
    let served = bound.serve(routes, shutdown.into_future()).await;
    if let Some(http) = http {
        http.drain().await;
    }
    served?;
    errln!("lodestar: {name} released and stopped");
    Ok(ExitCode::SUCCESS)
}

/// The HTTP echo, serving from its own task until told to stop.
struct Http {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves the HTTP echo on `addr`; returns its endpoint and its handle.
async fn serve_http(
    addr: SocketAddr,
    instance: Instance,
    delay: Duration,
) -> anyhow::Result<(Endpoint, Http)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (HTTP)"))?;
    let local = listener.local_addr()?;
    let endpoint = Endpoint::new("http", &local.ip().to_string(), local.port())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = http::Server::new(instance).with_delay(delay);
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Ok((endpoint, Http { stop, task }))
}

// === impl Http ===

impl Http {
    /// Stops accepting and waits for the requests in flight (the server's
    /// own drain timeout bounds the wait).
    async fn drain(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
