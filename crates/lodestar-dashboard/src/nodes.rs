//! The built-in registry's nodes: each node of a `lodestar://` URL, and the
//! peers they report, asked for `GET /lodestar/status` periodically.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::{body::Bytes, header::HeaderValue};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use tokio::{task::JoinSet, time::MissedTickBehavior};

use crate::state::{NodeView, Shared, now_ms};

/// The bound on one status request.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The largest status answer read.
const MAX_BODY: usize = 1 << 20;
/// Registration times are read (`/discovery/fetch/all`, every instance of
/// the environment in one answer) only while the registry holds at most
/// this many instances; a larger one shows when the dashboard first saw
/// each instance instead.
const MAX_REGISTERED: u64 = 5_000;
/// The largest `/discovery/fetch/all` answer read.
const MAX_ALL_BODY: usize = 16 << 20;
/// The most nodes followed (the URL's and the peers they name).
const MAX_NODES: usize = 64;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Asks nodes, with the registry's token when there is one.
#[derive(Clone)]
struct Asker {
    http: HttpClient,
    /// `Bearer TOKEN`, marked sensitive.
    auth: Option<HeaderValue>,
}

/// The `host:port`s of a `lodestar://` URL, or `None` for another backend.
pub(crate) fn addresses(url: &str) -> Option<Vec<String>> {
    let rest = url.strip_prefix("lodestar://")?;
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    let addrs: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    (!addrs.is_empty()).then_some(addrs)
}

/// Asks every known node every `nodes_every`.
pub(crate) async fn run(shared: Arc<Shared>, seeds: Vec<String>) {
    let http = Asker::new(shared.config.registry_token.as_deref());
    let env = env_of(&shared.config.registry_url);
    let mut tick = tokio::time::interval(shared.config.nodes_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut known: BTreeSet<String> = seeds.iter().cloned().collect();
        known.extend(shared.lock().nodes.keys().cloned());
        let mut asked = JoinSet::new();
        for addr in known.into_iter().take(MAX_NODES) {
            let http = http.clone();
            asked.spawn(async move {
                let answer = http.get(&addr, "/lodestar/status", MAX_BODY).await;
                (addr, answer)
            });
        }
        let answers = asked.join_all().await;
        let changed = store(&shared, answers);
        if registered(&shared, &http, &env).await || changed {
            shared.refresh();
        }
    }
}

/// The `env` of a `lodestar://` URL (`?env=`), `dev` by default as in the
/// client.
fn env_of(url: &str) -> String {
    url.split_once('?')
        .into_iter()
        .flat_map(|(_, query)| query.split('&'))
        .find_map(|pair| pair.strip_prefix("env="))
        .filter(|env| !env.is_empty())
        .unwrap_or("dev")
        .to_string()
}

/// Reads every instance's registration time from a node that answers
/// (discovery's `reg_timestamp`, which the `lodestar://` client does not
/// carry into `Instance`); whether any changed.
async fn registered(shared: &Shared, http: &Asker, env: &str) -> bool {
    let node = {
        let inner = shared.lock();
        inner
            .nodes
            .iter()
            .filter(|(_, v)| v.error.is_none())
            .find_map(|(addr, v)| {
                let instances = v.status.as_ref()?["instances"].as_u64()?;
                (instances <= MAX_REGISTERED).then(|| addr.clone())
            })
    };
    let Some(node) = node else { return false };
    let path = format!("/discovery/fetch/all?env={env}");
    let Ok(all) = http.get(&node, &path, MAX_ALL_BODY).await else {
        return false;
    };
    let mut times = std::collections::HashMap::new();
    for (appid, instances) in all["data"].as_object().into_iter().flatten() {
        for instance in instances.as_array().into_iter().flatten() {
            let (Some(hostname), Some(ns)) = (
                instance["hostname"].as_str(),
                instance["reg_timestamp"].as_i64(),
            ) else {
                continue;
            };
            if ns > 0 {
                times.insert(
                    (appid.clone(), hostname.to_string()),
                    (ns / 1_000_000) as u64,
                );
            }
        }
    }
    let mut inner = shared.lock();
    let changed = inner.registered != times;
    inner.registered = times;
    changed
}

/// Records the answers, and the peers they name as nodes to ask next time;
/// whether anything but the answers' times changed.
fn store(shared: &Shared, answers: Vec<(String, Result<Value, String>)>) -> bool {
    let mut inner = shared.lock();
    let before = views(&inner.nodes);
    let now = now_ms();
    for (addr, answer) in answers {
        let view = inner.nodes.entry(addr).or_insert(NodeView {
            status: None,
            last_ok: None,
            error: None,
        });
        match answer {
            Ok(status) => {
                let peers: Vec<String> = status["peers"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter_map(|p| p["addr"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                view.status = Some(status);
                view.last_ok = Some(now);
                view.error = None;
                for peer in peers {
                    if inner.nodes.len() < MAX_NODES {
                        inner.nodes.entry(peer).or_insert(NodeView {
                            status: None,
                            last_ok: None,
                            error: None,
                        });
                    }
                }
            }
            Err(e) => view.error = Some(e),
        }
    }
    views(&inner.nodes) != before
}

/// The node views without their times, to tell a change. The window's
/// elapsed time moves on every answer: left out too.
fn views(nodes: &std::collections::BTreeMap<String, NodeView>) -> Vec<(String, Value, bool)> {
    nodes
        .iter()
        .map(|(addr, view)| {
            let mut status = view.status.clone().unwrap_or(Value::Null);
            if let Some(p) = status.get_mut("protection").and_then(Value::as_object_mut) {
                p.remove("current_elapsed_secs");
            }
            (addr.clone(), status, view.error.is_some())
        })
        .collect()
}

// === impl Asker ===

impl Asker {
    fn new(token: Option<&str>) -> Self {
        let auth = token.and_then(|t| {
            let mut value = HeaderValue::try_from(format!("Bearer {t}")).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        Self {
            http: Client::builder(TokioExecutor::new()).build_http(),
            auth,
        }
    }

    /// `GET path` from the node at `addr`, as JSON, bounded in time and
    /// size.
    async fn get(&self, addr: &str, path: &str, max: usize) -> Result<Value, String> {
        let mut request = hyper::Request::get(format!("http://{addr}{path}"));
        if let Some(auth) = &self.auth {
            request = request.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("bad node address {addr}: {e}"))?;
        get(&self.http, request, max).await
    }
}

/// Sends `request`; its answer as JSON, bounded in time and size.
async fn get(
    http: &HttpClient,
    request: hyper::Request<Empty<Bytes>>,
    max: usize,
) -> Result<Value, String> {
    let fetch = async {
        let response = http.request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), max)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
    };
    tokio::time::timeout(TIMEOUT, fetch)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {TIMEOUT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_a_lodestar_url() {
        assert_eq!(
            addresses("lodestar://a:1,b:2?env=dev"),
            Some(vec!["a:1".to_string(), "b:2".to_string()])
        );
        assert_eq!(addresses("lodestar://a:1/x"), Some(vec!["a:1".to_string()]));
        assert_eq!(addresses("etcd://a:1"), None);
        assert_eq!(addresses("lodestar://"), None);
    }

    #[test]
    fn env_of_a_lodestar_url() {
        assert_eq!(env_of("lodestar://a:1?zone=z&env=prod"), "prod");
        assert_eq!(env_of("lodestar://a:1"), "dev");
        assert_eq!(env_of("lodestar://a:1?env="), "dev");
    }
}
