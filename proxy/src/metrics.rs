//! Counters for Prometheus (`/metrics` on the admin listener): plain atomics, rendered as text exposition.
//! No metrics crate: a handful of counters does not need one.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Bundle reloads by outcome (`ok`, `failed`).
    pub reloads: LabeledCounter,
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
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
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
        for (name, help, v) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
