//! `lodestar watch`: follow a service as it changes.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context;
use lodestar::{Change, Snapshot};

use crate::output::{self, Cell, Format, Paint, Table, errln, outln};
use crate::{cmd::Shutdown, registry};

/// Flags of `lodestar watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The service.
    service: String,
    /// One JSON object per change: {"event": "add"|"update"|"remove", "revision": R, "instance": {...}}.
    #[arg(long)]
    json: bool,
}

/// How changes print.
#[derive(Clone, Copy, Debug)]
struct Style {
    format: Format,
    now: u64,
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
    let json = output::format(args.json) == Format::Json;
    loop {
        let snapshot = tokio::select! {
            _ = shutdown.recv() => return Ok(ExitCode::SUCCESS),
            snapshot = watch.next() => snapshot.context("the registry watch stopped")?,
        };
        if std::mem::take(&mut first) && !json {
            errln!(
                "lodestar: watching {}: {} instance(s) at revision {}",
                args.service,
                snapshot.len(),
                snapshot.revision()
            );
        }
        let style = Style {
            format: output::format(args.json),
            now: output::unix_now(),
        };
        for change in snapshot.changes(&last) {
            print_change(&change, snapshot.revision(), style);
        }
        last = snapshot;
    }
}

fn print_change(change: &Change, revision: u64, style: Style) {
    let instance = change.instance();
    if style.format == Format::Json {
        let line =
            serde_json::json!({"event": change.kind(), "revision": revision, "instance": instance});
        outln!("{line}");
        return;
    }
    let paint = match change {
        Change::Add(_) => Paint::Green,
        Change::Update(_) => Paint::Yellow,
        Change::Remove(_) => Paint::Red,
    };
    // One line per change: the event, then the instance as `get` shows it.
    let mut table = Table::default();
    let mut row = vec![Cell::new(format!("{:<6}", change.kind()), paint)];
    row.extend(output::instance_row(
        instance,
        style.now,
        style.format == Format::Wide,
    ));
    table.row(row);
    outln!("{}", table.render());
}
