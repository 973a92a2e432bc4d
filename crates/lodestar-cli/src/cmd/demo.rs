//! `lodestar demo`: registration and discovery, told step by step, on the
//! in-process registry (no etcd needed).

use std::{process::ExitCode, time::Duration};

use lodestar::{Discovery, Instance, Registrar, memory::MemoryRegistry};

use crate::output;
use crate::output::outln;

/// Flags of `lodestar demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Pause between steps, in milliseconds.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pause_ms: u64,
}

fn echo(id: &str, port: u16, version: &str) -> anyhow::Result<Instance> {
    Ok(Instance::new("echo", id)
        .with_version(version)
        .with_endpoint(format!("grpc://127.0.0.1:{port}").parse()?)
        .with_metadata("zone", "z1"))
}

/// Runs the walkthrough.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pause = Duration::from_millis(args.pause_ms);
    let registry = MemoryRegistry::new();
    outln!("== lodestar demo: an in-process registry, a watcher, three instances ==");

    let mut watch = registry.watch("echo").await?;
    let mut last = watch.next().await;
    let watcher = tokio::spawn(async move {
        while let Some(snapshot) = watch.next().await {
            if let Some(previous) = &last {
                for change in snapshot.changes(previous) {
                    let i = change.instance();
                    outln!(
                        "   watcher: {:<6} {}/{} (revision {})",
                        change.kind(),
                        i.service,
                        i.id,
                        snapshot.revision()
                    );
                }
            }
            last = Some(snapshot);
        }
    });

    outln!("1. echo-a (v1) and echo-b (v1) register");
    let a = registry.register(echo("echo-a", 50051, "v1")?).await?;
    tokio::time::sleep(pause).await;
    let b = registry.register(echo("echo-b", 50052, "v1")?).await?;
    tokio::time::sleep(pause).await;

    outln!("2. a canary, echo-c (v2, colour blue), registers");
    let c = registry
        .register(echo("echo-c", 50053, "v2")?.with_metadata("color", "blue"))
        .await?;
    tokio::time::sleep(pause).await;
    let snapshot = registry.get("echo").await?;
    let mut rows = vec![output::instance_header()];
    rows.extend(snapshot.instances().iter().map(|i| output::instance_row(i)));
    outln!("{}", indent(&output::table(&rows)).trim_end());

    outln!("3. echo-a shuts down cleanly: it deregisters, and leaves at once");
    a.deregister().await?;
    tokio::time::sleep(pause).await;

    outln!("4. echo-b's handle is dropped (as when its task ends): its record goes too");
    drop(b);
    tokio::time::sleep(pause).await;

    outln!("5. echo-c deregisters; the service is empty");
    c.deregister().await?;
    tokio::time::sleep(pause).await;
    outln!(
        "   echo now has {} instance(s)",
        registry.get("echo").await?.len()
    );

    watcher.abort();
    outln!(
        "== done. With etcd: lodestar --registry etcd://127.0.0.1:2379 register|get|watch ... =="
    );
    Ok(ExitCode::SUCCESS)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}
