//! The built-in registry's nodes: each node of a `lodestar://` URL, and the
//! peers they report, asked for `GET /lodestar/status` periodically.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
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
/// The most nodes followed (the URL's and the peers they name).
const MAX_NODES: usize = 64;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

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
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
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
                let answer = status(&http, &addr).await;
                (addr, answer)
            });
        }
        let answers = asked.join_all().await;
        if store(&shared, answers) {
            shared.refresh();
        }
    }
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

/// One node's `/lodestar/status`.
async fn status(http: &HttpClient, addr: &str) -> Result<Value, String> {
    let uri: hyper::Uri = format!("http://{addr}/lodestar/status")
        .parse()
        .map_err(|e| format!("bad node address {addr}: {e}"))?;
    let fetch = async {
        let response = http.get(uri).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
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
}
