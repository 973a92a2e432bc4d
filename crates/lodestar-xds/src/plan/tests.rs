use lodestar::{Instance, Snapshot};

use super::*;

fn view(service: &str, revision: u64, instances: Vec<Instance>, skipped: usize) -> View {
    View::new(std::sync::Arc::new(Snapshot::new(
        service, revision, instances, skipped,
    )))
}

fn inst(id: &str, version: &str, color: Option<&str>) -> Instance {
    let mut i = Instance::new("echo", id)
        .with_version(version)
        .with_endpoint("grpc://127.0.0.1:1".parse().unwrap());
    if let Some(color) = color {
        i = i.with_metadata("color", color);
    }
    i
}

fn down(i: Instance) -> Instance {
    i.with_metadata("status", "down")
}

fn ids(snapshot: &View, name: &ClusterName) -> Vec<String> {
    members(snapshot, &name.lane)
        .iter()
        .map(|i| i.id.clone())
        .collect()
}

fn summary(rules: &[Rule]) -> Vec<String> {
    rules
        .iter()
        .map(|r| {
            let v = match (&r.version, r.any_version) {
                (Some(v), _) => format!("v={v}"),
                (None, true) => "v=*".to_string(),
                (None, false) => "-".to_string(),
            };
            let c = r.color.as_deref().unwrap_or("-");
            format!("{v} {c} -> {}", r.cluster)
        })
        .collect()
}

#[test]
fn routes_pin_versions_then_lanes_then_base() {
    let s = view(
        "echo",
        1,
        vec![
            inst("a", "v1", None),
            inst("b", "v2", None),
            inst("c", "v2", Some("blue")),
        ],
        0,
    );
    assert_eq!(
        summary(&routes(&s)),
        [
            "v=v1 - -> echo/v=v1",
            "v=v2 blue -> echo/v=v2/c=blue",
            "v=v2 - -> echo/v=v2",
            "v=* - -> echo/none",
            "- blue -> echo/c=blue",
            "- - -> echo",
        ]
    );
    assert_eq!(ids(&s, &ClusterName::base("echo")), ["a", "b"]);
    assert_eq!(
        ids(&s, &ClusterName::subset("echo", None, Some("blue"))),
        ["c"]
    );
    assert_eq!(
        ids(&s, &ClusterName::subset("echo", Some("v2"), None)),
        ["b"]
    );
    assert!(ids(&s, &ClusterName::nothing("echo")).is_empty());
}

#[test]
fn a_colour_with_every_instance_down_falls_back_to_the_base_lane() {
    let s = view(
        "echo",
        1,
        vec![inst("a", "", None), down(inst("c", "", Some("blue")))],
        0,
    );
    assert_eq!(summary(&routes(&s)), ["v=* - -> echo/none", "- - -> echo"]);
    // The lane still resolves (a client may hold a route to it a moment).
    assert_eq!(
        ids(&s, &ClusterName::subset("echo", None, Some("blue"))),
        ["c"]
    );
}

#[test]
fn instances_without_a_grpc_endpoint_are_left_out() {
    let http = Instance::new("echo", "h").with_endpoint("http://127.0.0.1:2".parse().unwrap());
    let s = view("echo", 1, vec![inst("a", "", None), http], 0);
    assert_eq!(ids(&s, &ClusterName::base("echo")), ["a"]);
}

#[test]
fn an_empty_service_routes_to_an_empty_base_lane() {
    let s = view("echo", 0, vec![], 0);
    assert_eq!(summary(&routes(&s)), ["v=* - -> echo/none", "- - -> echo"]);
    assert!(ids(&s, &ClusterName::base("echo")).is_empty());
}

#[test]
fn not_serving_instances_are_out_of_rotation() {
    let mut v = view(
        "echo",
        1,
        vec![inst("a", "", None), inst("c", "", Some("blue"))],
        0,
    );
    assert_eq!(
        summary(&routes(&v)),
        ["v=* - -> echo/none", "- blue -> echo/c=blue", "- - -> echo"]
    );
    v.not_serving.insert("c".to_string());
    assert_eq!(summary(&routes(&v)), ["v=* - -> echo/none", "- - -> echo"]);
}
