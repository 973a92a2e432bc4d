//! The call path: the last stage of the channel (resolve -> pool ->
//! balance). Route from the headers, wait (bounded) until a call can go
//! anywhere, pick, send on the picked instance's connection, and retry a
//! call hyper handed back unsent on another instance.

use std::{fmt, time::Duration};

use http::{Request, Response};
use lodestar::balance::{self, Balancer, Pick, Route};
use tokio::time::Instant;
use tonic::{Status, body::Body};

use super::{body, pool::Pool};

/// What a call needs; one per channel, shared by its clones.
#[derive(Debug)]
pub(super) struct Caller {
    pub(super) service: String,
    pub(super) registry: String,
    pub(super) retries: usize,
    pub(super) ready_timeout: Duration,
    pub(super) call_timeout: Option<Duration>,
    pub(super) balancer: Balancer,
    pub(super) pool: Pool,
}

/// What became of one attempt.
enum Sent {
    Done(Response<Body>),
    Unsent(Request<Body>),
}

/// Whether a call may go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Readiness {
    /// Some instance is usable, or none has been for the whole ready
    /// timeout and calls fail at once (linkerd2-proxy's fail-fast).
    Go,
    /// None is usable yet: wait until one is, at most until then.
    WaitUntil(Instant),
}

// === impl Caller ===

impl Caller {
    /// Whether a call may go now.
    pub(super) fn readiness(&self) -> Readiness {
        let ready = self.pool.ready();
        let deadline = ready.since + self.ready_timeout;
        if ready.usable || Instant::now() >= deadline {
            Readiness::Go
        } else {
            Readiness::WaitUntil(deadline)
        }
    }

    /// Resolves when some instance is usable or at `deadline`.
    pub(super) fn wait(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        let mut ready = self.pool.watch_ready();
        async move {
            let usable = ready.wait_for(|r| r.usable);
            let _ = tokio::time::timeout_at(deadline, usable).await;
        }
    }

    pub(super) async fn call(&self, mut request: Request<Body>) -> Result<Response<Body>, Status> {
        let route = Route::from_headers(request.headers());
        if let Readiness::WaitUntil(deadline) = self.readiness() {
            self.wait(deadline).await;
        }
        let attempts = self.retries.saturating_add(1);
        for _ in 0..attempts {
            let pick = self
                .balancer
                .pick(&route)
                .map_err(|e| self.unavailable(&route, &e))?;
            request = match self.send(pick, request).await? {
                Sent::Done(response) => return Ok(response),
                Sent::Unsent(request) => request,
            };
            tokio::task::yield_now().await;
        }
        Err(Status::unavailable(format!(
            "{}: no instance could take the call after {attempts} attempts",
            self.service
        )))
    }

    /// Sends on the picked instance's connection. A request that was never
    /// sent (no live connection, or handed back by hyper) comes back, and
    /// the instance leaves rotation at once; one that may have run is never
    /// retried.
    async fn send(&self, pick: Pick, mut request: Request<Body>) -> Result<Sent, Status> {
        let id = &pick.instance().id.clone();
        let Some(mut sender) = self.pool.target(id, &mut request) else {
            self.pool.unusable(id);
            return Ok(Sent::Unsent(request));
        };
        let sent = sender.try_send_request(request);
        let sent = match self.call_timeout {
            None => sent.await,
            Some(timeout) => match tokio::time::timeout(timeout, sent).await {
                Ok(sent) => sent,
                Err(_) => {
                    // The instance took the call and did not answer in
                    // time: its failure, unlike a caller's own deadline.
                    pick.failure();
                    return Err(Status::deadline_exceeded(format!(
                        "{}: instance {id} did not answer within the call timeout {timeout:?}",
                        self.service
                    )));
                }
            },
        };
        match sent {
            Ok(response) => Ok(Sent::Done(body::record(response, pick))),
            Err(mut error) => match error.take_message() {
                Some(request) => {
                    tracing::debug!(%id, error = %error.error(), "call not sent; trying another instance");
                    self.pool.unusable(id);
                    Ok(Sent::Unsent(request))
                }
                None => {
                    pick.failure();
                    let error = error.into_error();
                    Err(Status::unavailable(format!("{}: {error}", self.service)))
                }
            },
        }
    }

    /// A pick failed: the balancer's reason, and, when no instance has been
    /// usable for the ready timeout, that too.
    fn unavailable(&self, route: &Route, error: &balance::Error) -> Status {
        if self.pool.ready().usable {
            return Status::unavailable(format!("{error} (registry {})", self.registry));
        }
        Status::unavailable(format!(
            "no instance of {} (route {}) became usable within {:?} from registry {}: {error}",
            self.service,
            Described(route),
            self.ready_timeout,
            self.registry
        ))
    }
}

/// A route as an operator reads it.
struct Described<'a>(&'a Route);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Route {
            version,
            color,
            hash_key,
        } = self.0;
        let parts: Vec<String> = [
            ("version", version),
            ("color", color),
            ("hash key", hash_key),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v}")))
        .collect();
        if parts.is_empty() {
            f.write_str("any")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}
