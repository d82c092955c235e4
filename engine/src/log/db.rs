//! How a [`DecisionRecord`] maps to a `decisions` row and back, the chain head, and filters as SQL.
//! Every field is its own column (lists and context as JSON text), so verify rebuilds the exact record from the
//! row: editing any column, indexed or not, breaks the hash.

use std::path::Path;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::record::{DecisionRecord, Outcome, RecordKind, format_time};
use super::{Filter, LogError};
use crate::sqlite::{DEFAULT_BUSY_TIMEOUT, open_existing};

pub(crate) const COLS: &str = "seq, id, time, kind, request_id, principal, action, resource, context, decision, \
    policies, grants_used, errors, revision, engine, latency_us, client_addr, method, path, status, break_glass, \
    redacted, prev_hash, hash";

/// Opens an existing log database for reading (never creates one). A SQLite file that is not a decision log is
/// refused before anything is written to it: the read commands must not add jitgate's tables to whatever
/// `--log` names.
pub(crate) fn open_read(path: &Path) -> Result<Connection, LogError> {
    if path.is_file() {
        let probe = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let is_log: bool = probe.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'decisions')",
            [],
            |r| r.get(0),
        )?;
        if !is_log {
            return Err(LogError::Invalid {
                what: "log".into(),
                reason: format!(
                    "{} is not a jitgate decision log (it has no decisions table)",
                    path.display()
                ),
            });
        }
    }
    Ok(open_existing(path, DEFAULT_BUSY_TIMEOUT)?)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, LogError> {
    serde_json::to_string(v).map_err(|e| LogError::Invalid {
        what: "record".into(),
        reason: e.to_string(),
    })
}

/// Inserts a sealed record (and its grant index rows) inside `tx`.
pub(crate) fn insert(tx: &Transaction<'_>, r: &DecisionRecord) -> Result<(), LogError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO decisions (seq, id, time, kind, request_id, principal, action, resource, context, decision,
           policies, grants_used, errors, revision, engine, latency_us, client_addr, method, path, status,
           break_glass, redacted, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
           ?22, ?23, ?24)",
    )?;
    let latency = i64::try_from(r.latency_us).unwrap_or(i64::MAX);
    stmt.execute(params![
        r.seq,
        r.id,
        r.time,
        r.kind.as_str(),
        r.request_id,
        r.principal,
        r.action,
        r.resource,
        json(&r.context)?,
        r.decision.map(Outcome::as_str),
        json(&r.policies)?,
        json(&r.grants_used)?,
        json(&r.errors)?,
        r.revision,
        r.engine,
        latency,
        r.client_addr,
        r.method,
        r.path,
        r.status,
        r.break_glass,
        json(&r.redacted)?,
        r.prev_hash,
        r.hash,
    ])?;
    if !r.grants_used.is_empty() {
        let mut g =
            tx.prepare_cached("INSERT INTO decision_grants (grant_id, seq) VALUES (?1, ?2)")?;
        for id in &r.grants_used {
            g.execute(params![id, r.seq])?;
        }
    }
    Ok(())
}

/// The head of the chain: `(seq, hash)` of the last record, `(0, GENESIS)` for an empty log.
pub(crate) fn head(conn: &Connection) -> Result<Option<(i64, String)>, LogError> {
    // Cached: the writer reads the head once per batch.
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM log_head WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Records the new head (same transaction as the rows it points at).
pub(crate) fn set_head(tx: &Transaction<'_>, seq: i64, hash: &str) -> Result<(), LogError> {
    tx.prepare_cached(
        "INSERT INTO log_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )?
    .execute(params![seq, hash])?;
    Ok(())
}

/// A row as stored, before its JSON columns are parsed (so decode errors name the row).
pub(crate) struct RawRecord {
    seq: i64,
    id: String,
    time: String,
    kind: String,
    request_id: Option<String>,
    principal: String,
    action: String,
    resource: String,
    context: String,
    decision: Option<String>,
    policies: String,
    grants_used: String,
    errors: String,
    revision: String,
    engine: String,
    latency_us: i64,
    client_addr: Option<String>,
    method: Option<String>,
    path: Option<String>,
    status: Option<i64>,
    break_glass: bool,
    redacted: String,
    prev_hash: String,
    hash: String,
}

pub(crate) fn raw(r: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        seq: r.get(0)?,
        id: r.get(1)?,
        time: r.get(2)?,
        kind: r.get(3)?,
        request_id: r.get(4)?,
        principal: r.get(5)?,
        action: r.get(6)?,
        resource: r.get(7)?,
        context: r.get(8)?,
        decision: r.get(9)?,
        policies: r.get(10)?,
        grants_used: r.get(11)?,
        errors: r.get(12)?,
        revision: r.get(13)?,
        engine: r.get(14)?,
        latency_us: r.get(15)?,
        client_addr: r.get(16)?,
        method: r.get(17)?,
        path: r.get(18)?,
        status: r.get(19)?,
        break_glass: r.get(20)?,
        redacted: r.get(21)?,
        prev_hash: r.get(22)?,
        hash: r.get(23)?,
    })
}

impl RawRecord {
    pub(crate) fn seq(&self) -> i64 {
        self.seq
    }

    pub(crate) fn decode(self) -> Result<DecisionRecord, LogError> {
        let seq = self.seq;
        let bad = |reason: String| LogError::Corrupt { seq, reason };
        let parse = |field: &str, s: &str| -> Result<serde_json::Value, LogError> {
            serde_json::from_str(s).map_err(|e| bad(format!("{field}: {e}")))
        };
        let list = |field: &str, s: &str| -> Result<Vec<String>, LogError> {
            serde_json::from_value(parse(field, s)?).map_err(|e| bad(format!("{field}: {e}")))
        };
        let context = match parse("context", &self.context)? {
            serde_json::Value::Object(m) => m,
            other => return Err(bad(format!("context: expected an object, found {other}"))),
        };
        Ok(DecisionRecord {
            seq,
            kind: RecordKind::parse(&self.kind)
                .ok_or_else(|| bad(format!("unknown kind `{}`", self.kind)))?,
            decision: match &self.decision {
                None => None,
                Some(d) => {
                    Some(Outcome::parse(d).ok_or_else(|| bad(format!("unknown decision `{d}`")))?)
                }
            },
            policies: list("policies", &self.policies)?,
            grants_used: list("grants_used", &self.grants_used)?,
            errors: list("errors", &self.errors)?,
            redacted: list("redacted", &self.redacted)?,
            latency_us: u64::try_from(self.latency_us)
                .map_err(|_| bad("negative latency_us".into()))?,
            status: match self.status {
                None => None,
                Some(s) => {
                    Some(u16::try_from(s).map_err(|_| bad(format!("status {s} out of range")))?)
                }
            },
            context,
            id: self.id,
            time: self.time,
            request_id: self.request_id,
            principal: self.principal,
            action: self.action,
            resource: self.resource,
            revision: self.revision,
            engine: self.engine,
            client_addr: self.client_addr,
            method: self.method,
            path: self.path,
            break_glass: self.break_glass,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// `WHERE` clause and parameters for `filter`, records after `after` (a seq).
fn where_clause(filter: &Filter, after: Option<i64>) -> (String, Vec<SqlValue>) {
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    let mut eq = |conds: &mut Vec<String>, col: &str, v: &Option<String>| {
        if let Some(v) = v {
            args.push(SqlValue::Text(v.clone()));
            conds.push(format!("{col} = ?{}", args.len()));
        }
    };
    eq(&mut conds, "principal", &filter.principal);
    eq(&mut conds, "action", &filter.action);
    eq(&mut conds, "resource", &filter.resource);
    eq(&mut conds, "revision", &filter.revision);
    eq(&mut conds, "request_id", &filter.request_id);
    eq(
        &mut conds,
        "decision",
        &filter.decision.map(|d| d.as_str().to_string()),
    );
    eq(
        &mut conds,
        "kind",
        &filter.kind.map(|k| k.as_str().to_string()),
    );
    if let Some(g) = &filter.grant {
        args.push(SqlValue::Text(g.clone()));
        conds.push(format!(
            "seq IN (SELECT seq FROM decision_grants WHERE grant_id = ?{})",
            args.len()
        ));
    }
    // Record times are fixed-width UTC text, so text comparison is time comparison.
    if let Some(t) = filter.since {
        args.push(SqlValue::Text(format_time(t)));
        conds.push(format!("time >= ?{}", args.len()));
    }
    if let Some(t) = filter.until {
        args.push(SqlValue::Text(format_time(t)));
        conds.push(format!("time < ?{}", args.len()));
    }
    if let Some(a) = after {
        args.push(SqlValue::Integer(a));
        conds.push(format!("seq > ?{}", args.len()));
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (clause, args)
}

/// Streams the rows (columns in [`COLS`] order) matching `filter` in seq order through `f`, undecoded, for
/// callers that can use the stored columns directly (the JSON Lines export).
pub(crate) fn for_each_matching_row(
    conn: &Connection,
    filter: &Filter,
    mut f: impl FnMut(&Row<'_>) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let (clause, args) = where_clause(filter, None);
    let sql = format!("SELECT {COLS} FROM decisions {clause} ORDER BY seq");
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    while let Some(row) = rows.next()? {
        f(row)?;
    }
    Ok(())
}

/// How many records match `filter`.
pub(crate) fn count_matching(conn: &Connection, filter: &Filter) -> Result<u64, LogError> {
    let (clause, args) = where_clause(filter, None);
    let sql = format!("SELECT COUNT(*) FROM decisions {clause}");
    let n: i64 = conn.query_row(&sql, rusqlite::params_from_iter(args), |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Streams the records matching `filter` in seq order through `f`, one row at a time (constant memory).
pub(crate) fn for_each_matching(
    conn: &Connection,
    filter: &Filter,
    after: Option<i64>,
    limit: Option<i64>,
    mut f: impl FnMut(DecisionRecord) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let (clause, mut args) = where_clause(filter, after);
    args.push(SqlValue::Integer(limit.unwrap_or(-1)));
    let sql = format!(
        "SELECT {COLS} FROM decisions {clause} ORDER BY seq LIMIT ?{}",
        args.len()
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    while let Some(row) = rows.next()? {
        f(raw(row)?.decode()?)?;
    }
    Ok(())
}
