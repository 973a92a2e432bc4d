//! `lodestar`: register services, list and watch them, from the command line.
//!
//! See `lodestar --help`, and `docs/cli.md` in the repository.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![forbid(unsafe_code)]

mod cmd;
mod output;
mod registry;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

use crate::output::errln;

/// Exit status of a usage error (bad flags), as clap's own.
pub(crate) const USAGE: u8 = 2;
/// Exit status when the registry cannot be reached.
pub(crate) const UNREACHABLE: u8 = 3;

/// What `lodestar --help` ends with.
const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  failure: a call failed, no such instance, an error the message explains
  2  usage error: a bad flag or value
  3  the registry is unreachable (start one: `lodestar registry`, or etcd)

Output: tables for people (colour on a terminal only; NO_COLOR turns it off), --json for programs.
Docs: docs/cli.md";

/// Service registration and discovery for tonic and HTTP services.
#[derive(Debug, Parser)]
#[command(name = "lodestar", version, after_help = AFTER_HELP)]
struct Cli {
    /// The registry: lodestar://host:7171[,host:7171][?env=E&zone=Z] (the built-in one), etcd://host:2379[,host:2379][/prefix][?options], or memory: (in-process, for tests and the demo).
    #[arg(
        long,
        global = true,
        env = "LODESTAR_REGISTRY",
        default_value = registry::DEFAULT_URL,
        value_name = "URL"
    )]
    registry: String,

    /// How to print: table, wide (every column), or json (one object per line; a command's --json says the same).
    #[arg(long, short, global = true, value_enum, default_value_t = output::Format::Table)]
    output: output::Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register an instance and keep it alive until SIGTERM/SIGINT, then deregister it.
    Register(cmd::register::Args),
    /// Remove an instance from the registry now (a live owner registers again).
    Deregister(cmd::list::DeregisterArgs),
    /// List services and their instance counts.
    Ls(cmd::list::LsArgs),
    /// Show the instances of a service.
    Get(cmd::list::GetArgs),
    /// Take an instance out of traffic or back, or change its weight or metadata, without touching its owner's record.
    Set(cmd::set::Args),
    /// Follow a service: one line per instance added, updated or removed.
    Watch(cmd::watch::Args),
    /// Run a node of the built-in registry server (bilibili-discovery compatible).
    Registry(cmd::registry::Args),
    /// List the clients that consume a service.
    Subscribers(cmd::list::SubscribersArgs),
    /// Serve the gRPC (and HTTP) echo service, registered; SIGTERM releases it gracefully.
    ServeEcho(cmd::serve_echo::Args),
    /// Drive echo calls through the balanced channel; print distribution, errors, latency.
    Call(cmd::call::Args),
    /// An HTTP/gRPC gateway routing by path prefix to discovered instances, balanced.
    Gateway(cmd::gateway::Args),
    /// Serve the web console: services, instances, subscribers, live changes, registry nodes; traffic control with --allow-writes.
    Dashboard(cmd::dashboard::Args),
    /// The story in about a minute: an echo fleet behind the gateway under traffic, scale out, rolling restart, kill -9, operator down, pins and lanes, a slow instance; a summary (the built-in registry in-process unless --registry names one).
    Demo(cmd::demo::Args),
    /// Serve xDS (ADS v3): gRPC clients in any language call registered services through xds:///SERVICE, with weights, zones, down and lanes.
    Xds(cmd::xds::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::set_format(cli.output);
    // The demo tells its own story (and a log line would tear its live
    // view); the others log their state changes.
    let default_filter = match cli.command {
        Command::Demo(_) => "error",
        _ => {
            "warn,lodestar=info,lodestar_etcd=info,lodestar_registry=info,lodestar_tonic=info,lodestar_cli=info,lodestar_gateway=info,lodestar_xds=info"
        }
    };
    // The gateway logs a line per request: through a buffer a background
    // thread writes, so a request never waits on stderr.
    let log_guard = init_tracing(default_filter, matches!(cli.command, Command::Gateway(_)));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            errln!("lodestar: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Background tasks (watches, keep-alives) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if let Some(guard) = log_guard {
        guard.flush();
    }
    match result {
        Ok(code) => code,
        Err(e) if is_unreachable(&e) => {
            errln!("lodestar: error: {e:#}");
            errln!(
                "lodestar: hint: start a registry with `lodestar registry` (it listens on \
                 127.0.0.1:7171, the default --registry) or run etcd (`etcd`, then \
                 --registry etcd://127.0.0.1:2379), or point --registry (or LODESTAR_REGISTRY) \
                 at a running one"
            );
            ExitCode::from(UNREACHABLE)
        }
        Err(e) => {
            errln!("lodestar: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the error says the registry could not be reached at all.
fn is_unreachable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<lodestar::Error>())
        .any(|e| e.is_unreachable())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Register(args) => cmd::register::run(&cli.registry, args).await,
        Command::Deregister(args) => cmd::list::deregister(&cli.registry, args).await,
        Command::Ls(args) => cmd::list::ls(&cli.registry, args).await,
        Command::Get(args) => cmd::list::get(&cli.registry, args).await,
        Command::Set(args) => cmd::set::run(&cli.registry, args).await,
        Command::Watch(args) => cmd::watch::run(&cli.registry, args).await,
        Command::Subscribers(args) => cmd::list::subscribers(&cli.registry, args).await,
        Command::ServeEcho(args) => cmd::serve_echo::run(&cli.registry, args).await,
        Command::Call(args) => cmd::call::run(&cli.registry, args).await,
        Command::Demo(args) => cmd::demo::run(&cli.registry, args).await,
        Command::Gateway(args) => cmd::gateway::run(&cli.registry, args).await,
        Command::Dashboard(args) => cmd::dashboard::run(&cli.registry, args).await,
        Command::Registry(args) => cmd::registry::run(args).await,
        Command::Xds(args) => cmd::xds::run(&cli.registry, args).await,
    }
}

/// Logs go to stderr; `LODESTAR_LOG` takes a tracing filter (e.g. `debug`).
/// `buffered`: through [`lodestar_gateway::log_writer`] (flush its guard
/// before exiting), else straight to stderr.
fn init_tracing(
    default_filter: &str,
    buffered: bool,
) -> Option<lodestar_gateway::log_writer::Guard> {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("LODESTAR_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Its own error report goes through eprintln!, which panics on a
        // closed stderr: a lost log line must not take the process down.
        .log_internal_errors(false)
        .with_target(false);
    if buffered {
        let (writer, guard) = lodestar_gateway::log_writer::stderr();
        builder.with_writer(move || writer.clone()).init();
        Some(guard)
    } else {
        builder.with_writer(std::io::stderr).init();
        None
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
