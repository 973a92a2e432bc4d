//! The HTTP API, route by route, as bilibili discovery has it.
//!
//! Parameters come from the query string and from form bodies alike (Go's
//! discovery clients send a form body, kratos v2's the query string of a
//! POST). Bad input is a `-400` naming the parameter, never a panic or a
//! `-500`. Writes accepted from clients are forwarded to peers; writes
//! marked `replication=true` are not forwarded again.
//!
//! Where discovery's handlers differ from what one would guess, its code
//! (`http/discovery.go`, `registry/registry.go`, `model/instance.go`) is
//! followed: reads need a `status` mask, `fetchs` of unknown applications is
//! an empty success, `polls` needs one `latest_timestamp` per `appid` while
//! `poll` treats a mismatch as zeros, `poll` answers the application's
//! instances themselves (not a map by appid) and an unknown one with
//! `-404`, and `set` merges metadata and answers `-400` for an unknown
//! hostname. Deliberate leniencies: `zone` is not required by `renew`,
//! `cancel` and `set`, nor `hostname` by `poll`/`polls` (older lodestar
//! clients send neither).
//!
//! With a [`Token`](crate::Token) configured, every write (replicated ones
//! included) and, with `token_reads`, every read needs it; without it the
//! answer is HTTP 401 with discovery's envelope and code `-401`, and
//! nothing changes.

use std::{collections::BTreeMap, pin::Pin, sync::Arc, task::Poll};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::{StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use serde_json::Value;
use tokio::{sync::watch, time::Instant};

use super::{
    Node,
    peers::Write,
    store::{AppKey, Changes, PollKind, Polled, Refusal},
};
use crate::{
    form::Params,
    wire::{Code, Instance, STATUS_UP, STATUS_WAITING},
};

/// A handler's answer: both arms are complete responses.
type Answer = Result<Response, Rejection>;

/// What a request does, for the token check: writes always need the
/// node's token, reads only with [`Config::token_reads`](super::Config::token_reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Longest name accepted (appid, hostname, env, zone...).
const MAX_NAME: usize = 253;

/// A refused request: its code, a message, and for `-409` the newer copy.
#[derive(Debug)]
struct Rejection {
    code: Code,
    message: String,
    newer: Option<Box<Instance>>,
    /// An HTTP status other than the code's (413, 408 for bodies over the
    /// limits): the envelope still says `-400`.
    http: Option<StatusCode>,
}

/// The envelope, serialized straight from borrowed data.
#[derive(Serialize)]
struct Envelope<'a, T> {
    code: i64,
    message: &'a str,
    data: &'a T,
}

/// Every route of the node.
pub(crate) fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/discovery/register", post(register))
        .route("/discovery/renew", post(renew))
        .route("/discovery/cancel", post(cancel))
        .route("/discovery/set", post(set))
        .route("/discovery/fetch", get(fetch))
        .route("/discovery/fetchs", get(fetchs))
        .route("/discovery/fetch/all", get(fetch_all))
        .route("/discovery/poll", get(poll))
        .route("/discovery/polls", get(polls))
        .route("/discovery/nodes", get(nodes))
        .route("/lodestar/status", get(status))
        .fallback(|| async { answer(Code::NotFound, "no such route", &Value::Null) })
        .with_state(node)
}

async fn register(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = params(&node, request, Access::Write).await?;
    let instance = parse_register(&params)?;
    let replication = is_replication(&params);
    match node.store.register(instance, replication) {
        Ok(stored) => {
            if !replication {
                node.peers.forward(&Write::Register(Box::new(stored)));
            }
            Ok(done())
        }
        Err(refusal) => Err(refused(refusal)),
    }
}

/// The dirty timestamp a peer sends with a replicated renew or cancel.
fn replicated_dirty(params: &Params, replication: bool) -> Result<Option<i64>, Rejection> {
    match replication {
        true => optional_number(params, "dirty_timestamp"),
        false => Ok(None),
    }
}

async fn renew(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = params(&node, request, Access::Write).await?;
    let (key, hostname) = instance_key(&params)?;
    let replication = is_replication(&params);
    let dirty = replicated_dirty(&params, replication)?;
    match node.store.renew(&key, hostname, dirty) {
        Ok(dirty) => {
            if !replication {
                let hostname = hostname.to_string();
                node.peers.forward(&Write::Renew {
                    key,
                    hostname,
                    dirty,
                });
            }
            Ok(done())
        }
        Err(refusal) => Err(refused(refusal)),
    }
}

async fn cancel(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = params(&node, request, Access::Write).await?;
    let (key, hostname) = instance_key(&params)?;
    let replication = is_replication(&params);
    let dirty = replicated_dirty(&params, replication)?;
    let dirty = node.store.cancel(&key, hostname, dirty).map_err(refused)?;
    if !replication {
        let hostname = hostname.to_string();
        node.peers.forward(&Write::Cancel {
            key,
            hostname,
            dirty,
        });
    }
    Ok(done())
}

/// Sets status, colour or metadata of one or more hostnames, all or none.
/// As in discovery, `status` and `metadata` are either absent or given once
/// per hostname, in order, and metadata is merged into what the instance
/// has; `color` (a lodestar extension) goes to every hostname.
async fn set(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = params(&node, request, Access::Write).await?;
    let key = app_key(&params)?;
    let hostnames = params
        .all("hostname")
        .map(|h| name("hostname", h))
        .collect::<Result<Vec<_>, _>>()?;
    if hostnames.is_empty() {
        return Err(bad("missing hostname"));
    }
    let statuses = params
        .all("status")
        .map(parse_status)
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = params
        .all("metadata")
        .map(parse_set_metadata)
        .collect::<Result<Vec<_>, _>>()?;
    for (what, given) in [("status", statuses.len()), ("metadata", metadata.len())] {
        if given != 0 && given != hostnames.len() {
            return Err(bad(&format!(
                "give one {what} per hostname ({} hostname(s), {given} {what})",
                hostnames.len()
            )));
        }
    }
    let color = params.get("color").map(str::to_string);
    let changes = hostnames
        .iter()
        .enumerate()
        .map(|(at, hostname)| {
            let change = Changes {
                status: statuses.get(at).copied(),
                color: color.clone(),
                metadata: metadata.get(at).cloned(),
            };
            (hostname.to_string(), change)
        })
        .collect();
    // discovery answers an unknown hostname -400, not -404.
    let updated = node.store.set(&key, changes).map_err(|missing| {
        bad(&format!(
            "no instance {missing:?} of {} in {}",
            key.appid, key.env
        ))
    })?;
    if !is_replication(&params) {
        for instance in updated {
            node.peers.forward(&Write::Register(Box::new(instance)));
        }
    }
    Ok(done())
}

async fn fetch(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = read_params(&node, request).await?;
    let key = app_key(&params)?;
    let status = status_mask(&params)?;
    let zone = params.get("zone").filter(|z| !z.is_empty());
    match node.store.fetch(&key, zone, status) {
        Some(fetched) => Ok(ok(&fetched)),
        None => Err(not_found(&key.appid)),
    }
}

/// Several applications at once; the unknown ones are left out, and none
/// known is an empty success, as in discovery.
async fn fetchs(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = read_params(&node, request).await?;
    let env = name("env", required(&params, "env")?)?;
    if params.get("appid").is_none() {
        return Err(bad("missing appid"));
    }
    let status = status_mask(&params)?;
    let zone = params.get("zone").filter(|z| !z.is_empty());
    let mut found = BTreeMap::new();
    for appid in params.all("appid") {
        let key = AppKey {
            env: env.to_string(),
            appid: name("appid", appid)?.to_string(),
        };
        if let Some(fetched) = node.store.fetch(&key, zone, status) {
            found.insert(key.appid, fetched);
        }
    }
    Ok(ok(&found))
}

async fn fetch_all(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = read_params(&node, request).await?;
    let env = params.get("env").filter(|e| !e.is_empty());
    Ok(ok(&node.store.fetch_all(env)))
}

/// `poll`: one application's instances (up ones, by zone) once they are
/// newer than the poller's `latest_timestamp`, `-404` at once when the
/// application is unknown, `-304` when the hold ends; see [`PollKind::One`].
async fn poll(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = read_params(&node, request).await?;
    let wants = poll_wants(&params, PollKind::One)?;
    let first = wants[0].0.appid.clone();
    let (mut changed, _) = hold(&node, &params, &wants, PollKind::One).await?;
    Ok(ok(&changed.remove(&first)))
}

/// `polls`: every application newer than the poller's timestamp for it,
/// by appid, with the unknown ones listed under `error`; `-304` when the
/// hold ends. See [`PollKind::Many`].
async fn polls(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = read_params(&node, request).await?;
    let wants = poll_wants(&params, PollKind::Many)?;
    let (changed, missing) = hold(&node, &params, &wants, PollKind::Many).await?;
    let missing = (!missing.is_empty()).then_some(missing);
    // discovery's shape: `error` maps a code to the appids it applies to.
    let body = serde_json::json!({
        "code": Code::Ok.value(),
        "message": "0",
        "data": changed,
        "error": { Code::NotFound.value().to_string(): missing },
    });
    Ok(respond(StatusCode::OK, &body))
}

/// Answers at once when something is newer, else holds until something
/// changes, the hold ends (`-304`) or the node shuts down (`-304`).
async fn hold(
    node: &Node,
    params: &Params,
    wants: &[(AppKey, i64)],
    kind: PollKind,
) -> Result<(BTreeMap<String, crate::wire::Fetched>, Vec<String>), Rejection> {
    let zone = params.get("zone").filter(|z| !z.is_empty());
    let deadline = Instant::now() + node.config.poll_hold;
    let mut stop = node.stop.clone();
    let mut permit = None;
    loop {
        let waits = match node.store.poll(wants, zone, kind) {
            Polled::Ready { changed, missing } => return Ok((changed, missing)),
            Polled::Unknown(appid) => {
                return Err(Rejection::new(Code::NotFound, format!("{appid} not found")));
            }
            Polled::Wait(waits) => waits,
        };
        if permit.is_none() {
            let Ok(held) = node.polls.clone().try_acquire_owned() else {
                return Err(Rejection::new(
                    Code::Unavailable,
                    "too many polls held; retry later",
                ));
            };
            permit = Some(held);
        }
        tokio::select! {
            () = any_changed(waits) => {}
            () = tokio::time::sleep_until(deadline) => break,
            _ = stop.wait_for(|stopping| *stopping) => break,
        }
    }
    Err(Rejection::new(Code::NotModified, "not modified"))
}

/// The (application, last timestamp seen) pairs of a poll. `polls` needs
/// one timestamp per appid; `poll` takes any mismatch as all zeros (both as
/// discovery does).
fn poll_wants(params: &Params, kind: PollKind) -> Result<Vec<(AppKey, i64)>, Rejection> {
    let env = name("env", required(params, "env")?)?;
    let appids = params
        .all("appid")
        .map(|a| name("appid", a))
        .collect::<Result<Vec<_>, _>>()?;
    if appids.is_empty() || appids.iter().any(|a| a.is_empty()) {
        return Err(bad("missing appid"));
    }
    let mut stamps = params
        .all("latest_timestamp")
        .map(|t| {
            t.parse::<i64>()
                .map_err(|_| bad(&format!("latest_timestamp is not a number: {t:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if stamps.len() != appids.len() {
        if kind == PollKind::Many {
            return Err(bad(&format!(
                "give one latest_timestamp per appid ({} appid(s), {} timestamp(s))",
                appids.len(),
                stamps.len()
            )));
        }
        stamps = vec![0; appids.len()];
    }
    let wants = appids
        .into_iter()
        .zip(stamps)
        .map(|(appid, seen)| {
            let key = AppKey {
                env: env.to_string(),
                appid: appid.to_string(),
            };
            (key, seen)
        })
        .collect();
    Ok(wants)
}

/// Resolves when any of the receivers sees a change.
async fn any_changed(mut waits: Vec<watch::Receiver<i64>>) {
    let mut changes: Vec<Pin<Box<_>>> = waits.iter_mut().map(|rx| Box::pin(rx.changed())).collect();
    std::future::poll_fn(|cx| {
        let ready = changes.iter_mut().any(|c| c.as_mut().poll(cx).is_ready());
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

async fn nodes(State(node): State<Arc<Node>>, request: Request) -> Answer {
    params(&node, request, Access::Read).await?;
    // Where clients reach it, not what it listens on (maybe 0.0.0.0).
    let addr = node
        .config
        .advertise
        .clone()
        .unwrap_or_else(|| node.config.listen.to_string());
    let mut list = vec![serde_json::json!({
        "addr": addr,
        "status": 0,
        "zone": node.config.zone,
        // lodestar's additions, for operators and tests.
        "instances": node.store.len(),
        "protecting": node.store.protecting(),
        "ready": node.is_ready(),
    })];
    for (addr, zone, up) in node.peers.describe() {
        list.push(
            serde_json::json!({"addr": addr, "status": if up { 0 } else { 1 }, "zone": zone}),
        );
    }
    Ok(ok(&list))
}

/// lodestar's own read-only view of the node for operators (the
/// dashboard): itself, its peers' replication state and self-protection's
/// counters. Plain JSON, not discovery's envelope: no discovery client
/// reads it.
async fn status(State(node): State<Arc<Node>>, request: Request) -> Response {
    if let Err(refused) = params(&node, request, Access::Read).await {
        return refused.into_response();
    }
    let addr = node
        .config
        .advertise
        .clone()
        .unwrap_or_else(|| node.config.listen.to_string());
    let body = serde_json::json!({
        "addr": addr,
        "zone": node.config.zone,
        "env": node.config.env,
        "ready": node.is_ready(),
        "instances": node.store.len(),
        "renew_interval_secs": node.config.renew_interval.as_secs_f64(),
        "protection": node.store.protection(),
        "peers": node.peers.status(),
    });
    respond(StatusCode::OK, &body)
}

/// The parameters of a read; `-503` while the node warms up.
async fn read_params(node: &Node, request: Request) -> Result<Params, Rejection> {
    let params = params(node, request, Access::Read).await?;
    if !node.is_ready() {
        return Err(Rejection::new(
            Code::Unavailable,
            "warming up: pulling the registry from peers",
        ));
    }
    Ok(params)
}

/// Query string and form body, the body bounded by `max_body` and
/// `body_timeout`; `-401` without the token this access needs.
async fn params(node: &Node, request: Request, access: Access) -> Result<Params, Rejection> {
    let (parts, body) = request.into_parts();
    let mut params = Params::parse(parts.uri.query().unwrap_or_default());
    let limit = node.config.body_timeout;
    let body = tokio::time::timeout(limit, read_body(body, node.config.max_body))
        .await
        .map_err(|_| {
            bad(&format!("the body took longer than {limit:?} to arrive"))
                .with_http(StatusCode::REQUEST_TIMEOUT)
        })??;
    let text = std::str::from_utf8(&body).map_err(|_| bad("the body is not UTF-8"))?;
    params.extend(text);
    authorize(node, access, &parts.headers, &params)?;
    Ok(params)
}

/// Checks the token, if the node has one and `access` needs it: from
/// `Authorization: Bearer`, else a `token` parameter (for clients that
/// cannot set headers). The token itself is never logged.
fn authorize(
    node: &Node,
    access: Access,
    headers: &http::HeaderMap,
    params: &Params,
) -> Result<(), Rejection> {
    let Some(token) = &node.config.token else {
        return Ok(());
    };
    if access == Access::Read && !node.config.token_reads {
        return Ok(());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer.or_else(|| params.get("token")) {
        Some(given) if token.matches(given) => Ok(()),
        Some(_) => {
            tracing::debug!(?access, "refused: wrong token");
            Err(Rejection::new(Code::Unauthorized, "wrong token"))
        }
        None => {
            tracing::debug!(?access, "refused: no token");
            Err(Rejection::new(
                Code::Unauthorized,
                "this registry needs a token (Authorization: Bearer, or lodestar://...?token=)",
            ))
        }
    }
}

async fn read_body(body: Body, max: usize) -> Result<Vec<u8>, Rejection> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(bad(&format!("the body is larger than {max} bytes"))
                .with_http(StatusCode::PAYLOAD_TOO_LARGE))
        }
        Err(_) => Err(bad("the body is unreadable")),
    }
}

fn parse_register(params: &Params) -> Result<Instance, Rejection> {
    let mut instance = Instance {
        region: params.get("region").unwrap_or_default().to_string(),
        zone: name("zone", required(params, "zone")?)?.to_string(),
        env: name("env", required(params, "env")?)?.to_string(),
        appid: name("appid", required(params, "appid")?)?.to_string(),
        hostname: name("hostname", required(params, "hostname")?)?.to_string(),
        addrs: parse_addrs(params)?,
        version: params.get("version").unwrap_or_default().to_string(),
        color: params.get("color").unwrap_or_default().to_string(),
        metadata: params
            .get("metadata")
            .map(parse_metadata)
            .transpose()?
            .unwrap_or_default(),
        status: parse_status(required(params, "status")?)?,
        ttl: parse_ttl(params)?,
        ..Instance::default()
    };
    if is_replication(params) {
        for (field, value) in [
            ("dirty_timestamp", &mut instance.dirty_timestamp),
            ("reg_timestamp", &mut instance.reg_timestamp),
            ("up_timestamp", &mut instance.up_timestamp),
            ("renew_timestamp", &mut instance.renew_timestamp),
        ] {
            *value = optional_number(params, field)?.unwrap_or_default();
        }
    }
    Ok(instance)
}

fn parse_addrs(params: &Params) -> Result<Vec<String>, Rejection> {
    let addrs: Vec<String> = params
        .all("addrs")
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if addrs.is_empty() {
        return Err(bad("missing addrs (scheme://ip:port, repeat for several)"));
    }
    match addrs.iter().find(|a| !a.contains("://") || a.len() > 1024) {
        Some(a) => Err(bad(&format!("addrs {a:?} is not scheme://ip:port"))),
        None => Ok(addrs),
    }
}

fn parse_status(text: &str) -> Result<u32, Rejection> {
    match text.parse::<u32>() {
        Ok(status @ (STATUS_UP | STATUS_WAITING)) => Ok(status),
        _ => Err(bad(&format!(
            "status must be 1 (up) or 2 (waiting), not {text:?}"
        ))),
    }
}

/// Metadata is a JSON object given as a string; values that are not
/// strings are kept as their JSON text.
fn parse_metadata(text: &str) -> Result<lodestar::Metadata, Rejection> {
    if text.trim().is_empty() {
        return Ok(lodestar::Metadata::new());
    }
    let object: serde_json::Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| bad(&format!("metadata is not a JSON object: {e}")))?;
    let metadata = object
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Ok(metadata)
}

/// `set`'s metadata, strict as discovery's (a JSON object of strings,
/// decoded into Go's `map[string]string`).
fn parse_set_metadata(text: &str) -> Result<BTreeMap<String, String>, Rejection> {
    match serde_json::from_str::<Option<BTreeMap<String, String>>>(text) {
        Ok(metadata) => Ok(metadata.unwrap_or_default()),
        Err(e) => Err(bad(&format!(
            "metadata must be a JSON object of strings: {e}"
        ))),
    }
}

fn parse_ttl(params: &Params) -> Result<u64, Rejection> {
    match optional_number(params, "ttl")? {
        None => Ok(0),
        Some(ttl @ 1..=86_400) => Ok(ttl.unsigned_abs()),
        Some(ttl) => Err(bad(&format!("ttl must be 1 to 86400 seconds, not {ttl}"))),
    }
}

/// The status filter of a read, required as in discovery: a bit mask, 1
/// up, 2 waiting, 3 both (other bits match nothing).
fn status_mask(params: &Params) -> Result<u32, Rejection> {
    let text = required(params, "status")?;
    match text.parse::<u32>() {
        Ok(mask) if mask > 0 => Ok(mask),
        _ => Err(bad(&format!(
            "status must be a bit mask (1 up, 2 waiting, 3 both), not {text:?}"
        ))),
    }
}

fn app_key(params: &Params) -> Result<AppKey, Rejection> {
    Ok(AppKey {
        env: name("env", required(params, "env")?)?.to_string(),
        appid: name("appid", required(params, "appid")?)?.to_string(),
    })
}

fn instance_key(params: &Params) -> Result<(AppKey, &str), Rejection> {
    let key = app_key(params)?;
    let hostname = name("hostname", required(params, "hostname")?)?;
    Ok((key, hostname))
}

fn is_replication(params: &Params) -> bool {
    matches!(params.get("replication"), Some("true" | "1"))
}

fn required<'a>(params: &'a Params, key: &str) -> Result<&'a str, Rejection> {
    params
        .get(key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad(&format!("missing {key}")))
}

fn optional_number(params: &Params, key: &str) -> Result<Option<i64>, Rejection> {
    match params.get(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| bad(&format!("{key} is not a number: {text:?}"))),
    }
}

/// Names are short and printable.
fn name<'a>(what: &str, value: &'a str) -> Result<&'a str, Rejection> {
    if value.len() > MAX_NAME {
        return Err(bad(&format!("{what} is longer than {MAX_NAME} bytes")));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(&format!(
            "{what} {value:?} contains whitespace or control characters"
        )));
    }
    Ok(value)
}

fn refused(refusal: Refusal) -> Rejection {
    match refusal {
        Refusal::NotFound => Rejection::new(Code::NotFound, "no such instance"),
        Refusal::Conflict(newer) => Rejection {
            newer: Some(newer),
            ..Rejection::new(Code::Conflict, "a newer copy is here")
        },
        Refusal::TooMany => {
            Rejection::new(Code::BadRequest, "too many instances in this application")
        }
    }
}

fn not_found(what: &str) -> Rejection {
    Rejection::new(Code::NotFound, format!("nothing found for {what}"))
}

fn bad(message: &str) -> Rejection {
    Rejection::new(Code::BadRequest, message)
}

// === impl Rejection ===

impl Rejection {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            newer: None,
            http: None,
        }
    }

    fn with_http(self, status: StatusCode) -> Self {
        Self {
            http: Some(status),
            ..self
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = match self.newer {
            Some(newer) => answer(self.code, &self.message, &newer),
            None => answer(self.code, &self.message, &Value::Null),
        };
        if let Some(status) = self.http {
            *response.status_mut() = status;
        }
        response
    }
}

fn done() -> Response {
    answer(Code::Ok, "0", &Value::Null)
}

fn ok<T: Serialize>(data: &T) -> Response {
    answer(Code::Ok, "0", data)
}

/// discovery answers HTTP 200 with the code in the body; `-503` is also an
/// HTTP 503, so load balancers and clients move to another node.
fn answer<T: Serialize>(code: Code, message: &str, data: &T) -> Response {
    let envelope = Envelope {
        code: code.value(),
        message,
        data,
    };
    let status = match code {
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthorized => StatusCode::UNAUTHORIZED,
        _ => StatusCode::OK,
    };
    let mut response = respond(status, &envelope);
    if code == Code::Unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// A JSON response.
fn respond<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not encode an answer");
            let body = r#"{"code":-500,"message":"could not encode the answer","data":null}"#;
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}
