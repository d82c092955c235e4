//! The PostgreSQL schema, one entry per version, and how it is applied: under a session advisory lock, so that
//! N replicas starting at once apply each version exactly once, each version in its own transaction (nothing is
//! ever half-migrated), and never over a schema newer than this build knows.

use postgres::Client;

use super::{describe, pg_err};
use crate::store::StoreError;

/// The table that records which of [`MIGRATIONS`] the schema has.
const VERSION_TABLE: &str = "jitgate_schema_version";

/// The advisory lock's first key ("jg"); the second is the hash of the schema's name, so that stores in
/// different schemas of one database migrate independently.
const LOCK_CLASS: i32 = 0x6a67;

/// The schema, one entry per version. Never edit a shipped entry: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: grants, access requests (held ones bound to a digest), approvals, and the notifications every replica
    // follows: `<kind> <epoch ms> <id>` on channel `jitgate_<schema>`, sent when the row's transaction commits.
    r#"
    CREATE TABLE grants (
        id             TEXT PRIMARY KEY,
        principal      TEXT NOT NULL,
        role           TEXT NOT NULL,
        scope          TEXT NOT NULL,
        starts_at      BIGINT NOT NULL,
        expires_at     BIGINT NOT NULL,
        max_uses       BIGINT,
        uses           BIGINT NOT NULL DEFAULT 0,
        status         TEXT NOT NULL CHECK (status IN ('active', 'revoked', 'consumed')),
        approvers      TEXT NOT NULL DEFAULT '[]',
        reason         TEXT NOT NULL DEFAULT '',
        break_glass    BOOLEAN NOT NULL DEFAULT FALSE,
        request_digest TEXT,
        request_id     TEXT,
        revoked_by     TEXT,
        revoked_at     BIGINT
    );
    CREATE INDEX grants_principal ON grants (principal);
    CREATE INDEX grants_live ON grants (status, expires_at);

    CREATE TABLE access_requests (
        id             TEXT PRIMARY KEY,
        requester      TEXT NOT NULL,
        role           TEXT NOT NULL,
        scope          TEXT NOT NULL,
        duration_secs  BIGINT NOT NULL CHECK (duration_secs > 0),
        reason         TEXT NOT NULL DEFAULT '',
        ticket         TEXT,
        starts_at      BIGINT,
        state          TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
        created_at     BIGINT NOT NULL,
        expires_at     BIGINT NOT NULL,
        decided_at     BIGINT,
        request_digest TEXT
    );
    CREATE INDEX access_requests_requester ON access_requests (requester, created_at);
    CREATE INDEX access_requests_state ON access_requests (state, created_at);

    CREATE TABLE approvals (
        request_id TEXT NOT NULL REFERENCES access_requests (id) ON DELETE CASCADE,
        approver   TEXT NOT NULL,
        verdict    TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
        comment    TEXT NOT NULL DEFAULT '',
        at         BIGINT NOT NULL,
        PRIMARY KEY (request_id, approver)
    );

    CREATE FUNCTION jitgate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('jitgate_' || TG_TABLE_SCHEMA,
            TG_ARGV[0] || ' ' || (extract(epoch FROM clock_timestamp()) * 1000)::bigint || ' ' || NEW.id);
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER grants_notify AFTER INSERT OR UPDATE ON grants
        FOR EACH ROW EXECUTE FUNCTION jitgate_notify('g');
    CREATE TRIGGER access_requests_notify AFTER INSERT OR UPDATE ON access_requests
        FOR EACH ROW EXECUTE FUNCTION jitgate_notify('r');
    "#,
    // 2: the decision records every replica's shipper copies from its local log, keyed by replica and seq (a copy
    // is idempotent); `record` is the sealed record as the replica wrote it, the other columns are read from it for
    // filtering (verification checks they agree). `decision_heads` is each replica's newest shipped record, so a
    // cut-off tail is seen.
    r#"
    CREATE TABLE decision_records (
        replica     TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        time        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        principal   TEXT NOT NULL,
        action      TEXT NOT NULL,
        resource    TEXT NOT NULL,
        decision    TEXT,
        request_id  TEXT,
        revision    TEXT NOT NULL,
        grants_used TEXT[] NOT NULL,
        record      TEXT NOT NULL,
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL,
        shipped_at  BIGINT NOT NULL,
        PRIMARY KEY (replica, seq)
    );
    CREATE INDEX decision_records_time ON decision_records (time);
    CREATE INDEX decision_records_principal ON decision_records (principal, time);

    CREATE TABLE decision_heads (
        replica    TEXT PRIMARY KEY,
        seq        BIGINT NOT NULL,
        hash       TEXT NOT NULL,
        shipped_at BIGINT NOT NULL
    );
    "#,
    // 3: the signed anchors every replica's shipper copies from its anchors file, keyed by replica and the anchor's
    // place in that file (`n`, from 1: two anchors may sign the same seq, at a shutdown and the next start), so a
    // copy is idempotent. `anchor` is the anchor's JSON as signed; `seq` and `hash` are read from it.
    r#"
    CREATE TABLE decision_anchors (
        replica    TEXT NOT NULL,
        n          BIGINT NOT NULL,
        seq        BIGINT NOT NULL,
        anchor     TEXT NOT NULL,
        hash       TEXT NOT NULL,
        shipped_at BIGINT NOT NULL,
        PRIMARY KEY (replica, n)
    );
    "#,
    // 4: entity data kept in the store (Cedar JSON entity format, as accepted), one row per uid. A write announces
    // `e <epoch ms> *` once per statement: every replica reloads the (small) entity data whole.
    r#"
    CREATE TABLE entities (
        etype      TEXT NOT NULL,
        eid        TEXT NOT NULL,
        data       TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (etype, eid)
    );

    CREATE FUNCTION jitgate_notify_entities() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('jitgate_' || TG_TABLE_SCHEMA,
            'e ' || (extract(epoch FROM clock_timestamp()) * 1000)::bigint || ' *');
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER entities_notify AFTER INSERT OR UPDATE OR DELETE ON entities
        FOR EACH STATEMENT EXECUTE FUNCTION jitgate_notify_entities();
    "#,
    // 5: the decision records' indexed text columns compare byte by byte (`COLLATE "C"`) instead of by the
    // database's locale: every shipped record descends three b-trees keyed by replica, time and principal, and
    // a locale comparison (`strcoll`) costs several times a `memcmp`. Times are fixed-width ASCII and replica ids
    // and principals are compared for equality, so no query's answer changes (`ORDER BY replica` is byte order
    // now, the same as `C.UTF-8`'s code-point order). `replica` changes in every table that has it, so joins and
    // unions between them keep one collation. Indexes are rebuilt; rows are not rewritten.
    r#"
    ALTER TABLE decision_records
        ALTER COLUMN replica TYPE TEXT COLLATE "C",
        ALTER COLUMN time TYPE TEXT COLLATE "C",
        ALTER COLUMN principal TYPE TEXT COLLATE "C";
    ALTER TABLE decision_heads ALTER COLUMN replica TYPE TEXT COLLATE "C";
    ALTER TABLE decision_anchors ALTER COLUMN replica TYPE TEXT COLLATE "C";
    "#,
    // 6: shipped decision records kept in segments, one row per run of up to 1,000 consecutive records of a
    // replica: `records` holds their JSON, one record a line, as the replica wrote them (compressed with lz4 where
    // the server has it: the lines of a segment share most of their text). A row per record cost the server about
    // 20 µs of CPU and a kilobyte of WAL for each request a replica served; a segment costs about 1 µs a record.
    // The other columns summarize the segment for finding it (a principal, a grant, a kind, a time range) and are
    // checked against its records by verification; a query reads the segments that may hold matches and filters
    // their records. Segments of a replica never overlap, and a record's place is the segment's `first_seq` plus its
    // line (it holds `count` of them). Existing records move into segments (runs of consecutive seqs, 1,000 at
    // most), then their table goes.
    r#"
    CREATE TABLE decision_segments (
        replica    TEXT COLLATE "C" NOT NULL,
        first_seq  BIGINT NOT NULL,
        count      INTEGER NOT NULL CHECK (count >= 1),
        min_time   TEXT COLLATE "C" NOT NULL,
        max_time   TEXT COLLATE "C" NOT NULL,
        principals TEXT[] NOT NULL,
        grants     TEXT[] NOT NULL,
        kinds      TEXT[] NOT NULL,
        prev_hash  TEXT NOT NULL,
        hash       TEXT NOT NULL,
        records    TEXT NOT NULL,
        shipped_at BIGINT NOT NULL,
        PRIMARY KEY (replica, first_seq)
    );
    CREATE INDEX decision_segments_principals ON decision_segments USING gin (principals);
    CREATE INDEX decision_segments_grants ON decision_segments USING gin (grants);
    CREATE INDEX decision_segments_time ON decision_segments (max_time);
    DO $$ BEGIN
        ALTER TABLE decision_segments ALTER COLUMN records SET COMPRESSION lz4;
    EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
        NULL;
    END $$;

    INSERT INTO decision_segments (replica, first_seq, count, min_time, max_time, principals, grants,
        kinds, prev_hash, hash, records, shipped_at)
    WITH runs AS (
        SELECT *, seq - ROW_NUMBER() OVER (PARTITION BY replica ORDER BY seq) AS run
        FROM decision_records
    ), parts AS (
        SELECT *, (ROW_NUMBER() OVER (PARTITION BY replica, run ORDER BY seq) - 1) / 1000 AS part
        FROM runs
    )
    SELECT replica, MIN(seq), COUNT(*)::INTEGER, MIN(time), MAX(time),
        array_agg(DISTINCT principal),
        COALESCE((SELECT array_agg(DISTINCT g) FROM parts q, unnest(q.grants_used) g
                  WHERE q.replica = p.replica AND q.run = p.run AND q.part = p.part), '{}'),
        array_agg(DISTINCT kind),
        (array_agg(prev_hash ORDER BY seq))[1],
        (array_agg(hash ORDER BY seq DESC))[1],
        string_agg(record, E'\n' ORDER BY seq),
        MAX(shipped_at)
    FROM parts p
    GROUP BY replica, run, part;

    DROP TABLE decision_records;
    "#,
];

/// The schema version this build knows (a fully migrated store has it).
pub fn known_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version the schema had before.
    pub from: i64,
    /// The version it has now.
    pub to: i64,
}

/// Brings the schema of `client`'s database (its `search_path`'s first schema) up to [`known_version`], holding
/// the schema's advisory lock throughout. A schema newer than this build is refused and left as it is.
pub(crate) fn migrate(client: &mut Client) -> Result<Migrated, StoreError> {
    client
        .execute(
            "SELECT pg_advisory_lock($1, hashtext(current_schema()))",
            &[&LOCK_CLASS],
        )
        .map_err(|e| pg_err("cannot take the migration lock", e))?;
    let out = migrate_locked(client);
    // Released with the session too, should this fail: a dead connection never keeps the lock.
    let _ = client.execute(
        "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
        &[&LOCK_CLASS],
    );
    out
}

fn migrate_locked(client: &mut Client) -> Result<Migrated, StoreError> {
    migrate_locked_to(client, known_version())
}

/// Brings the schema up to version `to` (tests: a store as an older jitgate left it).
#[cfg(test)]
pub(crate) fn migrate_to(client: &mut Client, to: i64) -> Result<Migrated, StoreError> {
    migrate_locked_to(client, to)
}

fn migrate_locked_to(client: &mut Client, to: i64) -> Result<Migrated, StoreError> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)"
        ))
        .map_err(|e| pg_err("cannot create the version table", e))?;
    let from = current_version(client)?;
    let known = known_version();
    if from > known {
        return Err(StoreError::database(
            "",
            format!(
                "the store's schema is at version {from}, newer than this jitgate knows (version {known}): \
                 run the jitgate that migrated it, or a newer one"
            ),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= from || version > to {
            continue;
        }
        let mut tx = client.transaction().map_err(|e| pg_err("", e))?;
        tx.batch_execute(sql).map_err(|e| {
            StoreError::database(
                format!("schema migration {version} failed (nothing of it was applied)"),
                describe(&e),
            )
        })?;
        tx.execute(
            &format!("INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES ($1, $2)"),
            &[&version, &crate::clock::now_system()],
        )
        .map_err(|e| pg_err("", e))?;
        tx.commit().map_err(|e| pg_err("", e))?;
    }
    Ok(Migrated {
        from,
        to: to.min(known).max(from),
    })
}

/// The schema version recorded in the database (0: none).
pub(crate) fn current_version(client: &mut Client) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0)::BIGINT FROM {VERSION_TABLE}"),
            &[],
        )
        .map_err(|e| pg_err("cannot read the schema version", e))?;
    row.try_get(0).map_err(|e| pg_err("", e))
}

/// The schema version recorded in the database, 0 when it has no version table (nothing was ever migrated).
pub(crate) fn current_version_if_any(client: &mut Client) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
               WHERE table_schema = current_schema() AND table_name = $1)",
            &[&VERSION_TABLE],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| pg_err("cannot read the schema version", e))?;
    if exists {
        current_version(client)
    } else {
        Ok(0)
    }
}
