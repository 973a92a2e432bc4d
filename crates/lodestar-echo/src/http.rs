//! The HTTP echo: a test backend for the gateway and the CLI's `serve-echo
//! --http-listen`.
//!
//! - `GET` (any path): a JSON object naming the `instance`, `service`,
//!   `version` and `color` that answered, the `method`, `path` and `query`
//!   it saw, and every request `headers` (a name seen several times keeps
//!   its values comma-joined), so a test checks what a proxy forwarded;
//! - `POST`/`PUT` (any path but those below): the request body streamed back
//!   as it arrives, never held whole, with `x-echo-instance` naming the
//!   instance;
//! - `POST /sink`: reads the whole body first, then answers the JSON with
//!   the number of bytes `received` (an application that buffers);
//! - `/status/NNN`: answers status `NNN` (the JSON as body);
//! - `/delay/MS`: answers after `MS` milliseconds;
//! - `/ws` with a WebSocket upgrade: echoes every text and binary message.
//!
//! [`Server::serve`] runs until its shutdown future resolves, then stops
//! accepting and lets the requests in flight finish, up to a drain timeout.
//!
//! # Examples
//!
//! ```
//! use lodestar::Instance;
//! use lodestar_echo::http::Server;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = Server::new(Instance::new("web", "web-1"));
//! // Stops at once here; a real server passes its shutdown signal.
//! server.serve(listener, async {}).await;
//! # Ok(())
//! # }
//! ```

use std::{collections::BTreeMap, convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use lodestar::Instance;
use tokio::net::TcpListener;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};

/// The echo's response body: JSON, or the request body streamed back.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The header naming the instance on streamed answers.
pub const INSTANCE_HEADER: &str = "x-echo-instance";

/// The HTTP echo of one instance; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Server {
    instance: Arc<Instance>,
    delay: Duration,
    drain_timeout: Duration,
}

// === impl Server ===

impl Server {
    /// Answers as `instance`, with no added latency and a 10 s drain.
    pub fn new(instance: Instance) -> Self {
        Self {
            instance: Arc::new(instance),
            delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// Adds this latency to every answer.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// How long requests in flight may take to finish after shutdown.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Serves connections from `listener` (HTTP/1.1 and HTTP/2) until
    /// `shutdown` resolves; then stops accepting, closes idle connections
    /// and waits for the requests in flight, at most the drain timeout.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    // Out of descriptors and the like: wait, don't spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let service = service_fn(move |request| this.clone().answer(request));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        drop(listener);
        let _ = tokio::time::timeout(self.drain_timeout, graceful.shutdown()).await;
    }

    async fn answer(self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let path = request.uri().path().to_string();
        if path == "/ws" && is_websocket(&request) {
            return Ok(websocket(request));
        }
        if let Some(code) = path.strip_prefix("/status/") {
            let status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            return Ok(self.json(&request, status));
        }
        if let Some(ms) = path.strip_prefix("/delay/") {
            let Ok(ms) = ms.parse::<u64>() else {
                return Ok(self.json(&request, StatusCode::BAD_REQUEST));
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return Ok(self.json(&request, StatusCode::OK));
        }
        if path == "/sink" && request.method() == hyper::Method::POST {
            return Ok(self.sink(request).await);
        }
        if request.method() == hyper::Method::POST || request.method() == hyper::Method::PUT {
            return Ok(self.stream_back(request));
        }
        Ok(self.json(&request, StatusCode::OK))
    }

    /// The JSON description of what came in.
    fn json<B>(&self, request: &Request<B>, status: StatusCode) -> Response<Body> {
        let mut headers = BTreeMap::<String, String>::new();
        for (name, value) in request.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_string())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let body = serde_json::json!({
            "instance": self.instance.id,
            "service": self.instance.service,
            "version": self.instance.version,
            "color": self.instance.color().unwrap_or_default(),
            "method": request.method().as_str(),
            "path": request.uri().path(),
            "query": request.uri().query().unwrap_or_default(),
            "headers": headers,
        });
        let mut response = Response::new(full(body.to_string()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.name(&mut response);
        response
    }

    /// Reads the body to its end, then answers how much came.
    async fn sink(&self, request: Request<Incoming>) -> Response<Body> {
        let (head, mut body) = request.into_parts();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    received += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                Err(_) => {
                    let mut response = Response::new(full("the request body broke"));
                    *response.status_mut() = StatusCode::BAD_REQUEST;
                    return response;
                }
            }
        }
        let request = Request::from_parts(head, ());
        let mut response = self.json(&request, StatusCode::OK);
        let body = serde_json::json!({"instance": self.instance.id, "received": received});
        *response.body_mut() = full(body.to_string());
        response
    }

    /// The request body, streamed back frame by frame.
    fn stream_back(&self, request: Request<Incoming>) -> Response<Body> {
        let mut response = Response::new(request.into_body().boxed());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        self.name(&mut response);
        response
    }

    fn name(&self, response: &mut Response<Body>) {
        if let Ok(value) = HeaderValue::from_str(&self.instance.id) {
            response.headers_mut().insert(INSTANCE_HEADER, value);
        }
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn is_websocket<B>(request: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// Accepts the upgrade and echoes messages on the upgraded connection.
fn websocket(mut request: Request<Incoming>) -> Response<Body> {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        let mut response = Response::new(full("missing sec-websocket-key"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let stream =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (mut tx, mut rx) = stream.split();
        while let Some(Ok(message)) = rx.next().await {
            let reply = match message {
                Message::Text(_) | Message::Binary(_) => message,
                Message::Close(_) => break,
                _ => continue,
            };
            if tx.send(reply).await.is_err() {
                break;
            }
        }
        let _ = tx.close().await;
    });
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request on a fresh connection, read to the end.
    async fn exchange(addr: std::net::SocketAddr, raw: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn json_status_delay_and_streamed_echo() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let instance = Instance::new("web", "web-1")
            .with_version("v2")
            .with_metadata("color", "blue");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(Server::new(instance).serve(listener, async {
            let _ = stopped.await;
        }));

        let answer = exchange(
            addr,
            "GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-Seen: 1\r\nX-Seen: 2\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["instance"], "web-1");
        assert_eq!(json["version"], "v2");
        assert_eq!(json["color"], "blue");
        assert_eq!(json["path"], "/a/b");
        assert_eq!(json["query"], "x=1");
        assert_eq!(json["headers"]["x-seen"], "1, 2");

        let answer = exchange(
            addr,
            "GET /status/418 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 418"), "{answer}");
        let answer = exchange(
            addr,
            "GET /status/abc HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

        let started = std::time::Instant::now();
        let answer = exchange(
            addr,
            "GET /delay/200 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(started.elapsed() >= Duration::from_millis(200));

        let answer = exchange(
            addr,
            "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world",
        )
        .await;
        assert!(answer.contains("x-echo-instance: web-1"), "{answer}");
        assert!(answer.ends_with("hello world"), "{answer}");

        let _ = stop.send(());
        server.await.unwrap();
    }
}
