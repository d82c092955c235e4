//! `[log]`: the decision log (file, queue, acknowledgement, redaction, JSON Lines copy, retention).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;

/// What to do when the decision log's queue is full (`[log] on_full`): wait for room, or refuse the request (503)
/// before it reaches the upstream. The log writer's own setting, so that both mean one thing.
pub use jitgate_engine::log::OnFull;

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// SQLite file for the decision log.
    #[serde(default = "default_log_path")]
    pub path: PathBuf,
    /// Benchmarking only: `false` turns the decision log off (no records, nothing to verify). Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Bounded queue size.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// `wait` or `fail_closed` when the queue is full.
    #[serde(default = "default_on_full")]
    pub on_full: String,
    /// When a response may leave: `commit` (its record is committed to SQLite) or `journal` (its record is in
    /// the acknowledgement journal; committed in batches right after, and at the next start after a crash).
    #[serde(default = "default_acknowledge")]
    pub acknowledge: String,
    /// Context fields masked before a record is written (`claims.email`, `headers.x-api-key`).
    #[serde(default)]
    pub redact: Vec<String>,
    /// Query parameters whose values are masked in records, hold reasons and logs (names, case-insensitive; the
    /// upstream and the policies still get the real values). Default: `token`, `key`, `api_key`, `secret`,
    /// `password`, `signature`, `access_token`; `[]` masks none.
    #[serde(default = "default_redact_query")]
    pub redact_query: Vec<String>,
    /// Also write records as JSON Lines: `stdout` or a file path.
    #[serde(default)]
    pub jsonl: Option<String>,
    /// Automatic retention: records older than this duration (`365d`) are pruned, leaving a checkpoint. Absent:
    /// everything is kept.
    #[serde(default)]
    pub retain: Option<String>,
    /// How often retention runs (the first run is at start; default `1h`). Only with `retain`.
    #[serde(default)]
    pub prune_interval: Option<String>,
    /// Ed25519 key (PKCS#8 PEM) that signs the chain head into the anchors file; generated (mode 0600, public key
    /// beside it as `<file>.pub`) when missing. Keep it apart from the log. Absent: no signed anchors.
    #[serde(default)]
    pub anchor_key: Option<PathBuf>,
    /// The append-only file of signed anchors (default `<path>.anchors.jsonl`). Only with `anchor_key`.
    #[serde(default)]
    pub anchors: Option<PathBuf>,
    /// Sign the head at least this often while records arrive (default `1m`). Only with `anchor_key`.
    #[serde(default)]
    pub anchor_interval: Option<String>,
    /// Sign the head after at most this many records (default 10000). Only with `anchor_key`.
    #[serde(default)]
    pub anchor_records: Option<u64>,
    /// Deprecated alias of `[cluster] replica` (which names the replica in anchors and shipped records).
    #[serde(default)]
    pub replica: Option<String>,
}

fn default_redact_query() -> Vec<String> {
    jitgate_engine::log::DEFAULT_REDACT_QUERY
        .iter()
        .map(|n| n.to_string())
        .collect()
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            path: default_log_path(),
            enabled: true,
            queue_capacity: default_queue(),
            on_full: default_on_full(),
            acknowledge: default_acknowledge(),
            redact: Vec::new(),
            redact_query: default_redact_query(),
            jsonl: None,
            retain: None,
            prune_interval: None,
            anchor_key: None,
            anchors: None,
            anchor_interval: None,
            anchor_records: None,
            replica: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_log_path() -> PathBuf {
    PathBuf::from(".jitgate/decisions.db")
}
fn default_queue() -> usize {
    10_000
}
fn default_on_full() -> String {
    "wait".into()
}
fn default_acknowledge() -> String {
    "commit".into()
}

/// How often the head is signed when `[log] anchor_interval` is not set.
pub const DEFAULT_ANCHOR_INTERVAL: Duration = Duration::from_secs(60);

/// Most records between two anchors when `[log] anchor_records` is not set.
pub const DEFAULT_ANCHOR_RECORDS: u64 = 10_000;

/// `[log]` anchor settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorConfig {
    /// The signing key file.
    pub key: PathBuf,
    /// The anchors file.
    pub file: PathBuf,
    /// Sign at least this often while records arrive.
    pub every: Duration,
    /// Sign after at most this many records.
    pub every_records: u64,
    /// The replica named in anchors (`[cluster] replica`).
    pub replica: String,
}

/// How often automatic retention runs when `[log] prune_interval` is not set.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// When a request's decision record counts as logged, so its response may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledge {
    /// Once the record's batch is committed to the SQLite file.
    Commit,
    /// Once the record is written to the acknowledgement journal next to the log (the batch commits after).
    Journal,
}

/// `[log]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    pub(crate) path: PathBuf,
    pub(crate) enabled: bool,
    pub(crate) queue_capacity: usize,
    pub(crate) on_full: OnFull,
    pub(crate) acknowledge: Acknowledge,
    pub(crate) redact: Vec<String>,
    pub(crate) redact_query: Vec<String>,
    pub(crate) jsonl: Option<String>,
    pub(crate) retain: Option<Duration>,
    pub(crate) prune_interval: Duration,
    pub(crate) anchor: Option<AnchorConfig>,
}

/// Validates `[log]`.
pub(crate) fn check(raw: RawLog, p: &mut Problems<'_>) -> Log {
    let on_full = match raw.on_full.as_str() {
        "wait" => OnFull::Wait,
        "fail_closed" => OnFull::FailClosed,
        other => {
            p.err(
                "log.on_full",
                format!("`{other}` must be `wait` or `fail_closed`"),
            );
            OnFull::Wait
        }
    };
    let acknowledge = match raw.acknowledge.as_str() {
        "commit" => Acknowledge::Commit,
        "journal" => Acknowledge::Journal,
        other => {
            p.err(
                "log.acknowledge",
                format!("`{other}` must be `commit` or `journal`"),
            );
            Acknowledge::Commit
        }
    };
    for (i, name) in raw.redact_query.iter().enumerate() {
        if name.is_empty() || name.contains(['&', ';', '=']) {
            p.err(
                &format!("log.redact_query[{i}]"),
                format!("`{name}` is not a query parameter name"),
            );
        }
    }
    if raw.queue_capacity == 0 {
        p.err("log.queue_capacity", "must be at least 1".into());
    }
    // Retention: both at least a second (a shorter interval would re-verify the whole chain back to back).
    let retain = raw
        .retain
        .as_deref()
        .and_then(|v| p.at_least_1s("log.retain", v));
    let prune_interval = match raw.prune_interval.as_deref() {
        None => Some(DEFAULT_PRUNE_INTERVAL),
        Some(v) => p.at_least_1s("log.prune_interval", v),
    }
    .unwrap_or(DEFAULT_PRUNE_INTERVAL);
    if raw.prune_interval.is_some() && raw.retain.is_none() {
        p.err("log.prune_interval", "needs `log.retain`".into());
    }
    let path = p.resolve(&raw.path);
    let anchor_every = match raw.anchor_interval.as_deref() {
        None => Some(DEFAULT_ANCHOR_INTERVAL),
        Some(v) => p.at_least_1s("log.anchor_interval", v),
    }
    .unwrap_or(DEFAULT_ANCHOR_INTERVAL);
    if raw.anchor_records == Some(0) {
        p.err("log.anchor_records", "must be at least 1".into());
    }
    let anchor = match &raw.anchor_key {
        None => {
            for (key, set) in [
                ("log.anchors", raw.anchors.is_some()),
                ("log.anchor_interval", raw.anchor_interval.is_some()),
                ("log.anchor_records", raw.anchor_records.is_some()),
            ] {
                if set {
                    p.err(key, "needs `log.anchor_key`".into());
                }
            }
            None
        }
        Some(key) => {
            let key = p.resolve(key);
            let file = raw.anchors.as_ref().map_or_else(
                || jitgate_engine::log::anchors_path(&path),
                |f| p.resolve(f),
            );
            if key == path || file == path {
                p.err(
                    "log.anchor_key",
                    "the anchor key and the anchors file must be files of their own, not the log"
                        .into(),
                );
            }
            Some(AnchorConfig {
                key,
                file,
                every: anchor_every,
                every_records: raw.anchor_records.unwrap_or(DEFAULT_ANCHOR_RECORDS).max(1),
                // The replica id: `[cluster] replica` (or its deprecated alias `[log] replica`), set by the caller.
                replica: String::new(),
            })
        }
    };
    Log {
        anchor,
        path,
        enabled: raw.enabled,
        queue_capacity: raw.queue_capacity,
        on_full,
        acknowledge,
        redact: raw.redact,
        redact_query: raw.redact_query,
        jsonl: raw.jsonl,
        retain,
        prune_interval,
    }
}
