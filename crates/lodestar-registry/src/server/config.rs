//! How a registry node runs: [`Config`].

use std::{net::SocketAddr, time::Duration};

use crate::Token;

/// Settings of one registry node. [`Config::new`] gives discovery's
/// defaults; tests shorten the timers.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// This node's zone: that of its own record (see `advertise`), and
    /// reported by `/discovery/nodes`.
    pub zone: String,
    /// The environment of the node's own record: discovery's Go clients
    /// look for their nodes in their own environment (`DEPLOY_ENV`), so it
    /// must be theirs (`dev`).
    pub env: String,
    /// `host:port` where clients reach this node. Every node registers
    /// itself as an instance of `infra.discovery` with the address
    /// `http://{advertise}` (and renews it, and cancels it at shutdown),
    /// because discovery's Go clients find their nodes that way and wait
    /// until they do. `None` advertises the address listened on, unless it
    /// is unspecified (`0.0.0.0`): then the node does not register itself.
    pub advertise: Option<String>,
    /// Peers in this zone (`host:port`), every write accepted from a client
    /// is forwarded to them.
    pub peers: Vec<String>,
    /// Peers in other zones (`zone`, `host:port`), replicated to as well.
    pub cross_zone_peers: Vec<(String, String)>,
    /// How often clients are expected to renew (30 s).
    pub renew_interval: Duration,
    /// An instance not renewed for this long is evicted (90 s).
    pub evict_after: Duration,
    /// How often eviction runs (60 s). Instances with their own TTL are
    /// checked at least every second whatever this says.
    pub evict_every: Duration,
    /// The window over which renews are counted for self-protection (60 s).
    pub protect_window: Duration,
    /// Self-protection is on when the last window's renews fall below this
    /// share of the expected ones (0.85).
    pub protect_threshold: f64,
    /// Even under self-protection, an instance not renewed for this long is
    /// evicted (1 h).
    pub protect_ceiling: Duration,
    /// How long a starting node waits for one successful pull from a peer
    /// before serving reads anyway (60 s).
    pub warmup: Duration,
    /// How long a poll is held when nothing changes (30 s).
    pub poll_hold: Duration,
    /// Most polls held at once; more are refused with `-503` (10,000).
    pub max_polls: usize,
    /// Most instances of one application in one environment (10,000).
    pub max_instances_per_app: usize,
    /// Largest request body, in bytes (64 KiB).
    pub max_body: usize,
    /// Writes waiting for one peer; more are dropped, and repaired by the
    /// next renew (100,000).
    pub max_pending_replication: usize,
    /// A client must send its request head within this once it has sent
    /// its first byte (10 s); slow clients are cut off. Idle keep-alive
    /// connections are not timed (see the [module docs](super)).
    pub header_timeout: Duration,
    /// A client may take at most this long to send its request body (10 s).
    pub body_timeout: Duration,
    /// The shared secret writes need, replication included (none). See
    /// [`Token`].
    pub token: Option<Token>,
    /// Whether reads need the token too (false: anyone may read).
    pub token_reads: bool,
}

// === impl Config ===

impl Config {
    /// discovery's defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            zone: "default".to_string(),
            env: "dev".to_string(),
            advertise: None,
            peers: Vec::new(),
            cross_zone_peers: Vec::new(),
            renew_interval: Duration::from_secs(30),
            evict_after: Duration::from_secs(90),
            evict_every: Duration::from_secs(60),
            protect_window: Duration::from_secs(60),
            protect_threshold: 0.85,
            protect_ceiling: Duration::from_secs(3600),
            warmup: Duration::from_secs(60),
            poll_hold: Duration::from_secs(30),
            max_polls: 10_000,
            max_instances_per_app: 10_000,
            max_body: 64 * 1024,
            max_pending_replication: 100_000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            token: None,
            token_reads: false,
        }
    }

    /// Every peer, with its zone.
    pub(crate) fn all_peers(&self) -> Vec<(String, String)> {
        let local = self.peers.iter().map(|p| (self.zone.clone(), p.clone()));
        local.chain(self.cross_zone_peers.iter().cloned()).collect()
    }
}
