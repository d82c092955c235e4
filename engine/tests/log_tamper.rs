#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The tamper suite (#18): each case works on a copy of a real log written by the writer (with signed anchors, as
//! the proxy writes it) and must be reported as NOT intact, naming the first seq that disagrees where there is one;
//! the untouched log and a pruned one verify clean. The rechaining attacker below is real code: it recomputes every
//! hash exactly as the log does, so the plain chain check says intact and only the signed anchors catch it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jitgate_engine::log::{
    self, AnchorKey, AnchorOptions, DecisionRecord, ExportManifest, FailureKind, Filter, Format,
    LogOptions, LogWriter, Outcome, PruneOptions, RecordKind, VerifyOptions, VerifyReport,
    export_to_file, manifest_path, verify_export_with, verify_log, verify_store,
};
use rusqlite::{Connection, params};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);
const N: i64 = 100;
const EVERY: u64 = 10;

fn rec(i: i64) -> DecisionRecord {
    let mut r = DecisionRecord::at(RecordKind::Decision, T0 + time::Duration::minutes(i));
    r.principal = if i <= 30 {
        format!(r#"User::"early-{i}""#)
    } else {
        format!(r#"User::"u{}""#, i % 3)
    };
    r.action = r#"Action::"deleteDatabase""#.into();
    r.resource = format!(r#"Database::"db{i}""#);
    r.decision = Some(if i % 2 == 0 {
        Outcome::Allow
    } else {
        Outcome::Deny
    });
    r.policies = vec!["policy0".into(), "semi;colon".into()];
    if i % 4 == 0 {
        r.grants_used = vec![format!("g{i}"), "gshared".into()];
    }
    if i % 7 == 0 {
        r.errors = vec!["a; b".into(), String::new()];
        r.request_id = Some(String::new());
    } else {
        r.request_id = Some(format!("req-{i}"));
    }
    r.revision = "rev1".into();
    r.engine = "cedar".into();
    r.latency_us = 12;
    r.method = Some(if i % 5 == 0 { "PATCH" } else { "DELETE" }.into());
    r.path = Some(format!("/databases/db{i}"));
    r.client_addr = Some("10.0.0.1:5555".into());
    r.status = Some(if i % 2 == 0 { 200 } else { 403 });
    r.context = json!({"source_ip": "10.0.0.1", "claims": {"sub": format!("jti-{i}"), "groups": ["a", "b"]}})
        .as_object()
        .cloned()
        .unwrap();
    r
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    key: PathBuf,
    public: ed25519_dalek::VerifyingKey,
}

fn anchor_opts(key: &Path, anchors: &Path) -> AnchorOptions {
    AnchorOptions {
        key: Arc::new(AnchorKey::load_or_generate(key).unwrap()),
        file: anchors.to_path_buf(),
        replica: "test-replica".into(),
        every: Duration::from_secs(3600),
        every_records: EVERY,
    }
}

/// A log of `N` records written by the writer with anchors every `EVERY` records, in `dir/log.db`, anchors in
/// `dir/log.db.anchors.jsonl`, the key outside that directory.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("orig");
    let key = tmp.path().join("keys/anchor.key");
    let db = dir.join("log.db");
    let w = LogWriter::start(
        &db,
        LogOptions {
            anchor: Some(anchor_opts(&key, &log::anchors_path(&db))),
            ..LogOptions::default()
        },
    )
    .unwrap();
    for i in 1..=N {
        let _ = w.append(rec(i)).unwrap();
        if i % 13 == 0 {
            w.flush().unwrap();
        }
    }
    w.shutdown().unwrap();
    let public = log::load_public_key(&log::public_key_path(&key)).unwrap();
    Fixture {
        dir,
        key,
        public,
        _dir: tmp,
    }
}

impl Fixture {
    /// A copy of the log and its anchors in a directory of its own.
    fn copy(&self, name: &str) -> PathBuf {
        let to = self.dir.parent().unwrap().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&self.dir).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
        to.join("log.db")
    }

    fn verify(&self, db: &Path) -> VerifyReport {
        self.verify_with(db, &self.public)
    }

    fn verify_with(&self, db: &Path, key: &ed25519_dalek::VerifyingKey) -> VerifyReport {
        let opts = VerifyOptions {
            public_key: Some(*key),
            anchors: None,
        };
        verify_log(db, &opts, &mut |_| {}).unwrap()
    }
}

fn failure(r: &VerifyReport) -> (Option<i64>, FailureKind) {
    assert!(!r.ok, "expected NOT intact: {r:?}");
    let f = r.failure.as_ref().unwrap();
    (f.seq, f.kind)
}

fn all_records(db: &Path) -> Vec<DecisionRecord> {
    log::query(db, &Filter::default(), None, 100_000)
        .unwrap()
        .records
}

/// The attacker's writer: puts `recs` into the file as the log stores them (every column, the grant index, the
/// head), replacing what was there.
fn rewrite(db: &Path, recs: &[DecisionRecord]) {
    let mut conn = Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute_batch("DELETE FROM decisions; DELETE FROM decision_grants; DELETE FROM log_head;")
        .unwrap();
    for r in recs {
        tx.execute(
            "INSERT INTO decisions (seq, id, time, kind, request_id, principal, action, resource, context, decision,
               policies, grants_used, errors, revision, engine, latency_us, client_addr, method, path, status,
               break_glass, redacted, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
               ?21, ?22, ?23, ?24)",
            params![
                r.seq,
                r.id,
                r.time,
                r.kind.as_str(),
                r.request_id,
                r.principal,
                r.action,
                r.resource,
                j(&r.context),
                r.decision.map(Outcome::as_str),
                j(&r.policies),
                j(&r.grants_used),
                j(&r.errors),
                r.revision,
                r.engine,
                r.latency_us as i64,
                r.client_addr,
                r.method,
                r.path,
                r.status,
                r.break_glass,
                j(&r.redacted),
                r.prev_hash,
                r.hash,
            ],
        )
        .unwrap();
        for g in &r.grants_used {
            tx.execute(
                "INSERT INTO decision_grants (grant_id, seq) VALUES (?1, ?2)",
                params![g, r.seq],
            )
            .unwrap();
        }
    }
    if let Some(last) = recs.last() {
        tx.execute(
            "INSERT INTO log_head (id, seq, hash) VALUES (1, ?1, ?2)",
            params![last.seq, last.hash],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn j<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

/// Recomputes the chain from `from` on, as the log does: `hash = sha256(prev_hash || canonical bytes)`, each record
/// renumbered after the one before it.
fn rechain(recs: &mut [DecisionRecord]) {
    let mut prev = log::GENESIS_HASH.to_string();
    for (i, r) in recs.iter_mut().enumerate() {
        r.seal(i as i64 + 1, &prev);
        prev.clone_from(&r.hash);
    }
}

#[test]
fn an_untouched_log_verifies_against_its_anchors() {
    let fx = fixture();
    let db = fx.copy("untouched");
    let r = fx.verify(&db);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.records, N as u64);
    assert_eq!(r.anchored_seq, Some(N));
    // start, one per EVERY records, shutdown
    assert_eq!(r.anchors, 1 + N as u64 / EVERY + 1);
    let latest = log::latest_anchor(&log::anchors_path(&db))
        .unwrap()
        .unwrap();
    assert_eq!(latest.seq, N);
    assert_eq!(latest.reason, log::AnchorReason::Shutdown);
    assert!(latest.signature_ok(&fx.public));
}

#[test]
fn an_edited_record_is_caught_at_its_seq() {
    let fx = fixture();
    let db = fx.copy("edit");
    Connection::open(&db)
        .unwrap()
        .execute("UPDATE decisions SET decision = 'allow' WHERE seq = 37", [])
        .unwrap();
    assert_eq!(
        failure(&fx.verify(&db)),
        (Some(37), FailureKind::HashMismatch)
    );
}

#[test]
fn a_deleted_middle_record_is_caught() {
    let fx = fixture();
    let db = fx.copy("delete-middle");
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DELETE FROM decisions WHERE seq = 50; DELETE FROM decision_grants WHERE seq = 50;",
        )
        .unwrap();
    assert_eq!(failure(&fx.verify(&db)), (Some(50), FailureKind::Missing));
}

#[test]
fn deleting_the_newest_records_and_rewinding_the_head_is_caught_by_the_anchors() {
    let fx = fixture();
    let db = fx.copy("rewind");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "DELETE FROM decisions WHERE seq > 90; DELETE FROM decision_grants WHERE seq > 90;",
    )
    .unwrap();
    let h: String = conn
        .query_row("SELECT hash FROM decisions WHERE seq = 90", [], |r| {
            r.get(0)
        })
        .unwrap();
    conn.execute("UPDATE log_head SET seq = 90, hash = ?1", [h])
        .unwrap();
    drop(conn);
    assert!(
        verify_store(&db).unwrap().ok,
        "the chain alone cannot see it"
    );
    assert_eq!(failure(&fx.verify(&db)), (Some(91), FailureKind::Missing));
}

#[test]
fn a_rechained_deletion_is_caught_by_the_anchors() {
    let fx = fixture();
    let db = fx.copy("rechain");
    let mut recs = all_records(&db);
    recs.retain(|r| r.seq != 55);
    rechain(&mut recs);
    rewrite(&db, &recs);
    assert!(
        verify_store(&db).unwrap().ok,
        "the attacker's chain is consistent"
    );
    let (seq, kind) = failure(&fx.verify(&db));
    assert_eq!(kind, FailureKind::AnchorMismatch);
    // The first record after the last anchor that still matches (seq 50).
    assert_eq!(seq, Some(51));
}

#[test]
fn a_rechained_edit_of_a_principal_is_caught_by_the_anchors() {
    let fx = fixture();
    let db = fx.copy("rechain-edit");
    let mut recs = all_records(&db);
    recs[71].principal = r#"User::"someone-else""#.into();
    rechain(&mut recs);
    rewrite(&db, &recs);
    assert!(verify_store(&db).unwrap().ok);
    assert_eq!(
        failure(&fx.verify(&db)),
        (Some(71), FailureKind::AnchorMismatch)
    );
}

#[test]
fn a_forged_append_is_caught() {
    let fx = fixture();
    let db = fx.copy("append");
    let mut recs = all_records(&db);
    let mut forged = rec(N + 1);
    forged.principal = r#"User::"mallory""#.into();
    recs.push(forged);
    rechain(&mut recs);
    rewrite(&db, &recs);
    assert!(verify_store(&db).unwrap().ok);
    assert_eq!(
        failure(&fx.verify(&db)),
        (Some(N + 1), FailureKind::Unanchored)
    );
}

#[test]
fn swapped_records_are_caught() {
    let fx = fixture();
    let db = fx.copy("swap");
    let mut recs = all_records(&db);
    let (a, b) = (recs[19].clone(), recs[20].clone());
    // The attacker swaps the content and keeps each seq where it was.
    recs[19] = DecisionRecord { seq: 20, ..b };
    recs[20] = DecisionRecord { seq: 21, ..a };
    rewrite(&db, &recs);
    let (seq, _) = failure(&fx.verify(&db));
    assert_eq!(seq, Some(20));
}

#[test]
fn a_wiped_log_is_caught() {
    let fx = fixture();
    let db = fx.copy("wipe");
    rewrite(&db, &[]);
    assert!(
        verify_store(&db).unwrap().ok,
        "an empty log is a valid chain"
    );
    assert_eq!(failure(&fx.verify(&db)), (Some(1), FailureKind::Missing));
    std::fs::remove_file(&db).unwrap();
    assert_eq!(failure(&fx.verify(&db)), (Some(1), FailureKind::Missing));
}

#[test]
fn a_truncated_or_damaged_file_is_not_intact_rather_than_an_error() {
    let fx = fixture();
    let db = fx.copy("truncate");
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let r = fx.verify(&db);
    assert!(!r.ok, "{r:?}");
    let db2 = fx.copy("garbage");
    std::fs::write(&db2, vec![0x5a; 8192]).unwrap();
    let (_, kind) = failure(&fx.verify(&db2));
    assert_eq!(kind, FailureKind::Corrupt);
}

fn edit_anchor_lines(db: &Path, f: impl FnOnce(Vec<String>) -> Vec<String>) {
    let path = log::anchors_path(db);
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut out = f(lines).join("\n");
    out.push('\n');
    std::fs::write(path, out).unwrap();
}

#[test]
fn an_edited_anchors_file_is_caught() {
    let fx = fixture();
    let db = fx.copy("anchors-edit");
    // The attacker rewinds the log and edits the anchors to match.
    let mut recs = all_records(&db);
    recs.truncate(95);
    rewrite(&db, &recs);
    let h95 = recs[94].hash.clone();
    edit_anchor_lines(&db, |lines| {
        lines
            .into_iter()
            .map(|l| {
                let mut a: log::Anchor = serde_json::from_str(&l).unwrap();
                if a.seq == N {
                    a.seq = 95;
                    a.head_hash = h95.clone();
                }
                serde_json::to_string(&a).unwrap()
            })
            .collect()
    });
    assert_eq!(failure(&fx.verify(&db)).1, FailureKind::AnchorSignature);
}

#[test]
fn a_truncated_anchors_file_is_caught() {
    let fx = fixture();
    let db = fx.copy("anchors-truncated");
    edit_anchor_lines(&db, |mut lines| {
        lines.truncate(3);
        lines
    });
    assert_eq!(
        failure(&fx.verify(&db)),
        (Some(21), FailureKind::Unanchored)
    );

    let db = fx.copy("anchors-cut");
    let path = log::anchors_path(&db);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    assert_eq!(failure(&fx.verify(&db)).1, FailureKind::AnchorInvalid);

    let db = fx.copy("anchors-gone");
    std::fs::remove_file(log::anchors_path(&db)).unwrap();
    assert_eq!(failure(&fx.verify(&db)).1, FailureKind::AnchorMissing);
}

#[test]
fn anchors_re_signed_with_another_key_or_a_wrong_public_key_are_caught() {
    let fx = fixture();
    let db = fx.copy("wrong-key");
    let other = AnchorKey::load_or_generate(&fx.dir.parent().unwrap().join("other.key")).unwrap();
    assert_eq!(
        failure(&fx.verify_with(&db, &other.verifying_key())).1,
        FailureKind::AnchorSignature
    );
    // The attacker forges a whole new log and anchors it with a key of their own.
    let forged = fx.copy("forged-anchors");
    std::fs::remove_file(log::anchors_path(&forged)).unwrap();
    let mut recs = all_records(&forged);
    recs.truncate(40);
    rechain(&mut recs);
    rewrite(&forged, &recs);
    let opts = anchor_opts(
        &fx.dir.parent().unwrap().join("other.key"),
        &log::anchors_path(&forged),
    );
    let w = LogWriter::start(
        &forged,
        LogOptions {
            anchor: Some(opts),
            ..LogOptions::default()
        },
    )
    .unwrap();
    w.shutdown().unwrap();
    assert!(fx.verify_with(&forged, &other.verifying_key()).ok);
    assert_eq!(failure(&fx.verify(&forged)).1, FailureKind::AnchorSignature);
}

fn export_and_edit(
    fx: &Fixture,
    name: &str,
    format: Format,
    edit: impl FnOnce(String) -> String,
) -> (PathBuf, ExportManifest) {
    let db = fx.copy(name);
    let out = db.with_file_name(format!("export.{}", format.extension()));
    let m = export_to_file(&db, &Filter::default(), format, &out).unwrap();
    assert!(!m.anchors.is_empty(), "the manifest carries the anchors");
    let r = verify_export_with(&out, &m, Some(&fx.public)).unwrap();
    assert!(r.ok, "{format:?} before the edit: {r:?}");
    assert_eq!(r.anchored_seq, Some(N));
    let text = std::fs::read_to_string(&out).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed something");
    std::fs::write(&out, &edited).unwrap();
    // The attacker recomputes the manifest's digest and size.
    let mut m2 = m.clone();
    m2.sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(edited.as_bytes()));
    m2.bytes = edited.len() as u64;
    std::fs::write(manifest_path(&out), serde_json::to_vec(&m2).unwrap()).unwrap();
    (out, m2)
}

#[test]
fn a_csv_edit_with_the_manifest_recomputed_is_caught() {
    let fx = fixture();
    let (out, m) = export_and_edit(&fx, "csv", Format::Csv, |t| {
        let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
        // Row of seq 3 (line 4): a deny becomes an allow.
        assert!(lines[3].starts_with("3,"));
        lines[3] = lines[3].replacen(",deny,", ",allow,", 1);
        lines.join("\n") + "\n"
    });
    let r = verify_export_with(&out, &m, None).unwrap();
    assert_eq!(failure(&r), (Some(3), FailureKind::HashMismatch));
}

#[test]
fn an_ocsf_edit_with_the_manifest_recomputed_is_caught() {
    let fx = fixture();
    // Blocked -> Allowed, in the caption only.
    let (out, m) = export_and_edit(&fx, "ocsf", Format::Ocsf, |t| {
        t.replacen(
            r#""disposition":"Blocked""#,
            r#""disposition":"Allowed""#,
            1,
        )
    });
    let r = verify_export_with(&out, &m, None).unwrap();
    assert_eq!(failure(&r).1, FailureKind::Corrupt);
    // And in the id too.
    let (out, m) = export_and_edit(&fx, "ocsf2", Format::Ocsf, |t| {
        t.replacen(
            r#""disposition":"Blocked","disposition_id":2"#,
            r#""disposition":"Allowed","disposition_id":1"#,
            1,
        )
    });
    let r = verify_export_with(&out, &m, None).unwrap();
    assert_eq!(failure(&r), (Some(1), FailureKind::HashMismatch));
}

#[test]
fn a_jsonl_export_rechained_by_the_attacker_is_caught_by_the_manifest_anchors() {
    let fx = fixture();
    let (out, m) = export_and_edit(&fx, "jsonl", Format::Jsonl, |t| {
        let mut recs: Vec<DecisionRecord> = t
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        recs[4].decision = Some(Outcome::Allow);
        rechain(&mut recs);
        recs.iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect()
    });
    let mut m = m;
    m.first_hash = None;
    m.last_hash = None;
    // Without the key the attacker's consistent chain passes the record checks but not the manifest's ends...
    let r = verify_export_with(&out, &m, None).unwrap();
    assert!(!r.ok);
    // ...and with the manifest's ends forged too, the signed anchors still catch it.
    let text = std::fs::read_to_string(&out).unwrap();
    let recs: Vec<DecisionRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    m.first_hash = Some(recs[0].hash.clone());
    m.last_hash = Some(recs[recs.len() - 1].hash.clone());
    assert!(verify_export_with(&out, &m, None).unwrap().ok);
    assert_eq!(
        failure(&verify_export_with(&out, &m, Some(&fx.public)).unwrap()).1,
        FailureKind::AnchorMismatch
    );
}

#[test]
fn a_pruned_log_verifies_clean_and_the_pruned_rows_are_gone_from_the_file() {
    let fx = fixture();
    let db = fx.copy("pruned");
    let raw = std::fs::read(&db).unwrap();
    let has = |hay: &[u8], n: &[u8]| hay.windows(n.len()).any(|w| w == n);
    assert!(has(&raw, b"early-7\""), "the record is in the file before");
    assert!(has(&raw, b"\"jti-7\""));
    let opts = PruneOptions {
        actor: "alice@host".into(),
        anchor: Some(anchor_opts(&fx.key, &log::anchors_path(&db))),
        ..PruneOptions::default()
    };
    // Two prunes, by two actors: each verifies, and the second keeps the first's history.
    let first = log::prune_with(&db, T0 + time::Duration::minutes(11), &opts).unwrap();
    assert_eq!(first.deleted, 10);
    assert!(fx.verify(&db).ok, "{:?}", fx.verify(&db));
    let opts2 = PruneOptions {
        actor: "retention".into(),
        ..opts.clone()
    };
    let second = log::prune_with(&db, T0 + time::Duration::minutes(31), &opts2).unwrap();
    assert_eq!(
        second.deleted, 20,
        "records 11..=30 (the first checkpoint is new, and kept)"
    );
    let r = fx.verify(&db);
    assert!(r.ok, "{r:?}");
    let cp = all_records(&db)
        .into_iter()
        .rfind(|r| r.kind == RecordKind::Checkpoint)
        .unwrap();
    assert_eq!(cp.context["actor"], "retention");
    let hist = cp.context["history"].as_array().unwrap();
    assert_eq!(hist.len(), 1, "{hist:?}");
    assert_eq!(hist[0]["actor"], "alice@host");
    assert_eq!(hist[0]["pruned_records"], 10);
    // Nothing of the pruned records is left in the file: no principal, no jti.
    let raw = std::fs::read(&db).unwrap();
    for i in 1..=30 {
        assert!(
            !has(&raw, format!("early-{i}\"").as_bytes()),
            "principal of pruned record {i} still in the file"
        );
        assert!(
            !has(&raw, format!("\"jti-{i}\"").as_bytes()),
            "jti of pruned record {i} still in the file"
        );
    }
    assert!(has(&raw, b"\"jti-31\""), "kept records are still there");
}

#[test]
fn verify_opens_read_only_and_leaves_nothing_behind() {
    let fx = fixture();
    let db = fx.copy("readonly");
    let list = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let dir = db.parent().unwrap();
    let before = list(dir);
    let modified = std::fs::metadata(&db).unwrap().modified().unwrap();
    let mut perms = std::fs::metadata(&db).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&db, perms).unwrap();
    assert!(fx.verify(&db).ok);
    assert_eq!(list(dir), before, "no -wal, -shm or journal left behind");
    assert_eq!(
        std::fs::metadata(&db).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn the_anchor_example_and_real_anchors_match_the_anchor_schema() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("schemas/anchor.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let example: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("schemas/examples/anchor.json")).unwrap())
            .unwrap();
    let _: log::Anchor = serde_json::from_value(example.clone()).unwrap();
    assert!(validator.is_valid(&example));
    let fx = fixture();
    let text = std::fs::read_to_string(log::anchors_path(&fx.dir.join("log.db"))).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}: {errors:?}");
    }
}
