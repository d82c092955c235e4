//! The default [`Store`](crate::store::Store): grants, access requests and approvals in one SQLite file (WAL),
//! with its own schema migrations, and the connection settings and migration runner the decision log shares.
//! SQL lives here; the decision-log tables and their migrations are owned by [`crate::log`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

use crate::access::{AccessRequest, Approval, RequestFilter, RequestState, Verdict};
use crate::clock::UnixTime;
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::store::{
    EntityStore, GrantStore, PendingInsert, RecordedVerdict, RequestStore, Spent, StoreError,
    StoredEntity, VerdictError, VerdictWrite, issued_grant, verdict_effect,
};

/// How long a connection waits for another writer before giving up with `SQLITE_BUSY`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections held by one [`SqliteStore`]: WAL lets readers run beside the single writer.
const POOL_SIZE: usize = 4;

/// The table that records which of [`MIGRATIONS`] a file has.
pub(crate) const VERSION_TABLE: &str = "schema_version";

/// The store's schema, one entry per version, applied in order inside one transaction each. Never edit a shipped
/// entry: append a new one. The decision log keeps its own list ([`crate::log`]), so a file may hold either or both.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: grants, access requests, approvals.
    r#"
    CREATE TABLE grants (
        id             TEXT PRIMARY KEY,
        principal      TEXT NOT NULL,
        role           TEXT NOT NULL,
        scope          TEXT NOT NULL,
        starts_at      INTEGER NOT NULL,
        expires_at     INTEGER NOT NULL,
        max_uses       INTEGER,
        uses           INTEGER NOT NULL DEFAULT 0,
        status         TEXT NOT NULL CHECK (status IN ('active', 'revoked', 'consumed')),
        approvers      TEXT NOT NULL DEFAULT '[]',
        reason         TEXT NOT NULL DEFAULT '',
        break_glass    INTEGER NOT NULL DEFAULT 0,
        request_digest TEXT,
        request_id     TEXT,
        revoked_by     TEXT,
        revoked_at     INTEGER
    );
    CREATE INDEX grants_principal ON grants (principal);
    CREATE INDEX grants_live ON grants (status, expires_at);

    CREATE TABLE access_requests (
        id            TEXT PRIMARY KEY,
        requester     TEXT NOT NULL,
        role          TEXT NOT NULL,
        scope         TEXT NOT NULL,
        duration_secs INTEGER NOT NULL CHECK (duration_secs > 0),
        reason        TEXT NOT NULL DEFAULT '',
        ticket        TEXT,
        starts_at     INTEGER,
        state         TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        decided_at    INTEGER
    );
    CREATE INDEX access_requests_requester ON access_requests (requester, created_at);
    CREATE INDEX access_requests_state ON access_requests (state, created_at);

    CREATE TABLE approvals (
        request_id TEXT NOT NULL REFERENCES access_requests (id) ON DELETE CASCADE,
        approver   TEXT NOT NULL,
        verdict    TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
        comment    TEXT NOT NULL DEFAULT '',
        at         INTEGER NOT NULL,
        PRIMARY KEY (request_id, approver)
    );
    "#,
    // 2 (3 before the log had its own list): a held request's access request is bound to the digest of the exact
    // request it would let through.
    r#"
    ALTER TABLE access_requests ADD COLUMN request_digest TEXT;
    "#,
    // 3: entity data kept in the store (Cedar JSON entity format, as accepted), one row per uid.
    r#"
    CREATE TABLE entities (
        etype      TEXT NOT NULL,
        eid        TEXT NOT NULL,
        data       TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (etype, eid)
    );
    "#,
];

/// The store's schema version a fully migrated database has.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::database("", e)
}

/// Opens (creating it and its parent directories if needed) a SQLite file with jitgate's settings — WAL,
/// `synchronous=NORMAL`, a busy timeout, foreign keys — and brings the store's schema up to date.
pub fn open_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let mut conn = connect(path, busy_timeout)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens (creating it and its parent directories if needed) a SQLite file with jitgate's settings, leaving its
/// schema to the caller's migrations.
pub fn connect(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::database(format!("cannot create directory {}", dir.display()), e)
        })?;
    }
    let conn = Connection::open(path)
        .map_err(|e| StoreError::database(format!("cannot open {}", path.display()), e))?;
    configure(&conn, busy_timeout)?;
    Ok(conn)
}

fn configure(conn: &Connection, busy_timeout: Duration) -> Result<(), StoreError> {
    // The busy timeout first: switching to WAL itself may have to wait for another connection.
    conn.busy_timeout(busy_timeout).map_err(db_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(StoreError::database(
            "could not switch to WAL",
            format!("journal_mode is {mode}"),
        ));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err)?;
    Ok(())
}

/// Applies the store's migrations not yet applied (see [`apply_migrations`]).
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    apply_migrations(conn, VERSION_TABLE, MIGRATIONS)
}

/// Applies the entries of `migrations` not yet recorded in `table` (entry `i` is version `i + 1`). Each runs in
/// its own `IMMEDIATE` transaction and the version is re-read inside it, so several processes opening the same
/// file at once apply each migration exactly once.
pub(crate) fn apply_migrations(
    conn: &mut Connection,
    table: &str,
    migrations: &[&str],
) -> Result<(), StoreError> {
    split_legacy_versions(conn)?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL, applied_at INTEGER NOT NULL)"
    ))
    .map_err(db_err)?;
    for (i, sql) in migrations.iter().enumerate() {
        let version = i as i64 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let current = version_in(&tx, table)?;
        if current >= version {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| StoreError::database(format!("{table} migration {version} failed"), e))?;
        tx.execute(
            &format!("INSERT INTO {table} (version, applied_at) VALUES (?1, ?2)"),
            params![version, crate::clock::now_system()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(())
}

fn version_in(conn: &Connection, table: &str) -> Result<i64, StoreError> {
    conn.query_row(
        &format!("SELECT COALESCE(MAX(version), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )
    .map_err(db_err)
}

/// The decision log's version table (its migrations are in [`crate::log`]).
pub(crate) const LOG_VERSION_TABLE: &str = "log_schema_version";

/// Before the decision log had its own migrations, one list in `schema_version` held both: versions 1 and 3 were
/// the store's (now its 1 and 2), versions 2, 4 and 5 the log's (now its 1 to 3).
const LEGACY_STORE_VERSIONS: [i64; 2] = [1, 3];
const LEGACY_LOG_VERSIONS: [i64; 3] = [2, 4, 5];

/// Converts a file migrated by the single list of old into the two lists of now, once: a file with a decisions
/// table but no log version table can only come from the old list (the log's first migration makes both). A file
/// at old version 1 has only the store's first migration, which is the same version in the new list.
fn split_legacy_versions(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let exists = |name: &str| -> Result<bool, StoreError> {
        tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [name],
            |r| r.get(0),
        )
        .map_err(db_err)
    };
    if !exists("decisions")? || exists(LOG_VERSION_TABLE)? || !exists(VERSION_TABLE)? {
        return Ok(());
    }
    let old: Vec<(i64, i64)> = {
        let mut stmt = tx
            .prepare("SELECT version, applied_at FROM schema_version ORDER BY version")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err)?
    };
    let renumber = |legacy: &[i64]| -> Vec<(i64, i64)> {
        legacy
            .iter()
            .zip(1..)
            .filter_map(|(v, new)| old.iter().find(|(o, _)| o == v).map(|(_, at)| (new, *at)))
            .collect()
    };
    let store = renumber(&LEGACY_STORE_VERSIONS);
    let log = renumber(&LEGACY_LOG_VERSIONS);
    tx.execute_batch(&format!(
        "DELETE FROM {VERSION_TABLE};
         CREATE TABLE {LOG_VERSION_TABLE} (version INTEGER NOT NULL, applied_at INTEGER NOT NULL);"
    ))
    .map_err(db_err)?;
    for (table, rows) in [(VERSION_TABLE, store), (LOG_VERSION_TABLE, log)] {
        for (version, at) in rows {
            tx.execute(
                &format!("INSERT INTO {table} (version, applied_at) VALUES (?1, ?2)"),
                params![version, at],
            )
            .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}

/// Grants, access requests and approvals in SQLite. Cheap to share behind an `Arc`; every method commits before
/// it returns.
pub struct SqliteStore {
    path: PathBuf,
    pool: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    /// The one-writer lock, when opened with [`SqliteStore::open_exclusive`].
    _writer: Option<WriterLock>,
}

/// The lock that makes one process the only writer of a SQLite store: an advisory `flock` on a file beside the
/// database, released when the process ends however it ends (a killed process leaves no stale lock).
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

/// The lock file of the store at `db`.
pub fn writer_lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".writer.lock");
    PathBuf::from(name)
}

/// Takes the one-writer lock of the store at `db` (creating its directory if needed), or says which process
/// cannot share it.
pub fn lock_writer(db: &Path) -> Result<WriterLock, StoreError> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::database(format!("cannot create directory {}", dir.display()), e)
        })?;
    }
    let path = writer_lock_path(db);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::database(format!("cannot open {}", path.display()), e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(WriterLock { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Conflict(format!(
            "{} is in use by another jitgate process (it holds {}): a SQLite store has one process; stop the \
             other one, give this one its own [store] path, or share a PostgreSQL store ([store] url) between \
             replicas",
            db.display(),
            path.display()
        ))),
        Err(e) => Err(StoreError::database(
            format!("cannot lock {}", path.display()),
            e,
        )),
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens or creates the database at `path` (and its parent directories) and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut pool = Vec::with_capacity(POOL_SIZE);
        for _ in 0..POOL_SIZE {
            pool.push(Mutex::new(open_connection(path, DEFAULT_BUSY_TIMEOUT)?));
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            pool,
            next: AtomicUsize::new(0),
            _writer: None,
        })
    }

    /// [`SqliteStore::open`] for the one process that serves from this store: takes its one-writer lock first
    /// ([`lock_writer`]) and holds it while the store is open, so a second process on the same file refuses to
    /// start instead of silently diverging from the first.
    pub fn open_exclusive(path: &Path) -> Result<SqliteStore, StoreError> {
        let lock = lock_writer(path)?;
        let mut store = Self::open(path)?;
        store._writer = Some(lock);
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.with_conn(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
        })
    }

    /// A connection of the pool: a free one if there is one, else the round-robin pick once it is free.
    fn conn(&self) -> Result<parking_lot::MutexGuard<'_, Connection>, StoreError> {
        let n = self.pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Some(conn) = self.pool.get((start + i) % n).and_then(|m| m.try_lock()) {
                return Ok(conn);
            }
        }
        let m = self
            .pool
            .get(start % n.max(1))
            .ok_or_else(|| StoreError::database("", "the connection pool is empty"))?;
        Ok(m.lock())
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        f(&*self.conn()?).map_err(db_err)
    }
}

/// Whether `e` is the violation of a constraint of kind `code` (e.g. `SQLITE_CONSTRAINT_UNIQUE`).
fn violates(e: &rusqlite::Error, code: std::ffi::c_int) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation && f.extended_code == code)
}

impl RequestStore for SqliteStore {
    fn put_access_request(&self, r: &AccessRequest) -> Result<(), StoreError> {
        self.with_conn(|c| upsert_request(c, r))
    }

    fn insert_within_pending_cap(
        &self,
        r: &AccessRequest,
        max_pending: u32,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        // IMMEDIATE takes the write lock before the count, so no other process inserts between count and insert.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let pending: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM access_requests
                 WHERE requester = ?1 AND state = 'pending' AND expires_at > ?2",
                params![r.requester.to_string(), r.created_at],
                |row| row.get(0),
            )
            .map_err(db_err)?;
        if pending >= i64::from(max_pending) {
            return Ok(false);
        }
        upsert_request(&tx, r).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(true)
    }

    fn insert_pending_or_reuse(
        &self,
        r: &AccessRequest,
        max_pending: u32,
    ) -> Result<PendingInsert, StoreError> {
        let mut conn = self.conn()?;
        // IMMEDIATE takes the write lock before the look-up, so no other process inserts the same hold (or any
        // request of this requester) between look-up, count and insert.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let requester = r.requester.to_string();
        if let Some(digest) = &r.request_digest {
            let existing = tx
                .query_row(
                    &format!(
                        "SELECT {REQUEST_COLS} FROM access_requests
                         WHERE requester = ?1 AND role = ?2 AND request_digest = ?3 AND state = 'pending'
                           AND expires_at > ?4
                         ORDER BY created_at DESC, id LIMIT 1"
                    ),
                    params![requester, r.role, digest, r.created_at],
                    raw_request,
                )
                .optional()
                .map_err(db_err)?;
            if let Some(existing) = existing {
                return Ok(PendingInsert::Existing(Box::new(existing.decode()?)));
            }
        }
        let pending: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM access_requests
                 WHERE requester = ?1 AND state = 'pending' AND expires_at > ?2",
                params![requester, r.created_at],
                |row| row.get(0),
            )
            .map_err(db_err)?;
        if pending >= i64::from(max_pending) {
            return Ok(PendingInsert::CapReached);
        }
        upsert_request(&tx, r).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(PendingInsert::Inserted)
    }

    fn get_access_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        request_in(&*self.conn()?, id)
    }

    fn list_access_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let rows = self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {REQUEST_COLS} FROM access_requests
                 WHERE (?1 IS NULL OR requester = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR role = ?3)
                   AND (?5 IS NULL OR created_at < ?5 OR (created_at = ?5 AND id > ?6))
                 ORDER BY created_at DESC, id LIMIT ?4"
            ))?;
            let limit = filter.limit.map(i64::from).unwrap_or(-1);
            let rows = stmt.query_map(
                params![
                    filter.requester.as_ref().map(|r| r.to_string()),
                    filter.state.map(RequestState::as_str),
                    filter.role,
                    limit,
                    filter.after.as_ref().map(|(at, _)| *at),
                    filter.after.as_ref().map(|(_, id)| id.as_str())
                ],
                raw_request,
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().map(RawRequest::decode).collect()
    }

    fn transition_access_request(
        &self,
        id: &str,
        from: RequestState,
        to: RequestState,
        at: UnixTime,
    ) -> Result<bool, StoreError> {
        if !from.may_move_to(to) {
            return Ok(false);
        }
        self.with_conn(|c| {
            c.execute(
                "UPDATE access_requests SET state = ?3, decided_at = ?4 WHERE id = ?1 AND state = ?2",
                params![id, from.as_str(), to.as_str(), at],
            )
            .map(|n| n == 1)
        })
    }

    fn add_approval(&self, a: &Approval) -> Result<(), StoreError> {
        let conn = self.conn()?;
        match insert_approval(&conn, a) {
            Ok(()) => Ok(()),
            Err(e) if violates(&e, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => Err(
                StoreError::NotFound(format!("access request `{}`", a.request_id)),
            ),
            Err(e)
                if violates(&e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
                    || violates(&e, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE) =>
            {
                Err(StoreError::Conflict(format!(
                    "`{}` already gave a verdict on access request `{}`",
                    a.approver, a.request_id
                )))
            }
            Err(e) => Err(db_err(e)),
        }
    }

    fn approvals_for(&self, request_id: &str) -> Result<Vec<Approval>, StoreError> {
        approvals_in(&*self.conn()?, request_id)
    }

    fn record_verdict(&self, write: &VerdictWrite) -> Result<RecordedVerdict, VerdictError> {
        let a = &write.approval;
        let mut conn = self.conn()?;
        // IMMEDIATE takes the write lock before the first read, so what is checked below is what is written over,
        // whichever process writes next.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mut request = request_in(&tx, &a.request_id)?
            .ok_or_else(|| VerdictError::NotFound(a.request_id.clone()))?;
        let before = approvals_in(&tx, &a.request_id)?;
        let moved = verdict_effect(&request, &before, write)?;
        insert_approval(&tx, a).map_err(db_err)?;
        let approvals = approvals_in(&tx, &a.request_id)?;
        let mut grant = None;
        if let Some(to) = moved {
            let n = tx
                .execute(
                    "UPDATE access_requests SET state = ?3, decided_at = ?4 WHERE id = ?1 AND state = ?2",
                    params![request.id, RequestState::Pending.as_str(), to.as_str(), a.at],
                )
                .map_err(db_err)?;
            if n != 1 {
                // Cannot happen under the write lock; refuse rather than commit half a verdict.
                return Err(VerdictError::NotPending {
                    id: request.id,
                    state: request.state,
                });
            }
            request.state = to;
            request.decided_at = Some(a.at);
            if to == RequestState::Approved {
                let g = issued_grant(&write.grant, &approvals);
                upsert_grant(&tx, &g)?;
                grant = Some(g);
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(RecordedVerdict {
            request,
            approvals,
            grant,
        })
    }
}

/// Inserts or replaces access request `r`.
fn upsert_request(c: &Connection, r: &AccessRequest) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO access_requests
           (id, requester, role, scope, duration_secs, reason, ticket, starts_at, state, created_at,
            expires_at, decided_at, request_digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (id) DO UPDATE SET
           requester = excluded.requester, role = excluded.role, scope = excluded.scope,
           duration_secs = excluded.duration_secs, reason = excluded.reason, ticket = excluded.ticket,
           starts_at = excluded.starts_at, state = excluded.state, created_at = excluded.created_at,
           expires_at = excluded.expires_at, decided_at = excluded.decided_at,
           request_digest = excluded.request_digest",
        params![
            r.id,
            r.requester.to_string(),
            r.role,
            r.scope.to_string(),
            r.duration_secs,
            r.reason,
            r.ticket,
            r.starts_at,
            r.state.as_str(),
            r.created_at,
            r.expires_at,
            r.decided_at,
            r.request_digest
        ],
    )
    .map(|_| ())
}

fn upsert_grant(c: &Connection, g: &Grant) -> Result<(), StoreError> {
    let approvers = serde_json::to_string(&g.approvers)
        .map_err(|e| StoreError::database("cannot encode approvers", e))?;
    c.execute(
                "INSERT INTO grants
                   (id, principal, role, scope, starts_at, expires_at, max_uses, uses, status, approvers, reason,
                    break_glass, request_digest, request_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (id) DO UPDATE SET
                   principal = excluded.principal, role = excluded.role, scope = excluded.scope,
                   starts_at = excluded.starts_at, expires_at = excluded.expires_at, max_uses = excluded.max_uses,
                   uses = excluded.uses, status = excluded.status, approvers = excluded.approvers,
                   reason = excluded.reason, break_glass = excluded.break_glass,
                   request_digest = excluded.request_digest, request_id = excluded.request_id",
                params![
                    g.id,
                    g.principal.to_string(),
                    g.role,
                    g.scope.to_string(),
                    g.starts_at,
                    g.expires_at,
                    g.max_uses,
                    g.uses,
                    g.status.as_str(),
                    approvers,
                    g.reason,
                    g.break_glass,
                    g.request_digest,
                    g.request_id
                ],
            )
            .map(|_| ())
            .map_err(db_err)
}

fn insert_approval(c: &Connection, a: &Approval) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO approvals (request_id, approver, verdict, comment, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![a.request_id, a.approver, a.verdict.as_str(), a.comment, a.at])
    .map(|_| ())
}

fn approvals_in(c: &Connection, request_id: &str) -> Result<Vec<Approval>, StoreError> {
    let rows = (|| {
        let mut stmt = c.prepare_cached(
            "SELECT request_id, approver, verdict, comment, at FROM approvals WHERE request_id = ?1
             ORDER BY at, approver",
        )?;
        let rows = stmt.query_map([request_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<Vec<(String, String, String, String, i64)>>>()
    })()
    .map_err(db_err)?;
    rows.into_iter()
        .map(|(request_id, approver, verdict, comment, at)| {
            let verdict = Verdict::parse(&verdict)
                .ok_or_else(|| corrupt("approvals", format!("unknown verdict `{verdict}`")))?;
            Ok(Approval {
                request_id,
                approver,
                verdict,
                comment,
                at,
            })
        })
        .collect()
}

fn request_in(c: &Connection, id: &str) -> Result<Option<AccessRequest>, StoreError> {
    let row = c
        .query_row(
            &format!("SELECT {REQUEST_COLS} FROM access_requests WHERE id = ?1"),
            [id],
            raw_request,
        )
        .optional()
        .map_err(db_err)?;
    row.map(RawRequest::decode).transpose()
}

fn corrupt(table: &'static str, reason: String) -> StoreError {
    StoreError::Corrupt { table, reason }
}

fn parse_entity(table: &'static str, field: &str, s: &str) -> Result<EntityRef, StoreError> {
    EntityRef::from_str(s).map_err(|e| corrupt(table, format!("{field}: {e}")))
}

const GRANT_COLS: &str = "id, principal, role, scope, starts_at, expires_at, max_uses, uses, status, approvers, \
                          reason, break_glass, request_digest, request_id";

/// A grants row before its text fields are parsed, so that decoding errors become [`StoreError::Corrupt`].
struct RawGrant {
    id: String,
    principal: String,
    role: String,
    scope: String,
    starts_at: i64,
    expires_at: i64,
    max_uses: Option<i64>,
    uses: i64,
    status: String,
    approvers: String,
    reason: String,
    break_glass: bool,
    request_digest: Option<String>,
    request_id: Option<String>,
}

fn raw_grant(r: &Row<'_>) -> rusqlite::Result<RawGrant> {
    Ok(RawGrant {
        id: r.get(0)?,
        principal: r.get(1)?,
        role: r.get(2)?,
        scope: r.get(3)?,
        starts_at: r.get(4)?,
        expires_at: r.get(5)?,
        max_uses: r.get(6)?,
        uses: r.get(7)?,
        status: r.get(8)?,
        approvers: r.get(9)?,
        reason: r.get(10)?,
        break_glass: r.get(11)?,
        request_digest: r.get(12)?,
        request_id: r.get(13)?,
    })
}

impl RawGrant {
    fn decode(self) -> Result<Grant, StoreError> {
        const T: &str = "grants";
        let count = |field: &str, v: i64| {
            u32::try_from(v)
                .map_err(|_| corrupt(T, format!("grant `{}`: {field} {v} out of range", self.id)))
        };
        Ok(Grant {
            principal: parse_entity(T, "principal", &self.principal)?,
            role: self.role.clone(),
            scope: parse_entity(T, "scope", &self.scope)?,
            starts_at: self.starts_at,
            expires_at: self.expires_at,
            max_uses: self.max_uses.map(|m| count("max_uses", m)).transpose()?,
            uses: count("uses", self.uses)?,
            status: GrantStatus::parse(&self.status).ok_or_else(|| {
                corrupt(
                    T,
                    format!("grant `{}`: unknown status `{}`", self.id, self.status),
                )
            })?,
            approvers: serde_json::from_str(&self.approvers)
                .map_err(|e| corrupt(T, format!("grant `{}`: approvers: {e}", self.id)))?,
            reason: self.reason.clone(),
            break_glass: self.break_glass,
            request_digest: self.request_digest.clone(),
            request_id: self.request_id.clone(),
            id: self.id,
        })
    }
}

impl EntityStore for SqliteStore {
    fn load_entities(&self) -> Result<Vec<StoredEntity>, StoreError> {
        let rows = self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT etype, eid, data, updated_at FROM entities ORDER BY etype, eid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(ty, id, data, at)| crate::store::stored_entity(ty, id, &data, at))
            .collect()
    }

    fn put_entities(&self, entities: &[StoredEntity]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        for e in entities {
            tx.execute(
                "INSERT INTO entities (etype, eid, data, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (etype, eid) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                params![e.uid.ty, e.uid.id, e.data.to_string(), e.updated_at],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn delete_entities(&self, uids: &[EntityRef]) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mut n = 0;
        for u in uids {
            n += tx
                .execute(
                    "DELETE FROM entities WHERE etype = ?1 AND eid = ?2",
                    params![u.ty, u.id],
                )
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(n)
    }
}

impl GrantStore for SqliteStore {
    fn load_grants(&self, now: UnixTime) -> Result<Vec<Grant>, StoreError> {
        let rows = self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {GRANT_COLS} FROM grants WHERE status = 'active' AND expires_at > ?1 ORDER BY id"
            ))?;
            let rows = stmt.query_map([now], raw_grant)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().map(RawGrant::decode).collect()
    }

    fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        upsert_grant(&*self.conn()?, g)
    }

    fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        let row = self.with_conn(|c| {
            c.query_row(
                &format!("SELECT {GRANT_COLS} FROM grants WHERE id = ?1"),
                [id],
                raw_grant,
            )
            .optional()
        })?;
        row.map(RawGrant::decode).transpose()
    }

    fn consume_use(&self, id: &str, now: UnixTime) -> Result<Option<Grant>, StoreError> {
        consume_in(&*self.conn()?, id, now)
    }

    fn consume_uses(&self, ids: &[&str], now: UnixTime) -> Result<Spent, StoreError> {
        let mut sorted: Vec<&str> = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut conn = self.conn()?;
        // IMMEDIATE: the write lock for the whole set, so no other process spends between two of them.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mut spent = Vec::with_capacity(sorted.len());
        for id in sorted {
            match consume_in(&tx, id, now)? {
                Some(g) => spent.push(g),
                // Dropping the transaction rolls back the uses already taken.
                None => return Ok(Spent::Lost(id.to_string())),
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(Spent::All(spent))
    }

    fn revoke_grant(&self, id: &str, by: &str, at: UnixTime) -> Result<Option<Grant>, StoreError> {
        let row = self.with_conn(|c| {
            c.query_row(
                &format!(
                    "UPDATE grants SET status = 'revoked', revoked_by = ?2, revoked_at = ?3
                     WHERE id = ?1 AND status = 'active' RETURNING {GRANT_COLS}"
                ),
                params![id, by, at],
                raw_grant,
            )
            .optional()
        })?;
        match row {
            Some(raw) => raw.decode().map(Some),
            // Already revoked or consumed: nothing to change, report its state as it is.
            None => self.get_grant(id),
        }
    }
}

/// Takes one use of grant `id` (see [`GrantStore::consume_use`]).
fn consume_in(c: &Connection, id: &str, now: UnixTime) -> Result<Option<Grant>, StoreError> {
    // One statement: the check and the increment cannot be split by another writer, and RETURNING re-reads
    // the row as this statement left it. In SET, `uses` is the value before the update.
    let row = c
        .query_row(
            &format!(
                "UPDATE grants SET
                   uses = uses + 1,
                   status = CASE WHEN max_uses IS NOT NULL AND uses + 1 >= max_uses THEN 'consumed'
                                 ELSE status END
                 WHERE id = ?1 AND status = 'active' AND starts_at <= ?2 AND expires_at > ?2
                   AND (max_uses IS NULL OR uses < max_uses)
                 RETURNING {GRANT_COLS}"
            ),
            params![id, now],
            raw_grant,
        )
        .optional()
        .map_err(db_err)?;
    row.map(RawGrant::decode).transpose()
}

const REQUEST_COLS: &str = "id, requester, role, scope, duration_secs, reason, ticket, starts_at, state, created_at, \
                            expires_at, decided_at, request_digest";

struct RawRequest {
    id: String,
    requester: String,
    role: String,
    scope: String,
    duration_secs: i64,
    reason: String,
    ticket: Option<String>,
    starts_at: Option<i64>,
    state: String,
    created_at: i64,
    expires_at: i64,
    decided_at: Option<i64>,
    request_digest: Option<String>,
}

fn raw_request(r: &Row<'_>) -> rusqlite::Result<RawRequest> {
    Ok(RawRequest {
        id: r.get(0)?,
        requester: r.get(1)?,
        role: r.get(2)?,
        scope: r.get(3)?,
        duration_secs: r.get(4)?,
        reason: r.get(5)?,
        ticket: r.get(6)?,
        starts_at: r.get(7)?,
        state: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
        decided_at: r.get(11)?,
        request_digest: r.get(12)?,
    })
}

impl RawRequest {
    fn decode(self) -> Result<AccessRequest, StoreError> {
        const T: &str = "access_requests";
        Ok(AccessRequest {
            requester: parse_entity(T, "requester", &self.requester)?,
            scope: parse_entity(T, "scope", &self.scope)?,
            state: RequestState::parse(&self.state).ok_or_else(|| {
                corrupt(
                    T,
                    format!("request `{}`: unknown state `{}`", self.id, self.state),
                )
            })?,
            id: self.id,
            role: self.role,
            duration_secs: self.duration_secs,
            reason: self.reason,
            ticket: self.ticket,
            starts_at: self.starts_at,
            created_at: self.created_at,
            expires_at: self.expires_at,
            decided_at: self.decided_at,
            request_digest: self.request_digest,
        })
    }
}
