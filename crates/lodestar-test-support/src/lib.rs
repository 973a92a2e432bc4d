//! Test harness for lodestar: real etcd processes, and faults to inject
//! into them.
//!
//! Integration tests run against the real thing. This crate starts etcd
//! (3.4+) servers on free loopback ports, each with its own scratch data
//! dir, and tears them down on drop:
//!
//! - [`EtcdNode`]: a single-node etcd you can [`kill`](EtcdNode::kill),
//!   [`restart`](EtcdNode::restart) with its data, or
//!   [`restart_empty`](EtcdNode::restart_empty) with none.
//! - [`EtcdCluster`]: several members, for leader loss and member restarts.
//! - [`TcpProxy`]: cuts (closes) or blackholes (holds open, forwards
//!   nothing) and restores the network between a client and a server that
//!   keeps running.
//! - [`Process`]: a child process (e.g. [`lodestar_binary`]) killed on
//!   drop, which can be frozen with SIGSTOP and thawed; [`signal`] does the
//!   same to any pid (an [`EtcdNode::pid`]).
//! - [`eventually`]: bounded polling for what becomes true asynchronously.
//! - [`http`]: a tiny client for etcd's `/health` and JSON gateway, so the
//!   harness needs no etcd client crate.
//! - [`bench`](mod@bench): the machine-readable figures benches append for
//!   `cargo xtask bench`'s report.
//! - [`conformance`]: the backend conformance suite, what every registry
//!   backend must do, run by each backend's tests through
//!   [`conformance_suite!`].
//!
//! etcd is found by [`etcd_binary`]; when it is missing every test that
//! needs it panics with instructions, rather than skipping silently.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use lodestar_test_support::{eventually, EtcdNode};
//!
//! #[tokio::test]
//! async fn survives_an_etcd_restart() {
//!     let mut etcd = EtcdNode::start().await;
//!     let url = etcd.url(); // hand this to the code under test
//!     etcd.kill();
//!     etcd.restart().await;
//!     eventually("etcd to serve again", Duration::from_secs(5), || etcd.is_healthy()).await;
//! }
//! ```

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

pub mod bench;
mod binary;
mod cluster;
pub mod conformance;
mod eventually;
pub mod http;
mod node;
mod port;
mod process;
mod proxy;
pub mod slowloris;

pub use self::binary::etcd_binary;
pub use self::cluster::EtcdCluster;
pub use self::eventually::eventually;
pub use self::node::EtcdNode;
pub use self::port::free_port;
pub use self::process::{Process, grpcio_python, lodestar_binary, signal};
pub use self::proxy::TcpProxy;
