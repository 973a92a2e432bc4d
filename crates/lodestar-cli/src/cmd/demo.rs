//! `lodestar demo`: the whole story in one process, on the built-in
//! registry (no etcd needed): a registry node, three echo servers that
//! register themselves, a watcher, balanced calls with a version pin and a
//! colour lane, and a rolling restart under load that loses no call.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use lodestar::{Discovery, Instance, Registrar, balance::BuiltinPolicy};
use lodestar_echo::{EchoRequest, EchoService, echo_client::EchoClient, echo_server::EchoServer};
use lodestar_registry::{LodestarRegistry, server};
use lodestar_tonic::{Channel, serve};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::output::outln;

/// Flags of `lodestar demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Pause between steps, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pause_ms: u64,
}

/// One echo server run by the serve helper.
struct Echo {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), serve::Error>>,
}

impl Echo {
    async fn start(registrar: Arc<dyn Registrar>, instance: Instance) -> anyhow::Result<Self> {
        let bound = serve::Server::builder(registrar, instance)
            .propagation_delay(Duration::from_millis(300))
            .bind()
            .await?;
        let echo = EchoServer::new(EchoService::new(bound.instance().clone()));
        let (stop, stopped) = oneshot::channel();
        let routes = tonic::service::Routes::new(echo);
        let task = tokio::spawn(bound.serve(routes, async {
            let _ = stopped.await;
        }));
        Ok(Self { stop, task })
    }

    /// The graceful sequence: NOT_SERVING, deregister, wait, drain.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("echo server task")??;
        Ok(())
    }
}

fn echo(id: &str, version: &str) -> Instance {
    Instance::new("echo", id).with_version(version)
}

/// Runs the demo.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pause = Duration::from_millis(args.pause_ms);
    outln!("== lodestar demo: the built-in registry, three echo servers, a balanced client ==");

    let node = server::Server::bind(server::Config::new(SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .context("starting the built-in registry")?;
    let addr = node.local_addr()?;
    let node = tokio::spawn(node.serve(std::future::pending()));
    let url = format!("lodestar://{addr}?ttl=3s");
    outln!("1. a registry node listens on {addr} (what `lodestar registry` runs)");
    let registry = Arc::new(LodestarRegistry::connect(url.parse()?).await?);
    let watcher = tokio::spawn(watch_and_print(registry.clone()));
    tokio::time::sleep(pause).await;

    outln!(
        "2. echo-a (v1), echo-b (v2) and echo-c (v1, colour blue) start; each registers once serving"
    );
    let mut servers = BTreeMap::new();
    for instance in [
        echo("echo-a", "v1"),
        echo("echo-b", "v2"),
        echo("echo-c", "v1").with_metadata("color", "blue"),
    ] {
        let id = instance.id.clone();
        servers.insert(id, Echo::start(registry.clone(), instance).await?);
    }
    tokio::time::sleep(pause).await;

    let client = EchoClient::new(
        Channel::builder(registry.clone(), "echo")
            .policy(BuiltinPolicy::P2c)
            .connect(),
    );
    outln!(
        "3. 300 calls through the balanced channel (p2c); coloured instances take coloured calls only:"
    );
    outln!("   {}", spread(&client, 300, &[]).await?);
    outln!(
        "   in the blue lane: {}",
        spread(&client, 30, &[("lodestar-color", "blue")]).await?
    );
    outln!(
        "   pinned to v2:     {}",
        spread(&client, 30, &[("lodestar-version", "v2")]).await?
    );
    outln!(
        "   in the green lane (none: the base lane): {}",
        spread(&client, 30, &[("lodestar-color", "green")]).await?
    );
    tokio::time::sleep(pause).await;

    outln!(
        "4. a rolling restart of echo-a and echo-b under load (8 calls in flight at all times):"
    );
    let (ok, failed) = rolling_restart(&client, &registry, &mut servers, pause).await?;
    outln!("   {ok} calls ok, {failed} failed");

    outln!("5. everything stops gracefully; the watcher sees each instance leave");
    for (_, server) in std::mem::take(&mut servers) {
        server.stop().await?;
    }
    tokio::time::sleep(pause).await;
    watcher.abort();
    node.abort();
    outln!(
        "== done. Yourself: `lodestar registry &`, then `lodestar serve-echo --service echo --id a &`,"
    );
    outln!("   `lodestar call echo --count 100`, `lodestar watch echo` (see docs/cli.md) ==");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn watch_and_print(registry: Arc<LodestarRegistry>) -> anyhow::Result<()> {
    let mut watch = registry.watch("echo").await?;
    let mut last = watch.next().await.context("registry watch")?;
    while let Some(snapshot) = watch.next().await {
        for change in snapshot.changes(&last) {
            let i = change.instance();
            let color = i.color().map(|c| format!(", {c}")).unwrap_or_default();
            outln!(
                "   watcher: {:<6} {} ({}{color})",
                change.kind(),
                i.id,
                i.version
            );
        }
        last = snapshot;
    }
    Ok(())
}

/// Calls `n` times; "echo-a 150, echo-b 150".
async fn spread(
    client: &EchoClient<Channel>,
    n: usize,
    headers: &[(&'static str, &str)],
) -> anyhow::Result<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let mut request = tonic::Request::new(EchoRequest {
            message: "demo".into(),
            delay_ms: 0,
        });
        for (name, value) in headers {
            request.metadata_mut().insert(*name, value.parse()?);
        }
        let reply = client.clone().say(request).await?.into_inner();
        *counts.entry(reply.instance).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(id, n)| format!("{id} {n}")).collect();
    Ok(parts.join(", "))
}

async fn rolling_restart(
    client: &EchoClient<Channel>,
    registry: &Arc<LodestarRegistry>,
    servers: &mut BTreeMap<String, Echo>,
    pause: Duration,
) -> anyhow::Result<(u64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (mut client, stop, ok, failed) =
                (client.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = EchoRequest {
                        message: "load".into(),
                        delay_ms: 1,
                    };
                    let counter = if client.say(request).await.is_ok() {
                        &ok
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for (old, new, version) in [("echo-a", "echo-a2", "v1"), ("echo-b", "echo-b2", "v2")] {
        if let Some(server) = servers.remove(old) {
            outln!("   {old}: NOT_SERVING, deregistered, draining; {new} starts");
            server.stop().await?;
        }
        servers.insert(
            new.to_string(),
            Echo::start(registry.clone(), echo(new, version)).await?,
        );
        tokio::time::sleep(pause.max(Duration::from_millis(300))).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await?;
    }
    Ok((ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)))
}
