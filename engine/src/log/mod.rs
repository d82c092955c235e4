//! The decision log: one hash-chained [`DecisionRecord`] per decision, appended in batches by a dedicated
//! [`LogWriter`] thread, then queried, verified, exported (JSON Lines, CSV, OCSF) and pruned from the SQLite file.
//!
//! The chain: `hash = hex(sha256(prev_hash || canonical bytes))`, where the canonical bytes are the record's
//! `serde_json` form in field order with `hash = ""` ([`DecisionRecord::canonical_bytes`]); the first record's
//! `prev_hash` is [`GENESIS_HASH`]. `seq` is inside the hashed bytes, so edits, deletions, insertions and moves
//! all break the chain at a named `seq` ([`verify_store`]). The newest head is also kept in a `log_head` row
//! updated with every batch, so cutting off the tail is detected too. The chain is unkeyed: someone who can
//! rewrite the whole file can forge a consistent one, which is why the writer signs the head at intervals with an
//! Ed25519 key kept apart from the log and appends these signed anchors to their own file ([`Anchor`]), and
//! [`verify_log`] checks the records against them with the public key alone.

mod ack;
mod anchor;
mod db;
mod error;
mod export;
mod feed;
mod journal;
mod prune;
mod record;
mod verify;
mod writer;

use time::OffsetDateTime;

pub use ack::Ack;
pub use anchor::{
    Anchor, AnchorKey, AnchorOptions, AnchorReason, anchors_path, key_id, latest_anchor,
    load_public_key, public_key_path,
};
pub(crate) use anchor::{AnchorChain, check_with as check_anchors, read_from as read_anchors_from};
pub(crate) use error::Fault;
pub use error::{AnchorError, Cause, ExportError, PruneError, QueryError, VerifyError, WriteError};
pub use export::{
    ExportManifest, Format, OCSF_VERSION, RecordExport, StoredRecord, check_export_target, export,
    export_to_file, manifest_path, ocsf_event, stored_records, syncing_behind, verify_export,
    verify_export_with,
};
pub use feed::{DEFAULT_FEED_CAPACITY, ShipFeed};
pub(crate) use prune::checkpoint_anchor;
pub use prune::{PruneOptions, PruneReport, prune, prune_with};
pub use record::{
    DEFAULT_REDACT_QUERY, DecisionRecord, GENESIS_HASH, Outcome, REDACTED, RecordKind, format_time,
    parse_time, redact, redact_query, redacted_query,
};
pub(crate) use verify::Chain;
pub use verify::{Failure, FailureKind, VerifyOptions, VerifyReport, verify_log, verify_store};
pub use writer::{JsonlSink, LogOptions, LogStats, LogWriter, OnFull, Ticket};

/// Which records to query or export. Every set field must match; `since` is inclusive, `until` exclusive.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Records at or after this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Records before this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// Exact principal (`User::"alice"`).
    #[serde(default)]
    pub principal: Option<String>,
    /// Exact action.
    #[serde(default)]
    pub action: Option<String>,
    /// Exact resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// Outcome.
    #[serde(default)]
    pub decision: Option<Outcome>,
    /// Records that used this grant id.
    #[serde(default)]
    pub grant: Option<String>,
    /// Bundle revision.
    #[serde(default)]
    pub revision: Option<String>,
    /// The proxy's request id.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Record kind.
    #[serde(default)]
    pub kind: Option<RecordKind>,
}

impl Filter {
    /// Whether a record matches: every set field, compared as the log's own query compares it (`since` inclusive,
    /// `until` exclusive, on the record's fixed-width UTC time text), with the times formatted once. For stores that
    /// keep records in blocks and filter them after reading (the PostgreSQL store's segments).
    pub fn matcher(&self) -> impl Fn(&DecisionRecord) -> bool + '_ {
        let since = self.since.map(format_time);
        let until = self.until.map(format_time);
        move |r| {
            let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
            eq(&self.principal, &r.principal)
                && eq(&self.action, &r.action)
                && eq(&self.resource, &r.resource)
                && eq(&self.revision, &r.revision)
                && self
                    .request_id
                    .as_deref()
                    .is_none_or(|w| r.request_id.as_deref() == Some(w))
                && self.decision.is_none_or(|d| r.decision == Some(d))
                && self.kind.is_none_or(|k| r.kind == k)
                && self
                    .grant
                    .as_deref()
                    .is_none_or(|g| r.grants_used.iter().any(|u| u == g))
                && since.as_deref().is_none_or(|t| r.time.as_str() >= t)
                && until.as_deref().is_none_or(|t| r.time.as_str() < t)
        }
    }
}

/// Where the next page of a query starts: the last `seq` of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Cursor(pub i64);

/// One page of query results, in `seq` order.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The records.
    pub records: Vec<DecisionRecord>,
    /// Pass this to get the next page; `None` when this was the last.
    pub next: Option<Cursor>,
}

/// Records matching `filter` in `seq` order, at most `limit` of them, after `page` (from a previous [`Page`]).
pub fn query(
    path: &std::path::Path,
    filter: &Filter,
    page: Option<Cursor>,
    limit: u32,
) -> Result<Page, QueryError> {
    let conn = db::open_read(path)?;
    let limit = limit.max(1);
    let mut records = Vec::new();
    // One more than asked tells whether there is a next page without a second query.
    db::for_each_matching(
        &conn,
        filter,
        page.map(|c| c.0),
        Some(i64::from(limit) + 1),
        |r| {
            records.push(r);
            Ok(())
        },
    )?;
    let next = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|r| Cursor(r.seq))
    } else {
        None
    };
    Ok(Page { records, next })
}

/// How many acknowledged records wait in the log's journal (`[log] acknowledge = "journal"`) and are not in the
/// store yet: a running writer commits them within milliseconds, the next start after a crash commits them all.
/// [`verify_store`] checks the store only; these are not part of its chain until they are committed.
pub fn journal_pending(path: &std::path::Path) -> Result<u64, QueryError> {
    let conn = db::open_read(path)?;
    Ok(journal::pending(&conn, path)?)
}

/// How many records match `filter` now (for an export's progress bar: the export itself reads a snapshot that
/// also holds whatever is committed between the two calls).
pub fn count(path: &std::path::Path, filter: &Filter) -> Result<u64, QueryError> {
    let conn = db::open_read(path)?;
    Ok(db::count_matching(&conn, filter)?)
}

/// The newest `n` records, oldest first (for `jitgate decisions tail`).
pub fn tail(path: &std::path::Path, n: u32) -> Result<Vec<DecisionRecord>, QueryError> {
    let conn = db::open_read(path)?;
    let Some((last, _)) = db::head(&conn)? else {
        return Ok(Vec::new());
    };
    let after = (last - i64::from(n)).max(0);
    let mut records = Vec::new();
    db::for_each_matching(
        &conn,
        &Filter::default(),
        Some(after),
        Some(i64::from(n)),
        |r| {
            records.push(r);
            Ok(())
        },
    )?;
    Ok(records)
}

/// How far a shipper has copied a log into a shared store ([`mark_shipped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedMark {
    /// The replica the records were shipped under.
    pub replica: String,
    /// The newest seq known to be in the store (0: none yet).
    pub seq: i64,
}

/// Records that the records of the log at `path` through `seq` are in a shared store under `replica` (a shipper
/// calls it after each commit, and with 0 before its first pass). While a mark is there, [`prune`] never removes a
/// record after its `seq`, so retention cannot delete what was not shipped yet.
pub fn mark_shipped(path: &std::path::Path, replica: &str, seq: i64) -> Result<(), QueryError> {
    let conn = db::open_write(path, crate::sqlite::DEFAULT_BUSY_TIMEOUT)?;
    Ok(db::set_shipped(&conn, Some((replica, seq)))?)
}

/// Removes the shipping mark of the log at `path` (the log is no longer shipped; prune may remove any old record).
pub fn unmark_shipped(path: &std::path::Path) -> Result<(), QueryError> {
    let conn = db::open_write(path, crate::sqlite::DEFAULT_BUSY_TIMEOUT)?;
    Ok(db::set_shipped(&conn, None)?)
}

/// The shipping mark of the log at `path`, `None` when no shipper ever marked it.
pub fn shipped_mark(path: &std::path::Path) -> Result<Option<ShippedMark>, QueryError> {
    let conn = db::open_read(path)?;
    Ok(db::shipped(&conn)?.map(|(replica, seq)| ShippedMark { replica, seq }))
}
