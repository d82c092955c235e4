#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A process killed (SIGKILL) while the decision-log writer is mid-batch leaves a chain that verifies and holds
//! every record whose ticket had resolved Ok, i.e. every decision whose response was already sent.

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
/// Acknowledged ids the parent waits for before it kills the child.
const KILL_AFTER: usize = 500;
/// The child stops by itself after this, so a parent that never kills it cannot hang the suite.
const CHILD_DEADLINE: Duration = Duration::from_secs(20);
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
fn run_child(db: &Path) {
    let w = Arc::new(
        LogWriter::start(
            db,
            LogOptions {
                batch_max: 256,
                queue_capacity: 1024,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while start.elapsed() < CHILD_DEADLINE {
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
        run_child(Path::new(&db));
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

#[test]
fn killed_writer_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db)
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

    let report = verify_store(&db).unwrap();
    assert!(report.ok, "{report:?}");
    let stored = all_ids(&db);
    assert_eq!(report.records, stored.len() as u64);
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged records are missing, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.first()
    );
    assert!(stored.len() >= acked.len());
}
