//! The client backend: [`LodestarRegistry`] implements lodestar's
//! [`Registrar`] and [`Discovery`] over discovery's HTTP API, so it talks to
//! `lodestar registry` nodes and to bilibili discovery itself.
//!
//! - **Register**: `register`, then `renew` every interval (a third of the
//!   TTL when one is asked for); a renew answered `-404` (the registry
//!   restarted, or evicted the instance during a long pause) registers
//!   again; failures retry with capped backoff, forever, and show in the
//!   registration's state. Deregistering sends `cancel`.
//! - **Discover**: `fetch`, then a long-poll loop from the last
//!   `latest_timestamp`. A failing node is left for the next one; the last
//!   snapshot stays in force meanwhile, and a fresh `fetch` resynchronises
//!   after any error or change of node.
//!
//! Every request goes to the node that answered last and moves on to the
//! next one when it cannot answer.
//!
//! # Operator overrides
//!
//! `set` is discovery's `set`: status down is discovery's status 2 (no
//! traffic; discovery's own clients honour it), weight and metadata are
//! merged into the instance's metadata. Snapshots (`get` and `watch`) keep
//! a down instance, with metadata `status=down`, so `watch` and the
//! dashboard show it; the balancer gives it no new calls. `clear` sets the
//! status up and puts back the owner's values of the keys the override
//! replaced (remembered in the record under
//! [`OVERRIDE_KEY`](crate::wire::OVERRIDE_KEY); discovery cannot delete a
//! metadata key, so a key the owner did not have stays, empty, and a weight
//! it did not give becomes the default). An override lives in the
//! instance's record: an instance the registry lost that registers again
//! starts without one, as in discovery.
//!
//! # The URL
//!
//! ```text
//! lodestar://host:port[,host:port...][?option=value&...]
//! ```
//!
//! | option | meaning | default |
//! | --- | --- | --- |
//! | `env` | environment of registrations and lookups | `dev` |
//! | `zone` | zone of registrations whose metadata names none | `default` |
//! | `ttl` | ask the registry to evict after this long without renews; renews every third of it | none: renew every `renew` |
//! | `renew` | renew interval without a TTL | `30s` |
//! | `connect_timeout` | time to reach a node at start | `3s` |
//! | `timeout` | time for one request (polls get the hold on top) | `5s` |
//! | `token` | the nodes' shared [`Token`](crate::Token), sent with every request (`Authorization: Bearer`); never printed | none |
//!
//! Durations take `ms` or `s` suffixes (a bare number is seconds).
//!
//! # Examples
//!
//! ```no_run
//! use lodestar::Discovery;
//! use lodestar_registry::LodestarRegistry;
//!
//! # async fn run() -> Result<(), lodestar::Error> {
//! let url = "lodestar://10.0.0.1:7171,10.0.0.2:7171?env=prod&zone=z1";
//! let registry = LodestarRegistry::connect(url.parse()?).await?;
//! let mut watch = registry.watch("echo").await?;
//! while let Some(snapshot) = watch.next().await {
//!     println!("{} instances of echo", snapshot.len());
//! #   break;
//! }
//! # Ok(())
//! # }
//! ```

mod config;
mod register;
mod set;
mod watch;

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lodestar::{
    BoxFuture, Discovery, Error, Instance, Override, Registrar, Registration, Snapshot, Subscriber,
    Subscription, Watch,
};

pub use config::{ClientConfig, DEFAULT_PORT};

use crate::{
    form::Form,
    http::{CallError, HttpClient},
    wire::{Code, Reply},
};

/// A connection to a lodestar (or bilibili discovery) registry; see the
/// [module docs](crate::client). Cheap to clone.
#[derive(Clone)]
pub struct LodestarRegistry {
    shared: Arc<Shared>,
}

/// What the registry's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) nodes: Nodes,
}

/// The registry's nodes, with the one that answered last.
#[derive(Debug)]
pub(crate) struct Nodes {
    addrs: Vec<String>,
    current: AtomicUsize,
    http: HttpClient,
}

// === impl LodestarRegistry ===

impl LodestarRegistry {
    /// Connects and checks that a node answers within the connect timeout;
    /// otherwise an [`Error::Unreachable`] naming the nodes.
    pub async fn connect(config: ClientConfig) -> Result<Self, Error> {
        let nodes = Nodes::new(config.nodes.clone(), config.token.clone());
        let timeout = config.connect_timeout;
        nodes
            .get("/discovery/nodes", timeout)
            .await
            .map_err(|e| match e {
                Error::Request { registry, source } => Error::Unreachable { registry, source },
                other => other,
            })?;
        let shared = Arc::new(Shared { config, nodes });
        Ok(Self { shared })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }
}

impl fmt::Debug for LodestarRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LodestarRegistry")
            .field("nodes", &self.shared.config.nodes)
            .field("env", &self.shared.config.env)
            .finish_non_exhaustive()
    }
}

impl Registrar for LodestarRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, Error>> {
        Box::pin(register::register(self.shared.clone(), instance))
    }

    fn deregister(&self, service: &str, id: &str) -> BoxFuture<'_, Result<bool, Error>> {
        let (service, id) = (service.to_string(), id.to_string());
        Box::pin(async move {
            register::cancel(&self.shared, &self.shared.config.zone, &service, &id).await
        })
    }

    /// discovery's `set`; see [`set`](crate::client#operator-overrides).
    fn set(&self, service: &str, id: &str, change: Override) -> BoxFuture<'_, Result<bool, Error>> {
        let (service, id) = (service.to_string(), id.to_string());
        Box::pin(async move { set::set(&self.shared, &service, &id, change).await })
    }

    /// Status up and the owner's values back; see
    /// [`set`](crate::client#operator-overrides).
    fn clear(&self, service: &str, id: &str) -> BoxFuture<'_, Result<bool, Error>> {
        let (service, id) = (service.to_string(), id.to_string());
        Box::pin(async move { set::clear(&self.shared, &service, &id).await })
    }
}

impl Discovery for LodestarRegistry {
    fn watch(&self, service: &str) -> BoxFuture<'_, Result<Watch, Error>> {
        let service = service.to_string();
        Box::pin(async move { watch::start(self.shared.clone(), service).await })
    }

    fn get(&self, service: &str) -> BoxFuture<'_, Result<Snapshot, Error>> {
        let service = service.to_string();
        Box::pin(async move { watch::get(&self.shared, &service).await })
    }

    fn subscribe(&self, subscriber: Subscriber) -> BoxFuture<'_, Result<Subscription, Error>> {
        Box::pin(async move {
            let record = subscriber_record(&subscriber)?;
            let registration = register::register(self.shared.clone(), record).await?;
            Ok(Subscription::from_registration(registration))
        })
    }

    fn subscribers(&self, service: &str) -> BoxFuture<'_, Result<Vec<Subscriber>, Error>> {
        let appid = format!("{service}{SUBSCRIBERS}");
        let service = service.to_string();
        Box::pin(async move {
            let snapshot = watch::get(&self.shared, &appid).await?;
            Ok(snapshot
                .instances()
                .iter()
                .map(|record| subscriber_of(&service, record))
                .collect())
        })
    }

    fn services(&self) -> BoxFuture<'_, Result<BTreeMap<String, usize>, Error>> {
        Box::pin(async move {
            let query = Form::new().pair("env", &self.shared.config.env).finish();
            let path = format!("/discovery/fetch/all?{query}");
            let reply = self.shared.get(&path).await?;
            let apps: BTreeMap<String, Vec<serde_json::Value>> = self.shared.data(reply)?;
            Ok(apps
                .into_iter()
                // The registry's own nodes (`infra.discovery`) and subscriber
                // records are bookkeeping, not services.
                .filter(|(appid, list)| {
                    !list.is_empty()
                        && !appid.ends_with(SUBSCRIBERS)
                        && appid != crate::wire::DISCOVERY_APPID
                })
                .map(|(appid, list)| (appid, list.len()))
                .collect())
        })
    }
}

/// Subscribers of service `S` are kept as instances of app `S` + this, one
/// per client, renewed like any registration: discovery has no notion of
/// subscribers, and this keeps its API (and its clients) untouched.
const SUBSCRIBERS: &str = "@lodestar-subscribers";

fn subscriber_record(subscriber: &Subscriber) -> Result<Instance, Error> {
    Ok(Instance::new(
        format!("{}{SUBSCRIBERS}", subscriber.service),
        &subscriber.client_id,
    )
    .with_endpoint("subscriber://localhost:1".parse()?)
    .with_metadata("host", &subscriber.host)
    .with_metadata("pid", subscriber.pid.to_string())
    .with_metadata("since", subscriber.since.to_string()))
}

fn subscriber_of(service: &str, record: &Instance) -> Subscriber {
    let number = |key: &str| {
        record
            .metadata
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
    };
    Subscriber {
        service: service.to_string(),
        client_id: record.id.clone(),
        host: record.metadata.get("host").cloned().unwrap_or_default(),
        pid: u32::try_from(number("pid")).unwrap_or_default(),
        since: number("since"),
    }
}

// === impl Shared ===

impl Shared {
    async fn get(&self, path: &str) -> Result<Reply, Error> {
        self.nodes.get(path, self.config.request_timeout).await
    }

    async fn post(&self, path: &str, form: String) -> Result<Reply, Error> {
        self.nodes
            .post(path, form, self.config.request_timeout)
            .await
    }

    /// The data of a successful reply; other codes are errors.
    fn data<T: serde::de::DeserializeOwned>(&self, reply: Reply) -> Result<T, Error> {
        if reply.code() != Some(Code::Ok) {
            return Err(self.refused(&reply));
        }
        serde_json::from_value(reply.data).map_err(|e| Error::Request {
            registry: self.config.display_nodes(),
            source: format!("unexpected data in the answer: {e}").into(),
        })
    }

    fn refused(&self, reply: &Reply) -> Error {
        Error::Request {
            registry: self.config.display_nodes(),
            source: format!("code {}: {}", reply.code, reply.message).into(),
        }
    }
}

// === impl Nodes ===

impl Nodes {
    fn new(addrs: Vec<String>, token: Option<crate::Token>) -> Self {
        Self {
            addrs,
            current: AtomicUsize::new(0),
            http: HttpClient::new(token),
        }
    }

    /// The node that answered last: a change means another node's view.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    pub(crate) async fn get(&self, path: &str, timeout: Duration) -> Result<Reply, Error> {
        self.call(|addr| self.http.get(addr, path, timeout)).await
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        form: String,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        self.call(|addr| self.http.post(addr, path, form.clone(), timeout))
            .await
    }

    /// Tries every node once, starting with the current one, until one
    /// answers; that one becomes current.
    async fn call<'a, F, Fut>(&'a self, request: F) -> Result<Reply, Error>
    where
        F: Fn(&'a str) -> Fut,
        Fut: Future<Output = Result<Reply, CallError>>,
    {
        let start = self.current();
        let mut last = None;
        for step in 0..self.addrs.len() {
            let at = (start + step) % self.addrs.len();
            match request(&self.addrs[at]).await {
                Ok(reply) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(reply);
                }
                Err(e) => {
                    tracing::debug!(node = %self.addrs[at], error = %e, "registry node did not answer");
                    last = Some(e);
                }
            }
        }
        let registry = self.addrs.join(",");
        Err(match last {
            Some(CallError::Timeout(timeout)) => Error::Timeout { registry, timeout },
            Some(e) => Error::Request {
                registry,
                source: e.into(),
            },
            None => Error::Config("no registry node given".into()),
        })
    }
}
