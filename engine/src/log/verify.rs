//! Verification of a stored chain: walks `decisions` in seq order and names the first record that does not fit.
//! Export files are verified in [`super::export`]; both report with [`VerifyReport`].

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::db;
use super::record::{DecisionRecord, GENESIS_HASH};
use super::{Fault, VerifyError, prune};

/// What was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The record's content does not match its hash: it was edited (or moved to another seq).
    HashMismatch,
    /// The record's `prev_hash` is not the previous record's hash: a record before it was replaced, inserted or
    /// moved.
    BrokenLink,
    /// Records are missing at this seq (deleted).
    Missing,
    /// The row cannot be decoded.
    Corrupt,
    /// The grant index disagrees with the records.
    IndexMismatch,
    /// The newest records were cut off (the stored head points past the last record) or the head was altered.
    Truncated,
    /// An export file's bytes do not match its manifest's SHA-256.
    DigestMismatch,
    /// An export file's content disagrees with its manifest (count, first/last record).
    ManifestMismatch,
    /// Anchors were asked for (a public key was given) but there is no anchors file.
    AnchorMissing,
    /// The anchors file is damaged, or its anchors do not form a chain (one removed, moved or inserted).
    AnchorInvalid,
    /// An anchor is not signed by the given public key (edited, forged, or another key).
    AnchorSignature,
    /// The records up to an anchored seq are not the ones that were signed (changed and the chain recomputed).
    AnchorMismatch,
    /// Records follow the last anchor where none may (after a shutdown anchor, or more than its interval).
    Unanchored,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The first bad seq, when the problem is about a record.
    pub seq: Option<i64>,
    /// What kind of problem.
    pub kind: FailureKind,
    /// A sentence for humans.
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(s) => write!(f, "seq {s}: {}", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Whether everything checked out.
    pub ok: bool,
    /// Records checked before stopping.
    pub records: u64,
    /// The first record's seq.
    pub first_seq: Option<i64>,
    /// The last good record's seq.
    pub last_seq: Option<i64>,
    /// The last good record's hash.
    pub last_hash: Option<String>,
    /// The checkpoint whose anchor the chain starts from, when earlier records were pruned.
    pub checkpoint_seq: Option<i64>,
    /// Signed anchors checked (0 when verified without a public key).
    #[serde(default)]
    pub anchors: u64,
    /// The newest seq a signed anchor vouches for.
    #[serde(default)]
    pub anchored_seq: Option<i64>,
    /// The first problem, if any.
    pub failure: Option<Failure>,
}

impl VerifyReport {
    pub(crate) fn empty() -> Self {
        VerifyReport {
            ok: true,
            records: 0,
            first_seq: None,
            last_seq: None,
            last_hash: None,
            checkpoint_seq: None,
            anchors: 0,
            anchored_seq: None,
            failure: None,
        }
    }

    pub(crate) fn fail(mut self, seq: Option<i64>, kind: FailureKind, detail: String) -> Self {
        self.ok = false;
        self.failure = Some(Failure { seq, kind, detail });
        self
    }
}

/// Where the kept chain must start: the newest checkpoint names it; without one, the genesis.
pub(crate) fn anchor(conn: &Connection) -> Result<(i64, String, Option<i64>), Fault> {
    let cp = conn
        .query_row(
            &format!(
                "SELECT {} FROM decisions WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1",
                db::COLS
            ),
            [],
            db::raw,
        )
        .optional()?;
    match cp {
        None => Ok((1, GENESIS_HASH.to_string(), None)),
        Some(raw) => {
            let rec = raw.decode()?;
            let (first, prev) = prune::checkpoint_anchor(&rec)?;
            Ok((first, prev, Some(rec.seq)))
        }
    }
}

/// The record-by-record check of one chain, whatever the records are read from (the SQLite log, the records a
/// shipper copied into PostgreSQL): each record must come at the expected seq, link to the one before and match its
/// own hash. Feed the records in seq order with [`Chain::next`]; it stops at the first that does not fit.
#[derive(Debug)]
pub(crate) struct Chain {
    expect_seq: i64,
    expect_prev: String,
    report: VerifyReport,
}

impl Chain {
    /// A chain whose first record must be `expect_seq`, linked to `expect_prev`, adding to `report`.
    pub(crate) fn new(expect_seq: i64, expect_prev: &str, report: VerifyReport) -> Self {
        Chain {
            expect_seq,
            expect_prev: expect_prev.to_string(),
            report,
        }
    }

    /// Checks the record stored at `seq` (or why it could not be decoded). `false` once the chain failed: the
    /// report names the first bad seq.
    pub(crate) fn next(&mut self, seq: i64, rec: Result<DecisionRecord, String>) -> bool {
        if self.report.failure.is_some() {
            return false;
        }
        let failed = |c: &mut Chain, seq: i64, kind: FailureKind, detail: String| {
            let r = std::mem::replace(&mut c.report, VerifyReport::empty());
            c.report = r.fail(Some(seq), kind, detail);
            false
        };
        let expect_seq = self.expect_seq;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => return failed(self, seq, FailureKind::Corrupt, e),
        };
        if seq < expect_seq {
            return failed(
                self,
                seq,
                FailureKind::BrokenLink,
                format!(
                    "record precedes the start of the chain (seq {expect_seq}, set by the newest checkpoint)"
                ),
            );
        }
        if seq > expect_seq {
            let detail = if seq == expect_seq + 1 {
                format!("record {expect_seq} is missing")
            } else {
                format!("records {expect_seq}..={} are missing", seq - 1)
            };
            return failed(self, expect_seq, FailureKind::Missing, detail);
        }
        if rec.prev_hash != self.expect_prev {
            let detail = if self.report.records == 0 {
                "prev_hash does not match the start of the chain (genesis or checkpoint anchor)"
                    .to_string()
            } else {
                format!(
                    "prev_hash does not match the hash of record {}: a record was inserted, replaced or moved",
                    seq - 1
                )
            };
            return failed(self, seq, FailureKind::BrokenLink, detail);
        }
        if rec.seq != seq || !rec.hash_ok() {
            return failed(
                self,
                seq,
                FailureKind::HashMismatch,
                "content does not match its hash: the record was edited or moved".into(),
            );
        }
        let report = &mut self.report;
        if report.first_seq.is_none() {
            report.first_seq = Some(seq);
        }
        report.records += 1;
        report.last_seq = Some(seq);
        self.expect_prev.clone_from(&rec.hash);
        report.last_hash = Some(rec.hash);
        self.expect_seq += 1;
        true
    }

    /// Fails the chain at `seq` for a reason found outside it (a stored column that disagrees with the record).
    pub(crate) fn fail(&mut self, seq: i64, kind: FailureKind, detail: String) {
        if self.report.failure.is_none() {
            let r = std::mem::replace(&mut self.report, VerifyReport::empty());
            self.report = r.fail(Some(seq), kind, detail);
        }
    }

    /// The records checked so far.
    pub(crate) fn records(&self) -> u64 {
        self.report.records
    }

    /// The report so far.
    pub(crate) fn finish(self) -> VerifyReport {
        self.report
    }
}

/// Walks the stored records with `lo <= seq <= hi` in seq order, expecting the first at `expect_seq` linked to
/// `expect_prev`, each next one linked to the one before and matching its own hash. Adds them to `report` and
/// stops at the first that does not fit (the failure names it). Shared by [`verify_store`] (the whole chain) and
/// prune (the segment it is about to delete, and what was appended since it last looked).
pub(crate) fn walk(
    conn: &Connection,
    lo: i64,
    hi: i64,
    expect_seq: i64,
    expect_prev: &str,
    report: VerifyReport,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, Fault> {
    let mut chain = Chain::new(expect_seq, expect_prev, report);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM decisions WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq",
        db::COLS
    ))?;
    let mut rows = stmt.query([lo, hi])?;
    while let Some(row) = rows.next()? {
        let raw = db::raw(row)?;
        let seq = raw.seq();
        if !chain.next(seq, raw.decode().map_err(|e| e.to_string())) {
            break;
        }
        if chain.records() % 4096 == 0 {
            progress(chain.records());
        }
    }
    Ok(chain.finish())
}

/// Walks the stored chain in seq order and reports the first record that does not verify: an edited field
/// ([`FailureKind::HashMismatch`]), a deleted record ([`FailureKind::Missing`]), an inserted or reordered one
/// ([`FailureKind::BrokenLink`] or `HashMismatch`, since `seq` is hashed), a cut-off tail
/// ([`FailureKind::Truncated`]). After a prune, the newest checkpoint says where the chain starts and which hash
/// precedes it.
pub fn verify_store(path: &Path) -> Result<VerifyReport, VerifyError> {
    let conn = db::open_read(path)?;
    // One read transaction: a writer appending meanwhile cannot make the head and the rows disagree.
    conn.execute_batch("BEGIN")?;
    let report = verify_conn(&conn, &mut |_| {});
    let _ = conn.execute_batch("COMMIT");
    Ok(report?)
}

/// What [`verify_log`] checks besides the chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The public key the anchors must be signed with. `None`: the chain alone is checked (which proves nothing
    /// against someone who can rewrite the file).
    pub public_key: Option<ed25519_dalek::VerifyingKey>,
    /// The anchors file (an anchors file or a JSON Lines sink holding anchors); default `<log>.anchors.jsonl`.
    pub anchors: Option<std::path::PathBuf>,
}

/// Verifies the log at `path` as [`verify_store`] does and, with a public key, against its signed anchors (see
/// [`super::anchor`]): a rewound head, a deletion or an edit with the chain recomputed, a forged append and a wiped
/// log are then reported too, with the first seq that disagrees. Opens the file read-only (it works on read-only
/// media and leaves no files behind). A damaged file is a report (`ok: false`, [`FailureKind::Corrupt`]), not an
/// error. `progress` is called with the records checked so far every few thousand records.
pub fn verify_log(
    path: &Path,
    opts: &VerifyOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, VerifyError> {
    let anchors = match &opts.public_key {
        None => None,
        Some(key) => {
            let file = opts
                .anchors
                .clone()
                .unwrap_or_else(|| super::anchor::anchors_path(path));
            match super::anchor::read_checked(&file, key)? {
                Ok(a) => Some(a),
                Err((seq, kind, detail)) => {
                    return Ok(VerifyReport::empty().fail(seq, kind, detail));
                }
            }
        }
    };
    if !path.exists() {
        if let Some(last) = anchors
            .as_ref()
            .and_then(|a| a.last())
            .filter(|a| a.seq > 0)
        {
            return Ok(VerifyReport::empty().fail(
                Some(1),
                FailureKind::Missing,
                format!(
                    "the log {} is gone, but the anchor signed at {} covers records up to seq {}: the log was wiped",
                    path.display(),
                    last.time,
                    last.seq
                ),
            ));
        }
    }
    let checked = (|| -> Result<VerifyReport, Fault> {
        let conn = db::open_read(path)?;
        conn.execute_batch("BEGIN")?;
        let report = verify_conn(&conn, progress)?;
        let report = match (&anchors, &report.failure) {
            (Some(anchors), None) => {
                let (start, prev, checkpoint) = anchor(&conn)?;
                let pruned = checkpoint.map(|_| (start - 1, prev.as_str()));
                super::anchor::check(&conn, anchors, start, pruned, report)?
            }
            _ => report,
        };
        let _ = conn.execute_batch("COMMIT");
        Ok(report)
    })();
    match checked {
        Ok(r) => Ok(r),
        Err(e) if e.is_damage() => Ok(VerifyReport::empty().fail(
            None,
            FailureKind::Corrupt,
            format!("the log file is damaged: {e}"),
        )),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn verify_conn(
    conn: &Connection,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, Fault> {
    let mut report = VerifyReport::empty();
    let (expect_seq, expect_prev, checkpoint) = match anchor(conn) {
        Ok(a) => a,
        Err(Fault::Corrupt { seq, reason }) => {
            return Ok(report.fail(
                Some(seq),
                FailureKind::Corrupt,
                format!("checkpoint unreadable: {reason}"),
            ));
        }
        Err(e) => return Err(e),
    };
    report.checkpoint_seq = checkpoint;
    let report = walk(
        conn,
        i64::MIN,
        i64::MAX,
        expect_seq,
        &expect_prev,
        report,
        progress,
    )?;
    if report.failure.is_some() {
        return Ok(report);
    }
    let expect_seq = report.last_seq.map_or(expect_seq, |l| l + 1);

    let head = db::head(conn)?;
    let head_ok = match (&head, report.last_seq) {
        (None, None) => true,
        (Some((hseq, hhash)), Some(last)) => {
            *hseq == last && report.last_hash.as_ref() == Some(hhash)
        }
        _ => false,
    };
    if !head_ok {
        let detail = format!(
            "the stored head is {} but the last record is {}: records were cut off or the head was altered",
            head.as_ref()
                .map_or_else(|| "missing".to_string(), |h| format!("seq {}", h.0)),
            report
                .last_seq
                .map_or_else(|| "none".to_string(), |l| format!("seq {l}"))
        );
        let seq = report.last_seq.map_or(expect_seq, |l| l + 1);
        return Ok(report.fail(Some(seq), FailureKind::Truncated, detail));
    }

    // The grant index only speeds up queries, but a query answered from a doctored index would mislead.
    let bad: Option<i64> = conn
        .query_row(
            "SELECT MIN(seq) FROM (
               SELECT g.seq AS seq FROM decision_grants g WHERE NOT EXISTS (
                 SELECT 1 FROM decisions d, json_each(d.grants_used) j WHERE d.seq = g.seq AND j.value = g.grant_id)
               UNION ALL
               SELECT d.seq AS seq FROM decisions d, json_each(d.grants_used) j WHERE NOT EXISTS (
                 SELECT 1 FROM decision_grants g WHERE g.seq = d.seq AND g.grant_id = j.value))",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if let Some(seq) = bad {
        return Ok(report.fail(
            Some(seq),
            FailureKind::IndexMismatch,
            "the grant index disagrees with the record's grants_used".into(),
        ));
    }
    Ok(report)
}
