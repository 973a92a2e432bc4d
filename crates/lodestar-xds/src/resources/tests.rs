use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            Cluster,
            cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
        },
        core::v3::{
            HealthStatus, address, config_source::ConfigSourceSpecifier,
            socket_address::PortSpecifier,
        },
        endpoint::v3::{ClusterLoadAssignment, lb_endpoint::HostIdentifier},
        listener::v3::Listener,
        route::v3::{
            RouteAction,
            route::Action,
            route_action::{ClusterSpecifier, hash_policy::PolicySpecifier},
            route_match::PathSpecifier,
        },
    },
    extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    },
};
use lodestar::{Instance, Snapshot};

use super::{listener::HCM, *};
use crate::{Policy, names::ClusterName, plan::View};

fn view(service: &str, revision: u64, instances: Vec<Instance>, skipped: usize) -> View {
    View::new(std::sync::Arc::new(Snapshot::new(
        service, revision, instances, skipped,
    )))
}

fn inst(id: &str, port: u16, meta: &[(&str, &str)]) -> Instance {
    let mut i = Instance::new("echo", id)
        .with_endpoint(format!("grpc://127.0.0.1:{port}").parse().unwrap());
    for (k, v) in meta {
        i = i.with_metadata(*k, *v);
    }
    i
}

fn unpack<M: Message + Default>(any: &Any) -> M {
    M::decode(any.value.as_slice()).expect("decodes")
}

fn assignment_of(s: &View, policy: Policy) -> ClusterLoadAssignment {
    let any = assignment(s, &ClusterName::base("echo"), policy, None);
    assert_eq!(any.type_url, ENDPOINTS);
    unpack(&any)
}

/// (zone, sub-zone, locality weight, [(port, endpoint weight, health)]).
type Summary = Vec<(String, String, u32, Vec<(u32, u32, i32)>)>;

fn summary(cla: &ClusterLoadAssignment) -> Summary {
    cla.endpoints
        .iter()
        .map(|l| {
            let locality = l.locality.clone().unwrap_or_default();
            let endpoints = l
                .lb_endpoints
                .iter()
                .map(|e| {
                    let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                        panic!("an endpoint")
                    };
                    let Some(address::Address::SocketAddress(sa)) =
                        ep.address.as_ref().and_then(|a| a.address.clone())
                    else {
                        panic!("a socket address")
                    };
                    let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                        panic!("a port")
                    };
                    let w = e.load_balancing_weight.as_ref().map_or(0, |w| w.value);
                    (port, w, e.health_status)
                })
                .collect();
            let weight = l.load_balancing_weight.as_ref().map_or(0, |w| w.value);
            (locality.zone, locality.sub_zone, weight, endpoints)
        })
        .collect()
}

const UP: i32 = HealthStatus::Healthy as i32;
const DOWN: i32 = HealthStatus::Unhealthy as i32;

#[test]
fn weighted_splits_localities_by_zone_and_weight() {
    let s = view(
        "echo",
        1,
        vec![
            inst("a", 1, &[("weight", "100"), ("zone", "z1")]),
            inst("b", 2, &[("weight", "300"), ("zone", "z1")]),
            inst("c", 3, &[("weight", "300"), ("zone", "z1")]),
            inst("d", 4, &[("zone", "z2"), ("status", "down")]),
        ],
        0,
    );
    let cla = assignment_of(&s, Policy::Weighted);
    assert_eq!(
        summary(&cla),
        [
            ("z1".into(), "w100".into(), 100, vec![(1, 100, UP)]),
            (
                "z1".into(),
                "w300".into(),
                600,
                vec![(2, 300, UP), (3, 300, UP)]
            ),
            // Nothing in rotation: weight of one instance, skipped by clients
            // as every endpoint is unhealthy.
            ("z2".into(), "w100".into(), 100, vec![(4, 100, DOWN)]),
        ]
    );
}

#[test]
fn round_robin_and_ring_hash_weigh_zones() {
    let s = view(
        "echo",
        1,
        vec![
            inst("a", 1, &[("weight", "100")]),
            inst("b", 2, &[("weight", "300")]),
            inst("c", 3, &[("status", "down")]),
        ],
        0,
    );
    let rr = summary(&assignment_of(&s, Policy::RoundRobin));
    assert_eq!(rr.len(), 1);
    assert_eq!(
        (rr[0].2, rr[0].3.len()),
        (2, 3),
        "weight: instances in rotation"
    );
    let rh = summary(&assignment_of(&s, Policy::RingHash));
    assert_eq!(rh[0].2, 1, "ring hash: endpoint weights alone");
    assert_eq!(rh[0].3[1], (2, 300, UP));
}

#[test]
fn host_names_are_left_out() {
    let named = Instance::new("echo", "n").with_endpoint("grpc://echo.internal:1".parse().unwrap());
    let s = view("echo", 1, vec![named, inst("a", 2, &[])], 0);
    let cla = assignment_of(&s, Policy::Weighted);
    assert_eq!(summary(&cla)[0].3, [(2, 100, UP)]);
}

#[test]
fn the_listener_holds_the_routes_inline_and_the_router_filter() {
    let s = view(
        "echo",
        1,
        vec![inst("a", 1, &[]), inst("b", 2, &[("color", "blue")])],
        0,
    );
    let any = listener(&s, Policy::RingHash);
    assert_eq!(any.type_url, LISTENER);
    let l: Listener = unpack(&any);
    assert_eq!(l.name, "echo");
    let hcm_any = l.api_listener.unwrap().api_listener.unwrap();
    assert_eq!(hcm_any.type_url, HCM);
    let hcm: HttpConnectionManager = unpack(&hcm_any);
    assert_eq!(hcm.http_filters.len(), 1);
    assert_eq!(hcm.http_filters[0].name, "router");
    let Some(RouteSpecifier::RouteConfig(config)) = hcm.route_specifier else {
        panic!("inline routes")
    };
    let routes = &config.virtual_hosts[0].routes;
    let clusters: Vec<String> = routes
        .iter()
        .map(|r| match &r.action {
            Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(c)),
                ..
            })) => c.clone(),
            other => panic!("a route action: {other:?}"),
        })
        .collect();
    assert_eq!(clusters, ["echo/none", "echo/c=blue", "echo"]);
    let last = routes.last().unwrap();
    let m = last.r#match.as_ref().unwrap();
    assert!(m.headers.is_empty(), "the last route is the catch-all");
    assert_eq!(m.path_specifier, Some(PathSpecifier::Prefix(String::new())));
    let Some(Action::Route(action)) = &last.action else {
        panic!()
    };
    let Some(PolicySpecifier::Header(h)) = &action.hash_policy[0].policy_specifier else {
        panic!("a header hash policy")
    };
    assert_eq!(h.header_name, HASH_KEY_HEADER);
}

#[test]
fn clusters_are_eds_over_ads_with_the_policy() {
    let name = ClusterName::subset("echo", Some("v2"), None);
    let c: Cluster = unpack(&cluster(&name, Policy::RingHash));
    assert_eq!(c.name, "echo/v=v2");
    assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
    assert_eq!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    let eds = c.eds_cluster_config.unwrap();
    assert_eq!(eds.service_name, "echo/v=v2");
    assert!(matches!(
        eds.eds_config.unwrap().config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    let c: Cluster = unpack(&cluster(&name, Policy::Weighted));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
}

#[test]
fn the_client_zone_comes_first_while_it_has_an_instance_in_rotation() {
    let mut v = view(
        "echo",
        1,
        vec![
            inst("a", 1, &[("zone", "z1")]),
            inst("b", 2, &[("zone", "z2")]),
        ],
        0,
    );
    let priorities = |v: &View, zone: Option<&str>| -> Vec<(String, u32)> {
        let cla: ClusterLoadAssignment = unpack(&assignment(
            v,
            &ClusterName::base("echo"),
            Policy::Weighted,
            zone,
        ));
        cla.endpoints
            .iter()
            .map(|l| (l.locality.clone().unwrap_or_default().zone, l.priority))
            .collect()
    };
    let p = |pairs: &[(&str, u32)]| -> Vec<(String, u32)> {
        pairs.iter().map(|(z, n)| (z.to_string(), *n)).collect()
    };
    assert_eq!(priorities(&v, Some("z1")), p(&[("z1", 0), ("z2", 1)]));
    assert_eq!(priorities(&v, Some("z2")), p(&[("z1", 1), ("z2", 0)]));
    assert_eq!(priorities(&v, None), p(&[("z1", 0), ("z2", 0)]));
    assert_eq!(priorities(&v, Some("z9")), p(&[("z1", 0), ("z2", 0)]));
    v.not_serving.insert("a".into());
    assert_eq!(
        priorities(&v, Some("z1")),
        p(&[("z1", 0), ("z2", 0)]),
        "nothing in rotation in z1: every zone"
    );
}
