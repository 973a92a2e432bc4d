//! `lodestar set`: an operator's traffic control of one instance, without
//! touching its owner's record: status up or down, weight, metadata, or
//! `--clear` to drop every override.

use std::process::ExitCode;

use anyhow::{Context, bail};
use lodestar::{Override, Status};

use crate::output::{errln, outln};
use crate::registry;

/// Flags of `lodestar set`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The service.
    service: String,
    /// The instance id.
    id: String,
    /// up, or down: no new calls from any lodestar client (calls in flight finish).
    #[arg(long, value_parser = parse_status)]
    status: Option<Status>,
    /// The balancing weight, a positive integer.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    weight: Option<u32>,
    /// A metadata entry to set over the owner's, as key=value (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Remove every override of the instance: its owner's record is in force again.
    #[arg(long, conflicts_with_all = ["status", "weight", "meta"])]
    clear: bool,
    /// Print the outcome as one JSON object: {"service", "id", "found", "override"|"cleared"}.
    #[arg(long)]
    json: bool,
}

/// Applies the override (or clears it); exit 1 when there is no such
/// instance (or nothing to clear).
pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    let change = match change(&args) {
        Ok(change) => change,
        Err(e) => {
            errln!("lodestar: error: {e:#}");
            return Ok(ExitCode::from(crate::USAGE));
        }
    };
    let registry = registry::connect(url, None).await?;
    let name = format!("{}/{}", args.service, args.id);
    let found = match &change {
        None => registry
            .registrar
            .clear(&args.service, &args.id)
            .await
            .with_context(|| format!("clearing the overrides of {name}"))?,
        Some(change) => registry
            .registrar
            .set(&args.service, &args.id, change.clone())
            .await
            .with_context(|| format!("setting {name}"))?,
    };
    if args.json {
        let mut line = serde_json::json!({"service": args.service, "id": args.id, "found": found});
        match &change {
            None => line["cleared"] = found.into(),
            Some(change) => line["override"] = serde_json::json!(change),
        }
        outln!("{line}");
    }
    match (found, change) {
        (true, None) => errln!("lodestar: cleared the overrides of {name}"),
        (true, Some(change)) => errln!("lodestar: set {name}: {}", describe(&change)),
        (false, None) => {
            errln!(
                "lodestar: error: {name} has no override in {shown}",
                shown = crate::registry::shown(url)
            );
            return Ok(ExitCode::FAILURE);
        }
        (false, Some(_)) => {
            errln!(
                "lodestar: error: no instance {name} in {shown}; nothing was written",
                shown = crate::registry::shown(url)
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The override the flags ask for; `None` for `--clear`.
fn change(args: &Args) -> anyhow::Result<Option<Override>> {
    if args.clear {
        return Ok(None);
    }
    let mut change = Override::new();
    change.status = args.status;
    change.weight = args.weight;
    change.metadata = args.meta.iter().cloned().collect();
    if change.is_empty() {
        bail!("nothing to set: give --status, --weight or --meta, or --clear");
    }
    change.validate()?;
    Ok(Some(change))
}

/// `status=down weight=5 team=core`.
fn describe(change: &Override) -> String {
    let mut parts = Vec::new();
    if let Some(status) = change.status {
        parts.push(format!("status={status}"));
    }
    if let Some(weight) = change.weight {
        parts.push(format!("weight={weight}"));
    }
    parts.extend(change.metadata.iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(" ")
}

fn parse_status(text: &str) -> Result<Status, String> {
    text.parse().map_err(|e: lodestar::Error| e.to_string())
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}
