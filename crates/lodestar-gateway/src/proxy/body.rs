//! The bodies the proxy streams: [`Outgoing`], the client's request body on
//! its way to a backend (kept unread until a try sends it, so a try that
//! never sent it can give it to the next), and [`Tracked`], a backend's
//! response body on its way to the client, which completes the balancer's
//! [`Pick`] when it ends.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use lodestar::balance::Pick;

use crate::BoxError;

/// The client's request body, shared by the tries of one request.
#[derive(Debug)]
pub(crate) struct Slot {
    body: Mutex<Option<Limited<Incoming>>>,
    hint: SizeHint,
    empty: bool,
    read: AtomicBool,
    over_limit: AtomicBool,
}

/// One try's view of the request body: takes it from the [`Slot`] when the
/// connection first reads it.
#[derive(Debug)]
pub(crate) struct Outgoing {
    slot: Arc<Slot>,
    body: Option<Limited<Incoming>>,
}

/// A backend's response body; completes its pick at the end.
#[derive(Debug)]
pub(crate) struct Tracked {
    inner: Incoming,
    pick: Option<Pick>,
    grpc: bool,
}

// === impl Slot ===

impl Slot {
    /// Holds `body`, cut off with an error beyond `limit` bytes.
    pub(crate) fn new(body: Incoming, limit: usize) -> Arc<Self> {
        let hint = body.size_hint();
        let empty = body.is_end_stream();
        Arc::new(Self {
            body: Mutex::new(Some(Limited::new(body, limit))),
            hint,
            empty,
            read: AtomicBool::new(false),
            over_limit: AtomicBool::new(false),
        })
    }

    /// A try's body.
    pub(crate) fn outgoing(self: &Arc<Self>) -> Outgoing {
        Outgoing {
            slot: self.clone(),
            body: None,
        }
    }

    /// Whether another try can send the body: it is empty or was never read.
    pub(crate) fn replayable(&self) -> bool {
        self.empty || !self.read.load(Ordering::Acquire)
    }

    /// Whether a non-empty body was never read by a connection.
    pub(crate) fn unread(&self) -> bool {
        !self.empty && !self.read.load(Ordering::Acquire)
    }

    /// Whether the body went past its limit.
    pub(crate) fn over_limit(&self) -> bool {
        self.over_limit.load(Ordering::Acquire)
    }
}

// === impl Outgoing ===

impl Body for Outgoing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.slot.empty {
            return Poll::Ready(None);
        }
        if self.body.is_none() {
            self.slot.read.store(true, Ordering::Release);
            let taken = self
                .slot
                .body
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let Some(body) = taken else {
                return Poll::Ready(Some(Err("the request body was already sent".into())));
            };
            self.body = Some(body);
        }
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if let Some(Err(e)) = &frame
            && e.is::<LengthLimitError>()
        {
            self.slot.over_limit.store(true, Ordering::Release);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.slot.empty
    }

    fn size_hint(&self) -> SizeHint {
        self.slot.hint
    }
}

// === impl Tracked ===

impl Tracked {
    /// Completes `pick` when `inner` ends: a failure if it breaks, or (for
    /// gRPC) ends with a status that says the instance is unwell.
    pub(crate) fn new(inner: Incoming, pick: Option<Pick>, grpc: bool) -> Self {
        Self { inner, pick, grpc }
    }

    fn complete(&mut self, ok: bool) {
        if let Some(pick) = self.pick.take() {
            if ok { pick.success() } else { pick.failure() }
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if self.grpc
                    && let Some(trailers) = frame.trailers_ref()
                {
                    let ok = !crate::grpc::is_failure(trailers);
                    self.complete(ok);
                }
            }
            Some(Err(_)) => self.complete(false),
            None => self.complete(true),
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
