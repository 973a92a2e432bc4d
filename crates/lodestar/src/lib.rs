//! lodestar: service registration, discovery and client-side load balancing
//! for Rust gRPC (tonic) and HTTP services.
//!
//! This crate is the vocabulary every other lodestar crate speaks:
//!
//! - [`Instance`] and [`Endpoint`]: the record a server announces;
//! - [`Registrar`] and [`Registration`]: announcing an instance and keeping it
//!   alive under a lease or renew heartbeat;
//! - [`Discovery`], [`Watch`] and [`Snapshot`]: following every instance of a
//!   service as whole snapshots, latest-wins;
//! - [`memory::MemoryRegistry`]: an in-process backend for tests and demos.
//!
//! Backends live in their own crates (`lodestar-etcd`, the built-in registry)
//! and implement the two traits; everything above them never knows which
//! backend it talks to.
//!
//! # Examples
//!
//! ```
//! use lodestar::{memory::MemoryRegistry, Discovery, Instance, Registrar};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lodestar::Error> {
//! let registry = MemoryRegistry::new();
//! let mut watch = registry.watch("echo").await?;
//! assert!(watch.latest().is_empty());
//!
//! let instance = Instance::new("echo", "echo-1")
//!     .with_version("v1")
//!     .with_endpoint("grpc://127.0.0.1:50051".parse()?)
//!     .with_metadata("color", "blue");
//! let registration = registry.register(instance).await?;
//!
//! let snapshot = watch.next().await.expect("registry alive");
//! assert_eq!(snapshot.instances().iter().next().unwrap().id, "echo-1");
//!
//! registration.deregister().await?;
//! let snapshot = watch.next().await.expect("registry alive");
//! assert!(snapshot.is_empty());
//! # Ok(())
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

pub mod backoff;
pub mod balance;
pub mod discovery;
mod error;
pub mod instance;
pub mod memory;
pub mod registry;
pub mod subscriber;
pub mod url;

pub use discovery::{Change, Discovery, Snapshot, Watch};
pub use error::{BoxError, Error, ErrorChain};
pub use instance::{Endpoint, Instance, Metadata};
pub use registry::{Override, Registrar, Registration, RegistrationState, Registry, Status};
pub use subscriber::{Subscriber, Subscription};

/// A boxed, sendable future: the return type of the backend traits, so they
/// stay usable as trait objects (`Arc<dyn Discovery>`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
