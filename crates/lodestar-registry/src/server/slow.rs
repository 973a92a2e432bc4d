//! Slow clients: [`HeadDeadline`] cuts off a connection whose request head
//! does not arrive in time, without timing idle keep-alive connections.
//!
//! hyper's own `header_read_timeout` starts when it begins waiting for a
//! head, so it also closes idle keep-alive connections at that age, which
//! discovery's Go clients race (see the [server docs](super)). Here the
//! clock starts at the first byte of a request and stops at the blank line
//! that ends its head: a slowloris client trickling header bytes is cut
//! off, an idle connection waits as long as it likes. The body has its own
//! limit (`Config::body_timeout`, in the handlers).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// An I/O stream whose request heads must arrive within a deadline; see the
/// [module docs](self).
#[derive(Debug)]
pub(crate) struct HeadDeadline<T> {
    inner: T,
    timeout: Duration,
    state: State,
    /// The last bytes of the head read so far, to find `\r\n\r\n` across
    /// reads.
    tail: u32,
    /// Armed while a head is being read.
    deadline: Pin<Box<Sleep>>,
}

/// Where the connection is in its request/response cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between requests: nothing timed.
    Idle,
    /// A head has started and not ended: timed.
    Head,
    /// The head has ended; the body and the answer are the handlers'.
    Rest,
}

/// The four bytes that end a head, as a big-endian word.
const HEAD_END: u32 = u32::from_be_bytes(*b"\r\n\r\n");

// === impl HeadDeadline ===

impl<T> HeadDeadline<T> {
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            state: State::Idle,
            tail: 0,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Follows the head through bytes just read.
    fn saw(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match self.state {
                State::Idle => {
                    self.state = State::Head;
                    self.tail = u32::from(byte);
                    let at = Instant::now() + self.timeout;
                    self.deadline.as_mut().reset(at);
                }
                State::Head => {
                    self.tail = (self.tail << 8) | u32::from(byte);
                    if self.tail == HEAD_END {
                        self.state = State::Rest;
                    }
                }
                State::Rest => return,
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let this = &mut *self;
                this.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.state == State::Head => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("request head not received within {:?}", self.timeout),
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The server writes only once a head has been read: what comes next
        // is a new request (or a body after `100 Continue`, which the
        // handlers time).
        self.state = State::Idle;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test(start_paused = true)]
    async fn a_trickled_head_is_cut_off_at_the_deadline() {
        let (mut client, server) = duplex(1024);
        let mut server = HeadDeadline::new(server, Duration::from_secs(10));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(server.read(&mut buf).await.unwrap() > 0);
        let started = Instant::now();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_and_slow_answers_are_not_timed() {
        let (mut client, server) = duplex(1024);
        let mut server = HeadDeadline::new(server, Duration::from_secs(10));
        let mut buf = [0u8; 64];
        // Idle: nothing for a minute, then a whole head.
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 17);
        client.write_all(b"\n").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        // The head has ended: a long poll held a minute is not cut off.
        let read = tokio::time::timeout(Duration::from_secs(60), server.read(&mut buf)).await;
        assert!(read.is_err(), "still waiting, not failed: {read:?}");
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        // Idle again after the answer.
        let read = tokio::time::timeout(Duration::from_secs(60), server.read(&mut buf)).await;
        assert!(read.is_err());
    }
}
