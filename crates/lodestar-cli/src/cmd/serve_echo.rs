//! `lodestar serve-echo`: a gRPC (and optionally HTTP) echo service that
//! registers itself through the serve helper; SIGTERM runs the graceful
//! sequence.

use std::{convert::Infallible, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use lodestar::{Endpoint, Instance};
use lodestar_echo::{EchoService, echo_server::EchoServer};
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
    /// Also serve HTTP here: any path answers JSON naming the instance.
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
    if let Some(addr) = args.http_listen {
        let http = serve_http(addr, instance.clone()).await?;
        instance.endpoints.push(http);
    }
    let registry = registry::connect(url, args.instance.ttl).await?;
    let mut builder = serve::Server::builder(registry.registrar, instance)
        .listen(args.listen)
        .propagation_delay(Duration::from_millis(args.propagation_delay_ms));
    if let Some(host) = args.advertise {
        builder = builder.advertise(host);
    }
    let bound = builder.bind().await?;
    let echo =
        EchoService::new(bound.instance().clone()).with_delay(Duration::from_millis(args.delay_ms));
    errln!(
        "lodestar: serving {name} on {} (gRPC); SIGTERM or Ctrl-C releases it gracefully",
        bound.local_addr()
    );
    let routes = tonic::service::Routes::new(EchoServer::new(echo));
    bound.serve(routes, shutdown.into_future()).await?;
    errln!("lodestar: {name} released and stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serves the HTTP echo on `addr`; returns its endpoint.
async fn serve_http(addr: SocketAddr, instance: Instance) -> anyhow::Result<Endpoint> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (HTTP)"))?;
    let local = listener.local_addr()?;
    let endpoint = Endpoint::new("http", &local.ip().to_string(), local.port())?;
    let instance = Arc::new(instance);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let instance = instance.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(request, instance.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(endpoint)
}

async fn answer(
    request: Request<Incoming>,
    instance: Arc<Instance>,
) -> Result<Response<String>, Infallible> {
    let body = serde_json::json!({
        "instance": instance.id,
        "service": instance.service,
        "version": instance.version,
        "path": request.uri().path(),
    });
    let mut response = Response::new(body.to_string());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
