//! The Envoy messages gRPC clients read, built from a snapshot: pure
//! functions, each resource packed as the `Any` a `DiscoveryResponse` holds.
//!
//! - Listener `SERVICE`: an `api_listener` whose `HttpConnectionManager`
//!   holds the route configuration inline (no RDS round trip) and the router
//!   filter gRPC requires.
//! - RouteConfiguration `SERVICE` (also served by name, for clients that ask
//!   for it): one virtual host, the [`plan::routes`](crate::plan::routes) as header matches on
//!   `lodestar-version` / `lodestar-color`, each to its lane's cluster; with
//!   ring hash, a hash policy on `lodestar-hash-key`.
//! - Cluster per lane ([`names`](crate::names)): EDS over ADS, the policy's
//!   `lb_policy`.
//! - ClusterLoadAssignment per lane: one `LbEndpoint` per instance's
//!   `grpc://` endpoint, `zone` as the locality, `down` as UNHEALTHY.
//!
//! Weights: gRPC runs `ROUND_ROBIN` clusters as `xds_wrr_locality` over
//! `round_robin`, which honours *locality* weights and ignores endpoint
//! weights within a locality (grpc's `xds_wrr_locality.cc`,
//! `round_robin.cc`). So with [`Policy::Weighted`](crate::Policy::Weighted) the instances of a zone
//! are split into one locality per weight (sub-zone `w<weight>`), weighted
//! `weight x instances in rotation`: each instance then gets its weight's
//! share. [`Policy::RoundRobin`](crate::Policy::RoundRobin) weighs a zone by its instances in rotation.
//! Ring hash multiplies locality and endpoint weights, so there a zone is
//! one locality of weight 1 and the endpoint weight is the instance's.

mod cluster;
mod endpoints;
mod listener;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

pub use cluster::cluster;
pub use endpoints::assignment;
pub use listener::{listener, route};
pub use lodestar::balance::{COLOR_HEADER, HASH_KEY_HEADER, VERSION_HEADER};

/// `type_url` of a Listener.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `type_url` of a RouteConfiguration.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `type_url` of a Cluster.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `type_url` of a ClusterLoadAssignment.
pub const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// `message` packed as an `Any` of `type_url`.
pub(crate) fn pack<M: Message>(type_url: &str, message: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: message.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests;
