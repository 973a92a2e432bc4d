//! `lodestar watch`: follow a service as it changes.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context;
use lodestar::{Change, Snapshot};

use crate::output::{errln, outln};
use crate::{cmd::Shutdown, output, registry};

/// Flags of `lodestar watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The service.
    service: String,
    /// One JSON object per change: {"event": "add"|"update"|"remove", "revision": R, "instance": {...}}.
    #[arg(long)]
    json: bool,
}

/// Prints the instances there are as `add`s, then every change, until
/// SIGTERM/SIGINT.
pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    let mut shutdown = Shutdown::new()?;
    let registry = registry::connect(url, None).await?;
    let mut watch = registry
        .discovery
        .watch(&args.service)
        .await
        .with_context(|| format!("watching {}", args.service))?;
    let mut last = Arc::new(Snapshot::new(&args.service, 0, Vec::new(), 0));
    let mut first = true;
    loop {
        let snapshot = tokio::select! {
            _ = shutdown.recv() => return Ok(ExitCode::SUCCESS),
            snapshot = watch.next() => snapshot.context("the registry watch stopped")?,
        };
        if std::mem::take(&mut first) && !args.json {
            errln!(
                "lodestar: watching {}: {} instance(s) at revision {}",
                args.service,
                snapshot.len(),
                snapshot.revision()
            );
        }
        for change in snapshot.changes(&last) {
            print_change(&change, snapshot.revision(), args.json);
        }
        last = snapshot;
    }
}

fn print_change(change: &Change, revision: u64, json: bool) {
    let instance = change.instance();
    if json {
        let line =
            serde_json::json!({"event": change.kind(), "revision": revision, "instance": instance});
        outln!("{line}");
    } else {
        let row = output::instance_row(instance);
        outln!("{:<6}  {}", change.kind(), row.join("  "));
    }
}
