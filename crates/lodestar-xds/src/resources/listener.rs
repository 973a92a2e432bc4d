//! The Listener and its inline RouteConfiguration.

use envoy_types::pb::{
    envoy::{
        config::listener::v3::{ApiListener, Listener},
        config::route::v3::{
            HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
            header_matcher::HeaderMatchSpecifier,
            route::Action,
            route_action::{ClusterSpecifier, HashPolicy, hash_policy},
            route_match::PathSpecifier,
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
    google::protobuf::Any,
};

use crate::{
    Policy,
    plan::{self, Rule, View},
    resources::{COLOR_HEADER, HASH_KEY_HEADER, LISTENER, ROUTE, VERSION_HEADER, pack},
};

/// `type_url` of the HttpConnectionManager inside an api_listener.
pub(super) const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

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

/// The RouteConfiguration of `view`'s service, packed.
pub fn route(view: &View, policy: Policy) -> Any {
    pack(ROUTE, &route_configuration(view, policy))
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
