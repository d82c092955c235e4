#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Measures the decision-log JSON Lines export: fills a store through `LogWriter` with large batches, verifies
//! the chain, then times `export(.., Format::Jsonl, ..)` to a file and reports records/s and peak RSS.
//!
//! `cargo run --release -p jitgate-engine --example export_rate -- --records 1000000 [--dir DIR] [--keep]`

use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use jitgate_engine::log::{
    DecisionRecord, Filter, Format, LogOptions, LogWriter, Outcome, export, verify_store,
};

fn rec(i: u64) -> DecisionRecord {
    let mut r = DecisionRecord::decision(
        format!(r#"User::"u{}""#, i % 50),
        r#"Action::"deleteDatabase""#,
        format!(r#"Database::"db{}""#, i % 1000),
        match i % 3 {
            0 => Outcome::Allow,
            1 => Outcome::Deny,
            _ => Outcome::Hold,
        },
    );
    r.policies = vec!["policy0".into()];
    if i % 4 == 0 {
        r.grants_used = vec![format!("grant-{}", i % 97)];
    }
    r.revision = "sha256:4f2a9c".into();
    r.engine = "cedar".into();
    r.latency_us = i % 300;
    r.request_id = Some(format!("req-{i}"));
    r.client_addr = Some("192.0.2.7:40000".into());
    r.method = Some("DELETE".into());
    r.path = Some(format!("/databases/db{}", i % 1000));
    r.status = Some(if i % 3 == 0 { 200 } else { 403 });
    r.context = serde_json::json!({
        "source_ip": "192.0.2.7",
        "claims": {"sub": format!("u{}", i % 50), "groups": ["dev", "ops"]},
        "headers": {"user-agent": "curl/8.5", "authorization": "[redacted]"},
    })
    .as_object()
    .cloned()
    .unwrap();
    r.redacted = vec!["headers.authorization".into()];
    r
}

/// Peak resident set size in KiB (`VmHWM`).
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut records: u64 = 1_000_000;
    let mut dir: Option<PathBuf> = None;
    let mut keep = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => records = args.next().expect("--records N").parse().expect("a number"),
            "--dir" => dir = Some(args.next().expect("--dir DIR").into()),
            "--keep" => keep = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("log.db");

    if !db.exists() {
        let t = Instant::now();
        let w = LogWriter::start(
            &db,
            LogOptions {
                batch_max: 10_000,
                queue_capacity: 65_536,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 1..=records {
            // The ticket is not needed: shutdown commits everything queued.
            let _ = w.append(rec(i)).unwrap();
        }
        w.shutdown().unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "fill: {records} records in {s:.2} s = {:.0} records/s (LogWriter, batch_max 10000)",
            records as f64 / s
        );
        let t = Instant::now();
        let report = verify_store(&db).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, records);
        println!(
            "verify_store: ok, {} records in {:.2} s",
            report.records,
            t.elapsed().as_secs_f64()
        );
    } else {
        println!("using existing store {}", db.display());
    }

    let out = dir.join("export.jsonl");
    let hwm_before = vm_hwm_kib();
    let t = Instant::now();
    let mut file = File::create(&out).unwrap();
    let m = export(
        &db,
        &Filter::default(),
        Format::Jsonl,
        &mut file,
        &mut |_| {},
    )
    .unwrap();
    drop(file);
    let s = t.elapsed().as_secs_f64();
    let hwm_after = vm_hwm_kib();
    println!(
        "export jsonl: {} records, {} bytes in {s:.2} s = {:.0} records/s, sha256 {}",
        m.records,
        m.bytes,
        m.records as f64 / s,
        m.sha256
    );
    println!("peak RSS (VmHWM): {hwm_before} KiB before export, {hwm_after} KiB after");
    if keep {
        std::mem::forget(tmp);
        println!("kept {}", dir.display());
    }
}
