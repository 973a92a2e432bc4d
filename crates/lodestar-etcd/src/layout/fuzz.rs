//! Property-based fuzzing of what the etcd backend decodes: instance values
//! and keys in both layouts, override values, and `etcd://` URLs. Values in
//! etcd are written by anyone with access: arbitrary bytes and records with
//! a hostile field are errors (skipped and counted by the watch), never a
//! panic.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn layout(url: &str) -> Layout {
    Layout::new(&url.parse().unwrap())
}

/// Something hostile to put where a field was.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(1e308)),
        ".{0,64}".prop_map(Value::from),
        (1usize..50_000).prop_map(|n| Value::from("x".repeat(n))),
        (1usize..100).prop_map(|depth| (0..depth).fold(json!(0), |v, _| json!([v]))),
        prop::collection::btree_map(".{0,8}", ".{0,8}", 0..8).prop_map(|m| json!(m)),
    ]
}

/// A Go naming value (`{"Op":0,"Addr":..,"Metadata":..}`) with one field
/// replaced, the lodestar record inside `Metadata` included.
fn mutated_go_value() -> impl Strategy<Value = Vec<u8>> {
    let record = Instance::new("echo", "1.2.3.4:5")
        .with_endpoint("grpc://1.2.3.4:5".parse().unwrap())
        .to_json();
    (0usize..5, hostile()).prop_map(move |(field, value)| {
        let mut go = json!({"Op": 0, "Addr": "1.2.3.4:5", "Metadata": record});
        match field {
            0 => go["Op"] = value,
            1 => go["Addr"] = value,
            2 => go["Metadata"] = value,
            3 => go["Extra"] = value,
            _ => {
                let mut inner: Value = serde_json::from_str(&record).unwrap();
                inner["endpoints"] = value;
                go["Metadata"] = Value::String(inner.to_string());
            }
        }
        serde_json::to_vec(&go).unwrap_or_default()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn values_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let lodestar = layout("etcd://h:1");
        let go = layout("etcd://h:1/svc?layout=go");
        let _ = lodestar.decode("echo", "/lodestar/services/echo/echo-1", &bytes);
        if let Ok(instance) = go.decode("echo", "svc/echo/1.2.3.4:5", &bytes) {
            prop_assert_eq!(instance.service, "echo");
        }
        if let Some((id, parsed)) = lodestar.decode_override("echo", "/lodestar/overrides/echo/echo-1", &bytes) {
            prop_assert_eq!(id, "echo-1");
            let _ = parsed;
        }
    }

    #[test]
    fn go_values_with_a_hostile_field(bytes in mutated_go_value()) {
        let go = layout("etcd://h:1/svc?layout=go");
        if let Ok(instance) = go.decode("echo", "svc/echo/1.2.3.4:5", &bytes) {
            prop_assert_eq!(&instance.service, "echo");
            let _ = instance.validate();
        }
    }

    #[test]
    fn keys_from_arbitrary_text(key in ".{0,80}", service in "[a-z/]{0,10}") {
        for layout in [layout("etcd://h:1"), layout("etcd://h:1/svc?layout=go")] {
            if let Some((s, name)) = layout.split_key(&key) {
                prop_assert!(!s.is_empty() && !name.is_empty() && !name.contains('/'));
            }
            let _ = layout.decode(&service, &key, b"{}");
            let _ = layout.decode_override(&service, &key, b"{}");
        }
    }

    #[test]
    fn urls_from_arbitrary_text(url in ".{0,120}", tail in "[a-z_=&?/.:0-9]{0,60}") {
        let _ = url.parse::<crate::EtcdConfig>();
        let _ = format!("etcd://127.0.0.1:2379{tail}").parse::<crate::EtcdConfig>();
    }
}

/// Nesting far deeper than any value: an error, not a stack overflow.
#[test]
fn deeply_nested_values_are_errors() {
    let depth = 100_000;
    let nested = format!("{}0{}", "[".repeat(depth), "]".repeat(depth));
    let go = format!(r#"{{"Op":0,"Addr":"1.2.3.4:5","Metadata":{nested}}}"#);
    assert!(
        layout("etcd://h:1/svc?layout=go")
            .decode("echo", "svc/echo/1.2.3.4:5", go.as_bytes())
            .is_err()
    );
    assert!(
        layout("etcd://h:1")
            .decode("echo", "/lodestar/services/echo/e", nested.as_bytes())
            .is_err()
    );
}
