//! Free loopback ports.

use std::net::{Ipv4Addr, TcpListener};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and closing the socket, so
/// another process may take it before the caller binds it; the etcd
/// harness retries with new ports when that happens.
///
/// # Panics
///
/// Panics if the loopback interface refuses a bind.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Returns `n` distinct free loopback ports.
///
/// All listeners stay open until every port is chosen, so the kernel cannot
/// hand out the same port twice.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap_or_else(|e| panic!("binding 127.0.0.1:0 for a free port: {e}"))
        })
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .unwrap_or_else(|e| panic!("reading a bound port: {e}"))
                .port()
        })
        .collect()
}
