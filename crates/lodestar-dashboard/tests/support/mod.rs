//! What the dashboard's tests share: a dashboard served in-process on a
//! loopback port, real echo servers (with gRPC health) registered in the
//! registry under test, and small HTTP and server-sent-events readers.
#![allow(dead_code)] // each test file uses its own share of these helpers

use std::{net::SocketAddr, sync::Arc, time::Duration};

use lodestar::{Instance, Registry};
use lodestar_dashboard::{Config, Dashboard};
use lodestar_echo::{EchoService, echo_server::EchoServer};
use lodestar_test_support::{eventually, http};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};

/// How long a test waits for something the dashboard shows within a
/// second or two.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A dashboard serving on a loopback port; dropping it stops it.
pub struct Served {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Serves a dashboard over `registry`.
pub async fn dashboard(registry: Arc<dyn Registry>, config: Config) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dashboard = Dashboard::new(registry, config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(dashboard.serve(listener, async {
        let _ = stopped.await;
    }));
    Served {
        addr,
        stop: Some(stop),
        task,
    }
}

impl Served {
    /// A dashboard served elsewhere (another process) at `addr`: `stop`
    /// and dropping do nothing to it.
    pub fn at(addr: SocketAddr) -> Served {
        Served {
            addr,
            stop: None,
            task: tokio::spawn(async { Ok(()) }),
        }
    }

    /// `GET path`: status and JSON body (`Null` when not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = http::get(&self.addr.to_string(), path).await.expect("GET");
        (r.status, r.json().unwrap_or(Value::Null))
    }

    /// `GET path` as text.
    pub async fn text(&self, path: &str) -> (u16, String) {
        let r = http::get(&self.addr.to_string(), path).await.expect("GET");
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// `POST path` with a JSON body and, if given, a bearer token.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw),
        )
        .await
        .expect("an answer within 10 s")
        .unwrap();
        let raw = String::from_utf8_lossy(&raw);
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// The ids of `service`'s instances the dashboard shows, with status.
    pub async fn instances(&self, service: &str) -> Vec<(String, String)> {
        let (_, body) = self.get(&format!("/api/services/{service}")).await;
        body["instances"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|i| {
                        (
                            i["id"].as_str().unwrap_or_default().to_string(),
                            i["status"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Opens `/api/events`.
    pub async fn events(&self) -> Events {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "GET /api/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        Events {
            lines: BufReader::new(stream),
        }
    }

    /// Stops serving; the event streams end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the dashboard stops within 10 s with a page open")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An open `/api/events` stream.
pub struct Events {
    lines: BufReader<TcpStream>,
}

impl Events {
    /// The next `change` event matching `pred`, skipping others, within
    /// `PATIENCE`.
    pub async fn next_change(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let read = async {
            let mut kind = String::new();
            loop {
                let mut line = String::new();
                let n = self.lines.read_line(&mut line).await.unwrap();
                assert!(n > 0, "the event stream ended while waiting for {what}");
                let line = line.trim_end();
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_string();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    if kind == "change" {
                        let event: Value = serde_json::from_str(data).unwrap();
                        if pred(&event) {
                            return event;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .unwrap_or_else(|_| panic!("no event {what} within {PATIENCE:?}"))
    }

    /// Reads to the end of the stream, within `within`; whether it ended.
    pub async fn ends_within(&mut self, within: Duration) -> bool {
        let drain = async {
            let mut line = String::new();
            loop {
                line.clear();
                match self.lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(within, drain).await.is_ok()
    }
}

/// A real echo server (with gRPC health) registered as `service`/`id`.
pub struct Echo {
    pub addr: SocketAddr,
    /// Calls it received.
    pub calls: Arc<std::sync::atomic::AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Starts an echo server registered in `registry`.
pub async fn echo(registry: Arc<dyn Registry>, service: &str, id: &str, version: &str) -> Echo {
    use lodestar_tonic::serve;
    let instance = Instance::new(service, id)
        .with_version(version)
        .with_metadata("zone", "z1");
    let registry_for_wait = registry.clone();
    let service_name = service.to_string();
    let bound = serve::Server::builder(registry, instance)
        .listen("127.0.0.1:0".parse().unwrap())
        .propagation_delay(Duration::from_millis(10))
        .drain_timeout(Duration::from_secs(1))
        .bind()
        .await
        .unwrap();
    let addr = bound.local_addr();
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = calls.clone();
    let service =
        EchoServer::with_interceptor(EchoService::new(bound.instance().clone()), move |request| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(request)
        });
    let routes = tonic::service::Routes::new(service);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = bound
            .serve(routes, async {
                let _ = stopped.await;
            })
            .await;
    });
    // The serve helper registers once serving: wait for the record, so a
    // test's next step (a write, a count) does not race the registration.
    let id = id.to_string();
    eventually(
        "the echo server to register",
        Duration::from_secs(10),
        || {
            let registry = registry_for_wait.clone();
            let (service, id) = (service_name.clone(), id.clone());
            async move {
                registry
                    .get(&service)
                    .await
                    .is_ok_and(|s| s.instance(&id).is_some())
            }
        },
    )
    .await;
    Echo {
        addr,
        calls,
        stop: Some(stop),
        task,
    }
}

impl Echo {
    /// Calls received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Releases gracefully: deregistered, then stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}
