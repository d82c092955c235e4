//! Decision logs across replicas (issue 16, item 6) with the real `jitgate` binary and the real PostgreSQL: three
//! replicas on loopback each write decisions to their own local log, their shippers copy the sealed records into
//! the shared store, and `jitgate decisions query|export|verify --store postgres://...` reads them over all
//! replicas: every chain intact; a record edited (or deleted) in PostgreSQL named with its replica and first bad seq;
//! a restarted replica ships nothing twice. Bad store URLs fail clearly. Pruning a shipped log never removes what
//! was not shipped yet; signed anchors are shipped too, and verify with the public key checks every chain against
//! them: a rewound head, a forged anchor and a chain moved to another replica's name are caught. Skipped, and said
//! so, when `JITGATE_TEST_POSTGRES` is unset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod run_cli;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use jitgate_engine::log::Filter;
use jitgate_engine::postgres::decisions::Records;
use jitgate_engine::postgres::scratch::{Scratch, test_url};
use run_cli::{Served, serve};

fn bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-cedar")
}

fn log_of(dir: &Path, replica: &str) -> PathBuf {
    dir.join(format!("{replica}-decisions.db"))
}

/// A config in `dir` with the quickstart bundle, ephemeral ports, the store at `url` and its own log.
fn config(dir: &Path, url: &str, key: &Path, replica: &str) -> PathBuf {
    config_with(dir, url, key, replica, "")
}

/// [`config`] with more `[log]` lines.
fn config_with(dir: &Path, url: &str, key: &Path, replica: &str, log_extra: &str) -> PathBuf {
    let path = dir.join(format!("{replica}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[bundle]
path = "{bundle}"
watch = false
[store]
url = "{url}"
[log]
path = "{log}"
{log_extra}
[cluster]
replica = "{replica}"
[local_issuer]
key_file = "{key}"
issuer = "jitgate"
audience = "jitgate"
[upstreams.payments]
url = "http://127.0.0.1:9"
[upstreams.billing]
url = "http://127.0.0.1:9"
"#,
            bundle = bundle().display(),
            log = log_of(dir, replica).display(),
            key = key.display(),
        ),
    )
    .unwrap();
    path
}

fn jitgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jitgate"))
}

fn token(key: &Path, who: &str, groups: &str) -> String {
    let out = jitgate()
        .args(["dev-token", "--key-file"])
        .arg(key)
        .args([
            "--principal",
            &format!("User::\"{who}\""),
            "--groups",
            groups,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `n` requests that the policies deny (no grant): each is one decision record.
fn denied_requests(proxy: &str, tok: &str, n: usize) {
    let http = reqwest::blocking::Client::new();
    for _ in 0..n {
        let s = http
            .post(format!("{proxy}/databases/orders/query"))
            .bearer_auth(tok)
            .send()
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(s, 403);
    }
}

fn local_count(dir: &Path, replica: &str) -> u64 {
    jitgate_engine::log::count(&log_of(dir, replica), &Filter::default()).unwrap()
}

/// Waits (10 s at most) until the store holds as many records of `replica` as its local log, and returns them.
fn shipped(url: &str, dir: &Path, replica: &str) -> u64 {
    let records = Records::open(url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let local = local_count(dir, replica);
        let there = records.count(Some(replica), &Filter::default()).unwrap();
        if local > 0 && there == local {
            return there;
        }
        assert!(
            Instant::now() < deadline,
            "replica {replica}: {there} of {local} records shipped after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn decisions(args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = jitgate().arg("decisions").args(args).output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).to_string(),
        String::from_utf8_lossy(&stderr).to_string(),
    )
}

/// A counter or gauge from the admin listener's `/metrics`.
fn metric(admin: &str, name: &str) -> f64 {
    let body = reqwest::blocking::get(format!("{admin}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
}

/// Waits (5 s at most) until a metric reads `want` (the counters move right after the rows they count commit).
fn wait_metric(admin: &str, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = metric(admin, name);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_replicas_ship_their_logs_and_every_chain_verifies_from_postgres() {
    let Some(base) =
        test_url("three_replicas_ship_their_logs_and_every_chain_verifies_from_postgres")
    else {
        return;
    };
    let scratch = Scratch::new(&base, "h3_ship").unwrap();
    let url = scratch.url();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let names = ["r1", "r2", "r3"];
    let served: Vec<Served> = names
        .iter()
        .map(|r| serve(&config(dir.path(), &url, &key, r)).unwrap())
        .collect();
    let alice = token(&key, "alice", "engineering");
    for (i, s) in served.iter().enumerate() {
        denied_requests(&s.proxy, &alice, 3 + i);
    }
    let counts: Vec<u64> = names.iter().map(|r| shipped(&url, dir.path(), r)).collect();
    assert!(counts.iter().all(|c| *c >= 3), "{counts:?}");
    // The lag gauge comes back to 0 once a replica caught up.
    wait_metric(&served[0].admin, "jitgate_log_shipper_lag_records", 0.0);

    // Every chain intact, each verified on its own.
    let (code, out, err) = decisions(&["verify", "--store", &url]);
    assert_eq!(code, Some(0), "{out}{err}");
    for (r, c) in names.iter().zip(&counts) {
        assert!(
            out.contains(&format!(
                "replica {r}: intact: {c} records verified (seq 1..{c})"
            )),
            "{out}"
        );
    }
    let total: u64 = counts.iter().sum();
    assert!(
        out.contains(&format!("intact: 3 replicas, {total} records verified")),
        "{out}"
    );

    // Query over all replicas, by replica then seq, with the replica in each line, and page by REPLICA:SEQ.
    let (code, out, err) = decisions(&["query", "--store", &url, "--limit", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["replica"].as_str(), lines[0]["seq"].as_i64()),
        (Some("r1"), Some(1))
    );
    assert!(err.contains("more records: --after r1:2"), "{err}");
    let (_, out, _) = decisions(&[
        "query", "--store", &url, "--after", "r1:2", "--limit", "1000",
    ]);
    assert_eq!(out.lines().count() as u64, total - 2);
    // Filters: one replica's denies.
    let (code, out, err) = decisions(&[
        "query",
        "--store",
        &url,
        "--replica",
        "r2",
        "--decision",
        "deny",
        "--limit",
        "1000",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let r2: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(r2.len() >= 4, "{out}");
    assert!(
        r2.iter()
            .all(|v| v["replica"] == "r2" && v["decision"] == "deny")
    );
    let (_, out, _) = decisions(&["query", "--store", &url, "--principal", "User::\"nobody\""]);
    assert_eq!(out, "");

    // An export is one replica's chain, and it verifies as an export of a local log does.
    let file = dir.path().join("r3.jsonl");
    let (code, out, err) = decisions(&["export", "--store", &url, "--out", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{out}");
    assert!(err.contains("pass --replica"), "{err}");
    for format in ["jsonl", "csv", "ocsf"] {
        let file = dir.path().join(format!("r3.{format}"));
        let (code, out, err) = decisions(&[
            "export",
            "--store",
            &url,
            "--replica",
            "r3",
            "--format",
            format,
            "--out",
            file.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.contains(&format!("exported {} records", counts[2])),
            "{out}"
        );
        let (code, out, _) = decisions(&["verify", "--export", file.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{format}: {out}");
    }

    // Tampering in PostgreSQL: an edited record is named with its replica and seq; the other chains stay intact.
    // The records are edited as rows and packed back into segments whose columns agree with them.
    scratch.unpack_segments("recs").unwrap();
    scratch
        .admin(
            "UPDATE recs SET record = replace(record, '\"status\":403', '\"status\":200')
             WHERE replica = 'r2' AND seq = 2;
             DELETE FROM recs WHERE replica = 'r3' AND seq = 3;",
        )
        .unwrap();
    scratch.pack_segments("recs").unwrap();
    let (code, out, _) = decisions(&["verify", "--store", &url]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("replica r1: intact"), "{out}");
    assert!(
        out.contains("replica r2: NOT intact: seq 2: content does not match its hash"),
        "{out}"
    );
    assert!(
        out.contains("replica r3: NOT intact: seq 3: record 3 is missing"),
        "{out}"
    );
    assert!(out.contains("NOT intact: 2 of 3 replicas"), "{out}");
    // One replica alone.
    let (code, out, _) = decisions(&["verify", "--store", &url, "--replica", "r1"]);
    assert_eq!(code, Some(0), "{out}");
    // A segment's column edited to hide its records from queries is caught too.
    scratch
        .admin(
            "UPDATE decision_segments SET principals = ARRAY['User::\"mallory\"']
             WHERE replica = 'r1' AND first_seq = 1",
        )
        .unwrap();
    let (code, out, _) = decisions(&["verify", "--store", &url, "--replica", "r1"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "replica r1: NOT intact: seq 1: the `principals` column of the segment from seq 1 disagrees"
        ),
        "{out}"
    );
}

#[test]
fn a_restarted_replica_resumes_shipping_and_ships_nothing_twice() {
    let Some(base) = test_url("a_restarted_replica_resumes_shipping_and_ships_nothing_twice")
    else {
        return;
    };
    let scratch = Scratch::new(&base, "h3_resume").unwrap();
    let url = scratch.url();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let cfg = config(dir.path(), &url, &key, "solo");
    let alice = token(&key, "alice", "engineering");
    let first = {
        let mut a = serve(&cfg).unwrap();
        denied_requests(&a.proxy, &alice, 4);
        let n = shipped(&url, dir.path(), "solo");
        wait_metric(&a.admin, "jitgate_log_shipped_records_total", n as f64);
        // No goodbye: the next start must resume from what the store holds.
        a.child.kill().unwrap();
        a.child.wait().unwrap();
        n
    };
    let a = serve(&cfg).unwrap();
    denied_requests(&a.proxy, &alice, 3);
    let second = shipped(&url, dir.path(), "solo");
    assert!(second >= first + 3, "{first} -> {second}");
    // This process shipped only what the first had not: nothing twice.
    wait_metric(
        &a.admin,
        "jitgate_log_shipped_records_total",
        (second - first) as f64,
    );
    assert_eq!(metric(&a.admin, "jitgate_log_shipper_errors_total"), 0.0);
    let (code, out, _) = decisions(&["verify", "--store", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("replica solo: intact: {second} records verified")),
        "{out}"
    );
}

#[test]
fn decisions_store_names_a_bad_url_a_missing_database_and_an_unmigrated_schema() {
    let Some(base) =
        test_url("decisions_store_names_a_bad_url_a_missing_database_and_an_unmigrated_schema")
    else {
        return;
    };
    // Unreachable: exit 3, the URL with its password masked, and the cause.
    let (code, _, err) = decisions(&[
        "verify",
        "--store",
        "postgres://postgres:hunter2@127.0.0.1:1/test",
    ]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("--store postgres://postgres:***@127.0.0.1:1/test")
            && err.contains("onnection refused")
            && !err.contains("hunter2"),
        "{err}"
    );
    // Not a PostgreSQL URL.
    let (code, _, err) = decisions(&["query", "--store", "mysql://x@127.0.0.1/db"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is not a postgres:// URL"), "{err}");
    // A database that does not exist.
    let missing = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/jg_h3_no_such_database"),
        None => panic!("{base}"),
    };
    let (code, _, err) = decisions(&["verify", "--store", &missing]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("jg_h3_no_such_database") && err.contains("does not exist"),
        "{err}"
    );
    // A schema no jitgate migrated: said so, and nothing is created by a reader.
    let scratch = Scratch::new(&base, "h3_empty").unwrap();
    let (code, _, err) = decisions(&["verify", "--store", &scratch.url()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no shipped decision records") && err.contains("version 0"),
        "{err}"
    );
    // A replica start-up against the missing database fails naming the key and the cause.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let e = serve(&config(dir.path(), &missing, &key, "nodb"))
        .err()
        .unwrap();
    assert!(
        e.contains("[store] url")
            && e.contains("jg_h3_no_such_database")
            && e.contains("does not exist"),
        "{e}"
    );
}

/// Anchored logs: `anchor_key` shared by the replicas of a test, an anchor after every record.
fn anchored(dir: &Path) -> String {
    format!(
        "anchor_key = \"{}\"\nanchor_records = 1",
        dir.join("anchor.key").display()
    )
}

fn local_head(dir: &Path, replica: &str) -> i64 {
    jitgate_engine::log::tail(&log_of(dir, replica), 1)
        .unwrap()
        .last()
        .map_or(0, |r| r.seq)
}

/// Waits (10 s at most) until the store holds `replica`'s records through its local head, its newest local anchor
/// signs that head and the store holds it too, and the log's shipping mark says so. Returns the head.
fn fully_shipped(scratch: &Scratch, dir: &Path, replica: &str) -> i64 {
    let log = log_of(dir, replica);
    let anchors = jitgate_engine::log::anchors_path(&log);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let head = local_head(dir, replica);
        let there = scratch
            .scalar(&format!(
                "SELECT seq FROM decision_heads WHERE replica = '{replica}'"
            ))
            .unwrap();
        let anchor = jitgate_engine::log::latest_anchor(&anchors)
            .unwrap()
            .map(|a| a.seq);
        let anchor_there = scratch
            .scalar(&format!(
                "SELECT MAX(seq) FROM decision_anchors WHERE replica = '{replica}'"
            ))
            .unwrap();
        let mark = jitgate_engine::log::shipped_mark(&log)
            .unwrap()
            .map(|m| m.seq);
        if head > 0
            && there == Some(head)
            && anchor == Some(head)
            && anchor_there == Some(head)
            && mark == Some(head)
        {
            return head;
        }
        assert!(
            Instant::now() < deadline,
            "replica {replica}: local head {head}, shipped {there:?}, anchor {anchor:?}, shipped anchor \
             {anchor_there:?}, mark {mark:?} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pruning_a_shipped_log_keeps_what_was_not_shipped_and_the_store_keeps_every_pruned_record() {
    let Some(base) = test_url(
        "pruning_a_shipped_log_keeps_what_was_not_shipped_and_the_store_keeps_every_pruned_record",
    ) else {
        return;
    };
    let scratch = Scratch::new(&base, "h4_prune").unwrap();
    let url = scratch.url();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let cfg = config_with(dir.path(), &url, &key, "p1", &anchored(dir.path()));
    let log = log_of(dir.path(), "p1");
    let anchor_key = dir.path().join("anchor.key");
    let public = dir.path().join("anchor.key.pub");
    let served = serve(&cfg).unwrap();
    let alice = token(&key, "alice", "engineering");
    denied_requests(&served.proxy, &alice, 5);
    let shipped_through = fully_shipped(&scratch, dir.path(), "p1");

    // The store refuses new records for a while (as an outage would): the shipper retries, the replica serves.
    scratch
        .admin(
            "CREATE FUNCTION refuse_records() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'the store is refusing records'; END $$;
             CREATE TRIGGER refuse_records BEFORE INSERT ON decision_segments
                 FOR EACH ROW EXECUTE FUNCTION refuse_records();",
        )
        .unwrap();
    denied_requests(&served.proxy, &alice, 4);
    let head = local_head(dir.path(), "p1");
    assert!(head >= shipped_through + 4, "{shipped_through} -> {head}");
    let prune = |json: bool| {
        // Every record is older than the cutoff: only the shipping mark holds any back.
        let cutoff = jitgate_engine::log::format_time(
            time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1),
        );
        std::thread::sleep(Duration::from_millis(2));
        let mut args = vec![
            "prune",
            "--log",
            log.to_str().unwrap(),
            "--before",
            cutoff.as_str(),
            "--anchor-key",
            anchor_key.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        let (code, out, err) = decisions(&args);
        assert_eq!(code, Some(0), "{out}{err}");
        out
    };
    let out = prune(true);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["pruned_through"], shipped_through, "{out}");
    assert_eq!(r["shipped_through"], shipped_through, "{out}");
    assert_eq!(
        r["kept_unshipped"].as_i64(),
        Some(head - shipped_through),
        "{out}"
    );
    // Nothing after the shipped seq went; the rest still verifies locally.
    let first_local = jitgate_engine::log::query(&log, &Filter::default(), None, 1)
        .unwrap()
        .records[0]
        .seq;
    assert_eq!(first_local, shipped_through + 1);
    let (code, out, _) = decisions(&[
        "verify",
        "--log",
        log.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    // Said in words too.
    let out = prune(false);
    assert!(
        out.contains("not copied into the store yet")
            && out.contains(&format!("shipped through seq {shipped_through}")),
        "{out}"
    );

    // The store takes records again: the shipper catches up, and the next prune removes what it shipped.
    scratch
        .admin("DROP TRIGGER refuse_records ON decision_segments")
        .unwrap();
    let head = fully_shipped(&scratch, dir.path(), "p1");
    let out = prune(true);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["kept_unshipped"], 0, "{out}");
    assert_eq!(r["shipped_through"], head, "{out}");
    let head = fully_shipped(&scratch, dir.path(), "p1");
    drop(served);

    // Every record ever written is in the store, from seq 1: the chain verifies there, against its anchors too.
    assert_eq!(
        scratch
            .scalar("SELECT SUM(count) FROM decision_segments WHERE replica = 'p1'")
            .unwrap(),
        Some(head)
    );
    assert_eq!(
        scratch
            .scalar("SELECT MIN(first_seq) FROM decision_segments WHERE replica = 'p1'")
            .unwrap(),
        Some(1)
    );
    let (code, out, _) = decisions(&[
        "verify",
        "--store",
        &url,
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "replica p1: intact: {head} records verified (seq 1..{head}); "
        )) && out.contains(&format!("signed through seq {head}")),
        "{out}"
    );
    // Locally only the newest are left, and they verify against the same anchors.
    let (code, out, _) = decisions(&[
        "verify",
        "--log",
        log.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn shipped_anchors_prove_each_replica_chain_and_tampering_in_postgres_is_caught() {
    let Some(base) =
        test_url("shipped_anchors_prove_each_replica_chain_and_tampering_in_postgres_is_caught")
    else {
        return;
    };
    let scratch = Scratch::new(&base, "h4_anchors").unwrap();
    let url = scratch.url();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let public = dir.path().join("anchor.key.pub");
    let alice = token(&key, "alice", "engineering");
    let mut heads = Vec::new();
    for (i, r) in ["a1", "a2"].iter().enumerate() {
        let served = serve(&config_with(
            dir.path(),
            &url,
            &key,
            r,
            &anchored(dir.path()),
        ))
        .unwrap();
        denied_requests(&served.proxy, &alice, 4 + i);
        heads.push(fully_shipped(&scratch, dir.path(), r));
    }
    let (h1, h2) = (heads[0], heads[1]);
    let verify = |key: bool| {
        let mut args = vec!["verify", "--store", url.as_str()];
        if key {
            args.extend(["--public-key", public.to_str().unwrap()]);
        }
        decisions(&args)
    };
    let (code, out, _) = verify(true);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "replica a1: intact: {h1} records verified (seq 1..{h1}); "
        )) && out.contains(&format!("signed through seq {h2}")),
        "{out}"
    );
    let anchors_a1 = scratch
        .scalar("SELECT COUNT(*) FROM decision_anchors WHERE replica = 'a1'")
        .unwrap()
        .unwrap();
    assert!(
        out.contains(&format!("{anchors_a1} signed anchors verified")),
        "{out}"
    );
    // A wrong key: every replica fails on its first anchor.
    let other = dir.path().join("other.key");
    jitgate_engine::log::AnchorKey::load_or_generate(&other).unwrap();
    let (code, out, _) = decisions(&[
        "verify",
        "--store",
        &url,
        "--public-key",
        dir.path().join("other.key.pub").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not by the given public key"), "{out}");

    // Each case is undone before the next.
    scratch
        .admin(
            "CREATE TABLE keep_segments AS SELECT * FROM decision_segments;
             CREATE TABLE keep_heads AS SELECT * FROM decision_heads;
             CREATE TABLE keep_anchors AS SELECT * FROM decision_anchors;",
        )
        .unwrap();
    let restore = || {
        scratch
            .admin(
                "DELETE FROM decision_segments; INSERT INTO decision_segments SELECT * FROM keep_segments;
                 DROP TABLE IF EXISTS recs;
                 DELETE FROM decision_heads; INSERT INTO decision_heads SELECT * FROM keep_heads;
                 DELETE FROM decision_anchors; INSERT INTO decision_anchors SELECT * FROM keep_anchors;",
            )
            .unwrap();
        let (code, out, _) = verify(true);
        assert_eq!(code, Some(0), "restored: {out}");
    };

    // Records are edited as rows and packed back into segments whose columns agree with them.
    let tamper = |sql: &str| {
        scratch.unpack_segments("recs").unwrap();
        scratch.admin(sql).unwrap();
        scratch.pack_segments("recs").unwrap();
    };
    // The newest two records of a1 deleted and its head rewound: the chain alone still looks whole, the anchors
    // do not.
    tamper(&format!(
        "DELETE FROM recs WHERE replica = 'a1' AND seq > {k};
         UPDATE decision_heads SET seq = {k},
           hash = (SELECT record::jsonb->>'hash' FROM recs WHERE replica = 'a1' AND seq = {k})
         WHERE replica = 'a1';",
        k = h1 - 2
    ));
    let (code, out, _) = verify(false);
    assert_eq!(code, Some(0), "the chain alone cannot see it: {out}");
    let (code, out, _) = verify(true);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "replica a1: NOT intact: seq {}: the anchor signed at",
            h1 - 1
        )) && out.contains("records were removed")
            && out.contains("replica a2: intact"),
        "{out}"
    );
    restore();

    // A record edited in place (the chain breaks there), with the key as without.
    tamper(
        "UPDATE recs SET record = replace(record, '\"status\":403', '\"status\":200')
         WHERE replica = 'a2' AND seq = 2",
    );
    let (code, out, _) = verify(true);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("replica a2: NOT intact: seq 2: content does not match its hash"),
        "{out}"
    );
    restore();

    // A forged anchor (its hash column recomputed): the signature does not verify.
    scratch
        .admin(
            "UPDATE decision_anchors SET anchor = replace(anchor, '\"reason\":\"count\"', '\"reason\":\"interval\"')
             WHERE replica = 'a1' AND n = 2;
             UPDATE decision_anchors SET hash = encode(sha256(convert_to(anchor, 'UTF8')), 'hex')
             WHERE replica = 'a1' AND n = 2;",
        )
        .unwrap();
    let (code, out, _) = verify(true);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("replica a1: NOT intact:")
            && out.contains("anchor 2: the signature does not verify"),
        "{out}"
    );
    restore();

    // One record moved from a1's chain to a2's (as a2's next seq, heads moved along): both chains say so.
    tamper(&format!(
        "UPDATE recs SET replica = 'a2', seq = {next} WHERE replica = 'a1' AND seq = {h1};
         UPDATE decision_heads SET seq = {next}, hash = (SELECT record::jsonb->>'hash' FROM recs
           WHERE replica = 'a2' AND seq = {next}) WHERE replica = 'a2';
         UPDATE decision_heads SET seq = {prev}, hash = (SELECT record::jsonb->>'hash' FROM recs
           WHERE replica = 'a1' AND seq = {prev}) WHERE replica = 'a1';",
        next = h2 + 1,
        prev = h1 - 1
    ));
    let (code, out, _) = verify(true);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("replica a2: NOT intact: seq {}", h2 + 1))
            && out.contains(&format!("replica a1: NOT intact: seq {h1}")),
        "{out}"
    );
    restore();

    // a1's whole chain and anchors moved to a2's name, a2's own removed: a consistent chain, but the anchors were
    // signed for a1.
    scratch
        .admin(
            "DELETE FROM decision_segments WHERE replica = 'a2';
             DELETE FROM decision_anchors WHERE replica = 'a2';
             DELETE FROM decision_heads WHERE replica = 'a2';
             UPDATE decision_segments SET replica = 'a2' WHERE replica = 'a1';
             UPDATE decision_anchors SET replica = 'a2' WHERE replica = 'a1';
             UPDATE decision_heads SET replica = 'a2' WHERE replica = 'a1';",
        )
        .unwrap();
    let (code, out, _) = verify(false);
    assert_eq!(code, Some(0), "the chain alone cannot see it: {out}");
    let (code, out, _) = verify(true);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("replica a2: NOT intact:")
            && out.contains(
                "signed for replica `a1`, not `a2`: records or anchors were moved between replicas"
            ),
        "{out}"
    );
    restore();
}
