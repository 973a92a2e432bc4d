//! A lane's Cluster: EDS over ADS, with the service's policy.

use envoy_types::pb::{
    envoy::config::{
        cluster::v3::{
            Cluster,
            cluster::{
                ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbConfig, LbPolicy,
                RingHashLbConfig,
            },
        },
        core::v3::{
            AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
        },
    },
    google::protobuf::Any,
};

use crate::{
    Policy,
    names::ClusterName,
    resources::{CLUSTER, pack},
};

/// The Cluster `name` (a lane of a service), packed.
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
