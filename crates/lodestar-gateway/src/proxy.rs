//! The request path: route, rate limit, pick an instance with the balancer,
//! forward over a pooled connection, retry by the rules of [`retry`](crate::retry),
//! stream the response back; one access log line and the metrics per
//! request.

mod body;
mod headers;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{
    HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header, uri::PathAndQuery,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use lodestar::balance::{self, Pick};
use tokio::time::Instant;

use crate::{Body, Shared, config::Limits, grpc, retry::is_idempotent, router::Route, trust};

pub(crate) use body::{Outgoing, Slot, Tracked};

/// The pooled clients to backends.
#[derive(Clone, Debug)]
pub(crate) struct Clients {
    http: Client<HttpConnector, Outgoing>,
    grpc: Client<HttpConnector, Outgoing>,
}

/// What a forwarded request came to.
struct Outcome {
    response: Response<Body>,
    instance: String,
}

/// A request's parts, kept to build each try.
struct Parts {
    method: Method,
    path: PathAndQuery,
    headers: http::HeaderMap,
    grpc: bool,
}

/// How one try went.
enum Try {
    /// A response to hand back.
    Done(Outcome),
    /// Try another instance; the answer if none is left.
    Again(Outcome),
}

/// Picks drawn at most to find an instance a request has not tried.
const PICKS_PER_TRY: usize = 4;

/// How long a request waits for its service's first snapshot.
const FIRST_SNAPSHOT: Duration = Duration::from_secs(5);

thread_local! {
    /// Each thread's pools: a request and the backend connection it reuses
    /// stay on one thread (no cross-thread wake-ups per request), which is
    /// what the workers of [`Gateway::serve_workers`](crate::Gateway::serve_workers) are for.
    static CLIENTS: Clients = Clients::new();
}

// === impl Clients ===

impl Clients {
    /// This thread's pooled client: HTTP/2 for gRPC, else HTTP/1.1.
    fn local(grpc: bool) -> Client<HttpConnector, Outgoing> {
        CLIENTS.with(|clients| {
            if grpc {
                clients.grpc.clone()
            } else {
                clients.http.clone()
            }
        })
    }

    /// Keep-alive pools: HTTP/1.1 for `http://` endpoints, HTTP/2 (prior
    /// knowledge) for `grpc://` ones.
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector.clone());
        let grpc = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Self { http, grpc }
    }
}

/// An empty body.
pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// The gateway's own answer: JSON, or a gRPC status for gRPC requests.
fn error(grpc: bool, status: StatusCode, body: serde_json::Value) -> Response<Body> {
    if grpc {
        let message = body["error"].as_str().unwrap_or_default();
        return grpc::trailers_only(grpc::code_for(status), message);
    }
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Runs `future` for at most `limit`, not counting the time the client is
/// still sending a body the instance is reading: a long upload is not a slow
/// instance (a stalled one is cut by the body pause limit). The limit is
/// re-armed while the body flows, so after its end the wait is at most
/// `limit` more.
async fn within<F: std::future::Future>(
    limit: Duration,
    slot: &Slot,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(future);
    loop {
        match tokio::time::timeout(limit, &mut future).await {
            Err(_) if slot.client_sending() => continue,
            other => return other,
        }
    }
}

/// 408: the client did not send its body in time.
fn slow_client(grpc: bool) -> Response<Body> {
    let body = serde_json::json!({"error": "the request body did not arrive in time"});
    let mut response = error(grpc, StatusCode::REQUEST_TIMEOUT, body);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The request's host, without port.
fn host_of<B>(request: &Request<B>) -> Option<String> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())?;
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    Some(host.to_ascii_lowercase())
}

/// Serves one client request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    mut request: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let start = Instant::now();
    let current = shared.current();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let grpc = grpc::is_grpc(request.headers());
    let host = host_of(&request);
    let route = current.router.find(host.as_deref(), &path).cloned();
    let outcome = match &route {
        Some(route) => {
            if !current
                .trust
                .trusts(route.config.trust_headers, client.ip())
            {
                let removed = trust::strip_internal(request.headers_mut());
                if removed > 0 {
                    tracing::debug!(%client, removed, "untrusted client: lodestar-* headers removed");
                }
            }
            forward(&shared, &current.limits, route, request, client, grpc, host).await
        }
        None => {
            let body = serde_json::json!({"error": "no route", "path": path});
            Outcome {
                response: error(grpc, StatusCode::NOT_FOUND, body),
                instance: String::new(),
            }
        }
    };
    let route_name = route.as_ref().map_or("", |r| r.config.prefix.as_str());
    let elapsed = start.elapsed();
    let status = outcome.response.status().as_u16();
    tracing::info!(
        target: "lodestar_gateway::access",
        method = %method,
        path = %path,
        route = %route_name,
        instance = %outcome.instance,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    shared
        .metrics
        .request(route_name, &outcome.instance, status, elapsed);
    outcome.response
}

/// Forwards a routed request.
async fn forward(
    shared: &Shared,
    limits: &Limits,
    route: &Route,
    mut request: Request<Incoming>,
    client: SocketAddr,
    grpc: bool,
    host: Option<String>,
) -> Outcome {
    let refuse = |status: StatusCode, body: serde_json::Value| Outcome {
        response: error(grpc, status, body),
        instance: String::new(),
    };
    if let Some(limiter) = &route.limiter
        && let Err(wait) = limiter.acquire()
    {
        let mut outcome = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"error": "rate limited", "route": route.config.prefix}),
        );
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        outcome
            .response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return outcome;
    }
    let max_body = limits.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if max_body > 0 && declared.is_some_and(|n| n > max_body) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({"error": "request body too large", "limit": max_body}),
        );
    }
    let upstream = &route.upstream;
    if !upstream
        .ready(FIRST_SNAPSHOT.min(route.config.timeout()))
        .await
    {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": format!("no instance of {} (discovery has not answered yet)", upstream.service()), "service": upstream.service()}),
        );
    }
    let mut lane = balance::Route::from_headers(request.headers());
    if let Some(version) = &route.config.version {
        lane = lane.with_version(version.clone());
    }
    let upgrade = !grpc && headers::is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (head, body) = request.into_parts();
    let limit = if max_body == 0 {
        usize::MAX
    } else {
        usize::try_from(max_body).unwrap_or(usize::MAX)
    };
    let slot = Slot::new(body, limit, limits.body_timeout());
    let parts = match Parts::new(route, head, client, host, grpc, upgrade) {
        Ok(parts) => parts,
        Err(message) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": message}),
            );
        }
    };
    route.budget.deposit();
    let tries = tries(shared, route, &lane, &parts, &slot);
    let mut outcome = match within(route.config.timeout(), &slot, tries).await {
        Ok(outcome) => outcome,
        Err(_) => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            serde_json::json!({"error": "the backend did not answer in time", "service": upstream.service(), "timeout_ms": route.config.timeout_ms}),
        ),
    };
    if let Some(client_upgrade) = client_upgrade
        && outcome.response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        tunnel(&mut outcome.response, client_upgrade);
    }
    outcome
}

/// The tries of one request, until one answers or the rules say stop.
async fn tries(
    shared: &Shared,
    route: &Route,
    lane: &balance::Route,
    parts: &Parts,
    slot: &Arc<Slot>,
) -> Outcome {
    let attempts = route.config.retry.attempts.max(1);
    let mut tried = Vec::new();
    loop {
        let more = tried.len() + 1 < attempts as usize;
        match try_once(route, lane, parts, slot, more, &mut tried).await {
            Try::Done(outcome) => return outcome,
            Try::Again(outcome) if !more => return outcome,
            Try::Again(_) => shared.metrics.retry(&route.config.prefix),
        }
    }
}

/// Picks for a try, avoiding the instances this request already tried
/// while the balancer offers others: an instance failing fast (connection
/// refused) looks cheap to latency-aware policies until it is ejected, and
/// must not take every try of one request.
fn pick_untried(
    route: &Route,
    lane: &balance::Route,
    tried: &[String],
) -> Result<Pick, balance::Error> {
    let balancer = route.upstream.balancer();
    let mut pick = balancer.pick(lane)?;
    for _ in 0..PICKS_PER_TRY {
        if !tried.contains(&pick.instance().id) {
            break;
        }
        // Dropped unused: the pick is cancelled, not counted.
        pick = balancer.pick(lane)?;
    }
    Ok(pick)
}

/// One try: pick, send, judge.
async fn try_once(
    route: &Route,
    lane: &balance::Route,
    parts: &Parts,
    slot: &Arc<Slot>,
    more: bool,
    tried: &mut Vec<String>,
) -> Try {
    let grpc = parts.grpc;
    let service = route.upstream.service();
    let pick = match pick_untried(route, lane, tried) {
        Ok(pick) => pick,
        Err(e) => {
            let body = serde_json::json!({"error": e.to_string(), "service": service});
            return Try::Done(Outcome {
                response: error(grpc, StatusCode::SERVICE_UNAVAILABLE, body),
                instance: String::new(),
            });
        }
    };
    let instance = pick.instance().id.clone();
    tried.push(instance.clone());
    let scheme = if grpc { "grpc" } else { "http" };
    let Some(address) = pick.endpoint(scheme).map(|e| e.address()) else {
        drop(pick);
        let body = serde_json::json!({"error": format!("instance {instance} of {service} has no {scheme}:// endpoint"), "service": service});
        return Try::Again(Outcome {
            response: error(grpc, StatusCode::SERVICE_UNAVAILABLE, body),
            instance,
        });
    };
    let request = match parts.build(&address, slot.outgoing()) {
        Ok(request) => request,
        Err(e) => {
            let body = serde_json::json!({"error": e, "service": service});
            return Try::Done(Outcome {
                response: error(grpc, StatusCode::BAD_GATEWAY, body),
                instance,
            });
        }
    };
    let client = Clients::local(grpc);
    let replayable = is_idempotent(&parts.method) && slot.replayable();
    let sent = within(
        route.config.retry.per_try_timeout(),
        slot,
        client.request(request),
    )
    .await;
    match sent {
        Ok(Ok(response)) => judge(
            route,
            parts,
            slot,
            pick,
            response,
            instance,
            replayable && more,
        ),
        Ok(Err(e)) => {
            // The client's fault (too large, gone, garbage): a 4xx, and the
            // instance is not blamed (the pick is dropped, not failed).
            if slot.over_limit() {
                drop(pick);
                let body = serde_json::json!({"error": "request body too large"});
                return Try::Done(Outcome {
                    response: error(grpc, StatusCode::PAYLOAD_TOO_LARGE, body),
                    instance,
                });
            }
            if slot.client_stalled() {
                drop(pick);
                return Try::Done(Outcome {
                    response: slow_client(grpc),
                    instance,
                });
            }
            if slot.client_broke() {
                drop(pick);
                let body = serde_json::json!({"error": "the request body could not be read"});
                return Try::Done(Outcome {
                    response: error(grpc, StatusCode::BAD_REQUEST, body),
                    instance,
                });
            }
            pick.failure();
            let error_text = lodestar::ErrorChain(&e).to_string();
            tracing::debug!(%service, %instance, error = %error_text, "try failed");
            let body = serde_json::json!({"error": format!("instance {instance} of {service} failed: {error_text}"), "service": service});
            let outcome = Outcome {
                response: error(grpc, StatusCode::BAD_GATEWAY, body),
                instance,
            };
            // Never sent: free of the budget. Sent (maybe): idempotent only.
            let not_sent = e.is_connect() || slot.unread();
            if more && (not_sent || (replayable && route.budget.withdraw())) {
                Try::Again(outcome)
            } else {
                Try::Done(outcome)
            }
        }
        Err(_) => {
            pick.failure();
            let body = serde_json::json!({"error": format!("instance {instance} of {service} did not answer within the per-try timeout"), "service": service});
            let outcome = Outcome {
                response: error(grpc, StatusCode::GATEWAY_TIMEOUT, body),
                instance,
            };
            if more && replayable && route.budget.withdraw() {
                Try::Again(outcome)
            } else {
                Try::Done(outcome)
            }
        }
    }
}

/// A backend's answer: handed back, or (a retryable status with budget
/// left) tried again elsewhere.
fn judge(
    route: &Route,
    parts: &Parts,
    slot: &Arc<Slot>,
    pick: Pick,
    response: Response<Incoming>,
    instance: String,
    may_retry: bool,
) -> Try {
    let status = response.status();
    let failed = if parts.grpc {
        grpc::is_failure(response.headers())
    } else {
        status.is_server_error()
    };
    if !parts.grpc
        && may_retry
        && route.config.retry.on_status.contains(&status.as_u16())
        && route.budget.withdraw()
    {
        pick.failure();
        let outcome = Outcome {
            response: response.map(|b| b.map_err(Into::into).boxed()),
            instance,
        };
        return Try::Again(outcome);
    }
    let (mut head, body) = response.into_parts();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if !switching {
        headers::strip_hop_by_hop(&mut head.headers, false);
    }
    let pick = if failed {
        pick.failure();
        None
    } else {
        Some(pick)
    };
    let body = Tracked::new(body, pick, parts.grpc, slot.clone()).boxed();
    Try::Done(Outcome {
        response: Response::from_parts(head, body),
        instance,
    })
}

/// Joins the client's and the backend's upgraded connections.
fn tunnel(response: &mut Response<Body>, client: hyper::upgrade::OnUpgrade) {
    let backend = hyper::upgrade::on(&mut *response);
    tokio::spawn(async move {
        let (Ok(client), Ok(backend)) = (client.await, backend.await) else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
    });
}

// === impl Parts ===

impl Parts {
    fn new(
        route: &Route,
        head: http::request::Parts,
        client: SocketAddr,
        host: Option<String>,
        grpc: bool,
        upgrade: bool,
    ) -> Result<Self, String> {
        let path = head.uri.path();
        let forward = route.forward_path(path);
        let path = match head.uri.query() {
            Some(query) => format!("{forward}?{query}"),
            None => forward.into_owned(),
        };
        let path = PathAndQuery::try_from(path).map_err(|e| format!("bad path: {e}"))?;
        let mut headers = head.headers;
        // HTTP/2 clients send no Host; HTTP/1 backends want one.
        if !headers.contains_key(header::HOST)
            && let Some(authority) = head.uri.authority()
            && let Ok(value) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(header::HOST, value);
        }
        headers::strip_hop_by_hop(&mut headers, upgrade);
        headers::add_forwarded(&mut headers, client, "http", host.as_deref());
        if grpc {
            headers.remove(header::HOST);
        }
        Ok(Self {
            method: head.method,
            path,
            headers,
            grpc,
        })
    }

    fn build(&self, address: &str, body: Outgoing) -> Result<Request<Outgoing>, String> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(address)
            .path_and_query(self.path.clone())
            .build()
            .map_err(|e| format!("bad backend address {address}: {e}"))?;
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = if self.grpc {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *request.headers_mut() = self.headers.clone();
        Ok(request)
    }
}
