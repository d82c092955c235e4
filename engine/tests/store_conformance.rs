#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every store backend against the one conformance suite (`jitgate_engine::store::conformance`): SQLite on a
//! temporary file, and the memory store.

use std::sync::atomic::{AtomicUsize, Ordering};

use jitgate_engine::sqlite::SqliteStore;
use jitgate_engine::store::{MemStore, conformance};

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    conformance::run_all(|| {
        let file = format!("store-{}.db", n.fetch_add(1, Ordering::Relaxed));
        SqliteStore::open(&dir.path().join(file)).unwrap()
    });
}

#[test]
fn memory_store_conforms() {
    conformance::run_all(MemStore::new);
}

/// PostgreSQL, each store in a schema of its own, when `JITGATE_TEST_POSTGRES` names a server.
#[test]
fn postgres_store_conforms() {
    use jitgate_engine::postgres::PgStore;
    use jitgate_engine::postgres::scratch::{Scratch, test_url};
    let Some(base) = test_url("postgres_store_conforms") else {
        return;
    };
    let schemas = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| {
        let scratch = Scratch::new(&base, "conform").unwrap();
        let store = PgStore::open(&scratch.url()).unwrap();
        schemas.lock().unwrap().push(scratch);
        store
    });
}
