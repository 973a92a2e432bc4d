//! The etcd backend of lodestar: registration under a lease kept alive, and
//! discovery by prefix get + watch.
//!
//! [`EtcdRegistry`] implements both [`Registrar`] and [`Discovery`]:
//!
//! - **Register**: one lease per registry (TTL [`EtcdConfig::ttl`], default
//!   10 s) kept alive about every third of the TTL; each instance is a key
//!   under it. When the lease is lost (etcd restarted or lost its data, a cut
//!   longer than the TTL) a new one is granted and every record put again,
//!   with capped, jittered backoff, until it succeeds: it never gives up.
//!   [`Registration::deregister`] deletes the record at once.
//! - **Discover**: a prefix get gives a snapshot at revision R, a watch from
//!   R+1 follows it. Prefixes always end in `/` (`svc` never matches `svc2`).
//!   A dropped connection keeps the last snapshot in force and resumes from
//!   the last revision seen; a compacted revision or an etcd that lost its
//!   data is re-listed. Records that do not parse are skipped, counted and
//!   warned about once; they never crash the watch or hide the good ones.
//! - **Overrides**: an operator's `set` writes `<prefix>/overrides/<service>/<id>`
//!   (no lease: it outlives the instance's restarts until `clear`); every
//!   watch follows it with the records and merges it into the instance.
//!
//! Two key layouts are supported ([`KeyLayout`]): lodestar's own, and the one
//! of etcd's Go naming package, so grpc-go clients and lodestar find each
//! other's services.
//!
//! # Examples
//!
//! ```no_run
//! use lodestar::{Discovery, Instance, Registrar};
//! use lodestar_etcd::EtcdRegistry;
//!
//! # async fn run() -> Result<(), lodestar::Error> {
//! let etcd = EtcdRegistry::connect("etcd://127.0.0.1:2379".parse()?).await?;
//! let registration = etcd
//!     .register(Instance::new("echo", "echo-1").with_endpoint("grpc://127.0.0.1:50051".parse()?))
//!     .await?;
//!
//! let mut watch = etcd.watch("echo").await?;
//! while let Some(snapshot) = watch.next().await {
//!     println!("{} instances at revision {}", snapshot.len(), snapshot.revision());
//! #   break;
//! }
//! registration.deregister().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Registration::deregister`]: lodestar::Registration::deregister
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

mod config;
mod layout;
mod overrides;
mod session;
mod watch;

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use etcd_client::{Client, ConnectOptions, GetOptions};
use lodestar::{
    BoxFuture, Discovery, Error, Instance, Override, Registrar, Registration, RegistrationState,
    Snapshot, Subscriber, Subscription, Watch, backoff::Backoff, registry::Lease,
};
use tokio::{
    sync::{mpsc, oneshot, watch as state},
    task::JoinSet,
    time::{Instant, timeout, timeout_at},
};

pub use config::{DEFAULT_PREFIX, EtcdConfig, KeyLayout, TlsConfig};
pub use etcd_client;

use crate::{layout::Layout, session::Command};

/// An etcd registry; see the [crate docs](crate). Cheap to clone: clones
/// share one connection and one lease session.
#[derive(Clone)]
pub struct EtcdRegistry {
    shared: Shared,
    session: Arc<Mutex<Option<mpsc::UnboundedSender<Command>>>>,
    owners: Arc<AtomicU64>,
}

/// What the registry's tasks share.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) config: Arc<EtcdConfig>,
    pub(crate) layout: Layout,
    /// The session's live lease, 0 when none: lets `register` put directly
    /// instead of going through the session task (one round trip, no hops).
    pub(crate) live_lease: Arc<AtomicI64>,
}

/// The lease of one etcd registration (a key in the session's lease).
#[derive(Debug)]
struct EtcdLease {
    key: String,
    owner: u64,
    session: Option<mpsc::UnboundedSender<Command>>,
}

// === impl EtcdRegistry ===

impl EtcdRegistry {
    /// Connects to etcd and checks that it answers within
    /// [`EtcdConfig::connect_timeout`]; an unreachable etcd is an
    /// [`Error::Unreachable`] naming the addresses.
    pub async fn connect(config: EtcdConfig) -> Result<Self, Error> {
        let options = connect_options(&config)?;
        let unreachable = |source: lodestar::BoxError| Error::Unreachable {
            registry: config.display_endpoints(),
            source,
        };
        // A member that is down must not fail the start while another
        // answers: check them all at once, then connect the balanced client.
        let connect = async {
            any_member_answers(&config.endpoints, &options).await?;
            connect_balanced(&config.endpoints, &options).await
        };
        let client = match timeout(config.connect_timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unreachable(tls_hint(&config, e))),
            Err(_) => {
                return Err(unreachable(
                    format!("no answer within {:?}", config.connect_timeout).into(),
                ));
            }
        };
        Ok(Self {
            shared: Shared {
                client,
                layout: Layout::new(&config),
                config: Arc::new(config),
                live_lease: Arc::default(),
            },
            session: Arc::default(),
            owners: Arc::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &EtcdConfig {
        &self.shared.config
    }

    /// The underlying etcd client, for what lodestar does not cover.
    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    fn session(&self) -> mpsc::UnboundedSender<Command> {
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        session
            .get_or_insert_with(|| session::Session::spawn(self.shared.clone()))
            .clone()
    }

    async fn range(
        &self,
        prefix: String,
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, Error> {
        let options = options.with_prefix();
        self.shared
            .call(|mut c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.get(prefix, Some(options)).await }
            })
            .await
    }

    /// Puts `key` under the session's lease and keeps it there until the
    /// returned lease is deregistered or dropped.
    async fn keep(
        &self,
        key: String,
        value: String,
    ) -> Result<(EtcdLease, state::Receiver<RegistrationState>), Error> {
        let owner = self.owners.fetch_add(1, Ordering::Relaxed);
        let (state_tx, state_rx) = state::channel(RegistrationState::Registered);
        let session = self.session();
        let closed = |_| Error::Closed("etcd session");
        let live = self.shared.live_lease.load(Ordering::Acquire);
        if live != 0 && self.put_fast(&key, &value, live).await? {
            let command = Command::Adopt {
                key: key.clone(),
                value,
                owner,
                state: state_tx,
                lease: live,
            };
            session.send(command).map_err(closed)?;
        } else {
            let (reply, replied) = oneshot::channel();
            let command = Command::Register {
                key: key.clone(),
                value,
                owner,
                state: state_tx,
                reply,
            };
            session.send(command).map_err(closed)?;
            replied.await.map_err(|_| Error::Closed("etcd session"))??;
        }
        let lease = EtcdLease {
            key,
            owner,
            session: Some(session),
        };
        Ok((lease, state_rx))
    }

    /// Puts a record under the live lease from the caller's task; `false`
    /// if that lease is gone (the session then does the work).
    async fn put_fast(&self, key: &str, value: &str, lease: i64) -> Result<bool, Error> {
        let put = self.shared.call(|mut c| {
            let (key, value) = (key.to_string(), value.to_string());
            let options = etcd_client::PutOptions::new().with_lease(lease);
            async move { c.put(key, value, Some(options)).await }
        });
        match put.await {
            Ok(_) => Ok(true),
            Err(e) if is_lease_gone(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn remove(&self, service: &str, id: &str) -> Result<bool, Error> {
        let response = self
            .range(
                self.shared.layout.service_prefix(service),
                GetOptions::new(),
            )
            .await?;
        // Match on the decoded id: in the Go layout the key holds the address.
        let Some(kv) = response.kvs().iter().find(|kv| {
            kv.key_str().is_ok_and(|key| {
                self.shared.layout.split_key(key) == Some((service, id))
                    || self
                        .shared
                        .layout
                        .decode(service, key, kv.value())
                        .is_ok_and(|i| i.id == id)
            })
        }) else {
            return Ok(false);
        };
        // Revoking the owner's lease removes the record at once; a live owner
        // notices and registers again, as with bilibili discovery's cancel.
        let (lease, key) = (kv.lease(), kv.key().to_vec());
        if lease != 0 {
            let revoked = self
                .shared
                .call(|mut c| async move { c.lease_revoke(lease).await })
                .await;
            match revoked {
                Err(e) if !is_lease_gone(&e) => return Err(e),
                _ => {}
            }
        } else {
            self.shared
                .call(|mut c| {
                    let key = key.clone();
                    async move { c.delete(key, None).await }
                })
                .await?;
        }
        Ok(true)
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How often an idle connection to etcd is pinged; above etcd's 5 s minimum.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(6);

/// Asks every member for its status at once, each through a client of its
/// own: `Ok` as soon as one answers, else the last member's error. (One
/// status call through the balanced client lands on any member, a dead one
/// included.)
async fn any_member_answers(
    endpoints: &[String],
    options: &ConnectOptions,
) -> Result<(), lodestar::BoxError> {
    let mut checks = JoinSet::new();
    for endpoint in endpoints {
        let (endpoint, options) = (endpoint.clone(), options.clone());
        checks.spawn(async move {
            let mut client = Client::connect([endpoint], Some(options)).await?;
            client.status().await.map(drop)
        });
    }
    let mut last: lodestar::BoxError = "no etcd address given".into();
    while let Some(checked) = checks.join_next().await {
        match checked {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = concise(e),
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

/// The client over every member. It talks to etcd only to authenticate,
/// and then may pick a dead member: retried, as [`Shared::call`] does, until
/// the caller's timeout.
async fn connect_balanced(
    endpoints: &[String],
    options: &ConnectOptions,
) -> Result<Client, lodestar::BoxError> {
    let mut backoff = Backoff::request();
    loop {
        match Client::connect(endpoints, Some(options.clone())).await {
            Err(e) if is_unavailable(&e) => tokio::time::sleep(backoff.next_delay()).await,
            connected => return connected.map_err(concise),
        }
    }
}

fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions, Error> {
    // HTTP/2 pings notice a dead peer that never closed the connection (a
    // network cut), so keep-alives and watches fail over instead of hanging.
    // Not more often than every 5 s: etcd's server (`--grpc-keepalive-min-time`,
    // default 5 s) answers faster pings with GOAWAY "too_many_pings" and closes
    // the connection, breaking every watch on it every few seconds.
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout)
        .with_keep_alive(KEEPALIVE_INTERVAL, Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let Some((user, password)) = &config.user {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &config.tls {
        options = with_tls(options, tls)?;
    }
    Ok(options)
}

#[cfg(feature = "tls")]
fn with_tls(options: ConnectOptions, tls: &TlsConfig) -> Result<ConnectOptions, Error> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))
    };
    let mut options_tls = TlsOptions::new();
    if let Some(ca) = &tls.ca {
        options_tls = options_tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let Some((cert, key)) = &tls.identity {
        options_tls = options_tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(domain) = &tls.domain {
        options_tls = options_tls.domain_name(domain.clone());
    }
    Ok(options.with_tls(options_tls))
}

#[cfg(not(feature = "tls"))]
fn with_tls(_: ConnectOptions, _: &TlsConfig) -> Result<ConnectOptions, Error> {
    Err(Error::Config(
        "TLS requested but lodestar-etcd was built without its `tls` feature".into(),
    ))
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.shared.config.endpoints)
            .field("prefix", &self.shared.config.prefix)
            .field("layout", &self.shared.config.layout)
            .finish_non_exhaustive()
    }
}

impl Registrar for EtcdRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, Error>> {
        Box::pin(async move {
            instance.validate()?;
            // The stored record says when it was registered (for `get`'s
            // age); the caller's record stays as given.
            let mut stored = instance.clone();
            stored
                .metadata
                .get_or_insert_with(lodestar::instance::REGISTERED.into(), || {
                    unix_now().to_string()
                });
            let (key, value) = self.shared.layout.encode(&stored);
            let (lease, state) = self.keep(key, value).await?;
            Ok(Registration::new(instance, state, Box::new(lease)))
        })
    }

    fn deregister(&self, service: &str, id: &str) -> BoxFuture<'_, Result<bool, Error>> {
        let (service, id) = (service.to_string(), id.to_string());
        Box::pin(async move { self.remove(&service, &id).await })
    }

    /// Writes the override beside the record, at
    /// `<prefix>/overrides/<service>/<id>`, without a lease: it outlives the
    /// instance's restarts until [`clear`](Registrar::clear)ed.
    fn set(&self, service: &str, id: &str, change: Override) -> BoxFuture<'_, Result<bool, Error>> {
        let (service, id) = (service.to_string(), id.to_string());
        Box::pin(async move { overrides::set(&self.shared, &service, &id, change).await })
    }

    fn clear(&self, service: &str, id: &str) -> BoxFuture<'_, Result<bool, Error>> {
        let (service, id) = (service.to_string(), id.to_string());
        Box::pin(async move { overrides::clear(&self.shared, &service, &id).await })
    }
}

impl Discovery for EtcdRegistry {
    fn subscribe(&self, subscriber: Subscriber) -> BoxFuture<'_, Result<Subscription, Error>> {
        Box::pin(async move {
            let key = self
                .shared
                .layout
                .subscriber_key(&subscriber.service, &subscriber.client_id);
            let (lease, _) = self.keep(key, subscriber.to_json()).await?;
            Ok(Subscription::new(Box::new(lease)))
        })
    }

    fn subscribers(&self, service: &str) -> BoxFuture<'_, Result<Vec<Subscriber>, Error>> {
        let prefix = self.shared.layout.subscribers_prefix(service);
        Box::pin(async move {
            let response = self.range(prefix, GetOptions::new()).await?;
            Ok(response
                .kvs()
                .iter()
                .filter_map(|kv| Subscriber::from_json(kv.value()).ok())
                .collect())
        })
    }

    fn watch(&self, service: &str) -> BoxFuture<'_, Result<Watch, Error>> {
        let service = service.to_string();
        Box::pin(async move { watch::start(self.shared.clone(), &service).await })
    }

    fn get(&self, service: &str) -> BoxFuture<'_, Result<Snapshot, Error>> {
        let service = service.to_string();
        Box::pin(async move { watch::get(&self.shared, &service).await })
    }

    fn services(&self) -> BoxFuture<'_, Result<BTreeMap<String, usize>, Error>> {
        Box::pin(async move {
            let prefix = self.shared.layout.services_prefix();
            let response = self
                .range(prefix, GetOptions::new().with_keys_only())
                .await?;
            let mut services = BTreeMap::new();
            for kv in response.kvs() {
                if let Some((service, _)) = kv
                    .key_str()
                    .ok()
                    .and_then(|k| self.shared.layout.split_key(k))
                    .filter(|(service, _)| !Layout::is_bookkeeping(service))
                {
                    *services.entry(service.to_string()).or_insert(0) += 1;
                }
            }
            Ok(services)
        })
    }
}

// === impl Shared ===

impl Shared {
    /// Runs one unary request within the request timeout, retrying while
    /// etcd is unavailable: with several members, the client may pick a dead
    /// one (the request was then never sent, so retrying is safe).
    pub(crate) async fn call<T, F, Fut>(&self, mut request: F) -> Result<T, Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
        let mut backoff = Backoff::request();
        loop {
            match timeout_at(deadline, request(self.client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if is_unavailable(&e) => {
                    let pause = backoff.next_delay();
                    if Instant::now() + pause >= deadline {
                        return Err(self.request_error(e));
                    }
                    tokio::time::sleep(pause).await;
                }
                Ok(Err(e)) => return Err(self.request_error(e)),
                Err(_) => return Err(self.timeout()),
            }
        }
    }

    pub(crate) fn request_error(&self, e: etcd_client::Error) -> Error {
        Error::Request {
            registry: self.config.display_endpoints(),
            source: concise(e),
        }
    }

    pub(crate) fn timeout(&self) -> Error {
        Error::Timeout {
            registry: self.config.display_endpoints(),
            timeout: self.config.request_timeout,
        }
    }
}

/// etcd-client's errors print tonic's whole debug form; people need the
/// gRPC message and the root cause ("tcp connect error: Connection refused").
pub(crate) fn concise(e: etcd_client::Error) -> lodestar::BoxError {
    let etcd_client::Error::GRpcStatus(status) = &e else {
        return e.into();
    };
    let mut text = status.message().to_string();
    let mut root: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(cause) = root.and_then(std::error::Error::source) {
        root = Some(cause);
    }
    if let Some(cause) = root {
        text = format!("{text}: {cause}");
    }
    if text.is_empty() {
        text = format!("gRPC status {:?}", status.code());
    }
    Box::new(Status {
        code: status.code(),
        text,
    })
}

/// A transport failure over TLS gets a hint: with TLS 1.3 a server that
/// refuses the client's certificate (or its absence) just closes the
/// connection, and the client sees only "connection closed".
fn tls_hint(config: &EtcdConfig, e: lodestar::BoxError) -> lodestar::BoxError {
    let transport = match e.downcast_ref::<Status>() {
        Some(status) => matches!(
            status.code,
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        None => true,
    };
    let Some(tls) = config.tls.as_ref().filter(|_| transport) else {
        return e;
    };
    let hint = match tls.identity {
        Some(_) => {
            "TLS failed: check that etcd's certificate is signed by the `ca` given, and that \
             etcd trusts the CA of the client certificate (`cert`, `key`)"
        }
        None => {
            "TLS failed: check that etcd's certificate is signed by the `ca` given; if etcd \
             requires client certificates (--client-cert-auth), give one with `cert` and `key`"
        }
    };
    Box::new(Hinted { hint, source: e })
}

/// An error with a hint of what to check.
#[derive(Debug, thiserror::Error)]
#[error("{hint}")]
struct Hinted {
    hint: &'static str,
    #[source]
    source: lodestar::BoxError,
}

/// An error etcd answered as a gRPC status: its code, for telling errors
/// apart ([`is_lease_gone`]), and its message and root cause, for people.
#[derive(Debug)]
pub(crate) struct Status {
    code: tonic::Code,
    text: String,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Status {}

fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Whether etcd said the lease does not exist.
///
/// etcd answers a request naming a missing lease with gRPC code `NotFound`
/// (`ErrGRPCLeaseNotFound` in its `rpctypes`; the only other `NotFound` is
/// for cluster members, which lodestar never asks about). A keep-alive
/// stream opened on a missing lease is answered with TTL 0 instead, which
/// etcd-client reports as [`etcd_client::Error::LeaseKeepAliveError`].
pub(crate) fn is_lease_gone(e: &Error) -> bool {
    let Error::Request { source, .. } = e else {
        return false;
    };
    if let Some(status) = source.downcast_ref::<Status>() {
        return status.code == tonic::Code::NotFound;
    }
    matches!(
        source.downcast_ref::<etcd_client::Error>(),
        Some(etcd_client::Error::LeaseKeepAliveError(_))
    )
}

// === impl EtcdLease ===

impl Lease for EtcdLease {
    fn deregister(mut self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        let session = self.session.take();
        let (key, owner) = (std::mem::take(&mut self.key), self.owner);
        Box::pin(async move {
            let Some(session) = session else {
                return Ok(());
            };
            let (reply, replied) = oneshot::channel();
            let command = Command::Deregister {
                key,
                owner,
                reply: Some(reply),
            };
            session
                .send(command)
                .map_err(|_| Error::Closed("etcd session"))?;
            replied.await.map_err(|_| Error::Closed("etcd session"))?
        })
    }
}

impl Drop for EtcdLease {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let command = Command::Deregister {
                key: std::mem::take(&mut self.key),
                owner: self.owner,
                reply: None,
            };
            let _ = session.send(command);
        }
    }
}
