//! In-process harness: a real registry (etcd process or built-in node), echo
//! backends (HTTP echo plus the gRPC echo through the serve helper)
//! registered in it, a gateway on a loopback port, and a pooled client.
#![allow(dead_code, unreachable_pub)] // each test file uses its own share

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use lodestar::{Endpoint, Instance, Registry};
use lodestar_echo::{EchoService, echo_server::EchoServer};
use lodestar_gateway::{Gateway, config::Config};
use lodestar_registry::server;
use lodestar_test_support::EtcdNode;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub const PATIENCE: Duration = Duration::from_secs(20);

/// A registry to test against.
pub struct Reg {
    pub url: String,
    pub registry: Arc<dyn Registry>,
    _etcd: Option<EtcdNode>,
    _node: Option<Task>,
}

/// A task stopped (aborted) on drop.
pub struct Task(pub JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A real etcd process.
pub async fn etcd() -> Reg {
    let node = EtcdNode::start().await;
    let url = node.url();
    let registry = lodestar_connect::connect(&url).await.expect("connect etcd");
    Reg {
        url,
        registry,
        _etcd: Some(node),
        _node: None,
    }
}

/// A built-in registry node, in-process.
pub async fn builtin() -> Reg {
    let mut config = server::Config::new(([127, 0, 0, 1], 0).into());
    config.poll_hold = Duration::from_secs(1);
    let node = server::Server::bind(config).await.expect("bind registry");
    let addr = node.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = node.serve(std::future::pending()).await;
    });
    let url = format!("lodestar://{addr}");
    let registry = lodestar_connect::connect(&url)
        .await
        .expect("connect registry");
    Reg {
        url,
        registry,
        _etcd: None,
        _node: Some(Task(task)),
    }
}

impl Reg {
    /// The built-in node's address (`host:port`).
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("lodestar://").to_string()
    }
}

/// An echo backend: HTTP echo and gRPC echo, registered.
pub struct Echo {
    pub id: String,
    pub http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _http: Task,
}

impl Echo {
    /// Starts `service`/`id` with `version` and optional colour.
    pub async fn start(
        reg: &Reg,
        service: &str,
        id: &str,
        version: &str,
        color: Option<&str>,
    ) -> Echo {
        let mut instance = Instance::new(service, id).with_version(version);
        if let Some(color) = color {
            instance = instance.with_metadata("color", color);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        instance
            .endpoints
            .push(Endpoint::new("http", "127.0.0.1", http.port()).unwrap());
        let http_task = tokio::spawn(
            lodestar_echo::http::Server::new(instance.clone())
                .serve(listener, std::future::pending()),
        );
        let bound = lodestar_tonic::serve::Server::builder(reg.registry.clone(), instance)
            .listen(([127, 0, 0, 1], 0).into())
            .propagation_delay(Duration::from_millis(300))
            .bind()
            .await
            .expect("bind gRPC echo");
        let echo = EchoService::new(bound.instance().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let routes = tonic::service::Routes::new(EchoServer::new(echo));
            let _ = bound
                .serve(routes, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Echo {
            id: id.to_string(),
            http,
            stop: Some(stop),
            task,
            _http: Task(http_task),
        }
    }

    /// Releases it gracefully (deregister, delay, drain) and waits.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway on a loopback port.
pub struct Gw {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    _task: Task,
}

impl Gw {
    pub async fn start(reg: &Reg, config: Config) -> Gw {
        let gateway = Gateway::new(reg.registry.clone(), config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = gateway.clone();
        let task =
            tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
        Gw {
            addr,
            gateway,
            _task: Task(task),
        }
    }

    pub fn routes(reg: &Reg, routes: &[&str]) -> impl std::future::Future<Output = Gw> {
        let config = Config::default().with_route_flags(routes).unwrap();
        Gw::start(reg, config)
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The instance that answered (JSON echo).
    pub fn instance(&self) -> String {
        self.json()["instance"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Sends `method path` with `headers` and `body` through `addr`.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Answer, String> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(body.into()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let (head, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer {
        status: head.status.as_u16(),
        headers: head.headers,
        body,
    })
}

/// `GET path`.
pub async fn get(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send(client, addr, "GET", path, headers, Bytes::new())
        .await
        .expect("GET through the gateway")
}

/// Waits until `n` requests to `path` are answered by exactly `ids`.
pub async fn wait_for_instances(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    ids: &[&str],
) {
    let client = client();
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    lodestar_test_support::eventually(&format!("{ids:?} to answer {path}"), PATIENCE, || {
        let client = client.clone();
        let want = want.clone();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..(want.len() * 8) {
                match send(&client, addr, "GET", path, headers, Bytes::new()).await {
                    Ok(a) if a.status == 200 => {
                        seen.insert(a.instance());
                    }
                    _ => return false,
                }
            }
            seen.into_iter().collect::<Vec<_>>() == want
        }
    })
    .await;
}
