//! Decision logs of several replicas in one PostgreSQL. Each replica keeps its own hash-chained log in its local
//! SQLite file (the hot path does not wait on the network); a [`Shipper`] thread copies the sealed records into
//! `decision_segments`, at least once and idempotently (a copy that is already there is skipped), with
//! `decision_heads` naming each replica's newest shipped record. [`Records`] reads them back for
//! `jitgate decisions query|export|verify --store postgres://...`: queries over all replicas or one, an export of one
//! replica's chain, and a verification of every replica's chain on its own.
//!
//! A segment is one row holding a run of up to [`SEGMENT_RECORDS`] consecutive records of one replica, their JSON
//! one record a line, as the replica sealed them; its other columns (seq range, time range, principals, grants,
//! kinds, the first record's `prev_hash` and the last one's `hash`) say where it is and what it holds, so a query
//! reads only the segments that may match and filters their records. A row per record cost the server about 20 µs
//! of CPU and a kilobyte of WAL for every request a replica served; a segment costs about 1 µs a record.
//! Verification checks each segment's columns against the records it holds, so an edited column is seen as well as
//! an edited record.
//!
//! With `[log] anchor_key`, the shipper also copies the replica's signed anchors into `decision_anchors`, keyed by
//! replica and place in its anchors file, each in the transaction of the records whose head it signs, and
//! verification with the public key checks each chain against them. A record's hash does not cover the replica id
//! (the local log does not know it); the signed anchors do, which is what binds a shipped chain to its replica. It
//! also marks the local log with how far it has shipped ([`crate::log::mark_shipped`]), so prune never removes a
//! record before it is in the store.

use std::collections::{BTreeSet, HashMap};
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
    Format, GENESIS_HASH, RecordExport, RecordKind, ShipFeed, StoredRecord, VerifyReport,
    check_anchors, checkpoint_anchor, format_time,
};
use crate::store::StoreError;

/// The schema version that keeps shipped decision records in segments.
const SEGMENTS_VERSION: i64 = 6;

/// The schema version that has the shipped signed anchors.
const ANCHORS_VERSION: i64 = 3;

/// The most records one segment holds.
pub const SEGMENT_RECORDS: usize = 1000;

/// Segments fetched at a time when reading many (each holds up to [`SEGMENT_RECORDS`] records).
const SEGMENT_FETCH: i32 = 8;

const SEGMENT_COLS: &str = "replica, first_seq, count, min_time, max_time, principals, grants, kinds, prev_hash, hash, records";

const TABLE: &str = "decision_segments";

/// The advisory lock class ("jh") one replica's shipping transactions take, so that two shippers under one replica
/// id (a misconfiguration) are seen rather than interleaved.
const SHIP_LOCK_CLASS: i32 = 0x6a68;

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

/// `WHERE` clause and parameters selecting the segments of `replica` (all when `None`) that may hold records
/// matching `filter` after `after`: by the columns that summarize a segment. Their records are then filtered one by
/// one ([`Filter::matcher`]).
fn segment_where(
    replica: Option<&str>,
    filter: &Filter,
    after: Option<&ReplicaCursor>,
) -> (String, Params) {
    let mut conds: Vec<String> = Vec::new();
    let mut args: Params = Vec::new();
    if let Some(r) = replica {
        args.push(Box::new(r.to_string()));
        conds.push(format!("replica = ${}", args.len()));
    }
    // `@>` on the arrays, so that their GIN indexes find the segments.
    let mut holds = |col: &str, v: Option<String>| {
        if let Some(v) = v {
            args.push(Box::new(vec![v]));
            conds.push(format!("{col} @> ${}", args.len()));
        }
    };
    holds("principals", filter.principal.clone());
    holds("grants", filter.grant.clone());
    holds("kinds", filter.kind.map(|k| k.as_str().to_string()));
    // Record times are fixed-width UTC text, so text comparison is time comparison.
    if let Some(t) = filter.since {
        args.push(Box::new(format_time(t)));
        conds.push(format!("max_time >= ${}", args.len()));
    }
    if let Some(t) = filter.until {
        args.push(Box::new(format_time(t)));
        conds.push(format!("min_time < ${}", args.len()));
    }
    if let Some(a) = after {
        args.push(Box::new(a.replica.clone()));
        args.push(Box::new(a.seq));
        conds.push(format!(
            "(replica, first_seq + count - 1) > (${}, ${})",
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

/// What a segment's columns say of the records it holds, besides where it is. Verification builds the same from
/// the records and compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Summary {
    min_time: String,
    max_time: String,
    /// Distinct, sorted.
    principals: Vec<String>,
    /// Distinct grant ids used, sorted.
    grants: Vec<String>,
    /// Distinct kinds, sorted.
    kinds: Vec<String>,
    /// The first record's `prev_hash`.
    prev_hash: String,
    /// The last record's `hash`.
    hash: String,
}

/// Builds a [`Summary`] from records in seq order.
#[derive(Default)]
struct SummaryOf<'a> {
    min_time: Option<&'a str>,
    max_time: Option<&'a str>,
    principals: BTreeSet<&'a str>,
    grants: BTreeSet<String>,
    kinds: BTreeSet<&'a str>,
    prev_hash: Option<&'a str>,
    hash: Option<&'a str>,
}

impl<'a> SummaryOf<'a> {
    fn add(
        &mut self,
        time: &'a str,
        principal: &'a str,
        kind: &'a str,
        prev_hash: &'a str,
        hash: &'a str,
    ) {
        if self.min_time.is_none_or(|t| time < t) {
            self.min_time = Some(time);
        }
        if self.max_time.is_none_or(|t| time > t) {
            self.max_time = Some(time);
        }
        self.principals.insert(principal);
        self.kinds.insert(kind);
        self.prev_hash.get_or_insert(prev_hash);
        self.hash = Some(hash);
    }

    fn grant(&mut self, id: &str) {
        if !self.grants.contains(id) {
            self.grants.insert(id.to_string());
        }
    }

    fn finish(self) -> Summary {
        let own = |s: Option<&str>| s.unwrap_or_default().to_string();
        Summary {
            min_time: own(self.min_time),
            max_time: own(self.max_time),
            principals: self.principals.into_iter().map(str::to_string).collect(),
            grants: self.grants.into_iter().collect(),
            kinds: self.kinds.into_iter().map(str::to_string).collect(),
            prev_hash: own(self.prev_hash),
            hash: own(self.hash),
        }
    }
}

impl Summary {
    /// Of records as a replica's log holds them; `None` when a record's stored grant ids are not a JSON array of
    /// strings.
    fn of_stored(records: &[&StoredRecord]) -> Option<Summary> {
        let mut s = SummaryOf::default();
        for r in records {
            s.add(&r.time, &r.principal, r.kind, &r.prev_hash, &r.hash);
            if r.grants_used != "[]" {
                // Borrowed where nothing is escaped.
                match serde_json::from_str::<Vec<&str>>(&r.grants_used) {
                    Ok(g) => g.into_iter().for_each(|id| s.grant(id)),
                    Err(_) => serde_json::from_str::<Vec<String>>(&r.grants_used)
                        .ok()?
                        .iter()
                        .for_each(|id| s.grant(id)),
                }
            }
        }
        Some(s.finish())
    }

    /// Of decoded records.
    fn of_records<'a>(records: impl Iterator<Item = &'a DecisionRecord>) -> Summary {
        let mut s = SummaryOf::default();
        for r in records {
            s.add(
                &r.time,
                &r.principal,
                r.kind.as_str(),
                &r.prev_hash,
                &r.hash,
            );
            r.grants_used.iter().for_each(|id| s.grant(id));
        }
        s.finish()
    }

    /// The first column that differs from `other` (arrays compared as sets).
    fn differs(&self, other: &Summary) -> Option<&'static str> {
        fn set(v: &[String]) -> BTreeSet<&str> {
            v.iter().map(String::as_str).collect()
        }
        [
            ("min_time", self.min_time == other.min_time),
            ("max_time", self.max_time == other.max_time),
            (
                "principals",
                set(&self.principals) == set(&other.principals),
            ),
            ("grants", set(&self.grants) == set(&other.grants)),
            ("kinds", set(&self.kinds) == set(&other.kinds)),
            ("prev_hash", self.prev_hash == other.prev_hash),
            ("hash", self.hash == other.hash),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(name, _)| name)
    }
}

/// A stored segment as read.
struct Segment {
    replica: String,
    first_seq: i64,
    count: i32,
    summary: Summary,
    records: String,
}

fn segment(row: &Row) -> Result<Segment, StoreError> {
    let get = |e: postgres::Error| pg_err("cannot read a decision segment", e);
    Ok(Segment {
        replica: row.try_get(0).map_err(get)?,
        first_seq: row.try_get(1).map_err(get)?,
        count: row.try_get(2).map_err(get)?,
        summary: Summary {
            min_time: row.try_get(3).map_err(get)?,
            max_time: row.try_get(4).map_err(get)?,
            principals: row.try_get(5).map_err(get)?,
            grants: row.try_get(6).map_err(get)?,
            kinds: row.try_get(7).map_err(get)?,
            prev_hash: row.try_get(8).map_err(get)?,
            hash: row.try_get(9).map_err(get)?,
        },
        records: row.try_get(10).map_err(get)?,
    })
}

impl Segment {
    /// Each record with its place (`first_seq` plus its line), decoded, or why it could not be.
    fn decode(&self) -> Vec<(i64, Result<DecisionRecord, String>)> {
        self.records
            .split('\n')
            .enumerate()
            .map(|(i, line)| {
                (
                    self.first_seq + i as i64,
                    serde_json::from_str::<DecisionRecord>(line).map_err(|e| e.to_string()),
                )
            })
            .collect()
    }

    /// Each record with its place, or [`StoreError::Corrupt`] naming the first that is not a record.
    fn records(&self) -> Result<Vec<(i64, DecisionRecord)>, StoreError> {
        self.decode()
            .into_iter()
            .map(|(seq, r)| {
                r.map(|r| (seq, r)).map_err(|reason| StoreError::Corrupt {
                    table: TABLE,
                    reason: format!("replica `{}` seq {seq}: {reason}", self.replica),
                })
            })
            .collect()
    }
}

/// Calls `f` with each segment `sql` selects, [`SEGMENT_FETCH`] at a time, until it returns `false`.
fn each_segment(
    tx: &mut postgres::Transaction<'_>,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
    mut f: impl FnMut(Segment) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let portal = tx
        .bind(sql, args)
        .map_err(|e| pg_err("cannot read decision records", e))?;
    loop {
        let rows = tx
            .query_portal(&portal, SEGMENT_FETCH)
            .map_err(|e| pg_err("cannot read decision records", e))?;
        for row in &rows {
            if !f(segment(row)?)? {
                return Ok(());
            }
        }
        if rows.len() < SEGMENT_FETCH as usize {
            return Ok(());
        }
    }
}

/// A read-only transaction over one consistent snapshot.
fn snapshot(c: &mut postgres::Client) -> Result<postgres::Transaction<'_>, StoreError> {
    c.build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|e| pg_err("", e))
}

fn no_table(found: i64) -> StoreError {
    StoreError::database(
        "",
        format!(
            "the store has no shipped decision records in this jitgate's form (its schema is at version {found}; \
             they need version {SEGMENTS_VERSION}): start a jitgate replica with this `[store] url`, or run \
             `jitgate migrate`"
        ),
    )
}

impl Records {
    /// Connects to `url` and checks that its schema holds shipped decision records (it is not migrated here: a
    /// reader changes nothing).
    pub fn open(url: &str) -> Result<Records, StoreError> {
        let connector = Connector::new(url)?;
        let version = connector.session(migrate::current_version_if_any)?;
        if version < SEGMENTS_VERSION {
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
                    "SELECT replica FROM decision_heads UNION SELECT DISTINCT replica FROM decision_segments
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
        let (clause, args) = segment_where(replica, filter, None);
        if *filter == Filter::default() {
            // Every record of the segments: their counts.
            return self.connector.session(|c| {
                let n: i64 = c
                    .query_one(
                        &format!("SELECT COALESCE(SUM(count), 0)::BIGINT FROM {TABLE} {clause}"),
                        &refs(&args),
                    )
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| pg_err("cannot count decision records", e))?;
                Ok(u64::try_from(n).unwrap_or(0))
            });
        }
        let sql = format!("SELECT {SEGMENT_COLS} FROM {TABLE} {clause}");
        let matches = filter.matcher();
        self.connector.session(|c| {
            let mut tx = snapshot(c)?;
            let mut n = 0u64;
            each_segment(&mut tx, &sql, &refs(&args), |seg| {
                n += seg.records()?.iter().filter(|(_, r)| matches(r)).count() as u64;
                Ok(true)
            })?;
            tx.commit().map_err(|e| pg_err("", e))?;
            Ok(n)
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
        let limit = limit.max(1) as usize;
        let (clause, args) = segment_where(replica, filter, after);
        let sql =
            format!("SELECT {SEGMENT_COLS} FROM {TABLE} {clause} ORDER BY replica, first_seq");
        let matches = filter.matcher();
        let mut records = self.connector.session(|c| {
            let mut tx = snapshot(c)?;
            let mut out: Vec<(String, i64, DecisionRecord)> = Vec::new();
            each_segment(&mut tx, &sql, &refs(&args), |seg| {
                for (seq, r) in seg.records()? {
                    let before = after.is_some_and(|a| a.replica == seg.replica && seq <= a.seq);
                    if !before && matches(&r) {
                        out.push((seg.replica.clone(), seq, r));
                        // One more than asked tells whether there is a next page.
                        if out.len() > limit {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            })?;
            tx.commit().map_err(|e| pg_err("", e))?;
            Ok(out)
        })?;
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|(replica, seq, _)| ReplicaCursor {
                replica: replica.clone(),
                seq: *seq,
            })
        } else {
            None
        };
        Ok(ReplicaPage {
            records: records.into_iter().map(|(rep, _, r)| (rep, r)).collect(),
            next,
        })
    }

    /// Verifies the chain of each replica (or of `replica` alone) on its own, in one consistent snapshot: every
    /// record at its seq, linked to the one before and matching its hash, the columns of each segment agreeing with
    /// the records it holds, the chain starting at the genesis (or at the start a shipped prune checkpoint names)
    /// and ending at the replica's shipped head. `progress` is called with the records checked so far every few
    /// thousand.
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
            let mut tx = snapshot(c)?;
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
        let (clause, args) = segment_where(Some(replica), filter, None);
        let sql = format!("SELECT {SEGMENT_COLS} FROM {TABLE} {clause} ORDER BY first_seq");
        let write_err =
            |e: crate::log::ExportError| StoreError::database("cannot write the export", e);
        let matches = filter.matcher();
        self.connector.session(|c| {
            let mut tx = snapshot(c)?;
            let mut export = RecordExport::start(filter, format, out).map_err(write_err)?;
            each_segment(&mut tx, &sql, &refs(&args), |seg| {
                for (_, r) in seg.records()? {
                    if matches(&r) {
                        let n = export.push(&r).map_err(write_err)?;
                        if n % 4096 == 0 {
                            progress(n);
                        }
                    }
                }
                Ok(true)
            })?;
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
            "SELECT records FROM decision_segments WHERE replica = $1 AND kinds @> ARRAY['checkpoint']
             ORDER BY first_seq DESC",
            &[&replica],
        )
        .map_err(|e| pg_err("cannot read checkpoints", e))?;
    for row in rows {
        let text: String = row.try_get(0).map_err(|e| pg_err("", e))?;
        for line in text.split('\n').rev() {
            let Ok(cp) = serde_json::from_str::<DecisionRecord>(line) else {
                continue;
            };
            if cp.kind != RecordKind::Checkpoint {
                continue;
            }
            if let Ok((start, prev)) = checkpoint_anchor(&cp) {
                if start == first {
                    return Ok(Some((start, prev)));
                }
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
            "SELECT MIN(first_seq) FROM decision_segments WHERE replica = $1",
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
    each_segment(
        tx,
        &format!("SELECT {SEGMENT_COLS} FROM {TABLE} WHERE replica = $1 ORDER BY first_seq"),
        &[&replica],
        |seg| {
            let records = seg.decode();
            // Where the segment says it is and how many it holds; a record's place is read from them.
            if usize::try_from(seg.count).ok() != Some(records.len()) {
                chain.fail(
                    seg.first_seq,
                    FailureKind::IndexMismatch,
                    format!(
                        "the segment from seq {} says it holds {} records but holds {}",
                        seg.first_seq,
                        seg.count,
                        records.len()
                    ),
                );
                return Ok(false);
            }
            let summary = records
                .iter()
                .all(|(_, r)| r.is_ok())
                .then(|| Summary::of_records(records.iter().filter_map(|(_, r)| r.as_ref().ok())));
            for (seq, r) in records {
                if !chain.next(seq, r) {
                    return Ok(false);
                }
                *done += 1;
                if *done % 4096 == 0 {
                    progress(*done);
                }
            }
            if let Some(col) = summary.and_then(|s| seg.summary.differs(&s)) {
                chain.fail(
                    seg.first_seq,
                    FailureKind::IndexMismatch,
                    format!(
                        "the `{col}` column of the segment from seq {} disagrees with the records it holds",
                        seg.first_seq
                    ),
                );
                return Ok(false);
            }
            Ok(true)
        },
    )?;
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

/// A record's links, read without decoding the rest of it.
#[derive(Debug, Clone, serde::Deserialize)]
struct Link {
    prev_hash: String,
    hash: String,
}

/// The segments of `replica` that hold any seq in `lo..=hi` (segments of a replica never overlap: those starting
/// in the range, and the one before it if it reaches in), as (`first_seq`, records).
fn overlapping(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    lo: i64,
    hi: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    tx.query(
        "SELECT first_seq, records FROM decision_segments WHERE replica = $1 AND first_seq BETWEEN $2 AND $3
         UNION ALL
         SELECT first_seq, records FROM (
             SELECT first_seq, count, records FROM decision_segments WHERE replica = $1 AND first_seq < $2
             ORDER BY first_seq DESC LIMIT 1
         ) before WHERE first_seq + count - 1 >= $2",
        &[&replica, &lo, &hi],
    )
    .map_err(|e| pg_err("cannot read decision segments", e))?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<Vec<_>, postgres::Error>>()
    .map_err(|e| pg_err("cannot read decision segments", e))
}

/// The links of the record stored at `seq` of `replica`, through `cache` (the last segment read: anchors are
/// checked in seq order, so most fall in the segment of the one before).
fn link_at(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    seq: i64,
    cache: &mut Option<(i64, Vec<Option<Link>>)>,
) -> Result<Option<Link>, StoreError> {
    let held = |c: &Option<(i64, Vec<Option<Link>>)>| {
        c.as_ref()
            .is_some_and(|(first, links)| seq >= *first && seq < *first + links.len() as i64)
    };
    if !held(cache) {
        *cache = overlapping(tx, replica, seq, seq)?
            .into_iter()
            .next()
            .map(|(first, text)| {
                let links = text
                    .split('\n')
                    .map(|l| serde_json::from_str::<Link>(l).ok())
                    .collect();
                (first, links)
            });
        if !held(cache) {
            return Ok(None);
        }
    }
    Ok(cache.as_ref().and_then(|(first, links)| {
        usize::try_from(seq - *first)
            .ok()
            .and_then(|i| links.get(i))
            .and_then(Option::clone)
    }))
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
    let mut cache = None;
    let pruned = if start > 1 {
        // The shipped chain starts after a prune: its start record links to the last pruned record's hash.
        link_at(tx, replica, start, &mut cache)?.map(|l| (start - 1, l.prev_hash))
    } else {
        None
    };
    let mut hash_at = |seq: i64| -> Result<Option<String>, StoreError> {
        Ok(link_at(tx, replica, seq, &mut cache)?.map(|l| l.hash))
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
            // Segments of a replica never overlap: the newest is the last to start.
            let s = store.pool.with(|c| {
                c.query_opt(
                    "SELECT first_seq + count - 1 FROM decision_segments WHERE replica = $1
                     ORDER BY first_seq DESC LIMIT 1",
                    &[&opts.replica],
                )
                .and_then(|r| r.map(|r| r.try_get::<_, i64>(0)).transpose())
                .map(|s| s.unwrap_or(0))
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

/// How a new segment is written.
const INSERT_SEGMENT: &str = "INSERT INTO decision_segments (replica, first_seq, count, min_time, max_time, principals, \
                              grants, kinds, prev_hash, hash, records, shipped_at) \
                              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Ships `records` of `replica` (in seq order) in one transaction, as segments of up to [`SEGMENT_RECORDS`]
/// consecutive records, and moves the replica's head; returns how many were new. They follow the newest seq the
/// store held when last asked, so they are normally all new; a record that is there after all (a commit whose answer
/// was lost, or two shippers under one replica id) is skipped when it is the same record and refused when it is not.
fn ship_batch(
    c: &mut postgres::Client,
    replica: &str,
    records: &[StoredRecord],
    anchors: &[PendingAnchor],
) -> Result<u64, StoreError> {
    let now = crate::clock::now_system();
    let mut tx = c.transaction().map_err(|e| pg_err("", e))?;
    // Shippers of one replica one after the other, so that the check for what is there holds until the commit.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || ' ' || $2))",
        &[&SHIP_LOCK_CLASS, &replica],
    )
    .map_err(|e| pg_err("cannot take the replica's shipping lock", e))?;
    let fresh = not_there(&mut tx, replica, records)?;
    if !fresh.is_empty() {
        let insert = tx
            .prepare(INSERT_SEGMENT)
            .map_err(|e| pg_err("cannot ship decision records", e))?;
        let mut rest = fresh.as_slice();
        while !rest.is_empty() {
            // The longest run of consecutive seqs, at most a segment's worth.
            let mut n = 1;
            while n < rest.len().min(SEGMENT_RECORDS) && rest[n].seq == rest[n - 1].seq + 1 {
                n += 1;
            }
            let (seg, tail) = rest.split_at(n);
            rest = tail;
            let Some(s) = Summary::of_stored(seg) else {
                return Err(StoreError::Corrupt {
                    table: "decisions",
                    reason: format!(
                        "replica `{replica}`: the grant ids of a record from seq {} are not a JSON array of strings",
                        seg[0].seq
                    ),
                });
            };
            let mut text = String::with_capacity(seg.iter().map(|r| r.json.len() + 1).sum());
            for (i, r) in seg.iter().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                text.push_str(&r.json);
            }
            let first = seg[0].seq;
            let count = i32::try_from(n).unwrap_or(i32::MAX);
            tx.execute(
                &insert,
                &[
                    &replica,
                    &first,
                    &count,
                    &s.min_time,
                    &s.max_time,
                    &s.principals,
                    &s.grants,
                    &s.kinds,
                    &s.prev_hash,
                    &s.hash,
                    &text,
                    &now,
                ],
            )
            .map_err(|e| pg_err("cannot ship decision records", e))?;
        }
    }
    finish_batch(&mut tx, replica, now, records, anchors)?;
    tx.commit().map_err(|e| pg_err("", e))?;
    Ok(fresh.len() as u64)
}

/// The records of `records` the store does not hold yet. Each one it holds must be the same record (the same
/// hash); another one means two decision logs ship under one replica id.
fn not_there<'a>(
    tx: &mut postgres::Transaction<'_>,
    replica: &str,
    records: &'a [StoredRecord],
) -> Result<Vec<&'a StoredRecord>, StoreError> {
    let (Some(lo), Some(hi)) = (records.first(), records.last()) else {
        return Ok(Vec::new());
    };
    let there = overlapping(tx, replica, lo.seq, hi.seq)?;
    if there.is_empty() {
        return Ok(records.iter().collect());
    }
    let mut hashes: HashMap<i64, Option<String>> = HashMap::new();
    for (first, text) in &there {
        for (i, line) in text.split('\n').enumerate() {
            let hash = serde_json::from_str::<Link>(line).ok().map(|l| l.hash);
            hashes.insert(first + i as i64, hash);
        }
    }
    let mut fresh = Vec::new();
    for r in records {
        match hashes.get(&r.seq) {
            None => fresh.push(r),
            Some(Some(h)) if *h == r.hash => {}
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                    "replica `{replica}` seq {} is already in the store with another hash: two decision logs ship \
                     under one replica id (set a distinct `[cluster] replica` on each)",
                    r.seq
                )));
            }
        }
    }
    Ok(fresh)
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
            grants_used: grants.into(),
            json: format!(
                "{{\"seq\":{seq},\"prev_hash\":\"{:064x}\",\"hash\":\"{seq:064x}\"}}",
                seq - 1
            ),
            prev_hash: format!("{:064x}", seq - 1),
            hash: format!("{seq:064x}"),
        }
    }

    /// The store's segments as `first_seq:count`, in seq order.
    fn layout(store: &PgStore) -> String {
        store
            .pool
            .with(|c| {
                c.query_one(
                    "SELECT string_agg(first_seq || ':' || count, ' ' ORDER BY first_seq) FROM decision_segments",
                    &[],
                )
                .and_then(|r| r.try_get(0))
                .map_err(|e| pg_err("", e))
            })
            .unwrap()
    }

    /// Issue 16: a batch becomes segments of consecutive records (a gap, or [`SEGMENT_RECORDS`], starts the next
    /// one); one that partly is in the store (a copy of an earlier pass) adds only the new records; a record already
    /// there with another hash (two logs under one replica id) is refused and nothing of its batch is added. Grant
    /// ids come out as the arrays they were, escapes included.
    #[test]
    fn batches_become_segments_and_copies_already_there_are_skipped_or_refused() {
        let Some(base) =
            test_url("batches_become_segments_and_copies_already_there_are_skipped_or_refused")
        else {
            return;
        };
        let scratch = Scratch::new(&base, "shipseg").unwrap();
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
        assert_eq!(count("SELECT SUM(count) FROM decision_segments"), Some(6));
        assert_eq!(count("SELECT MAX(seq) FROM decision_heads"), Some(6));
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM decision_segments WHERE (first_seq = 1 AND count = 3
                   AND grants = '{g2,gshared}' AND records LIKE '{\"seq\":1,%' AND records LIKE E'%\\n{\"seq\":3,%'
                   AND array_length(string_to_array(records, E'\\n'), 1) = 3
                   AND prev_hash = lpad('0', 64, '0') AND hash = lpad('3', 64, '0'))
                 OR (first_seq = 4 AND count = 3 AND grants = ARRAY['g\"5'] AND principals @> ARRAY['User::\"u6\"']
                   AND min_time = '2026-12-07T10:00:04.000000Z' AND max_time = '2026-12-07T10:00:06.000000Z')"
            ),
            Some(2)
        );
        // Gaps: each run is a segment of its own, and what fills a gap later goes in between.
        let at =
            |seqs: &[i64]| -> Vec<StoredRecord> { seqs.iter().map(|&i| record(i, "[]")).collect() };
        assert_eq!(ship(&at(&[8, 9, 11])).unwrap(), 3);
        assert_eq!(ship(&at(&[7])).unwrap(), 1);
        assert_eq!(ship(&at(&[10])).unwrap(), 1);
        // A long run is cut into segments of SEGMENT_RECORDS.
        let long: Vec<i64> = (12..=2511).collect();
        assert_eq!(ship(&at(&long)).unwrap(), 2500);
        assert_eq!(
            layout(&store),
            "1:3 4:3 7:1 8:2 10:1 11:1 12:1000 1012:1000 2012:500"
        );
        // A copy that straddles segments is found in each of them.
        assert_eq!(ship(&at(&(1000..=1100).collect::<Vec<_>>())).unwrap(), 0);
        assert_eq!(count("SELECT MAX(seq) FROM decision_heads"), Some(2511));
    }

    /// Issue 16 (store migrations 5 and 6): the indexed text columns of the shipped decision tables compare byte by
    /// byte, in every table that has `replica`, so the union of the replicas' heads and segments still has one
    /// collation, and a time range and a principal still find their segments.
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
            .with(|c| ship_batch(c, "r1", &recs[..2], &[]))
            .unwrap();
        store
            .pool
            .with(|c| ship_batch(c, "r1", &recs[3..], &[]))
            .unwrap();
        assert_eq!(
            scratch
                .scalar(
                    "SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = current_schema() AND collation_name = 'C'
                       AND ((table_name = 'decision_segments' AND column_name IN ('replica', 'min_time', 'max_time'))
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
                    "SELECT SUM(count) FROM decision_segments WHERE replica = 'r1'
                     AND max_time >= '2026-12-07T10:00:02' AND principals @> ARRAY['User::\"u4\"']"
                )
                .unwrap(),
            Some(1)
        );
    }

    /// Sealed records of a real log: `n` decisions of alternating principals, every third on a grant.
    fn sealed(n: usize) -> (tempfile::TempDir, Vec<StoredRecord>) {
        use crate::log::{LogOptions, LogWriter, Outcome};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.db");
        let log = LogWriter::start(&path, LogOptions::default()).unwrap();
        for i in 0..n {
            let mut r = DecisionRecord::new(RecordKind::Decision);
            r.principal = format!("User::\"u{}\"", i % 2);
            r.action = "Action::\"GET\"".into();
            r.resource = format!("Path::\"/p/{i}\"");
            r.decision = Some(if i % 2 == 0 {
                Outcome::Allow
            } else {
                Outcome::Deny
            });
            if i % 3 == 0 {
                r.grants_used = vec![format!("g{}", i % 5)];
            }
            r.revision = "rev1".into();
            let _ = log.append(r).unwrap();
        }
        log.shutdown().unwrap();
        let records = crate::log::stored_records(&path, 0, n as u32 + 1).unwrap();
        assert_eq!(records.len(), n);
        (dir, records)
    }

    /// Issue 16 (store migration 6): records shipped as rows by an older jitgate move into segments (runs of
    /// consecutive seqs, [`SEGMENT_RECORDS`] at most) and read back the same: queried, counted, verified; a record
    /// missing in the middle is named, and shipping it later closes the gap.
    #[test]
    fn rows_shipped_before_segments_move_into_segments_and_verify() {
        let Some(base) = test_url("rows_shipped_before_segments_move_into_segments_and_verify")
        else {
            return;
        };
        let scratch = Scratch::new(&base, "shipmigrate").unwrap();
        let (_dir, recs) = sealed(2503);
        let url = scratch.url();
        Connector::new(&url)
            .unwrap()
            .session(|c| {
                migrate::migrate_to(c, 5)?;
                let mut tx = c.transaction().map_err(|e| pg_err("", e))?;
                let insert = tx
                    .prepare(
                        "INSERT INTO decision_records (replica, seq, time, kind, principal, action, resource,
                           decision, request_id, revision, grants_used, record, prev_hash, hash, shipped_at)
                         SELECT 'old', $1, $2, $3, $4, j->>'action', j->>'resource', j->>'decision',
                           j->>'request_id', j->>'revision',
                           ARRAY(SELECT jsonb_array_elements_text($5::text::jsonb)), $6, $7, $8, 0
                         FROM (SELECT $6::text::jsonb AS j) r",
                    )
                    .map_err(|e| pg_err("", e))?;
                // Seq 1500 never reached the store.
                for r in recs.iter().filter(|r| r.seq != 1500) {
                    tx.execute(
                        &insert,
                        &[
                            &r.seq,
                            &r.time,
                            &r.kind,
                            &r.principal,
                            &r.grants_used,
                            &r.json,
                            &r.prev_hash,
                            &r.hash,
                        ],
                    )
                    .map_err(|e| pg_err("", e))?;
                }
                tx.execute(
                    "INSERT INTO decision_heads (replica, seq, hash, shipped_at) VALUES ('old', $1, $2, 0)",
                    &[&2503i64, &recs[2502].hash],
                )
                .map_err(|e| pg_err("", e))?;
                tx.commit().map_err(|e| pg_err("", e))
            })
            .unwrap();
        // The reader of now refuses the old form until it is migrated.
        let e = Records::open(&url).unwrap_err().to_string();
        assert!(
            e.contains("version 5") && e.contains("jitgate migrate"),
            "{e}"
        );
        let store = PgStore::open(&url).unwrap();
        assert_eq!(layout(&store), "1:1000 1001:499 1501:1000 2501:3");
        assert_eq!(
            scratch
                .scalar(
                    "SELECT COUNT(*) FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name = 'decision_records'"
                )
                .unwrap(),
            Some(0)
        );
        let records = Records::open(&url).unwrap();
        let verify = || records.verify(None, &mut |_| {}).unwrap().remove(0).report;
        let report = verify();
        let failure = report.failure.expect("the missing record is named");
        assert_eq!(failure.seq, Some(1500), "{failure:?}");
        assert_eq!(failure.kind, FailureKind::Missing, "{failure:?}");
        // Queried as the rows were: by principal and grant across segments, in seq order, page by page.
        let by_grant = Filter {
            grant: Some("g3".into()),
            principal: Some("User::\"u1\"".into()),
            ..Filter::default()
        };
        let want: Vec<i64> = recs
            .iter()
            .filter(|r| {
                r.seq != 1500 && r.principal == "User::\"u1\"" && r.grants_used == r#"["g3"]"#
            })
            .map(|r| r.seq)
            .collect();
        assert!(want.len() > 20, "{}", want.len());
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = records.query(None, &by_grant, after.as_ref(), 7).unwrap();
            got.extend(page.records.iter().map(|(rep, r)| {
                assert_eq!(rep, "old");
                r.seq
            }));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(got, want);
        assert_eq!(
            records.count(Some("old"), &by_grant).unwrap(),
            want.len() as u64
        );
        assert_eq!(records.count(None, &Filter::default()).unwrap(), 2502);
        // The missing record shipped now goes into the gap, and the chain is whole.
        assert_eq!(
            store
                .pool
                .with(|c| ship_batch(c, "old", &recs[1499..1500], &[]))
                .unwrap(),
            1
        );
        let report = verify();
        assert_eq!(report.failure, None);
        assert_eq!((report.records, report.last_seq), (2503, Some(2503)));
    }
}
