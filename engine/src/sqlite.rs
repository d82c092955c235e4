//! The default [`Store`]: grants, access requests and approvals in one SQLite file (WAL), plus the schema
//! migrations shared with the decision log. SQL lives here; the decision-log rows are owned by [`crate::log`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::store::{Store, StoreError};

/// How long a connection waits for another writer before giving up with `SQLITE_BUSY`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections held by one [`SqliteStore`]: WAL lets readers run beside the single writer.
const POOL_SIZE: usize = 4;

/// The schema, one entry per version, applied in order inside one transaction each. Never edit a shipped entry:
/// append a new one. The decision-log tables are here too so that one file can hold everything.
const MIGRATIONS: &[&str] = &[
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
    // 2: the decision log (see crate::log::store for the column contract).
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
    // 3: a held request's access request is bound to the digest of the exact request it would let through.
    r#"
    ALTER TABLE access_requests ADD COLUMN request_digest TEXT;
    "#,
    // 4: every index is written on every logged decision. Outcome, kind and revision have a handful of values
    // each and are always queried with a time range or another column, so their indexes cost more on the hot
    // path than they save in queries.
    r#"
    DROP INDEX decisions_decision;
    DROP INDEX decisions_kind;
    DROP INDEX decisions_revision;
    "#,
    // 5: where the decision log's acknowledgement journal is committed up to (see crate::log::journal).
    r#"
    CREATE TABLE log_journal (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        generation INTEGER NOT NULL,
        offset     INTEGER NOT NULL
    );
    "#,
];

/// The schema version a fully migrated database has.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Opens (creating it and its parent directories if needed) a SQLite file with jitgate's settings — WAL,
/// `synchronous=NORMAL`, a busy timeout, foreign keys — and brings its schema up to date.
pub fn open_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Database(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    let mut conn = Connection::open(path)
        .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
    configure(&conn, busy_timeout)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens an existing SQLite file (never creating one) with jitgate's settings and schema.
pub fn open_existing(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    if !path.is_file() {
        return Err(StoreError::NotFound(format!("database {}", path.display())));
    }
    open_connection(path, busy_timeout)
}

fn configure(conn: &Connection, busy_timeout: Duration) -> Result<(), StoreError> {
    // The busy timeout first: switching to WAL itself may have to wait for another connection.
    conn.busy_timeout(busy_timeout).map_err(db_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(StoreError::Database(format!(
            "could not switch to WAL (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err)?;
    Ok(())
}

/// Applies the migrations not yet applied. Each runs in its own `IMMEDIATE` transaction and the version is
/// re-read inside it, so several processes opening the same file at once apply each migration exactly once.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at INTEGER NOT NULL)")
        .map_err(db_err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let current: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if current >= version {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Database(format!("migration {version} failed: {e}")))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![version, crate::clock::now_system()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(())
}

/// Grants, access requests and approvals in SQLite. Cheap to share behind an `Arc`; every method commits before
/// it returns.
pub struct SqliteStore {
    path: PathBuf,
    pool: Vec<Mutex<Connection>>,
    next: AtomicUsize,
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
        })
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

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let n = self.pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // A free connection if there is one, else wait on the round-robin pick.
        for i in 0..n {
            if let Some(conn) = self.pool.get((start + i) % n).and_then(|m| m.try_lock()) {
                return f(&conn).map_err(db_err);
            }
        }
        let m = self
            .pool
            .get(start % n.max(1))
            .ok_or_else(|| StoreError::Database("empty pool".into()))?;
        let conn = m.lock();
        f(&conn).map_err(db_err)
    }

    /// Inserts or replaces an access request (committed when this returns).
    pub fn put_access_request(&self, r: &AccessRequest) -> Result<(), StoreError> {
        self.with_conn(|c| {
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
        })
    }

    /// One access request by id.
    pub fn get_access_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        let row = self.with_conn(|c| {
            c.query_row(
                &format!("SELECT {REQUEST_COLS} FROM access_requests WHERE id = ?1"),
                [id],
                raw_request,
            )
            .optional()
        })?;
        row.map(RawRequest::decode).transpose()
    }

    /// Access requests matching `filter`, newest first.
    pub fn list_access_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let rows = self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {REQUEST_COLS} FROM access_requests
                 WHERE (?1 IS NULL OR requester = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR role = ?3)
                 ORDER BY created_at DESC, id LIMIT ?4"
            ))?;
            let limit = filter.limit.map(i64::from).unwrap_or(-1);
            let rows = stmt.query_map(
                params![
                    filter.requester.as_ref().map(|r| r.to_string()),
                    filter.state.map(RequestState::as_str),
                    filter.role,
                    limit
                ],
                raw_request,
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().map(RawRequest::decode).collect()
    }

    /// Moves a request from state `from` to `to` (compare-and-set, so two deciders cannot both win); returns
    /// whether it moved.
    pub fn transition_access_request(
        &self,
        id: &str,
        from: RequestState,
        to: RequestState,
        at: UnixTime,
    ) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE access_requests SET state = ?3, decided_at = ?4 WHERE id = ?1 AND state = ?2",
                params![id, from.as_str(), to.as_str(), at],
            )
            .map(|n| n == 1)
        })
    }

    /// Records an approver's verdict on a request. An approver has one verdict per request: a second one is a
    /// [`StoreError::Conflict`]; an unknown request is [`StoreError::NotFound`].
    pub fn add_approval(&self, a: &Approval) -> Result<(), StoreError> {
        let res = self.with_conn(|c| {
            c.execute(
                "INSERT INTO approvals (request_id, approver, verdict, comment, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![a.request_id, a.approver, a.verdict.as_str(), a.comment, a.at],
            )
        });
        match res {
            Ok(_) => Ok(()),
            Err(StoreError::Database(msg)) if msg.contains("FOREIGN KEY") => Err(
                StoreError::NotFound(format!("access request `{}`", a.request_id)),
            ),
            Err(StoreError::Database(msg)) if msg.contains("UNIQUE") => {
                Err(StoreError::Conflict(format!(
                    "`{}` already gave a verdict on access request `{}`",
                    a.approver, a.request_id
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// The verdicts given on a request, oldest first.
    pub fn approvals_for(&self, request_id: &str) -> Result<Vec<Approval>, StoreError> {
        let rows = self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT request_id, approver, verdict, comment, at FROM approvals WHERE request_id = ?1
                 ORDER BY at, approver",
            )?;
            let rows = stmt.query_map([request_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<(String, String, String, String, i64)>>>()
        })?;
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

impl Store for SqliteStore {
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
        let approvers =
            serde_json::to_string(&g.approvers).map_err(|e| StoreError::Database(e.to_string()))?;
        self.with_conn(|c| {
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
        })
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
        // One statement: the check and the increment cannot be split by another writer, and RETURNING re-reads
        // the row as this statement left it. In SET, `uses` is the value before the update.
        let row = self.with_conn(|c| {
            c.query_row(
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
        })?;
        row.map(RawGrant::decode).transpose()
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

/// Where an access request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for approvers.
    Pending,
    /// Approved: a grant was (or will be) issued.
    Approved,
    /// Denied by an approver or a policy.
    Denied,
    /// Nobody decided before its pending TTL ran out.
    Expired,
    /// Withdrawn by its requester.
    Cancelled,
}

impl RequestState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Expired => "expired",
            RequestState::Cancelled => "cancelled",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RequestState::Pending,
            "approved" => RequestState::Approved,
            "denied" => RequestState::Denied,
            "expired" => RequestState::Expired,
            "cancelled" => RequestState::Cancelled,
            _ => return None,
        })
    }
}

/// Someone's request for a time-bound elevation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// Unique id.
    pub id: String,
    /// Who asks.
    pub requester: EntityRef,
    /// The role asked for.
    pub role: String,
    /// The resource subtree asked for.
    pub scope: EntityRef,
    /// How long the grant should last, in seconds.
    pub duration_secs: i64,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// A change/incident ticket reference.
    #[serde(default)]
    pub ticket: Option<String>,
    /// When the grant should start (`None`: on approval).
    #[serde(default)]
    pub starts_at: Option<UnixTime>,
    /// Lifecycle state.
    pub state: RequestState,
    /// When it was made.
    pub created_at: UnixTime,
    /// When a still-pending request expires (its pending TTL).
    pub expires_at: UnixTime,
    /// When it left `pending`.
    #[serde(default)]
    pub decided_at: Option<UnixTime>,
    /// For a held request (role `hold`): the digest of the one exact request an approval lets through.
    #[serde(default)]
    pub request_digest: Option<String>,
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

/// Which access requests to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    /// Only this requester's.
    pub requester: Option<EntityRef>,
    /// Only in this state.
    pub state: Option<RequestState>,
    /// Only for this role.
    pub role: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

impl Verdict {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(Verdict::Approve),
            "deny" => Some(Verdict::Deny),
            _ => None,
        }
    }
}

/// One approver's verdict on one access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The access request.
    pub request_id: String,
    /// Who decided (an entity reference in its printed form, or `policy`).
    pub approver: String,
    /// Approve or deny.
    pub verdict: Verdict,
    /// Free text.
    #[serde(default)]
    pub comment: String,
    /// When.
    pub at: UnixTime,
}
