//! The serve helper: bind, mark SERVING, register, and on shutdown release
//! gracefully so that no client call is lost.
//!
//! The graceful sequence, run when the shutdown future resolves (typically
//! [`shutdown_signal`]: SIGTERM or SIGINT):
//!
//! 1. health goes NOT_SERVING, so clients watching it stop picking this
//!    instance at once;
//! 2. the record is deregistered, so every client's next snapshot drops it;
//! 3. the helper waits the propagation delay (default 1 s) for both to reach
//!    clients — go-kratos has no such delay, so its clients still route to a
//!    stopping node;
//! 4. the server stops accepting and drains the calls in flight, up to the
//!    drain timeout (default 10 s);
//! 5. it returns.
//!
//! The instance is registered only once the server is accepting, with the
//! real bound address (port 0 is fine) or an advertised one. A registration
//! lost while serving is put back by the registrar; the server keeps serving.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use lodestar::{Instance, memory::MemoryRegistry};
//! use lodestar_echo::{EchoService, echo_server::EchoServer};
//! use lodestar_tonic::serve;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Arc::new(MemoryRegistry::new());
//! let bound = serve::Server::builder(registry, Instance::new("echo", "echo-1").with_version("v1"))
//!     .listen("127.0.0.1:0".parse()?)
//!     .bind()
//!     .await?;
//! let echo = EchoServer::new(EchoService::new(bound.instance().clone()));
//! bound
//!     .serve(tonic::service::Routes::new(echo), serve::shutdown_signal()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use lodestar::{Endpoint, Instance, Registrar};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::color::ColorLayer;

/// What can stop the serve helper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The instance to register is not valid, or no address can be advertised.
    #[error("cannot register the instance to serve")]
    Instance(#[source] lodestar::Error),
    /// The first registration failed (the server was stopped again).
    #[error("registering {0}")]
    Register(String, #[source] lodestar::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// The serve helper; see the [module docs](self).
#[derive(Debug)]
pub struct Server;

/// Options of the serve helper.
#[derive(Debug)]
pub struct Builder {
    registrar: Arc<dyn Registrar>,
    instance: Instance,
    listen: SocketAddr,
    advertise: Option<String>,
    propagation_delay: Duration,
    drain_timeout: Duration,
}

/// A bound server, registered once it serves.
#[derive(Debug)]
pub struct Bound {
    options: Builder,
    listener: TcpListener,
    local: SocketAddr,
    reporter: HealthReporter,
    health: tonic_health::pb::health_server::HealthServer<HealthService>,
}

type HealthService = tonic_health::server::HealthService;

// === impl Server ===

impl Server {
    /// Serves `instance` (its service, id, version, metadata and any extra
    /// endpoints; the gRPC endpoint is added at bind) through `registrar`.
    pub fn builder(registrar: Arc<dyn Registrar>, instance: Instance) -> Builder {
        Builder {
            registrar,
            instance,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            propagation_delay: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

// === impl Builder ===

impl Builder {
    /// Where to listen (default `127.0.0.1:0`: a free port on loopback).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The host to register instead of the bound IP (needed when listening
    /// on `0.0.0.0` or `[::]`).
    pub fn advertise(mut self, host: impl Into<String>) -> Self {
        self.advertise = Some(host.into());
        self
    }

    /// How long to wait between deregistering and closing (default 1 s).
    pub fn propagation_delay(mut self, delay: Duration) -> Self {
        self.propagation_delay = delay;
        self
    }

    /// How long calls in flight may take to finish at shutdown (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Binds the listen address and works out the registered record.
    pub async fn bind(mut self) -> Result<Bound, Error> {
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: self.listen,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.listen,
            source,
        })?;
        let host = match &self.advertise {
            Some(host) => host.clone(),
            None if local.ip().is_unspecified() => {
                return Err(Error::Instance(lodestar::Error::Config(format!(
                    "listening on {local}: set an advertise address clients can reach"
                ))));
            }
            None => local.ip().to_string(),
        };
        let endpoint = Endpoint::new("grpc", &host, local.port()).map_err(Error::Instance)?;
        self.instance.endpoints.insert(0, endpoint);
        self.instance.validate().map_err(Error::Instance)?;
        let reporter = HealthReporter::new();
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let health = tonic_health::pb::health_server::HealthServer::new(
            HealthService::from_health_reporter(reporter.clone()),
        );
        Ok(Bound {
            options: self,
            listener,
            local,
            reporter,
            health,
        })
    }
}

// === impl Bound ===

impl Bound {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The record that will be registered.
    pub fn instance(&self) -> &Instance {
        &self.options.instance
    }

    /// The gRPC health reporter: set NOT_SERVING to take the instance out of
    /// rotation without stopping it (SERVING puts it back).
    pub fn health(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// Serves `routes` (plus the gRPC health service and colour propagation)
    /// until `shutdown` resolves, then runs the graceful sequence.
    pub async fn serve<F>(self, routes: Routes, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()>,
    {
        let Bound {
            options,
            listener,
            reporter,
            health,
            ..
        } = self;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .layer(ColorLayer)
            .add_routes(routes.add_service(health));
        // Without TCP_NODELAY a reply written in two pieces (a health
        // watch's headers, then its message) waits for the client's
        // delayed ACK: 40 ms on Linux.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        // Accepting from here on: say so, then announce.
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        let name = format!("{}/{}", options.instance.service, options.instance.id);
        let registration = match options.registrar.register(options.instance.clone()).await {
            Ok(registration) => registration,
            Err(e) => {
                server.abort();
                return Err(Error::Register(name, e));
            }
        };
        tracing::info!(instance = %name, "serving and registered");
        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                let _ = registration.deregister().await;
                return flatten(result);
            }
        }
        release(&reporter, registration, &options, &name).await;
        let _ = stop.send(());
        match tokio::time::timeout(options.drain_timeout, &mut server).await {
            Ok(result) => flatten(result),
            Err(_) => {
                tracing::warn!(instance = %name, timeout = ?options.drain_timeout, "calls still in flight at the drain timeout; closing");
                server.abort();
                Ok(())
            }
        }
    }
}

/// Steps 1 to 3 of the graceful sequence.
async fn release(
    reporter: &HealthReporter,
    registration: lodestar::Registration,
    options: &Builder,
    name: &str,
) {
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    if let Err(error) = registration.deregister().await {
        tracing::warn!(instance = %name, %error, "deregistering failed; the record expires with its lease");
    }
    tracing::info!(instance = %name, delay = ?options.propagation_delay, "not serving and deregistered; draining");
    tokio::time::sleep(options.propagation_delay).await;
    // Health watches are streams that never end by themselves: end them, or
    // the drain would wait for them until its timeout.
    reporter.clone().clear_service_status("").await;
}

fn flatten(
    result: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), Error> {
    match result {
        Ok(result) => result.map_err(Error::Serve),
        Err(join) if join.is_cancelled() => Ok(()),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, so call it before registering.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
