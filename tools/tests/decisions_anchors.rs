//! `jitgate decisions verify | anchor | prune` on an anchored log (#18): exit 0 intact, 1 NOT intact (a tampered
//! log, a damaged file, the wrong key), 2 could not check; prune signs what it pruned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use jitgate_engine::log::{
    self, AnchorKey, AnchorOptions, DecisionRecord, LogOptions, LogWriter, Outcome, RecordKind,
};

fn jitgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// 30 records, anchored every 10, with the key `anchor.key` beside the log (as the quickstart keeps it).
fn anchored_log(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("decisions.db");
    let opts = AnchorOptions {
        key: Arc::new(AnchorKey::load_or_generate(&dir.join("anchor.key")).unwrap()),
        file: log::anchors_path(&db),
        replica: "cli-test".into(),
        every: Duration::from_secs(3600),
        every_records: 10,
    };
    let w = LogWriter::start(
        &db,
        LogOptions {
            anchor: Some(opts),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let t0 = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    for i in 0..30i64 {
        let mut r = DecisionRecord::at(RecordKind::Decision, t0 + time::Duration::hours(i));
        r.principal = format!(r#"User::"u{i}""#);
        r.decision = Some(Outcome::Deny);
        w.append(r).unwrap().wait().unwrap();
    }
    w.shutdown().unwrap();
    db
}

#[test]
fn verify_checks_the_anchors_with_the_key_beside_the_log_or_the_one_given() {
    let dir = tempfile::tempdir().unwrap();
    let db = anchored_log(dir.path());
    let db_arg = db.to_str().unwrap();
    let o = jitgate(&["decisions", "verify", "--log", db_arg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).starts_with("intact: 30 records"), "{}", text(&o));
    assert!(text(&o).contains("signed anchors verified"), "{}", text(&o));

    // The latest anchor, for publishing; it verifies with the public key.
    let pubkey = dir.path().join("anchor.key.pub");
    let o = jitgate(&[
        "decisions",
        "anchor",
        "--log",
        db_arg,
        "--public-key",
        pubkey.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let a: log::Anchor = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((a.seq, a.reason), (30, log::AnchorReason::Shutdown));

    // Another key: NOT intact.
    let other = tempfile::tempdir().unwrap();
    AnchorKey::load_or_generate(&other.path().join("k")).unwrap();
    let other_pub = other.path().join("k.pub");
    let o = jitgate(&[
        "decisions",
        "verify",
        "--log",
        db_arg,
        "--public-key",
        other_pub.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).starts_with("NOT intact"), "{}", text(&o));

    // Anchors but no key to check them with: the chain alone is not called intact.
    std::fs::remove_file(&pubkey).unwrap();
    let o = jitgate(&["decisions", "verify", "--log", db_arg]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--public-key"), "{}", text(&o));
}

#[test]
fn a_rewound_log_and_a_damaged_file_are_not_intact_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let db = anchored_log(dir.path());
    let db_arg = db.to_str().unwrap();
    // Rewind: the head row is rewritten to the 25th record, the newer ones deleted.
    let recs = log::query(&db, &log::Filter::default(), None, 100)
        .unwrap()
        .records;
    let keep = &recs[24];
    let sql = format!(
        "DELETE FROM decisions WHERE seq > 25; UPDATE log_head SET seq = 25, hash = '{}';",
        keep.hash
    );
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&sql)
        .unwrap();
    let o = jitgate(&["decisions", "verify", "--log", db_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("seq 26"), "{}", text(&o));

    // A damaged file: exit 1 with what was found, not an error.
    std::fs::write(&db, vec![7u8; 4096]).unwrap();
    let o = jitgate(&["decisions", "verify", "--log", db_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("damaged"), "{}", text(&o));
}

#[test]
fn prune_signs_what_it_pruned_and_the_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let db = anchored_log(dir.path());
    let db_arg = db.to_str().unwrap();
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(29);
    let cutoff = log::format_time(cutoff);
    let o = jitgate(&["decisions", "prune", "--log", db_arg, "--before", &cutoff]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = jitgate(&["decisions", "verify", "--log", db_arg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let cp = log::query(
        &db,
        &log::Filter {
            kind: Some(RecordKind::Checkpoint),
            ..Default::default()
        },
        None,
        10,
    )
    .unwrap()
    .records;
    let actor = cp[0].context["actor"].as_str().unwrap().to_string();
    assert!(actor.contains('@'), "the CLI names user@host: {actor}");
    let latest = log::latest_anchor(&log::anchors_path(&db))
        .unwrap()
        .unwrap();
    assert_eq!(latest.reason, log::AnchorReason::Prune);
    assert_eq!(latest.seq, cp[0].seq);

    // Without the key, an anchored log is not pruned (its pruned head could not be signed).
    std::fs::rename(dir.path().join("anchor.key"), dir.path().join("moved.key")).unwrap();
    let o = jitgate(&["decisions", "prune", "--log", db_arg, "--before", &cutoff]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--anchor-key"), "{}", text(&o));
}
