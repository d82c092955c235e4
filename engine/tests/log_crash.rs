#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A process killed (SIGKILL) while the decision-log writer is mid-batch leaves a chain that verifies and holds
//! every record whose ticket had resolved Ok, i.e. every decision whose response was already sent. With the
//! acknowledgement journal, a record counts as acknowledged once `append_journaled` returns; the chain left behind
//! verifies, and the next start commits every acknowledged record that was not committed yet.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jitgate_engine::log::{
    self, Cursor, DecisionRecord, Filter, LogOptions, LogWriter, Outcome, verify_store,
};

/// Set in the child's environment to the database path; makes [`crash_child`] do the work.
const CHILD_ENV: &str = "JITGATE_LOG_CRASH_CHILD";
/// How the child appends: `ticket` (wait for the commit), `journal` (acknowledged from the journal) or
/// `journal-blocked` (the same, while another connection holds the write lock, so nothing gets committed).
const MODE_ENV: &str = "JITGATE_LOG_CRASH_MODE";
/// Acknowledged ids the parent waits for before it kills the child.
const KILL_AFTER: usize = 500;
/// The child stops by itself after this, so a parent that never kills it cannot hang the suite.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);
const THREADS: usize = 4;
/// Tickets each child thread keeps in flight, so batches are large and a kill lands inside one.
const IN_FLIGHT: usize = 64;

fn rec(t: usize, i: usize) -> DecisionRecord {
    let mut r = DecisionRecord::decision(
        format!(r#"User::"u{t}""#),
        r#"Action::"read""#,
        format!(r#"Doc::"d{i}""#),
        if i % 2 == 0 {
            Outcome::Allow
        } else {
            Outcome::Deny
        },
    );
    r.request_id = Some(format!("req-{t}-{i}"));
    r.grants_used = if i % 3 == 0 {
        vec![format!("g{t}")]
    } else {
        vec![]
    };
    r.context = serde_json::json!({"i": i, "t": t})
        .as_object()
        .cloned()
        .unwrap();
    r
}

/// The child: appends from several threads and prints `ACK <id>` for each record whose ticket resolved Ok.
/// Writes go straight to the stdout file descriptor (not the test harness's captured `println!`).
fn run_child(db: &Path, mode: &str) {
    let journal = mode != "ticket";
    let w = Arc::new(
        LogWriter::start(
            db,
            LogOptions {
                batch_max: 256,
                queue_capacity: 1024,
                journal,
                busy_timeout: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    // Held until the child dies: the writer's first batch waits on it, so every acknowledgement is journal-only.
    let _blocker = (mode == "journal-blocked").then(|| {
        let c = rusqlite::Connection::open(db).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        c
    });
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while journal && start.elapsed() < CHILD_DEADLINE {
                    i += 1;
                    let r = rec(t, i);
                    let id = r.id.clone();
                    w.append_journaled(r, |_| {}).unwrap();
                    let mut out = std::io::stdout().lock();
                    out.write_all(format!("ACK {id}\n").as_bytes()).unwrap();
                    out.flush().unwrap();
                }
                while !journal && start.elapsed() < CHILD_DEADLINE {
                    let tickets: Vec<_> = (0..IN_FLIGHT)
                        .map(|_| {
                            i += 1;
                            let r = rec(t, i);
                            let id = r.id.clone();
                            (id, w.append(r).unwrap())
                        })
                        .collect();
                    for (id, ticket) in tickets {
                        ticket.wait().unwrap();
                        let mut out = std::io::stdout().lock();
                        out.write_all(format!("ACK {id}\n").as_bytes()).unwrap();
                        out.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    w.shutdown().unwrap();
}

/// The child half: does nothing unless started by [`killed_writer_keeps_every_acknowledged_record`].
#[test]
fn crash_child() {
    if let Some(db) = std::env::var_os(CHILD_ENV) {
        let mode = std::env::var(MODE_ENV).unwrap_or_else(|_| "ticket".into());
        run_child(Path::new(&db), &mode);
    }
}

fn ack_id(line: &str) -> Option<String> {
    line.strip_prefix("ACK ").map(|s| s.trim_end().to_string())
}

fn all_ids(db: &Path) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut page: Option<Cursor> = None;
    loop {
        let p = log::query(db, &Filter::default(), page, 10_000).unwrap();
        ids.extend(p.records.into_iter().map(|r| r.id));
        match p.next {
            Some(c) => page = Some(c),
            None => return ids,
        }
    }
}

/// Starts the child in `mode`, kills it after [`KILL_AFTER`] acknowledgements, and returns the acknowledged ids.
fn kill_child_after_acks(db: &Path, mode: &str) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, db)
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut acked: Vec<String> = Vec::new();
    let mut line = String::new();
    while acked.len() < KILL_AFTER {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "the child exited after {} acknowledgements",
            acked.len()
        );
        acked.extend(ack_id(&line));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was not killed: {status:?}");

    // Lines the child wrote before it died are acknowledgements too; a torn last line (no newline) is not.
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let complete = rest.rfind('\n').map_or("", |i| &rest[..=i]);
    acked.extend(complete.lines().filter_map(ack_id));
    acked
}

fn assert_all_stored(db: &Path, acked: &[String]) {
    let report = verify_store(db).unwrap();
    assert!(report.ok, "{report:?}");
    let stored = all_ids(db);
    // Ids are unique, so a record committed twice shows here.
    assert_eq!(
        report.records,
        stored.len() as u64,
        "a record is stored twice"
    );
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged records are missing, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.first()
    );
}

/// Starts a writer on `db` (which commits what the journal holds) and stops it; returns how many it recovered.
fn restart(db: &Path) -> u64 {
    let w = LogWriter::start(db, LogOptions::default()).unwrap();
    let recovered = w.stats().recovered;
    w.shutdown().unwrap();
    recovered
}

#[test]
fn killed_journaling_writer_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let acked = kill_child_after_acks(&db, "journal");
    // What the killed writer committed is a chain that verifies on its own.
    let before = verify_store(&db).unwrap();
    assert!(before.ok, "{before:?}");
    let recovered = restart(&db);
    assert_eq!(
        before.records + recovered,
        verify_store(&db).unwrap().records
    );
    assert_all_stored(&db, &acked);
    // Committed once: a second start finds nothing left to recover.
    assert_eq!(restart(&db), 0);
    assert_all_stored(&db, &acked);
}

#[test]
fn acknowledgements_that_only_reached_the_journal_are_committed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let acked = kill_child_after_acks(&db, "journal-blocked");
    assert_eq!(
        verify_store(&db).unwrap().records,
        0,
        "nothing was committed before the kill"
    );
    assert!(log::journal_pending(&db).unwrap() >= acked.len() as u64);
    let recovered = restart(&db);
    assert!(
        recovered >= acked.len() as u64,
        "recovered {recovered} of {} acknowledged",
        acked.len()
    );
    assert_all_stored(&db, &acked);
}

#[test]
fn killed_writer_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let acked = kill_child_after_acks(&db, "ticket");
    // No journal: what the killed process committed is everything there is.
    assert_all_stored(&db, &acked);
}
