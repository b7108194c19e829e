//! Prometheus metrics: labelled counters and histograms kept per server instance, and
//! their rendering in the Prometheus text exposition format (version 0.0.4).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

type Labels = Vec<(&'static str, String)>;

/// A gauge computed at scrape time: name, labels, value.
pub type Gauge = (&'static str, Vec<(&'static str, String)>, f64);

/// Upper bounds (seconds) of the latency histograms.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Every metric pullgate exports: name, type, help.
pub const CATALOG: &[(&str, &str, &str)] = &[
    (
        "pullgate_http_requests_total",
        "counter",
        "Client requests by route, method and status.",
    ),
    (
        "pullgate_http_request_duration_seconds",
        "histogram",
        "Time to a client response's headers, by route.",
    ),
    (
        "pullgate_cache_lookups_total",
        "counter",
        "Cache lookups by kind and result (hit, miss, stale, revalidated, fill-join).",
    ),
    (
        "pullgate_served_bytes_total",
        "counter",
        "Blob bytes sent to clients, from the cache or from a running fill.",
    ),
    (
        "pullgate_upstream_bytes_total",
        "counter",
        "Blob bytes fetched from upstream (registry or CDN).",
    ),
    (
        "pullgate_upstream_request_duration_seconds",
        "histogram",
        "Time to upstream response headers, per request hop.",
    ),
    (
        "pullgate_upstream_errors_total",
        "counter",
        "Failed upstream requests by kind.",
    ),
    ("pullgate_fills_in_flight", "gauge", "Blob fills running now."),
    (
        "pullgate_verification_failures_total",
        "counter",
        "Upstream content that failed digest or size verification.",
    ),
    (
        "pullgate_redirects_refused_total",
        "counter",
        "Upstream redirects refused because the host is not in allow_redirect_hosts.",
    ),
    (
        "pullgate_evictions_total",
        "counter",
        "Cache entries removed by pullgate.",
    ),
    (
        "pullgate_cache_size_bytes",
        "gauge",
        "Bytes of cached blobs plus the database on disk.",
    ),
    ("pullgate_cache_entries", "gauge", "Cached entries by kind."),
];

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Series by metric name, each a short list of label sets. Recording looks a series up
/// by comparing the caller's borrowed labels, so a hit allocates nothing (this runs
/// several times per request, under one lock).
#[derive(Default)]
struct Registry {
    counters: HashMap<&'static str, Vec<(Labels, u64)>>,
    histograms: HashMap<&'static str, Vec<(Labels, Histogram)>>,
}

fn same_labels(owned: &Labels, pairs: &[(&'static str, &str)]) -> bool {
    owned.len() == pairs.len() && owned.iter().zip(pairs).all(|((k, v), (pk, pv))| k == pk && v == pv)
}

/// The series of `name` with exactly `pairs`, created on first use.
fn series<'a, T: Default>(
    map: &'a mut HashMap<&'static str, Vec<(Labels, T)>>,
    name: &'static str,
    pairs: &[(&'static str, &str)],
) -> &'a mut T {
    let list = map.entry(name).or_default();
    let i = match list.iter().position(|(l, _)| same_labels(l, pairs)) {
        Some(i) => i,
        None => {
            list.push((labels(pairs), T::default()));
            list.len() - 1
        }
    };
    &mut list[i].1
}

/// A metric's series in a stable order for rendering.
fn sorted<T>(list: Option<&Vec<(Labels, T)>>) -> Vec<&(Labels, T)> {
    let mut v: Vec<_> = list.map(|l| l.iter().collect()).unwrap_or_default();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[derive(Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render_labels(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Metrics {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)], by: u64) {
        *series(&mut self.registry().counters, name, pairs) += by;
    }

    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], seconds: f64) {
        let mut r = self.registry();
        let h = series(&mut r.histograms, name, pairs);
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// A counter's current value (tests, `cache stats`).
    pub fn counter(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> u64 {
        self.registry()
            .counters
            .get(name)
            .and_then(|list| list.iter().find(|(l, _)| same_labels(l, pairs)))
            .map_or(0, |(_, v)| *v)
    }

    /// The sum of a counter over all label sets whose labels include `pairs`.
    pub fn counter_sum(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> u64 {
        self.registry()
            .counters
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(l, _)| pairs.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
            .map(|(_, v)| *v)
            .sum()
    }

    /// The text exposition, with gauges computed by the caller at scrape time.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let r = self.registry();
        let mut out = String::new();
        for (name, kind, help) in CATALOG {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *kind {
                "counter" => {
                    for (l, v) in sorted(r.counters.get(name)) {
                        let _ = writeln!(out, "{name}{} {v}", render_labels(l, None));
                    }
                }
                "histogram" => {
                    for (l, h) in sorted(r.histograms.get(name)) {
                        let n = name;
                        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                            let _ = writeln!(
                                out,
                                "{n}_bucket{} {}",
                                render_labels(l, Some(("le", bound.to_string()))),
                                h.buckets[i]
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{n}_bucket{} {}",
                            render_labels(l, Some(("le", "+Inf".into()))),
                            h.count
                        );
                        let _ = writeln!(out, "{n}_sum{} {}", render_labels(l, None), h.sum);
                        let _ = writeln!(out, "{n}_count{} {}", render_labels(l, None), h.count);
                    }
                }
                _ => {
                    for (n, l, v) in gauges.iter().filter(|(n, _, _)| n == name) {
                        let _ = writeln!(out, "{n}{} {v}", render_labels(l, None));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.inc(
            "pullgate_http_requests_total",
            &[("route", "blob"), ("method", "GET"), ("status", "200")],
            2,
        );
        m.observe("pullgate_http_request_duration_seconds", &[("route", "blob")], 0.003);
        let text = m.render(&[("pullgate_fills_in_flight", vec![], 1.0)]);
        assert!(text.contains("pullgate_http_requests_total{route=\"blob\",method=\"GET\",status=\"200\"} 2"));
        assert!(text.contains("pullgate_http_request_duration_seconds_bucket{route=\"blob\",le=\"0.0025\"} 0"));
        assert!(text.contains("pullgate_http_request_duration_seconds_bucket{route=\"blob\",le=\"0.005\"} 1"));
        assert!(text.contains("pullgate_http_request_duration_seconds_count{route=\"blob\"} 1"));
        assert!(text.contains("pullgate_fills_in_flight 1"));
        assert_eq!(m.counter_sum("pullgate_http_requests_total", &[("route", "blob")]), 2);
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.inc("pullgate_redirects_refused_total", &[("host", "a\"b\\c\nd")], 1);
        assert!(m.render(&[]).contains(r#"host="a\"b\\c\nd""#));
    }
}
