//! The hand-off from the log writer to a shipper: each committed batch of sealed records, in memory, so that the
//! shipper does not read back from SQLite what the writer has just written; and the shipper's progress back to the
//! writer, which records it as the log's shipping mark inside its next transaction instead of a commit of its own.
//!
//! The feed is bounded and may lose records (full, or nobody taking them): a shipper that finds a gap reads the
//! missing seqs from the log, which keeps every record until its shipping mark passes it. Nothing here is durable.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::export::StoredRecord;

/// Records a feed holds at most unless told otherwise ([`ShipFeed::new`]).
pub const DEFAULT_FEED_CAPACITY: usize = 32_768;

/// Committed records on their way from the writer to a shipper, and the shipper's progress on its way back. Give
/// the same `Arc` to the writer ([`super::LogOptions::ship`]) and to the shipper.
#[derive(Debug)]
pub struct ShipFeed {
    records: Mutex<Vec<StoredRecord>>,
    capacity: usize,
    /// Records not kept because the feed was full (the shipper reads them from the log).
    dropped: AtomicU64,
    /// The newest seq the writer committed (0: none yet).
    head: AtomicI64,
    /// The newest seq the shipper has in the shared store, for the writer to mark (-1: nothing reported).
    shipped: AtomicI64,
    /// The newest shipping mark known to be written to the log (-1: none known).
    marked: AtomicI64,
    /// The writer is inside a commit whose records are not in the feed yet.
    committing: AtomicBool,
}

impl ShipFeed {
    /// An empty feed that holds up to `capacity` records between two takes.
    pub fn new(capacity: usize) -> ShipFeed {
        ShipFeed {
            records: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            head: AtomicI64::new(0),
            shipped: AtomicI64::new(-1),
            marked: AtomicI64::new(-1),
            committing: AtomicBool::new(false),
        }
    }

    /// Everything the writer handed over since the last take, in seq order (seqs committed by others, e.g. a prune's
    /// checkpoint, and records dropped while the feed was full are missing: gaps to read from the log).
    pub fn take(&self) -> Vec<StoredRecord> {
        std::mem::take(&mut *self.records.lock())
    }

    /// The time of the oldest record waiting in the feed.
    pub fn oldest_time(&self) -> Option<String> {
        self.records.lock().first().map(|r| r.time.clone())
    }

    /// The most records it holds between two takes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records dropped because the feed was full, since it was made.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The newest seq the writer committed through this feed (0 before its first commit).
    pub fn head(&self) -> i64 {
        self.head.load(Ordering::Acquire)
    }

    /// Reports that the store holds the records through `seq`: the writer writes it as the log's shipping mark in its
    /// next transaction ([`ShipFeed::marked`] tells when it has).
    pub fn shipped(&self, seq: i64) {
        self.shipped.fetch_max(seq, Ordering::AcqRel);
    }

    /// The newest shipping mark known to be in the log (-1: none known), written by the writer or reported by
    /// [`ShipFeed::set_marked`].
    pub fn marked(&self) -> i64 {
        self.marked.load(Ordering::Acquire)
    }

    /// Tells the feed that the log's shipping mark was written elsewhere (e.g. by [`super::mark_shipped`]).
    pub fn set_marked(&self, seq: i64) {
        self.marked.fetch_max(seq, Ordering::AcqRel);
    }

    /// Forgets what was reported, for a shipper that starts over (it sets the log's mark itself).
    pub fn reset_marks(&self) {
        self.shipped.store(-1, Ordering::Release);
        self.marked.store(-1, Ordering::Release);
    }

    /// Whether the writer is committing a batch that it has not handed over yet: records the log shows past the
    /// feed may be those, so a shipper that found nothing in the feed waits for them rather than reading the log.
    pub fn committing(&self) -> bool {
        self.committing.load(Ordering::Acquire)
    }

    /// From the writer, around each commit attempt (cleared by [`ShipFeed::push`] or when the attempt failed).
    pub(crate) fn set_committing(&self, on: bool) {
        self.committing.store(on, Ordering::Release);
    }

    /// The mark the writer should write in its next transaction: a shipped seq newer than the written mark.
    pub(crate) fn mark_due(&self) -> Option<i64> {
        let shipped = self.shipped.load(Ordering::Acquire);
        (shipped > self.marked.load(Ordering::Acquire)).then_some(shipped)
    }

    /// From the writer, after a commit: the batch's records (dropped whole when they do not fit) and the new head.
    pub(crate) fn push(&self, batch: Vec<StoredRecord>, head: i64) {
        if !batch.is_empty() {
            let mut records = self.records.lock();
            if records.len() + batch.len() <= self.capacity {
                if records.is_empty() {
                    *records = batch;
                } else {
                    records.extend(batch);
                }
            } else {
                self.dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
        self.head.fetch_max(head, Ordering::AcqRel);
        self.set_committing(false);
    }
}
