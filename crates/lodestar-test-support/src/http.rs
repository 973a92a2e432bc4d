//! A tiny HTTP/1.1 client for talking to etcd's `/health` endpoint and its
//! JSON gRPC gateway (`/v3/...`), so the harness needs no etcd client crate.
//!
//! Each request opens a fresh connection and sends `Connection: close`, so
//! the response ends at EOF. The whole exchange is bounded by
//! [`REQUEST_TIMEOUT`].
//!
//! The gateway of etcd 3.4 encodes 64-bit integers (revisions, member ids)
//! as JSON *strings*, and keys and values as base64.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lodestar_test_support::{http, EtcdNode};
//!
//! let etcd = EtcdNode::start().await;
//! let status = http::post_json(&etcd.client_addr(), "/v3/maintenance/status", &serde_json::json!({})).await?;
//! assert_eq!(status.status, 200);
//! let leader = status.json()?["leader"].as_str().map(str::to_owned);
//! # Ok(()) }
//! ```

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound on one request: connect, send and read the whole response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A response: status code and (de-chunked) body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, with any chunked transfer encoding removed.
    pub body: Vec<u8>,
}

/// Sends `GET path` to `addr` (`host:port`).
pub async fn get(addr: &str, path: &str) -> io::Result<Response> {
    request(addr, "GET", path, b"").await
}

/// Sends `POST path` with a JSON body to `addr` (`host:port`).
pub async fn post_json(addr: &str, path: &str, body: &serde_json::Value) -> io::Result<Response> {
    request(addr, "POST", path, body.to_string().as_bytes()).await
}

/// Sends one request on a fresh connection and reads the response to EOF.
pub async fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(addr, method, path, body))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "HTTP request timed out"))?
}

// === impl Response ===

impl Response {
    /// Parses the body as JSON.
    pub fn json(&self) -> io::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| invalid(format!("body is not JSON: {e}")))
    }

    fn parse(raw: &[u8]) -> io::Result<Self> {
        let split = find(raw, b"\r\n\r\n").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a full response",
            )
        })?;
        let head = std::str::from_utf8(&raw[..split]).map_err(|_| invalid("non-UTF-8 header"))?;
        let body = &raw[split + 4..];
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid("malformed status line"))?;
        let mut chunked = false;
        let mut length = None;
        for (name, value) in lines.filter_map(|l| l.split_once(':')) {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            }
        }
        let body = match (chunked, length) {
            (true, _) => dechunk(body)?,
            (false, Some(n)) if n <= body.len() => body[..n].to_vec(),
            (false, Some(_)) => return Err(invalid("body shorter than Content-Length")),
            (false, None) => body.to_vec(),
        };
        Ok(Self { status, body })
    }
}

async fn exchange(addr: &str, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    Response::parse(&raw)
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or_else(|| invalid("truncated chunk size"))?;
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or_else(|| invalid("malformed chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or_else(|| invalid("truncated chunk"))?;
        out.extend_from_slice(chunk);
        data = data
            .get(size + 2..)
            .ok_or_else(|| invalid("truncated chunk"))?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let rsp = Response::parse(raw).unwrap();
        assert_eq!(
            rsp,
            Response {
                status: 200,
                body: b"hello".to_vec()
            }
        );
    }

    #[test]
    fn parses_chunked_body() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n";
        let rsp = Response::parse(raw).unwrap();
        assert_eq!(rsp.status, 503);
        assert_eq!(rsp.json().unwrap(), serde_json::json!({ "a": 1 }));
    }

    #[test]
    fn empty_reply_is_unexpected_eof() {
        let err = Response::parse(b"").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
