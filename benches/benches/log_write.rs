//! Criterion benchmark of the decision log's writer: the cost of one record when the writer commits batches of
//! 1, 8, 32 (the proxy's batches at 32 connections in `acknowledge = "commit"` mode are at most this big) and
//! 256 records (what `acknowledge = "journal"` gathers). Each iteration queues a batch with `LogWriter::append` and
//! waits for the last record's commit, so the time is the writer's work (seal: canonical JSON + SHA-256; insert: the
//! row and its indexes; the WAL frames of the commit) plus one hand-off to and from the writer thread.
//!
//! Throughput is reported in records, so `batch=32` against `batch=256` in the same run is the share of a commit's
//! fixed cost (its WAL pages, locks and wake-ups) in a record's cost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jitgate_engine::log::{DecisionRecord, LogOptions, LogWriter, Outcome};
use serde_json::json;

const BATCHES: [usize; 4] = [1, 8, 32, 256];

/// A record like the ones the load harness logs: alice's allowed `GET /payments`, RS256 claims in the context.
fn record() -> DecisionRecord {
    let mut r = DecisionRecord::decision(
        r#"User::"alice""#,
        "listPayments",
        r#"Service::"payments""#,
        Outcome::Allow,
    );
    let context = json!({
        "claims": {"aud": "jitgate-load", "exp": 1_796_136_317, "groups": ["engineering"], "iat": 1_796_132_717,
                   "iss": "https://idp.load.test/", "nbf": 1_796_132_717, "sub": "alice"},
        "headers": {}, "host": "127.0.0.1:19002", "query": "", "source_ip": "127.0.0.1", "time": 1_796_132_783
    });
    r.context = context.as_object().cloned().unwrap();
    r.request_id = Some(r.id.clone());
    r.policies = vec!["engineers-read".into()];
    r.revision = "57cd2dc5f8b2078b2d136b36317c36ff7a69ea496f31e809b22e037c45af8e1b".into();
    r.engine = "cedar".into();
    r.latency_us = 143;
    r.client_addr = Some("127.0.0.1".into());
    r.method = Some("GET".into());
    r.path = Some("/payments".into());
    r.status = Some(200);
    r
}

fn log_write(c: &mut Criterion) {
    let template = record();
    let mut group = c.benchmark_group("log_write");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for batch in BATCHES {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::start(
            &dir.path().join("decisions.db"),
            LogOptions {
                batch_max: batch,
                ..LogOptions::default()
            },
        )
        .unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch={batch}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    // The records are built outside the timed part: the proxy builds them on its workers.
                    let records: Vec<DecisionRecord> = (0..batch)
                        .map(|_| {
                            let mut r = template.clone();
                            r.id = uuid::Uuid::now_v7().to_string();
                            r.request_id = Some(r.id.clone());
                            r
                        })
                        .collect();
                    let start = Instant::now();
                    let mut last = None;
                    for r in records {
                        last = Some(writer.append(r).unwrap());
                    }
                    last.unwrap().wait().unwrap();
                    spent += start.elapsed();
                }
                spent
            })
        });
        let stats = writer.stats();
        assert_eq!(stats.errors, 0, "batch={batch}: {stats:?}");
        assert_eq!(stats.appended, stats.committed, "batch={batch}: {stats:?}");
        // The writer may wake before a whole batch is queued: say how big the commits really were.
        eprintln!(
            "log_write/batch={batch}: {} records in {} commits ({:.1} a commit)",
            stats.committed,
            stats.batches,
            stats.committed as f64 / stats.batches.max(1) as f64
        );
        writer.shutdown().unwrap();
    }
    group.finish();
}

criterion_group!(benches, log_write);
criterion_main!(benches);
