#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Prune beside a live writer on the same SQLite file, as the proxy's automatic retention runs it: two
//! connections, WAL, `BEGIN IMMEDIATE` on both sides. Nothing the writer acknowledged is lost, no batch fails
//! (the writer has the default busy timeout, as in the proxy), the writer's batches get in between prune's
//! chunks, and the chain verifies afterwards. Two prunes at once (the CLI beside the proxy) share the work.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jitgate_engine::log::{
    self, DecisionRecord, Filter, LogOptions, LogWriter, Outcome, PruneReport, RecordKind,
    format_time, verify_store,
};
use time::OffsetDateTime;

const OLD: i64 = 12_000;

fn rec(i: i64, at: OffsetDateTime) -> DecisionRecord {
    let mut r = DecisionRecord::at(RecordKind::Decision, at);
    r.principal = format!(r#"User::"u{}""#, i % 7);
    r.action = r#"Action::"deleteDatabase""#.into();
    r.resource = format!(r#"Database::"db{i}""#);
    r.decision = Some(Outcome::Allow);
    if i % 5 == 0 {
        r.grants_used = vec![format!("g{i}")];
    }
    r.request_id = Some(format!("req-{i}"));
    r
}

/// `OLD` records thirty days old, one millisecond apart.
fn seed(path: &Path) {
    let w = LogWriter::start(
        path,
        LogOptions {
            batch_max: 5_000,
            queue_capacity: 20_000,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let t0 = OffsetDateTime::now_utc() - time::Duration::days(30);
    for i in 1..=OLD {
        let _ = w
            .append(rec(i, t0 + time::Duration::milliseconds(i)))
            .unwrap();
    }
    w.shutdown().unwrap();
}

/// What the live writer acknowledged, and its slowest append.
struct Live {
    ids: Vec<String>,
    slowest: Duration,
    errors: u64,
}

/// Runs `prunes` prunes at once (threads) beside a live writer with the proxy's settings that appends, one
/// record at a time and waiting for each, from before they start until after they finish.
fn prune_beside_writer(
    path: &Path,
    cutoff: OffsetDateTime,
    prunes: usize,
) -> (Vec<PruneReport>, Live) {
    let writer = Arc::new(LogWriter::start(path, LogOptions::default()).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let live = {
        let (writer, done) = (writer.clone(), done.clone());
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut i = 1_000_000;
            while !done.load(Ordering::SeqCst) {
                i += 1;
                let r = rec(i, OffsetDateTime::now_utc());
                let id = r.id.clone();
                let t = Instant::now();
                writer.append(r).unwrap().wait().unwrap();
                slowest = slowest.max(t.elapsed());
                ids.push(id);
            }
            (ids, slowest)
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let handles: Vec<_> = (0..prunes)
        .map(|_| {
            let path = path.to_path_buf();
            std::thread::spawn(move || log::prune(&path, cutoff).unwrap())
        })
        .collect();
    let reports: Vec<_> = handles.into_iter().map(|p| p.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, Ordering::SeqCst);
    let (ids, slowest) = live.join().unwrap();
    writer.flush().unwrap();
    let errors = writer.stats().errors;
    writer.shutdown().unwrap();
    eprintln!(
        "prunes: {reports:?}; live records: {}; slowest append: {slowest:?}",
        ids.len()
    );
    (
        reports,
        Live {
            ids,
            slowest,
            errors,
        },
    )
}

/// Every old record is gone, every live one is there, the rest are checkpoints and the chain verifies. Returns
/// the records.
fn assert_pruned(path: &Path, cutoff: OffsetDateTime, live: &Live) -> Vec<DecisionRecord> {
    assert_eq!(live.errors, 0, "no batch failed");
    let report = verify_store(path).unwrap();
    assert!(report.ok, "{report:?}");
    let records = log::query(path, &Filter::default(), None, 1_000_000)
        .unwrap()
        .records;
    let cut = format_time(cutoff);
    assert!(
        records.iter().all(|r| r.time >= cut),
        "no record before the cutoff is left"
    );
    let present: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let missing = live
        .ids
        .iter()
        .filter(|id| !present.contains(id.as_str()))
        .count();
    assert_eq!(missing, 0, "every acknowledged live record is kept");
    let checkpoints = records
        .iter()
        .filter(|r| r.kind == RecordKind::Checkpoint)
        .count();
    assert_eq!(
        records.len(),
        live.ids.len() + checkpoints,
        "nothing but live records and checkpoints"
    );
    records
}

#[test]
fn prune_beside_a_live_writer_loses_nothing_and_lets_it_in_between_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    seed(&path);
    let cutoff = OffsetDateTime::now_utc() - time::Duration::days(1);
    let (reports, live) = prune_beside_writer(&path, cutoff, 1);
    assert_eq!(reports[0].deleted, OLD as u64);
    let records = assert_pruned(&path, cutoff, &live);

    // 12,000 records in chunks of at most 5,000: three checkpoints, and the writer got its turn after each of the
    // first two (a live record sealed between consecutive checkpoints).
    let cps: Vec<i64> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Checkpoint)
        .map(|r| r.seq)
        .collect();
    assert_eq!(cps.len(), 3, "checkpoints at {cps:?}");
    assert_eq!(reports[0].checkpoint_seq, cps.last().copied());
    for w in cps.windows(2) {
        assert!(
            w[1] > w[0] + 1,
            "the writer committed between prune chunks (checkpoints at {cps:?})"
        );
    }
    // A chunk holds the lock for well under the writer's busy timeout (5 s).
    assert!(live.slowest < Duration::from_secs(3), "{:?}", live.slowest);
}

#[test]
fn two_prunes_at_once_beside_a_live_writer_share_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    seed(&path);
    let cutoff = OffsetDateTime::now_utc() - time::Duration::days(1);
    let (reports, live) = prune_beside_writer(&path, cutoff, 2);
    assert_eq!(
        reports.iter().map(|r| r.deleted).sum::<u64>(),
        OLD as u64,
        "every old record deleted once between the two: {reports:?}"
    );
    assert_pruned(&path, cutoff, &live);
}

#[test]
fn a_tampered_chain_spanning_several_chunks_is_refused_before_anything_is_deleted() {
    // The edited record is in the third chunk: the whole-chain check runs before the first chunk is deleted.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    seed(&path);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(r#"UPDATE decisions SET principal = 'User::"mallory"' WHERE seq = 7000"#)
        .unwrap();
    drop(c);
    let cutoff = OffsetDateTime::now_utc() - time::Duration::days(1);
    assert!(matches!(
        log::prune(&path, cutoff),
        Err(log::PruneError::Invalid { .. })
    ));
    let report = verify_store(&path).unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_seq, Some(1), "nothing was deleted");
}
