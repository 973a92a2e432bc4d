//! The HTTP API, route by route, as bilibili discovery has it.
//!
//! Parameters come from the query string and from form bodies alike. Bad
//! input is a `-400` naming the parameter, never a panic or a `-500`. Writes
//! accepted from clients are forwarded to peers; writes marked
//! `replication=true` are not forwarded again.

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
    store::{AppKey, Changes, Polled, Refusal},
};
use crate::{
    form::Params,
    wire::{Code, Instance, STATUS_UP, STATUS_WAITING},
};

/// A handler's answer: both arms are complete responses.
type Answer = Result<Response, Rejection>;

/// Longest name accepted (appid, hostname, env, zone...).
const MAX_NAME: usize = 253;

/// A refused request: its code, a message, and for `-409` the newer copy.
#[derive(Debug)]
struct Rejection {
    code: Code,
    message: String,
    newer: Option<Box<Instance>>,
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
        .route("/discovery/polls", get(poll))
        .route("/discovery/nodes", get(nodes))
        .fallback(|| async { answer(Code::NotFound, "no such route", &Value::Null) })
        .with_state(node)
}

async fn register(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = params(&node, request).await?;
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
    let params = params(&node, request).await?;
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
    let params = params(&node, request).await?;
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

/// Sets status, colour or metadata of one or more hostnames; a list of
/// values goes with the hostnames in order, a single value to all.
async fn set(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = params(&node, request).await?;
    let key = app_key(&params)?;
    let hostnames: Vec<&str> = params.all("hostname").collect();
    if hostnames.is_empty() {
        return Err(bad("missing hostname"));
    }
    let statuses = params
        .all("status")
        .map(parse_status)
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = params
        .all("metadata")
        .map(parse_metadata)
        .collect::<Result<Vec<_>, _>>()?;
    let color = params.get("color").map(str::to_string);
    if statuses.is_empty() && metadata.is_empty() && color.is_none() {
        return Err(bad("nothing to set: give status, color or metadata"));
    }
    let mut missing = Vec::new();
    for (at, hostname) in hostnames.iter().enumerate() {
        let changes = Changes {
            status: pick(&statuses, at).copied(),
            color: color.clone(),
            metadata: pick(&metadata, at).cloned(),
        };
        match node.store.set(&key, hostname, changes) {
            Ok(updated) if !is_replication(&params) => {
                node.peers.forward(&Write::Register(Box::new(updated)));
            }
            Ok(_) => {}
            Err(_) => missing.push(*hostname),
        }
    }
    match missing.is_empty() {
        true => Ok(done()),
        false => Err(Rejection::new(
            Code::NotFound,
            format!("no instance {missing:?}"),
        )),
    }
}

fn pick<T>(values: &[T], at: usize) -> Option<&T> {
    values
        .get(at)
        .or_else(|| (values.len() == 1).then(|| &values[0]))
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

async fn fetchs(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = read_params(&node, request).await?;
    let env = required(&params, "env")?;
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
    match found.is_empty() {
        true => Err(not_found("any of these appids")),
        false => Ok(ok(&found)),
    }
}

async fn fetch_all(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = read_params(&node, request).await?;
    let env = params.get("env").filter(|e| !e.is_empty());
    Ok(ok(&node.store.fetch_all(env)))
}

/// `poll` and `polls`: answers at once with every application newer than
/// the poller's `latest_timestamp`, else holds until one changes, the hold
/// ends (`-304`) or the node shuts down (`-304`).
async fn poll(State(node): State<Arc<Node>>, request: Request) -> Answer {
    let params = read_params(&node, request).await?;
    let wants = poll_wants(&params)?;
    let Ok(_permit) = node.polls.clone().try_acquire_owned() else {
        return Err(Rejection::new(
            Code::Unavailable,
            "too many polls held; retry later",
        ));
    };
    let deadline = Instant::now() + node.config.poll_hold;
    let mut stop = node.stop.clone();
    loop {
        let waits = match node.store.poll(&wants) {
            Polled::Ready(changed) => return Ok(ok(&changed)),
            Polled::Wait(waits) => waits,
        };
        tokio::select! {
            () = any_changed(waits) => {}
            () = tokio::time::sleep_until(deadline) => break,
            _ = stop.wait_for(|stopping| *stopping) => break,
        }
    }
    Err(Rejection::new(Code::NotModified, "not modified"))
}

/// The (application, last timestamp seen) pairs of a poll.
fn poll_wants(params: &Params) -> Result<Vec<(AppKey, i64)>, Rejection> {
    let env = required(params, "env")?;
    let stamps = params
        .all("latest_timestamp")
        .map(|t| {
            t.parse::<i64>()
                .map_err(|_| bad("latest_timestamp is not a number"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut wants = Vec::new();
    for (at, appid) in params.all("appid").enumerate() {
        let key = AppKey {
            env: env.to_string(),
            appid: name("appid", appid)?.to_string(),
        };
        wants.push((key, pick(&stamps, at).copied().unwrap_or(0)));
    }
    if wants.is_empty() {
        return Err(bad("missing appid"));
    }
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

async fn nodes(State(node): State<Arc<Node>>) -> Answer {
    let mut list = vec![serde_json::json!({
        "addr": node.config.listen.to_string(),
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

/// The parameters of a read; `-503` while the node warms up.
async fn read_params(node: &Node, request: Request) -> Result<Params, Rejection> {
    if !node.is_ready() {
        return Err(Rejection::new(
            Code::Unavailable,
            "warming up: pulling the registry from peers",
        ));
    }
    params(node, request).await
}

/// Query string and form body, the body bounded by `max_body`.
async fn params(node: &Node, request: Request) -> Result<Params, Rejection> {
    let (parts, body) = request.into_parts();
    let mut params = Params::parse(parts.uri.query().unwrap_or_default());
    let body = read_body(body, node.config.max_body).await?;
    let text = std::str::from_utf8(&body).map_err(|_| bad("the body is not UTF-8"))?;
    params.extend(text);
    Ok(params)
}

async fn read_body(body: Body, max: usize) -> Result<Vec<u8>, Rejection> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(_) => Err(bad(&format!(
            "the body is unreadable or larger than {max} bytes"
        ))),
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
fn parse_metadata(text: &str) -> Result<BTreeMap<String, String>, Rejection> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
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

fn parse_ttl(params: &Params) -> Result<u64, Rejection> {
    match optional_number(params, "ttl")? {
        None => Ok(0),
        Some(ttl @ 1..=86_400) => Ok(ttl.unsigned_abs()),
        Some(ttl) => Err(bad(&format!("ttl must be 1 to 86400 seconds, not {ttl}"))),
    }
}

/// The status filter of a read: a mask, 1 up, 2 waiting, 3 both (default).
fn status_mask(params: &Params) -> Result<u32, Rejection> {
    match params.get("status") {
        None | Some("") => Ok(3),
        Some(text) => match text.parse::<u32>() {
            Ok(mask @ 1..=3) => Ok(mask),
            _ => Err(bad(&format!("status must be 1, 2 or 3, not {text:?}"))),
        },
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
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self.newer {
            Some(newer) => answer(self.code, &self.message, &newer),
            None => answer(self.code, &self.message, &Value::Null),
        }
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
        _ => StatusCode::OK,
    };
    match serde_json::to_vec(&envelope) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not encode an answer");
            let body = r#"{"code":-500,"message":"could not encode the answer","data":null}"#;
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}
