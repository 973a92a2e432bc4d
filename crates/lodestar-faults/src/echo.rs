//! Echo instances: in-process through the serve helper, or as `lodestar
//! serve-echo` processes.

use std::{net::SocketAddr, process::Command, sync::Arc, time::Duration};

use lodestar::{Instance, Registrar};
use lodestar_echo::{EchoService, echo_server::EchoServer};
use lodestar_test_support::{Process, lodestar_binary};
use lodestar_tonic::serve;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::service::Routes;

/// An in-process echo server; dropping it stops it abruptly.
#[derive(Debug)]
pub struct Echo {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Serves the echo service as `instance` on a free loopback port,
/// registered through `registrar` (with a gRPC health service, SERVING).
///
/// # Panics
///
/// Panics when it cannot bind.
pub async fn echo(registrar: Arc<dyn Registrar>, instance: Instance) -> Echo {
    let bound = serve::Server::builder(registrar, instance)
        .propagation_delay(Duration::from_millis(300))
        .drain_timeout(Duration::from_secs(3))
        .bind()
        .await
        .unwrap_or_else(|e| panic!("binding an echo server: {e}"));
    let addr = bound.local_addr();
    let routes = Routes::new(EchoServer::new(EchoService::new(bound.instance().clone())));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let served = bound.serve(routes, async {
            let _ = stopped.await;
        });
        if let Err(error) = served.await {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("echo server {addr}: {text}");
        }
    });
    Echo {
        addr,
        stop: Some(stop),
        task,
    }
}

/// Starts `lodestar serve-echo` as `service`/`id` on `registry` with a
/// lease TTL of `ttl` seconds, its output shown under the test's.
pub fn serve_echo(registry: &str, service: &str, id: &str, ttl: u64) -> Process {
    let mut command = Command::new(lodestar_binary());
    command.args([
        "--registry",
        registry,
        "serve-echo",
        "--service",
        service,
        "--id",
        id,
        "--ttl",
        &ttl.to_string(),
        "--propagation-delay-ms",
        "200",
    ]);
    Process::spawn(format!("serve-echo {id}"), command)
}

// === impl Echo ===

impl Echo {
    /// Where it serves gRPC.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it gracefully (NOT_SERVING, deregister, drain).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}
