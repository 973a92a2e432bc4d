//! One HTTP/2 connection per instance, kept up in the background.
//!
//! A connector task dials the instance, hands the connection's
//! [`SendRequest`] to the channel, watches the instance's gRPC health while
//! connected, and dials again (with backoff) when the connection drops. The
//! channel only ever sends on a connection that is up, which is what lets it
//! retry a call that could not be sent: hyper hands such a request back.
//!
//! The connection and the instance's health are two states, kept apart
//! ([`Status`]): connected or not, and SERVING, NOT_SERVING or not known
//! yet. A health verdict belongs to the connection whose stream carried it,
//! so a reconnect starts from "not known". The instance is usable when both
//! say so; every change is a [`Notice`] to the pool.
//!
//! When the instance leaves the snapshot, the connector stops handing out
//! the connection but keeps driving it until the calls in flight on it have
//! finished (or a grace period passes), then closes it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, Uri, uri::Authority};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lodestar::backoff::Backoff;
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::AbortHandle,
    time::timeout,
};
use tonic::body::Body;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long a removed instance's connection may keep serving calls in flight.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// What a connector tells the pool: something changed for one connection.
#[derive(Debug)]
pub(crate) struct Notice {
    pub(crate) id: String,
    /// Which connection of that id; a newer one replaces an older.
    pub(crate) generation: u64,
    pub(crate) kind: NoticeKind,
}

/// See [`Notice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoticeKind {
    /// The connection or the health changed: read [`Conn::usable`] again.
    Changed,
    /// The first attempt is over: connected with a known health, or failed.
    Settled,
    /// A call found no connection: the call path has taken the instance out
    /// of rotation; the pool checks again whether it is usable.
    Resync,
}

/// Source of connection generations, unique in the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// Connector settings shared by every instance of a channel.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) health_check: bool,
}

/// The channel's handle on one instance's connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) address: String,
    pub(crate) generation: u64,
    authority: Authority,
    sender: watch::Receiver<Option<SendRequest<Body>>>,
    stop: watch::Sender<bool>,
    task: AbortHandle,
    status: Arc<Status>,
    health_check: bool,
}

/// The connection and the instance's health, kept apart.
#[derive(Debug, Default)]
struct Status {
    connected: AtomicBool,
    /// A [`Health`], as its discriminant.
    health: AtomicU8,
}

/// The instance's own verdict, from `grpc.health.v1.Health/Watch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Health {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
}

// === impl Conn ===

impl Conn {
    /// Starts connecting to `address` (`host:port`) in the background;
    /// changes are noticed on `notices`.
    pub(crate) fn spawn(
        id: String,
        address: String,
        settings: Settings,
        notices: mpsc::UnboundedSender<Notice>,
    ) -> Result<Self, http::Error> {
        let authority: Authority = address.parse().map_err(http::Error::from)?;
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        let (sender_tx, sender) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let status: Arc<Status> = Arc::default();
        let health_check = settings.health_check;
        let connector = Connector {
            id,
            generation,
            address: address.clone(),
            authority: authority.clone(),
            settings,
            notices,
            sender: sender_tx,
            stop: stop_rx,
            status: status.clone(),
            settled: AtomicBool::new(false),
        };
        let task = tokio::spawn(connector.run()).abort_handle();
        Ok(Self {
            address,
            generation,
            authority,
            sender,
            stop,
            task,
            status,
            health_check,
        })
    }

    /// The connection, if it is up (a closed one is not handed out even
    /// before its connector has noticed).
    pub(crate) fn sender(&self) -> Option<SendRequest<Body>> {
        self.sender.borrow().clone().filter(|s| !s.is_closed())
    }

    /// Whether the instance may take calls: connected (and the connection
    /// not closed) and, when health is checked, SERVING.
    pub(crate) fn usable(&self) -> bool {
        self.status.usable(self.health_check) && self.sender().is_some()
    }

    /// Points a request at this instance.
    pub(crate) fn target<B>(&self, request: &mut Request<B>) {
        *request.uri_mut() = with_authority(request.uri(), &self.authority);
    }

    /// Stops handing out the connection; calls in flight finish first.
    pub(crate) fn retire(self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Retired connections keep their task until drained; the others go
        // with the channel.
        if !*self.stop.borrow() {
            self.task.abort();
        }
    }
}

fn with_authority(uri: &Uri, authority: &Authority) -> Uri {
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// The task behind a [`Conn`].
struct Connector {
    id: String,
    generation: u64,
    address: String,
    authority: Authority,
    settings: Settings,
    notices: mpsc::UnboundedSender<Notice>,
    sender: watch::Sender<Option<SendRequest<Body>>>,
    stop: watch::Receiver<bool>,
    status: Arc<Status>,
    settled: AtomicBool,
}

// === impl Connector ===

impl Connector {
    async fn run(mut self) {
        let mut backoff = Backoff::connect();
        while !*self.stop.borrow() {
            match self.connect().await {
                Ok((send, connection)) => {
                    backoff.reset();
                    self.serve(send, connection).await;
                }
                Err(error) => {
                    tracing::debug!(id = %self.id, address = %self.address, %error, "connect failed");
                    self.settle();
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.stop.changed() => {}
            }
        }
    }

    async fn connect(
        &self,
    ) -> Result<
        (
            SendRequest<Body>,
            http2::Connection<TokioIo<TcpStream>, Body, TokioExecutor>,
        ),
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let tcp = timeout(
            self.settings.connect_timeout,
            TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| "connect timed out")??;
        tcp.set_nodelay(true)?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .adaptive_window(true);
        let handshake = builder.handshake(TokioIo::new(tcp));
        Ok(timeout(self.settings.connect_timeout, handshake)
            .await
            .map_err(|_| "HTTP/2 handshake timed out")??)
    }

    /// Drives one live connection until it ends (or, once retired, until
    /// the calls in flight on it are done).
    async fn serve(
        &self,
        send: SendRequest<Body>,
        connection: http2::Connection<TokioIo<TcpStream>, Body, TokioExecutor>,
    ) {
        let mut connection = std::pin::pin!(connection);
        let mut stop = self.stop.clone();
        let health = self.watch_health(send.clone());
        let mut health = std::pin::pin!(health);
        self.sender.send_replace(Some(send));
        self.status.connected.store(true, Ordering::Relaxed);
        self.publish();
        tracing::debug!(id = %self.id, address = %self.address, "connected");
        let retired = loop {
            tokio::select! {
                result = &mut connection => {
                    if let Err(error) = result {
                        tracing::debug!(id = %self.id, %error, "connection closed");
                    }
                    break false;
                }
                () = &mut health => {}
                _ = stop.changed() => break true,
            }
        };
        self.sender.send_replace(None);
        self.status.connected.store(false, Ordering::Relaxed);
        // The verdict came over this connection; the next one asks again.
        self.status.set_health(Health::Unknown);
        self.publish();
        self.settle();
        if retired {
            // The channel no longer holds the connection; once the calls in
            // flight drop their handles, hyper closes it.
            let _ = timeout(DRAIN_GRACE, connection).await;
        }
    }

    fn settle(&self) {
        if !self.settled.swap(true, Ordering::Relaxed) {
            self.notify(NoticeKind::Settled);
        }
    }

    fn publish(&self) {
        self.notify(NoticeKind::Changed);
    }

    fn notify(&self, kind: NoticeKind) {
        // The pool is gone only when the channel is: nothing to tell.
        let _ = self.notices.send(Notice {
            id: self.id.clone(),
            generation: self.generation,
            kind,
        });
    }

    /// Follows `grpc.health.v1.Health/Watch` for the whole server ("");
    /// resolves only if health checking is off. A server without the health
    /// service counts as serving.
    async fn watch_health(&self, send: SendRequest<Body>) {
        if !self.settings.health_check {
            self.status.set_health(Health::Serving);
            self.publish();
            self.settle();
            return std::future::pending().await;
        }
        let mut client = HealthClient::new(SendService {
            send,
            authority: self.authority.clone(),
        });
        let mut backoff = Backoff::connect();
        loop {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            match client.watch(request).await {
                Ok(response) => {
                    backoff.reset();
                    let mut stream = response.into_inner();
                    while let Ok(Some(message)) = stream.message().await {
                        let health = match message.status() {
                            ServingStatus::Serving => Health::Serving,
                            _ => Health::NotServing,
                        };
                        let was = self.status.set_health(health);
                        if was == Health::Serving && health != Health::Serving {
                            tracing::info!(id = %self.id, status = ?message.status(), "instance reports it is not serving");
                        }
                        self.publish();
                        self.settle();
                    }
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    self.status.set_health(Health::Serving);
                    self.publish();
                    self.settle();
                    return std::future::pending().await;
                }
                Err(status) => {
                    tracing::debug!(id = %self.id, %status, "health watch failed");
                    self.settle();
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

// === impl Status ===

impl Status {
    fn usable(&self, health_check: bool) -> bool {
        self.connected.load(Ordering::Relaxed)
            && (!health_check || self.health() == Health::Serving)
    }

    fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Records a verdict; the one before.
    fn set_health(&self, health: Health) -> Health {
        Health::from_u8(self.health.swap(health as u8, Ordering::Relaxed))
    }
}

// === impl Health ===

impl Health {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Serving,
            2 => Self::NotServing,
            _ => Self::Unknown,
        }
    }
}

/// A [`SendRequest`] as a tower service, for the health client.
#[derive(Clone, Debug)]
struct SendService {
    send: SendRequest<Body>,
    authority: Authority,
}

impl tower::Service<Request<Body>> for SendService {
    type Response = Response<Body>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, hyper::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        *request.uri_mut() = with_authority(request.uri(), &self.authority);
        let response = self.send.send_request(request);
        Box::pin(async move { Ok(response.await?.map(Body::new)) })
    }
}
