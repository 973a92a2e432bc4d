//! The Envoy messages gRPC clients read, built from a snapshot: pure
//! functions, each resource packed as the `Any` a `DiscoveryResponse` holds.
//!
//! - Listener `SERVICE`: an `api_listener` whose `HttpConnectionManager`
//!   holds the route configuration inline (no RDS round trip) and the router
//!   filter gRPC requires.
//! - RouteConfiguration `SERVICE` (also served by name, for clients that ask
//!   for it): one virtual host, the [`plan::routes`] as header matches on
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
//! `round_robin.cc`). So with [`Policy::Weighted`] the instances of a zone
//! are split into one locality per weight (sub-zone `w<weight>`), weighted
//! `weight x instances in rotation`: each instance then gets its weight's
//! share. [`Policy::RoundRobin`] weighs a zone by its instances in rotation.
//! Ring hash multiplies locality and endpoint weights, so there a zone is
//! one locality of weight 1 and the endpoint weight is the instance's.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{
                    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbConfig, LbPolicy,
                    RingHashLbConfig,
                },
            },
            core::v3::{
                Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus, Locality,
                SocketAddress, address,
                config_source::ConfigSourceSpecifier,
                socket_address::{PortSpecifier, Protocol},
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
                lb_endpoint::HostIdentifier,
            },
            listener::v3::{ApiListener, Listener},
            route::v3::{
                HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
                header_matcher::HeaderMatchSpecifier,
                route::Action,
                route_action::{ClusterSpecifier, HashPolicy, hash_policy},
                route_match::PathSpecifier,
            },
        },
        extensions::filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier,
                http_filter::ConfigType,
            },
        },
        r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern},
    },
    google::protobuf::{Any, UInt32Value},
};
use lodestar::Instance;
use prost::Message;

use crate::{
    Policy,
    names::ClusterName,
    plan::{self, GRPC_SCHEME, Rule, View},
};

/// `type_url` of a Listener.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `type_url` of a RouteConfiguration.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `type_url` of a Cluster.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `type_url` of a ClusterLoadAssignment.
pub const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// The header lodestar pins versions with.
pub const VERSION_HEADER: &str = "lodestar-version";
/// The header lodestar picks colour lanes with.
pub const COLOR_HEADER: &str = "lodestar-color";
/// The header ring hash hashes.
pub const HASH_KEY_HEADER: &str = "lodestar-hash-key";

/// The Listener named after `snapshot`'s service, routes inline.
pub fn listener(view: &View, policy: Policy) -> Any {
    let manager = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(route_configuration(
            view, policy,
        ))),
        http_filters: vec![HttpFilter {
            name: "router".to_string(),
            config_type: Some(ConfigType::TypedConfig(pack(ROUTER, &Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    let listener = Listener {
        name: view.service().to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack(HCM, &manager)),
        }),
        ..Default::default()
    };
    pack(LISTENER, &listener)
}

/// The RouteConfiguration of `snapshot`'s service, packed.
pub fn route(view: &View, policy: Policy) -> Any {
    pack(ROUTE, &route_configuration(view, policy))
}

/// The Cluster `name` (a lane of `snapshot`'s service), packed.
pub fn cluster(name: &ClusterName, policy: Policy) -> Any {
    let text = name.to_string();
    let (lb_policy, lb_config) = match policy {
        Policy::RoundRobin | Policy::Weighted => (LbPolicy::RoundRobin, None),
        Policy::RingHash => (
            LbPolicy::RingHash,
            Some(LbConfig::RingHashLbConfig(RingHashLbConfig::default())),
        ),
    };
    let cluster = Cluster {
        name: text.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource::default(),
                )),
                resource_api_version: ApiVersion::V3 as i32,
                ..Default::default()
            }),
            service_name: text,
        }),
        lb_policy: lb_policy as i32,
        lb_config,
        ..Default::default()
    };
    pack(CLUSTER, &cluster)
}

/// The ClusterLoadAssignment of lane `name` in `view`, packed, for a
/// client in `client_zone`.
///
/// Zone preference, as lodestar's balancer has it (the caller's zone while
/// it has an instance in rotation, else every zone): when the client's zone
/// has an instance in rotation in this lane, the other zones' localities go
/// to priority 1, which gRPC clients use only when priority 0 fails;
/// otherwise every locality is priority 0.
pub fn assignment(
    view: &View,
    name: &ClusterName,
    policy: Policy,
    client_zone: Option<&str>,
) -> Any {
    let mut localities: BTreeMap<(String, u32), Vec<&Arc<Instance>>> = BTreeMap::new();
    for instance in plan::members(view, &name.lane) {
        let zone = instance.zone().unwrap_or_default().to_string();
        let weight = match policy {
            Policy::Weighted => weight(instance),
            Policy::RoundRobin | Policy::RingHash => 0,
        };
        localities.entry((zone, weight)).or_default().push(instance);
    }
    let local = client_zone.filter(|zone| {
        localities
            .iter()
            .any(|((z, _), members)| z == zone && members.iter().any(|i| view.in_rotation(i)))
    });
    let assignment = ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: localities
            .into_iter()
            .map(|((zone, w), instances)| {
                let mut locality = locality(view, &zone, w, &instances, policy);
                if local.is_some_and(|local| local != zone) {
                    locality.priority = 1;
                }
                locality
            })
            .collect(),
        ..Default::default()
    };
    pack(ENDPOINTS, &assignment)
}

/// The locality of one zone (and, with [`Policy::Weighted`], one weight).
fn locality(
    view: &View,
    zone: &str,
    w: u32,
    instances: &[&Arc<Instance>],
    policy: Policy,
) -> LocalityLbEndpoints {
    let live = instances.iter().filter(|i| view.in_rotation(i)).count();
    // A locality of weight 0 is dropped by clients; one with nothing in
    // rotation is skipped by them anyway (all endpoints unhealthy).
    let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
    let weight = match policy {
        Policy::Weighted => w.saturating_mul(live),
        Policy::RoundRobin => live,
        Policy::RingHash => 1,
    };
    LocalityLbEndpoints {
        locality: Some(Locality {
            zone: zone.to_string(),
            sub_zone: if w > 0 {
                format!("w{w}")
            } else {
                String::new()
            },
            ..Default::default()
        }),
        lb_endpoints: instances
            .iter()
            .filter_map(|i| lb_endpoint(view, i))
            .collect(),
        load_balancing_weight: Some(UInt32Value { value: weight }),
        ..Default::default()
    }
}

/// An instance's `grpc://` endpoint; `None` when its host is not an IP
/// address (gRPC clients reject a whole assignment holding a host name).
fn lb_endpoint(view: &View, instance: &Instance) -> Option<LbEndpoint> {
    let endpoint = instance.endpoint(GRPC_SCHEME)?;
    let host = endpoint.host();
    if host.parse::<IpAddr>().is_err() {
        tracing::debug!(instance = %instance.id, host, "skipped: xDS endpoints are IP addresses");
        return None;
    }
    let health = if view.in_rotation(instance) {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unhealthy
    };
    Some(LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    protocol: Protocol::Tcp as i32,
                    address: host.to_string(),
                    port_specifier: Some(PortSpecifier::PortValue(u32::from(endpoint.port()))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        health_status: health as i32,
        load_balancing_weight: Some(UInt32Value {
            value: weight(instance),
        }),
        ..Default::default()
    })
}

/// An instance's weight; an invalid one counts as the default, as in the
/// balancer.
fn weight(instance: &Instance) -> u32 {
    instance
        .weight()
        .unwrap_or(lodestar::instance::DEFAULT_WEIGHT)
        .max(1)
}

fn route_configuration(view: &View, policy: Policy) -> RouteConfiguration {
    let service = view.service();
    RouteConfiguration {
        name: service.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: service.to_string(),
            domains: vec!["*".to_string()],
            routes: plan::routes(view)
                .iter()
                .map(|rule| to_route(rule, policy))
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn to_route(rule: &Rule, policy: Policy) -> Route {
    let mut headers = Vec::new();
    if let Some(version) = &rule.version {
        headers.push(exact(VERSION_HEADER, version));
    } else if rule.any_version {
        headers.push(HeaderMatcher {
            name: VERSION_HEADER.to_string(),
            header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
            ..Default::default()
        });
    }
    if let Some(color) = &rule.color {
        headers.push(exact(COLOR_HEADER, color));
    }
    let hash_policy = match policy {
        Policy::RingHash => vec![HashPolicy {
            policy_specifier: Some(hash_policy::PolicySpecifier::Header(hash_policy::Header {
                header_name: HASH_KEY_HEADER.to_string(),
                ..Default::default()
            })),
            ..Default::default()
        }],
        Policy::RoundRobin | Policy::Weighted => Vec::new(),
    };
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(String::new())),
            headers,
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(rule.cluster.to_string())),
            hash_policy,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn exact(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(value.to_string())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn pack<M: Message>(type_url: &str, message: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: message.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests;
