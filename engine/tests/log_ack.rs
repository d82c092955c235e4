#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The writer's batch acknowledgement (`LogWriter::append_acked`) on real SQLite files: every waiter is answered
//! only once its own record is committed, a failed commit answers each of its waiters with the error, and a writer
//! that stops answers what it did not commit. (How one wake per batch reaches every waiter: ack.rs's own tests.)

use std::sync::Arc;
use std::time::Duration;

use jitgate_engine::log::{LogOptions, LogWriter, WriteError};
use rusqlite::Connection;

mod common;
use common::record as rec;

/// Whether the record `id` is committed, as another connection to the file sees it.
fn committed(path: &std::path::Path, id: &str) -> bool {
    let conn = Connection::open(path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM decisions WHERE id = ?1", [id], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap()
        == 1
}

#[test]
fn each_waiter_is_answered_only_after_its_own_record_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let opts = LogOptions {
        batch_max: 16,
        ..LogOptions::default()
    };
    let w = Arc::new(LogWriter::start(&path, opts).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let w = w.clone();
            let path = path.clone();
            rt.spawn(async move {
                let r = rec(i);
                let id = r.id.clone();
                let ack = w.append_acked(r).unwrap();
                ack.await.unwrap();
                // Answered: the record is in the file for anyone who reads it.
                assert!(
                    committed(&path, &id),
                    "record {i} answered before its commit"
                );
            })
        })
        .collect();
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(w.stats().committed, 400);
    w.shutdown().unwrap();
    assert!(jitgate_engine::log::verify_store(&path).unwrap().ok);
}

#[test]
fn a_failed_commit_answers_every_waiter_of_the_batch_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let opts = LogOptions {
        // No waiting for the lock: a batch that meets the blocker fails at once.
        busy_timeout: Duration::ZERO,
        ..LogOptions::default()
    };
    let w = LogWriter::start(&path, opts).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Before: committed and answered Ok.
    rt.block_on(w.append_acked(rec(0)).unwrap()).unwrap();
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let failed: Vec<_> = (1..=20)
        .map(|i| {
            let r = rec(i);
            (r.id.clone(), w.append_acked(r).unwrap())
        })
        .collect();
    rt.block_on(async {
        for (id, ack) in failed {
            let err = ack.await.unwrap_err();
            assert!(
                matches!(err, WriteError::Database { .. }),
                "record {id}: {err:?}"
            );
        }
    });
    assert_eq!(w.stats().errors, 20);
    blocker.execute_batch("ROLLBACK").unwrap();
    // After: the log goes on, and the failed records are not in it.
    let r = rec(21);
    let id = r.id.clone();
    rt.block_on(w.append_acked(r).unwrap()).unwrap();
    assert!(committed(&path, &id));
    let conn = Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    w.shutdown().unwrap();
    assert!(jitgate_engine::log::verify_store(&path).unwrap().ok);
}

#[test]
fn records_not_committed_when_the_writer_stops_are_answered_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let w = LogWriter::start(&path, LogOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let before = w.append_acked(rec(0)).unwrap();
    // A clean stop commits what was queued: answered Ok.
    w.shutdown().unwrap();
    rt.block_on(before).unwrap();
    assert!(matches!(w.append_acked(rec(1)), Err(WriteError::Closed)));
}
