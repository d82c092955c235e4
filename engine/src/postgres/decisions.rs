//! Decision logs of several replicas in one PostgreSQL. Each replica keeps its own hash-chained log in its local
//! SQLite file (the hot path does not wait on the network); a [`Shipper`] thread copies the sealed records into
//! `decision_records`, keyed by replica and seq, at least once and idempotently (a copy that is already there is
//! skipped), with `decision_heads` naming each replica's newest shipped record. [`Records`] reads them back for
//! `jitgate decisions query|export|verify --store postgres://...`: queries over all replicas or one, an export of one
//! replica's chain, and a verification of every replica's chain on its own.
//!
//! With `[log] anchor_key`, the shipper also copies the replica's signed anchors into `decision_anchors`, keyed by
//! replica and place in its anchors file, each in the transaction of the records whose head it signs, and
//! verification with the public key checks each chain against them. A record's hash does not cover the replica id
//! (the local log does not know it); the signed anchors do, which is what binds a shipped chain to its replica. It
//! also marks the local log with how far it has shipped ([`crate::log::mark_shipped`]), so prune never removes a
//! record before it is in the store.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use parking_lot::{Condvar, Mutex};
use postgres::Row;
use postgres::types::ToSql;

use super::pool::Connector;
use super::{PgStore, migrate, pg_err};
use crate::log::{
    Anchor, AnchorChain, Chain, Cursor, DecisionRecord, ExportManifest, FailureKind, Filter,
    Format, GENESIS_HASH, RecordExport, ShipFeed, StoredRecord, VerifyReport, check_anchors,
    checkpoint_anchor, format_time,
};
use crate::store::StoreError;

/// The schema version that has the decision-record tables.
const RECORDS_VERSION: i64 = 2;

/// The schema version that has the shipped signed anchors.
const ANCHORS_VERSION: i64 = 3;

/// Rows fetched at a time when reading a whole chain.
const FETCH: i32 = 1000;

const COLS: &str = "replica, seq, record, time, kind, principal, action, resource, decision, request_id, \
                    revision, grants_used, prev_hash, hash";

const TABLE: &str = "decision_records";

/// Where the next page of a query over several replicas starts: the last record of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaCursor {
    /// The last record's replica.
    pub replica: String,
    /// Its seq.
    pub seq: i64,
}

/// One page of records from PostgreSQL, ordered by replica, then seq.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaPage {
    /// Each record with the replica that wrote it.
    pub records: Vec<(String, DecisionRecord)>,
    /// Pass this to get the next page; `None` when this was the last.
    pub next: Option<ReplicaCursor>,
}

/// The verification of one replica's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaReport {
    /// The replica.
    pub replica: String,
    /// Its chain's report.
    pub report: VerifyReport,
}

/// The shipped decision records of a PostgreSQL store, for reading.
#[derive(Debug)]
pub struct Records {
    connector: Connector,
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(p: &Params) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `WHERE` clause and parameters for `filter` over `replica` (all when `None`), after `after`.
fn where_clause(
    replica: Option<&str>,
    filter: &Filter,
    after: Option<&ReplicaCursor>,
) -> (String, Params) {
    let mut conds: Vec<String> = Vec::new();
    let mut args: Params = Vec::new();
    let eq = |conds: &mut Vec<String>, args: &mut Params, col: &str, v: Option<String>| {
        if let Some(v) = v {
            args.push(Box::new(v));
            conds.push(format!("{col} = ${}", args.len()));
        }
    };
    eq(
        &mut conds,
        &mut args,
        "replica",
        replica.map(str::to_string),
    );
    eq(&mut conds, &mut args, "principal", filter.principal.clone());
    eq(&mut conds, &mut args, "action", filter.action.clone());
    eq(&mut conds, &mut args, "resource", filter.resource.clone());
    eq(&mut conds, &mut args, "revision", filter.revision.clone());
    eq(
        &mut conds,
        &mut args,
        "request_id",
        filter.request_id.clone(),
    );
    eq(
        &mut conds,
        &mut args,
        "decision",
        filter.decision.map(|d| d.as_str().to_string()),
    );
    eq(
        &mut conds,
        &mut args,
        "kind",
        filter.kind.map(|k| k.as_str().to_string()),
    );
    if let Some(g) = &filter.grant {
        args.push(Box::new(g.clone()));
        conds.push(format!("${} = ANY (grants_used)", args.len()));
    }
    // Record times are fixed-width UTC text, so text comparison is time comparison.
    if let Some(t) = filter.since {
        args.push(Box::new(format_time(t)));
        conds.push(format!("time >= ${}", args.len()));
    }
    if let Some(t) = filter.until {
        args.push(Box::new(format_time(t)));
        conds.push(format!("time < ${}", args.len()));
    }
    if let Some(a) = after {
        args.push(Box::new(a.replica.clone()));
        args.push(Box::new(a.seq));
        conds.push(format!(
            "(replica, seq) > (${}, ${})",
            args.len() - 1,
            args.len()
        ));
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (clause, args)
}

/// A stored row: its replica and seq, the record decoded from it (or why it could not be), and whether the
/// columns read from the record for filtering still say what the record says.
struct Stored {
    replica: String,
    seq: i64,
    record: Result<DecisionRecord, String>,
    columns_differ: Option<&'static str>,
}

fn stored(row: &Row) -> Result<Stored, StoreError> {
    let get = |e: postgres::Error| pg_err("cannot read a decision record", e);
    let replica: String = row.try_get(0).map_err(get)?;
    let seq: i64 = row.try_get(1).map_err(get)?;
    let text: String = row.try_get(2).map_err(get)?;
    let record = serde_json::from_str::<DecisionRecord>(&text).map_err(|e| e.to_string());
    let columns_differ = match &record {
        Err(_) => None,
        Ok(r) => {
            let time: String = row.try_get(3).map_err(get)?;
            let kind: String = row.try_get(4).map_err(get)?;
            let principal: String = row.try_get(5).map_err(get)?;
            let action: String = row.try_get(6).map_err(get)?;
            let resource: String = row.try_get(7).map_err(get)?;
            let decision: Option<String> = row.try_get(8).map_err(get)?;
            let request_id: Option<String> = row.try_get(9).map_err(get)?;
            let revision: String = row.try_get(10).map_err(get)?;
            let grants: Vec<String> = row.try_get(11).map_err(get)?;
            let prev_hash: String = row.try_get(12).map_err(get)?;
            let hash: String = row.try_get(13).map_err(get)?;
            [
                ("seq", r.seq == seq),
                ("time", r.time == time),
                ("kind", r.kind.as_str() == kind),
                ("principal", r.principal == principal),
                ("action", r.action == action),
                ("resource", r.resource == resource),
                (
                    "decision",
                    r.decision.map(|d| d.as_str()) == decision.as_deref(),
                ),
                ("request_id", r.request_id == request_id),
                ("revision", r.revision == revision),
                ("grants_used", r.grants_used == grants),
                ("prev_hash", r.prev_hash == prev_hash),
                ("hash", r.hash == hash),
            ]
            .into_iter()
            .find(|(_, same)| !same)
            .map(|(name, _)| name)
        }
    };
    Ok(Stored {
        replica,
        seq,
        record,
        columns_differ,
    })
}

fn no_table(found: i64) -> StoreError {
    StoreError::database(
        "",
        format!(
            "the store has no shipped decision records (its schema is at version {found}; they need version \
             {RECORDS_VERSION}): start a jitgate replica with this `[store] url`, or run `jitgate migrate`"
        ),
    )
}

impl Records {
    /// Connects to `url` and checks that its schema holds shipped decision records (it is not migrated here: a
    /// reader changes nothing).
    pub fn open(url: &str) -> Result<Records, StoreError> {
        let connector = Connector::new(url)?;
        let version = connector.session(migrate::current_version_if_any)?;
        if version < RECORDS_VERSION {
            return Err(no_table(version));
        }
        if version > migrate::known_version() {
            return Err(StoreError::database(
                "",
                format!(
                    "the store's schema is at version {version}, newer than this jitgate knows (version {})",
                    migrate::known_version()
                ),
            ));
        }
        Ok(Records { connector })
    }

    /// The URL, its password masked.
    pub fn url(&self) -> &str {
        &self.connector.shown
    }

    /// The replicas that shipped records, by name.
    pub fn replicas(&self) -> Result<Vec<String>, StoreError> {
        self.connector.session(|c| {
            let rows = c
                .query(
                    "SELECT replica FROM decision_heads UNION SELECT DISTINCT replica FROM decision_records
                     ORDER BY 1",
                    &[],
                )
                .map_err(|e| pg_err("cannot list the replicas", e))?;
            rows.iter()
                .map(|r| r.try_get(0).map_err(|e| pg_err("", e)))
                .collect()
        })
    }

    /// How many records of `replica` (all when `None`) match `filter`.
    pub fn count(&self, replica: Option<&str>, filter: &Filter) -> Result<u64, StoreError> {
        let (clause, args) = where_clause(replica, filter, None);
        self.connector.session(|c| {
            let n: i64 = c
                .query_one(
                    &format!("SELECT COUNT(*) FROM {TABLE} {clause}"),
                    &refs(&args),
                )
                .and_then(|r| r.try_get(0))
                .map_err(|e| pg_err("cannot count decision records", e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// Records of `replica` (all when `None`) matching `filter`, by replica then seq, at most `limit`, after
    /// `after` (from a previous page).
    pub fn query(
        &self,
        replica: Option<&str>,
        filter: &Filter,
        after: Option<&ReplicaCursor>,
        limit: u32,
    ) -> Result<ReplicaPage, StoreError> {
        let limit = limit.max(1);
        let (clause, mut args) = where_clause(replica, filter, after);
        args.push(Box::new(i64::from(limit) + 1));
        let sql = format!(
            "SELECT {COLS} FROM {TABLE} {clause} ORDER BY replica, seq LIMIT ${}",
            args.len()
        );
        let mut records = self.connector.session(|c| {
            let rows = c
                .query(&sql, &refs(&args))
                .map_err(|e| pg_err("cannot query decision records", e))?;
            rows.iter()
                .map(|row| {
                    let s = stored(row)?;
                    let rec = s.record.map_err(|reason| StoreError::Corrupt {
                        table: TABLE,
                        reason: format!("replica `{}` seq {}: {reason}", s.replica, s.seq),
                    })?;
                    Ok((s.replica, rec))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        let next = if records.len() > limit as usize {
            records.truncate(limit as usize);
            records.last().map(|(replica, r)| ReplicaCursor {
                replica: replica.clone(),
                seq: r.seq,
            })
        } else {
            None
        };
        Ok(ReplicaPage { records, next })
    }

    /// Verifies the chain of each replica (or of `replica` alone) on its own, in one consistent snapshot: every
    /// record at its seq, linked to the one before and matching its hash, the columns read from it agreeing with
    /// it, the chain starting at the genesis (or at the start a shipped prune checkpoint names) and ending at the
    /// replica's shipped head. `progress` is called with the records checked so far every few thousand.
    pub fn verify(
        &self,
        replica: Option<&str>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Vec<ReplicaReport>, StoreError> {
        self.verify_with(replica, None, progress)
    }

    /// [`Records::verify`], and with `key` also against each replica's shipped signed anchors: each signed by
    /// `key`, linked to the one before, naming the replica whose chain it is (so a chain moved to another replica's
    /// name is seen), and signing a head that is the record stored at its seq (so a head rewound with the newest
    /// records deleted, or a range rewritten with the chain recomputed, is seen, with the first seq that
    /// disagrees). A replica that shipped no anchors fails ([`FailureKind::AnchorMissing`]).
    pub fn verify_with(
        &self,
        replica: Option<&str>,
        key: Option<&VerifyingKey>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Vec<ReplicaReport>, StoreError> {
        if key.is_some() {
            let version = self.connector.session(migrate::current_version_if_any)?;
            if version < ANCHORS_VERSION {
                return Err(StoreError::database(
                    "",
                    format!(
                        "the store's schema is at version {version}; shipped signed anchors need version \
                         {ANCHORS_VERSION}: start a replica of this jitgate with this `[store] url`, or run \
                         `jitgate migrate`"
                    ),
                ));
            }
        }
        let replicas = match replica {
            Some(r) => vec![r.to_string()],
            None => self.replicas()?,
        };
        self.connector.session(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| pg_err("", e))?;
            let mut done = 0u64;
            let mut out = Vec::new();
            for r in replicas {
                let mut report = verify_replica(&mut tx, &r, &mut done, progress)?;
                if let (Some(key), None) = (key, &report.failure) {
                    report = verify_anchors(&mut tx, &r, key, report)?;
                }
                out.push(ReplicaReport { replica: r, report });
            }
            tx.commit().map_err(|e| pg_err("", e))?;
            Ok(out)
        })
    }

    /// Exports the records of `replica` matching `filter`, in seq order, to `out` in `format` (the same bytes a
    /// replica's own log would export), calling `progress` with the count so far. Returns the manifest.
    pub fn export(
        &self,
        replica: &str,
        filter: &Filter,
        format: Format,
        out: &mut (dyn Write + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<ExportManifest, StoreError> {
        let (clause, args) = where_clause(Some(replica), filter, None);
        let sql = format!("SELECT {COLS} FROM {TABLE} {clause} ORDER BY seq");
        let write_err =
            |e: crate::log::ExportError| StoreError::database("cannot write the export", e);
        self.connector.session(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| pg_err("", e))?;
            let portal = tx
                .bind(sql.as_str(), &refs(&args))
                .map_err(|e| pg_err("cannot read decision records", e))?;
            let mut export = RecordExport::start(filter, format, out).map_err(write_err)?;
            loop {
                let rows = tx
                    .query_portal(&portal, FETCH)
                    .map_err(|e| pg_err("cannot read decision records", e))?;
                for row in &rows {
                    let s = stored(row)?;
                    let rec = s.record.map_err(|reason| StoreError::Corrupt {
                        table: TABLE,
                        reason: format!("replica `{}` seq {}: {reason}", s.replica, s.seq),
                    })?;
                    let n = export.push(&rec).map_err(write_err)?;
                    if n % 4096 == 0 {
                        progress(n);
                    }
                }
                if rows.len() < FETCH as usize {
                    break;
                }
            }
            let m = export.finish().map_err(write_err)?;
            progress(m.records);
            tx.commit().map_err(|e| pg_err("", e))?;
            Ok(m)
        })
    }
}

/// Where `replica`'s shipped chain must start: seq 1 after the genesis; later, where a shipped prune checkpoint
/// says the kept chain starts. `None` when nothing names the first shipped record as a start.
fn chain_start(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    first: i64,
) -> Result<Option<(i64, String)>, StoreError> {
    if first <= 1 {
        return Ok(Some((1, GENESIS_HASH.to_string())));
    }
    let rows = tx
        .query(
            "SELECT record FROM decision_records WHERE replica = $1 AND kind = 'checkpoint' ORDER BY seq DESC",
            &[&replica],
        )
        .map_err(|e| pg_err("cannot read checkpoints", e))?;
    for row in rows {
        let text: String = row.try_get(0).map_err(|e| pg_err("", e))?;
        let Ok(cp) = serde_json::from_str::<DecisionRecord>(&text) else {
            continue;
        };
        if let Ok((start, prev)) = checkpoint_anchor(&cp) {
            if start == first {
                return Ok(Some((start, prev)));
            }
        }
    }
    Ok(None)
}

fn verify_replica(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    done: &mut u64,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<VerifyReport, StoreError> {
    let first: Option<i64> = tx
        .query_one(
            "SELECT MIN(seq) FROM decision_records WHERE replica = $1",
            &[&replica],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| pg_err("", e))?;
    let head: Option<(i64, String)> = tx
        .query_opt(
            "SELECT seq, hash FROM decision_heads WHERE replica = $1",
            &[&replica],
        )
        .map_err(|e| pg_err("", e))?
        .map(|r| Ok::<_, postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()
        .map_err(|e| pg_err("", e))?;
    let (start, prev) = match first {
        None => (1, GENESIS_HASH.to_string()),
        Some(first) => match chain_start(tx, replica, first)? {
            Some(s) => s,
            None => {
                let detail = if first == 2 {
                    "record 1 is missing".to_string()
                } else {
                    format!(
                        "records 1..={} are missing (no shipped checkpoint names seq {first} as the start)",
                        first - 1
                    )
                };
                return Ok(VerifyReport::empty().fail(Some(1), FailureKind::Missing, detail));
            }
        },
    };
    let mut chain = Chain::new(start, &prev, VerifyReport::empty());
    let portal = tx
        .bind(
            format!("SELECT {COLS} FROM {TABLE} WHERE replica = $1 ORDER BY seq").as_str(),
            &[&replica],
        )
        .map_err(|e| pg_err("cannot read decision records", e))?;
    'rows: loop {
        let rows = tx
            .query_portal(&portal, FETCH)
            .map_err(|e| pg_err("cannot read decision records", e))?;
        for row in &rows {
            let s = stored(row)?;
            if !chain.next(s.seq, s.record) {
                break 'rows;
            }
            if let Some(col) = s.columns_differ {
                chain.fail(
                    s.seq,
                    FailureKind::IndexMismatch,
                    format!("the `{col}` column disagrees with the stored record"),
                );
                break 'rows;
            }
            *done += 1;
            if *done % 4096 == 0 {
                progress(*done);
            }
        }
        if rows.len() < FETCH as usize {
            break;
        }
    }
    let report = chain.finish();
    if report.failure.is_some() {
        return Ok(report);
    }
    let ok = match (&head, report.last_seq) {
        (None, None) => true,
        (Some((hseq, hhash)), Some(last)) => {
            *hseq == last && report.last_hash.as_ref() == Some(hhash)
        }
        _ => false,
    };
    if ok {
        return Ok(report);
    }
    let detail = format!(
        "the shipped head is {} but the last shipped record is {}: records were removed or the head was altered",
        head.as_ref()
            .map_or_else(|| "missing".to_string(), |h| format!("seq {}", h.0)),
        report
            .last_seq
            .map_or_else(|| "none".to_string(), |l| format!("seq {l}"))
    );
    let seq = report.last_seq.map_or(start, |l| l + 1);
    Ok(report.fail(Some(seq), FailureKind::Truncated, detail))
}

/// Checks `replica`'s chain, already walked into `report`, against its shipped anchors (see
/// [`Records::verify_with`]).
fn verify_anchors(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    key: &VerifyingKey,
    report: VerifyReport,
) -> Result<VerifyReport, StoreError> {
    let rows = tx
        .query(
            "SELECT n, seq, anchor, hash FROM decision_anchors WHERE replica = $1 ORDER BY n",
            &[&replica],
        )
        .map_err(|e| pg_err("cannot read shipped anchors", e))?;
    if rows.is_empty() {
        return Ok(report.fail(
            None,
            FailureKind::AnchorMissing,
            format!(
                "replica `{replica}` shipped no signed anchors: its records cannot be proven against the key (is \
                 `[log] anchor_key` set on it?)"
            ),
        ));
    }
    let mut chain = AnchorChain::new(key);
    for (i, row) in rows.iter().enumerate() {
        let get = |e: postgres::Error| pg_err("cannot read a shipped anchor", e);
        let n: i64 = row.try_get(0).map_err(get)?;
        let seq: i64 = row.try_get(1).map_err(get)?;
        let text: String = row.try_get(2).map_err(get)?;
        let hash: String = row.try_get(3).map_err(get)?;
        let at = format!("anchor {n}");
        let bad = |report: VerifyReport, kind, detail: String| report.fail(Some(seq), kind, detail);
        if n != i as i64 + 1 {
            return Ok(bad(
                report,
                FailureKind::AnchorInvalid,
                format!(
                    "{at}: anchor {} is missing from the store: an anchor was removed",
                    i + 1
                ),
            ));
        }
        let a: Anchor = match serde_json::from_str(&text) {
            Ok(a) => a,
            Err(e) => {
                return Ok(bad(
                    report,
                    FailureKind::AnchorInvalid,
                    format!("{at}: not an anchor: {e}"),
                ));
            }
        };
        if a.seq != seq || a.hash() != hash {
            return Ok(bad(
                report,
                FailureKind::AnchorInvalid,
                format!("{at}: the `seq` or `hash` column disagrees with the stored anchor"),
            ));
        }
        // The signed anchor names its replica: records (and anchors) moved to another replica's name are not its.
        if a.replica != replica {
            return Ok(bad(
                report,
                FailureKind::AnchorMismatch,
                format!(
                    "{at}: signed for replica `{}`, not `{replica}`: records or anchors were moved between replicas",
                    a.replica
                ),
            ));
        }
        if let Err((seq, kind, detail)) = chain.push(&at, a) {
            return Ok(report.fail(seq, kind, detail));
        }
    }
    let anchors = chain.finish();
    let start = report.first_seq.unwrap_or(1);
    let pruned = if start > 1 {
        // The shipped chain starts after a prune: its start record links to the last pruned record's hash.
        let prev: Option<String> = tx
            .query_opt(
                "SELECT prev_hash FROM decision_records WHERE replica = $1 AND seq = $2",
                &[&replica, &start],
            )
            .map_err(|e| pg_err("", e))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| pg_err("", e))?;
        prev.map(|p| (start - 1, p))
    } else {
        None
    };
    let mut hash_at = |seq: i64| -> Result<Option<String>, StoreError> {
        tx.query_opt(
            "SELECT hash FROM decision_records WHERE replica = $1 AND seq = $2",
            &[&replica, &seq],
        )
        .map_err(|e| pg_err("", e))?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(|e| pg_err("", e))
    };
    // Anchors are shipped after the records they sign, so records past the last shipped anchor may be waiting for
    // theirs: the interval after it is not checked (a shutdown anchor followed by records still is).
    check_anchors(
        &anchors,
        start,
        pruned.as_ref().map(|(s, h)| (*s, h.as_str())),
        report,
        &mut hash_at,
        None,
    )
}

/// How a replica's shipper runs.
#[derive(Debug, Clone)]
pub struct ShipOptions {
    /// The replica id the records are shipped under (`[cluster] replica`).
    pub replica: String,
    /// The replica's local decision log (`[log] path`).
    pub log: PathBuf,
    /// Its signed anchors file (`[log] anchors`), when the log is anchored: shipped beside the records.
    pub anchors: Option<PathBuf>,
    /// How often it looks for new records when it has caught up.
    pub every: Duration,
    /// Records per transaction.
    pub batch: u32,
    /// The writer's feed of committed records ([`crate::log::LogOptions::ship`]): records are taken from it rather
    /// than read back from the log (which is read only for what the feed misses), and the shipping mark goes back
    /// through it into the writer's next transaction. `None`: every pass reads the log and commits the mark.
    pub feed: Option<Arc<ShipFeed>>,
}

/// Counters of the shipper, for metrics.
#[derive(Debug, Default)]
pub struct ShipStats {
    /// Records this process shipped (inserted; copies already there are not counted).
    pub shipped: AtomicU64,
    /// The newest seq known to be in PostgreSQL.
    pub shipped_seq: AtomicI64,
    /// Sealed local records not yet in PostgreSQL, as last seen.
    pub lag_records: AtomicU64,
    /// Age of the oldest of them in milliseconds (0 when none wait).
    pub lag_ms: AtomicU64,
    /// Passes that failed (the store unreachable, the log unreadable); each is retried.
    pub errors: AtomicU64,
    /// Records taken from the writer's feed (in memory, not read back from the log).
    pub feed_records: AtomicU64,
    /// Times the shipper read the local log: with a feed, only for records it never held (committed before the
    /// shipper started, dropped by a full feed, written by someone else such as a prune's checkpoint), and once a
    /// pass while the writer is quiet, to find the latter.
    pub log_reads: AtomicU64,
    /// Records shipped from the local log rather than from the feed.
    pub log_records: AtomicU64,
}

/// The running shipper; [`Shipper::stop`] ships what is left and ends it. Dropping it stops the thread without the
/// last pass.
#[derive(Debug)]
pub struct Shipper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<ShipStats>,
}

impl Drop for Shipper {
    fn drop(&mut self) {
        let (flag, cv) = &*self.stop;
        *flag.lock() = true;
        cv.notify_all();
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Log(#[from] crate::log::QueryError),
}

impl Shipper {
    /// Starts shipping the sealed records of `opts.log` into `store`, from the newest seq already there for the
    /// replica (so a restart resumes and ships nothing twice), counting into `stats`.
    pub fn start(
        store: Arc<PgStore>,
        opts: ShipOptions,
        stats: Arc<ShipStats>,
    ) -> Result<Shipper, StoreError> {
        // Before anything else may prune the log: from here on, prune keeps what is not in the store. Nothing is
        // known to be there until the first pass has asked the store.
        if let Some(feed) = &opts.feed {
            feed.reset_marks();
        }
        if opts.log.is_file() {
            crate::log::mark_shipped(&opts.log, &opts.replica, 0).map_err(|e| {
                StoreError::database(
                    format!(
                        "cannot mark the decision log {} as shipped",
                        opts.log.display()
                    ),
                    e,
                )
            })?;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = std::thread::Builder::new()
            .name("jitgate-log-shipper".into())
            .spawn({
                let (stop, stats) = (stop.clone(), stats.clone());
                move || run(&store, &opts, &stop, &stats)
            })
            .map_err(|e| StoreError::database("cannot start the log shipper", e))?;
        Ok(Shipper {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<ShipStats> {
        &self.stats
    }

    /// Ships what the log holds now (one last pass, if the store is reachable) and ends the thread.
    pub fn stop(mut self) {
        {
            let (flag, cv) = &*self.stop;
            *flag.lock() = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a shipper knows to be in the store; forgotten after a failed pass (asked again).
#[derive(Debug, Default)]
struct Shipped {
    /// The newest shipped seq.
    seq: Option<i64>,
    /// Anchors shipped (the store's `n` of the last one) and the byte offset in the anchors file just past it.
    anchors: Option<(i64, u64)>,
}

/// How long a shipper with a feed waits between two reads of a quiet log.
const QUIET_READ_EVERY: Duration = Duration::from_secs(1);

/// What a shipper with a feed knows of a quiet writer.
#[derive(Debug, Default)]
struct Quiet {
    /// The writer's head as the last pass saw it with nothing in the feed.
    head: Option<i64>,
    /// When the log was last read because the writer was quiet.
    read: Option<std::time::Instant>,
}

/// Records taken from the feed and not shipped yet, in seq order (kept across failed passes: they are committed).
type Pending = std::collections::VecDeque<StoredRecord>;

fn run(store: &PgStore, opts: &ShipOptions, stop: &(Mutex<bool>, Condvar), stats: &ShipStats) {
    let mut shipped = Shipped::default();
    let mut pending = Pending::new();
    let mut seen_head = Quiet::default();
    let mut last_error: Option<String> = None;
    loop {
        let stopping = *stop.0.lock();
        let wait = match pass(
            store,
            opts,
            &mut shipped,
            (&mut pending, &mut seen_head),
            stopping,
            stats,
        ) {
            Ok(more) => {
                if last_error.take().is_some() {
                    tracing::info!(replica = %opts.replica, "log shipper: shipping again");
                }
                if more && !stopping {
                    continue;
                }
                opts.every
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                shipped = Shipped::default();
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(replica = %opts.replica, error = %msg, "log shipper: cannot ship decision records; retrying");
                }
                last_error = Some(msg);
                opts.every.max(Duration::from_millis(500))
            }
        };
        if stopping {
            // The last pass's mark is not left to a writer transaction that may never come.
            if let Err(e) = mark_now(opts, &shipped) {
                tracing::warn!(replica = %opts.replica, error = %e, "log shipper: cannot write the shipping mark");
            }
            return;
        }
        let mut flag = stop.0.lock();
        if !*flag {
            stop.1.wait_for(&mut flag, wait);
        }
    }
}

/// Writes the shipping mark into the log now when the writer has not yet (with a feed, it is written in the
/// writer's next transaction: a quiet log or a stopping shipper writes it here).
fn mark_now(opts: &ShipOptions, shipped: &Shipped) -> Result<(), ShipError> {
    let (Some(feed), Some(seq)) = (&opts.feed, shipped.seq) else {
        return Ok(());
    };
    // A writer inside a commit carries the mark in it.
    if feed.marked() < seq && !feed.committing() && opts.log.is_file() {
        crate::log::mark_shipped(&opts.log, &opts.replica, seq)?;
        feed.set_marked(seq);
    }
    Ok(())
}

/// The next records to ship after `after`, at most `batch`, and whether more wait: from the feed when it holds the
/// very next seq, otherwise (nothing new in the feed, or a gap: records it dropped, a prune's checkpoint, records
/// committed before the shipper started) read from the log, up to the first seq the feed holds.
fn next_records(
    opts: &ShipOptions,
    pending: &mut Pending,
    seen_head: &mut Quiet,
    after: i64,
    stopping: bool,
    stats: &ShipStats,
) -> Result<(Vec<StoredRecord>, bool), ShipError> {
    let batch = opts.batch.max(1) as usize;
    // The writer's head before a read of a quiet log: a read that a commit overlapped is not used (see below).
    let mut quiet = None;
    if let Some(feed) = &opts.feed {
        pending.extend(feed.take());
        while pending.front().is_some_and(|r| r.seq <= after) {
            pending.pop_front();
        }
        // Bounded like the feed: what does not fit is read from the log later.
        if pending.len() > feed.capacity() {
            pending.clear();
        }
        if pending.front().is_some_and(|r| r.seq == after + 1) {
            return Ok(take_run(pending, batch, stats));
        }
        if pending.is_empty() {
            // Nothing new from the writer. The log is read only once the writer has been quiet for a whole pass
            // (for records it did not write, e.g. a prune's checkpoint): a read while it commits would find its
            // newest batch, which the feed is about to hold, and read the log back pass after pass.
            let head = feed.head();
            if !stopping {
                // And then at most once a second (the records it looks for are rare; an idle proxy would
                // otherwise open its log five times a second).
                let recent = seen_head
                    .read
                    .is_some_and(|t| t.elapsed() < QUIET_READ_EVERY);
                if feed.committing() || seen_head.head != Some(head) || recent {
                    seen_head.head = Some(head);
                    return Ok((Vec::new(), false));
                }
                seen_head.read = Some(std::time::Instant::now());
                quiet = Some(head);
            }
        }
    }
    let limit = match pending.front() {
        Some(f) => usize::try_from(f.seq - after - 1).unwrap_or(0).min(batch),
        None => batch + 1,
    };
    let mut records = match u32::try_from(limit) {
        Ok(0) | Err(_) => Vec::new(),
        Ok(l) => {
            stats.log_reads.fetch_add(1, Ordering::Relaxed);
            crate::log::stored_records(&opts.log, after, l)?
        }
    };
    if let (Some(feed), Some(head)) = (&opts.feed, quiet) {
        // A commit that began after the quiet check may be in what was read: those records are the feed's (it
        // holds them once the commit ends), so this read is dropped and the feed is asked again. A commit sets
        // `committing` before it writes and moves the head when it is done, so a read that saw neither change
        // overlapped no commit of the writer's.
        if !records.is_empty() && (feed.committing() || feed.head() != head) {
            seen_head.head = None;
            return Ok((Vec::new(), true));
        }
    }
    if let Some(f) = pending.front() {
        // Only the gap before what the feed holds; a gap the log does not hold either (as in a log pruned of
        // unshipped records on purpose) is shipped as the log has it: without those records.
        records.retain(|r| r.seq < f.seq);
        if records.is_empty() {
            return Ok(take_run(pending, batch, stats));
        }
    }
    let more = records.len() > batch || !pending.is_empty();
    records.truncate(batch);
    if !records.is_empty() {
        tracing::debug!(
            replica = %opts.replica,
            after,
            records = records.len(),
            feed_front = pending.front().map(|r| r.seq),
            "log shipper: records read back from the log (the feed did not hold them)"
        );
    }
    stats
        .log_records
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    Ok((records, more))
}

/// Up to `batch` records from the front of `pending` with consecutive seqs, and whether any are left.
fn take_run(pending: &mut Pending, batch: usize, stats: &ShipStats) -> (Vec<StoredRecord>, bool) {
    let mut out: Vec<StoredRecord> = Vec::with_capacity(batch.min(pending.len()));
    while out.len() < batch
        && pending
            .front()
            .is_some_and(|r| out.last().is_none_or(|l| r.seq == l.seq + 1))
    {
        out.extend(pending.pop_front());
    }
    stats
        .feed_records
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    (out, !pending.is_empty())
}

/// One pass: ships up to a batch of sealed records past the newest shipped one, with the signed anchors whose head
/// they reach; `true` when more wait.
fn pass(
    store: &PgStore,
    opts: &ShipOptions,
    shipped: &mut Shipped,
    (pending, seen_head): (&mut Pending, &mut Quiet),
    stopping: bool,
    stats: &ShipStats,
) -> Result<bool, ShipError> {
    if !opts.log.is_file() {
        return Ok(false);
    }
    let after = match shipped.seq {
        Some(s) => s,
        None => {
            let s = store.pool.with(|c| {
                c.query_one(
                    "SELECT COALESCE(MAX(seq), 0)::BIGINT FROM decision_records WHERE replica = $1",
                    &[&opts.replica],
                )
                .and_then(|r| r.try_get::<_, i64>(0))
                .map_err(|e| pg_err("cannot read the newest shipped seq", e))
            })?;
            crate::log::mark_shipped(&opts.log, &opts.replica, s)?;
            if let Some(feed) = &opts.feed {
                feed.set_marked(s);
            }
            shipped.seq = Some(s);
            s
        }
    };
    stats.shipped_seq.store(after, Ordering::Relaxed);
    // The records as stored (no record decoded and encoded again).
    let (records, more) = next_records(opts, pending, seen_head, after, stopping, stats)?;
    let through = records.last().map_or(after, |r| r.seq);
    // Anchors read after the records: one that signs a head the records reach is shipped with them, in the same
    // transaction (a writer's start anchor comes before the records after it, so a reader never sees them follow
    // a shutdown anchor alone).
    let anchors = match &opts.anchors {
        Some(file) if file.is_file() => {
            match pending_anchors(store, opts, file, shipped, through) {
                Ok(a) => a,
                Err(e) => return Err(put_back(pending, records, e)),
            }
        }
        _ => Vec::new(),
    };
    if !records.is_empty() || !anchors.is_empty() {
        let inserted = match store
            .pool
            .with(|c| ship_batch(c, &opts.replica, &records, &anchors))
        {
            Ok(n) => n,
            Err(e) => return Err(put_back(pending, records, e.into())),
        };
        stats.shipped.fetch_add(inserted, Ordering::Relaxed);
        if let Some((n, _, offset)) = anchors.last() {
            shipped.anchors = Some((*n, *offset));
        }
    }
    if through != after {
        shipped.seq = Some(through);
        stats.shipped_seq.store(through, Ordering::Relaxed);
        // Only now that the store holds them may prune remove them.
        match &opts.feed {
            // In the writer's next transaction (or below, once the log is quiet).
            Some(feed) => feed.shipped(through),
            None => crate::log::mark_shipped(&opts.log, &opts.replica, through)?,
        }
    } else {
        // Nothing new: no writer transaction may come soon to carry the mark.
        mark_now(opts, shipped)?;
    }
    // The lag: sealed local records past the newest shipped one, and the age of the oldest of them.
    let done = through;
    let (local, oldest) = match &opts.feed {
        // The writer's head and the oldest record not shipped yet, from memory while the feed covers them.
        Some(feed) if pending.is_empty() || pending.front().is_some_and(|r| r.seq == done + 1) => {
            let local = feed
                .head()
                .max(pending.back().map_or(done, |r| r.seq))
                .max(done);
            let oldest = match pending.front() {
                Some(r) => Some(r.time.clone()),
                None => feed.oldest_time(),
            };
            (local, oldest)
        }
        _ => {
            stats.log_reads.fetch_add(1, Ordering::Relaxed);
            let local = crate::log::tail(&opts.log, 1)?
                .last()
                .map_or(done, |r| r.seq);
            let oldest = if local > done {
                crate::log::query(&opts.log, &Filter::default(), Some(Cursor(done)), 1)?
                    .records
                    .into_iter()
                    .next()
                    .map(|r| r.time)
            } else {
                None
            };
            (local, oldest)
        }
    };
    stats
        .lag_records
        .store(u64::try_from(local - done).unwrap_or(0), Ordering::Relaxed);
    let age = match oldest {
        Some(t) if local > done => crate::log::parse_time(&t).ok().map_or(0, |t| {
            let ms = (time::OffsetDateTime::now_utc() - t).whole_milliseconds();
            u64::try_from(ms).unwrap_or(0)
        }),
        _ => 0,
    };
    stats.lag_ms.store(age, Ordering::Relaxed);
    Ok(more)
}

/// After a failed pass: its records go back to the front of `pending` (they are committed, and in seq order before
/// what it holds), for the next pass to ship without reading them back from the log.
fn put_back(pending: &mut Pending, records: Vec<StoredRecord>, e: ShipError) -> ShipError {
    for r in records.into_iter().rev() {
        pending.push_front(r);
    }
    e
}

/// An anchor to ship: its place in the anchors file (from 1), the anchor, and the byte offset just past its line.
type PendingAnchor = (i64, Anchor, u64);

/// The anchors of `file` not yet in the store whose signed head is at most `through`, in file order.
fn pending_anchors(
    store: &PgStore,
    opts: &ShipOptions,
    file: &std::path::Path,
    shipped: &mut Shipped,
    through: i64,
) -> Result<Vec<PendingAnchor>, ShipError> {
    let (n, offset) = match shipped.anchors {
        Some(a) => a,
        None => {
            let n = store.pool.with(|c| {
                c.query_one(
                    "SELECT COALESCE(MAX(n), 0)::BIGINT FROM decision_anchors WHERE replica = $1",
                    &[&opts.replica],
                )
                .and_then(|r| r.try_get::<_, i64>(0))
                .map_err(|e| pg_err("cannot read the newest shipped anchor", e))
            })?;
            // Where the n-th anchor ends in the file: the next pass reads on from there.
            let all =
                crate::log::read_anchors_from(file, 0).map_err(crate::log::QueryError::from)?;
            let skip = usize::try_from(n).unwrap_or(0);
            let offset = match skip {
                0 => 0,
                k => match all.get(k - 1) {
                    Some((_, end)) => *end,
                    None => {
                        return Err(ShipError::Store(StoreError::Conflict(format!(
                            "the store holds {n} signed anchors of replica `{}` but {} holds {}: the anchors file \
                             was replaced or cut (or two replicas ship under one id)",
                            opts.replica,
                            file.display(),
                            all.len()
                        ))));
                    }
                },
            };
            shipped.anchors = Some((n, offset));
            (n, offset)
        }
    };
    let mut out = Vec::new();
    for (i, (a, end)) in crate::log::read_anchors_from(file, offset)
        .map_err(crate::log::QueryError::from)?
        .into_iter()
        .enumerate()
    {
        if a.seq > through {
            break;
        }
        out.push((n + 1 + i as i64, a, end));
    }
    Ok(out)
}

/// The columns a shipped record is copied into, in the order [`copy_records`] writes them.
const COPY_RECORDS: &str = "COPY decision_records (replica, seq, time, kind, principal, action, resource, decision, \
                            request_id, revision, grants_used, record, prev_hash, hash, shipped_at) \
                            FROM STDIN (FORMAT binary)";

/// Ships `records` of `replica` in one transaction and moves the replica's head; returns how many were new. They
/// follow the newest seq the store held when last asked, so they are normally all new: they are streamed in with
/// `COPY ... (FORMAT binary)` (the columns as the writer produced them, no statement per record or per batch to
/// plan, no conflict check per row). A record that is there after all (two shippers under one replica id, or a
/// commit whose answer was lost while another process shipped) fails the copy as a unique violation; the batch is
/// then shipped again row by row ([`insert_batch`]), skipping copies after checking they are the same records.
fn ship_batch(
    c: &mut postgres::Client,
    replica: &str,
    records: &[StoredRecord],
    anchors: &[PendingAnchor],
) -> Result<u64, StoreError> {
    if !records.is_empty() {
        match copy_batch(c, replica, records, anchors) {
            Err(CopyError::Store(e)) => return Err(e),
            Err(CopyError::Present) => {}
            Ok(n) => return Ok(n),
        }
    }
    insert_batch(c, replica, records, anchors)
}

/// Why [`copy_batch`] failed.
enum CopyError {
    /// A record is in the store already, or the batch cannot be copied as it is (the transaction was rolled back):
    /// ship it row by row.
    Present,
    Store(StoreError),
}

impl From<StoreError> for CopyError {
    fn from(e: StoreError) -> CopyError {
        CopyError::Store(e)
    }
}

/// [`ship_batch`]'s copy: every record new, or nothing done.
fn copy_batch(
    c: &mut postgres::Client,
    replica: &str,
    records: &[StoredRecord],
    anchors: &[PendingAnchor],
) -> Result<u64, CopyError> {
    let now = crate::clock::now_system();
    let mut tx = c.transaction().map_err(|e| pg_err("", e))?;
    let present =
        |e: &postgres::Error| e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION);
    match copy_records(&mut tx, replica, now, records) {
        Ok(true) => {}
        Ok(false) => return Err(CopyError::Present),
        Err(e) if present(&e) => return Err(CopyError::Present),
        Err(e) => return Err(pg_err("cannot ship decision records", e).into()),
    }
    finish_batch(&mut tx, replica, now, records, anchors)?;
    match tx.commit() {
        Ok(()) => Ok(records.len() as u64),
        // The primary key is checked as rows go in; a deferred check would say so here.
        Err(e) if present(&e) => Err(CopyError::Present),
        Err(e) => Err(pg_err("", e).into()),
    }
}

/// Streams `records` into `decision_records` in PostgreSQL's binary copy format; `false` (the copy abandoned) for a
/// batch it cannot copy as it is. The rows are encoded here, straight from the stored columns into chunks of
/// [`COPY_CHUNK`] bytes, rather than through the client's per-row writer (one value conversion per column and one
/// runtime round trip per row): the shipper runs on the proxy's cores.
fn copy_records(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    now: i64,
    records: &[StoredRecord],
) -> Result<bool, postgres::Error> {
    let mut sink = tx.copy_in(COPY_RECORDS)?;
    let mut buf: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for r in records {
        // The stored JSON array of grant ids, borrowed from it where nothing is escaped.
        let owned: Vec<String>;
        let borrowed: Vec<&str>;
        let grants: &[&str] = if r.grants_used == "[]" {
            &[]
        } else if let Ok(g) = serde_json::from_str::<Vec<&str>>(&r.grants_used) {
            borrowed = g;
            &borrowed
        } else {
            match serde_json::from_str::<Vec<String>>(&r.grants_used) {
                Ok(g) => owned = g,
                Err(_) => return Ok(false),
            }
            borrowed = owned.iter().map(String::as_str).collect();
            &borrowed
        };
        copy_row(&mut buf, replica, now, r, grants);
        if buf.len() >= COPY_CHUNK {
            if sink.write_all(&buf).is_err() {
                return Ok(false);
            }
            buf.clear();
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    if sink.write_all(&buf).is_err() {
        return Ok(false);
    }
    sink.finish()?;
    Ok(true)
}

/// How many encoded bytes [`copy_records`] hands to the connection at a time.
const COPY_CHUNK: usize = 64 * 1024;

/// One row of `COPY decision_records ... (FORMAT binary)`, in [`COPY_RECORDS`]' column order.
fn copy_row(buf: &mut Vec<u8>, replica: &str, now: i64, r: &StoredRecord, grants: &[&str]) {
    fn text(buf: &mut Vec<u8>, s: &str) {
        // A field longer than i32::MAX cannot be copied; the server refuses the length, failing the batch.
        buf.extend_from_slice(&i32::try_from(s.len()).unwrap_or(-1).to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    fn opt_text(buf: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => text(buf, s),
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    fn int8(buf: &mut Vec<u8>, v: i64) {
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&v.to_be_bytes());
    }
    /// `text[]`: dimensions, no nulls, element type `text` (oid 25), then (for one dimension) its length, its lower
    /// bound 1 and each element.
    fn text_array(buf: &mut Vec<u8>, items: &[&str]) {
        const TEXT_OID: i32 = 25;
        let body: usize = if items.is_empty() {
            12
        } else {
            20 + items.iter().map(|s| 4 + s.len()).sum::<usize>()
        };
        buf.extend_from_slice(&i32::try_from(body).unwrap_or(-1).to_be_bytes());
        buf.extend_from_slice(&i32::from(!items.is_empty()).to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&TEXT_OID.to_be_bytes());
        if !items.is_empty() {
            buf.extend_from_slice(&i32::try_from(items.len()).unwrap_or(-1).to_be_bytes());
            buf.extend_from_slice(&1i32.to_be_bytes());
            for s in items {
                text(buf, s);
            }
        }
    }
    const COLUMNS: i16 = 15;
    buf.extend_from_slice(&COLUMNS.to_be_bytes());
    text(buf, replica);
    int8(buf, r.seq);
    text(buf, &r.time);
    text(buf, r.kind);
    text(buf, &r.principal);
    text(buf, &r.action);
    text(buf, &r.resource);
    opt_text(buf, r.decision);
    opt_text(buf, r.request_id.as_deref());
    text(buf, &r.revision);
    text_array(buf, grants);
    text(buf, &r.json);
    text(buf, &r.prev_hash);
    text(buf, &r.hash);
    int8(buf, now);
}

/// Inserts `records` of `replica` in one transaction (a copy already there is skipped, after checking it is the
/// same record) and moves the replica's head; returns how many were new.
fn insert_batch(
    c: &mut postgres::Client,
    replica: &str,
    records: &[StoredRecord],
    anchors: &[PendingAnchor],
) -> Result<u64, StoreError> {
    let now = crate::clock::now_system();
    let mut tx = c.transaction().map_err(|e| pg_err("", e))?;
    // One statement for the whole batch (arrays unnested on the server), not a round trip per record: shipping
    // runs in the proxy's process, and a statement per record cost the proxy about a quarter of its CPU under load.
    let mut inserted = 0;
    if !records.is_empty() {
        let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
        let col = |f: fn(&StoredRecord) -> &str| records.iter().map(f).collect::<Vec<&str>>();
        let opt = |f: fn(&StoredRecord) -> Option<&str>| {
            records.iter().map(f).collect::<Vec<Option<&str>>>()
        };
        let times = col(|r| r.time.as_str());
        let kinds = col(|r| r.kind);
        let principals = col(|r| r.principal.as_str());
        let actions = col(|r| r.action.as_str());
        let resources = col(|r| r.resource.as_str());
        let decisions = opt(|r| r.decision);
        let request_ids = opt(|r| r.request_id.as_deref());
        let revisions = col(|r| r.revision.as_str());
        let grants = col(|r| r.grants_used.as_str());
        let texts = col(|r| r.json.as_str());
        let prevs = col(|r| r.prev_hash.as_str());
        let hashes = col(|r| r.hash.as_str());
        let added = tx
            .execute(
                "INSERT INTO decision_records (replica, seq, time, kind, principal, action, resource, decision,
                   request_id, revision, grants_used, record, prev_hash, hash, shipped_at)
                 SELECT $1, r.seq, r.time, r.kind, r.principal, r.action, r.resource, r.decision, r.request_id,
                   r.revision, ARRAY(SELECT jsonb_array_elements_text(r.grants::jsonb)), r.record, r.prev_hash,
                   r.hash, $2
                 FROM UNNEST($3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[],
                   $10::TEXT[], $11::TEXT[], $12::TEXT[], $13::TEXT[], $14::TEXT[], $15::TEXT[])
                   AS r(seq, time, kind, principal, action, resource, decision, request_id, revision, grants, record,
                     prev_hash, hash)
                 ON CONFLICT (replica, seq) DO NOTHING",
                &[
                    &replica,
                    &now,
                    &seqs,
                    &times,
                    &kinds,
                    &principals,
                    &actions,
                    &resources,
                    &decisions,
                    &request_ids,
                    &revisions,
                    &grants,
                    &texts,
                    &prevs,
                    &hashes,
                ],
            )
            .map_err(|e| pg_err("cannot ship decision records", e))?;
        inserted = added;
        if added < records.len() as u64 {
            // At least once: some are copies of an earlier pass whose commit was not seen. They must be the same
            // records; a different one means two logs ship under one replica id. (Only then is anything read
            // back: a pass that inserted every record has no row to compare.)
            let rows = tx
                .query(
                    "SELECT seq, hash FROM decision_records WHERE replica = $1 AND seq = ANY ($2)",
                    &[&replica, &seqs],
                )
                .map_err(|e| pg_err("", e))?;
            for row in rows {
                let (seq, hash): (i64, String) = (
                    row.try_get(0).map_err(|e| pg_err("", e))?,
                    row.try_get(1).map_err(|e| pg_err("", e))?,
                );
                let ours = records
                    .binary_search_by_key(&seq, |r| r.seq)
                    .ok()
                    .and_then(|i| records.get(i));
                if ours.is_some_and(|r| r.hash != hash) {
                    return Err(StoreError::Conflict(format!(
                        "replica `{replica}` seq {seq} is already in the store with another hash: two decision \
                         logs ship under one replica id (set a distinct `[cluster] replica` on each)"
                    )));
                }
            }
        }
    }
    finish_batch(&mut tx, replica, now, records, anchors)?;
    tx.commit().map_err(|e| pg_err("", e))?;
    Ok(inserted)
}

/// The rest of a batch's transaction: the replica's head moved to its last record, and the anchors.
fn finish_batch(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    now: i64,
    records: &[StoredRecord],
    anchors: &[PendingAnchor],
) -> Result<(), StoreError> {
    if let Some(last) = records.last() {
        tx.execute(
            "INSERT INTO decision_heads (replica, seq, hash, shipped_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (replica) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
               shipped_at = excluded.shipped_at
             WHERE decision_heads.seq < excluded.seq",
            &[&replica, &last.seq, &last.hash, &now],
        )
        .map_err(|e| pg_err("cannot move the shipped head", e))?;
    }
    for (n, a, _) in anchors {
        let text = serde_json::to_string(a)
            .map_err(|e| StoreError::database("cannot encode a signed anchor", e))?;
        let hash = a.hash();
        let added = tx
            .execute(
                "INSERT INTO decision_anchors (replica, n, seq, anchor, hash, shipped_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (replica, n) DO NOTHING",
                &[&replica, n, &a.seq, &text, &hash, &now],
            )
            .map_err(|e| pg_err("cannot ship a signed anchor", e))?;
        if added == 0 {
            let there: String = tx
                .query_one(
                    "SELECT hash FROM decision_anchors WHERE replica = $1 AND n = $2",
                    &[&replica, n],
                )
                .and_then(|r| r.try_get(0))
                .map_err(|e| pg_err("", e))?;
            if there != hash {
                return Err(StoreError::Conflict(format!(
                    "replica `{replica}` anchor {n} is already in the store and differs: two decision logs ship \
                     under one replica id (set a distinct `[cluster] replica` on each)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::postgres::scratch::{Scratch, test_url};

    fn record(seq: i64, grants: &str) -> StoredRecord {
        StoredRecord {
            seq,
            time: format!("2026-12-07T10:00:{:02}.000000Z", seq % 60),
            kind: "decision",
            principal: format!("User::\"u{seq}\""),
            action: "Action::\"GET\"".into(),
            resource: "Path::\"/payments\"".into(),
            decision: Some("allow"),
            request_id: (seq % 2 == 0).then(|| format!("req-{seq}")),
            revision: "rev1".into(),
            grants_used: grants.into(),
            json: format!("{{\"seq\":{seq}}}"),
            prev_hash: format!("{:064x}", seq - 1),
            hash: format!("{seq:064x}"),
        }
    }

    /// Issue 16: a batch is copied in whole when none of it is in the store; one that partly is (a copy of an
    /// earlier pass) is shipped row by row, adding only the new records; a record already there with another hash
    /// (two logs under one replica id) is refused and nothing of its batch is added. Grant ids come out as the
    /// arrays they were, escapes included.
    #[test]
    fn batches_are_copied_in_and_copies_already_there_are_skipped_or_refused() {
        let Some(base) =
            test_url("batches_are_copied_in_and_copies_already_there_are_skipped_or_refused")
        else {
            return;
        };
        let scratch = Scratch::new(&base, "shipcopy").unwrap();
        let store = PgStore::open(&scratch.url()).unwrap();
        let recs: Vec<StoredRecord> = (1..=6)
            .map(|i| match i {
                2 => record(i, r#"["g2","gshared"]"#),
                5 => record(i, r#"["g\"5"]"#),
                _ => record(i, "[]"),
            })
            .collect();
        let ship = |r: &[StoredRecord]| store.pool.with(|c| ship_batch(c, "r1", r, &[]));
        assert_eq!(ship(&recs[..3]).unwrap(), 3);
        // 1..=3 are there: 4..=6 are added, 5 with its escaped id.
        assert_eq!(ship(&recs).unwrap(), 3);
        assert_eq!(ship(&recs).unwrap(), 0);
        let mut other = recs.clone();
        other[3].hash = format!("{:064x}", 99);
        other.push(record(7, "[]"));
        let e = ship(&other).unwrap_err();
        assert!(
            matches!(&e, StoreError::Conflict(m) if m.contains("seq 4")),
            "{e}"
        );
        let count = |sql: &str| scratch.scalar(sql).unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM decision_records"), Some(6));
        assert_eq!(count("SELECT MAX(seq) FROM decision_heads"), Some(6));
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM decision_records WHERE (seq = 2 AND grants_used = '{g2,gshared}')
                 OR (seq = 5 AND grants_used = ARRAY['g\"5']) OR (seq NOT IN (2, 5) AND grants_used = '{}')"
            ),
            Some(6)
        );
    }

    /// Issue 16 (store migration 5): the indexed text columns of the shipped decision tables compare byte by byte,
    /// in every table that has `replica`, so the union of the replicas' heads and records still has one collation,
    /// and a time range and a principal are still found through their indexes' columns.
    #[test]
    fn shipped_decision_keys_compare_byte_by_byte_in_every_table() {
        let Some(base) = test_url("shipped_decision_keys_compare_byte_by_byte_in_every_table")
        else {
            return;
        };
        let scratch = Scratch::new(&base, "shipcollate").unwrap();
        let store = PgStore::open(&scratch.url()).unwrap();
        let recs: Vec<StoredRecord> = (1..=4).map(|i| record(i, "[]")).collect();
        store
            .pool
            .with(|c| ship_batch(c, "r1", &recs, &[]))
            .unwrap();
        assert_eq!(
            scratch
                .scalar(
                    "SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = current_schema() AND collation_name = 'C'
                       AND ((table_name = 'decision_records' AND column_name IN ('replica', 'time', 'principal'))
                         OR (table_name IN ('decision_heads', 'decision_anchors') AND column_name = 'replica'))"
                )
                .unwrap(),
            Some(5)
        );
        let records = Records::open(&scratch.url()).unwrap();
        assert_eq!(records.replicas().unwrap(), vec!["r1".to_string()]);
        assert_eq!(
            scratch
                .scalar(
                    "SELECT COUNT(*) FROM decision_records WHERE replica = 'r1'
                     AND time >= '2026-12-07T10:00:02' AND principal IN ('User::\"u2\"', 'User::\"u4\"')"
                )
                .unwrap(),
            Some(2)
        );
    }
}
