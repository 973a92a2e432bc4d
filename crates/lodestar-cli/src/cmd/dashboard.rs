//! `lodestar dashboard`: the web console over the `--registry`.

use std::{net::SocketAddr, process::ExitCode};

use anyhow::{Context, bail};
use lodestar_dashboard::{Config, Dashboard, generate_token};

use crate::cmd::Shutdown;
use crate::output::{errln, outln};

/// The variable that gives the write token (better than `--token`, which
/// other users of the machine can read in the process list).
const TOKEN_VAR: &str = "LODESTAR_DASHBOARD_TOKEN";

/// Flags of `lodestar dashboard`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to serve the page and the API.
    #[arg(long, default_value = "127.0.0.1:7180", value_name = "ADDR")]
    listen: SocketAddr,
    /// Let operators set instances down/up and change their weight from the page (with the token).
    #[arg(long)]
    allow_writes: bool,
    /// The token writes must carry (default: $LODESTAR_DASHBOARD_TOKEN, else one generated and printed once at start).
    #[arg(long, value_name = "TOKEN", requires = "allow_writes")]
    token: Option<String>,
}

/// Runs the dashboard until SIGTERM/SIGINT.
pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::new()?;
    // The page shows the URL: never its token.
    let mut config = Config::new(crate::registry::shown(url));
    if let Some(token) = crate::registry::token(&crate::registry::with_env_token(url)) {
        config = config.with_registry_token(token);
    }
    if args.allow_writes {
        let token = match args.token.or_else(|| std::env::var(TOKEN_VAR).ok()) {
            Some(token) if token.trim().is_empty() => bail!("the write token is empty"),
            Some(token) => token,
            None => {
                let token = generate_token();
                // Once, on stdout, never through the log.
                outln!("write token: {token}");
                token
            }
        };
        config = config.with_writes(token);
    }
    let shown = crate::registry::shown(url);
    let registry = lodestar_connect::connect(&crate::registry::with_env_token(url))
        .await
        .with_context(|| format!("connecting to the registry at {shown}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let writes = if args.allow_writes {
        "writes allowed with the token"
    } else {
        "read-only"
    };
    outln!("dashboard: http://{addr}/ ({writes})");
    tracing::info!(%addr, registry = %shown, allow_writes = args.allow_writes, "dashboard serving");
    let dashboard = Dashboard::new(registry, config);
    if let Err(e) = dashboard.serve(listener, shutdown.into_future()).await {
        errln!("lodestar: error: serving the dashboard: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
