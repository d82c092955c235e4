#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The decision log's WAL under sustained writes: SQLite starts a WAL over only when a checkpoint has copied all of
//! it before the next transaction, which the checkpoint thread's checkpoints never manage while the writer is always
//! busy. The writer checkpoints between its own batches once a second, so the WAL keeps being started over (its
//! header's checkpoint sequence number grows) instead of growing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jitgate_engine::log::{LogOptions, LogWriter};

mod common;
use common::record as rec;

/// The WAL header's checkpoint sequence number (bytes 12..16, big-endian): how many times the WAL was started over.
fn wal_restarts(wal: &std::path::Path) -> u32 {
    let bytes = std::fs::read(wal).unwrap();
    u32::from_be_bytes(bytes[12..16].try_into().unwrap())
}

#[test]
fn the_wal_is_started_over_while_the_writer_never_rests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let w = Arc::new(LogWriter::start(&path, LogOptions::default()).unwrap());
    let wal = dir.path().join("log.db-wal");
    // Keep the writer's queue full from four threads for 3.5 s: the writer is never idle.
    let stop = Arc::new(AtomicBool::new(false));
    let feeders: Vec<_> = (0..4)
        .map(|t| {
            let (w, stop) = (w.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    // A full queue may refuse a record after a wait: the next one is tried.
                    let _ = w.append(rec(i));
                    i += 4;
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut before = None;
    while started.elapsed() < Duration::from_millis(3500) {
        std::thread::sleep(Duration::from_millis(100));
        if before.is_none() && wal.exists() && std::fs::metadata(&wal).unwrap().len() >= 32 {
            before = Some(wal_restarts(&wal));
        }
    }
    let after = wal_restarts(&wal);
    stop.store(true, Ordering::Relaxed);
    for f in feeders {
        f.join().unwrap();
    }
    let before = before.expect("the WAL was written");
    assert!(
        after >= before + 2,
        "the WAL was started over {} times in 3.5 s of writes (checkpoint sequence {before} -> {after})",
        after - before
    );
    let stats = w.stats();
    assert!(stats.committed > 1000, "{stats:?}");
}
