//! discovery's Go client (`naming/client.go` in bilibili/discovery, the same
//! as kratos v1's `pkg/naming/discovery` and kratos v2's
//! `contrib/registry/discovery`), replayed request for request: the paths,
//! the parameters (Go's `url.Values.Encode` sorts them by key), a pooled
//! keep-alive HTTP client, and what it does with each answer.
//!
//! - `New()` never calls `/discovery/nodes`: it polls `infra.discovery` and
//!   blocks until that answers with instances, then takes the `http://`
//!   addresses in its own zone as its node list (`newSelf`), and keeps
//!   doing so on every later answer for that app (`selfproc`).
//! - Its poll loop sends `/discovery/polls` with every app it follows and
//!   the last timestamp it kept for each (all reset to 0 when it moves to
//!   another node). An answer with no instance in any zone is skipped
//!   *without keeping its timestamp* (`broadcast`), and it polls again at
//!   once.
//! - Writes are POSTs of a form body (v1) or of the query string (v2, resty's
//!   `SetQueryParamsFromValues`).

use std::{collections::BTreeMap, time::Duration};

use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use lodestar_registry::form::Form;
use serde_json::Value;

/// The appid discovery nodes register themselves under.
pub const DISCOVERY: &str = "infra.discovery";

/// The client's configuration (`naming.Config`).
#[derive(Clone, Debug)]
pub struct GoConfig {
    /// Seed nodes, `host:port`.
    pub nodes: Vec<String>,
    pub region: String,
    pub zone: String,
    pub env: String,
    /// The machine's hostname: the instance's hostname when it registers.
    pub host: String,
    /// kratos v2: parameters of a POST in the query string, body empty.
    pub query_post: bool,
}

/// What one turn of the poll loop did.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// Answered: the apps whose instances (and timestamp) were kept, and
    /// those skipped because no zone had an instance.
    Answered {
        kept: Vec<String>,
        skipped: Vec<String>,
    },
    /// `-304`: nothing changed during the hold.
    NotModified,
    /// A transport error or another code (the client switches node).
    Failed(String),
}

/// One app the client follows (`appInfo`).
#[derive(Debug, Default)]
struct App {
    last_ts: i64,
    zone_ins: Option<BTreeMap<String, Vec<Value>>>,
}

/// The replayed client.
pub struct GoClient {
    pub config: GoConfig,
    http: Client<HttpConnector, Full<Bytes>>,
    /// From `infra.discovery` (`d.node`); empty until found.
    nodes: Vec<String>,
    node_idx: usize,
    last_host: String,
    apps: BTreeMap<String, App>,
    /// Every request line sent, for tests to check the sequence.
    pub sent: Vec<String>,
}

/// Bounds the turns `new` waits for `infra.discovery` (the Go client
/// blocks forever).
const SELF_TURNS: usize = 20;

impl GoClient {
    /// `New()`: follows `infra.discovery` and polls until it has instances.
    pub async fn new(config: GoConfig) -> Result<Self, String> {
        let mut client = Self {
            config,
            http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            nodes: Vec::new(),
            node_idx: 0,
            last_host: String::new(),
            apps: BTreeMap::new(),
            sent: Vec::new(),
        };
        client.build(DISCOVERY);
        for _ in 0..SELF_TURNS {
            client.poll().await;
            if client.apps[DISCOVERY].zone_ins.is_some() {
                return Ok(client);
            }
        }
        Err(format!(
            "infra.discovery never answered with instances: {:?}",
            client.sent
        ))
    }

    /// `Build(appid)`: follows one more app.
    pub fn build(&mut self, appid: &str) {
        self.apps.entry(appid.to_string()).or_default();
    }

    /// The node list found through `infra.discovery`, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes = self.nodes.clone();
        nodes.sort();
        nodes
    }

    /// The hostnames the client holds for `appid`, sorted.
    pub fn hostnames(&self, appid: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .apps
            .get(appid)
            .and_then(|a| a.zone_ins.as_ref())
            .map(|zones| {
                zones
                    .values()
                    .flatten()
                    .map(|i| i["hostname"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The timestamp the client keeps for `appid`.
    pub fn last_ts(&self, appid: &str) -> i64 {
        self.apps.get(appid).map_or(0, |a| a.last_ts)
    }

    /// `pickNode()`.
    pub fn pick_node(&self) -> String {
        match self.nodes.len() {
            0 => self.config.nodes[0].clone(),
            n => self.nodes[self.node_idx % n].clone(),
        }
    }

    /// `switchNode()`: what it does after an error.
    pub fn switch_node(&mut self) {
        self.node_idx += 1;
    }

    /// One turn of `serverproc`: `polls()` then `broadcast()`.
    pub async fn poll(&mut self) -> Polled {
        let host = self.pick_node();
        if host != self.last_host {
            self.last_host = host.clone();
            for app in self.apps.values_mut() {
                app.last_ts = 0;
            }
        }
        let mut params = vec![
            ("env".to_string(), self.config.env.clone()),
            ("hostname".to_string(), self.config.host.clone()),
        ];
        for (appid, app) in &self.apps {
            params.push(("appid".into(), appid.clone()));
            params.push(("latest_timestamp".into(), app.last_ts.to_string()));
        }
        let query = encode(params);
        let reply = match self.get(&host, &format!("/discovery/polls?{query}")).await {
            Ok(reply) => reply,
            Err(e) => {
                self.switch_node();
                return Polled::Failed(e);
            }
        };
        match reply["code"].as_i64() {
            Some(0) => {}
            Some(-304) => return Polled::NotModified,
            other => {
                self.switch_node();
                return Polled::Failed(format!("code {other:?}: {reply}"));
            }
        }
        let data = reply["data"].as_object().cloned().unwrap_or_default();
        if data
            .values()
            .any(|app| app.is_null() || app["latest_timestamp"].as_i64().unwrap_or(0) == 0)
        {
            self.switch_node();
            return Polled::Failed(format!("latest_timestamp is 0: {reply}"));
        }
        self.broadcast(data)
    }

    /// `broadcast()`: keeps apps with instances, skips the others.
    fn broadcast(&mut self, data: serde_json::Map<String, Value>) -> Polled {
        let (mut kept, mut skipped) = (Vec::new(), Vec::new());
        for (appid, info) in data {
            let zones: BTreeMap<String, Vec<Value>> = info["instances"]
                .as_object()
                .map(|zones| {
                    zones
                        .iter()
                        .map(|(z, list)| (z.clone(), list.as_array().cloned().unwrap_or_default()))
                        .filter(|(_, list)| !list.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            if zones.is_empty() {
                skipped.push(appid);
                continue;
            }
            let Some(app) = self.apps.get_mut(&appid) else {
                continue;
            };
            app.last_ts = info["latest_timestamp"].as_i64().unwrap_or(0);
            if appid == DISCOVERY {
                self.new_self(&zones);
            }
            if let Some(app) = self.apps.get_mut(&appid) {
                app.zone_ins = Some(zones);
            }
            kept.push(appid);
        }
        Polled::Answered { kept, skipped }
    }

    /// `newSelf()`: the `http://` addresses of its own zone.
    fn new_self(&mut self, zones: &BTreeMap<String, Vec<Value>>) {
        let Some(instances) = zones.get(&self.config.zone) else {
            return;
        };
        let nodes: Vec<String> = instances
            .iter()
            .flat_map(|i| i["addrs"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str()?.strip_prefix("http://").map(str::to_string))
            .collect();
        if !nodes.is_empty() {
            self.nodes = nodes;
        }
    }

    /// `register()`: status 1, metadata as JSON; the reply's code.
    pub async fn register(&mut self, appid: &str, addrs: &[&str], metadata: &str) -> i64 {
        let mut params = self.new_params();
        params.push(("appid".into(), appid.into()));
        for addr in addrs {
            params.push(("addrs".into(), addr.to_string()));
        }
        params.push(("version".into(), "v1".into()));
        params.push(("status".into(), "1".into()));
        params.push(("metadata".into(), metadata.into()));
        self.write("/discovery/register", params).await
    }

    /// `renew()`; the reply's code.
    pub async fn renew(&mut self, appid: &str) -> i64 {
        let mut params = self.new_params();
        params.push(("appid".into(), appid.into()));
        self.write("/discovery/renew", params).await
    }

    /// `cancel()`; the reply's code.
    pub async fn cancel(&mut self, appid: &str) -> i64 {
        let mut params = self.new_params();
        params.push(("appid".into(), appid.into()));
        self.write("/discovery/cancel", params).await
    }

    /// `newParams()`.
    fn new_params(&self) -> Vec<(String, String)> {
        vec![
            ("region".into(), self.config.region.clone()),
            ("zone".into(), self.config.zone.clone()),
            ("env".into(), self.config.env.clone()),
            ("hostname".into(), self.config.host.clone()),
        ]
    }

    async fn write(&mut self, path: &str, params: Vec<(String, String)>) -> i64 {
        let host = self.pick_node();
        let encoded = encode(params);
        let (uri, body) = match self.config.query_post {
            true => (format!("http://{host}{path}?{encoded}"), String::new()),
            false => (format!("http://{host}{path}"), encoded),
        };
        match self.send(Method::POST, uri, body).await {
            Ok(reply) => reply["code"].as_i64().unwrap_or(i64::MIN),
            Err(_) => {
                self.switch_node();
                i64::MIN
            }
        }
    }

    async fn get(&mut self, host: &str, path_and_query: &str) -> Result<Value, String> {
        self.send(
            Method::GET,
            format!("http://{host}{path_and_query}"),
            String::new(),
        )
        .await
    }

    async fn send(&mut self, method: Method, uri: String, body: String) -> Result<Value, String> {
        self.sent.push(format!("{method} {uri} {body}"));
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
        };
        tokio::time::timeout(Duration::from_secs(40), exchange)
            .await
            .map_err(|_| "no answer in 40 s".to_string())?
    }
}

/// `url.Values.Encode()`: sorted by key, values of a key in order.
fn encode(mut params: Vec<(String, String)>) -> String {
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
        .iter()
        .fold(Form::new(), |form, (k, v)| form.pair(k, v))
        .finish()
}
