//! Retention: removes the oldest records and appends a checkpoint record that anchors what is kept, so the
//! remaining chain still verifies. Only a verified chain is pruned, so pruning never launders tampering.
//!
//! Why the checkpoint is appended at the head and not written at the first kept seq: that seq is still occupied by
//! the first kept record, whose `prev_hash` is the last deleted record's hash. The checkpoint therefore carries,
//! in its `context`, `pruned_through` (the last deleted seq), `last_pruned_hash` (its hash, which the first kept
//! record must link to) and `first_kept_seq`; [`super::verify_store`] starts the walk from the newest
//! checkpoint's anchor. The checkpoint is itself a sealed link of the chain, so editing it fails verification, and
//! so does deleting more old records after it (a gap at `first_kept_seq`).

use std::path::Path;

use rusqlite::{OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::record::{DecisionRecord, GENESIS_HASH, RecordKind, format_time};
use super::{LogError, db, verify};

/// What prune did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Records deleted.
    pub deleted: u64,
    /// The last deleted seq.
    pub pruned_through: Option<i64>,
    /// The checkpoint record written (none when nothing was old enough).
    pub checkpoint_seq: Option<i64>,
}

/// Deletes the records older than `before` — the leading run of the chain whose time is before it, so a record
/// is never removed while an older-numbered one is kept — and appends a checkpoint. Fails without changing
/// anything if the chain does not verify.
pub fn prune(path: &Path, before: OffsetDateTime) -> Result<PruneReport, LogError> {
    let mut conn = db::open_read(path)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let report = verify::verify_conn(&tx)?;
    if let Some(f) = report.failure {
        return Err(LogError::Invalid {
            what: "chain".into(),
            reason: format!("refusing to prune: {f}"),
        });
    }
    let Some((head_seq, head_hash)) = db::head(&tx)? else {
        return Ok(PruneReport {
            deleted: 0,
            pruned_through: None,
            checkpoint_seq: None,
        });
    };
    let cutoff = format_time(before);
    let first_kept: i64 = tx
        .query_row(
            "SELECT MIN(seq) FROM decisions WHERE time >= ?1",
            [&cutoff],
            |r| r.get::<_, Option<i64>>(0),
        )?
        .unwrap_or(head_seq + 1);
    let min_seq: Option<i64> = tx.query_row("SELECT MIN(seq) FROM decisions", [], |r| r.get(0))?;
    let Some(min_seq) = min_seq.filter(|m| *m < first_kept) else {
        return Ok(PruneReport {
            deleted: 0,
            pruned_through: None,
            checkpoint_seq: None,
        });
    };
    let last_deleted = first_kept - 1;
    let last_hash: String = tx
        .query_row(
            "SELECT hash FROM decisions WHERE seq = ?1",
            [last_deleted],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| LogError::Corrupt {
            seq: last_deleted,
            reason: "record to prune through is missing".into(),
        })?;
    let deleted = tx.execute("DELETE FROM decisions WHERE seq <= ?1", [last_deleted])?;
    tx.execute(
        "DELETE FROM decision_grants WHERE seq <= ?1",
        [last_deleted],
    )?;

    let mut cp = DecisionRecord::new(RecordKind::Checkpoint);
    cp.action = "prune".into();
    cp.engine = "jitgate".into();
    let ctx = serde_json::json!({
        "before": cutoff,
        "first_kept_seq": first_kept,
        "last_pruned_hash": last_hash,
        "pruned_from": min_seq,
        "pruned_records": deleted,
        "pruned_through": last_deleted,
    });
    if let serde_json::Value::Object(m) = ctx {
        cp.context = m;
    }
    cp.seal(head_seq + 1, &head_hash);
    db::insert(&tx, &cp)?;
    db::set_head(&tx, cp.seq, &cp.hash)?;
    tx.commit()?;
    Ok(PruneReport {
        deleted: deleted as u64,
        pruned_through: Some(last_deleted),
        checkpoint_seq: Some(cp.seq),
    })
}

/// `(first kept seq, hash it must link to)` named by a checkpoint record.
pub(crate) fn checkpoint_anchor(cp: &DecisionRecord) -> Result<(i64, String), LogError> {
    let bad = |reason: &str| LogError::Corrupt {
        seq: cp.seq,
        reason: format!("checkpoint: {reason}"),
    };
    let first = cp
        .context
        .get("first_kept_seq")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| bad("no first_kept_seq"))?;
    let hash = cp
        .context
        .get("last_pruned_hash")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("no last_pruned_hash"))?
        .to_string();
    if first < 1 || first > cp.seq || hash.len() != GENESIS_HASH.len() {
        return Err(bad("anchor out of range"));
    }
    Ok((first, hash))
}
