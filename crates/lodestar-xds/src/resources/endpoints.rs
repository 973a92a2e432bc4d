//! A lane's ClusterLoadAssignment: localities by zone (and weight), health,
//! the client's zone first.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use envoy_types::pb::{
    envoy::config::{
        core::v3::{
            Address, HealthStatus, Locality, SocketAddress, address,
            socket_address::{PortSpecifier, Protocol},
        },
        endpoint::v3::{
            ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
            lb_endpoint::HostIdentifier,
        },
    },
    google::protobuf::{Any, UInt32Value},
};
use lodestar::Instance;

use crate::{
    Policy,
    names::ClusterName,
    plan::{self, GRPC_SCHEME, View},
    resources::{ENDPOINTS, pack},
};

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
