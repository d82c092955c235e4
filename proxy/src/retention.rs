//! retain: automatic decision-log retention (`[log] retain`). A background task prunes the records older than
//! `now - retain` at start and then every `prune_interval`, through [`jitgate_engine::log::prune`] — the function
//! `jitgate decisions prune` runs — on a blocking thread, never on the async runtime.
//!
//! Prune opens its own SQLite connection beside the decision-log writer's. The two serialize on SQLite's write
//! lock (WAL, `BEGIN IMMEDIATE` with a busy timeout on both sides, the chain head read inside each transaction),
//! so a checkpoint and a batch can never be sealed on the same head; prune verifies the chain on a snapshot first
//! and then holds the lock only for short chunks, pausing between them so the writer's batches get in (see the
//! engine's prune module). Runs never overlap: the next one is scheduled when the last has finished.
//!
//! With a shipper (`[store] url`), prune stops at the log's shipping mark: a record the shipper has not copied into
//! PostgreSQL yet is never pruned, however old; the run says how many it kept and a later one prunes them.
//!
//! A failed run is logged and counted (`jitgate_log_prune_runs_total{outcome="failed"}`) and the next interval
//! tries again: retention never stops the proxy and never touches a decision. Record times are wall-clock UTC,
//! so the cutoff is too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jitgate_engine::log::{AnchorOptions, PruneError, PruneOptions, PruneReport, prune_with};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// The running retention task; [`Retention::stop`] ends it.
#[derive(Debug)]
pub struct Retention {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Retention {
    /// Starts pruning `path` to `retain` now and then every `interval`, counting outcomes in `metrics`. Call from
    /// inside a tokio runtime.
    pub fn spawn(
        path: PathBuf,
        retain: Duration,
        interval: Duration,
        metrics: Arc<Metrics>,
        anchor: Option<AnchorOptions>,
    ) -> Retention {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(path, retain, interval, metrics, anchor, stopped));
        Retention {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the task. A run in progress is waited for, at most `grace`; past that the task is dropped and its
    /// blocking thread finishes the chunk it is in (each chunk is one transaction, so nothing is left half done).
    pub async fn stop(mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            tracing::warn!("decision-log retention still running at shutdown; leaving it");
            self.task.abort();
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    path: PathBuf,
    retain: Duration,
    interval: Duration,
    metrics: Arc<Metrics>,
    anchor: Option<AnchorOptions>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let p = path.clone();
        let a = anchor.clone();
        let outcome =
            tokio::task::spawn_blocking(move || prune_older_than_with(&p, retain, a)).await;
        let now = unix_now();
        metrics.prune_last_run.set(now);
        match outcome {
            Ok(Ok(report)) => {
                metrics.pruned_records.add(report.deleted);
                metrics.prune_last_deleted.set(report.deleted);
                metrics.prune_last_success.set(now);
                // Counted last: a scrape that sees the run sees its figures.
                metrics.prune_runs.inc("ok");
                if report.kept_unshipped > 0 {
                    tracing::warn!(
                        kept = report.kept_unshipped,
                        shipped_through = ?report.shipped_through,
                        "decision log: retention kept records older than `retain` that the shipper has not copied \
                         into the store yet; they are pruned once shipped"
                    );
                }
                if report.deleted > 0 {
                    tracing::info!(
                        deleted = report.deleted,
                        pruned_through = ?report.pruned_through,
                        checkpoint_seq = ?report.checkpoint_seq,
                        "decision log: retention pruned old records"
                    );
                } else {
                    tracing::debug!("decision log: retention found nothing to prune");
                }
            }
            Ok(Err(e)) => {
                metrics.prune_runs.inc("failed");
                tracing::error!(error = %e, log = %path.display(), "decision log: retention run failed; retrying next interval");
            }
            Err(e) => {
                metrics.prune_runs.inc("failed");
                tracing::error!(error = %e, "decision log: retention run panicked; retrying next interval");
            }
        }
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Prunes the records of the log at `path` older than `retain` before now (blocking). A `retain` reaching back
/// before the representable past prunes nothing.
pub fn prune_older_than(path: &Path, retain: Duration) -> Result<PruneReport, PruneError> {
    prune_older_than_with(path, retain, None)
}

/// [`prune_older_than`] as retention runs it: checkpoints name `retention` as what pruned, and the head is signed
/// afterwards when the log is anchored.
pub fn prune_older_than_with(
    path: &Path,
    retain: Duration,
    anchor: Option<AnchorOptions>,
) -> Result<PruneReport, PruneError> {
    let before = time::Duration::try_from(retain)
        .ok()
        .and_then(|d| OffsetDateTime::now_utc().checked_sub(d));
    let opts = PruneOptions {
        actor: "retention".into(),
        anchor,
        discard_unshipped: false,
    };
    match before {
        Some(before) => prune_with(path, before, &opts),
        None => Ok(PruneReport {
            deleted: 0,
            pruned_through: None,
            checkpoint_seq: None,
            shipped_through: None,
            kept_unshipped: 0,
        }),
    }
}

fn unix_now() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}
