//! Client-side load balancing, transport-free: pick an endpoint of a service
//! for a request's [`Route`].
//!
//! A [`Balancer`] is built from a discovery [`Snapshot`](crate::Snapshot)
//! and follows each new one ([`Balancer::update`]) by applying the
//! differences, so a change costs what changed, and the endpoints that stay
//! keep what it learnt about them. It knows nothing of tonic or HTTP: the
//! balanced gRPC channel, the HTTP gateway and the benches share it. Its
//! clock is tokio's, so tests pause and advance time.
//!
//! A pick runs the route through the filters, then the policy:
//!
//! 1. **version pin** ([`VERSION_HEADER`]): only instances of that version;
//!    none is [`Error::NoVersion`], never a silent fallback;
//! 2. **colour lane** ([`COLOR_HEADER`]): a coloured request goes to
//!    instances of its colour, or to the base lane (no colour) when its lane
//!    has none in rotation; an uncoloured request goes to the base lane only;
//! 3. **zone**: instances in the caller's [`Builder::zone`] first, any zone
//!    when it has none in rotation;
//! 4. **ejection**: instances a health checker marked
//!    [`Health::NotServing`] ([`Balancer::set_health`]) or that
//!    [`OutlierDetection`] ejected are skipped; if that leaves none,
//!    [`Error::AllEjected`];
//! 5. the **[`Policy`]**: [`RoundRobin`], [`Random`], [`Weighted`] (smooth
//!    WRR), [`P2c`] (peak-EWMA, with forced picks), [`LeastRequest`], [`ConsistentHash`]
//!    (Maglev, on [`HASH_KEY_HEADER`]), by name with [`BuiltinPolicy`], or
//!    your own.
//!
//! The [`Pick`] is a guard: report [`Pick::success`] or [`Pick::failure`]
//! when the request completes, so latency-aware policies see real load and
//! outlier detection sees failures.
//!
//! # Examples
//!
//! ```
//! use lodestar::{Instance, Snapshot};
//! use lodestar::balance::{Balancer, Error, Route};
//!
//! let instance = |id: &str, version: &str| {
//!     Instance::new("echo", id)
//!         .with_version(version)
//!         .with_endpoint(format!("grpc://10.0.0.{}:50051", id.len()).parse().unwrap())
//! };
//! let snapshot = Snapshot::new(
//!     "echo",
//!     1,
//!     vec![instance("a", "v1"), instance("b", "v1"), instance("cc", "v2")],
//!     0,
//! );
//! let balancer = Balancer::builder().policy_name("round_robin")?.build(snapshot);
//!
//! let pick = balancer.pick(&Route::new().with_version("v2"))?;
//! assert_eq!(pick.instance().id, "cc");
//! assert_eq!(pick.endpoint("grpc").unwrap().address(), "10.0.0.2:50051");
//! pick.success();
//!
//! let err = balancer.pick(&Route::new().with_version("v3")).unwrap_err();
//! assert_eq!(err, Error::NoVersion { service: "echo".into(), version: "v3".into() });
//! assert_eq!(err.to_string(), "no instance of echo with version v3");
//! # Ok::<(), Error>(())
//! ```
//!
//! Writing your own policy:
//!
//! ```
//! use lodestar::balance::{Balancer, Candidates, Context, Picker, Policy, Route};
//!
//! /// Always the first instance in id order.
//! #[derive(Debug)]
//! struct First;
//!
//! impl Policy for First {
//!     fn name(&self) -> &str { "first" }
//!     fn picker(&self, _: &Candidates) -> Box<dyn Picker> { Box::new(FirstPicker) }
//! }
//!
//! #[derive(Debug)]
//! struct FirstPicker;
//!
//! impl Picker for FirstPicker {
//!     fn pick(&self, _: &Context<'_>) -> usize { 0 }
//! }
//!
//! # let snapshot = lodestar::Snapshot::new("echo", 1, vec![
//! #     lodestar::Instance::new("echo", "b").with_endpoint("grpc://b:1".parse().unwrap()),
//! #     lodestar::Instance::new("echo", "a").with_endpoint("grpc://a:1".parse().unwrap()),
//! # ], 0);
//! let balancer = Balancer::builder().policy(First).build(snapshot);
//! assert_eq!(balancer.pick(&Route::new())?.instance().id, "a");
//! # Ok::<(), lodestar::balance::Error>(())
//! ```

mod balancer;
mod builtin;
mod candidate;
mod clock;
mod completion;
mod context;
mod error;
mod feedback;
mod hash;
mod least_request;
mod load;
mod outlier;
mod p2c;
mod policy;
mod random;
mod round_robin;
mod route;
mod table;
mod weighted;

pub use balancer::{Balancer, Builder, Health};
pub use builtin::BuiltinPolicy;
pub use candidate::{Candidate, Candidates, CandidatesIter};
pub use completion::Pick;
pub use context::Context;
pub use error::Error;
pub use hash::ConsistentHash;
pub use least_request::LeastRequest;
pub use outlier::OutlierDetection;
pub use p2c::P2c;
pub use policy::{Picker, Policy};
pub use random::Random;
pub use round_robin::RoundRobin;
pub use route::{COLOR_HEADER, HASH_KEY_HEADER, Route, VERSION_HEADER};
pub use weighted::Weighted;

#[cfg(test)]
mod tests;
