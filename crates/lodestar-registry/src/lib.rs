//! The built-in lodestar registry: an AP registry server in the style of
//! bilibili discovery (in memory, renew heartbeats, peer replication, long
//! polling, self-protection), and the client backend that speaks to it.
//!
//! - [`server`]: [`Server::bind`] and [`Server::serve`] run one node of the
//!   registry (what `lodestar registry` runs). Its HTTP API is discovery's,
//!   so discovery's existing clients work unchanged.
//! - [`LodestarRegistry`]: lodestar's [`Registrar`] and [`Discovery`] over
//!   that API, reached as `lodestar://host:7171[,host:7171...][?env=prod]`.
//! - [`wire`] and [`form`]: the API's JSON and form encodings.
//! - [`Token`]: the optional shared secret a node can require.
//!
//! # Examples
//!
//! A node on a free port, an instance registered and watched through it:
//!
//! ```
//! use lodestar::{Discovery, Instance, Registrar};
//! use lodestar_registry::{server::{Config, Server}, LodestarRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::bind(Config::new("127.0.0.1:0".parse()?)).await?;
//! let url = format!("lodestar://{}", server.local_addr()?);
//! tokio::spawn(server.serve(std::future::pending()));
//!
//! let registry = LodestarRegistry::connect(url.parse()?).await?;
//! let mut watch = registry.watch("echo").await?;
//! assert!(watch.next().await.unwrap().is_empty());
//!
//! let registration = registry
//!     .register(Instance::new("echo", "echo-1").with_endpoint("grpc://127.0.0.1:50051".parse()?))
//!     .await?;
//! let snapshot = watch.next().await.unwrap();
//! assert_eq!(snapshot.instances().iter().next().unwrap().id, "echo-1");
//!
//! registration.deregister().await?;
//! assert!(watch.next().await.unwrap().is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! [`Server::bind`]: server::Server::bind
//! [`Server::serve`]: server::Server::serve
//! [`Registrar`]: lodestar::Registrar
//! [`Discovery`]: lodestar::Discovery
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

pub mod client;
pub mod form;
mod http;
pub mod server;
pub mod token;
pub mod wire;

pub use client::{ClientConfig, DEFAULT_PORT, LodestarRegistry};
pub use token::Token;
