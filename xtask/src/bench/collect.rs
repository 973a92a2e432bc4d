//! Reading the records back: the benches' JSON lines and criterion's
//! estimates (`target/criterion/<group>/<function>/<value>/new/`).

use std::path::Path;

use serde_json::{Value, json};

/// The variable the benches append their records under (see
/// `lodestar_test_support::bench`).
pub const ENV: &str = "LODESTAR_BENCH_JSON";

/// The records of a JSON lines file, in order; a missing file is no
/// records, a line that does not parse (a bench killed mid-write) is
/// skipped with a warning.
pub fn read_lines(path: &Path) -> Result<Vec<Value>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    Ok(parse_lines(&text))
}

/// The records of JSON lines text: objects with a `figure` and a `row`.
pub fn parse_lines(text: &str) -> Vec<Value> {
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v["figure"].is_string() && v["row"].is_string() => records.push(v),
            Ok(_) => eprintln!(
                "xtask: bench record {} has no figure or row; skipped",
                n + 1
            ),
            Err(e) => eprintln!(
                "xtask: bench record {} does not parse ({e}); skipped",
                n + 1
            ),
        }
    }
    records
}

/// Records of criterion's `pick` and `rebuild` groups found under `dir`:
/// nanoseconds per iteration (the mean), each pick beside round robin of
/// the same size and each rebuild beside a first build.
pub fn criterion(dir: &Path) -> Vec<Value> {
    let mut found = Vec::new();
    walk(dir, 0, &mut found);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
        .into_iter()
        .filter_map(|(_, bench, estimates)| criterion_record(&bench, &estimates))
        .collect()
}

fn walk(dir: &Path, depth: usize, found: &mut Vec<(String, Value, Value)>) {
    if depth > 5 {
        return;
    }
    let new = dir.join("new");
    let read = |name: &str| {
        std::fs::read_to_string(new.join(name))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    };
    if let (Some(bench), Some(estimates)) = (read("benchmark.json"), read("estimates.json")) {
        found.push((dir.display().to_string(), bench, estimates));
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.path().is_dir() {
            walk(&entry.path(), depth + 1, found);
        }
    }
}

/// One criterion benchmark as a record, if it is one of the report's.
pub fn criterion_record(bench: &Value, estimates: &Value) -> Option<Value> {
    let group = bench["group_id"].as_str()?;
    let function = bench["function_id"].as_str().unwrap_or("");
    let value = bench["value_str"].as_str();
    let ns = estimates["mean"]["point_estimate"].as_f64()?;
    let (figure, title, row, peer) = match group {
        "pick" => {
            let n = value.unwrap_or("?");
            (
                "pick",
                "Balancer pick cost (criterion, one thread)",
                format!("{function} n={n}"),
                format!("round_robin n={n}"),
            )
        }
        "rebuild" => (
            "rebuild",
            "Balancer snapshot rebuild cost (criterion, 10,000 instances)",
            [function, value.unwrap_or("")].join(" ").trim().to_string(),
            "new_10000".to_string(),
        ),
        _ => return None,
    };
    let mut record = json!({
        "figure": figure,
        "title": title,
        "row": row,
        "metrics": [{"name": "time", "unit": "ns", "value": ns, "lower_is_better": true}],
    });
    if row != peer {
        record["peer"] = json!(peer);
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_parse_and_name_a_figure_are_kept_in_order() {
        let text = r#"{"figure":"a","row":"x","metrics":[]}

not json
{"row":"no figure"}
{"figure":"b","row":"y","metrics":[]}
"#;
        let records = parse_lines(text);
        let rows: Vec<&str> = records.iter().map(|r| r["row"].as_str().unwrap()).collect();
        assert_eq!(rows, ["x", "y"]);
    }

    #[test]
    fn a_missing_file_is_no_records() {
        let records = read_lines(Path::new("/nonexistent/records.jsonl")).unwrap();
        assert!(records.is_empty());
    }

    #[test]
    fn criterion_picks_compare_with_round_robin_of_the_same_size() {
        let bench = json!({"group_id": "pick", "function_id": "p2c", "value_str": "1000"});
        let estimates = json!({"mean": {"point_estimate": 42.5}});
        let record = criterion_record(&bench, &estimates).unwrap();
        assert_eq!(record["row"], "p2c n=1000");
        assert_eq!(record["peer"], "round_robin n=1000");
        assert_eq!(record["metrics"][0]["value"], 42.5);
        let rr = json!({"group_id": "pick", "function_id": "round_robin", "value_str": "1000"});
        assert!(
            criterion_record(&rr, &estimates)
                .unwrap()
                .get("peer")
                .is_none()
        );
        let other = json!({"group_id": "select", "function_id": "p2c"});
        assert!(criterion_record(&other, &estimates).is_none());
    }

    #[test]
    fn criterion_directories_are_walked() {
        let dir = std::env::temp_dir().join(format!("xtask-criterion-{}", std::process::id()));
        let new = dir.join("rebuild").join("update_10000").join("new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"rebuild","function_id":"update_10000","value_str":null}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":900.0}}"#,
        )
        .unwrap();
        let records = criterion(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["row"], "update_10000");
        assert_eq!(records[0]["peer"], "new_10000");
    }
}
