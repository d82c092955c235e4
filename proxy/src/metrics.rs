//! Counters and latency histograms for Prometheus (`/metrics` on the admin listener): plain atomics, rendered as
//! text exposition. No metrics crate: a handful of series does not need one.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that is set, not added to.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter with one label.
#[derive(Debug, Default)]
pub struct LabeledCounter(Mutex<Vec<(String, u64)>>);

impl LabeledCounter {
    /// Adds one to `label`'s series.
    pub fn inc(&self, label: &str) {
        let mut v = self.0.lock();
        match v.iter_mut().find(|(l, _)| l == label) {
            Some((_, n)) => *n += 1,
            None => v.push((label.to_string(), 1)),
        }
    }
    /// The value for `label`.
    pub fn get(&self, label: &str) -> u64 {
        self.0
            .lock()
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }
    fn snapshot(&self) -> Vec<(String, u64)> {
        let mut v = self.0.lock().clone();
        v.sort();
        v
    }
}

/// Upper bounds of the histogram buckets, in microseconds: 5 µs (a policy decision) up to 30 s (a held request
/// waiting for its approval).
pub const BUCKETS_US: [u64; 21] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// A latency histogram with the fixed [`BUCKETS_US`] (plus `+Inf`); an observation is three relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    /// Sum of the observations, in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one duration. A bucket's bound is inclusive (`le`), as Prometheus defines it.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|&b| b < us);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The cumulative count of each bucket (`le` in microseconds, `None` for `+Inf`), then the sum in seconds.
    fn snapshot(&self) -> (Vec<(Option<u64>, u64)>, f64) {
        let mut acc = 0;
        let rows = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                acc += b.load(Ordering::Relaxed);
                (BUCKETS_US.get(i).copied(), acc)
            })
            .collect();
        (rows, self.sum_us.load(Ordering::Relaxed) as f64 / 1e6)
    }

    /// Appends this histogram's series (`_bucket`, `_sum`, `_count`) with `labels` (`key="value"`, or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let (rows, sum) = self.snapshot();
        let sep = if labels.is_empty() { "" } else { "," };
        let mut total = 0;
        for (le, n) in rows {
            total = n;
            let le = le.map_or_else(|| "+Inf".to_string(), |us| (us as f64 / 1e6).to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text exposition format requires.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The status classes [`Metrics::request_duration`] is split by.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Request latency, one histogram per HTTP status class of the response ([`STATUS_CLASSES`]).
#[derive(Debug, Default)]
pub struct StatusHistograms([Histogram; 5]);

impl StatusHistograms {
    /// Records a request that was answered with `status`.
    pub fn observe(&self, status: u16, d: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(h) = self.0.get(class) {
            h.observe(d);
        }
    }

    /// The histogram of one class (`"2xx"`, ...).
    pub fn class(&self, class: &str) -> Option<&Histogram> {
        STATUS_CLASSES
            .iter()
            .position(|c| *c == class)
            .and_then(|i| self.0.get(i))
    }
}

/// Every counter the proxy keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests received on the data plane.
    pub requests_total: Counter,
    /// Decisions by effect (`allow`, `deny`, `hold`).
    pub decisions: LabeledCounter,
    /// Authentication failures.
    pub auth_failures: Counter,
    /// Requests refused or delayed because the log queue was full.
    pub log_queue_full: Counter,
    /// Decision-log commit failures.
    pub log_errors: Counter,
    /// Bundle reloads by outcome (`live`, `unchanged`, `failed`), as the admin API names them.
    pub reloads: LabeledCounter,
    /// 1 while the last reload attempt failed (the active bundle keeps serving), 0 after one that went live or
    /// found the bundle unchanged.
    pub reload_failing: Gauge,
    /// Webhook deliveries by outcome (`ok`, `retry`, `failed`).
    pub webhooks: LabeledCounter,
    /// Shadow-evaluation disagreements.
    pub shadow_disagreements: Counter,
    /// Automatic decision-log retention runs by outcome (`ok`, `failed`).
    pub prune_runs: LabeledCounter,
    /// Decision-log records deleted by automatic retention.
    pub pruned_records: Counter,
    /// Records the last successful retention run deleted.
    pub prune_last_deleted: Gauge,
    /// When a retention run last finished, whatever its outcome (Unix seconds; 0: never).
    pub prune_last_run: Gauge,
    /// When a retention run last succeeded (Unix seconds; 0: never).
    pub prune_last_success: Gauge,
    /// Data-plane requests from arrival to response, decision log included, by status class.
    pub request_duration: StatusHistograms,
    /// Policy evaluation (the authorize stage) of each request that reached it.
    pub decision_duration: Histogram,
    /// How long a response waited for its decision record (the SQLite commit, or the journal write).
    pub log_wait: Histogram,
}

impl Metrics {
    /// Prometheus text exposition format: these metrics, then what lives elsewhere: each upstream's latency
    /// histogram by service name, and `gauges` and `counters` (the grant index, the decision log writer) as
    /// `(name, help, value)`.
    pub fn render(
        &self,
        upstreams: &[(&str, &Histogram)],
        gauges: &[(&str, &str, f64)],
        counters: &[(&str, &str, u64)],
    ) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "jitgate_requests_total",
            "Requests received on the data plane.",
            self.requests_total.get(),
        );
        counter(
            "jitgate_auth_failures_total",
            "Authentication failures.",
            self.auth_failures.get(),
        );
        counter(
            "jitgate_log_queue_full_total",
            "Requests refused or delayed by a full decision-log queue.",
            self.log_queue_full.get(),
        );
        counter(
            "jitgate_log_errors_total",
            "Decision-log commit failures.",
            self.log_errors.get(),
        );
        counter(
            "jitgate_shadow_disagreements_total",
            "Requests the shadow bundle decided differently.",
            self.shadow_disagreements.get(),
        );
        counter(
            "jitgate_log_pruned_records_total",
            "Decision-log records deleted by automatic retention ([log] retain).",
            self.pruned_records.get(),
        );
        for (name, help, label, c) in [
            (
                "jitgate_decisions_total",
                "Decisions by effect.",
                "effect",
                &self.decisions,
            ),
            (
                "jitgate_reloads_total",
                "Bundle reloads by outcome.",
                "outcome",
                &self.reloads,
            ),
            (
                "jitgate_webhook_deliveries_total",
                "Webhook deliveries by outcome.",
                "outcome",
                &self.webhooks,
            ),
            (
                "jitgate_log_prune_runs_total",
                "Automatic decision-log retention runs by outcome.",
                "outcome",
                &self.prune_runs,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (l, v) in c.snapshot() {
                let _ = writeln!(out, "{name}{{{label}=\"{l}\"}} {v}");
            }
        }
        for (name, help, g) in [
            (
                "jitgate_reload_last_failed",
                "1 while the last bundle reload attempt failed (the active bundle keeps serving), else 0.",
                &self.reload_failing,
            ),
            (
                "jitgate_log_prune_last_deleted",
                "Records the last successful retention run deleted.",
                &self.prune_last_deleted,
            ),
            (
                "jitgate_log_prune_last_run_timestamp_seconds",
                "When a retention run last finished, whatever its outcome (0: never).",
                &self.prune_last_run,
            ),
            (
                "jitgate_log_prune_last_success_timestamp_seconds",
                "When a retention run last succeeded (0: never).",
                &self.prune_last_success,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                g.get()
            );
        }
        let name = "jitgate_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Data-plane requests from arrival to response (decision log included), by status class.\n# TYPE {name} histogram"
        );
        for (class, h) in STATUS_CLASSES.iter().zip(self.request_duration.0.iter()) {
            h.render(&mut out, name, &format!("class=\"{class}\""));
        }
        for (name, help, h) in [
            (
                "jitgate_decision_duration_seconds",
                "Policy evaluation (the authorize stage) per request.",
                &self.decision_duration,
            ),
            (
                "jitgate_log_wait_seconds",
                "How long a response waited for its decision record (commit, or journal write).",
                &self.log_wait,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            h.render(&mut out, name, "");
        }
        let name = "jitgate_upstream_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Forwarded requests, from sending to the upstream until its response headers, by service.\n# TYPE {name} histogram"
        );
        for (service, h) in upstreams {
            h.render(
                &mut out,
                name,
                &format!("service=\"{}\"", label_value(service)),
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The series of `name` in `text`, as `(labels, value)`.
    fn series<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let (labels, v) = match rest.strip_prefix('{') {
                    Some(r) => r.split_once("} ")?,
                    None => ("", rest.strip_prefix(' ')?),
                };
                Some((labels, v.parse().unwrap()))
            })
            .collect()
    }

    #[test]
    fn buckets_are_inclusive_cumulative_and_end_in_the_count() {
        let h = Histogram::default();
        for us in [5, 6, 10, 999, 1_000, 1_001, 40_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let mut out = String::new();
        h.render(&mut out, "t", "");
        let b = series(&out, "t_bucket");
        let at = |le: &str| {
            b.iter()
                .find(|(l, _)| *l == format!("le=\"{le}\""))
                .unwrap()
                .1
        };
        assert_eq!(at("0.000005"), 1.0, "5 µs is in le=5µs (inclusive): {out}");
        assert_eq!(at("0.00001"), 3.0);
        assert_eq!(at("0.001"), 5.0, "999 and 1000 µs are at or under 1 ms");
        assert_eq!(at("0.0025"), 6.0);
        assert_eq!(at("30"), 6.0, "40 s is over the last bound");
        assert_eq!(at("+Inf"), 7.0);
        assert_eq!(b.len(), BUCKETS_US.len() + 1);
        assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {out}");
        assert_eq!(series(&out, "t_count"), vec![("", 7.0)]);
        let sum = series(&out, "t_sum")[0].1;
        assert!((sum - 40.003021).abs() < 1e-9, "sum in seconds: {sum}");
        assert_eq!(h.count(), 7);
    }

    #[test]
    fn request_durations_are_split_by_status_class() {
        let m = Metrics::default();
        m.request_duration.observe(200, Duration::from_micros(300));
        m.request_duration.observe(204, Duration::from_micros(300));
        m.request_duration.observe(403, Duration::from_micros(40));
        m.request_duration.observe(502, Duration::from_millis(3));
        let up = Histogram::default();
        up.observe(Duration::from_millis(2));
        let text = m.render(
            &[("pay\"ments", &up)],
            &[("g", "a gauge", 1.5)],
            &[("c_total", "a counter", 9)],
        );
        let counts = series(&text, "jitgate_request_duration_seconds_count");
        assert_eq!(
            counts,
            vec![
                ("class=\"1xx\"", 0.0),
                ("class=\"2xx\"", 2.0),
                ("class=\"3xx\"", 0.0),
                ("class=\"4xx\"", 1.0),
                ("class=\"5xx\"", 1.0)
            ]
        );
        assert!(
            text.contains(
                "jitgate_request_duration_seconds_bucket{class=\"4xx\",le=\"0.00005\"} 1"
            )
        );
        assert!(text.contains("# TYPE jitgate_log_wait_seconds histogram"));
        assert_eq!(
            series(&text, "jitgate_upstream_duration_seconds_count"),
            vec![(r#"service="pay\"ments""#, 1.0)],
            "one series per upstream, the label value escaped"
        );
        assert!(text.contains("# TYPE g gauge\ng 1.5"));
        assert!(text.contains("# TYPE c_total counter\nc_total 9"));
    }
}
