//! The demo's fleet: echo instances on loopback (gRPC through the serve
//! helper, plus the HTTP echo the gateway routes to), the gateway in front,
//! and for the crash step a `lodestar serve-echo` child process, so that its
//! kill -9 is a real one.

use std::{collections::BTreeMap, net::SocketAddr, process::Stdio, sync::Arc, time::Duration};

use anyhow::Context;
use lodestar::{Discovery, Endpoint, Instance, Registrar};
use lodestar_echo::{EchoService, echo_server::EchoServer, http};
use lodestar_gateway::{Gateway, config::Config};
use lodestar_tonic::serve;
use tokio::{
    net::TcpListener,
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};

/// The service every instance of the demo serves.
pub(super) const SERVICE: &str = "echo";

/// The gateway's route to the echo service.
pub(super) const GATEWAY_PREFIX: &str = "/echo";

/// Lease TTL of the crash step's child: how long its record outlives kill -9.
const CHILD_TTL_SECS: u64 = 3;

/// What one instance is.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    pub(super) id: String,
    pub(super) version: &'static str,
    pub(super) color: Option<&'static str>,
    pub(super) delay: Duration,
}

/// Every server the demo started, and the registry they registered in.
pub(super) struct Fleet {
    pub(super) registrar: Arc<dyn Registrar>,
    pub(super) discovery: Arc<dyn Discovery>,
    url: String,
    propagation: Duration,
    servers: BTreeMap<String, Echo>,
    children: BTreeMap<String, Child>,
    /// Instances killed without deregistering: removed at shutdown if their
    /// record is still there.
    crashed: Vec<String>,
    gateway: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// One in-process echo instance: gRPC through the serve helper, HTTP beside.
struct Echo {
    grpc_stop: oneshot::Sender<()>,
    grpc: JoinHandle<Result<(), serve::Error>>,
    http_stop: oneshot::Sender<()>,
    http: JoinHandle<()>,
}

// === impl Spec ===

impl Spec {
    /// A base-lane instance of `version`.
    pub(super) fn new(id: &str, version: &'static str) -> Self {
        Self {
            id: id.to_string(),
            version,
            color: None,
            delay: Duration::ZERO,
        }
    }

    /// In the `color` lane.
    pub(super) fn color(mut self, color: &'static str) -> Self {
        self.color = Some(color);
        self
    }

    /// With `delay` added to every call.
    pub(super) fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn instance(&self) -> Instance {
        let instance = Instance::new(SERVICE, &self.id).with_version(self.version);
        match self.color {
            Some(color) => instance.with_metadata("color", color),
            None => instance,
        }
    }
}

// === impl Fleet ===

impl Fleet {
    /// An empty fleet registering through `url` (given to child processes).
    pub(super) fn new(
        registrar: Arc<dyn Registrar>,
        discovery: Arc<dyn Discovery>,
        url: String,
        propagation: Duration,
    ) -> Self {
        Self {
            registrar,
            discovery,
            url,
            propagation,
            servers: BTreeMap::new(),
            children: BTreeMap::new(),
            crashed: Vec::new(),
            gateway: None,
        }
    }

    /// Starts an in-process instance; it registers once it serves.
    pub(super) async fn start(&mut self, spec: &Spec) -> anyhow::Result<()> {
        let echo = Echo::start(self.registrar.clone(), spec, self.propagation)
            .await
            .with_context(|| format!("starting {}", spec.id))?;
        self.servers.insert(spec.id.clone(), echo);
        Ok(())
    }

    /// Runs the graceful sequence of `id`: NOT_SERVING, deregister, the
    /// propagation delay, drain.
    pub(super) async fn stop(&mut self, id: &str) -> anyhow::Result<()> {
        match self.servers.remove(id) {
            Some(echo) => echo.stop().await.with_context(|| format!("stopping {id}")),
            None => Ok(()),
        }
    }

    /// Starts the gateway on a loopback port, routing [`GATEWAY_PREFIX`] to
    /// the echo service's `http://` endpoints; returns its address.
    pub(super) async fn start_gateway(&mut self) -> anyhow::Result<SocketAddr> {
        let route = format!("{GATEWAY_PREFIX}={SERVICE}");
        let mut config = Config::default().with_route_flags(&[route])?;
        // The demo's own traffic picks pins and lanes through the gateway.
        config.trust.headers = true;
        let gateway = Gateway::new(self.discovery.clone(), config);
        let listener = TcpListener::bind(loopback()).await.context("gateway")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gateway
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        self.gateway = Some((stop, task));
        Ok(addr)
    }

    /// Spawns `lodestar serve-echo` for `id` (v1, base lane): a process of
    /// its own, so that [`Fleet::kill9`] is a real SIGKILL.
    pub(super) fn spawn_child(&mut self, id: &str) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("finding the lodestar binary")?;
        let child = Command::new(exe)
            .args(["--registry", &self.url, "serve-echo", "--service", SERVICE])
            .args([
                "--id",
                id,
                "--version",
                "v1",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--ttl", &CHILD_TTL_SECS.to_string()])
            .args(["--propagation-delay-ms", "300"])
            .env("LODESTAR_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawning lodestar serve-echo")?;
        self.children.insert(id.to_string(), child);
        Ok(())
    }

    /// SIGKILL to the child `id`: no graceful sequence, its record stays
    /// until its TTL passes.
    pub(super) async fn kill9(&mut self, id: &str) -> anyhow::Result<()> {
        let Some(mut child) = self.children.remove(id) else {
            anyhow::bail!("no child process {id}");
        };
        child.start_kill().context("kill -9")?;
        let _ = child.wait().await;
        self.crashed.push(id.to_string());
        Ok(())
    }

    /// Stops everything the demo started, deregistering every instance:
    /// gateway, in-process servers (graceful, all at once), children
    /// (SIGTERM: their own graceful sequence), and the records of crashed
    /// instances still waiting for their TTL. Returns how many instances
    /// were released.
    pub(super) async fn shutdown(&mut self) -> usize {
        if let Some((stop, task)) = self.gateway.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        let mut stops = tokio::task::JoinSet::new();
        let mut released = 0;
        for (_, echo) in std::mem::take(&mut self.servers) {
            released += 1;
            stops.spawn(echo.stop());
        }
        for (_, child) in std::mem::take(&mut self.children) {
            released += 1;
            stops.spawn(terminate(child));
        }
        while stops.join_next().await.is_some() {}
        for id in std::mem::take(&mut self.crashed) {
            if let Ok(true) = self.registrar.deregister(SERVICE, &id).await {
                released += 1;
            }
        }
        released
    }
}

/// SIGTERM, then up to 5 s for the child's graceful sequence, then SIGKILL.
async fn terminate(mut child: Child) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Ok(())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

// === impl Echo ===

impl Echo {
    async fn start(
        registrar: Arc<dyn Registrar>,
        spec: &Spec,
        propagation: Duration,
    ) -> anyhow::Result<Self> {
        let mut instance = spec.instance();
        let listener = TcpListener::bind(loopback()).await?;
        let local = listener.local_addr()?;
        instance.endpoints.push(Endpoint::new(
            "http",
            &local.ip().to_string(),
            local.port(),
        )?);
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        let server = http::Server::new(instance.clone()).with_delay(spec.delay);
        let http = tokio::spawn(server.serve(listener, async {
            let _ = http_stopped.await;
        }));
        let bound = serve::Server::builder(registrar, instance)
            .listen(loopback())
            .propagation_delay(propagation)
            .bind()
            .await?;
        let echo = EchoService::new(bound.instance().clone()).with_delay(spec.delay);
        let routes = tonic::service::Routes::new(EchoServer::new(echo));
        let (grpc_stop, grpc_stopped) = oneshot::channel::<()>();
        let grpc = tokio::spawn(bound.serve(routes, async {
            let _ = grpc_stopped.await;
        }));
        Ok(Self {
            grpc_stop,
            grpc,
            http_stop,
            http,
        })
    }

    /// The graceful sequence on the gRPC side; the HTTP side answers through
    /// it (clients still routing here during the propagation delay are
    /// served), then drains its own requests.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.grpc_stop.send(());
        let served = self.grpc.await.context("echo server task");
        let _ = self.http_stop.send(());
        let _ = self.http.await;
        served??;
        Ok(())
    }
}
