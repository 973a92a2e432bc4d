//! Reports each call's outcome to the balancer when its response ends.
//!
//! A gRPC status arrives in the trailers (or, for a trailers-only response,
//! in the headers), so the pick is held by the response body and completed
//! when the body ends: as a success, or as a failure when the status says
//! the server could not serve (UNAVAILABLE, INTERNAL, UNKNOWN, or an HTTP
//! error). Application errors (NOT_FOUND, ...) are the server working.
//! A body dropped before its end is a cancelled call: no outcome.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::{Bytes, Incoming};
use lodestar::balance::Pick;
use tonic::body::Body;

/// The response body, holding the pick until the call is over.
struct Recorded {
    inner: Incoming,
    pick: Option<Pick>,
}

/// Wraps `response` so that `pick` completes with the call.
pub(super) fn record(response: Response<Incoming>, pick: Pick) -> Response<Body> {
    let (parts, inner) = response.into_parts();
    let mut pick = Some(pick);
    if !parts.status.is_success() {
        finish(&mut pick, false);
    } else if let Some(ok) = grpc_ok(&parts.headers) {
        // A trailers-only response: the status is final already.
        finish(&mut pick, ok);
    }
    Response::from_parts(parts, Body::new(Recorded { inner, pick }))
}

fn finish(pick: &mut Option<Pick>, ok: bool) {
    if let Some(pick) = pick.take() {
        if ok { pick.success() } else { pick.failure() }
    }
}

/// Whether the `grpc-status` in `headers` says the server served; `None`
/// when there is none.
fn grpc_ok(headers: &HeaderMap) -> Option<bool> {
    let code: i32 = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let failed = [
        tonic::Code::Unavailable,
        tonic::Code::Internal,
        tonic::Code::Unknown,
    ]
    .map(|c| c as i32)
    .contains(&code);
    Some(!failed)
}

impl HttpBody for Recorded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let ok = grpc_ok(trailers).unwrap_or(true);
                    finish(&mut self.pick, ok);
                }
            }
            Some(Err(_)) => finish(&mut self.pick, false),
            None => finish(&mut self.pick, true),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
