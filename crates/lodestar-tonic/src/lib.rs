//! lodestar for tonic, on both sides.
//!
//! - **Client**: [`Channel`], a `tower::Service` that any generated tonic
//!   client takes. It watches discovery, keeps one HTTP/2 connection per
//!   instance, and sends each call to an instance picked by lodestar's
//!   balancer (every policy, version pins, colour lanes, health and outlier
//!   ejection); see [`channel`] for every option and its default.
//! - **Server**: [`serve::Server`] binds, marks gRPC health SERVING,
//!   registers, and on shutdown runs the graceful sequence (NOT_SERVING,
//!   deregister, wait for clients to notice, drain, exit); see [`serve`].
//! - **Colour propagation**: [`color::ColorLayer`] on servers and the
//!   channel's hook keep a call chain in its colour lane; see [`color`].
//! - [`RouteExt`]: `set_route` on tonic requests (version pin, colour
//!   lane, hash key).
//!
//! The echo service of the examples, the `lodestar` tools and the tests is
//! the `lodestar-echo` crate: this one has no protobuf build step.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

pub mod channel;
pub mod color;
mod route;
pub mod serve;

pub use channel::Channel;
pub use route::RouteExt;

/// The README's Rust examples, compiled as doctests so they stay true (the
/// echo service they use is a dev-dependency).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
