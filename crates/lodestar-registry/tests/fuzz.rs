//! Property-based fuzzing of discovery's encodings: form and query
//! parsing, the JSON answers a client decodes (`fetch`, `poll`, `polls`),
//! and the server's whole API over real HTTP with hostile parameters.
//! Whatever comes in: an error value or a usable result, never a panic,
//! never a `-500`, and the node keeps serving. Case counts are fixed so the
//! file runs in seconds.

mod support;

use std::collections::BTreeMap;

use lodestar_registry::{
    form::{Form, Params},
    wire::{Code, Fetched, Instance, Reply},
};
use proptest::{
    prelude::*,
    test_runner::{Config as RunnerConfig, TestRunner},
};
use serde_json::{Value, json};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Something hostile to put where a JSON field was.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(1e308)),
        Just(json!(-1)),
        ".{0,64}".prop_map(Value::from),
        (1usize..50_000).prop_map(|n| Value::from("x".repeat(n))),
        (1usize..100).prop_map(|depth| (0..depth).fold(json!(0), |v, _| json!([v]))),
        prop::collection::btree_map(".{0,8}", ".{0,8}", 0..8).prop_map(|m| json!(m)),
    ]
}

/// A `fetch` answer as a node sends it.
fn fetched() -> Value {
    json!({
        "code": 0, "message": "0",
        "data": {
            "latest_timestamp": 1_700_000_000_000_000_000i64,
            "instances": {"z1": [{
                "region": "", "zone": "z1", "env": "dev", "appid": "echo", "hostname": "echo-1",
                "addrs": ["grpc://127.0.0.1:9000"], "version": "v1", "color": "",
                "metadata": {"weight": "10"}, "status": 1,
                "reg_timestamp": 1, "up_timestamp": 1, "renew_timestamp": 1, "dirty_timestamp": 1,
                "latest_timestamp": 1
            }]}
        }
    })
}

const INSTANCE_FIELDS: [&str; 12] = [
    "zone",
    "env",
    "appid",
    "hostname",
    "addrs",
    "version",
    "color",
    "metadata",
    "status",
    "latest_timestamp",
    "dirty_timestamp",
    "unknown",
];

/// A fetch answer with one field replaced, at the top, in `data` or in the
/// instance.
fn mutated_answer() -> impl Strategy<Value = Vec<u8>> {
    (0usize..INSTANCE_FIELDS.len() + 4, hostile()).prop_map(|(at, value)| {
        let mut answer = fetched();
        match at {
            0 => answer["code"] = value,
            1 => answer["data"] = value,
            2 => answer["data"]["latest_timestamp"] = value,
            3 => answer["data"]["instances"] = value,
            n => answer["data"]["instances"]["z1"][0][INSTANCE_FIELDS[n - 4]] = value,
        }
        serde_json::to_vec(&answer).unwrap_or_default()
    })
}

/// What a client does with an answer: the envelope, the data, each record
/// as a lodestar instance.
fn decode_like_a_client(bytes: &[u8]) {
    let Ok(reply) = serde_json::from_slice::<Reply>(bytes) else {
        return;
    };
    let _ = reply.code();
    if let Ok(fetched) = serde_json::from_value::<Fetched>(reply.data.clone()) {
        for instance in fetched.instances.values().flatten() {
            if let Ok(record) = instance.to_lodestar() {
                let _ = record.validate();
            }
        }
    }
    // `polls`: one Fetched per appid.
    if let Ok(many) = serde_json::from_value::<BTreeMap<String, Fetched>>(reply.data) {
        for fetched in many.values() {
            for instance in fetched.instances.values().flatten() {
                let _ = instance.to_lodestar();
            }
        }
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn forms_from_arbitrary_text(text in ".{0,300}", bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let params = Params::parse(&text);
        let _ = params.get("appid");
        let _ = params.all("addrs").count();
        let lossy = String::from_utf8_lossy(&bytes);
        let mut params = Params::parse(&lossy);
        params.extend(&text);
        let _ = params.all("hostname").count();
    }

    #[test]
    fn forms_round_trip(pairs in prop::collection::vec((".{1,12}", ".{0,24}"), 0..10)) {
        let mut form = Form::new();
        for (k, v) in &pairs {
            form = form.pair(k, v);
        }
        let params = Params::parse(&form.finish());
        for (k, _) in &pairs {
            let first = pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            prop_assert_eq!(params.get(k), first);
        }
    }

    #[test]
    fn answers_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_like_a_client(&bytes);
    }

    #[test]
    fn answers_with_a_hostile_field(bytes in mutated_answer()) {
        decode_like_a_client(&bytes);
    }

    #[test]
    fn wire_records_with_hostile_values(
        addrs in prop::collection::vec(".{0,40}", 0..4),
        metadata in prop::collection::btree_map(".{0,12}", ".{0,40}", 0..6),
        status in any::<u32>(),
        color in ".{0,12}",
    ) {
        let mut record = Instance {
            appid: "echo".into(), hostname: "h".into(), addrs, metadata: metadata.into(), status, color,
            ..Instance::default()
        };
        record.reconcile_color();
        if let Ok(instance) = record.to_lodestar() {
            let back = Instance::from_lodestar(&instance, "dev", "z1");
            let _ = back.to_register_form(false);
        }
    }
}

/// Parameters a discovery client sends, with hostile values.
fn hostile_form() -> impl Strategy<Value = (usize, String)> {
    let keys = prop_oneof![
        Just("zone".to_string()),
        Just("env".to_string()),
        Just("appid".to_string()),
        Just("hostname".to_string()),
        Just("addrs".to_string()),
        Just("status".to_string()),
        Just("metadata".to_string()),
        Just("color".to_string()),
        Just("version".to_string()),
        Just("ttl".to_string()),
        Just("latest_timestamp".to_string()),
        Just("replication".to_string()),
        Just("dirty_timestamp".to_string()),
        Just("reg_timestamp".to_string()),
        Just("token".to_string()),
        ".{0,8}",
    ];
    let values = prop_oneof![
        Just("dev".to_string()),
        Just("echo".to_string()),
        Just("1".to_string()),
        Just("true".to_string()),
        Just("grpc://127.0.0.1:1".to_string()),
        Just("{\"a\":1}".to_string()),
        Just("9999999999999999999999".to_string()),
        Just("-1".to_string()),
        ".{0,40}",
        "[%0-9a-fA-F]{0,12}",
        (1usize..20_000).prop_map(|n| "a".repeat(n)),
        (1usize..2_000).prop_map(|n| format!("{}{}", "{\"a\":".repeat(n), "}".repeat(n))),
    ];
    (0usize..11, prop::collection::vec((keys, values), 0..14)).prop_map(|(path, pairs)| {
        let mut form = Form::new();
        for (k, v) in pairs {
            form = form.pair(&k, &v);
        }
        (path, form.finish())
    })
}

const PATHS: [&str; 11] = [
    "/discovery/register",
    "/discovery/renew",
    "/discovery/cancel",
    "/discovery/set",
    "/discovery/fetch",
    "/discovery/fetchs",
    "/discovery/fetch/all",
    "/discovery/poll",
    "/discovery/polls",
    "/discovery/nodes",
    "/lodestar/status",
];

/// The whole API over real HTTP: every answer is well-formed with a known
/// code (never `-500`), and the node serves normally afterwards.
#[test]
fn the_api_answers_hostile_parameters_with_known_codes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = runtime.block_on(support::start(|c| {
        c.poll_hold = std::time::Duration::from_millis(20);
    }));
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 400,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let seen = std::cell::RefCell::new(BTreeMap::<i64, usize>::new());
    runner
        .run(&hostile_form(), |(path, form)| {
            let path = PATHS[path];
            let (status, reply) = runtime.block_on(async {
                let write = matches!(
                    path,
                    "/discovery/register"
                        | "/discovery/renew"
                        | "/discovery/cancel"
                        | "/discovery/set"
                );
                match write {
                    true => node.post(path, &form).await,
                    false => node.get(&format!("{path}?{form}")).await,
                }
            });
            let shown: String = form.chars().take(200).collect();
            // hyper's own refusals of oversize heads carry no JSON.
            if matches!(status, 414 | 431) || (status == 400 && reply.is_null()) {
                prop_assert!(form.len() > 8 * 1024, "{path}?{shown}: HTTP {status}");
                *seen.borrow_mut().entry(-i64::from(status)).or_default() += 1;
                return Ok(());
            }
            // A body over the node's 64 KiB limit: HTTP 413, still an envelope.
            let too_big = status == 413 && form.len() > 64 * 1024;
            prop_assert!(
                status == 200 || status == 503 || too_big,
                "{path}?{shown}: HTTP {status}"
            );
            if path != "/lodestar/status" {
                let code = reply["code"].as_i64();
                prop_assert!(
                    code.and_then(Code::from_value).is_some(),
                    "{path}?{shown}: {reply}"
                );
                prop_assert_ne!(code, Some(Code::Internal.value()));
                *seen
                    .borrow_mut()
                    .entry(code.unwrap_or_default())
                    .or_default() += 1;
            }
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    println!("answers by code (-414, -431: HTTP statuses of heads hyper refused): {seen:?}");
    // The inputs reach past the parameter checks, not only -400s.
    assert!(seen.len() >= 3, "{seen:?}");
    let (status, _) = runtime.block_on(node.get("/discovery/nodes"));
    assert_eq!(status, 200);
}
