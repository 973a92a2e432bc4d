//! Property-based fuzzing of the gateway's configuration: arbitrary text,
//! and a valid file with one value replaced by something hostile (a wrong
//! type, a huge or negative number, deep nesting, a long string). Whatever
//! comes in: an error naming the problem or a configuration that passed
//! validation, never a panic. Case counts are fixed so this runs in seconds.

use lodestar_gateway::config::Config;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const VALID: &str = r#"
[limits]
max_header_bytes = 65536
max_body_bytes = 10485760
header_timeout_ms = 10000
body_timeout_ms = 10000
drain_timeout_ms = 30000

[trust]
headers = false
sources = ["10.0.0.0/8"]

[[route]]
prefix = "/api"
service = "echo"
host = "api.example.com"
strip_prefix = true
policy = "p2c"
timeout_ms = 15000
version = "v2"
trust_headers = true

[route.retry]
attempts = 3
on_status = [502, 503, 504]
per_try_timeout_ms = 5000
budget_ratio = 0.2
budget_min_per_sec = 10

[route.rate_limit]
per_sec = 100
burst = 200
"#;

/// A TOML value hostile to whatever key it lands on.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("18446744073709551616".to_string()),
        Just("9223372036854775807".to_string()),
        Just("1e309".to_string()),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("{}".to_string()),
        Just("[]".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        ".{0,30}".prop_map(|s| format!("{s:?}")),
        (1usize..50_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        (1usize..200).prop_map(|d| format!("{}1{}", "[".repeat(d), "]".repeat(d))),
        (1usize..200).prop_map(|d| format!("{}1{}", "{a=".repeat(d), "}".repeat(d))),
    ]
}

/// The valid file with the value on one line replaced.
fn mutated() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = VALID.lines().collect();
    let values: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].contains(" = "))
        .collect();
    (prop::sample::select(values), hostile()).prop_map(move |(at, value)| {
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            if i == at {
                let key = line.split(" = ").next().unwrap_or_default();
                out.push_str(&format!("{key} = {value}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    })
}

fn check(text: &str) {
    if let Ok(config) = Config::from_toml(text) {
        config.validate().expect("what from_toml accepts is valid");
        for route in &config.routes {
            let _ = route.timeout();
        }
        let _ = (config.limits.header_timeout(), config.limits.body_timeout());
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn arbitrary_text(text in ".{0,400}") {
        check(&text);
    }

    #[test]
    fn a_valid_file_with_a_hostile_value(text in mutated()) {
        check(&text);
    }

    #[test]
    fn route_flags(flags in prop::collection::vec(".{0,40}", 0..4)) {
        if let Ok(config) = Config::default().with_route_flags(&flags) {
            prop_assert_eq!(config.routes.len(), flags.len());
        }
    }
}

#[test]
fn the_valid_file_is_valid() {
    let config = Config::from_toml(VALID).unwrap();
    assert_eq!(config.routes[0].trust_headers, Some(true));
    assert_eq!(config.trust.sources.len(), 1);
}

/// Nesting far deeper than any configuration: an error, not a stack
/// overflow.
#[test]
fn deep_nesting_is_an_error() {
    let depth = 100_000;
    for (open, close) in [("[", "]"), ("{a=", "}")] {
        let text = format!("x = {}1{}", open.repeat(depth), close.repeat(depth));
        assert!(Config::from_toml(&text).is_err());
    }
}
