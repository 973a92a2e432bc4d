//! Hand-written SVG charts: a latency CDF (log-scale x) for figures whose
//! rows carry a distribution, and a timeline of calls/s with failed calls
//! for figures whose rows carry one. No plotting crate: two chart shapes
//! are a page of code and need nothing to build.

use std::fmt::Write;

use serde_json::Value;

use super::report::Figure;

/// One chart to write under `docs/benchmarks/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// The file name, `<figure id>.svg`.
    pub file: String,
    /// The document.
    pub svg: String,
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 330.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
];

/// The chart file of a figure, if its rows carry a distribution or a
/// timeline.
pub fn chart_file(figure: &Figure) -> Option<String> {
    let has = |key: &str| figure.rows.iter().any(|r| r[key].is_array());
    (has("cdf") || has("timeline")).then(|| format!("{}.svg", figure.id))
}

/// The charts of every figure that has one.
pub fn charts(figures: &[Figure]) -> Vec<Chart> {
    figures
        .iter()
        .filter_map(|f| {
            let file = chart_file(f)?;
            let svg = if f.rows.iter().any(|r| r["timeline"].is_array()) {
                timeline(f)
            } else {
                cdf(f)
            };
            Some(Chart { file, svg })
        })
        .collect()
}

fn points(row: &Value, key: &str) -> Vec<Vec<f64>> {
    row[key]
        .as_array()
        .map(|points| {
            points
                .iter()
                .filter_map(|p| p.as_array())
                .map(|p| p.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
                .collect()
        })
        .unwrap_or_default()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn open(title: &str) -> String {
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"22\" font-size=\"14\" text-anchor=\"middle\">{}</text>",
        WIDTH / 2.0,
        escape(title)
    );
    out
}

fn frame(out: &mut String, x_label: &str, y_label: &str) {
    let (x1, y1) = (WIDTH - RIGHT, HEIGHT - BOTTOM);
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>",
        x1 - LEFT,
        y1 - TOP
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (LEFT + x1) / 2.0,
        HEIGHT - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        out,
        "<text transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        (TOP + y1) / 2.0,
        escape(y_label)
    );
}

fn legend(out: &mut String, i: usize, label: &str) {
    // Long labels are cut to the legend's width; the table has them whole.
    let label: String = if label.chars().count() > 46 {
        label.chars().take(45).chain(['…']).collect()
    } else {
        label.to_string()
    };
    let label = label.as_str();
    let y = TOP + 10.0 + i as f64 * 18.0;
    let x = WIDTH - RIGHT + 12.0;
    let colour = COLOURS[i % COLOURS.len()];
    let _ = writeln!(
        out,
        "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
         <text x=\"{}\" y=\"{}\">{}</text>",
        x + 18.0,
        x + 24.0,
        y + 4.0,
        escape(label)
    );
}

fn tick(out: &mut String, x: f64, y: f64, label: &str, vertical_axis: bool) {
    let (anchor, tx, ty) = if vertical_axis {
        ("end", x - 6.0, y + 4.0)
    } else {
        ("middle", x, y + 16.0)
    };
    let _ = writeln!(
        out,
        "<text x=\"{tx}\" y=\"{ty}\" text-anchor=\"{anchor}\" fill=\"#333\">{}</text>",
        escape(label)
    );
}

fn grid(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64) {
    let _ = writeln!(
        out,
        "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"#ddd\"/>"
    );
}

/// The top of the percentile axis: p99.99 and the maximum.
const TAIL_MAX: f64 = 4.0;

/// How far into the tail a quantile is: -log10(1 - q), capped at
/// [`TAIL_MAX`] (the maximum sits there).
fn tail(q: f64) -> f64 {
    if q >= 1.0 {
        TAIL_MAX
    } else {
        (-(1.0 - q.max(0.0)).log10()).min(TAIL_MAX)
    }
}

/// A latency CDF: x is latency on a log scale, y the percentile with the
/// tail stretched.
pub fn cdf(figure: &Figure) -> String {
    let rows: Vec<(&Value, Vec<Vec<f64>>)> = figure
        .rows
        .iter()
        .map(|r| (r, points(r, "cdf")))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let values = rows.iter().flat_map(|(_, p)| p.iter().map(|q| q[1]));
    let (min, max) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| {
        (if v > 0.0 { lo.min(v) } else { lo }, hi.max(v))
    });
    let lo = if min == f64::MAX { 0.001 } else { min }.log10().floor();
    let hi = max.max(10f64.powf(lo)).log10().ceil().max(lo + 1.0);
    let (x1, y1) = (WIDTH - RIGHT, HEIGHT - BOTTOM);
    let x = |ms: f64| LEFT + (ms.max(10f64.powf(lo)).log10() - lo) / (hi - lo) * (x1 - LEFT);
    // The tail matters: y is -log10(1 - q) (p50, p90, p99, p99.9 evenly spaced).
    let y = |q: f64| y1 - tail(q) / TAIL_MAX * (y1 - TOP);
    let mut out = open(&figure.title);
    for decade in (lo as i32)..=(hi as i32) {
        let v = 10f64.powi(decade);
        grid(&mut out, x(v), TOP, x(v), y1);
        tick(&mut out, x(v), y1, &format!("{v}"), false);
    }
    for (q, label) in [
        (0.0, "p0"),
        (0.5, "p50"),
        (0.9, "p90"),
        (0.99, "p99"),
        (0.999, "p99.9"),
        (1.0, "max"),
    ] {
        grid(&mut out, LEFT, y(q), x1, y(q));
        tick(&mut out, LEFT, y(q), label, true);
    }
    frame(
        &mut out,
        "latency (ms, log scale)",
        "percentile (tail stretched)",
    );
    for (i, (row, points)) in rows.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p[1]), y(p[0])))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            COLOURS[i % COLOURS.len()],
            path.join(" ")
        );
        legend(&mut out, i, row["row"].as_str().unwrap_or(""));
    }
    out.push_str("</svg>\n");
    out
}

/// A timeline: calls/s per row as lines, failed calls as red bars (their
/// count written above).
pub fn timeline(figure: &Figure) -> String {
    let rows: Vec<(&Value, Vec<Vec<f64>>)> = figure
        .rows
        .iter()
        .map(|r| (r, points(r, "timeline")))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let all = || rows.iter().flat_map(|(_, p)| p.iter());
    let t_max = all().map(|p| p[0]).fold(0.0, f64::max).max(1.0);
    let rate_max = all().map(|p| p[1]).fold(0.0, f64::max).max(1.0) * 1.1;
    let (x1, y1) = (WIDTH - RIGHT, HEIGHT - BOTTOM);
    let x = |t: f64| LEFT + t / t_max * (x1 - LEFT);
    let y = |r: f64| y1 - r / rate_max * (y1 - TOP);
    let mut out = open(&figure.title);
    for i in 0..=4 {
        let r = rate_max / 1.1 * i as f64 / 4.0;
        grid(&mut out, LEFT, y(r), x1, y(r));
        tick(&mut out, LEFT, y(r), &format!("{r:.0}"), true);
        let t = t_max * i as f64 / 4.0;
        tick(&mut out, x(t), y1, &format!("{t:.1}"), false);
    }
    frame(
        &mut out,
        "time (s); bars at the bottom: failed calls (log height)",
        "successful calls per second",
    );
    for (i, (row, points)) in rows.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p[0]), y(p[1])))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        // Failed calls: a bar per bucket in the row's colour, its height
        // growing with the log of the count (1 -> 8 px, 10 -> 20, 1000 -> 44).
        let offset = i as f64 * 3.0;
        for p in points
            .iter()
            .filter(|p| p.get(2).copied().unwrap_or(0.0) > 0.0)
        {
            let h = 8.0 + 12.0 * p[2].log10();
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"{h:.1}\" fill=\"{colour}\" \
                 stroke=\"#d62728\" stroke-width=\"0.5\"><title>{} failed</title></rect>",
                x(p[0]) + offset,
                y1 - h,
                p[2]
            );
        }
        let failed: f64 = points
            .iter()
            .map(|p| p.get(2).copied().unwrap_or(0.0))
            .sum();
        let label = format!("{failed} failed: {}", row["row"].as_str().unwrap_or(""));
        legend(&mut out, i, &label);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn figure(rows: Vec<Value>) -> Figure {
        Figure {
            id: "fig".into(),
            title: "A & B".into(),
            rows,
        }
    }

    #[test]
    fn a_cdf_has_one_line_per_row_and_escapes_text() {
        let f = figure(vec![
            json!({"row": "p2c <fast>", "cdf": [[0.5, 1.0], [0.99, 20.0], [1.0, 55.0]]}),
            json!({"row": "tonic", "cdf": [[0.5, 0.2], [1.0, 3.0]]}),
            json!({"row": "no distribution"}),
        ]);
        let svg = cdf(&f);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("A &amp; B"));
        assert!(svg.contains("p2c &lt;fast&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn a_timeline_marks_failed_calls() {
        let f = figure(vec![
            json!({"row": "graceful", "timeline": [[0.0, 100.0, 0.0], [0.5, 90.0, 0.0]]}),
            json!({"row": "abrupt", "timeline": [[0.0, 100.0, 0.0], [0.5, 40.0, 7.0]]}),
        ]);
        let svg = timeline(&f);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<title>7 failed</title>").count(), 1);
        assert_eq!(svg.matches("failed</title>").count(), 1);
        assert!(svg.contains("7 failed: abrupt"));
        assert!(svg.contains("0 failed: graceful"));
    }

    #[test]
    fn charts_only_for_figures_with_data() {
        let plain = figure(vec![json!({"row": "x"})]);
        assert_eq!(chart_file(&plain), None);
        let with = figure(vec![json!({"row": "x", "cdf": [[1.0, 1.0]]})]);
        let charts = charts(&[plain, with]);
        assert_eq!(charts.len(), 1);
        assert_eq!(charts[0].file, "fig.svg");
    }
}
