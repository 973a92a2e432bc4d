//! `lodestar ls`, `get` and `deregister`: one-shot reads and removals.

use std::process::ExitCode;

use anyhow::Context;

use crate::output::{errln, outln};
use crate::{output, registry};

/// Flags of `lodestar ls`.
#[derive(Debug, clap::Args)]
pub(crate) struct LsArgs {
    /// One JSON object per line: {"service": S, "instances": N}.
    #[arg(long)]
    json: bool,
}

/// Flags of `lodestar get`.
#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// The service.
    service: String,
    /// One instance record (JSON) per line.
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
}

/// Lists services.
pub(crate) async fn ls(url: &str, args: LsArgs) -> anyhow::Result<ExitCode> {
    let registry = registry::connect(url, None).await?;
    let services = registry
        .discovery
        .services()
        .await
        .context("listing services")?;
    if args.json {
        for (service, count) in &services {
            outln!(
                "{}",
                serde_json::json!({"service": service, "instances": count})
            );
        }
    } else if services.is_empty() {
        errln!("lodestar: no services in {url}");
    } else {
        let mut rows = vec![vec!["SERVICE".to_string(), "INSTANCES".to_string()]];
        rows.extend(services.iter().map(|(s, n)| vec![s.clone(), n.to_string()]));
        outln!("{}", output::table(&rows).trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows one service.
pub(crate) async fn get(url: &str, args: GetArgs) -> anyhow::Result<ExitCode> {
    let registry = registry::connect(url, None).await?;
    let snapshot = registry
        .discovery
        .get(&args.service)
        .await
        .with_context(|| format!("reading {}", args.service))?;
    if args.json {
        for instance in snapshot.instances() {
            outln!("{}", instance.to_json());
        }
    } else if snapshot.is_empty() {
        errln!("lodestar: no instance of {} in {url}", args.service);
    } else {
        let mut rows = vec![output::instance_header()];
        rows.extend(snapshot.instances().iter().map(|i| output::instance_row(i)));
        outln!("{}", output::table(&rows).trim_end());
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
    if removed {
        errln!("lodestar: deregistered {name}");
        Ok(ExitCode::SUCCESS)
    } else {
        errln!("lodestar: error: no instance {name} in {url}");
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
    if args.json {
        for subscriber in &subscribers {
            outln!("{}", subscriber.to_json());
        }
    } else if subscribers.is_empty() {
        errln!("lodestar: no subscriber of {} in {url}", args.service);
    } else {
        let mut rows = vec![
            ["CLIENT ID", "HOST", "PID", "SINCE"]
                .map(String::from)
                .to_vec(),
        ];
        rows.extend(subscribers.iter().map(|s| {
            vec![
                s.client_id.clone(),
                s.host.clone(),
                s.pid.to_string(),
                output::utc(s.since),
            ]
        }));
        outln!("{}", output::table(&rows).trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
