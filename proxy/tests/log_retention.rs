//! Automatic decision-log retention (`[log] retain`) end to end: a real proxy whose log file was seeded with old
//! records prunes them at start, through the engine's prune on its own connection, while live requests are being
//! decided and logged by the writer; then again every interval. Afterwards the old records are gone, checkpoints
//! account for them, every live request's record is there, and the chain verifies. Progress is read from the real
//! `/metrics` endpoint, polled with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use jitgate_engine::log::{
    DecisionRecord, Filter, LogOptions, LogWriter, Outcome, RecordKind, format_time, query,
    verify_store,
};
use support::*;
use time::OffsetDateTime;

/// Old enough to be pruned: more than one chunk of prune's (5,000), so the writer has to get in between chunks.
const OLD: u64 = 12_000;
/// Recent records that were there before the proxy started and must be kept.
const RECENT: u64 = 5;
/// Upper bound for the prune runs; debug builds on a busy machine are slow.
const DEADLINE: Duration = Duration::from_secs(60);

fn seeded(i: u64, at: OffsetDateTime) -> DecisionRecord {
    let mut r = DecisionRecord::at(RecordKind::Decision, at);
    r.principal = format!(r#"User::"seed{}""#, i % 7);
    r.action = "readPayment".into();
    r.resource = format!(r#"Payment::"p{i}""#);
    r.decision = Some(Outcome::Allow);
    r.request_id = Some(format!("seed-{i}"));
    if i % 5 == 0 {
        r.grants_used = vec![format!("g{i}")];
    }
    r
}

/// `OLD` records forty days old, then `RECENT` from an hour ago, through the engine's writer.
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
    let now = OffsetDateTime::now_utc();
    let old = now - time::Duration::days(40);
    for i in 1..=OLD {
        let _ = w
            .append(seeded(i, old + time::Duration::milliseconds(i as i64)))
            .unwrap();
    }
    for i in 1..=RECENT {
        let _ = w
            .append(seeded(OLD + i, now - time::Duration::hours(1)))
            .unwrap();
    }
    w.shutdown().unwrap();
}

async fn metrics(admin: std::net::SocketAddr) -> String {
    let resp = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

/// Polls `/metrics` until `series` is at least `n`, failing at the deadline.
async fn wait_for(admin: std::net::SocketAddr, series: &str, n: f64, since: Instant) -> String {
    loop {
        let page = metrics(admin).await;
        if metric_sample(&page, series).unwrap_or(0.0) >= n {
            return page;
        }
        assert!(
            since.elapsed() < DEADLINE,
            "{series} did not reach {n} within {DEADLINE:?}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RUNS_OK: &str = r#"jitgate_log_prune_runs_total{outcome="ok"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_prunes_old_records_beside_live_traffic_and_the_chain_verifies() {
    let seed_dir = tempfile::tempdir().unwrap();
    let log_path = seed_dir.path().join("decisions.db");
    seed(&log_path);
    let seeded_report = verify_store(&log_path).unwrap();
    assert!(seeded_report.ok);
    assert_eq!(seeded_report.records, OLD + RECENT);

    let lp = log_path.clone();
    let mut h = Harness::start_with(move |raw, _| {
        raw.log.path = lp;
        raw.log.retain = Some("1d".into());
        raw.log.prune_interval = Some("1s".into());
        raw.admin.listen = "127.0.0.1:0".into();
    })
    .await;
    let started = Instant::now();
    let admin = h.running.as_ref().unwrap().admin_addr.unwrap();

    // Live traffic from the moment the proxy is up: four clients, each request waits for its record's commit.
    let stop = Arc::new(AtomicBool::new(false));
    let token = h.token("alice", &["engineering"]);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, token, url) = (stop.clone(), token.clone(), h.url(""));
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let r = reply(
                        client()
                            .get(format!("{url}/payments/w{w}-{n}"))
                            .bearer_auth(&token)
                            .send()
                            .await
                            .unwrap(),
                    )
                    .await;
                    assert_eq!(
                        r.status,
                        StatusCode::OK,
                        "decisions unaffected: {:?}",
                        r.json
                    );
                    ids.push(r.upstream_decision_id());
                }
                ids
            })
        })
        .collect();

    // The run at start, then one more after the interval (which finds nothing left to prune).
    let first = wait_for(admin, RUNS_OK, 1.0, started).await;
    let first_at = started.elapsed();
    assert_eq!(
        metric_sample(&first, "jitgate_log_pruned_records_total"),
        Some(OLD as f64),
        "{first}"
    );
    assert!(
        metric_sample(&first, "jitgate_log_prune_last_success_timestamp_seconds").unwrap() > 0.0
    );
    let second = wait_for(admin, RUNS_OK, 2.0, started).await;
    stop.store(true, Ordering::SeqCst);
    let mut live = Vec::new();
    for w in workers {
        live.extend(within("live traffic", w).await.unwrap());
    }
    assert_eq!(
        metric_sample(&second, "jitgate_log_pruned_records_total"),
        Some(OLD as f64),
        "the second run pruned nothing more"
    );
    assert_eq!(
        metric_sample(&second, "jitgate_log_prune_last_deleted"),
        Some(0.0)
    );
    assert_eq!(
        metric_sample(&second, r#"jitgate_log_prune_runs_total{outcome="failed"}"#),
        None,
        "{second}"
    );
    assert_eq!(
        metric_sample(&second, "jitgate_log_errors_total"),
        Some(0.0)
    );
    h.running.take().unwrap().shutdown().await;

    // The store: old records gone, checkpoints accounting for them, recent and live records all there.
    let records = query(&h.log_path, &Filter::default(), None, 1_000_000)
        .unwrap()
        .records;
    let cutoff = format_time(OffsetDateTime::now_utc() - time::Duration::days(1));
    assert!(
        records.iter().all(|r| r.time >= cutoff),
        "no record older than `retain` is left"
    );
    let checkpoints: Vec<&DecisionRecord> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Checkpoint)
        .collect();
    assert!(
        !checkpoints.is_empty(),
        "a checkpoint anchors the kept chain"
    );
    let accounted: u64 = checkpoints
        .iter()
        .map(|c| c.context["pruned_records"].as_u64().unwrap())
        .sum();
    assert_eq!(
        accounted, OLD,
        "the checkpoints account for every pruned record"
    );
    let ids: HashSet<&str> = records
        .iter()
        .filter_map(|r| r.request_id.as_deref())
        .collect();
    for i in 1..=RECENT {
        assert!(
            ids.contains(format!("seed-{}", OLD + i).as_str()),
            "recent seed {i} kept"
        );
    }
    let missing: Vec<&String> = live
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "live records missing: {missing:?}");
    assert_eq!(
        records.len() as u64,
        RECENT + live.len() as u64 + checkpoints.len() as u64,
        "nothing else in the log"
    );
    let report = verify_store(&h.log_path).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, records.len() as u64);

    // The live records were written while the first run was pruning: it started with the proxy, and live records
    // were sealed before its last checkpoint (and, usually, between its chunks).
    let last_cp = checkpoints.last().unwrap().seq;
    let live_ids: HashSet<&str> = live.iter().map(String::as_str).collect();
    let live_seqs: Vec<i64> = records
        .iter()
        .filter(|r| {
            r.request_id
                .as_deref()
                .is_some_and(|id| live_ids.contains(id))
        })
        .map(|r| r.seq)
        .collect();
    let during = live_seqs.iter().filter(|s| **s < last_cp).count();
    let between = live_seqs
        .iter()
        .filter(|s| **s > checkpoints[0].seq && **s < last_cp)
        .count();
    eprintln!(
        "first run done after {first_at:?}; {} live requests, {during} logged before the last checkpoint, \
         {between} between checkpoints {:?}",
        live.len(),
        checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>()
    );
    assert!(during > 0, "live records were committed while prune ran");
    assert!(
        between > 0,
        "the writer got its turn between prune's chunks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_is_counted_retried_and_decisions_go_on() {
    // A log whose newest checkpoint is unreadable does not verify, so prune refuses it, every interval.
    let seed_dir = tempfile::tempdir().unwrap();
    let log_path = seed_dir.path().join("decisions.db");
    let w = LogWriter::start(&log_path, LogOptions::default()).unwrap();
    let old = OffsetDateTime::now_utc() - time::Duration::days(40);
    for i in 1..=100 {
        let _ = w.append(seeded(i, old)).unwrap();
    }
    let mut bogus = DecisionRecord::at(RecordKind::Checkpoint, old);
    bogus.action = "prune".into();
    w.append(bogus).unwrap().wait().unwrap();
    w.shutdown().unwrap();
    assert!(!verify_store(&log_path).unwrap().ok);

    let lp = log_path.clone();
    let mut h = Harness::start_with(move |raw, _| {
        raw.log.path = lp;
        raw.log.retain = Some("1d".into());
        raw.log.prune_interval = Some("1s".into());
        raw.admin.listen = "127.0.0.1:0".into();
    })
    .await;
    let started = Instant::now();
    let admin = h.running.as_ref().unwrap().admin_addr.unwrap();
    let token = h.token("alice", &["engineering"]);
    let get = |n: usize| {
        let (url, token) = (h.url(&format!("/payments/f{n}")), token.clone());
        async move {
            let r = reply(client().get(url).bearer_auth(&token).send().await.unwrap()).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
            r.upstream_decision_id()
        }
    };
    let mut ids = vec![get(0).await];
    let failed = r#"jitgate_log_prune_runs_total{outcome="failed"}"#;
    let page = wait_for(admin, failed, 2.0, started).await;
    ids.push(get(1).await);
    assert_eq!(metric_sample(&page, RUNS_OK), None, "{page}");
    assert_eq!(
        metric_sample(&page, "jitgate_log_pruned_records_total"),
        Some(0.0)
    );
    assert!(metric_sample(&page, "jitgate_log_prune_last_run_timestamp_seconds").unwrap() > 0.0);
    assert_eq!(
        metric_sample(&page, "jitgate_log_prune_last_success_timestamp_seconds"),
        Some(0.0)
    );
    assert_eq!(metric_sample(&page, "jitgate_log_errors_total"), Some(0.0));
    let ready = client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    h.running.take().unwrap().shutdown().await;

    let records = query(&h.log_path, &Filter::default(), None, 1_000)
        .unwrap()
        .records;
    assert_eq!(records.len(), 100 + 1 + ids.len(), "nothing was deleted");
    for id in &ids {
        assert!(records.iter().any(|r| r.request_id.as_deref() == Some(id)));
    }
}

/// Issue 16: the log of a replica that ships into a shared store carries the shipper's mark; retention prunes only
/// what the store holds and reports how many old records it kept for later, and the chain still verifies.
#[test]
fn retention_of_a_shipped_log_keeps_what_the_shipper_has_not_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let w = LogWriter::start(&path, LogOptions::default()).unwrap();
    let old = OffsetDateTime::now_utc() - time::Duration::days(40);
    for i in 1..=20 {
        let _ = w
            .append(seeded(i, old + time::Duration::milliseconds(i as i64)))
            .unwrap();
    }
    w.shutdown().unwrap();
    jitgate_engine::log::mark_shipped(&path, "r1", 12).unwrap();
    let day = Duration::from_secs(86_400);
    let r = jitgate_proxy::retention::prune_older_than(&path, day).unwrap();
    assert_eq!(
        (
            r.deleted,
            r.pruned_through,
            r.shipped_through,
            r.kept_unshipped
        ),
        (12, Some(12), Some(12), 8)
    );
    assert!(verify_store(&path).unwrap().ok);
    // Shipped on: the next run prunes the rest.
    jitgate_engine::log::mark_shipped(&path, "r1", 21).unwrap();
    let r = jitgate_proxy::retention::prune_older_than(&path, day).unwrap();
    assert_eq!((r.deleted, r.kept_unshipped), (8, 0));
    assert!(verify_store(&path).unwrap().ok);
}
