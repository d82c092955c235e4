#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The decision log's acknowledgement journal on real files: each acknowledged record is committed exactly once
//! across restarts, a torn last line is dropped, an unreadable line stops the start (naming file and line) and
//! changes nothing, rotation removes committed files, a batch that fails to commit is retried rather than
//! skipped, and two writers cannot journal the same log.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use jitgate_engine::log::{
    self, DecisionRecord, Filter, LogOptions, LogWriter, Outcome, RecordKind, WriteError,
    verify_store,
};
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-23 10:00:00 UTC);

fn rec(i: i64) -> DecisionRecord {
    let mut r = DecisionRecord::at(RecordKind::Decision, T0 + time::Duration::seconds(i));
    r.principal = format!(r#"User::"u{}""#, i % 3);
    r.action = r#"Action::"read""#.into();
    r.resource = format!(r#"Doc::"d{i}""#);
    r.decision = Some(Outcome::Allow);
    r
}

fn journaled() -> LogOptions {
    LogOptions {
        journal: true,
        ..LogOptions::default()
    }
}

fn journal_files(db: &Path) -> Vec<PathBuf> {
    let name = db.file_name().unwrap().to_str().unwrap().to_string();
    let mut out: Vec<PathBuf> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .strip_prefix(&format!("{name}.journal."))
                .is_some_and(|g| g.parse::<u64>().is_ok())
        })
        .collect();
    out.sort();
    out
}

/// Every stored record's id, checking that none is stored twice and that the chain verifies.
fn stored_ids(db: &Path) -> Vec<String> {
    let report = verify_store(db).unwrap();
    assert!(report.ok, "{report:?}");
    let page = log::query(db, &Filter::default(), None, 100_000).unwrap();
    let ids: Vec<String> = page.records.into_iter().map(|r| r.id).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a record is stored twice");
    assert_eq!(report.records, ids.len() as u64);
    ids
}

fn append_all(w: &LogWriter, range: std::ops::Range<i64>) -> Vec<String> {
    range
        .map(|i| {
            let r = rec(i);
            let id = r.id.clone();
            w.append_journaled(r, |res| res.unwrap()).unwrap();
            id
        })
        .collect()
}

/// A journal line as the writer writes it: the record before sealing.
fn line(r: &DecisionRecord) -> Vec<u8> {
    let mut l = serde_json::to_vec(r).unwrap();
    l.push(b'\n');
    l
}

#[test]
fn each_acknowledged_record_is_committed_once_across_clean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let w = LogWriter::start(&db, journaled()).unwrap();
    let mut ids = append_all(&w, 0..100);
    w.shutdown().unwrap();
    // The last generation is still on disk (nothing newer was committed), but its position is stored.
    assert_eq!(journal_files(&db).len(), 1);

    let w = LogWriter::start(&db, journaled()).unwrap();
    assert_eq!(
        w.stats().recovered,
        0,
        "a clean stop leaves nothing to recover"
    );
    ids.extend(append_all(&w, 100..110));
    w.flush().unwrap();
    assert_eq!(w.stats().committed, 10);
    w.shutdown().unwrap();

    // A writer without a journal also finishes what one left, and then leaves no journal behind.
    let w = LogWriter::start(&db, LogOptions::default()).unwrap();
    assert_eq!(w.stats().recovered, 0);
    w.shutdown().unwrap();
    assert!(journal_files(&db).is_empty());
    assert_eq!(stored_ids(&db), ids);
}

#[test]
fn journaled_records_are_committed_at_start_and_a_torn_last_line_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    // An existing chain, then a journal of three acknowledged records and a torn fourth one.
    let w = LogWriter::start(&db, LogOptions::default()).unwrap();
    w.append(rec(0)).unwrap().wait().unwrap();
    w.shutdown().unwrap();
    let pending: Vec<DecisionRecord> = (1..4).map(rec).collect();
    let mut f = std::fs::File::create(dir.path().join("log.db.journal.7")).unwrap();
    for r in &pending {
        f.write_all(&line(r)).unwrap();
    }
    let torn = line(&rec(4));
    f.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(f);
    // What `decisions verify` reports beside the chain: three complete lines the store does not have.
    assert_eq!(log::journal_pending(&db).unwrap(), 3);

    let w = LogWriter::start(&db, journaled()).unwrap();
    assert_eq!(w.stats().recovered, 3);
    // New appends go to a newer generation than any found, and are committed after the recovered ones.
    let later = append_all(&w, 5..7);
    w.shutdown().unwrap();
    let files = journal_files(&db);
    assert_eq!(files, vec![dir.path().join("log.db.journal.8")]);
    assert_eq!(log::journal_pending(&db).unwrap(), 0);

    let ids = stored_ids(&db);
    assert_eq!(ids.len(), 6);
    let expected: Vec<String> = pending.iter().map(|r| r.id.clone()).chain(later).collect();
    assert_eq!(ids[1..], expected[..]);
    let recs = log::query(&db, &Filter::default(), None, 10)
        .unwrap()
        .records;
    assert_eq!(recs[1].resource, r#"Doc::"d1""#);
    assert_eq!(recs[1].seq, 2);
}

#[test]
fn an_unreadable_journal_line_stops_the_start_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let journal = dir.path().join("log.db.journal.1");
    let mut bytes = line(&rec(1));
    bytes.extend_from_slice(b"{\"seq\": 0, \"id\": \n");
    bytes.extend_from_slice(&line(&rec(3)));
    std::fs::write(&journal, &bytes).unwrap();

    let err = LogWriter::start(&db, LogOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WriteError::Invalid { .. }), "{err:?}");
    assert!(msg.contains("log.db.journal.1:2"), "{msg}");
    // Nothing committed, and the journal is kept for someone to look at.
    assert_eq!(verify_store(&db).unwrap().records, 0);
    assert_eq!(std::fs::read(&journal).unwrap(), bytes);
}

#[test]
fn rotation_removes_files_whose_records_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let opts = LogOptions {
        journal: true,
        journal_rotate_bytes: 2_000,
        ..LogOptions::default()
    };
    let w = LogWriter::start(&db, opts.clone()).unwrap();
    let mut ids = Vec::new();
    for wave in 0..20 {
        ids.extend(append_all(&w, wave * 10..wave * 10 + 10));
        w.flush().unwrap();
    }
    // About 200 records of ~400 bytes went through ~40 files; only the newest ones are left.
    let left = journal_files(&db);
    assert!(
        !left.is_empty() && left.len() <= 2,
        "journal files left: {left:?}"
    );
    w.shutdown().unwrap();
    let w = LogWriter::start(&db, opts).unwrap();
    assert_eq!(w.stats().recovered, 0);
    w.shutdown().unwrap();
    assert_eq!(stored_ids(&db), ids);
}

#[test]
fn two_writers_cannot_journal_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let first = LogWriter::start(&db, journaled()).unwrap();
    let err = LogWriter::start(&db, journaled()).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    // A writer without a journal may still share the file, and leaves the journal to its owner.
    let second = LogWriter::start(&db, LogOptions::default()).unwrap();
    assert!(matches!(
        second.append_journaled(rec(0), |_| {}),
        Err(WriteError::Invalid { .. })
    ));
    second.append(rec(1)).unwrap().wait().unwrap();
    let a = append_all(&first, 2..4);
    first.shutdown().unwrap();
    second.shutdown().unwrap();
    assert_eq!(stored_ids(&db).len(), 3);
    assert!(a.iter().all(|id| stored_ids(&db).contains(id)));
    // Once the first is gone, its journal can be taken over.
    LogWriter::start(&db, journaled())
        .unwrap()
        .shutdown()
        .unwrap();
}

#[test]
fn a_journaled_batch_that_fails_to_commit_is_retried_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let opts = LogOptions {
        journal: true,
        journal_linger: std::time::Duration::ZERO,
        busy_timeout: std::time::Duration::from_millis(20),
        ..LogOptions::default()
    };
    let w = LogWriter::start(&db, opts).unwrap();
    // Another connection holds the write lock: the writer's BEGIN IMMEDIATE gives up after 20 ms, more than once.
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = rec(0);
    let first = r.id.clone();
    w.append_journaled(r, move |res| tx.send(res.is_ok()).unwrap())
        .unwrap();
    // The first attempt's failure is counted; its record is still owed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while w.stats().errors == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first commit attempt never failed"
        );
        std::thread::yield_now();
    }
    let mut ids = vec![first];
    ids.extend(append_all(&w, 1..5));
    blocker.execute_batch("COMMIT").unwrap();
    // Once the lock is free the same batch commits, and the records queued behind it follow in order.
    assert!(rx.recv().unwrap(), "the retried batch reported success");
    w.flush().unwrap();
    assert_eq!(stored_ids(&db), ids);
    w.shutdown().unwrap();
    let w = LogWriter::start(&db, journaled()).unwrap();
    assert_eq!(w.stats().recovered, 0);
    w.shutdown().unwrap();
    assert_eq!(stored_ids(&db), ids);
}
