//! Machine-readable bench figures, for `cargo xtask bench`'s report.
//!
//! Every bench prints its figures as text; when `LODESTAR_BENCH_JSON` names
//! a file, it also appends each figure as one JSON line ([`Record::emit`]).
//! The xtask runs the benches in order with the variable set, reads the
//! lines back and renders `docs/BENCHMARKS.md`, the JSON and the charts.
//!
//! A record is one row of one figure's table: the figure's id and title,
//! the row's label, the row it is compared with (its peer), named metrics,
//! and optionally a latency distribution (quantiles, for a CDF chart) or a
//! timeline (calls/s and errors per bucket).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lodestar_test_support::bench::Record;
//!
//! let samples = vec![Duration::from_millis(1), Duration::from_millis(3)];
//! Record::new("propagation", "Register -> visible", "lodestar on etcd")
//!     .peer("etcd put -> watch")
//!     .latency(&samples)
//!     .emit();
//! ```

use std::io::Write;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The variable that names the JSON lines file records are appended to.
pub const ENV: &str = "LODESTAR_BENCH_JSON";

/// The quantiles a latency distribution keeps (the CDF charts' points).
pub const QUANTILES: [f64; 13] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
];

/// One row of one figure: built with the methods below, written by
/// [`Record::emit`].
#[derive(Debug, Clone)]
pub struct Record {
    fields: Map<String, Value>,
    metrics: Vec<Value>,
}

/// The `q` quantile (0..=1) of `sorted` (ascending), nearest rank; zero when
/// empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// === impl Record ===

impl Record {
    /// A row labelled `row` of the figure `figure` (an id: lowercase, no
    /// spaces), whose table is titled `title`.
    pub fn new(figure: &str, title: &str, row: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("figure".into(), json!(figure));
        fields.insert("title".into(), json!(title));
        fields.insert("row".into(), json!(row));
        Record {
            fields,
            metrics: Vec::new(),
        }
    }

    /// The label of the row this one is compared with (each metric as a
    /// ratio to the peer's metric of the same name).
    pub fn peer(self, row: &str) -> Self {
        self.field("peer", json!(row))
    }

    /// Marks this row as its figure's headline in the report, quoting the
    /// metric `metric` as a ratio to the peer's.
    pub fn headline(self, metric: &str) -> Self {
        self.field("headline", json!(metric))
    }

    /// A free-form note shown under the figure's table (the first one of a
    /// figure wins).
    pub fn note(self, text: &str) -> Self {
        self.field("note", json!(text))
    }

    /// A metric: its name (a column), unit, value, and whether lower is
    /// better (latencies, failures) or higher (throughput).
    pub fn metric(mut self, name: &str, unit: &str, value: f64, lower_is_better: bool) -> Self {
        let value = if value.is_finite() { value } else { 0.0 };
        self.metrics.push(json!({
            "name": name,
            "unit": unit,
            "value": value,
            "lower_is_better": lower_is_better,
        }));
        self
    }

    /// p50 and p99 (ms) as metrics, and the distribution of `samples` at
    /// [`QUANTILES`] for the CDF chart. The samples need not be sorted.
    pub fn latency(self, samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let points: Vec<Value> = QUANTILES
            .iter()
            .map(|&q| json!([q, ms(quantile(&sorted, q))]))
            .collect();
        self.metric("p50", "ms", ms(quantile(&sorted, 0.5)), true)
            .metric("p99", "ms", ms(quantile(&sorted, 0.99)), true)
            .metric("samples", "", sorted.len() as f64, false)
            .field("cdf", Value::Array(points))
    }

    /// A timeline: per bucket of `bucket` starting at zero, the calls that
    /// succeeded (as calls/s) and those that failed (a count).
    pub fn timeline(self, bucket: Duration, ok: &[u64], failed: &[u64]) -> Self {
        let per_second = 1.0 / bucket.as_secs_f64();
        let points: Vec<Value> = ok
            .iter()
            .zip(failed.iter().chain(std::iter::repeat(&0)))
            .enumerate()
            .map(|(i, (&o, &f))| {
                json!([
                    i as f64 * bucket.as_secs_f64(),
                    o as f64 * per_second,
                    f as f64
                ])
            })
            .collect();
        self.field("timeline", Value::Array(points))
    }

    fn field(mut self, key: &str, value: Value) -> Self {
        self.fields.insert(key.into(), value);
        self
    }

    /// The record as one JSON line (no newline).
    pub fn to_json(&self) -> String {
        let mut fields = self.fields.clone();
        fields.insert("metrics".into(), Value::Array(self.metrics.clone()));
        Value::Object(fields).to_string()
    }

    /// Appends the record to the file named by [`ENV`], if set; a file that
    /// cannot be written is reported on stderr (the printed figures stay).
    pub fn emit(self) {
        let Some(path) = std::env::var_os(ENV) else {
            return;
        };
        let line = self.to_json();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = written {
            eprintln!(
                "bench: could not append to {}: {error}",
                path.to_string_lossy()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&samples, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&samples, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&samples, 0.0), Duration::from_millis(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn a_record_carries_its_metrics_distribution_and_timeline() {
        let samples: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        let line = Record::new("fig", "Title", "ours")
            .peer("theirs")
            .latency(&samples)
            .timeline(Duration::from_millis(500), &[10, 20], &[0, 3])
            .to_json();
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["figure"], "fig");
        assert_eq!(value["peer"], "theirs");
        assert_eq!(value["metrics"][0]["name"], "p50");
        assert_eq!(value["metrics"][0]["value"], 5.0);
        assert_eq!(value["metrics"][1]["value"], 10.0);
        assert_eq!(value["cdf"].as_array().unwrap().len(), QUANTILES.len());
        assert_eq!(value["timeline"][1], json!([0.5, 40.0, 3.0]));
    }

    #[test]
    fn non_finite_values_become_zero() {
        let line = Record::new("f", "t", "r")
            .metric("x", "", f64::NAN, true)
            .to_json();
        assert!(line.contains("\"value\":0.0"), "{line}");
    }
}
