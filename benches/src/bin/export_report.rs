//! Decision-log export rate and memory: writes a log of `--records` records (default 1,000,000) with the writer,
//! then exports all of it to a file in each format (JSON Lines, CSV, OCSF), printing records/s and the process's
//! peak resident memory during each export (the peak is reset before each one through `/proc/self/clear_refs`).
//!
//!     cargo run --release -p jitgate-benches --bin export_report -- [--records N] [--log FILE]
//!
//! `--log FILE` exports an existing log instead of writing one (so that the peak memory is the export's alone);
//! `--keep FILE` writes the log to FILE and keeps it for such runs; `--format jsonl|csv|ocsf` exports one format only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Instant;

use jitgate_engine::log::{
    DecisionRecord, Filter, Format, LogOptions, LogWriter, Outcome, RecordKind, export_to_file,
};

fn record(i: u64) -> DecisionRecord {
    let mut r = DecisionRecord::new(RecordKind::Decision);
    r.principal = format!(r#"User::"user-{}""#, i % 1000);
    r.action = r#"Action::"readPayment""#.into();
    r.resource = format!(r#"Payment::"p-{i}""#);
    r.decision = Some(if i % 3 == 0 {
        Outcome::Deny
    } else {
        Outcome::Allow
    });
    r.policies = vec!["payments-readers".into()];
    if i % 2 == 0 {
        r.grants_used = vec![format!("01HZX{i:021}")];
    }
    r.revision = "sha256:4f1c2a".into();
    r.engine = "cedar".into();
    r.latency_us = 40 + i % 50;
    r.request_id = Some(format!("req-{i}"));
    r.client_addr = Some("10.1.2.3:51234".into());
    r.method = Some("GET".into());
    r.path = Some(format!("/payments/p-{i}"));
    r.status = Some(if i % 3 == 0 { 403 } else { 200 });
    r.context = serde_json::json!({
        "source_ip": "10.1.2.3",
        "claims": {"sub": format!("user-{}", i % 1000), "groups": ["engineering"], "jti": format!("j{i}")},
        "headers": {"x-request-id": format!("req-{i}")}
    })
    .as_object()
    .cloned()
    .unwrap();
    r
}

fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut records: u64 = 1_000_000;
    let mut log: Option<PathBuf> = None;
    let mut keep: Option<PathBuf> = None;
    let mut formats = vec![Format::Jsonl, Format::Csv, Format::Ocsf];
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => {
                records = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--records N")
            }
            "--log" => log = args.next().map(PathBuf::from),
            "--keep" => keep = args.next().map(PathBuf::from),
            "--format" => {
                formats = vec![match args.next().as_deref() {
                    Some("jsonl") => Format::Jsonl,
                    Some("csv") => Format::Csv,
                    Some("ocsf") => Format::Ocsf,
                    other => panic!("--format jsonl|csv|ocsf, not {other:?}"),
                }]
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let db = match log {
        Some(l) => l,
        None => {
            let db = keep.unwrap_or_else(|| dir.path().join("decisions.db"));
            let w = LogWriter::start(
                &db,
                LogOptions {
                    batch_max: 2048,
                    queue_capacity: 16384,
                    ..LogOptions::default()
                },
            )
            .unwrap();
            let t = Instant::now();
            for i in 1..=records {
                drop(w.append(record(i)).unwrap());
            }
            w.shutdown().unwrap();
            eprintln!(
                "wrote {records} records in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            db
        }
    };
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!("log: {} ({:.0} MB)", db.display(), size as f64 / 1e6);
    println!("format  records     seconds  records/s   MB written  peak RSS MB");
    for format in formats {
        let out = dir.path().join(format!("export.{}", format.extension()));
        // Reset the peak: what follows is the export's own.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let t = Instant::now();
        let m = export_to_file(&db, &Filter::default(), format, &out).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let peak =
            peak_rss_kb().map_or_else(|| "?".into(), |k| format!("{:.1}", k as f64 / 1024.0));
        println!(
            "{:<7} {:<11} {:<8.2} {:<11.0} {:<11.0} {}",
            format!("{format:?}").to_lowercase(),
            m.records,
            secs,
            m.records as f64 / secs,
            m.bytes as f64 / 1e6,
            peak
        );
        let _ = std::fs::remove_file(&out);
    }
}
