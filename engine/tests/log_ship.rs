#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The decision-log shipper with the writer's feed, against a real SQLite log and the real PostgreSQL server named
//! by `JITGATE_TEST_POSTGRES` (skipped, and said so, without it): committed records reach the store from the feed,
//! in memory, and the log is read back only for what the feed never held.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jitgate_engine::log::{
    self, DEFAULT_FEED_CAPACITY, DecisionRecord, LogOptions, LogWriter, Outcome, RecordKind,
    ShipFeed,
};
use jitgate_engine::postgres::PgStore;
use jitgate_engine::postgres::decisions::{Records, ShipOptions, ShipStats, Shipper};
use jitgate_engine::postgres::scratch::{Scratch, test_url};
use time::macros::datetime;

fn rec(i: i64) -> DecisionRecord {
    let mut r = DecisionRecord::at(
        RecordKind::Decision,
        datetime!(2026-12-07 10:00:00 UTC) + time::Duration::seconds(i),
    );
    r.principal = format!(r#"User::"u{}""#, i % 3);
    r.action = r#"Action::"GET""#.into();
    r.resource = format!(r#"Path::"/payments/{i}""#);
    r.decision = Some(if i % 2 == 0 {
        Outcome::Allow
    } else {
        Outcome::Deny
    });
    if i % 4 == 0 {
        r.grants_used = vec![format!("g{i}"), "gshared".into()];
    }
    r.revision = "rev1".into();
    r.engine = "cedar".into();
    r.request_id = Some(format!("req-{i}"));
    r
}

/// Appends records `from..=to` and waits for each commit.
fn append(w: &LogWriter, from: i64, to: i64) {
    let tickets: Vec<_> = (from..=to).map(|i| w.append(rec(i)).unwrap()).collect();
    for t in tickets {
        t.wait().unwrap();
    }
}

/// Waits (up to 20 s) until the shipper reports `seq` as the newest seq in the store.
fn wait_shipped(stats: &ShipStats, seq: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.shipped_seq.load(Ordering::Relaxed) < seq {
        assert!(
            Instant::now() < deadline,
            "the shipper reached seq {} of {seq} in 20 s",
            stats.shipped_seq.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ship_opts(log: &Path, feed: &Arc<ShipFeed>) -> ShipOptions {
    ShipOptions {
        replica: "r1".into(),
        log: log.to_path_buf(),
        anchors: None,
        every: Duration::from_millis(10),
        batch: 2000,
        feed: Some(feed.clone()),
    }
}

/// Every record of replica `r1` in the store verifies as one chain of `n` records.
fn assert_store_holds(url: &str, n: u64) {
    let records = Records::open(url).unwrap();
    assert_eq!(
        records
            .count(Some("r1"), &jitgate_engine::log::Filter::default())
            .unwrap(),
        n
    );
    let reports = records.verify(Some("r1"), &mut |_| {}).unwrap();
    assert!(
        reports.iter().all(|r| r.report.ok) && reports.len() == 1,
        "{reports:?}"
    );
}

/// Issue 16: while the writer's feed holds the committed records, the shipper takes them from there and never reads
/// them back from the log (under load, rounds of records while it ships, and quiet moments in between).
#[test]
fn the_shipper_takes_records_from_the_feed_and_never_reads_them_back_from_the_log() {
    let Some(base) =
        test_url("the_shipper_takes_records_from_the_feed_and_never_reads_them_back_from_the_log")
    else {
        return;
    };
    let scratch = Scratch::new(&base, "shipfeed").unwrap();
    let store = Arc::new(PgStore::open(&scratch.url()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let feed = Arc::new(ShipFeed::new(DEFAULT_FEED_CAPACITY));
    let w = LogWriter::start(
        &path,
        LogOptions {
            ship: Some(feed.clone()),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let stats = Arc::new(ShipStats::default());
    let shipper = Shipper::start(store, ship_opts(&path, &feed), stats.clone()).unwrap();
    let mut next = 1;
    for round in 0..30 {
        let n = 1 + (round * 37) % 200;
        append(&w, next, next + n - 1);
        next += n;
        // Every other round while the shipper is still at it; the others after it caught up.
        if round % 2 == 1 {
            wait_shipped(&stats, next - 1);
        }
    }
    wait_shipped(&stats, next - 1);
    let total = next - 1;
    assert_eq!(
        stats.log_records.load(Ordering::Relaxed),
        0,
        "records read back from the log while the feed held them ({} taken from the feed, {} log reads)",
        stats.feed_records.load(Ordering::Relaxed),
        stats.log_reads.load(Ordering::Relaxed)
    );
    assert_eq!(stats.feed_records.load(Ordering::Relaxed), total as u64);
    assert_eq!(stats.shipped.load(Ordering::Relaxed), total as u64);
    assert_eq!(feed.dropped(), 0);
    shipper.stop();
    w.shutdown().unwrap();
    assert_store_holds(&scratch.url(), total as u64);
    // The writer carried the shipping mark: prune may now remove what is in the store.
    assert_eq!(
        log::shipped_mark(&path).unwrap().map(|m| m.seq),
        Some(total)
    );
}

/// What the feed never held (records committed before the shipper's feed existed, and batches a full feed dropped)
/// is read from the log, once, and shipped in order with what the feed holds; then the feed takes over again.
#[test]
fn the_shipper_reads_the_log_only_for_what_the_feed_never_held() {
    let Some(base) = test_url("the_shipper_reads_the_log_only_for_what_the_feed_never_held") else {
        return;
    };
    let scratch = Scratch::new(&base, "shipgap").unwrap();
    let store = Arc::new(PgStore::open(&scratch.url()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    // 1..=50 by a writer without a feed (an earlier run).
    let w = LogWriter::start(&path, LogOptions::default()).unwrap();
    append(&w, 1, 50);
    w.shutdown().unwrap();
    // A small feed: 51..=60 fit, 61..=100 (one batch each, appended while nobody takes) do not all fit.
    let feed = Arc::new(ShipFeed::new(10));
    let w = LogWriter::start(
        &path,
        LogOptions {
            ship: Some(feed.clone()),
            ..LogOptions::default()
        },
    )
    .unwrap();
    for i in 51..=100 {
        append(&w, i, i);
    }
    assert_eq!(feed.dropped(), 40);
    let stats = Arc::new(ShipStats::default());
    let shipper = Shipper::start(store, ship_opts(&path, &feed), stats.clone()).unwrap();
    wait_shipped(&stats, 100);
    // 1..=50 and 61..=100 from the log, 51..=60 from the feed.
    assert_eq!(stats.log_records.load(Ordering::Relaxed), 90);
    assert_eq!(stats.feed_records.load(Ordering::Relaxed), 10);
    // From here on the feed has room: nothing more is read back.
    let reads = stats.log_records.load(Ordering::Relaxed);
    for round in 0..10 {
        append(&w, 101 + round * 5, 105 + round * 5);
        wait_shipped(&stats, 105 + round * 5);
    }
    assert_eq!(stats.log_records.load(Ordering::Relaxed), reads);
    assert_eq!(stats.feed_records.load(Ordering::Relaxed), 60);
    shipper.stop();
    w.shutdown().unwrap();
    assert_store_holds(&scratch.url(), 150);
}
