//! A service's instances: one discovery [`Watch`](lodestar::Watch) per
//! service and policy, feeding the [`Balancer`] that the tonic channel uses
//! too. Routes of the same service and policy share one upstream, and a
//! reload keeps the upstreams whose service and policy stay, with what their
//! balancer learnt (latency, ejections).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use lodestar::{
    Discovery, Snapshot,
    backoff::Backoff,
    balance::{Balancer, OutlierDetection},
    discovery::protect::{self, Protection},
};
use tokio::{sync::watch, task::AbortHandle};

use crate::metrics::Metrics;

/// One service's balancer, fed by discovery; see the [module docs](self).
#[derive(Debug)]
pub struct Upstream {
    service: String,
    balancer: Balancer,
    ready: watch::Receiver<bool>,
    task: Option<AbortHandle>,
}

/// The upstreams in use, by service and policy.
#[derive(Debug)]
pub struct Upstreams {
    discovery: Arc<dyn Discovery>,
    metrics: Arc<Metrics>,
    by_key: Mutex<HashMap<(String, String), Arc<Upstream>>>,
}

/// How often ejections are sampled for the metrics.
const EJECTION_SAMPLE: Duration = Duration::from_millis(500);

// === impl Upstream ===

impl Upstream {
    fn start(
        discovery: Arc<dyn Discovery>,
        metrics: Arc<Metrics>,
        service: &str,
        policy: &str,
    ) -> Arc<Self> {
        let balancer = balancer(service, policy);
        let (tx, ready) = watch::channel(false);
        let task = tokio::spawn(follow(
            discovery,
            metrics,
            service.to_string(),
            balancer.clone(),
            tx,
        ));
        Arc::new(Self {
            service: service.to_string(),
            balancer,
            ready,
            task: Some(task.abort_handle()),
        })
    }

    /// An upstream that follows nothing (no instance), for unit tests.
    pub fn detached(service: &str) -> Arc<Self> {
        let (_, ready) = watch::channel(true);
        Arc::new(Self {
            service: service.to_string(),
            balancer: balancer(service, "round_robin"),
            ready,
            task: None,
        })
    }

    /// The service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Its balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Waits (at most `timeout`) for the first snapshot; `false` if it has
    /// not come.
    pub async fn ready(&self, timeout: Duration) -> bool {
        if *self.ready.borrow() {
            return true;
        }
        let mut ready = self.ready.clone();
        tokio::time::timeout(timeout, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn balancer(service: &str, policy: &str) -> Balancer {
    // The policy name was validated with the configuration; p2c otherwise.
    let builder = Balancer::builder();
    let builder = match builder.clone().policy_name(policy) {
        Ok(b) => b,
        Err(_) => builder,
    };
    builder
        // Quicker to eject than the default (a gateway sees many requests):
        // 3 failures in a row, 10 s growing to 2 min.
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(3)
                .base_ejection(Duration::from_secs(10))
                .max_ejection(Duration::from_secs(120)),
        )
        .build(Snapshot::new(service, 0, vec![], 0))
}

/// Follows `service` forever (until aborted): each snapshot updates the
/// balancer; a registry that cannot be reached is retried with backoff.
async fn follow(
    discovery: Arc<dyn Discovery>,
    metrics: Arc<Metrics>,
    service: String,
    balancer: Balancer,
    ready: watch::Sender<bool>,
) {
    let mut backoff = Backoff::watch();
    let mut ejected = HashSet::<String>::new();
    loop {
        let watch = match discovery.watch(&service).await {
            Ok(watch) => watch,
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%service, %error, ?wait, "cannot watch the service; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        backoff.reset();
        // Client-side self-protection, as the tonic channel has it: a mass
        // disappearance (an etcd frozen past the TTL revoking every lease
        // at once) keeps the vanished instances, which the balancer ejects
        // at their first failure.
        let mut watch = protect::protect(watch, Protection::default());
        let mut sample = tokio::time::interval(EJECTION_SAMPLE);
        loop {
            tokio::select! {
                snapshot = watch.next() => {
                    let Some(snapshot) = snapshot else { break };
                    tracing::debug!(%service, instances = snapshot.len(), "snapshot");
                    balancer.update(snapshot);
                    ready.send_replace(true);
                }
                _ = sample.tick() => sample_ejections(&metrics, &service, &balancer, &mut ejected),
            }
        }
    }
}

/// Counts instances newly ejected since the last sample.
fn sample_ejections(
    metrics: &Metrics,
    service: &str,
    balancer: &Balancer,
    seen: &mut HashSet<String>,
) {
    let now: HashSet<String> = balancer.ejected().into_iter().collect();
    for id in now.difference(seen) {
        tracing::warn!(%service, instance = %id, "instance ejected by outlier detection");
        metrics.ejection(service, id);
    }
    metrics.set_ejected(service, now.len());
    *seen = now;
}

// === impl Upstreams ===

impl Upstreams {
    /// No upstream yet; each comes from `discovery` when a route needs it.
    pub fn new(discovery: Arc<dyn Discovery>, metrics: Arc<Metrics>) -> Self {
        Self {
            discovery,
            metrics,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    /// The upstream of `service` balanced by `policy`, started if new.
    pub fn get(&self, service: &str, policy: &str) -> Arc<Upstream> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        by_key
            .entry((service.to_string(), policy.to_string()))
            .or_insert_with(|| {
                Upstream::start(
                    self.discovery.clone(),
                    self.metrics.clone(),
                    service,
                    policy,
                )
            })
            .clone()
    }

    /// Forgets the upstreams no route uses any more (their watches stop
    /// once the requests in flight holding them finish).
    pub fn retain(&self, used: &HashSet<(String, String)>) {
        let mut by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        by_key.retain(|key, _| used.contains(key));
    }
}
