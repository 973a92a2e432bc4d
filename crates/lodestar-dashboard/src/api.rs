//! The routes: the page's assets and the JSON API under `/api/`.

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, State},
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::{get, post},
};
use lodestar::Instance;
use serde_json::{Value, json};
use tokio_stream::{
    Stream, StreamExt,
    wrappers::{BroadcastStream, WatchStream},
};

use crate::{
    assets,
    events::{self, Event},
    state::{Inner, Notice, Service, Shared},
    writes::{self, Refused},
};

/// The bound on a request the API forwards to the registry.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest write body read.
const MAX_WRITE: usize = 16 * 1024;

/// The handlers' state.
type AppState = State<Arc<Shared>>;

/// Every route.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .route("/api/status", get(status))
        .route("/api/services", get(services))
        .route("/api/services/{name}", get(service))
        .route("/api/services/{name}/subscribers", get(subscribers))
        .route("/api/services/{name}/instances/{id}", post(write))
        .route("/api/events", get(feed))
        .route("/api/registry", get(registry))
        .route("/api/audit", get(audit))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page") })
        .with_state(shared)
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The registry part of every answer.
fn registry_json(shared: &Shared, inner: &Inner) -> Value {
    let url = &shared.config.registry_url;
    let kind = url.split(':').next().unwrap_or_default();
    json!({
        "url": url,
        "kind": kind,
        "reachable": inner.reach.reachable,
        "last_ok": inner.reach.last_ok,
        "error": inner.reach.error,
        "failing_since": inner.reach.failing_since,
        "now": crate::state::now_ms(),
    })
}

async fn status(State(shared): AppState) -> Response {
    let inner = shared.lock();
    Json(json!({
        "registry": registry_json(&shared, &inner),
        "writes": shared.config.writable(),
        "services": inner.services.len(),
    }))
    .into_response()
}

async fn services(State(shared): AppState) -> Response {
    let inner = shared.lock();
    let list: Vec<Value> = inner
        .services
        .iter()
        .filter_map(|(name, s)| summary(name, s))
        .collect();
    Json(json!({ "registry": registry_json(&shared, &inner), "services": list })).into_response()
}

/// One line of the service list: counts by version, lane and zone.
fn summary(name: &str, service: &Service) -> Option<Value> {
    let snapshot = service.snapshot.as_ref()?;
    if snapshot.is_empty() {
        return None;
    }
    let mut versions = BTreeMap::<&str, usize>::new();
    let mut lanes = BTreeMap::<&str, usize>::new();
    let mut zones = BTreeMap::<&str, usize>::new();
    let mut down = 0;
    for i in snapshot.instances().iter() {
        *versions.entry(i.version.as_str()).or_default() += 1;
        *lanes.entry(i.color().unwrap_or("base")).or_default() += 1;
        *zones.entry(i.zone().unwrap_or("")).or_default() += 1;
        down += usize::from(i.is_down());
    }
    Some(json!({
        "name": name,
        "instances": snapshot.len(),
        "down": down,
        "versions": versions,
        "lanes": lanes,
        "zones": zones,
        "revision": snapshot.revision(),
    }))
}

async fn service(State(shared): AppState, Path(name): Path<String>) -> Response {
    let inner = shared.lock();
    let Some(snapshot) = inner.services.get(&name).and_then(|s| s.snapshot.clone()) else {
        return error(StatusCode::NOT_FOUND, &format!("no service {name:?}"));
    };
    let service = &inner.services[&name];
    let instances: Vec<Value> = snapshot
        .instances()
        .iter()
        .map(|i| {
            let health = inner.health.get(&(name.clone(), i.id.clone()));
            instance_json(i, service.first_seen.get(&i.id).copied(), health)
        })
        .collect();
    Json(json!({
        "registry": registry_json(&shared, &inner),
        "name": name,
        "revision": snapshot.revision(),
        "skipped": snapshot.skipped(),
        "instances": instances,
    }))
    .into_response()
}

fn instance_json(
    i: &Instance,
    first_seen: Option<u64>,
    health: Option<&crate::state::Health>,
) -> Value {
    let weight = match i.weight() {
        Ok(w) => json!(w),
        Err(e) => json!(e.0),
    };
    json!({
        "id": i.id,
        "version": i.version,
        "endpoints": i.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "lane": i.color().unwrap_or("base"),
        "zone": i.zone(),
        "weight": weight,
        "status": events::status(i),
        // No backend's record says when it registered: the dashboard tells
        // when it first saw the instance.
        "since_ms": first_seen,
        "since_source": "first seen by this dashboard",
        "health": health,
        "metadata": i.metadata,
    })
}

async fn subscribers(State(shared): AppState, Path(name): Path<String>) -> Response {
    let asked = tokio::time::timeout(REGISTRY_TIMEOUT, shared.registry.subscribers(&name)).await;
    match asked {
        Ok(Ok(list)) => Json(json!({ "name": name, "subscribers": list })).into_response(),
        Ok(Err(e)) => Json(json!({
            "name": name,
            "subscribers": null,
            "error": lodestar::ErrorChain(&e).to_string(),
        }))
        .into_response(),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("the registry did not answer within {REGISTRY_TIMEOUT:?}"),
        ),
    }
}

async fn registry(State(shared): AppState) -> Response {
    let inner = shared.lock();
    let builtin = crate::nodes::addresses(&shared.config.registry_url).is_some();
    Json(json!({
        "registry": registry_json(&shared, &inner),
        "builtin": builtin,
        "nodes": inner.nodes,
    }))
    .into_response()
}

async fn audit(State(shared): AppState) -> Response {
    let inner = shared.lock();
    Json(json!({
        "writes": shared.config.writable(),
        "audit": inner.audit.newest_first(),
    }))
    .into_response()
}

async fn write(
    State(shared): AppState,
    Path((name, id)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    // Present when served with connect info, as `Dashboard::serve` does.
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let headers = request.headers().clone();
    let refused = |r: Refused| match r {
        Refused::ReadOnly => error(
            StatusCode::FORBIDDEN,
            "this dashboard is read-only (start it with --allow-writes)",
        ),
        Refused::Unauthorized => error(StatusCode::UNAUTHORIZED, "missing or wrong token"),
        Refused::Invalid(m) => error(StatusCode::BAD_REQUEST, &m),
    };
    if let Err(r) = writes::authorize(&shared, &headers) {
        if r == Refused::Unauthorized {
            // Never the token itself.
            tracing::warn!(remote = ?remote, service = %name, id = %id, "write refused: wrong token");
        }
        return refused(r);
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_WRITE).await {
        Ok(body) => body,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "write body too large"),
    };
    let request: writes::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad write: {e}")),
    };
    match writes::apply(&shared, remote, &name, &id, &request).await {
        Ok(entry) if entry.result == "ok" => Json(json!({ "audit": entry })).into_response(),
        Ok(entry) if entry.result == "no such instance" => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": entry.result, "audit": entry })),
        )
            .into_response(),
        Ok(entry) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": entry.result, "audit": entry })),
        )
            .into_response(),
        Err(r) => refused(r),
    }
}

/// The live feed: the events kept, then each new one, as server-sent
/// events; `refresh` when something else changed. Ends at shutdown.
async fn feed(State(shared): AppState) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribe before reading the backlog: an event between the two is
    // sent twice at worst (the page skips seqs it has), never lost.
    let live = BroadcastStream::new(shared.notices());
    let backlog = shared.lock().events.all();
    let backlog = tokio_stream::iter(backlog.into_iter().map(|e| Some(change(&e))));
    let live = live.map(|notice| {
        Some(match notice {
            Ok(Notice::Event(event)) => change(&event),
            // Refresh, or missed notices (a slow page): read again.
            Ok(Notice::Refresh) | Err(_) => SseEvent::default().event("refresh").data("{}"),
        })
    });
    // None at shutdown, which ends the stream.
    let closing = WatchStream::new(shared.closing()).filter_map(|closing| closing.then_some(None));
    let stream = backlog
        .chain(live.merge(closing))
        .take_while(Option::is_some)
        .filter_map(|e| e.map(Ok));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn change(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_string());
    SseEvent::default()
        .event("change")
        .id(event.seq.to_string())
        .data(data)
}
