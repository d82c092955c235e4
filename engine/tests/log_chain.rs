#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The decision log on real SQLite files: the writer's chain, restarts, tampering of every kind, prune,
//! back-pressure, queries and redaction.

use std::path::Path;

use jitgate_engine::log::{
    self, Cursor, DecisionRecord, FailureKind, Filter, JsonlSink, LogOptions, LogWriter, OnFull,
    Outcome, PruneError, QueryError, RecordKind, WriteError, redact, verify_store,
};
use rusqlite::Connection;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-23 10:00:00 UTC);

fn rec(i: i64) -> DecisionRecord {
    let mut r = DecisionRecord::at(RecordKind::Decision, T0 + time::Duration::minutes(i));
    r.principal = format!(r#"User::"u{}""#, i % 3);
    r.action = r#"Action::"deleteDatabase""#.into();
    r.resource = format!(r#"Database::"db{i}""#);
    r.decision = Some(if i % 2 == 0 {
        Outcome::Allow
    } else {
        Outcome::Deny
    });
    r.policies = vec!["policy0".into()];
    if i % 4 == 0 {
        r.grants_used = vec![format!("g{i}"), "gshared".into()];
    }
    r.revision = "rev1".into();
    r.engine = "cedar".into();
    r.latency_us = 12;
    r.request_id = Some(format!("req-{i}"));
    r.method = Some("DELETE".into());
    r.path = Some(format!("/databases/db{i}"));
    r.client_addr = Some("10.0.0.1:5555".into());
    r.status = Some(if i % 2 == 0 { 200 } else { 403 });
    r.context = json!({"source_ip": "10.0.0.1", "claims": {"sub": "u", "groups": ["a", "b"]}})
        .as_object()
        .cloned()
        .unwrap();
    r
}

fn opts() -> LogOptions {
    LogOptions {
        queue_capacity: 64,
        batch_max: 10,
        ..LogOptions::default()
    }
}

/// A log with records 1..=n (times T0+1min .. T0+n min).
fn build(path: &Path, n: i64) {
    let w = LogWriter::start(path, opts()).unwrap();
    let tickets: Vec<_> = (1..=n).map(|i| w.append(rec(i)).unwrap()).collect();
    for t in tickets {
        t.wait().unwrap();
    }
    w.shutdown().unwrap();
}

fn sql(path: &Path, stmt: &str) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(stmt).unwrap();
}

fn fails_at(path: &Path) -> (i64, FailureKind) {
    let report = verify_store(path).unwrap();
    assert!(!report.ok, "tampering went unnoticed: {report:?}");
    let f = report.failure.unwrap();
    (f.seq.unwrap(), f.kind)
}

#[test]
fn writer_chain_over_three_batches_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let w = LogWriter::start(&path, opts()).unwrap();
    for i in 1..=25 {
        // Dropping the ticket is allowed: flush below waits for the batch anyway.
        let _ = w.append(rec(i)).unwrap();
    }
    w.flush().unwrap();
    let s = w.stats();
    assert_eq!((s.appended, s.committed, s.errors), (25, 25, 0));
    assert!(
        s.batches >= 3,
        "batch_max 10 needs at least 3 batches for 25 records, got {}",
        s.batches
    );
    let report = verify_store(&path).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        (report.records, report.first_seq, report.last_seq),
        (25, Some(1), Some(25))
    );

    let page = log::query(&path, &Filter::default(), None, 100).unwrap();
    assert_eq!(page.records.first().unwrap().prev_hash, log::GENESIS_HASH);
    for pair in page.records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    assert!(page.records.iter().all(DecisionRecord::hash_ok));
    w.shutdown().unwrap();
    assert!(matches!(w.append(rec(99)), Err(WriteError::Closed)));
}

#[test]
fn restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 5);
    let w = LogWriter::start(&path, opts()).unwrap();
    w.append(rec(6)).unwrap().wait().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    w.append_with(rec(7), move |res| tx.send(res).unwrap())
        .unwrap();
    assert_eq!(rx.recv().unwrap(), Ok(()));
    w.shutdown().unwrap();
    let report = verify_store(&path).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.records, report.last_seq), (7, Some(7)));
}

#[test]
fn edited_field_is_detected_at_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    sql(
        &path,
        r#"UPDATE decisions SET decision = 'deny' WHERE seq = 4"#,
    );
    assert_eq!(fails_at(&path), (4, FailureKind::HashMismatch));
}

#[test]
fn edited_context_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    sql(
        &path,
        r#"UPDATE decisions SET context = '{"source_ip":"6.6.6.6"}' WHERE seq = 8"#,
    );
    assert_eq!(fails_at(&path), (8, FailureKind::HashMismatch));
}

#[test]
fn deleted_row_is_detected_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    sql(&path, "DELETE FROM decisions WHERE seq = 5");
    assert_eq!(fails_at(&path), (5, FailureKind::Missing));
}

#[test]
fn deleted_tail_is_detected_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    sql(&path, "DELETE FROM decisions WHERE seq >= 9");
    assert_eq!(fails_at(&path), (9, FailureKind::Truncated));
}

fn insert_raw(path: &Path, r: &DecisionRecord) {
    let c = Connection::open(path).unwrap();
    c.execute(
        "INSERT INTO decisions (seq, id, time, kind, request_id, principal, action, resource, context, decision,
           policies, grants_used, errors, revision, engine, latency_us, client_addr, method, path, status,
           break_glass, redacted, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
           ?22, ?23, ?24)",
        rusqlite::params![
            r.seq,
            r.id,
            r.time,
            r.kind.as_str(),
            r.request_id,
            r.principal,
            r.action,
            r.resource,
            serde_json::to_string(&r.context).unwrap(),
            r.decision.map(|d| d.as_str()),
            serde_json::to_string(&r.policies).unwrap(),
            serde_json::to_string(&r.grants_used).unwrap(),
            serde_json::to_string(&r.errors).unwrap(),
            r.revision,
            r.engine,
            r.latency_us as i64,
            r.client_addr,
            r.method,
            r.path,
            r.status,
            r.break_glass,
            serde_json::to_string(&r.redacted).unwrap(),
            r.prev_hash,
            r.hash,
        ],
    )
    .unwrap();
}

fn get(path: &Path, seq: i64) -> DecisionRecord {
    let page = log::query(path, &Filter::default(), Some(Cursor(seq - 1)), 1).unwrap();
    page.records.into_iter().next().unwrap()
}

/// Makes room at `seq` by moving every later record up one.
fn shift_up_from(path: &Path, seq: i64) {
    sql(
        path,
        &format!(
            "UPDATE decisions SET seq = seq + 1000000 WHERE seq >= {seq};
             UPDATE decisions SET seq = seq - 999999 WHERE seq >= 1000000;"
        ),
    );
}

#[test]
fn inserted_row_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    // A naive forgery: a copy of record 4 dropped in at seq 5.
    let mut forged = get(&path, 4);
    shift_up_from(&path, 5);
    forged.seq = 5;
    forged.decision = Some(Outcome::Allow);
    insert_raw(&path, &forged);
    assert_eq!(fails_at(&path), (5, FailureKind::BrokenLink));
}

#[test]
fn inserted_row_with_a_recomputed_hash_is_still_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    let four = get(&path, 4);
    let mut forged = rec(99);
    forged.seal(5, &four.hash);
    shift_up_from(&path, 5);
    insert_raw(&path, &forged);
    // The forged record itself is consistent; the original record 5, now at 6, no longer links to it.
    assert_eq!(fails_at(&path), (6, FailureKind::BrokenLink));
}

#[test]
fn swapped_rows_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    sql(
        &path,
        "UPDATE decisions SET seq = -3 WHERE seq = 3;
         UPDATE decisions SET seq = 3 WHERE seq = 7;
         UPDATE decisions SET seq = 7 WHERE seq = -3;",
    );
    assert_eq!(fails_at(&path), (3, FailureKind::BrokenLink));
}

#[test]
fn doctored_grant_index_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    sql(
        &path,
        "DELETE FROM decision_grants WHERE seq = 8 AND grant_id = 'g8'",
    );
    assert_eq!(fails_at(&path), (8, FailureKind::IndexMismatch));
}

#[test]
fn prune_keeps_verify_green_and_tampering_after_it_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    // Records 1..=4 are before T0+5min.
    let pr = log::prune(&path, T0 + time::Duration::minutes(5)).unwrap();
    assert_eq!(
        (pr.deleted, pr.pruned_through, pr.checkpoint_seq),
        (4, Some(4), Some(11))
    );
    let report = verify_store(&path).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        (report.first_seq, report.last_seq, report.checkpoint_seq),
        (Some(5), Some(11), Some(11))
    );
    let cp = get(&path, 11);
    assert_eq!(cp.kind, RecordKind::Checkpoint);
    assert_eq!(cp.context["pruned_through"], 4);

    // Nothing old enough: no new checkpoint.
    let again = log::prune(&path, T0).unwrap();
    assert_eq!((again.deleted, again.checkpoint_seq), (0, None));

    // Appending after a prune continues the chain.
    build(&path, 2);
    assert!(verify_store(&path).unwrap().ok);
    let pristine = dir.path().join("pristine.db");
    sql(&path, &format!("VACUUM INTO '{}'", pristine.display()));

    // Deleting the first kept record (more pruning without a checkpoint).
    sql(&path, "DELETE FROM decisions WHERE seq = 5");
    assert_eq!(fails_at(&path), (5, FailureKind::Missing));

    // Editing a kept record, or the checkpoint itself.
    let fresh = |name: &str| {
        let p = dir.path().join(name);
        sql(&pristine, &format!("VACUUM INTO '{}'", p.display()));
        p
    };
    let p = fresh("a.db");
    sql(
        &p,
        r#"UPDATE decisions SET principal = 'User::"x"' WHERE seq = 7"#,
    );
    assert_eq!(fails_at(&p), (7, FailureKind::HashMismatch));
    let p = fresh("b.db");
    sql(
        &p,
        "UPDATE decisions SET context = json_set(context, '$.first_kept_seq', 6) WHERE seq = 11",
    );
    assert!(!verify_store(&p).unwrap().ok);

    // Prune refuses a chain that does not verify.
    let p = fresh("c.db");
    sql(&p, "UPDATE decisions SET action = 'x' WHERE seq = 6");
    assert!(matches!(
        log::prune(&p, T0 + time::Duration::minutes(8)),
        Err(PruneError::Invalid { .. })
    ));

    // Pruning everything still leaves a verifiable (checkpoint-only) chain. The checkpoint at 11 has the real
    // time, so "everything" is a cutoff after now (T0 + 1 day stopped being that on 2026-11-24).
    let p = fresh("d.db");
    let pr = log::prune(&p, OffsetDateTime::now_utc() + time::Duration::days(1)).unwrap();
    assert_eq!(
        pr.deleted, 9,
        "records 5..=13, the first checkpoint included"
    );
    let report = verify_store(&p).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 1);
}

#[test]
fn fail_closed_returns_queue_full_while_the_writer_is_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let o = LogOptions {
        queue_capacity: 4,
        batch_max: 2,
        on_full: OnFull::FailClosed,
        busy_timeout: std::time::Duration::from_secs(60),
        jsonl: None,
        ..LogOptions::default()
    };
    let w = LogWriter::start(&path, o).unwrap();
    // Another connection holds the write lock: the writer blocks in BEGIN IMMEDIATE and the queue fills.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut accepted = 0;
    let err = loop {
        match w.append(rec(accepted + 1)) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(
            accepted <= 4 + 2,
            "queue capacity 4 + one batch of 2 in the writer's hands"
        );
    };
    assert_eq!(err, WriteError::QueueFull);
    assert!(accepted >= 4);
    assert_eq!(w.stats().queue_full_rejections, 1);
    blocker.execute_batch("ROLLBACK").unwrap();
    w.flush().unwrap();
    let s = w.stats();
    assert_eq!(
        (s.appended, s.committed, s.errors),
        (accepted as u64, accepted as u64, 0)
    );
    w.shutdown().unwrap();
    assert!(verify_store(&path).unwrap().ok);
}

#[test]
fn wait_mode_blocks_and_counts_then_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let o = LogOptions {
        queue_capacity: 2,
        batch_max: 1,
        on_full: OnFull::Wait,
        busy_timeout: std::time::Duration::from_secs(60),
        jsonl: None,
        ..LogOptions::default()
    };
    let w = std::sync::Arc::new(LogWriter::start(&path, o).unwrap());
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let w2 = w.clone();
    let appender = std::thread::spawn(move || {
        for i in 1..=6 {
            let _ = w2.append(rec(i)).unwrap();
        }
    });
    // The stats counter is the signal that the appender is parked on a full queue.
    while w.stats().queue_full_waits == 0 {
        std::thread::yield_now();
    }
    blocker.execute_batch("ROLLBACK").unwrap();
    appender.join().unwrap();
    w.flush().unwrap();
    let s = w.stats();
    assert_eq!((s.committed, s.queue_full_rejections), (6, 0));
    assert!(s.queue_full_waits >= 1);
}

#[test]
fn query_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 12);
    let count = |f: Filter| {
        let mut n = 0;
        let mut cur = None;
        loop {
            let page = log::query(&path, &f, cur, 5).unwrap();
            n += page.records.len();
            match page.next {
                Some(c) => cur = Some(c),
                None => break n,
            }
        }
    };
    assert_eq!(count(Filter::default()), 12);
    assert_eq!(
        count(Filter {
            principal: Some(r#"User::"u0""#.into()),
            ..Default::default()
        }),
        4
    );
    assert_eq!(
        count(Filter {
            decision: Some(Outcome::Deny),
            ..Default::default()
        }),
        6
    );
    assert_eq!(
        count(Filter {
            grant: Some("gshared".into()),
            ..Default::default()
        }),
        3
    );
    assert_eq!(
        count(Filter {
            grant: Some("g8".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        count(Filter {
            request_id: Some("req-3".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        count(Filter {
            kind: Some(RecordKind::Checkpoint),
            ..Default::default()
        }),
        0
    );
    assert_eq!(
        count(Filter {
            revision: Some("rev1".into()),
            ..Default::default()
        }),
        12
    );
    let window = Filter {
        since: Some(T0 + time::Duration::minutes(3)),
        until: Some(T0 + time::Duration::minutes(7)),
        ..Default::default()
    };
    assert_eq!(count(window.clone()), 4, "since inclusive, until exclusive");
    let page = log::query(&path, &window, None, 2).unwrap();
    assert_eq!(
        page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(page.next, Some(Cursor(4)));
    assert!(matches!(
        log::query(&dir.path().join("absent.db"), &window, None, 1),
        Err(QueryError::NotFound(_))
    ));
}

#[test]
fn redaction_masks_lists_and_never_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let mut r = rec(1);
    r.context = json!({
        "headers": {"authorization": "Bearer s3cr3t-token", "accept": "*/*"},
        "claims": {"email": "alice@example.com", "sub": "alice"}
    })
    .as_object()
    .cloned()
    .unwrap();
    let fields: Vec<String> = [
        "headers.authorization",
        "claims.email",
        "claims.missing",
        "nothere.x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    redact(&mut r, &fields);
    assert_eq!(r.context["headers"]["authorization"], log::REDACTED);
    assert_eq!(r.context["claims"]["email"], log::REDACTED);
    assert_eq!(r.context["headers"]["accept"], "*/*");
    assert_eq!(r.redacted, vec!["headers.authorization", "claims.email"]);

    let w = LogWriter::start(&path, opts()).unwrap();
    w.append(r).unwrap().wait().unwrap();
    w.shutdown().unwrap();
    let stored = get(&path, 1);
    assert_eq!(
        stored.redacted,
        vec!["headers.authorization", "claims.email"]
    );
    assert!(verify_store(&path).unwrap().ok);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains("s3cr3t-token") && !hay.contains("alice@example.com"));
    }
}

#[test]
fn jsonl_sink_rotates_and_keeps_every_committed_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let sink = dir.path().join("out/decisions.jsonl");
    let o = LogOptions {
        jsonl: Some(JsonlSink::File {
            path: sink.clone(),
            max_bytes: 4096,
            keep: 10,
        }),
        ..opts()
    };
    let w = LogWriter::start(&path, o).unwrap();
    for i in 1..=30 {
        let _ = w.append(rec(i)).unwrap();
    }
    w.shutdown().unwrap();
    let mut seqs = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(sink.parent().unwrap()).unwrap() {
        let p = entry.unwrap().path();
        files += 1;
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.len() <= 4096, "{} is over the limit", p.display());
        for line in text.lines() {
            let r: DecisionRecord = serde_json::from_str(line).unwrap();
            assert!(r.hash_ok());
            seqs.push(r.seq);
        }
    }
    seqs.sort();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    assert!(files > 1, "expected rotation");
}

#[test]
fn a_bad_time_is_refused_at_append() {
    let dir = tempfile::tempdir().unwrap();
    let w = LogWriter::start(&dir.path().join("log.db"), opts()).unwrap();
    let mut r = rec(1);
    r.time = "yesterday".into();
    assert!(matches!(w.append(r), Err(WriteError::Invalid { .. })));
    let mut r = rec(1);
    r.time = "2026-11-23T11:00:00+01:00".into();
    w.append(r).unwrap().wait().unwrap();
    w.shutdown().unwrap();
    assert_eq!(
        get(&dir.path().join("log.db"), 1).time,
        "2026-11-23T10:00:00.000Z"
    );
}

#[test]
fn the_wal_is_checkpointed_into_the_file_while_the_writer_runs() {
    // The writer does not checkpoint inside its commits; a background thread does. Without it the database file
    // would keep its initial size for as long as the writer runs, everything piling up in the WAL.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let w = LogWriter::start(&path, opts()).unwrap();
    let initial = std::fs::metadata(&path).unwrap().len();
    let tickets: Vec<_> = (1..=500).map(|i| w.append(rec(i)).unwrap()).collect();
    for t in tickets {
        t.wait().unwrap();
    }
    // No signal tells when a checkpoint ran; poll the file, bounded (checkpoints run every 250 ms).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut size = initial;
    while size <= initial && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        size = std::fs::metadata(&path).unwrap().len();
    }
    assert!(
        size > initial,
        "database file still {size} bytes (initial {initial})"
    );
    w.shutdown().unwrap();
    // A clean stop leaves the WAL empty (or gone) and every record in the file.
    let wal = dir.path().join("decisions.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0,
        "WAL left behind"
    );
    let report = verify_store(&path).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 500);
}

#[test]
fn a_file_that_is_not_a_decision_log_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    sql(
        &path,
        "CREATE TABLE foo (x INTEGER); INSERT INTO foo VALUES (1);",
    );
    let tables = || -> Vec<String> {
        let c = Connection::open(&path).unwrap();
        let mut s = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let err = verify_store(&path).unwrap_err().to_string();
    assert!(err.contains("is not a jitgate decision log"), "{err}");
    let err = log::query(&path, &Filter::default(), None, 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a jitgate decision log"), "{err}");
    assert_eq!(tables(), ["foo"], "nothing was added to the file");
}

/// Issue 16: a log whose shipper has copied records 1..=3 into the shared store keeps every later record, however
/// old, and says how many it kept; once the mark moves on, the next prune removes them; `discard_unshipped`
/// ignores the mark.
#[test]
fn prune_never_removes_a_record_the_shipper_has_not_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    build(&path, 10);
    assert_eq!(log::shipped_mark(&path).unwrap(), None);
    log::mark_shipped(&path, "r1", 3).unwrap();
    assert_eq!(
        log::shipped_mark(&path).unwrap(),
        Some(log::ShippedMark {
            replica: "r1".into(),
            seq: 3
        })
    );
    // Records 1..=8 are old enough; only 1..=3 are in the store.
    let cutoff = T0 + time::Duration::minutes(9);
    let pr = log::prune(&path, cutoff).unwrap();
    assert_eq!(
        (
            pr.deleted,
            pr.pruned_through,
            pr.shipped_through,
            pr.kept_unshipped
        ),
        (3, Some(3), Some(3), 5)
    );
    assert!(verify_store(&path).unwrap().ok);
    assert_eq!(get(&path, 4).seq, 4);
    // Nothing shipped since: nothing more goes.
    let pr = log::prune(&path, cutoff).unwrap();
    assert_eq!((pr.deleted, pr.kept_unshipped), (0, 5));
    // Shipped through 6: 4..=6 go, 7 and 8 stay.
    log::mark_shipped(&path, "r1", 6).unwrap();
    let pr = log::prune(&path, cutoff).unwrap();
    assert_eq!(
        (pr.deleted, pr.pruned_through, pr.kept_unshipped),
        (3, Some(6), 2)
    );
    assert!(verify_store(&path).unwrap().ok);
    // A mark at 0 (a shipper that has not reached the store yet) keeps everything.
    log::mark_shipped(&path, "r1", 0).unwrap();
    let pr = log::prune(&path, cutoff).unwrap();
    assert_eq!((pr.deleted, pr.kept_unshipped), (0, 2));
    // The operator's override.
    let pr = log::prune_with(
        &path,
        cutoff,
        &log::PruneOptions {
            discard_unshipped: true,
            ..log::PruneOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        (pr.deleted, pr.pruned_through, pr.kept_unshipped),
        (2, Some(8), 0)
    );
    assert!(verify_store(&path).unwrap().ok);
    log::unmark_shipped(&path).unwrap();
    assert_eq!(log::shipped_mark(&path).unwrap(), None);
}

/// Issue 16: a writer with a shipping feed hands every committed record over in seq order, each as its export would
/// store it, and writes the mark its shipper reports inside its next batch: forward only, and only on a log that a
/// shipper has marked; a full feed drops whole batches (the shipper reads those from the log) and counts them.
#[test]
fn the_ship_feed_carries_committed_records_and_the_writer_writes_the_reported_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let feed = std::sync::Arc::new(log::ShipFeed::new(6));
    let w = LogWriter::start(
        &path,
        LogOptions {
            ship: Some(feed.clone()),
            ..LogOptions::default()
        },
    )
    .unwrap();
    for i in 1..=3 {
        w.append(rec(i)).unwrap().wait().unwrap();
    }
    let taken = feed.take();
    assert_eq!(taken.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(feed.head(), 3);
    let stored = log::stored_records(&path, 0, 10).unwrap();
    // Every field as the log's own read-back gives it.
    assert_eq!(taken, stored);
    // No mark yet on the log: a reported one is not invented by the writer.
    feed.shipped(2);
    w.append(rec(4)).unwrap().wait().unwrap();
    assert_eq!(log::shipped_mark(&path).unwrap(), None);
    // Once a shipper has marked the log, the next batch carries the reported mark forward, never back.
    log::mark_shipped(&path, "r1", 0).unwrap();
    feed.reset_marks();
    feed.set_marked(0);
    feed.shipped(3);
    w.append(rec(5)).unwrap().wait().unwrap();
    assert_eq!(log::shipped_mark(&path).unwrap().map(|m| m.seq), Some(3));
    assert_eq!(feed.marked(), 3);
    log::mark_shipped(&path, "r1", 5).unwrap();
    feed.shipped(4);
    feed.set_marked(3);
    w.append(rec(6)).unwrap().wait().unwrap();
    assert_eq!(log::shipped_mark(&path).unwrap().map(|m| m.seq), Some(5));
    // Capacity 6: records 4..=6 wait in the feed, 7..=9 still fit, 10 does not.
    for i in 7..=10 {
        w.append(rec(i)).unwrap().wait().unwrap();
    }
    let taken = feed.take();
    assert_eq!(
        taken.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [4, 5, 6, 7, 8, 9]
    );
    assert_eq!((feed.dropped(), feed.head()), (1, 10));
    w.shutdown().unwrap();
    assert!(verify_store(&path).unwrap().ok);
}
