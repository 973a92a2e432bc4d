//! The channel's options ([`Builder`]) and how they assemble the stages.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use lodestar::{
    Discovery, Snapshot,
    balance::{Balancer, BuiltinPolicy, Health, OutlierDetection, Policy},
    discovery::protect::Protection,
};

use super::{Channel, Inner, call::Caller, conn::Settings, pool::Pool};

/// Options of a [`Channel`]; see the [module docs](super) for defaults.
#[derive(Clone)]
pub struct Builder {
    discovery: Arc<dyn Discovery>,
    service: String,
    policy: Arc<dyn Policy>,
    zone: Option<String>,
    ready_timeout: Duration,
    retries: usize,
    default_rtt: Option<Duration>,
    decay: Option<Duration>,
    force_pick: Option<Duration>,
    call_timeout: Option<Duration>,
    outlier: Option<OutlierDetection>,
    protection: Protection,
    settings: Settings,
}

/// A policy given to [`Builder::policy`]: a [`BuiltinPolicy`] or an
/// `Arc<dyn Policy>`.
#[derive(Clone)]
pub struct PolicyChoice(Arc<dyn Policy>);

// === impl Builder ===

impl Builder {
    pub(super) fn new(discovery: Arc<dyn Discovery>, service: String) -> Self {
        Self {
            discovery,
            service,
            policy: BuiltinPolicy::P2c.policy(),
            zone: None,
            ready_timeout: Duration::from_secs(5),
            retries: 2,
            default_rtt: None,
            decay: None,
            force_pick: None,
            call_timeout: None,
            outlier: None,
            protection: Protection::new(),
            settings: Settings {
                connect_timeout: Duration::from_secs(3),
                health_check: true,
            },
        }
    }

    /// The balancing policy: a [`BuiltinPolicy`] or any [`Policy`].
    pub fn policy(mut self, policy: impl Into<PolicyChoice>) -> Self {
        self.policy = policy.into().0;
        self
    }

    /// Prefers instances of this zone, falling back to all.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// How long a call waits for the channel to be ready (an instance
    /// usable): for the first snapshot's instances to connect, and whenever
    /// none is usable. `poll_ready` stays pending meanwhile; once it has
    /// lasted this long, calls fail at once with `Unavailable` until an
    /// instance is usable again.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Whether to follow each instance's gRPC health.
    pub fn health_check(mut self, enabled: bool) -> Self {
        self.settings.health_check = enabled;
        self
    }

    /// How many other instances a call that could not be sent is tried on.
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// Time allowed for TCP connect plus the HTTP/2 handshake.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// The latency a new instance is assumed to have until measured
    /// (latency-aware policies); see
    /// [`balance::Builder::default_rtt`](lodestar::balance::Builder::default_rtt).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt = Some(rtt);
        self
    }

    /// The peak-EWMA decay window; see
    /// [`balance::Builder::decay`](lodestar::balance::Builder::decay).
    pub fn decay(mut self, decay: Duration) -> Self {
        self.decay = Some(decay);
        self
    }

    /// The p2c force-pick interval: an instance not picked for this long is
    /// picked the next time it is drawn; see
    /// [`balance::Builder::force_pick`](lodestar::balance::Builder::force_pick).
    pub fn force_pick(mut self, interval: Duration) -> Self {
        self.force_pick = Some(interval);
        self
    }

    /// How long a call waits for its response to start (the response
    /// headers) once sent to an instance; then it fails with
    /// `DeadlineExceeded` and counts as the instance's failure for outlier
    /// detection, so an instance that accepts calls and never answers (a
    /// frozen process) is ejected. Off by default: a caller's own deadline
    /// (tonic's `Request::set_timeout`) that expires first is the caller's
    /// choice, not the instance's fault, and counts as cancelled.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Outlier detection: how many consecutive failures eject an instance
    /// and for how long; see [`OutlierDetection`] for the defaults.
    pub fn outlier_detection(mut self, outlier: OutlierDetection) -> Self {
        self.outlier = Some(outlier);
        self
    }

    /// Client-side self-protection: when more than a share of the
    /// instances vanishes from discovery within a window, the channel keeps
    /// them until they stop answering or the window passes; see
    /// [`lodestar::discovery::protect`]. On by default (half, 30 s);
    /// [`Protection::disabled`] turns it off.
    pub fn protection(mut self, protection: Protection) -> Self {
        self.protection = protection;
        self
    }

    /// Starts following the service and returns the channel at once; calls
    /// wait (bounded) for the channel to be ready. Must be called within a
    /// tokio runtime.
    pub fn connect(self) -> Channel {
        let balancer = self.balancer();
        let (pool, driver) = Pool::new(balancer.clone(), self.settings);
        let task = tokio::spawn(driver.run(
            self.discovery.clone(),
            self.service.clone(),
            self.protection.clone(),
        ));
        let caller = Caller {
            service: self.service,
            registry: format!("{:?}", self.discovery),
            retries: self.retries,
            ready_timeout: self.ready_timeout,
            call_timeout: self.call_timeout,
            balancer,
            pool,
        };
        Channel {
            inner: Arc::new(Inner {
                caller,
                driver: task.abort_handle(),
            }),
            wait: Mutex::new(None),
        }
    }

    /// The balancer: new instances stay out of rotation until connected.
    fn balancer(&self) -> Balancer {
        let mut builder = Balancer::builder()
            .policy_arc(self.policy.clone())
            .initial_health(Health::NotServing);
        if let Some(zone) = &self.zone {
            builder = builder.zone(zone.clone());
        }
        if let Some(rtt) = self.default_rtt {
            builder = builder.default_rtt(rtt);
        }
        if let Some(decay) = self.decay {
            builder = builder.decay(decay);
        }
        if let Some(interval) = self.force_pick {
            builder = builder.force_pick(interval);
        }
        if let Some(outlier) = &self.outlier {
            builder = builder.outlier_detection(outlier.clone());
        }
        builder.build(Snapshot::new(self.service.clone(), 0, Vec::new(), 0))
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("service", &self.service)
            .field("policy", &self.policy.name())
            .field("zone", &self.zone)
            .field("ready_timeout", &self.ready_timeout)
            .field("retries", &self.retries)
            .field("default_rtt", &self.default_rtt)
            .field("decay", &self.decay)
            .field("force_pick", &self.force_pick)
            .field("call_timeout", &self.call_timeout)
            .field("outlier", &self.outlier)
            .field("protection", &self.protection)
            .field("settings", &self.settings)
            .finish()
    }
}

// === impl PolicyChoice ===

impl fmt::Debug for PolicyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl From<BuiltinPolicy> for PolicyChoice {
    fn from(policy: BuiltinPolicy) -> Self {
        Self(policy.policy())
    }
}

impl From<Arc<dyn Policy>> for PolicyChoice {
    fn from(policy: Arc<dyn Policy>) -> Self {
        Self(policy)
    }
}
