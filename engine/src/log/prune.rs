//! Retention: removes the oldest records and appends a checkpoint record that anchors what is kept, so the
//! remaining chain still verifies. Only a verified chain is pruned, so pruning never launders tampering.
//!
//! Why the checkpoint is appended at the head and not written at the first kept seq: that seq is still occupied by
//! the first kept record, whose `prev_hash` is the last deleted record's hash. The checkpoint therefore carries,
//! in its `context`, `pruned_through` (the last deleted seq), `last_pruned_hash` (its hash, which the first kept
//! record must link to) and `first_kept_seq`; [`super::verify_store`] starts the walk from the newest
//! checkpoint's anchor. The checkpoint is itself a sealed link of the chain, so editing it fails verification, and
//! so does deleting more old records after it (a gap at `first_kept_seq`).
//!
//! A log that a replica ships into a shared store carries a shipping mark ([`super::mark_shipped`]); prune never
//! removes a record after it (unless told to discard unshipped records), and reports how many old records it kept.
//!
//! Prune runs beside a live [`super::LogWriter`] (the proxy's automatic retention does), on a connection of its
//! own. SQLite serializes the two: each writes only inside a `BEGIN IMMEDIATE` transaction that reads the chain
//! head inside it, and in WAL mode `BEGIN IMMEDIATE` waits (busy timeout) until the other has committed, so a
//! checkpoint and a batch are never sealed on the same head. What prune must not do is hold the write lock for
//! long: the writer waits at most its busy timeout (5 s by default) before a batch fails, and the proxy refuses
//! the requests in a failed batch. So the expensive walk of the whole chain runs first in a read transaction (a
//! WAL snapshot; a writer never waits on it), and the deletion then goes in chunks of at most `CHUNK` records,
//! each in its own short `IMMEDIATE` transaction that checks the records appended since the last check (they
//! must link on to what was verified), re-verifies the records it deletes from the chain's start (a record
//! edited after the snapshot is refused, never deleted unverified), deletes them and appends a checkpoint. Each
//! chunk leaves a chain that verifies, so a failure or a crash between chunks loses nothing. Between chunks prune
//! pauses, so that a writer that waited for the lock gets it before the next chunk does: until the chain head moves
//! on, or for a bounded time. Two prunes of the same file at once (the proxy's retention and
//! `jitgate decisions prune`) stay correct — they share the chunks and the chain verifies — but each one's pause
//! can then be the other's turn, so over a long backlog the writer may wait for several chunks in a row: run a
//! large manual prune while automatic retention is off.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::record::{DecisionRecord, GENESIS_HASH, RecordKind, format_time};
use super::{Fault, PruneError, db, verify};

/// What prune did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Records deleted.
    pub deleted: u64,
    /// The last deleted seq.
    pub pruned_through: Option<i64>,
    /// The last checkpoint record written, one per chunk (none when nothing was old enough).
    pub checkpoint_seq: Option<i64>,
    /// The log is shipped to a shared store: the newest seq its shipper had copied there when prune looked. No
    /// record after it is pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_through: Option<i64>,
    /// Records old enough to prune that were kept because the shipper has not copied them into the store yet (a
    /// later run prunes them once they are there).
    #[serde(default)]
    pub kept_unshipped: u64,
}

/// Most records deleted in one transaction. Each is re-verified and deleted with the write lock held; a few
/// thousand take tens of milliseconds, far below the writer's busy timeout.
const CHUNK: i64 = 5_000;

/// The longest sleep of SQLite's default busy handler: a waiting writer retries at least this often.
const MAX_YIELD: Duration = Duration::from_millis(100);

/// The busy handler's first sleeps add up to this before they grow with the time waited.
const MIN_YIELD: Duration = Duration::from_millis(10);

/// Time on top of the busy handler's sleep for a waiting writer's thread to be scheduled on a loaded machine.
const YIELD_SLACK: Duration = Duration::from_millis(50);

/// How often the pause between chunks looks whether a writer got its turn.
const YIELD_POLL: Duration = Duration::from_millis(2);

/// Deletes the records older than `before` — the leading run of the chain whose time is before it, so a record
/// is never removed while an older-numbered one is kept, and never one after the log's shipping mark (a record the
/// shipper has not copied into the shared store yet) — and appends a checkpoint after each chunk of at most
/// 5,000 deleted records (see the module docs for why chunks). Fails without changing anything if the chain
/// does not verify; a problem first seen in a later chunk (the file changed meanwhile) stops it after the chunks
/// already committed, each of which left a verifying chain. Records appended while it runs (its own checkpoints
/// included) are never pruned by the same call.
pub fn prune(path: &Path, before: OffsetDateTime) -> Result<PruneReport, PruneError> {
    prune_with(path, before, &PruneOptions::default())
}

/// Who prunes, and how the result is signed.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Named in every checkpoint: `user@host` for the CLI, `retention` for the proxy's automatic retention.
    /// Empty: `unknown`.
    pub actor: String,
    /// Sign the chain head once pruned (an anchored log must be: verify refuses records after the writer's
    /// shutdown anchor that no anchor covers).
    pub anchor: Option<super::AnchorOptions>,
    /// Prune records a shipper has not copied into the shared store yet (they are then lost from the store for
    /// good). Off: prune stops at the log's shipping mark ([`super::mark_shipped`]).
    pub discard_unshipped: bool,
}

/// [`prune`], naming `opts.actor` in the checkpoints (each of which carries the history of the earlier prunes, so
/// pruning a checkpoint loses none) and signing the head afterwards with `opts.anchor`. Deleted rows are overwritten
/// in the file (`secure_delete`), the freed pages returned (incremental vacuum, on files created with it) and the
/// WAL truncated, so the pruned data is gone from the disk, not just from the chain.
pub fn prune_with(
    path: &Path,
    before: OffsetDateTime,
    opts: &PruneOptions,
) -> Result<PruneReport, PruneError> {
    let mut out = PruneReport {
        deleted: 0,
        pruned_through: None,
        checkpoint_seq: None,
        shipped_through: None,
        kept_unshipped: 0,
    };
    let res = prune_chunks(path, before, opts, &mut out);
    if out.checkpoint_seq.is_some() {
        let conn = db::open_write(path, crate::sqlite::DEFAULT_BUSY_TIMEOUT)?;
        // Freed pages go back to the file system (a no-op without auto_vacuum), and the WAL frames that still
        // held the old pages are dropped.
        let _ = conn.execute_batch("PRAGMA incremental_vacuum;");
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        if let Some(a) = &opts.anchor {
            if let Some((seq, hash)) = db::head(&conn)? {
                a.append(seq, &hash, super::AnchorReason::Prune)?;
            }
        }
    }
    res?;
    Ok(out)
}

fn prune_chunks(
    path: &Path,
    before: OffsetDateTime,
    opts: &PruneOptions,
    out: &mut PruneReport,
) -> Result<(), Fault> {
    let mut conn = db::open_existing(path)?;
    // Deleted rows are overwritten with zeros, not left in free space.
    conn.pragma_update(None, "secure_delete", true)?;
    let cutoff = format_time(before);
    let actor = if opts.actor.is_empty() {
        "unknown".to_string()
    } else {
        opts.actor.clone()
    };
    let run = uuid::Uuid::now_v7().to_string();

    // The whole chain, on a read snapshot: no lock a writer would wait for.
    let (mut verified_seq, mut verified_hash) = {
        let tx = conn.transaction()?;
        let report = verify::verify_conn(&tx, &mut |_| {})?;
        if let Some(f) = report.failure {
            return Err(refuse(f.to_string()));
        }
        tx.commit()?;
        match (report.last_seq, report.last_hash) {
            (Some(seq), Some(hash)) => (seq, hash),
            _ => return Ok(()),
        }
    };

    // Set by the first chunk: the first record kept by this call.
    let mut target: Option<i64> = None;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let locked = Instant::now();
        let (head_seq, head_hash) =
            db::head(&tx)?.ok_or_else(|| refuse("the chain head disappeared".into()))?;
        if head_seq < verified_seq {
            return Err(refuse(format!(
                "the chain head went back from seq {verified_seq} to seq {head_seq}"
            )));
        }
        // Appended since the last check: must continue the verified chain up to the stored head.
        let last = check_segment(&tx, verified_seq + 1, head_seq, &verified_hash)?;
        if last != head_hash {
            return Err(refuse(format!(
                "seq {head_seq}: the stored head does not match the last record"
            )));
        }
        verified_seq = head_seq;
        verified_hash = head_hash;

        let (start, anchor_hash, _) = verify::anchor(&tx)?;
        let min_seq: Option<i64> =
            tx.query_row("SELECT MIN(seq) FROM decisions", [], |r| r.get(0))?;
        if min_seq != Some(start) {
            return Err(refuse(format!(
                "the chain should start at seq {start} but its first record is {min_seq:?}"
            )));
        }
        let first_kept = match target {
            Some(t) => t,
            None => {
                let by_time = tx
                    .query_row(
                        "SELECT MIN(seq) FROM decisions WHERE time >= ?1",
                        [&cutoff],
                        |r| r.get::<_, Option<i64>>(0),
                    )?
                    .unwrap_or(verified_seq + 1);
                // A shipped log keeps what its shipper has not copied into the store yet. The mark is never past
                // what the store holds: the shipper writes it after each commit there, and resets it to 0 at start
                // until it has asked the store.
                let shipped = if opts.discard_unshipped {
                    None
                } else {
                    db::shipped(&tx)?.map(|(_, seq)| seq)
                };
                out.shipped_through = shipped;
                let t = match shipped {
                    Some(s) if by_time > s + 1 => {
                        let kept_from = (s + 1).max(start);
                        out.kept_unshipped = u64::try_from(by_time - kept_from).unwrap_or(0);
                        kept_from
                    }
                    _ => by_time,
                };
                target = Some(t);
                t
            }
        };
        if start >= first_kept {
            // Nothing (more) to delete; the transaction wrote nothing.
            return Ok(());
        }
        let through = (first_kept - 1).min(start.saturating_add(CHUNK - 1));
        // Every deleted record is verified in the transaction that deletes it.
        let last_hash = check_segment(&tx, start, through, &anchor_hash)?;
        // Read before the deletion, which may remove the checkpoint that holds it.
        let history = history(&tx)?;
        let deleted = tx.execute("DELETE FROM decisions WHERE seq <= ?1", [through])?;
        tx.execute("DELETE FROM decision_grants WHERE seq <= ?1", [through])?;

        let mut cp = DecisionRecord::new(RecordKind::Checkpoint);
        cp.action = "prune".into();
        cp.engine = "jitgate".into();
        let ctx = serde_json::json!({
            "actor": actor,
            "before": cutoff,
            "first_kept_seq": through + 1,
            "history": history,
            "last_pruned_hash": last_hash,
            "pruned_from": start,
            "pruned_records": deleted,
            "pruned_through": through,
            "run": run,
        });
        if let serde_json::Value::Object(m) = ctx {
            cp.context = m;
        }
        cp.seal(verified_seq + 1, &verified_hash);
        db::insert(&tx, &cp)?;
        db::set_head(&tx, cp.seq, &cp.hash)?;
        tx.commit()?;
        let held = locked.elapsed();
        out.deleted += deleted as u64;
        out.pruned_through = Some(through);
        out.checkpoint_seq = Some(cp.seq);
        verified_seq = cp.seq;
        verified_hash = cp.hash;
        if through + 1 < first_kept {
            // SQLite's lock is not fair: a writer that waited for this chunk is asleep in its busy handler (each
            // sleep about as long as it has waited so far, at most 100 ms) and would lose the race for the next
            // chunk's lock, chunk after chunk, until its busy timeout fails its batch. Stay out until it has
            // taken its turn, or long enough for it to have woken up.
            yield_to_writers(&conn, verified_seq, held)?;
        }
    }
}

/// The prunes before this one, oldest first, from the newest checkpoint (its own history plus itself): one entry
/// per run of `prune` (its chunks merged), and consecutive runs of automatic retention merged into one, so the
/// history stays short however often retention runs. A checkpoint written before prunes named their actor counts
/// as its own run by `unknown`.
fn history(conn: &Connection) -> Result<Vec<serde_json::Value>, Fault> {
    use serde_json::{Value, json};
    let newest = conn
        .query_row(
            &format!(
                "SELECT {} FROM decisions WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1",
                db::COLS
            ),
            [],
            db::raw,
        )
        .optional()?;
    let Some(raw) = newest else {
        return Ok(Vec::new());
    };
    let cp = raw.decode()?;
    let ctx = &cp.context;
    let mut hist: Vec<Value> = match ctx.get("history") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let get = |k: &str| ctx.get(k).cloned().unwrap_or(Value::Null);
    let actor = ctx
        .get("actor")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let run = ctx
        .get("run")
        .and_then(Value::as_str)
        .unwrap_or(&cp.id)
        .to_string();
    let records = ctx
        .get("pruned_records")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if let Some(Value::Object(last)) = hist.last_mut() {
        let same_run = last.get("run").and_then(Value::as_str) == Some(run.as_str());
        let both_retention =
            actor == "retention" && last.get("actor").and_then(Value::as_str) == Some("retention");
        if same_run || both_retention {
            let runs = last.get("runs").and_then(Value::as_u64).unwrap_or(1);
            let total = last
                .get("pruned_records")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            last.insert("runs".into(), json!(if same_run { runs } else { runs + 1 }));
            last.insert("run".into(), json!(run));
            last.insert("last_time".into(), json!(cp.time));
            last.insert("before".into(), get("before"));
            last.insert("pruned_through".into(), get("pruned_through"));
            last.insert("pruned_records".into(), json!(total + records));
            last.insert("checkpoint_seq".into(), json!(cp.seq));
            return Ok(hist);
        }
    }
    hist.push(json!({
        "actor": actor,
        "before": get("before"),
        "checkpoint_seq": cp.seq,
        "first_time": cp.time,
        "last_time": cp.time,
        "pruned_from": get("pruned_from"),
        "pruned_records": records,
        "pruned_through": get("pruned_through"),
        "run": run,
        "runs": 1,
    }));
    Ok(hist)
}

/// Pauses between chunks: until a writer has committed after this prune's checkpoint `own_seq` (the chain head
/// moved on), or at most one busy-handler sleep after a chunk that held the lock for `held`, plus slack. Without a
/// live writer the whole pause is spent; with one, prune goes on as soon as the writer has had its turn.
fn yield_to_writers(conn: &Connection, own_seq: i64, held: Duration) -> Result<(), Fault> {
    let until = Instant::now() + held.clamp(MIN_YIELD, MAX_YIELD) + YIELD_SLACK;
    while Instant::now() < until {
        std::thread::sleep(YIELD_POLL);
        if db::head(conn)?.is_some_and(|(seq, _)| seq > own_seq) {
            break;
        }
    }
    Ok(())
}

fn refuse(reason: String) -> Fault {
    Fault::Invalid {
        what: "chain".into(),
        reason: format!("refusing to prune: {reason}"),
    }
}

/// Checks the records `from..=to` inside the open transaction: all present, each linked to the one before it
/// (the first to `prev`) and matching its own hash (the same walk as [`verify::verify_store`]). Returns the last
/// one's hash (`prev` for an empty range).
fn check_segment(conn: &Connection, from: i64, to: i64, prev: &str) -> Result<String, Fault> {
    let report = verify::walk(
        conn,
        from,
        to,
        from,
        prev,
        verify::VerifyReport::empty(),
        &mut |_| {},
    )?;
    if let Some(f) = report.failure {
        return Err(refuse(f.to_string()));
    }
    let next = report.last_seq.map_or(from, |l| l + 1);
    if next <= to {
        return Err(refuse(format!("seq {next}: record {next} is missing")));
    }
    Ok(report.last_hash.unwrap_or_else(|| prev.to_string()))
}

/// `(first kept seq, hash it must link to)` named by a checkpoint record.
pub(crate) fn checkpoint_anchor(cp: &DecisionRecord) -> Result<(i64, String), Fault> {
    let bad = |reason: &str| Fault::Corrupt {
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
