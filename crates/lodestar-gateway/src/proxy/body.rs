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

use std::{future::Future, time::Duration};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use lodestar::balance::Pick;
use tokio::time::Sleep;

use crate::BoxError;

/// The client's request body, shared by the tries of one request.
#[derive(Debug)]
pub(crate) struct Slot {
    body: Mutex<Option<Limited<Incoming>>>,
    hint: SizeHint,
    empty: bool,
    read: AtomicBool,
    over_limit: AtomicBool,
    /// The client's body ended (or broke): nothing more to wait for.
    done: AtomicBool,
    /// The client's body broke (the client went away or sent garbage).
    broken: AtomicBool,
    /// The client paused longer than `idle` between two pieces of its body.
    stalled: AtomicBool,
    idle: Duration,
}

/// One try's view of the request body: takes it from the [`Slot`] when the
/// connection first reads it.
#[derive(Debug)]
pub(crate) struct Outgoing {
    slot: Arc<Slot>,
    body: Option<Limited<Incoming>>,
    /// When the client's next piece of body is due.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// A backend's response body; completes its pick at the end.
#[derive(Debug)]
pub(crate) struct Tracked {
    inner: Incoming,
    pick: Option<Pick>,
    grpc: bool,
    /// The request's body: if the client broke it, a broken response is
    /// not the instance's fault.
    slot: Arc<Slot>,
}

// === impl Slot ===

impl Slot {
    /// Holds `body`, cut off with an error beyond `limit` bytes or when the
    /// client pauses longer than `idle` between two pieces of it.
    pub(crate) fn new(body: Incoming, limit: usize, idle: Duration) -> Arc<Self> {
        let hint = body.size_hint();
        let empty = body.is_end_stream();
        Arc::new(Self {
            body: Mutex::new(Some(Limited::new(body, limit))),
            hint,
            empty,
            read: AtomicBool::new(false),
            over_limit: AtomicBool::new(false),
            done: AtomicBool::new(empty),
            broken: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            idle,
        })
    }

    /// A try's body.
    pub(crate) fn outgoing(self: &Arc<Self>) -> Outgoing {
        Outgoing {
            slot: self.clone(),
            body: None,
            deadline: None,
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

    /// Whether the client is still sending a body the instance started
    /// reading: a try that times out then waits on the client, not on the
    /// instance.
    pub(crate) fn client_sending(&self) -> bool {
        self.read.load(Ordering::Acquire) && !self.done.load(Ordering::Acquire)
    }

    /// Whether the client stalled while sending its body.
    pub(crate) fn client_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Whether the client's body broke: a try failed by the client's fault.
    pub(crate) fn client_broke(&self) -> bool {
        self.broken.load(Ordering::Acquire)
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
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        let Poll::Ready(frame) = polled else {
            let idle = this.slot.idle;
            let deadline = this
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
            if deadline.as_mut().poll(cx).is_ready() {
                this.slot.stalled.store(true, Ordering::Release);
                this.slot.broken.store(true, Ordering::Release);
                this.slot.done.store(true, Ordering::Release);
                return Poll::Ready(Some(Err("the client stalled sending its body".into())));
            }
            return Poll::Pending;
        };
        // The next piece gets its own interval.
        this.deadline = None;
        match &frame {
            Some(Ok(_)) => {}
            None => self.slot.done.store(true, Ordering::Release),
            Some(Err(e)) => {
                if e.is::<LengthLimitError>() {
                    self.slot.over_limit.store(true, Ordering::Release);
                }
                self.slot.broken.store(true, Ordering::Release);
                self.slot.done.store(true, Ordering::Release);
            }
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
    pub(crate) fn new(inner: Incoming, pick: Option<Pick>, grpc: bool, slot: Arc<Slot>) -> Self {
        Self {
            inner,
            pick,
            grpc,
            slot,
        }
    }

    fn complete(&mut self, ok: bool) {
        let Some(pick) = self.pick.take() else {
            return;
        };
        if ok {
            pick.success();
        } else if self.slot.client_broke() {
            drop(pick); // cancelled: the client's doing
        } else {
            pick.failure();
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
