//! `lodestar ls`, `get`, `subscribers` and `deregister`: one-shot reads and
//! removals.

use std::{collections::BTreeMap, process::ExitCode};

use anyhow::Context;
use lodestar::{Instance, Snapshot};

use crate::cmd::health;
use crate::output::{self, Cell, Format, Paint, Table, errln, outln};
use crate::registry;

/// Flags of `lodestar ls`.
#[derive(Debug, clap::Args)]
pub(crate) struct LsArgs {
    /// One JSON object per service: {"service", "instances", "down", "versions": {V: N}, "lanes": {L: N}}.
    #[arg(long)]
    json: bool,
}

/// Flags of `lodestar get`.
#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// The service.
    service: String,
    /// Ask each instance's gRPC health service (grpc.health.v1): SERVING, NOT_SERVING or unreachable.
    #[arg(long)]
    check: bool,
    /// One instance record (JSON) per line (with "health" under --check).
    #[arg(long)]
    json: bool,
}

/// Flags of `lodestar subscribers`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubscribersArgs {
    /// The service.
    service: String,
    /// One subscriber record (JSON) per line.
    #[arg(long)]
    json: bool,
}

/// Flags of `lodestar deregister`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeregisterArgs {
    /// The service.
    service: String,
    /// The instance id.
    id: String,
    /// Print the outcome as one JSON object: {"service", "id", "removed"}.
    #[arg(long)]
    json: bool,
}

/// What `ls` says of one service.
#[derive(Debug, Default)]
struct Summary {
    service: String,
    instances: usize,
    down: usize,
    versions: BTreeMap<String, usize>,
    lanes: BTreeMap<String, usize>,
}

/// Lists services with their instance counts by version and lane.
pub(crate) async fn ls(url: &str, args: LsArgs) -> anyhow::Result<ExitCode> {
    let registry = registry::connect(url, None).await?;
    let services = registry
        .discovery
        .services()
        .await
        .context("listing services")?;
    let mut summaries = Vec::with_capacity(services.len());
    for service in services.keys() {
        let snapshot = registry
            .discovery
            .get(service)
            .await
            .with_context(|| format!("reading {service}"))?;
        summaries.push(summary(&snapshot));
    }
    let format = output::format(args.json);
    if format == Format::Json {
        for summary in &summaries {
            let line = serde_json::json!({
                "service": summary.service,
                "instances": summary.instances,
                "down": summary.down,
                "versions": summary.versions,
                "lanes": summary.lanes,
            });
            outln!("{line}");
        }
    } else if summaries.is_empty() {
        errln!(
            "lodestar: no services in {shown}",
            shown = crate::registry::shown(url)
        );
    } else {
        let mut table = Table::new(["SERVICE", "INSTANCES", "DOWN", "VERSIONS", "LANES"]);
        for s in &summaries {
            let down = match s.down {
                0 => Cell::from("0"),
                n => Cell::new(n.to_string(), Paint::Red),
            };
            table.row(vec![
                Cell::from(s.service.clone()),
                Cell::from(s.instances.to_string()),
                down,
                Cell::from(counts(&s.versions)),
                Cell::from(counts(&s.lanes)),
            ]);
        }
        outln!("{}", table.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(snapshot: &Snapshot) -> Summary {
    let mut summary = Summary {
        service: snapshot.service().to_string(),
        instances: snapshot.len(),
        ..Summary::default()
    };
    for instance in snapshot.instances() {
        summary.down += usize::from(instance.is_down());
        *summary
            .versions
            .entry(instance.version.clone())
            .or_default() += 1;
        *summary
            .lanes
            .entry(output::lane(instance).to_string())
            .or_default() += 1;
    }
    summary
}

/// `v1=2 v2=1`; an empty version shows as `-`.
fn counts(counts: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = counts
        .iter()
        .map(|(k, n)| format!("{}={n}", if k.is_empty() { "-" } else { k }))
        .collect();
    parts.join(" ")
}

/// Shows one service's instances (and their health with `--check`).
pub(crate) async fn get(url: &str, args: GetArgs) -> anyhow::Result<ExitCode> {
    let registry = registry::connect(url, None).await?;
    let snapshot = registry
        .discovery
        .get(&args.service)
        .await
        .with_context(|| format!("reading {}", args.service))?;
    let instances: Vec<&Instance> = snapshot.instances().iter().map(|i| &**i).collect();
    let healths = if args.check {
        Some(health::check_all(&instances).await)
    } else {
        None
    };
    let format = output::format(args.json);
    if format == Format::Json {
        for (at, instance) in instances.iter().enumerate() {
            let mut line = serde_json::json!(instance);
            if let Some(healths) = &healths {
                line["health"] = healths[at].as_str().into();
            }
            outln!("{line}");
        }
    } else if instances.is_empty() {
        errln!(
            "lodestar: no instance of {} in {}",
            args.service,
            crate::registry::shown(url)
        );
    } else {
        let wide = format == Format::Wide;
        let mut header = output::instance_header(wide);
        if healths.is_some() {
            header.push("HEALTH");
        }
        let mut table = Table::new(header);
        let now = output::unix_now();
        for (at, instance) in instances.iter().enumerate() {
            let mut row = output::instance_row(instance, now, wide);
            if let Some(healths) = &healths {
                row.push(healths[at].cell());
            }
            table.row(row);
        }
        outln!("{}", table.render());
    }
    if snapshot.skipped() > 0 {
        errln!(
            "lodestar: {} record(s) of {} could not be parsed and were skipped",
            snapshot.skipped(),
            args.service
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes one instance.
pub(crate) async fn deregister(url: &str, args: DeregisterArgs) -> anyhow::Result<ExitCode> {
    let registry = registry::connect(url, None).await?;
    let name = format!("{}/{}", args.service, args.id);
    let removed = registry
        .registrar
        .deregister(&args.service, &args.id)
        .await
        .with_context(|| format!("deregistering {name}"))?;
    if output::format(args.json) == Format::Json {
        let line = serde_json::json!({"service": args.service, "id": args.id, "removed": removed});
        outln!("{line}");
    }
    if removed {
        errln!("lodestar: deregistered {name}");
        Ok(ExitCode::SUCCESS)
    } else {
        errln!(
            "lodestar: error: no instance {name} in {shown}",
            shown = crate::registry::shown(url)
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Lists who consumes a service.
pub(crate) async fn subscribers(url: &str, args: SubscribersArgs) -> anyhow::Result<ExitCode> {
    let registry = registry::connect(url, None).await?;
    let subscribers = registry
        .discovery
        .subscribers(&args.service)
        .await
        .with_context(|| format!("listing the subscribers of {}", args.service))?;
    let format = output::format(args.json);
    if format == Format::Json {
        for subscriber in &subscribers {
            outln!("{}", subscriber.to_json());
        }
    } else if subscribers.is_empty() {
        errln!(
            "lodestar: no subscriber of {} in {}",
            args.service,
            crate::registry::shown(url)
        );
    } else {
        let mut table = Table::new(["CLIENT ID", "HOST", "PID", "SINCE", "AGE"]);
        let now = output::unix_now();
        for s in &subscribers {
            table.row(vec![
                Cell::from(s.client_id.clone()),
                Cell::from(s.host.clone()),
                Cell::from(s.pid.to_string()),
                Cell::from(output::utc(s.since)),
                Cell::from(output::age(now.saturating_sub(s.since))),
            ]);
        }
        outln!("{}", table.render());
    }
    Ok(ExitCode::SUCCESS)
}
