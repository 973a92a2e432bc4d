//! A loopback TCP proxy that cuts the network without killing etcd.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// A TCP proxy on `127.0.0.1` forwarding every connection to one target,
/// which can cut the network on demand.
///
/// Point a client at [`addr`](Self::addr) instead of the server; then
/// [`cut`](Self::cut) closes every proxied connection at once and closes new
/// ones right after accepting them, until [`restore`](Self::restore). The
/// server keeps running, so this models a partition or a dead load
/// balancer rather than a crash.
///
/// [`blackhole`](Self::blackhole) is the other kind of cut: connections stay
/// open and new ones are accepted, but nothing is forwarded either way (what
/// was read is held) until [`restore`](Self::restore), when the held bytes
/// go on. Neither side sees a reset or an EOF: calls hang until their own
/// timeouts, as behind a dropped route or a silent firewall.
///
/// Dropping the proxy stops its accept loop and every connection task.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() {
/// use lodestar_test_support::{EtcdNode, TcpProxy};
///
/// let etcd = EtcdNode::start().await;
/// let proxy = TcpProxy::start(etcd.client_addr()).await;
/// let url = format!("etcd://{}", proxy.addr());
/// proxy.cut(); // clients on `url` lose their connections
/// proxy.restore();
/// # }
/// ```
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: AbortHandle,
    /// Whether connections are blackholed; see [`TcpProxy::blackhole`].
    hole: watch::Sender<bool>,
}

/// State the accept loop shares with [`TcpProxy`].
///
/// One lock covers both fields so a connection accepted while `cut` runs is
/// either aborted by it or refused, never missed.
#[derive(Debug, Default)]
struct Shared(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    cut: bool,
    conns: Vec<AbortHandle>,
}

// === impl TcpProxy ===

impl TcpProxy {
    /// Starts a proxy to `target` (`host:port`) on a free loopback port.
    ///
    /// # Panics
    ///
    /// Panics if the loopback interface refuses a bind.
    pub async fn start(target: String) -> TcpProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap_or_else(|e| panic!("binding the proxy on 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("reading the proxy's address: {e}"));
        let shared = Arc::new(Shared::default());
        let (hole, holes) = watch::channel(false);
        let accept =
            tokio::spawn(accept_loop(listener, target, shared.clone(), holes)).abort_handle();
        TcpProxy {
            addr,
            shared,
            accept,
            hole,
        }
    }

    /// The proxy's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Closes every live proxied connection, and closes new connections
    /// right after accepting them until [`restore`](Self::restore).
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.cut = true;
        state.conns.drain(..).for_each(|conn| conn.abort());
    }

    /// Stops forwarding without closing anything: live and new
    /// connections stay open and silent until [`restore`](Self::restore).
    pub fn blackhole(&self) {
        self.hole.send_replace(true);
    }

    /// Proxies new connections again after a [`cut`](Self::cut), and lets
    /// blackholed connections forward again, held bytes first.
    pub fn restore(&self) {
        self.shared.lock().cut = false;
        self.hole.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared
            .lock()
            .conns
            .drain(..)
            .for_each(|conn| conn.abort());
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock is never held across a panic point that matters; a
        // poisoned state is still consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts until aborted by [`TcpProxy`]'s drop.
async fn accept_loop(
    listener: TcpListener,
    target: String,
    shared: Arc<Shared>,
    holes: watch::Receiver<bool>,
) {
    let target: Arc<str> = target.into();
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Transient (e.g. out of file descriptors): keep serving.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let mut state = shared.lock();
        if state.cut {
            drop(inbound);
            continue;
        }
        state.conns.retain(|conn| !conn.is_finished());
        let conn = tokio::spawn(forward(inbound, target.clone(), holes.clone()));
        state.conns.push(conn.abort_handle());
    }
}

/// Copies both ways until either side closes, holding bytes while
/// blackholed; aborting it closes both.
async fn forward(inbound: TcpStream, target: Arc<str>, holes: watch::Receiver<bool>) {
    let Ok(outbound) = TcpStream::connect(&*target).await else {
        tracing::debug!(%target, "proxy target refused a connection");
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let up = pump(&mut in_read, &mut out_write, holes.clone());
    let down = pump(&mut out_read, &mut in_write, holes);
    // Either direction ending (EOF or error) ends the connection.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Copies `from` to `to` until EOF or an error, writing nothing while
/// blackholed.
async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    mut holes: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if holes.wait_for(|hole| !hole).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Blackholed while waiting: stop reading until restored.
            _ = holes.wait_for(|hole| *hole) => continue,
        };
        if holes.wait_for(|hole| !hole).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
