//! How fast the decision-log writer seals and commits records, alone on its thread, for batches of a given size.
//!
//! `cargo run --release -p jitgate-engine --example append_rate -- [--records N] [--batch B]`
//! Appends N records (shaped like the proxy's: a context with claims and headers) in waves of B, waiting for each
//! wave to commit before the next, and prints records/s and µs per record.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::Instant;

use jitgate_engine::log::{DecisionRecord, LogOptions, LogWriter, Outcome, RecordKind};
use serde_json::json;

fn main() {
    let mut records = 200_000usize;
    let mut batch = 25usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => records = args.next().and_then(|v| v.parse().ok()).unwrap_or(records),
            "--batch" => batch = args.next().and_then(|v| v.parse().ok()).unwrap_or(batch),
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let writer = LogWriter::start(&path, LogOptions::default()).unwrap();
    let context = json!({
        "claims": {"aud": "jitgate-load", "exp": 1_900_000_000, "groups": ["engineering"], "iat": 1_700_000_000,
                   "iss": "https://idp.load.test/", "sub": "alice"},
        "headers": {"user-agent": "wrk"},
        "host": "payments.local",
        "query": null,
        "source_ip": "127.0.0.1",
        "time": "2026-12-01T12:00:00Z"
    });
    let context = context.as_object().cloned().unwrap();
    let started = Instant::now();
    let mut sent = 0;
    while sent < records {
        let n = batch.min(records - sent);
        let tickets: Vec<_> = (0..n)
            .map(|i| {
                let mut r =
                    DecisionRecord::at(RecordKind::Decision, time::OffsetDateTime::now_utc());
                r.principal = r#"User::"alice""#.into();
                r.action = r#"Action::"listPayments""#.into();
                r.resource = format!(r#"Service::"payments{}""#, (sent + i) % 7);
                r.decision = Some(Outcome::Allow);
                r.policies = vec!["engineers-read".into()];
                r.revision = "sha256:0123456789abcdef".into();
                r.engine = "cedar".into();
                r.latency_us = 40;
                r.method = Some("GET".into());
                r.path = Some("/payments".into());
                r.client_addr = Some("127.0.0.1:50000".into());
                r.status = Some(200);
                r.context = context.clone();
                writer.append(r).unwrap()
            })
            .collect();
        for t in tickets {
            t.wait().unwrap();
        }
        sent += n;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{records} records in waves of {batch}: {:.0} records/s, {:.2} µs per record, {:.0} µs per wave",
        records as f64 / secs,
        secs * 1e6 / records as f64,
        secs * 1e6 * batch as f64 / records as f64
    );
    writer.shutdown().unwrap();
}
