//! The shared [`Store`](crate::store::Store) for several replicas: grants, access requests and approvals in
//! PostgreSQL, through the synchronous `postgres` client (the store traits are synchronous and are called off the
//! async workers). Every write commits before it returns; what must be exact across replicas (spending a use,
//! deciding a request) is one statement or one transaction checked inside the database. Each committed change is
//! announced with NOTIFY (see [`migrate`]); [`follow`] keeps a replica's grant index up to date from it.

pub mod decisions;
pub mod follow;
pub mod migrate;
mod pool;
pub mod scratch;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{GenericClient, Row};

pub use migrate::{Migrated, known_version};
pub use pool::redact_url;

use crate::access::{AccessRequest, Approval, RequestFilter, RequestState, Verdict};
use crate::clock::UnixTime;
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::store::{
    EntityStore, GrantStore, PendingInsert, RecordedVerdict, RequestStore, Spent, StoreError,
    StoredEntity, VerdictError, VerdictWrite, issued_grant, verdict_effect,
};

/// Connections one store keeps at most (the replica's share of the server's `max_connections`).
const POOL_SIZE: usize = 16;

/// A driver error as one line: the server's message (with its detail) for a database error, else the error and
/// its causes.
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

pub(crate) fn pg_err(context: &str, e: postgres::Error) -> StoreError {
    StoreError::database(context, describe(&e))
}

fn db(e: postgres::Error) -> StoreError {
    pg_err("", e)
}

/// Checks a store URL without connecting: the message says what is wrong with it.
pub fn check_url(url: &str) -> Result<(), String> {
    match pool::Connector::new(url) {
        Ok(_) => Ok(()),
        Err(StoreError::Database { source, .. }) => Err(source.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Timings of the store's calls, for metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Their total time in microseconds.
    pub micros: AtomicU64,
    /// Calls that failed.
    pub errors: AtomicU64,
}

/// Grants, access requests and approvals in PostgreSQL, shared by every replica. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PgStore {
    pool: pool::Pool,
    /// The notification channel of this store's schema.
    channel: String,
    stats: Arc<StoreStats>,
}

impl PgStore {
    /// Connects to `url` (see the module docs for TLS), brings the schema up to date under an advisory lock and
    /// returns the store. Fails with the cause when the URL is malformed, the server unreachable, the database
    /// missing, the password wrong, or the schema newer than this build.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let (store, _) = Self::open_migrated(url)?;
        Ok(store)
    }

    /// [`PgStore::open`], also saying which versions the schema went from and to.
    pub fn open_migrated(url: &str) -> Result<(PgStore, Migrated), StoreError> {
        let connector = pool::Connector::new(url)?;
        let (migrated, schema) = connector.session(|first| {
            let migrated = migrate::migrate(first)?;
            let schema: String = first
                .query_one("SELECT current_schema()::text", &[])
                .and_then(|r| r.try_get(0))
                .map_err(|e| pg_err("cannot read the current schema", e))?;
            Ok((migrated, schema))
        })?;
        let pool = pool::Pool::new(connector, POOL_SIZE);
        Ok((
            PgStore {
                pool,
                channel: format!("jitgate_{schema}"),
                stats: Arc::default(),
            },
            migrated,
        ))
    }

    /// The URL, its password masked.
    pub fn url(&self) -> &str {
        &self.pool.connector().shown
    }

    /// The channel this store's changes are announced on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Call timings.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.pool.with(migrate::current_version)
    }

    /// A connection of its own (not from the pool), e.g. to LISTEN on.
    pub(crate) fn connect_dedicated(&self) -> Result<postgres::Client, StoreError> {
        self.pool.connector().connect()
    }

    /// Runs `f` on a pooled connection, timing it.
    fn run<T: Send, E: From<StoreError> + Send>(
        &self,
        f: impl FnMut(&mut postgres::Client) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        let start = Instant::now();
        let out = self.pool.with(f);
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.micros.fetch_add(micros, Ordering::Relaxed);
        if out.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        out
    }
}

const GRANT_COLS: &str = "id, principal, role, scope, starts_at, expires_at, max_uses, uses, status, approvers, \
                          reason, break_glass, request_digest, request_id";

const REQUEST_COLS: &str = "id, requester, role, scope, duration_secs, reason, ticket, starts_at, state, created_at, \
                            expires_at, decided_at, request_digest";

fn corrupt(table: &'static str, reason: String) -> StoreError {
    StoreError::Corrupt { table, reason }
}

fn parse_entity(table: &'static str, field: &str, s: &str) -> Result<EntityRef, StoreError> {
    EntityRef::from_str(s).map_err(|e| corrupt(table, format!("{field}: {e}")))
}

fn grant_from(r: &Row) -> Result<Grant, StoreError> {
    const T: &str = "grants";
    let id: String = r.try_get(0).map_err(db)?;
    let count = |field: &str, v: i64| {
        u32::try_from(v).map_err(|_| corrupt(T, format!("grant `{id}`: {field} {v} out of range")))
    };
    let status: String = r.try_get(8).map_err(db)?;
    let approvers: String = r.try_get(9).map_err(db)?;
    Ok(Grant {
        principal: parse_entity(T, "principal", &r.try_get::<_, String>(1).map_err(db)?)?,
        role: r.try_get(2).map_err(db)?,
        scope: parse_entity(T, "scope", &r.try_get::<_, String>(3).map_err(db)?)?,
        starts_at: r.try_get(4).map_err(db)?,
        expires_at: r.try_get(5).map_err(db)?,
        max_uses: r
            .try_get::<_, Option<i64>>(6)
            .map_err(db)?
            .map(|m| count("max_uses", m))
            .transpose()?,
        uses: count("uses", r.try_get(7).map_err(db)?)?,
        status: GrantStatus::parse(&status)
            .ok_or_else(|| corrupt(T, format!("grant `{id}`: unknown status `{status}`")))?,
        approvers: serde_json::from_str(&approvers)
            .map_err(|e| corrupt(T, format!("grant `{id}`: approvers: {e}")))?,
        reason: r.try_get(10).map_err(db)?,
        break_glass: r.try_get(11).map_err(db)?,
        request_digest: r.try_get(12).map_err(db)?,
        request_id: r.try_get(13).map_err(db)?,
        id,
    })
}

fn request_from(r: &Row) -> Result<AccessRequest, StoreError> {
    const T: &str = "access_requests";
    let id: String = r.try_get(0).map_err(db)?;
    let state: String = r.try_get(8).map_err(db)?;
    Ok(AccessRequest {
        requester: parse_entity(T, "requester", &r.try_get::<_, String>(1).map_err(db)?)?,
        role: r.try_get(2).map_err(db)?,
        scope: parse_entity(T, "scope", &r.try_get::<_, String>(3).map_err(db)?)?,
        duration_secs: r.try_get(4).map_err(db)?,
        reason: r.try_get(5).map_err(db)?,
        ticket: r.try_get(6).map_err(db)?,
        starts_at: r.try_get(7).map_err(db)?,
        state: RequestState::parse(&state)
            .ok_or_else(|| corrupt(T, format!("request `{id}`: unknown state `{state}`")))?,
        created_at: r.try_get(9).map_err(db)?,
        expires_at: r.try_get(10).map_err(db)?,
        decided_at: r.try_get(11).map_err(db)?,
        request_digest: r.try_get(12).map_err(db)?,
        id,
    })
}

fn upsert_grant(c: &mut impl GenericClient, g: &Grant) -> Result<(), StoreError> {
    let approvers = serde_json::to_string(&g.approvers)
        .map_err(|e| StoreError::database("cannot encode approvers", e))?;
    let principal = g.principal.to_string();
    let scope = g.scope.to_string();
    let max_uses = g.max_uses.map(i64::from);
    let uses = i64::from(g.uses);
    let params: [&(dyn ToSql + Sync); 14] = [
        &g.id,
        &principal,
        &g.role,
        &scope,
        &g.starts_at,
        &g.expires_at,
        &max_uses,
        &uses,
        &g.status.as_str(),
        &approvers,
        &g.reason,
        &g.break_glass,
        &g.request_digest,
        &g.request_id,
    ];
    c.execute(
        "INSERT INTO grants
           (id, principal, role, scope, starts_at, expires_at, max_uses, uses, status, approvers, reason,
            break_glass, request_digest, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (id) DO UPDATE SET
           principal = excluded.principal, role = excluded.role, scope = excluded.scope,
           starts_at = excluded.starts_at, expires_at = excluded.expires_at, max_uses = excluded.max_uses,
           uses = excluded.uses, status = excluded.status, approvers = excluded.approvers,
           reason = excluded.reason, break_glass = excluded.break_glass,
           request_digest = excluded.request_digest, request_id = excluded.request_id",
        &params,
    )
    .map(|_| ())
    .map_err(db)
}

fn upsert_request(c: &mut impl GenericClient, r: &AccessRequest) -> Result<(), StoreError> {
    let requester = r.requester.to_string();
    let scope = r.scope.to_string();
    let params: [&(dyn ToSql + Sync); 13] = [
        &r.id,
        &requester,
        &r.role,
        &scope,
        &r.duration_secs,
        &r.reason,
        &r.ticket,
        &r.starts_at,
        &r.state.as_str(),
        &r.created_at,
        &r.expires_at,
        &r.decided_at,
        &r.request_digest,
    ];
    c.execute(
        "INSERT INTO access_requests
           (id, requester, role, scope, duration_secs, reason, ticket, starts_at, state, created_at,
            expires_at, decided_at, request_digest)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (id) DO UPDATE SET
           requester = excluded.requester, role = excluded.role, scope = excluded.scope,
           duration_secs = excluded.duration_secs, reason = excluded.reason, ticket = excluded.ticket,
           starts_at = excluded.starts_at, state = excluded.state, created_at = excluded.created_at,
           expires_at = excluded.expires_at, decided_at = excluded.decided_at,
           request_digest = excluded.request_digest",
        &params,
    )
    .map(|_| ())
    .map_err(db)
}

fn request_in(
    c: &mut impl GenericClient,
    id: &str,
    lock: bool,
) -> Result<Option<AccessRequest>, StoreError> {
    let sql = format!(
        "SELECT {REQUEST_COLS} FROM access_requests WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    c.query_opt(&sql, &[&id])
        .map_err(db)?
        .as_ref()
        .map(request_from)
        .transpose()
}

fn approvals_in(c: &mut impl GenericClient, request_id: &str) -> Result<Vec<Approval>, StoreError> {
    let rows = c
        .query(
            "SELECT request_id, approver, verdict, comment, at FROM approvals WHERE request_id = $1
             ORDER BY at, approver COLLATE \"C\"",
            &[&request_id],
        )
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            let verdict: String = r.try_get(2).map_err(db)?;
            Ok(Approval {
                request_id: r.try_get(0).map_err(db)?,
                approver: r.try_get(1).map_err(db)?,
                verdict: Verdict::parse(&verdict)
                    .ok_or_else(|| corrupt("approvals", format!("unknown verdict `{verdict}`")))?,
                comment: r.try_get(3).map_err(db)?,
                at: r.try_get(4).map_err(db)?,
            })
        })
        .collect()
}

fn insert_approval(c: &mut impl GenericClient, a: &Approval) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO approvals (request_id, approver, verdict, comment, at) VALUES ($1, $2, $3, $4, $5)",
        &[&a.request_id, &a.approver, &a.verdict.as_str(), &a.comment, &a.at],
    )
    .map(|_| ())
}

/// Takes one use of grant `id` if it is active at `now` and has one left: one statement, so the check and the
/// increment cannot be split by another replica (the row lock orders them; the second re-checks the row as the
/// first left it). In SET, `uses` is the value before the update.
fn consume_in(
    c: &mut impl GenericClient,
    id: &str,
    now: UnixTime,
) -> Result<Option<Grant>, StoreError> {
    c.query_opt(
        &format!(
            "UPDATE grants SET
               uses = uses + 1,
               status = CASE WHEN max_uses IS NOT NULL AND uses + 1 >= max_uses THEN 'consumed'
                             ELSE status END
             WHERE id = $1 AND status = 'active' AND starts_at <= $2 AND expires_at > $2
               AND (max_uses IS NULL OR uses < max_uses)
             RETURNING {GRANT_COLS}"
        ),
        &[&id, &now],
    )
    .map_err(db)?
    .as_ref()
    .map(grant_from)
    .transpose()
}

fn get_grant_in(c: &mut impl GenericClient, id: &str) -> Result<Option<Grant>, StoreError> {
    c.query_opt(
        &format!("SELECT {GRANT_COLS} FROM grants WHERE id = $1"),
        &[&id],
    )
    .map_err(db)?
    .as_ref()
    .map(grant_from)
    .transpose()
}

impl EntityStore for PgStore {
    fn load_entities(&self) -> Result<Vec<StoredEntity>, StoreError> {
        self.run(|c| {
            let rows = c
                .query(
                    "SELECT etype, eid, data, updated_at FROM entities
                     ORDER BY etype COLLATE \"C\", eid COLLATE \"C\"",
                    &[],
                )
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    crate::store::stored_entity(
                        r.try_get(0).map_err(db)?,
                        r.try_get(1).map_err(db)?,
                        r.try_get::<_, &str>(2).map_err(db)?,
                        r.try_get(3).map_err(db)?,
                    )
                })
                .collect()
        })
    }

    fn put_entities(&self, entities: &[StoredEntity]) -> Result<(), StoreError> {
        self.run(|c| {
            let mut tx = c.transaction().map_err(db)?;
            // One statement for the batch, so replicas hear of it once.
            let types: Vec<&str> = entities.iter().map(|e| e.uid.ty.as_str()).collect();
            let ids: Vec<&str> = entities.iter().map(|e| e.uid.id.as_str()).collect();
            let data: Vec<String> = entities.iter().map(|e| e.data.to_string()).collect();
            let at: Vec<i64> = entities.iter().map(|e| e.updated_at).collect();
            tx.execute(
                "INSERT INTO entities (etype, eid, data, updated_at)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
                 ON CONFLICT (etype, eid) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                &[&types, &ids, &data, &at],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
    }

    fn delete_entities(&self, uids: &[EntityRef]) -> Result<usize, StoreError> {
        self.run(|c| {
            let types: Vec<&str> = uids.iter().map(|u| u.ty.as_str()).collect();
            let ids: Vec<&str> = uids.iter().map(|u| u.id.as_str()).collect();
            let n = c
                .execute(
                    "DELETE FROM entities e USING UNNEST($1::text[], $2::text[]) AS d (etype, eid)
                     WHERE e.etype = d.etype AND e.eid = d.eid",
                    &[&types, &ids],
                )
                .map_err(db)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

impl GrantStore for PgStore {
    fn load_grants(&self, now: UnixTime) -> Result<Vec<Grant>, StoreError> {
        self.run(|c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {GRANT_COLS} FROM grants WHERE status = 'active' AND expires_at > $1
                         ORDER BY id COLLATE \"C\""
                    ),
                    &[&now],
                )
                .map_err(db)?;
            rows.iter().map(grant_from).collect()
        })
    }

    fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.run(|c| upsert_grant(c, grant))
    }

    fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        self.run(|c| get_grant_in(c, id))
    }

    fn consume_use(&self, id: &str, now: UnixTime) -> Result<Option<Grant>, StoreError> {
        self.run(|c| consume_in(c, id, now))
    }

    fn consume_uses(&self, ids: &[&str], now: UnixTime) -> Result<Spent, StoreError> {
        // Rows are locked in id order, so two decisions resting on the same grants cannot deadlock.
        let mut sorted: Vec<&str> = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        self.run(|c| {
            let mut tx = c.transaction().map_err(db)?;
            let mut spent = Vec::with_capacity(sorted.len());
            for id in &sorted {
                match consume_in(&mut tx, id, now)? {
                    Some(g) => spent.push(g),
                    // Dropping the transaction rolls back the uses already taken.
                    None => return Ok(Spent::Lost((*id).to_string())),
                }
            }
            tx.commit().map_err(db)?;
            Ok(Spent::All(spent))
        })
    }

    fn revoke_grant(&self, id: &str, by: &str, at: UnixTime) -> Result<Option<Grant>, StoreError> {
        self.run(|c| {
            let row = c
                .query_opt(
                    &format!(
                        "UPDATE grants SET status = 'revoked', revoked_by = $2, revoked_at = $3
                         WHERE id = $1 AND status = 'active' RETURNING {GRANT_COLS}"
                    ),
                    &[&id, &by, &at],
                )
                .map_err(db)?;
            match row {
                Some(r) => grant_from(&r).map(Some),
                // Already revoked or consumed: nothing to change, report its state as it is.
                None => get_grant_in(c, id),
            }
        })
    }
}

impl RequestStore for PgStore {
    fn put_access_request(&self, request: &AccessRequest) -> Result<(), StoreError> {
        self.run(|c| upsert_request(c, request))
    }

    fn insert_within_pending_cap(
        &self,
        r: &AccessRequest,
        max_pending: u32,
    ) -> Result<bool, StoreError> {
        let requester = r.requester.to_string();
        self.run(|c| {
            let mut tx = c.transaction().map_err(db)?;
            // One requester's inserts are serialized across replicas by a lock on its name, so no other insert
            // comes between the count and this one.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('jitgate-pending:' || $1::text))",
                &[&requester],
            )
            .map_err(db)?;
            let pending: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM access_requests
                     WHERE requester = $1 AND state = 'pending' AND expires_at > $2",
                    &[&requester, &r.created_at],
                )
                .and_then(|row| row.try_get(0))
                .map_err(db)?;
            if pending >= i64::from(max_pending) {
                return Ok(false);
            }
            upsert_request(&mut tx, r)?;
            tx.commit().map_err(db)?;
            Ok(true)
        })
    }

    fn insert_pending_or_reuse(
        &self,
        r: &AccessRequest,
        max_pending: u32,
    ) -> Result<PendingInsert, StoreError> {
        let requester = r.requester.to_string();
        self.run(|c| {
            let mut tx = c.transaction().map_err(db)?;
            // The same per-requester lock as `insert_within_pending_cap`: look-up, count and insert are serialized
            // across replicas, so of concurrent retries of one hold exactly one inserts.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('jitgate-pending:' || $1::text))",
                &[&requester],
            )
            .map_err(db)?;
            if let Some(digest) = &r.request_digest {
                let sql = format!(
                    "SELECT {REQUEST_COLS} FROM access_requests
                     WHERE requester = $1 AND role = $2 AND request_digest = $3 AND state = 'pending'
                       AND expires_at > $4
                     ORDER BY created_at DESC, id LIMIT 1"
                );
                let existing = tx
                    .query_opt(&sql, &[&requester, &r.role, digest, &r.created_at])
                    .map_err(db)?;
                if let Some(row) = existing {
                    return Ok(PendingInsert::Existing(Box::new(request_from(&row)?)));
                }
            }
            let pending: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM access_requests
                     WHERE requester = $1 AND state = 'pending' AND expires_at > $2",
                    &[&requester, &r.created_at],
                )
                .and_then(|row| row.try_get(0))
                .map_err(db)?;
            if pending >= i64::from(max_pending) {
                return Ok(PendingInsert::CapReached);
            }
            upsert_request(&mut tx, r)?;
            tx.commit().map_err(db)?;
            Ok(PendingInsert::Inserted)
        })
    }

    fn get_access_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        self.run(|c| request_in(c, id, false))
    }

    fn list_access_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let requester = filter.requester.as_ref().map(|r| r.to_string());
        let state = filter.state.map(RequestState::as_str);
        let limit = filter.limit.map(i64::from);
        let after_at = filter.after.as_ref().map(|(at, _)| *at);
        let after_id = filter.after.as_ref().map(|(_, id)| id.as_str());
        self.run(|c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {REQUEST_COLS} FROM access_requests
                         WHERE ($1::text IS NULL OR requester = $1) AND ($2::text IS NULL OR state = $2)
                           AND ($3::text IS NULL OR role = $3)
                           AND ($5::bigint IS NULL OR created_at < $5
                                OR (created_at = $5 AND id COLLATE \"C\" > $6::text COLLATE \"C\"))
                         ORDER BY created_at DESC, id COLLATE \"C\" LIMIT $4"
                    ),
                    &[&requester, &state, &filter.role, &limit, &after_at, &after_id],
                )
                .map_err(db)?;
            rows.iter().map(request_from).collect()
        })
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
        self.run(|c| {
            c.execute(
                "UPDATE access_requests SET state = $3, decided_at = $4 WHERE id = $1 AND state = $2",
                &[&id, &from.as_str(), &to.as_str(), &at],
            )
            .map(|n| n == 1)
            .map_err(db)
        })
    }

    fn add_approval(&self, a: &Approval) -> Result<(), StoreError> {
        self.run(|c| match insert_approval(c, a) {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => Err(
                StoreError::NotFound(format!("access request `{}`", a.request_id)),
            ),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::Conflict(format!(
                    "`{}` already gave a verdict on access request `{}`",
                    a.approver, a.request_id
                )))
            }
            Err(e) => Err(db(e)),
        })
    }

    fn approvals_for(&self, request_id: &str) -> Result<Vec<Approval>, StoreError> {
        self.run(|c| approvals_in(c, request_id))
    }

    fn record_verdict(&self, write: &VerdictWrite) -> Result<RecordedVerdict, VerdictError> {
        let a = &write.approval;
        self.run(|c| {
            let mut tx = c.transaction().map_err(db)?;
            // FOR UPDATE: a concurrent verdict on this request (on any replica) waits here until this one commits,
            // then reads the request as this one left it.
            let mut request = request_in(&mut tx, &a.request_id, true)?
                .ok_or_else(|| VerdictError::NotFound(a.request_id.clone()))?;
            let before = approvals_in(&mut tx, &a.request_id)?;
            let moved = verdict_effect(&request, &before, write)?;
            insert_approval(&mut tx, a).map_err(db)?;
            let approvals = approvals_in(&mut tx, &a.request_id)?;
            let mut grant = None;
            if let Some(to) = moved {
                if to == RequestState::Approved {
                    // The grant first: a replica told of the approved request finds its grant already there.
                    let g = issued_grant(&write.grant, &approvals);
                    upsert_grant(&mut tx, &g)?;
                    grant = Some(g);
                }
                let n = tx
                    .execute(
                        "UPDATE access_requests SET state = $3, decided_at = $4 WHERE id = $1 AND state = $2",
                        &[&request.id, &RequestState::Pending.as_str(), &to.as_str(), &a.at],
                    )
                    .map_err(db)?;
                if n != 1 {
                    // Cannot happen under the row lock; refuse rather than commit half a verdict.
                    return Err(VerdictError::NotPending {
                        id: request.id,
                        state: request.state,
                    });
                }
                request.state = to;
                request.decided_at = Some(a.at);
            }
            tx.commit().map_err(db)?;
            Ok(RecordedVerdict {
                request,
                approvals,
                grant,
            })
        })
    }
}
