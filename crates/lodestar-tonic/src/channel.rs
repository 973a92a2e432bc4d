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
//! | [`ready_timeout`](Builder::ready_timeout) | 5 s | how long calls wait for an instance to be usable (at the start, for the first snapshot's instances to connect); then they fail at once with `Unavailable`, naming the service, route and registry, until one is |
//! | [`health_check`](Builder::health_check) | on | follow each instance's `grpc.health.v1.Health/Watch`; eject it while NOT_SERVING |
//! | [`retries`](Builder::retries) | 2 | how many other instances a call that could not be sent is tried on |
//! | [`connect_timeout`](Builder::connect_timeout) | 3 s | TCP connect plus HTTP/2 handshake |
//! | [`default_rtt`](Builder::default_rtt) | 30 ms | latency assumed for an instance not measured yet (p2c) |
//! | [`decay`](Builder::decay) | 10 s | peak-EWMA decay window (p2c) |
//! | [`force_pick`](Builder::force_pick) | 250 ms | an instance not picked for this long is picked when drawn (p2c) |
//! | [`call_timeout`](Builder::call_timeout) | none | a call sent to an instance that has not started answering within this fails with `DeadlineExceeded` and counts as that instance's failure (a frozen instance gets ejected); a caller's own deadline counts as cancelled |
//! | [`outlier_detection`](Builder::outlier_detection) | 5 failures, 30 s | consecutive failures that eject an instance, and for how long (growing with repeats) |
//! | [`protection`](Builder::protection) | half, 30 s | client-side self-protection: when more than this share of the instances vanishes from discovery within the window, keep them until they stop answering or the window passes ([`lodestar::discovery::protect`]) |
//!
//! # How it is built
//!
//! Three stages, as linkerd2-proxy chains resolve -> pool -> balance, each
//! owning one piece of state:
//!
//! 1. **resolve** (`resolve.rs`): follows discovery (retrying a registry
//!    that cannot be reached yet), records the channel as a subscriber, and
//!    turns each snapshot into the changes since the last one;
//! 2. **pool** (`pool.rs`, `conn.rs`): one HTTP/2 connection per instance,
//!    each with two states kept apart, connected or not and SERVING or not;
//!    a background driver applies the changes and the connectors' notices
//!    in batches, telling the balancer which instances are usable, and
//!    keeps the channel's readiness;
//! 3. **balance and call** (`call.rs`, `body.rs`): a call waits (bounded)
//!    until the channel is ready, picks with lodestar's [`Balancer`], sends
//!    on the picked instance's connection, and completes the pick when the
//!    response body ends.
//!
//! `poll_ready` says whether a call can go anywhere: pending while no
//! instance is usable (for at most the ready timeout), so tower layers that
//! read readiness (`ConcurrencyLimit`, `LoadShed`) work over the channel.
//!
//! # What it does
//!
//! - Watches the service and keeps one HTTP/2 connection per instance,
//!   connecting new instances in the background; only connected (and, with
//!   health checks, SERVING) instances are picked. A snapshot's changes cost
//!   what changed, not the size of the service.
//! - Picks with lodestar's [`Balancer`] using the route of the request's
//!   headers (`lodestar-version`, `lodestar-color`, `lodestar-hash-key`; a
//!   colour from [`color`](crate::color) propagation when the request has
//!   none), and reports each call's latency and outcome back to it.
//! - A removed instance is not picked again; its calls in flight finish,
//!   then its connection closes.
//! - A call that could not be sent (the connection was not up, or hyper
//!   handed the request back) is retried on another instance; a call that
//!   may have run is never retried.
//! - While the registry is unreachable it keeps using the last snapshot;
//!   when most instances vanish from it at once (an etcd frozen past the
//!   TTL, a registry node restarted empty) it keeps them while they answer.
//! - It records itself as a subscriber of the service for as long as it
//!   lives (in etcd, `<prefix>/subscribers/<service>/<client-id>` under the
//!   process's lease), so `lodestar subscribers S` lists who consumes it.

mod body;
mod builder;
mod call;
mod conn;
mod pool;
mod resolve;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use lodestar::{Discovery, balance::Balancer};
use tokio::task::AbortHandle;
use tonic::body::Body;

pub use self::builder::{Builder, PolicyChoice};
use self::call::{Caller, Readiness};

/// A balanced channel; see the [module docs](self). Cheap to clone: clones
/// share the connections and the balancer.
pub struct Channel {
    inner: Arc<Inner>,
    /// This clone's wait for readiness, while `poll_ready` is pending. In a
    /// mutex only to be `Sync`; `poll_ready` has `&mut self` and never locks.
    wait: Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
}

/// What the clones of a channel share.
#[derive(Debug)]
struct Inner {
    caller: Caller,
    /// The pool's driver task (resolve and pool), stopped with the channel.
    driver: AbortHandle,
}

// === impl Channel ===

impl Channel {
    /// A channel to `service`, found through `discovery`.
    pub fn builder(discovery: Arc<dyn Discovery>, service: impl Into<String>) -> Builder {
        Builder::new(discovery, service.into())
    }

    /// The service this channel calls.
    pub fn service(&self) -> &str {
        &self.inner.caller.service
    }

    /// The balancer, for inspection (ejected instances, current snapshot).
    pub fn balancer(&self) -> &Balancer {
        &self.inner.caller.balancer
    }
}

impl Clone for Channel {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            wait: Mutex::new(None),
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("service", &self.inner.caller.service)
            .field("registry", &self.inner.caller.registry)
            .finish_non_exhaustive()
    }
}

impl tower::Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = lodestar::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

    /// Ready when a call can go somewhere: an instance is usable, or none
    /// has been for the ready timeout (calls then fail at once).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let wait = self.wait.get_mut().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(pending) = wait {
                ready!(pending.as_mut().poll(cx));
                *wait = None;
            }
            match self.inner.caller.readiness() {
                Readiness::Go => return Poll::Ready(Ok(())),
                Readiness::WaitUntil(deadline) => {
                    *wait = Some(Box::pin(self.inner.caller.wait(deadline)));
                }
            }
        }
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        crate::color::propagate(&mut request);
        let inner = self.inner.clone();
        Box::pin(async move { inner.caller.call(request).await.map_err(Into::into) })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
