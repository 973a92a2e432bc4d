//! `docs/BENCHMARKS.md`: the machine, the command, the headline ratios and
//! a table per figure, each metric beside its ratio to the row's peer.

use std::fmt::Write;

use serde_json::Value;

use super::svg;

/// The rows of one figure, in the order the benches wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The figure's id (its chart's file name).
    pub id: String,
    /// The table's title.
    pub title: String,
    /// The records, one per row.
    pub rows: Vec<Value>,
}

/// The records of a run grouped by figure, in order of first appearance; a
/// row repeated (a bench run twice) keeps its last record.
pub fn figures(run: &Value) -> Vec<Figure> {
    let mut figures: Vec<Figure> = Vec::new();
    let records = run["records"].as_array().map_or(&[][..], Vec::as_slice);
    for record in records {
        let id = record["figure"].as_str().unwrap_or("").to_string();
        let index = match figures.iter().position(|f| f.id == id) {
            Some(i) => i,
            None => {
                figures.push(Figure {
                    title: record["title"].as_str().unwrap_or(&id).to_string(),
                    id,
                    rows: Vec::new(),
                });
                figures.len() - 1
            }
        };
        let rows = &mut figures[index].rows;
        rows.retain(|r| r["row"] != record["row"]);
        rows.push(record.clone());
    }
    figures
}

/// The value of the metric `name` of a record.
pub fn metric(record: &Value, name: &str) -> Option<f64> {
    record["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?["value"]
        .as_f64()
}

/// The row's metric divided by its peer's, when both exist and the peer's
/// is not zero.
pub fn ratio(figure: &Figure, row: &Value, name: &str) -> Option<f64> {
    let peer = row["peer"].as_str()?;
    let peer = figure.rows.iter().find(|r| r["row"] == peer)?;
    let (ours, theirs) = (metric(row, name)?, metric(peer, name)?);
    (theirs != 0.0).then(|| ours / theirs)
}

/// The metric columns of a figure: names in order of first appearance,
/// with their unit.
fn columns(figure: &Figure) -> Vec<(String, String)> {
    let mut columns: Vec<(String, String)> = Vec::new();
    for row in &figure.rows {
        for m in row["metrics"].as_array().map_or(&[][..], Vec::as_slice) {
            let name = m["name"].as_str().unwrap_or("").to_string();
            if !columns.iter().any(|(n, _)| *n == name) {
                columns.push((name, m["unit"].as_str().unwrap_or("").to_string()));
            }
        }
    }
    columns
}

/// A number with as many decimals as its size deserves.
pub fn number(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1000.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else if abs >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// A ratio: two decimals, more when it is small.
pub fn times(r: f64) -> String {
    if r != 0.0 && r.abs() < 0.01 {
        format!("{r:.4}x")
    } else {
        format!("{r:.2}x")
    }
}

/// The table of one figure, in markdown.
pub fn table(figure: &Figure) -> String {
    let columns = columns(figure);
    let mut out = String::from("| | peer |");
    for (name, unit) in &columns {
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" ({unit})")
        };
        let _ = write!(out, " {name}{unit} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(columns.len()));
    out.push('\n');
    for row in &figure.rows {
        let peer = row["peer"].as_str().unwrap_or("");
        let _ = write!(out, "| {} | {peer} |", row["row"].as_str().unwrap_or(""));
        for (name, unit) in &columns {
            // A count without a unit (samples) has no meaningful ratio.
            let r = if unit.is_empty() {
                None
            } else {
                ratio(figure, row, name)
            };
            let cell = match (metric(row, name), r) {
                (Some(v), Some(r)) => format!("{} ({})", number(v), times(r)),
                (Some(v), None) => number(v),
                (None, _) => String::new(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

/// The headline of a figure: the row marked as such (`headline`: the
/// metric to quote), else its first row with a peer on its first metric,
/// as a ratio to the peer.
pub fn headline(figure: &Figure) -> Option<String> {
    let marked = figure.rows.iter().find(|r| r["headline"].is_string());
    let row = marked.or_else(|| figure.rows.iter().find(|r| r["peer"].is_string()))?;
    let name = match row["headline"].as_str() {
        Some(name) => name,
        None => row["metrics"].as_array()?.first()?["name"].as_str()?,
    };
    let label = row["row"].as_str()?;
    match (ratio(figure, row, name), row["peer"].as_str()) {
        (Some(r), Some(peer)) => Some(format!(
            "{}: {label} vs {peer}: {name} {}",
            figure.title,
            times(r)
        )),
        // A peer at zero (no failed call) has no ratio: quote both values.
        (None, Some(peer)) => {
            let theirs = figure
                .rows
                .iter()
                .find(|r| r["peer"].is_null() && r["row"] == peer);
            let theirs = theirs
                .and_then(|t| metric(t, name))
                .map_or("?".into(), number);
            Some(format!(
                "{}: {label}: {name} {} (vs {theirs} for {peer})",
                figure.title,
                number(metric(row, name)?)
            ))
        }
        (_, None) => None,
    }
}

/// The whole report.
pub fn markdown(run: &Value, figures: &[Figure]) -> String {
    let m = &run["machine"];
    let mut out = String::from("# Benchmarks\n\n");
    out.push_str(
        "Written by `cargo xtask bench` (do not edit by hand). Every figure is measured in the \
         same run beside its peer, what a user would pick instead; each metric shows its ratio \
         to the peer's (`1.00x` is a tie; for ms, ns, bytes and failures lower is better, for /s \
         higher). Raw numbers: [benchmarks/results.json](benchmarks/results.json).\n\n",
    );
    let _ = writeln!(
        out,
        "- Command: `{}`",
        run["command"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "- Machine: {} cores, {} GiB, {}, {}",
        m["cores"],
        m["memory_gib"],
        m["cpu"].as_str().unwrap_or("?"),
        m["os"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "- Run time: {} s of measurements (the benches were built first)",
        run["elapsed_s"]
    );
    out.push_str(
        "- The machine is shared with other builds: figures carry that noise; each figure's \
         rows run back to back so peers see the same noise.\n",
    );
    let failures = run["failures"].as_array().map_or(&[][..], Vec::as_slice);
    if !failures.is_empty() {
        out.push_str("\n**Not measured in this run:**\n\n");
        for f in failures {
            let _ = writeln!(out, "- {}", f.as_str().unwrap_or(""));
        }
    }
    let steps = run["steps"].as_array().map_or(&[][..], Vec::as_slice);
    if !steps.is_empty() {
        out.push_str("\n<details><summary>The steps and their times</summary>\n\n");
        for step in steps {
            let _ = writeln!(
                out,
                "- `{}`: {} s",
                step["step"].as_str().unwrap_or(""),
                step["seconds"]
            );
        }
        out.push_str("\n</details>\n");
    }
    out.push_str("\n## Headlines\n\n");
    for line in figures.iter().filter_map(headline) {
        let _ = writeln!(out, "- {line}");
    }
    for figure in figures {
        let _ = write!(out, "\n## {}\n\n", figure.title);
        out.push_str(&table(figure));
        let mut notes: Vec<&str> = Vec::new();
        for note in figure.rows.iter().filter_map(|r| r["note"].as_str()) {
            if !notes.contains(&note) {
                notes.push(note);
                let _ = write!(out, "\n{note}\n");
            }
        }
        if let Some(file) = svg::chart_file(figure) {
            let _ = write!(out, "\n![{}](benchmarks/{file})\n", figure.title);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run() -> Value {
        json!({
            "command": "cargo xtask bench --quick",
            "machine": {"cores": 2, "memory_gib": 23.4, "cpu": "Test CPU", "os": "Debian"},
            "elapsed_s": 12,
            "failures": ["`cargo bench -p x --bench y` failed (exit status: 1)"],
            "records": [
                {"figure": "tp", "title": "Throughput", "row": "lodestar", "peer": "tonic",
                 "metrics": [{"name": "calls", "unit": "/s", "value": 1500.0}]},
                {"figure": "tp", "title": "Throughput", "row": "tonic",
                 "metrics": [{"name": "calls", "unit": "/s", "value": 1000.0}]},
                {"figure": "lat", "title": "Latency", "row": "b", "peer": "a",
                 "metrics": [{"name": "p50", "unit": "ms", "value": 1.0}, {"name": "p99", "unit": "ms", "value": 5.0}]},
                {"figure": "lat", "title": "Latency", "row": "c", "peer": "a", "headline": "p99",
                 "metrics": [{"name": "p50", "unit": "ms", "value": 1.0}, {"name": "p99", "unit": "ms", "value": 1.25}]},
                {"figure": "lat", "title": "Latency", "row": "a", "note": "a note",
                 "metrics": [{"name": "p50", "unit": "ms", "value": 1.0}, {"name": "p99", "unit": "ms", "value": 2.5}],
                 "cdf": [[0.5, 1.0], [0.99, 2.5]]},
                {"figure": "tp", "title": "Throughput", "row": "lodestar", "peer": "tonic",
                 "metrics": [{"name": "calls", "unit": "/s", "value": 2000.0}]},
            ]
        })
    }

    #[test]
    fn records_group_by_figure_and_a_repeated_row_keeps_the_last() {
        let figures = figures(&run());
        assert_eq!(figures.len(), 2);
        assert_eq!(figures[0].id, "tp");
        assert_eq!(figures[0].rows.len(), 2);
        assert_eq!(metric(&figures[0].rows[1], "calls"), Some(2000.0));
    }

    #[test]
    fn ratios_are_to_the_peer_row() {
        let figures = figures(&run());
        let tp = &figures[0];
        let ours = tp.rows.iter().find(|r| r["row"] == "lodestar").unwrap();
        assert_eq!(ratio(tp, ours, "calls"), Some(2.0));
        let theirs = tp.rows.iter().find(|r| r["row"] == "tonic").unwrap();
        assert_eq!(ratio(tp, theirs, "calls"), None);
    }

    #[test]
    fn the_table_shows_values_and_ratios() {
        let figures = figures(&run());
        let table = table(&figures[0]);
        assert_eq!(
            table,
            "| | peer | calls (/s) |\n|---|---|---:|\n| tonic |  | 1000 |\n| lodestar | tonic | 2000 (2.00x) |\n"
        );
    }

    #[test]
    fn the_report_has_machine_command_failures_headlines_notes_and_charts() {
        let run = run();
        let figures = figures(&run);
        let md = markdown(&run, &figures);
        assert!(
            md.contains("- Command: `cargo xtask bench --quick`"),
            "{md}"
        );
        assert!(md.contains("2 cores, 23.4 GiB, Test CPU, Debian"), "{md}");
        assert!(md.contains("Not measured in this run"), "{md}");
        assert!(
            md.contains("- Throughput: lodestar vs tonic: calls 2.00x"),
            "{md}"
        );
        assert!(md.contains("a note"), "{md}");
        assert!(md.contains("![Latency](benchmarks/lat.svg)"), "{md}");
        assert!(!md.contains("benchmarks/tp.svg"), "{md}");
    }

    #[test]
    fn numbers_keep_sensible_decimals() {
        assert_eq!(number(12345.678), "12346");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.01234), "0.012");
        assert_eq!(number(3.0), "3");
        assert_eq!(times(0.000111), "0.0001x");
        assert_eq!(times(1.234), "1.23x");
    }
}
