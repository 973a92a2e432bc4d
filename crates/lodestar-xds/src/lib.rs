//! An xDS v3 management server over lodestar discovery: gRPC clients in any
//! language (grpc-go, grpc-java, grpcio, C++) resolve `xds:///SERVICE`
//! targets against it and balance on what it sends, with no lodestar code.
//!
//! It serves the Aggregated Discovery Service, state of the world: for each
//! service a client names, a Listener (an `api_listener` whose
//! `HttpConnectionManager` carries the route configuration inline), the
//! Clusters the routes name (EDS over ADS) and their ClusterLoadAssignments,
//! all computed from the service's discovery [`Snapshot`](lodestar::Snapshot)
//! by pure functions ([`plan`], [`resources`]).
//!
//! The pieces, each on those before it:
//!
//! ```text
//! policy     the cluster's load-balancing policy, by lodestar's policy names
//! names      cluster names: a service's lanes (version pin, colour) as strings
//! plan       a snapshot's lanes and routes, as lodestar's balancer resolves them
//! resources  the Envoy messages: Listener, RouteConfiguration, Cluster, ClusterLoadAssignment
//! health     the instances' own gRPC health (NOT_SERVING), probed per watched service
//! hub        one discovery watch per service, shared by every stream, dropped when unused
//! ads        the ADS stream: subscriptions, versions, nonces, ACK and NACK
//! server     the tonic server around it
//! ```
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let registry = Arc::new(lodestar::memory::MemoryRegistry::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:18000").await?;
//! lodestar_xds::Server::new(registry)
//!     .serve(listener, std::future::pending())
//!     .await?;
//! # Ok(()) }
//! ```

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

pub mod ads;
pub mod health;
pub mod hub;
pub mod names;
pub mod plan;
pub mod policy;
pub mod resources;
pub mod server;

pub use policy::Policy;
pub use server::{Server, Stats};
