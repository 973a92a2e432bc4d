//! The balanced channel: a `tower::Service` any generated tonic client takes,
//! sending each call to an instance picked from discovery.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use lodestar::balance::BuiltinPolicy;
//! use lodestar_etcd::EtcdRegistry;
//! use {lodestar_echo::{EchoRequest, echo_client::EchoClient}, lodestar_tonic::Channel};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let etcd = EtcdRegistry::connect("etcd://127.0.0.1:2379".parse()?).await?;
//! let channel = Channel::builder(Arc::new(etcd), "echo")
//!     .policy(BuiltinPolicy::P2c)
//!     .connect();
//! let mut client = EchoClient::new(channel);
//! let mut request = tonic::Request::new(EchoRequest { message: "hi".into(), delay_ms: 0 });
//! request.metadata_mut().insert("lodestar-color", "blue".parse()?);
//! let reply = client.say(request).await?;
//! println!("served by {}", reply.get_ref().instance);
//! # Ok(())
//! # }
//! ```
//!
//! # Options and defaults
//!
//! | option | default | meaning |
//! | --- | --- | --- |
//! | [`policy`](Builder::policy) | `p2c` | how an instance is picked among the candidates |
//! | [`zone`](Builder::zone) | none | prefer instances of this zone, fall back to all |
//! | [`first_snapshot_timeout`](Builder::first_snapshot_timeout) | 5 s | how long the first calls wait for the first snapshot's instances to connect; then they go on with whichever are usable, or fail with `Unavailable` naming the service, route and registry when none is |
//! | [`health_check`](Builder::health_check) | on | follow each instance's `grpc.health.v1.Health/Watch`; eject it while NOT_SERVING |
//! | [`retries`](Builder::retries) | 2 | how many other instances a call that could not be sent is tried on |
//! | [`connect_timeout`](Builder::connect_timeout) | 3 s | TCP connect plus HTTP/2 handshake |
//!
//! # What it does
//!
//! - Watches the service and keeps one HTTP/2 connection per instance,
//!   connecting new instances in the background; only connected (and, with
//!   health checks, SERVING) instances are picked.
//! - Picks with lodestar's [`Balancer`] using the route of the request's
//!   headers (`lodestar-version`, `lodestar-color`, `lodestar-hash-key`; a
//!   colour from [`color`](crate::color) propagation when the request has
//!   none), and reports each call's latency and outcome back to it.
//! - A removed instance is not picked again; its calls in flight finish,
//!   then its connection closes.
//! - A call that could not be sent (the connection was not up, or hyper
//!   handed the request back) is retried on another instance; a call that
//!   may have run is never retried.
//! - While the registry is unreachable it keeps using the last snapshot.
//! - It records itself as a subscriber of the service for as long as it
//!   lives (in etcd, `<prefix>/subscribers/<service>/<client-id>` under the
//!   process's lease), so `lodestar subscribers S` lists who consumes it.

mod body;
mod conn;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, RwLock, Weak},
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use lodestar::{
    Discovery, Instance, Snapshot, Subscriber,
    backoff::Backoff,
    balance::{self, Balancer, BuiltinPolicy, Health, Policy, Route},
};
use tokio::{sync::watch, task::AbortHandle};
use tonic::{Status, body::Body};

use self::conn::{Conn, Report, Settings};

/// Endpoint schemes the channel dials, in order of preference.
const SCHEMES: [&str; 3] = ["grpc", "h2c", "http"];

/// A balanced channel; see the [module docs](self). Cheap to clone: clones
/// share the connections and the balancer.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

/// Options of a [`Channel`]; see the [module docs](self) for defaults.
#[derive(Clone)]
pub struct Builder {
    discovery: Arc<dyn Discovery>,
    service: String,
    policy: Arc<dyn Policy>,
    zone: Option<String>,
    first_snapshot_timeout: Duration,
    retries: usize,
    settings: Settings,
}

struct Inner {
    service: String,
    registry: String,
    balancer: Balancer,
    first_snapshot_timeout: Duration,
    retries: usize,
    settings: Settings,
    /// Read on every call, written only when the snapshot changes.
    conns: RwLock<HashMap<String, Conn>>,
    /// True once the first instances seen have all settled (connected with
    /// a known health, or failed) and one of them is usable: calls stop
    /// waiting then, so the first calls see the whole initial view.
    ready: watch::Sender<bool>,
    /// The first instances seen that have not settled yet; `None` until a
    /// snapshot with instances arrives.
    unsettled: Mutex<Option<std::collections::HashSet<String>>>,
    /// Whether any instance has ever been usable.
    usable_seen: std::sync::atomic::AtomicBool,
    discover: Mutex<Option<AbortHandle>>,
}

// === impl Channel ===

impl Channel {
    /// A channel to `service`, found through `discovery`.
    pub fn builder(discovery: Arc<dyn Discovery>, service: impl Into<String>) -> Builder {
        Builder {
            discovery,
            service: service.into(),
            policy: BuiltinPolicy::P2c.policy(),
            zone: None,
            first_snapshot_timeout: Duration::from_secs(5),
            retries: 2,
            settings: Settings {
                connect_timeout: Duration::from_secs(3),
                health_check: true,
            },
        }
    }

    /// The service this channel calls.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The balancer, for inspection (ejected instances, current snapshot).
    pub fn balancer(&self) -> &Balancer {
        &self.inner.balancer
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("service", &self.inner.service)
            .field("registry", &self.inner.registry)
            .finish_non_exhaustive()
    }
}

impl tower::Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = lodestar::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per call: waiting for an instance is bounded there.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        crate::color::propagate(&mut request);
        let inner = self.inner.clone();
        Box::pin(async move { inner.call(request).await.map_err(Into::into) })
    }
}

// === impl Builder ===

impl Builder {
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

    /// How long a call waits for the first usable instance.
    pub fn first_snapshot_timeout(mut self, timeout: Duration) -> Self {
        self.first_snapshot_timeout = timeout;
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

    /// Starts watching the service and returns the channel at once; calls
    /// wait (bounded) for the first usable instance. Must be called within a
    /// tokio runtime.
    pub fn connect(self) -> Channel {
        let mut balancer = Balancer::builder().policy_arc(self.policy);
        if let Some(zone) = self.zone {
            balancer = balancer.zone(zone);
        }
        let empty = Snapshot::new(self.service.clone(), 0, Vec::new(), 0);
        let inner = Arc::new(Inner {
            registry: format!("{:?}", self.discovery),
            balancer: balancer.build(empty),
            service: self.service.clone(),
            first_snapshot_timeout: self.first_snapshot_timeout,
            retries: self.retries,
            settings: self.settings,
            conns: RwLock::default(),
            ready: watch::channel(false).0,
            unsettled: Mutex::default(),
            usable_seen: std::sync::atomic::AtomicBool::new(false),
            discover: Mutex::default(),
        });
        let task = tokio::spawn(follow(Arc::downgrade(&inner), self.discovery, self.service));
        *lock(&inner.discover) = Some(task.abort_handle());
        Channel { inner }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("service", &self.service)
            .field("policy", &self.policy.name())
            .field("zone", &self.zone)
            .field("first_snapshot_timeout", &self.first_snapshot_timeout)
            .field("retries", &self.retries)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A policy given to [`Builder::policy`]: a [`BuiltinPolicy`] or an
/// `Arc<dyn Policy>`.
#[derive(Clone)]
pub struct PolicyChoice(Arc<dyn Policy>);

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

/// Follows the service for as long as the channel lives, retrying a
/// registry that cannot be reached yet.
async fn follow(inner: Weak<Inner>, discovery: Arc<dyn Discovery>, service: String) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut watch = loop {
        match discovery.watch(&service).await {
            Ok(watch) => break watch,
            Err(error) => {
                tracing::warn!(%service, %error, "cannot watch the service yet; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    };
    // Recorded as a consumer for as long as this task lives (the channel).
    let _subscription = match discovery
        .subscribe(Subscriber::this_process(&service))
        .await
    {
        Ok(subscription) => Some(subscription),
        Err(error) => {
            tracing::warn!(%service, %error, "cannot record this client as a subscriber");
            None
        }
    };
    while let Some(snapshot) = watch.next().await {
        let Some(inner) = inner.upgrade() else { return };
        inner.apply(&snapshot);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The address the channel dials for an instance.
fn dial_address(instance: &Instance) -> Option<String> {
    SCHEMES
        .iter()
        .find_map(|scheme| instance.endpoint(scheme))
        .or_else(|| instance.endpoints.first())
        .map(|e| e.address())
}

// === impl Inner ===

impl Inner {
    /// Brings balancer and connections in line with a new snapshot.
    fn apply(self: &Arc<Self>, snapshot: &Arc<Snapshot>) {
        self.balancer.update(snapshot.clone());
        {
            let mut unsettled = lock(&self.unsettled);
            if unsettled.is_none() && !snapshot.is_empty() {
                *unsettled = Some(snapshot.instances().iter().map(|i| i.id.clone()).collect());
            }
        }
        let mut conns = self.conns.write().unwrap_or_else(PoisonError::into_inner);
        let mut stale: Vec<String> = conns.keys().cloned().collect();
        for instance in snapshot.instances() {
            stale.retain(|id| id != &instance.id);
            let Some(address) = dial_address(instance) else {
                continue;
            };
            if conns
                .get(&instance.id)
                .is_some_and(|c| c.address == address)
            {
                continue;
            }
            self.balancer.set_health(&instance.id, Health::NotServing);
            let report: Arc<dyn Report> = Arc::new(Arc::downgrade(self));
            match Conn::spawn(instance.id.clone(), address, self.settings.clone(), report) {
                Ok(conn) => {
                    if let Some(old) = conns.insert(instance.id.clone(), conn) {
                        old.retire();
                    }
                }
                Err(error) => tracing::warn!(id = %instance.id, %error, "bad instance address"),
            }
        }
        for id in stale {
            if let Some(conn) = conns.remove(&id) {
                conn.retire();
            }
        }
    }

    async fn call(&self, mut request: Request<Body>) -> Result<Response<Body>, Status> {
        let route = Route::from_headers(request.headers());
        self.wait_ready(&route).await?;
        let mut attempts = 0;
        loop {
            let pick = self
                .balancer
                .pick(&route)
                .map_err(|e| self.unavailable(&e))?;
            let sender = self.read_conns().get(&pick.instance().id).and_then(|conn| {
                conn.target(&mut request);
                conn.sender()
            });
            let returned = match sender {
                Some(mut sender) => match sender.try_send_request(request).await {
                    Ok(response) => return Ok(body::record(response, pick)),
                    Err(mut error) => match error.take_message() {
                        Some(request) => {
                            tracing::debug!(id = %pick.instance().id, error = %error.error(), "call not sent; trying another instance");
                            self.not_connected(&pick.instance().id);
                            request
                        }
                        None => {
                            pick.failure();
                            return Err(Status::unavailable(format!(
                                "{}: {}",
                                self.service,
                                error.into_error()
                            )));
                        }
                    },
                },
                None => {
                    self.not_connected(&pick.instance().id);
                    request
                }
            };
            // Never sent: the instance is not usable right now.
            drop(pick);
            request = returned;
            attempts += 1;
            if attempts > self.retries {
                return Err(Status::unavailable(format!(
                    "{}: no instance could take the call after {attempts} attempts",
                    self.service
                )));
            }
            tokio::task::yield_now().await;
        }
    }

    fn read_conns(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Conn>> {
        self.conns.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A picked instance had no connection: take it out of rotation unless
    /// its connector has just brought it up (it updates the status before it
    /// reports, so checking again after ours closes the race).
    fn not_connected(&self, id: &str) {
        self.balancer.set_health(id, Health::NotServing);
        let up = self.read_conns().get(id).is_some_and(Conn::usable);
        if up {
            self.balancer.set_health(id, Health::Serving);
        }
    }

    /// Waits, bounded, until the first instances have settled.
    async fn wait_ready(&self, route: &Route) -> Result<(), Status> {
        let mut ready = self.ready.subscribe();
        if *ready.borrow() {
            return Ok(());
        }
        let waited =
            tokio::time::timeout(self.first_snapshot_timeout, ready.wait_for(|r| *r)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Status::unavailable(format!(
                "no instance of {} (route {:?}) became available within {:?} from registry {}",
                self.service, route, self.first_snapshot_timeout, self.registry
            ))),
        }
    }

    fn check_ready(&self) {
        let settled = lock(&self.unsettled).as_ref().is_some_and(|u| u.is_empty());
        if settled && self.usable_seen.load(std::sync::atomic::Ordering::Relaxed) {
            self.ready
                .send_if_modified(|ready| !std::mem::replace(ready, true));
        }
    }

    fn unavailable(&self, error: &balance::Error) -> Status {
        Status::unavailable(format!("{error} (registry {})", self.registry))
    }
}

impl Report for Weak<Inner> {
    fn changed(&self, id: &str, usable: bool) {
        let Some(inner) = self.upgrade() else { return };
        let health = if usable {
            Health::Serving
        } else {
            Health::NotServing
        };
        inner.balancer.set_health(id, health);
        if usable {
            inner
                .usable_seen
                .store(true, std::sync::atomic::Ordering::Relaxed);
            inner.check_ready();
        }
    }

    fn settled(&self, id: &str) {
        let Some(inner) = self.upgrade() else { return };
        if let Some(unsettled) = lock(&inner.unsettled).as_mut() {
            unsettled.remove(id);
        }
        inner.check_ready();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.discover).take() {
            task.abort();
        }
    }
}
