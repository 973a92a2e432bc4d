//! Prometheus metrics, written by hand in the text exposition format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>):
//!
//! - `lodestar_gateway_requests_total{route,instance,code}`: answered
//!   requests (`instance` is empty when none was picked: 404, 429, 503...);
//! - `lodestar_gateway_request_duration_seconds{route,instance}`: a
//!   histogram of the time to the response head;
//! - `lodestar_gateway_retries_total{route}`: tries after the first;
//! - `lodestar_gateway_ejections_total{service,instance}`: outlier ejections;
//! - `lodestar_gateway_ejected{service}`: instances ejected now.

use std::{collections::BTreeMap, fmt::Write, sync::Mutex, time::Duration};

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The gateway's counters; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By route, then instance.
    series: BTreeMap<String, BTreeMap<String, Series>>,
    retries: BTreeMap<String, u64>,
    ejections: BTreeMap<(String, String), u64>,
    ejected: BTreeMap<String, usize>,
}

/// What is counted per route and instance.
#[derive(Debug, Default)]
struct Series {
    codes: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

// === impl Metrics ===

impl Metrics {
    /// Counts an answered request.
    pub fn request(&self, route: &str, instance: &str, code: u16, elapsed: Duration) {
        let mut inner = self.lock();
        let series = match inner
            .series
            .get_mut(route)
            .and_then(|r| r.get_mut(instance))
        {
            Some(series) => series,
            // Allocates the labels once per route and instance.
            None => inner
                .series
                .entry(route.to_string())
                .or_default()
                .entry(instance.to_string())
                .or_default(),
        };
        *series.codes.entry(code).or_default() += 1;
        let histogram = &mut series.latency;
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += secs;
    }

    /// Counts a retry.
    pub fn retry(&self, route: &str) {
        *self.lock().retries.entry(route.to_string()).or_default() += 1;
    }

    /// Counts an outlier ejection.
    pub fn ejection(&self, service: &str, instance: &str) {
        *self
            .lock()
            .ejections
            .entry((service.to_string(), instance.to_string()))
            .or_default() += 1;
    }

    /// Sets how many instances of `service` are ejected now.
    pub fn set_ejected(&self, service: &str, count: usize) {
        self.lock().ejected.insert(service.to_string(), count);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        header(&mut out, "requests_total", "counter", "Answered requests.");
        let requests = inner.series.iter().flat_map(|(route, instances)| {
            instances.iter().flat_map(move |(instance, series)| {
                series
                    .codes
                    .iter()
                    .map(move |(code, n)| (route, instance, code, n))
            })
        });
        for (route, instance, code, n) in requests {
            let _ = writeln!(
                out,
                "lodestar_gateway_requests_total{{route=\"{}\",instance=\"{}\",code=\"{code}\"}} {n}",
                escape(route),
                escape(instance)
            );
        }
        header(
            &mut out,
            "request_duration_seconds",
            "histogram",
            "Time to the response head.",
        );
        let latency = inner.series.iter().flat_map(|(route, instances)| {
            instances
                .iter()
                .map(move |(instance, series)| (route, instance, &series.latency))
        });
        for (route, instance, h) in latency {
            let labels = format!(
                "route=\"{}\",instance=\"{}\"",
                escape(route),
                escape(instance)
            );
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "lodestar_gateway_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "lodestar_gateway_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 lodestar_gateway_request_duration_seconds_sum{{{labels}}} {}\n\
                 lodestar_gateway_request_duration_seconds_count{{{labels}}} {}",
                h.count, h.sum, h.count
            );
        }
        header(
            &mut out,
            "retries_total",
            "counter",
            "Tries after the first.",
        );
        for (route, n) in &inner.retries {
            let _ = writeln!(
                out,
                "lodestar_gateway_retries_total{{route=\"{}\"}} {n}",
                escape(route)
            );
        }
        header(&mut out, "ejections_total", "counter", "Outlier ejections.");
        for ((service, instance), n) in &inner.ejections {
            let _ = writeln!(
                out,
                "lodestar_gateway_ejections_total{{service=\"{}\",instance=\"{}\"}} {n}",
                escape(service),
                escape(instance)
            );
        }
        header(&mut out, "ejected", "gauge", "Instances ejected now.");
        for (service, n) in &inner.ejected {
            let _ = writeln!(
                out,
                "lodestar_gateway_ejected{{service=\"{}\"}} {n}",
                escape(service)
            );
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP lodestar_gateway_{name} {help}\n# TYPE lodestar_gateway_{name} {kind}"
    );
}

/// A label value as the format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_and_escapes() {
        let metrics = Metrics::default();
        metrics.request("/api", "a", 200, Duration::from_millis(3));
        metrics.request("/api", "a", 200, Duration::from_millis(30));
        metrics.request("/\"q\"", "", 404, Duration::ZERO);
        metrics.retry("/api");
        metrics.ejection("echo", "a");
        let text = metrics.render();
        assert!(text.contains(
            "lodestar_gateway_requests_total{route=\"/api\",instance=\"a\",code=\"200\"} 2"
        ));
        assert!(text.contains("route=\"/\\\"q\\\"\""));
        assert!(text.contains("lodestar_gateway_request_duration_seconds_bucket{route=\"/api\",instance=\"a\",le=\"0.005\"} 1"));
        assert!(text.contains(
            "lodestar_gateway_request_duration_seconds_count{route=\"/api\",instance=\"a\"} 2"
        ));
        assert!(text.contains("lodestar_gateway_retries_total{route=\"/api\"} 1"));
        assert!(
            text.contains("lodestar_gateway_ejections_total{service=\"echo\",instance=\"a\"} 1")
        );
    }
}
