//! Prometheus text-format metrics, hand-rolled: a handful of counters and histograms do not
//! justify another dependency. Recorded by the HTTP middleware (per method, route template and
//! status) and the encoder thread (batch sizes, forward-pass time); queue depth and index size
//! are read when `/metrics` is scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Request-latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// HTTP methods recorded by name; any other method is recorded as `OTHER`, so clients cannot
/// grow the registry with made-up methods (route labels are already bounded: templates or
/// `unmatched`).
const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The label a request's method is recorded under.
fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS.iter().copied().find(|m| *m == method).unwrap_or("OTHER")
}

/// Texts per forward pass.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket, plus one for +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.counts[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub documents: u64,
    pub passages: u64,
    pub indexed_vectors: usize,
    pub ready: bool,
}

/// All recorded metrics. Cheap to update: one short mutex hold per event.
pub struct Metrics {
    /// (method, route, status) → latency histogram (its count is the request count).
    http: Mutex<BTreeMap<(&'static str, String, u16), Histogram>>,
    batch_sizes: Mutex<Histogram>,
    encode_seconds: Mutex<Histogram>,
    largest_batch: AtomicUsize,
    abandoned: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http: Mutex::new(BTreeMap::new()),
            batch_sizes: Mutex::new(Histogram::new(BATCH_BUCKETS)),
            encode_seconds: Mutex::new(Histogram::new(LATENCY_BUCKETS)),
            largest_batch: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
        }
    }
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// One answered HTTP request (`route` is the matched template, not the raw path).
    pub fn observe_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        if let Ok(mut m) = self.http.lock() {
            m.entry((method_label(method), route.to_string(), status))
                .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
                .observe(took.as_secs_f64());
        }
    }

    /// One forward pass of `size` texts that took `took`.
    pub fn observe_batch(&self, size: usize, took: Duration) {
        self.largest_batch.fetch_max(size, Ordering::Relaxed);
        if let Ok(mut h) = self.batch_sizes.lock() {
            h.observe(size as f64);
        }
        if let Ok(mut h) = self.encode_seconds.lock() {
            h.observe(took.as_secs_f64());
        }
    }

    /// One queued request dropped unencoded because its client went away.
    pub fn observe_abandoned(&self) {
        self.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests dropped unencoded so far.
    pub fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Largest forward pass so far (tests use it to see that batching happened).
    pub fn max_batch_seen(&self) -> usize {
        self.largest_batch.load(Ordering::Relaxed)
    }

    /// The whole registry in Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        out.push_str("# HELP engine_http_requests_total HTTP requests answered, by method, route and status.\n");
        out.push_str("# TYPE engine_http_requests_total counter\n");
        let http = self.http.lock().map(|m| m.clone()).unwrap_or_default();
        for ((method, route, status), h) in &http {
            let _ = writeln!(
                out,
                "engine_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {}",
                label(method),
                label(route),
                h.count
            );
        }
        out.push_str("# HELP engine_http_request_duration_seconds Time to answer HTTP requests.\n");
        out.push_str("# TYPE engine_http_request_duration_seconds histogram\n");
        for ((method, route, status), h) in &http {
            let labels = format!(
                "method=\"{}\",route=\"{}\",status=\"{status}\"",
                label(method),
                label(route)
            );
            h.render(&mut out, "engine_http_request_duration_seconds", &labels);
        }
        out.push_str("# HELP engine_encode_batch_size Texts per encoder forward pass.\n");
        out.push_str("# TYPE engine_encode_batch_size histogram\n");
        if let Ok(h) = self.batch_sizes.lock() {
            h.render(&mut out, "engine_encode_batch_size", "");
        }
        out.push_str("# HELP engine_encode_duration_seconds Time of one encoder forward pass.\n");
        out.push_str("# TYPE engine_encode_duration_seconds histogram\n");
        if let Ok(h) = self.encode_seconds.lock() {
            h.render(&mut out, "engine_encode_duration_seconds", "");
        }
        let _ = writeln!(
            out,
            "# HELP engine_encode_batch_size_max Largest forward pass so far.\n# TYPE engine_encode_batch_size_max gauge\nengine_encode_batch_size_max {}",
            self.max_batch_seen()
        );
        let _ = writeln!(
            out,
            "# HELP engine_encode_abandoned_total Queued requests dropped unencoded because their client went away.\n# TYPE engine_encode_abandoned_total counter\nengine_encode_abandoned_total {}",
            self.abandoned()
        );
        let gauges: [(&str, &str, f64); 6] = [
            ("engine_queue_depth", "Requests waiting for the encoder.", g.queue_depth as f64),
            (
                "engine_queue_capacity",
                "Most requests allowed to wait for the encoder.",
                g.queue_capacity as f64,
            ),
            ("engine_index_documents", "Documents in the database.", g.documents as f64),
            ("engine_index_passages", "Passages in the database.", g.passages as f64),
            ("engine_index_vectors", "Vectors in the ANN index.", g.indexed_vectors as f64),
            (
                "engine_ready",
                "1 once the model and index are loaded.",
                if g.ready { 1.0 } else { 0.0 },
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_batch(1, Duration::from_millis(1));
        m.observe_batch(3, Duration::from_millis(2));
        m.observe_request("GET", "/search", 200, Duration::from_millis(3));
        let text = m.render(&Gauges::default());
        assert!(text.contains("engine_encode_batch_size_bucket{le=\"1\"} 1"), "{text}");
        assert!(text.contains("engine_encode_batch_size_bucket{le=\"4\"} 2"), "{text}");
        assert!(text.contains("engine_encode_batch_size_count 2"), "{text}");
        assert!(text.contains(
            "engine_http_requests_total{method=\"GET\",route=\"/search\",status=\"200\"} 1"
        ));
        assert_eq!(m.max_batch_seen(), 3);
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..100 {
            m.observe_request(&format!("FOO{i}"), "unmatched", 405, Duration::from_millis(1));
        }
        m.observe_request("DELETE", "/documents/{id}", 404, Duration::from_millis(1));
        let text = m.render(&Gauges::default());
        assert!(!text.contains("FOO"), "{text}");
        assert!(text.contains(
            "engine_http_requests_total{method=\"OTHER\",route=\"unmatched\",status=\"405\"} 100"
        ));
        assert!(text.contains("method=\"DELETE\""));
    }
}
