//! `lodestar registry`: run a node of the built-in registry server.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;
use lodestar_registry::{
    Token,
    server::{Config, Server},
};

use crate::cmd::Shutdown;
use crate::output::errln;

/// Flags of `lodestar registry`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:7171", value_name = "ADDR")]
    listen: SocketAddr,
    /// Peers in this zone, host:port, comma-separated: every write is replicated to them.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    peers: Vec<String>,
    /// Peers in other zones, ZONE=host:port, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "ZONE=HOST:PORT,...", value_parser = parse_zone_peer)]
    cross_zone_peers: Vec<(String, String)>,
    /// This node's zone (that of its own record under infra.discovery).
    #[arg(long, default_value = "default")]
    zone: String,
    /// The environment of this node's own record under infra.discovery: that of discovery's Go clients (their DEPLOY_ENV).
    #[arg(long, default_value = "dev")]
    env: String,
    /// Where clients reach this node: it registers itself as http://HOST:PORT under infra.discovery, where discovery's Go clients find their nodes. Default: the --listen address, unless it is 0.0.0.0 or [::] (then it does not register itself).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_advertise)]
    advertise: Option<String>,
    /// How often clients are expected to renew, in seconds.
    #[arg(long, default_value = "30", value_name = "SECS", value_parser = parse_secs)]
    renew_interval: Duration,
    /// Evict instances not renewed for this long, in seconds.
    #[arg(long, default_value = "90", value_name = "SECS", value_parser = parse_secs)]
    evict_after: Duration,
    /// How often eviction runs, in seconds (instances with their own TTL are checked every second).
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_secs)]
    evict_every: Duration,
    /// Under self-protection, still evict instances not renewed for this long, in seconds.
    #[arg(long, default_value = "3600", value_name = "SECS", value_parser = parse_secs)]
    protect_ceiling: Duration,
    /// How long a starting node with peers waits for a pull before serving reads, in seconds.
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_secs)]
    warmup: Duration,
    /// How long a poll is held when nothing changes, in seconds.
    #[arg(long, default_value = "30", value_name = "SECS", value_parser = parse_secs)]
    poll_hold: Duration,
    /// Most polls held at once.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_polls: usize,
    /// Most instances of one application in one environment.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_instances_per_app: usize,
    /// A shared secret every write needs (clients: lodestar://host:7171?token=T); peers must have the same. Never printed.
    #[arg(long, env = "LODESTAR_TOKEN", hide_env_values = true, value_name = "TOKEN", value_parser = parse_token)]
    token: Option<Token>,
    /// Reads need the --token too (default: anyone may read).
    #[arg(long, requires = "token")]
    token_reads: bool,
    /// A client must send a request's head within this many seconds of its first byte (idle connections are not timed).
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_secs)]
    header_timeout: Duration,
    /// A client must send a request's body within this many seconds.
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_secs)]
    body_timeout: Duration,
}

fn parse_token(s: &str) -> Result<Token, String> {
    Token::new(s).map_err(|e| e.to_string())
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 => {
            Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
        }
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

/// `host:port` (a name, an IPv4 address or a bracketed IPv6 one), no scheme.
fn parse_advertise(s: &str) -> Result<String, String> {
    let bad = || format!("expected HOST:PORT (no scheme), got {s:?}");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && !host.contains('/')
        && !host.chars().any(|c| c.is_whitespace() || c.is_control());
    match port_ok && host_ok {
        true => Ok(s.to_string()),
        false => Err(bad()),
    }
}

fn parse_zone_peer(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((zone, addr)) if !zone.is_empty() && addr.contains(':') => {
            Ok((zone.to_string(), addr.to_string()))
        }
        _ => Err(format!("expected ZONE=host:port, got {s:?}")),
    }
}

/// Serves until SIGTERM/SIGINT, then drains and exits 0.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut shutdown = Shutdown::new()?;
    let mut config = Config::new(args.listen);
    config.peers = args.peers.into_iter().filter(|p| !p.is_empty()).collect();
    config.cross_zone_peers = args.cross_zone_peers;
    config.zone = args.zone;
    config.env = args.env;
    config.advertise = args.advertise;
    config.renew_interval = args.renew_interval;
    config.evict_after = args.evict_after;
    config.evict_every = args.evict_every;
    config.protect_ceiling = args.protect_ceiling;
    config.warmup = args.warmup;
    config.poll_hold = args.poll_hold;
    config.max_polls = args.max_polls;
    config.max_instances_per_app = args.max_instances_per_app;
    config.header_timeout = args.header_timeout;
    config.body_timeout = args.body_timeout;
    let guarded = match (&args.token, args.token_reads) {
        (None, _) => "no token",
        (Some(_), false) => "token required for writes",
        (Some(_), true) => "token required for reads and writes",
    };
    config.token = args.token;
    config.token_reads = args.token_reads;
    let peers = config.peers.len() + config.cross_zone_peers.len();
    let (zone, env) = (config.zone.clone(), config.env.clone());
    let server = Server::bind(config)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = server.local_addr()?;
    errln!(
        "lodestar: registry listening on {addr} ({peers} peer(s), {guarded}); clients use --registry lodestar://{addr}"
    );
    match server.advertised()? {
        Some(advertised) => errln!(
            "lodestar: registered as http://{advertised} under infra.discovery (zone {}, env {})",
            zone,
            env
        ),
        None => errln!(
            "lodestar: warning: not registered under infra.discovery: {addr} is no address a client can reach; discovery's Go clients need --advertise HOST:PORT"
        ),
    }
    let signal = std::sync::Arc::new(std::sync::Mutex::new(""));
    let seen = signal.clone();
    server
        .serve(async move {
            let name = shutdown.recv().await;
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = name;
        })
        .await
        .context("serving the registry")?;
    let name = *signal.lock().unwrap_or_else(|p| p.into_inner());
    errln!("lodestar: {name}: registry stopped");
    Ok(ExitCode::SUCCESS)
}
