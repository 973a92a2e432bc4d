//! Thread per core: the proxy served by `n` threads, each a single-threaded
//! tokio runtime accepting on its own `SO_REUSEPORT` socket bound to the
//! same address, as nginx runs one worker process per core. The kernel
//! spreads new connections over the sockets; a connection, its requests and
//! the pooled backend connections they use stay on one thread, so a request
//! costs no cross-thread wake-up. Discovery, reloads and the admin listener
//! stay on the caller's runtime; every worker shares the [`Gateway`].

use std::{future::Future, io, net::SocketAddr, thread};

use tokio::{net::TcpSocket, sync::watch};

use crate::Gateway;

/// Pending connections each worker's socket queues.
const BACKLOG: u32 = 1024;

/// The sockets of [`Gateway::serve_workers`], bound (so the address is
/// known, port 0 included) but not yet listening.
#[derive(Debug)]
pub struct Listeners {
    sockets: Vec<TcpSocket>,
    addr: SocketAddr,
}

// === impl Listeners ===

impl Listeners {
    /// Binds `workers` sockets (at least one) to `addr` with
    /// `SO_REUSEPORT`; with port 0, all to the port the first one got.
    pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Self> {
        let first = socket(addr)?;
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers.max(1) {
            sockets.push(socket(addr)?);
        }
        Ok(Self { sockets, addr })
    }

    /// The address every worker accepts on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many workers will serve.
    pub fn workers(&self) -> usize {
        self.sockets.len()
    }
}

fn socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

// === impl Gateway ===

impl Gateway {
    /// Serves the proxy on `listeners`, one thread and single-threaded
    /// runtime per socket, until `shutdown` resolves; then every worker
    /// stops accepting and drains its requests in flight (as
    /// [`serve`](Gateway::serve) does), and this returns when all have.
    /// Call it from a tokio runtime: the gateway's discovery watches run
    /// there.
    pub async fn serve_workers(
        &self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let (done_tx, mut done) = tokio::sync::mpsc::channel::<io::Result<()>>(1);
        let workers = listeners.sockets.len();
        for (i, socket) in listeners.sockets.into_iter().enumerate() {
            let gateway = self.clone();
            let mut stopped = stopped.clone();
            let done = done_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("gateway-{i}"))
                .spawn(move || {
                    let served = worker(gateway, socket, async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    });
                    let _ = done.blocking_send(served);
                });
            if let Err(error) = spawned {
                let _ = stop.send(true);
                return Err(error);
            }
        }
        drop(done_tx);
        tokio::pin!(shutdown);
        let mut first_error = None;
        let mut finished = 0;
        tokio::select! {
            () = &mut shutdown => {}
            // A worker that ends before the shutdown could not serve.
            Some(result) = done.recv() => {
                finished += 1;
                first_error = result.err();
            }
        }
        let _ = stop.send(true);
        while finished < workers {
            match done.recv().await {
                Some(result) => {
                    finished += 1;
                    if let Err(error) = result {
                        first_error.get_or_insert(error);
                    }
                }
                None => break,
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// One worker: its runtime, its socket listening, the proxy on it.
fn worker(
    gateway: Gateway,
    socket: TcpSocket,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = socket.listen(BACKLOG)?;
        gateway.serve(listener, shutdown).await;
        Ok(())
    })
}
