//! Throwaway stores for tests against a real PostgreSQL: a schema of its own with a unique name, dropped when the
//! [`Scratch`] is. Tests run when `JITGATE_TEST_POSTGRES` holds a server URL ([`test_url`]) and say plainly that
//! they were skipped otherwise.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{describe, pool::Connector};
use crate::store::StoreError;

/// The variable that names the PostgreSQL server tests may use (e.g. `postgres://postgres@127.0.0.1:5432/test`).
pub const TEST_ENV: &str = "JITGATE_TEST_POSTGRES";

/// The test server's URL, or `None` after printing `skipped: JITGATE_TEST_POSTGRES not set` for `test`.
pub fn test_url(test: &str) -> Option<String> {
    match std::env::var(TEST_ENV) {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            println!("{test}: skipped: {TEST_ENV} not set");
            None
        }
    }
}

/// A schema of its own on a server; dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct Scratch {
    base: String,
    schema: String,
}

static N: AtomicUsize = AtomicUsize::new(0);

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

impl Scratch {
    /// Creates a fresh schema on the server at `base` (named after `tag`, the process and a counter).
    pub fn new(base: &str, tag: &str) -> Result<Scratch, StoreError> {
        let schema = format!(
            "jg_{}_{}_{}",
            tag.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(20)
                .collect::<String>()
                .to_ascii_lowercase(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Connector::new(base)?.session(|c| {
            c.batch_execute(&format!("CREATE SCHEMA {schema}"))
                .map_err(|e| StoreError::database("cannot create a scratch schema", describe(&e)))
        })?;
        Ok(Scratch {
            base: base.to_string(),
            schema,
        })
    }

    /// The schema's name (also the `application_name` of connections made through [`Scratch::url`]).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A store URL whose connections work in this schema (`search_path`) and are named after it
    /// (`application_name`), so a test can find them in `pg_stat_activity`.
    pub fn url(&self) -> String {
        let u = with_param(
            &self.base,
            &format!("options=-csearch_path%3D{}", self.schema),
        );
        with_param(&u, &format!("application_name={}", self.schema))
    }

    /// Runs `sql` on the server (outside the schema's `search_path`, unless the SQL says so).
    pub fn admin(&self, sql: &str) -> Result<(), StoreError> {
        Connector::new(&self.url())?.session(|c| {
            c.batch_execute(sql)
                .map_err(|e| StoreError::database("", describe(&e)))
        })
    }

    /// The first column of the first row of `sql` (run in the schema) as a number; `None` for no row or NULL.
    pub fn scalar(&self, sql: &str) -> Result<Option<i64>, StoreError> {
        Connector::new(&self.url())?.session(|c| {
            c.query_opt(sql, &[])
                .and_then(|row| row.map(|r| r.try_get::<_, Option<i64>>(0)).transpose())
                .map(Option::flatten)
                .map_err(|e| StoreError::database("", describe(&e)))
        })
    }

    /// Copies the shipped decision records out of their segments into a new table `table` (`replica`, `seq`,
    /// `record`: a row a record, at its place in its segment), for a test to edit them as rows, as someone with
    /// write access to the database could, before [`Scratch::pack_segments`] writes them back.
    pub fn unpack_segments(&self, table: &str) -> Result<(), StoreError> {
        self.admin(&format!(
            "CREATE TABLE {table} AS
             SELECT s.replica, s.first_seq + l.n - 1 AS seq, l.record
             FROM decision_segments s,
                 unnest(string_to_array(s.records, E'\\n')) WITH ORDINALITY AS l(record, n)"
        ))
    }

    /// Replaces every shipped segment with segments made from the rows of `table` (as [`Scratch::unpack_segments`]
    /// makes it): a segment for each run of consecutive seqs of a replica, its columns computed from its records
    /// the way a shipper computes them, as a careful forger would.
    pub fn pack_segments(&self, table: &str) -> Result<(), StoreError> {
        self.admin(&format!(
            "DELETE FROM decision_segments;
             INSERT INTO decision_segments (replica, first_seq, count, min_time, max_time, principals, grants, kinds,
                 prev_hash, hash, records, shipped_at)
             WITH runs AS (
                 SELECT replica, seq, record, record::jsonb AS j,
                     seq - ROW_NUMBER() OVER (PARTITION BY replica ORDER BY seq) AS run
                 FROM {table}
             )
             SELECT replica, MIN(seq), COUNT(*)::INTEGER, MIN(j->>'time'), MAX(j->>'time'),
                 array_agg(DISTINCT j->>'principal'),
                 COALESCE((SELECT array_agg(DISTINCT g) FROM runs q, jsonb_array_elements_text(q.j->'grants_used') g
                           WHERE q.replica = r.replica AND q.run = r.run), '{{}}'),
                 array_agg(DISTINCT j->>'kind'),
                 (array_agg(j->>'prev_hash' ORDER BY seq))[1],
                 (array_agg(j->>'hash' ORDER BY seq DESC))[1],
                 string_agg(record, E'\\n' ORDER BY seq),
                 0
             FROM runs r
             GROUP BY replica, run"
        ))
    }

    /// Ends every server connection opened through [`Scratch::url`] (as a server restart would), except the one
    /// that does it, waiting (up to 5 s each) until each is gone; returns how many.
    pub fn terminate_connections(&self) -> Result<i64, StoreError> {
        let schema = &self.schema;
        Connector::new(&self.base)?.session(|c| {
            c.query_one(
                "SELECT COUNT(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[schema],
            )
            .and_then(|row| row.try_get(0))
            .map_err(|e| StoreError::database("", describe(&e)))
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let drop_it = || -> Result<(), StoreError> {
            let schema = &self.schema;
            Connector::new(&self.base)?.session(|c| {
                c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .map_err(|e| StoreError::database("", describe(&e)))
            })
        };
        if let Err(e) = drop_it() {
            eprintln!("cannot drop scratch schema {}: {e}", self.schema);
        }
    }
}
