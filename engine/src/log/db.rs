//! The decision log's schema (its own migrations, apart from the store's), a [`DecisionRecord`] as a `decisions`
//! row and back (every field its own column, so editing any column breaks the hash), the chain head, filters as SQL.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::record::{DecisionRecord, Outcome, RecordKind, format_time};
use super::{Fault, Filter};
use crate::sqlite::{DEFAULT_BUSY_TIMEOUT, LOG_VERSION_TABLE, apply_migrations, connect};

pub(crate) const COLS: &str = "seq, id, time, kind, request_id, principal, action, resource, context, decision, \
    policies, grants_used, errors, revision, engine, latency_us, client_addr, method, path, status, break_glass, \
    redacted, prev_hash, hash";

/// The decision log's schema, one entry per version, applied in order inside one transaction each (recorded in its
/// own version table, apart from the store's). Never edit a shipped entry: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1 (2 before the log had its own list): the decision log.
    r#"
    CREATE TABLE decisions (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL,
        time        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        request_id  TEXT,
        principal   TEXT NOT NULL,
        action      TEXT NOT NULL,
        resource    TEXT NOT NULL,
        context     TEXT NOT NULL,
        decision    TEXT,
        policies    TEXT NOT NULL,
        grants_used TEXT NOT NULL,
        errors      TEXT NOT NULL,
        revision    TEXT NOT NULL,
        engine      TEXT NOT NULL,
        latency_us  INTEGER NOT NULL,
        client_addr TEXT,
        method      TEXT,
        path        TEXT,
        status      INTEGER,
        break_glass INTEGER NOT NULL,
        redacted    TEXT NOT NULL,
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL
    );
    CREATE INDEX decisions_time ON decisions (time);
    CREATE INDEX decisions_principal ON decisions (principal, seq);
    CREATE INDEX decisions_action ON decisions (action, seq);
    CREATE INDEX decisions_resource ON decisions (resource, seq);
    CREATE INDEX decisions_decision ON decisions (decision, seq);
    CREATE INDEX decisions_revision ON decisions (revision, seq);
    CREATE INDEX decisions_request_id ON decisions (request_id);
    CREATE INDEX decisions_kind ON decisions (kind, seq);
    -- An index only: the chain in `decisions.grants_used` is the truth, and verify checks that they agree.
    CREATE TABLE decision_grants (
        grant_id TEXT NOT NULL,
        seq      INTEGER NOT NULL
    );
    CREATE INDEX decision_grants_grant ON decision_grants (grant_id, seq);
    CREATE INDEX decision_grants_seq ON decision_grants (seq);
    -- The head of the chain, updated in the same transaction as every append, so that cutting off the newest
    -- records (which a hash chain alone cannot see) is detected unless this row is forged too.
    CREATE TABLE log_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    "#,
    // 2 (4 before): every index is written on every logged decision. Outcome, kind and revision have a handful
    // of values each and are always queried with a time range or another column, so their indexes cost more on
    // the hot path than they save in queries.
    r#"
    DROP INDEX decisions_decision;
    DROP INDEX decisions_kind;
    DROP INDEX decisions_revision;
    "#,
    // 3 (5 before): where the decision log's acknowledgement journal is committed up to (see crate::log::journal).
    r#"
    CREATE TABLE log_journal (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        generation INTEGER NOT NULL,
        offset     INTEGER NOT NULL
    );
    "#,
    // 4: how far a shipper has copied this log into a shared store (see crate::log::mark_shipped). While the row
    // is here, prune never removes a record after `seq`: nothing is lost before it is in the store.
    r#"
    CREATE TABLE log_shipped (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        replica TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        time    TEXT NOT NULL
    );
    "#,
    // 5: fewer b-trees written per logged decision. Actions are a handful of values, queried with a time range or
    // another column like the outcome, kind and revision of migration 2, so their index goes too. The grant index
    // table is keyed by (seq, grant_id) itself (WITHOUT ROWID), which orders it by seq for prune's range delete and
    // for the NOT EXISTS look-ups of verify, in place of a rowid table plus an index on seq; (grant_id, seq) stays
    // for `--grant`. A duplicate (seq, grant_id) pair, which a grants_used list naming one grant twice would have
    // made, says nothing the first does not: it is kept once.
    r#"
    DROP INDEX decisions_action;
    CREATE TABLE decision_grants_new (
        seq      INTEGER NOT NULL,
        grant_id TEXT NOT NULL,
        PRIMARY KEY (seq, grant_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO decision_grants_new (seq, grant_id) SELECT seq, grant_id FROM decision_grants;
    DROP TABLE decision_grants;
    ALTER TABLE decision_grants_new RENAME TO decision_grants;
    CREATE INDEX decision_grants_grant ON decision_grants (grant_id, seq);
    "#,
];

/// Opens (creating it and its parent directories if needed) the log database at `path` with jitgate's settings
/// and brings the log's schema up to date.
pub(crate) fn open_write(path: &Path, busy_timeout: Duration) -> Result<Connection, Fault> {
    let mut conn = connect(path, busy_timeout)?;
    // A new file returns the pages prune frees to the file system (`PRAGMA incremental_vacuum`); this can only be
    // chosen before the first table exists.
    let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables == 0 {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    apply_migrations(&mut conn, LOG_VERSION_TABLE, MIGRATIONS)?;
    // Space freed inside a page (cells moved when a page splits, rows pruned) is overwritten with zeros, so no
    // stale copy of a pruned record survives in the file.
    conn.pragma_update(None, "secure_delete", true)?;
    Ok(conn)
}

/// Opens an existing log database for reading only (never creates one, never migrates, never writes): SQLite's
/// read-only mode, and `immutable` when no writer has a WAL open (so nothing is created beside the file and it works
/// on read-only media) or when the read-only open fails there. A SQLite file that is not a decision log is refused.
pub(crate) fn open_read(path: &Path) -> Result<Connection, Fault> {
    if !path.is_file() {
        return Err(Fault::NotFound(format!("database {}", path.display())));
    }
    let conn = open_read_only(path)?;
    let is_log: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'decisions')",
        [],
        |r| r.get(0),
    )?;
    if !is_log {
        return Err(Fault::Invalid {
            what: "log".into(),
            reason: format!(
                "{} is not a jitgate decision log (it has no decisions table)",
                path.display()
            ),
        });
    }
    Ok(conn)
}

fn open_read_only(path: &Path) -> Result<Connection, Fault> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut uri = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'.' | b'_' | b'~' => {
                uri.push(char::from(*b));
            }
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if Path::new(&wal).exists() {
        // A writer may be live: read through its WAL.
        let opened = Connection::open_with_flags(format!("{uri}?mode=ro"), flags).and_then(|c| {
            c.busy_timeout(DEFAULT_BUSY_TIMEOUT)?;
            c.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(()))?;
            Ok(c)
        });
        match opened {
            Ok(c) => return Ok(c),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Connection::open_with_flags(
        format!("{uri}?mode=ro&immutable=1"),
        flags,
    )?)
}

/// Opens an existing log database to change it (prune): refuses a file that is not a decision log before anything
/// is written to it, then opens it as the writer does.
pub(crate) fn open_existing(path: &Path) -> Result<Connection, Fault> {
    open_read(path)?;
    open_write(path, DEFAULT_BUSY_TIMEOUT)
}

/// The shipping mark `(replica, seq)`: records through `seq` are in the shared store (`None`: no shipper).
pub(crate) fn shipped(conn: &Connection) -> Result<Option<(String, i64)>, Fault> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'log_shipped')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT replica, seq FROM log_shipped WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Sets the shipping mark (`None`: removes it).
pub(crate) fn set_shipped(conn: &Connection, mark: Option<(&str, i64)>) -> Result<(), Fault> {
    match mark {
        Some((replica, seq)) => conn.execute(
            "INSERT INTO log_shipped (id, replica, seq, time) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET replica = excluded.replica, seq = excluded.seq, time = excluded.time",
            params![replica, seq, format_time(time::OffsetDateTime::now_utc())],
        )?,
        None => conn.execute("DELETE FROM log_shipped", [])?,
    };
    Ok(())
}

/// Moves the shipping mark forward to `seq` inside `tx` (the writer's batch): only where a shipper has set a mark
/// ([`set_shipped`]), and never backwards.
pub(crate) fn advance_shipped(tx: &Connection, seq: i64) -> Result<(), Fault> {
    tx.prepare_cached("UPDATE log_shipped SET seq = ?1, time = ?2 WHERE id = 1 AND seq < ?1")?
        .execute(params![seq, format_time(time::OffsetDateTime::now_utc())])?;
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, Fault> {
    serde_json::to_string(v).map_err(|e| Fault::Invalid {
        what: "record".into(),
        reason: e.to_string(),
    })
}

/// A record's JSON columns as stored: each serialized once, for the row and for the record's canonical bytes.
pub(crate) struct JsonColumns {
    pub(crate) context: String,
    pub(crate) policies: String,
    pub(crate) grants_used: String,
    pub(crate) errors: String,
    pub(crate) redacted: String,
}

impl JsonColumns {
    /// The columns of `r` (its context as it is: sort it first when sealing).
    pub(crate) fn of(r: &DecisionRecord) -> Result<JsonColumns, Fault> {
        let list = |l: &Vec<String>| {
            if l.is_empty() {
                Ok("[]".to_string())
            } else {
                json(l)
            }
        };
        Ok(JsonColumns {
            context: json(&r.context)?,
            policies: list(&r.policies)?,
            grants_used: list(&r.grants_used)?,
            errors: list(&r.errors)?,
            redacted: list(&r.redacted)?,
        })
    }
}

/// Inserts a sealed record (and its grant index rows) inside `tx`.
pub(crate) fn insert(tx: &Transaction<'_>, r: &DecisionRecord) -> Result<(), Fault> {
    insert_with(tx, r, &JsonColumns::of(r)?)
}

/// [`insert`] with the record's JSON columns already made.
pub(crate) fn insert_with(
    tx: &Connection,
    r: &DecisionRecord,
    cols: &JsonColumns,
) -> Result<(), Fault> {
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
        cols.context,
        r.decision.map(Outcome::as_str),
        cols.policies,
        cols.grants_used,
        cols.errors,
        r.revision,
        r.engine,
        latency,
        r.client_addr,
        r.method,
        r.path,
        r.status,
        r.break_glass,
        cols.redacted,
        r.prev_hash,
        r.hash,
    ])?;
    if !r.grants_used.is_empty() {
        let mut g = tx.prepare_cached(
            "INSERT OR IGNORE INTO decision_grants (grant_id, seq) VALUES (?1, ?2)",
        )?;
        for id in &r.grants_used {
            g.execute(params![id, r.seq])?;
        }
    }
    Ok(())
}

/// The head of the chain: `(seq, hash)` of the last record, `(0, GENESIS)` for an empty log.
pub(crate) fn head(conn: &Connection) -> Result<Option<(i64, String)>, Fault> {
    // Cached: the writer reads the head once per batch.
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM log_head WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Records the new head (same transaction as the rows it points at).
pub(crate) fn set_head(tx: &Connection, seq: i64, hash: &str) -> Result<(), Fault> {
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

    pub(crate) fn decode(self) -> Result<DecisionRecord, Fault> {
        let seq = self.seq;
        let bad = |reason: String| Fault::Corrupt { seq, reason };
        let parse = |field: &str, s: &str| -> Result<serde_json::Value, Fault> {
            serde_json::from_str(s).map_err(|e| bad(format!("{field}: {e}")))
        };
        let list = |field: &str, s: &str| -> Result<Vec<String>, Fault> {
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
    mut f: impl FnMut(&Row<'_>) -> Result<(), Fault>,
) -> Result<(), Fault> {
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
pub(crate) fn count_matching(conn: &Connection, filter: &Filter) -> Result<u64, Fault> {
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
    mut f: impl FnMut(DecisionRecord) -> Result<(), Fault>,
) -> Result<(), Fault> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use rusqlite::params;

    use super::*;
    use crate::sqlite::{
        LOG_VERSION_TABLE, MIGRATIONS as STORE_MIGRATIONS, SqliteStore, VERSION_TABLE,
    };
    use crate::store::GrantStore;

    fn versions(conn: &Connection, table: &str) -> Vec<i64> {
        let mut stmt = conn
            .prepare(&format!("SELECT version FROM {table} ORDER BY version"))
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A file migrated by the single list of old (store and log interleaved, all in `schema_version`) up to
    /// `upto`, as the code before the split made it.
    fn legacy_file(path: &Path, upto: usize) {
        let legacy = [
            STORE_MIGRATIONS[0],
            MIGRATIONS[0],
            STORE_MIGRATIONS[1],
            MIGRATIONS[1],
            MIGRATIONS[2],
        ];
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        for (i, sql) in legacy.iter().enumerate().take(upto) {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                params![i as i64 + 1, 1000 + i as i64],
            )
            .unwrap();
        }
    }

    #[test]
    fn a_file_of_the_single_migration_list_opens_and_keeps_its_data() {
        for upto in 1..=5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            legacy_file(&path, upto);
            {
                let conn = Connection::open(&path).unwrap();
                conn.execute(
                    "INSERT INTO grants (id, principal, role, scope, starts_at, expires_at, status)
                     VALUES ('g', 'User::\"a\"', 'r', 'Service::\"s\"', 1, 2, 'active')",
                    [],
                )
                .unwrap();
            }
            let store = SqliteStore::open(&path).unwrap();
            assert_eq!(
                store.schema_version().unwrap(),
                crate::sqlite::schema_version(),
                "upto {upto}"
            );
            assert!(store.get_grant("g").unwrap().is_some());
            let log =
                super::super::LogWriter::start(&path, super::super::LogOptions::default()).unwrap();
            log.shutdown().unwrap();
            let conn = Connection::open(&path).unwrap();
            assert_eq!(versions(&conn, VERSION_TABLE), vec![1, 2, 3], "upto {upto}");
            assert_eq!(
                versions(&conn, LOG_VERSION_TABLE),
                vec![1, 2, 3, 4, 5],
                "upto {upto}"
            );
            if upto >= 2 {
                // The versions the old list applied keep the time they were applied.
                let at: i64 = conn
                    .query_row(
                        "SELECT applied_at FROM log_schema_version WHERE version = 1",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(at, 1001, "upto {upto}");
            }
        }
    }

    #[test]
    fn store_and_log_migrate_apart_in_either_order() {
        let dir = tempfile::tempdir().unwrap();
        for (name, store_first) in [("a.db", true), ("b.db", false)] {
            let path = dir.path().join(name);
            let open_log = || {
                super::super::LogWriter::start(&path, super::super::LogOptions::default())
                    .unwrap()
                    .shutdown()
                    .unwrap()
            };
            if store_first {
                SqliteStore::open(&path).unwrap();
                open_log();
            } else {
                open_log();
                SqliteStore::open(&path).unwrap();
            }
            let conn = Connection::open(&path).unwrap();
            assert_eq!(versions(&conn, VERSION_TABLE), vec![1, 2, 3]);
            assert_eq!(versions(&conn, LOG_VERSION_TABLE), vec![1, 2, 3, 4, 5]);
        }
        // Each alone makes only its own tables.
        let log_only = dir.path().join("log.db");
        super::super::LogWriter::start(&log_only, super::super::LogOptions::default())
            .unwrap()
            .shutdown()
            .unwrap();
        let conn = Connection::open(&log_only).unwrap();
        let grants: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'grants')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!grants);
    }

    /// The grant index rows, in key order.
    fn grant_rows(conn: &Connection) -> Vec<(i64, String)> {
        let mut stmt = conn
            .prepare("SELECT seq, grant_id FROM decision_grants ORDER BY seq, grant_id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_log_of_schema_4_opens_migrated_and_verifies_and_queries_as_before() {
        use super::super::{
            Filter, LogOptions, LogWriter, Outcome, RecordKind, query, verify_store,
        };

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let t0 = time::macros::datetime!(2026-11-23 10:00:00 UTC);
        // A log as the code of schema 4 wrote it (rowid grant table, indexes on action and on grant seq).
        {
            let mut conn = connect(&path, DEFAULT_BUSY_TIMEOUT).unwrap();
            apply_migrations(&mut conn, LOG_VERSION_TABLE, &MIGRATIONS[..4]).unwrap();
            let mut records: Vec<DecisionRecord> = (0..40)
                .map(|i| {
                    let mut r =
                        DecisionRecord::at(RecordKind::Decision, t0 + time::Duration::minutes(i));
                    r.principal = format!(r#"User::"u{}""#, i % 3);
                    r.action = format!(r#"Action::"a{}""#, i % 2);
                    r.resource = format!(r#"Service::"s{}""#, i % 5);
                    r.decision = Some(Outcome::Allow);
                    r.grants_used = match i % 4 {
                        0 => vec![],
                        1 => vec![format!("g{i}")],
                        _ => vec![format!("g{}", i % 3), "gshared".into()],
                    };
                    r.revision = "rev1".into();
                    r.engine = "cedar".into();
                    r
                })
                .collect();
            super::super::writer::write_records(&mut conn, records.iter_mut(), None, None, None)
                .unwrap();
            // An index row named twice (which only a grants_used naming a grant twice made): kept once.
            conn.execute(
                "INSERT INTO decision_grants (grant_id, seq) VALUES ('g1', 2)",
                [],
            )
            .unwrap();
            assert_eq!(versions(&conn, LOG_VERSION_TABLE), vec![1, 2, 3, 4]);
        }
        let filters = [
            Filter::default(),
            Filter {
                grant: Some("gshared".into()),
                ..Filter::default()
            },
            Filter {
                grant: Some("g1".into()),
                ..Filter::default()
            },
            Filter {
                action: Some(r#"Action::"a1""#.into()),
                ..Filter::default()
            },
            Filter {
                action: Some(r#"Action::"a0""#.into()),
                principal: Some(r#"User::"u2""#.into()),
                since: Some(t0 + time::Duration::minutes(7)),
                until: Some(t0 + time::Duration::minutes(31)),
                ..Filter::default()
            },
        ];
        let run = |f: &Filter| {
            query(&path, f, None, 1000)
                .unwrap()
                .records
                .into_iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>()
        };
        let before: Vec<_> = filters.iter().map(run).collect();
        let rows_before = grant_rows(&Connection::open(&path).unwrap());
        // The writer of now opens it: schema 5, the same answers, a chain that verifies, and it goes on.
        let log = LogWriter::start(&path, LogOptions::default()).unwrap();
        log.shutdown().unwrap();
        let conn = Connection::open(&path).unwrap();
        assert_eq!(versions(&conn, LOG_VERSION_TABLE), vec![1, 2, 3, 4, 5]);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            !indexes.contains(&"decisions_action".to_string()),
            "{indexes:?}"
        );
        assert!(
            !indexes.contains(&"decision_grants_seq".to_string()),
            "{indexes:?}"
        );
        assert!(
            indexes.contains(&"decision_grants_grant".to_string()),
            "{indexes:?}"
        );
        let mut deduped = rows_before.clone();
        deduped.dedup();
        assert_eq!(deduped.len() + 1, rows_before.len());
        assert_eq!(grant_rows(&conn), deduped);
        let after: Vec<_> = filters.iter().map(run).collect();
        assert_eq!(after, before);
        assert!(before[1].len() > 10 && !before[4].is_empty(), "{before:?}");
        let report = verify_store(&path).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, 40);
    }
}
