//! Property-based fuzzing of the decoders in the core: instance records
//! (JSON from any registry), endpoints, route headers and URL options.
//!
//! Arbitrary bytes, and valid inputs with one part replaced by something
//! hostile (a wrong type, a huge number, deep nesting, a long string).
//! Whatever comes in: an error value or a usable result, never a panic; a
//! record that decodes encodes back to itself. Case counts are fixed so the
//! whole file runs in seconds.

use http::{HeaderMap, HeaderName, HeaderValue};
use lodestar::{Endpoint, Instance, balance::Route};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Something hostile to put where a field was.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(1e308)),
        ".{0,64}".prop_map(Value::from),
        (1usize..100_000).prop_map(|n| Value::from("x".repeat(n))),
        (1usize..100).prop_map(|depth| (0..depth).fold(json!(0), |v, _| json!([v]))),
        prop::collection::vec(any::<i32>(), 0..50).prop_map(|v| json!(v)),
        prop::collection::btree_map(".{0,8}", ".{0,8}", 0..8).prop_map(|m| json!(m)),
    ]
}

/// A valid record.
fn record() -> Value {
    json!({
        "id": "echo-1",
        "service": "echo",
        "version": "v1",
        "endpoints": ["grpc://127.0.0.1:50051", "http://[::1]:8080"],
        "metadata": {"color": "blue", "weight": "20", "zone": "z1"}
    })
}

/// A valid record with one field (top level or nested) replaced, or added.
fn mutated_record() -> impl Strategy<Value = Vec<u8>> {
    let fields = prop_oneof![
        Just("id"),
        Just("service"),
        Just("version"),
        Just("endpoints"),
        Just("metadata"),
        Just("unknown"),
    ];
    (fields, hostile(), 0usize..3).prop_map(|(field, value, nest)| {
        let mut record = record();
        match nest {
            // In the metadata map.
            1 => record["metadata"]["weight"] = value,
            // In the endpoint list.
            2 => record["endpoints"][0] = value,
            _ => record[field] = value,
        }
        serde_json::to_vec(&record).unwrap_or_default()
    })
}

/// What a decoded record must allow without panicking.
fn exercise(instance: &Instance) {
    let _ = instance.validate();
    let _ = instance.weight();
    let _ = (
        instance.color(),
        instance.zone(),
        instance.is_down(),
        instance.registered(),
    );
    let again = Instance::from_json(instance.to_json().as_bytes()).expect("re-decodes");
    assert_eq!(&again, instance);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn records_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(instance) = Instance::from_json(&bytes) {
            exercise(&instance);
        }
    }

    #[test]
    fn records_with_a_hostile_field(bytes in mutated_record()) {
        if let Ok(instance) = Instance::from_json(&bytes) {
            exercise(&instance);
        }
    }

    #[test]
    fn endpoints_from_arbitrary_text(text in ".{0,80}", scheme in "[a-z+]{0,6}", host in ".{0,20}", port in any::<u16>()) {
        if let Ok(endpoint) = text.parse::<Endpoint>() {
            let again: Endpoint = endpoint.to_string().parse().expect("re-parses");
            prop_assert_eq!(again, endpoint);
        }
        let candidate = format!("{scheme}://{host}:{port}");
        if let Ok(endpoint) = candidate.parse::<Endpoint>() {
            let _ = endpoint.address();
        }
    }

    #[test]
    fn route_headers_from_arbitrary_values(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 3),
        names in prop::collection::vec("lodestar-[a-z-]{0,12}", 0..4),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in ["lodestar-version", "lodestar-color", "lodestar-hash-key"].iter().zip(&values) {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(*name, value);
            }
        }
        for name in names {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                headers.append(name, HeaderValue::from_static("x"));
            }
        }
        let route = Route::from_headers(&headers);
        for field in [&route.version, &route.color, &route.hash_key].into_iter().flatten() {
            prop_assert!(!field.is_empty());
        }
        // What was read can be written back.
        let mut out = HeaderMap::new();
        route.write_headers(&mut out).expect("values read from headers are valid headers");
        prop_assert_eq!(Route::from_headers(&out), route);
    }

    #[test]
    fn url_options_from_arbitrary_text(query in ".{0,200}", value in ".{0,30}") {
        for (key, value) in lodestar::url::options(&query) {
            let _ = lodestar::url::duration(key, value);
        }
        let _ = lodestar::url::duration("ttl", &value);
        let _ = lodestar::url::hosts("node", &query);
    }
}

/// Nesting far deeper than any record: an error (serde_json's recursion
/// limit), not a stack overflow.
#[test]
fn deeply_nested_records_are_errors() {
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let depth = 100_000;
        let text = format!("{}0{}", open.repeat(depth), close.repeat(depth));
        assert!(Instance::from_json(text.as_bytes()).is_err());
        let inside = format!(r#"{{"id":"a","service":"b","metadata":{text}}}"#);
        assert!(Instance::from_json(inside.as_bytes()).is_err());
    }
}

/// A record claiming a long list does not allocate by the claim: JSON has
/// no counts, so the decoder only ever holds what was sent.
#[test]
fn a_huge_record_decodes_in_proportion_to_its_size() {
    let endpoints: Vec<String> = (0..50_000)
        .map(|i| {
            format!(
                "grpc://10.0.{}.{}:{}",
                i / 256 % 256,
                i % 256,
                1000 + i % 50_000
            )
        })
        .collect();
    let record = json!({"id": "a", "service": "b", "endpoints": endpoints});
    let instance = Instance::from_json(record.to_string().as_bytes()).unwrap();
    assert_eq!(instance.endpoints.len(), 50_000);
}

/// One operation on a metadata map, keys from a small set so they collide.
#[derive(Clone, Debug)]
enum MetadataOp {
    Insert(String, String),
    Remove(String),
    Extend(Vec<(String, String)>),
    GetOrInsert(String, String),
}

fn metadata_op() -> impl Strategy<Value = MetadataOp> {
    let key = "[a-e]{0,2}";
    prop_oneof![
        (key, ".{0,4}").prop_map(|(k, v)| MetadataOp::Insert(k, v)),
        key.prop_map(MetadataOp::Remove),
        prop::collection::vec((key, ".{0,4}"), 0..6).prop_map(MetadataOp::Extend),
        (key, ".{0,4}").prop_map(|(k, v)| MetadataOp::GetOrInsert(k, v)),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// `Metadata` (a sorted vector) answers every operation as the
    /// `BTreeMap<String, String>` it replaced did, and serializes the same.
    #[test]
    fn metadata_behaves_as_a_btreemap(ops in prop::collection::vec(metadata_op(), 0..24)) {
        use std::collections::BTreeMap;
        let (mut ours, mut theirs) = (lodestar::Metadata::new(), BTreeMap::<String, String>::new());
        for op in ops {
            match op {
                MetadataOp::Insert(k, v) => {
                    prop_assert_eq!(ours.insert(k.clone(), v.clone()), theirs.insert(k, v));
                }
                MetadataOp::Remove(k) => prop_assert_eq!(ours.remove(&k), theirs.remove(&k)),
                MetadataOp::Extend(pairs) => {
                    ours.extend(pairs.clone());
                    theirs.extend(pairs);
                }
                MetadataOp::GetOrInsert(k, v) => {
                    let a = ours.get_or_insert_with(k.clone(), || v.clone()).clone();
                    prop_assert_eq!(&a, theirs.entry(k).or_insert(v));
                }
            }
            prop_assert_eq!(ours.len(), theirs.len());
            prop_assert!(ours.iter().eq(theirs.iter()));
        }
        prop_assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&theirs).unwrap());
        let back: lodestar::Metadata = serde_json::from_str(&serde_json::to_string(&theirs).unwrap()).unwrap();
        prop_assert_eq!(back, ours);
    }
}
