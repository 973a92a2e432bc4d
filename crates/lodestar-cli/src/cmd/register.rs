//! `lodestar register`: a registration sidecar for a service in any language.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use lodestar::{Endpoint, Instance, RegistrationState};

use crate::output::{self, Format, errln, outln};
use crate::{cmd::Shutdown, registry};

/// Flags of `lodestar register`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    instance: InstanceArgs,
    /// Where the instance listens, scheme://host:port (repeat for several).
    #[arg(long = "endpoint", short, required = true, value_name = "URL")]
    endpoints: Vec<Endpoint>,
    /// One JSON object per state change on stdout: {"event": "registered"|"retrying"|"registered_again"|"deregistered", "service", "id", ...}.
    #[arg(long)]
    json: bool,
}

/// The instance flags shared by `register` and `serve-echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct InstanceArgs {
    /// The service name clients look up.
    #[arg(long, short)]
    pub(crate) service: String,
    /// This instance's id, unique within the service.
    #[arg(long)]
    pub(crate) id: String,
    /// The version clients may pin to.
    #[arg(long, default_value = "")]
    pub(crate) version: String,
    /// Metadata as key=value (repeat); well-known keys: color, weight, zone.
    #[arg(long = "meta", short, value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub(crate) metadata: Vec<(String, String)>,
    /// Lease TTL in seconds: how long the record outlives a crashed process.
    #[arg(long, value_name = "SECS", value_parser = parse_ttl)]
    pub(crate) ttl: Option<Duration>,
}

impl InstanceArgs {
    /// The record these flags describe, without endpoints.
    pub(crate) fn instance(&self) -> Instance {
        let mut instance = Instance::new(&self.service, &self.id).with_version(&self.version);
        instance.metadata.extend(self.metadata.iter().cloned());
        instance
    }
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) if secs >= 1 => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "expected a whole number of seconds, at least 1, got {s:?}"
        )),
    }
}

/// Registers, logs state changes until SIGTERM/SIGINT, deregisters.
pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    let json = output::format(args.json) == Format::Json;
    let mut instance = args.instance.instance();
    instance.endpoints = args.endpoints;
    instance.validate()?;

    let mut shutdown = Shutdown::new()?;
    let registry = registry::connect(url, args.instance.ttl).await?;
    let name = format!("{}/{}", instance.service, instance.id);
    let registration = registry
        .registrar
        .register(instance)
        .await
        .with_context(|| format!("registering {name}"))?;
    errln!(
        "lodestar: registered {name} in {shown}; SIGTERM or Ctrl-C deregisters it",
        shown = crate::registry::shown(url)
    );
    let (service, id) = (
        registration.instance().service.clone(),
        registration.instance().id.clone(),
    );
    let event = |event: &str, extra: serde_json::Value| {
        if json {
            let mut line = serde_json::json!({"event": event, "service": service, "id": id});
            if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), extra) {
                line.extend(extra);
            }
            outln!("{line}");
        }
    };
    event(
        "registered",
        serde_json::json!({"instance": registration.instance()}),
    );

    let mut states = registration.subscribe();
    let mut last = states.borrow_and_update().clone();
    let signal = loop {
        tokio::select! {
            signal = shutdown.recv() => break signal,
            changed = states.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the registration of {name} stopped unexpectedly");
                }
                let state = states.borrow_and_update().clone();
                if state != last {
                    log_state(&name, &state);
                    match &state {
                        RegistrationState::Registered => event("registered_again", serde_json::json!({})),
                        RegistrationState::Retrying { attempt, error } => event(
                            "retrying",
                            serde_json::json!({"attempt": attempt, "error": error}),
                        ),
                        _ => {}
                    }
                    last = state;
                }
            }
        }
    };
    registration
        .deregister()
        .await
        .with_context(|| format!("deregistering {name} after {signal}"))?;
    errln!("lodestar: {signal}: deregistered {name}");
    event("deregistered", serde_json::json!({"signal": signal}));
    Ok(ExitCode::SUCCESS)
}

fn log_state(name: &str, state: &RegistrationState) {
    match state {
        RegistrationState::Registered => errln!("lodestar: {name} registered again"),
        RegistrationState::Retrying { attempt, error } => {
            errln!("lodestar: {name} lost its registration (attempt {attempt}): {error}")
        }
        RegistrationState::Deregistered => errln!("lodestar: {name} deregistered"),
        other => errln!("lodestar: {name}: {other:?}"),
    }
}
