//! The HTTP client shared by the client backend and by peer replication:
//! hyper's pooled client, one discovery [`Reply`] per exchange.

use std::time::Duration;

use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{Token, wire::Reply};

/// Largest answer read (a `fetch/all` of a big registry).
const MAX_ANSWER: usize = 256 * 1024 * 1024;

/// A pooled HTTP/1 client; cheap to clone. With a token, every request
/// carries it as `Authorization: Bearer`.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    token: Option<Token>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No answer: connection refused or reset, a bad address.
    #[error("{0}")]
    Transport(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An HTTP error status (503 while a node warms up).
    #[error("HTTP {status}: {message}")]
    Status {
        /// The status code.
        status: u16,
        /// The reply's message, or the body.
        message: String,
    },
    /// A success status but not a discovery reply.
    #[error("not a discovery reply: {0}")]
    Malformed(String),
}

// === impl HttpClient ===

impl HttpClient {
    pub(crate) fn new(token: Option<Token>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { inner, token }
    }

    /// `GET http://{addr}{path_and_query}`.
    pub(crate) async fn get(
        &self,
        addr: &str,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let request = self.build(Method::GET, addr, path_and_query, String::new())?;
        self.send(request, timeout).await
    }

    /// `POST http://{addr}{path}` with a form body.
    pub(crate) async fn post(
        &self,
        addr: &str,
        path: &str,
        form: String,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let request = self.build(Method::POST, addr, path, form)?;
        self.send(request, timeout).await
    }

    fn build(
        &self,
        method: Method,
        addr: &str,
        path: &str,
        body: String,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Transport(format!("bad address {addr:?}: {e}")))
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let exchange = async {
            let response = self.inner.request(request).await.map_err(transport)?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?
                .to_bytes();
            Ok::<_, CallError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout(timeout))??;
        let reply = serde_json::from_slice::<Reply>(&body);
        match reply {
            Ok(reply) if status.is_success() => Ok(reply),
            Ok(reply) => Err(status_error(status, reply.message)),
            Err(_) if !status.is_success() => Err(status_error(
                status,
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            )),
            Err(e) => Err(CallError::Malformed(e.to_string())),
        }
    }
}

fn status_error(status: StatusCode, message: String) -> CallError {
    CallError::Status {
        status: status.as_u16(),
        message,
    }
}

/// hyper's errors print "client error (Connect)"; the root cause says what
/// happened ("Connection refused").
fn transport(e: hyper_util::client::legacy::Error) -> CallError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    CallError::Transport(text)
}
