//! gRPC pass-through: requests with `content-type: application/grpc` go to
//! the instances' `grpc://` endpoints over HTTP/2 (prior knowledge), and
//! their bodies and trailers stream back untouched. The gateway's own
//! errors are gRPC statuses in trailers-only responses (HTTP 200,
//! `grpc-status`, `grpc-message`), never HTML.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::{Body, proxy::empty};

/// `grpc-status` codes the gateway answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 3.
    InvalidArgument = 3,
    /// 4.
    DeadlineExceeded = 4,
    /// 8.
    ResourceExhausted = 8,
    /// 12.
    Unimplemented = 12,
    /// 13.
    Internal = 13,
    /// 14.
    Unavailable = 14,
}

/// Whether the request is gRPC.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Whether trailers (or a trailers-only head) carry a status that counts
/// against the instance: UNAVAILABLE, INTERNAL, UNKNOWN (as the tonic
/// channel counts them).
pub(crate) fn is_failure(trailers: &HeaderMap) -> bool {
    matches!(
        trailers.get("grpc-status").map(HeaderValue::as_bytes),
        Some(b"14" | b"13" | b"2")
    )
}

/// The gRPC status for an HTTP status the gateway would have answered.
pub fn code_for(status: StatusCode) -> Code {
    match status.as_u16() {
        404 => Code::Unimplemented,
        408 | 504 => Code::DeadlineExceeded,
        413 | 429 => Code::ResourceExhausted,
        400 | 431 => Code::InvalidArgument,
        502 | 503 => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// A trailers-only response carrying `code` and `message`.
pub fn trailers_only(code: Code, message: &str) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code as u16));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
    response
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_trailers_only_statuses() {
        let response = trailers_only(
            code_for(StatusCode::SERVICE_UNAVAILABLE),
            "no instance of echo — now",
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(
            response.headers()["grpc-message"],
            "no instance of echo %E2%80%94 now"
        );
        assert_eq!(code_for(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(
            code_for(StatusCode::GATEWAY_TIMEOUT),
            Code::DeadlineExceeded
        );
    }
}
