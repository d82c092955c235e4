//! The decision-log writer: a bounded queue in front of one thread that owns its own SQLite connection, seals
//! records into the chain and commits them in batches. Callers never compute hashes; they may wait per record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use parking_lot::Mutex;
use rusqlite::Connection;

use super::ack::{Ack, Acks};
use super::anchor::{Anchor, AnchorOptions, AnchorReason};
use super::db;
use super::export::{StoredRecord, canonical_from_columns};
use super::feed::ShipFeed;
use super::journal::{self, Journal, JournalPos};
use super::record::{DecisionRecord, GENESIS_HASH, format_time, is_stored_time, parse_time};
use super::{Fault, WriteError};
use crate::sqlite::{DEFAULT_BUSY_TIMEOUT, connect};

/// What `append` does when the queue is full. Either way it is counted in [`LogStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Block the caller until there is room.
    #[default]
    Wait,
    /// Return [`WriteError::QueueFull`] at once (the caller then denies the request).
    FailClosed,
}

/// A copy of each committed record as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonlSink {
    /// To standard output.
    Stdout,
    /// To a file, rotated when it would grow past `max_bytes`: `log.jsonl` -> `log.jsonl.1` -> ... up to `keep`
    /// old files.
    File {
        /// The live file.
        path: PathBuf,
        /// Size limit of one file.
        max_bytes: u64,
        /// How many rotated files to keep.
        keep: u32,
    },
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Records the queue holds before `on_full` applies.
    pub queue_capacity: usize,
    /// Most records committed in one transaction.
    pub batch_max: usize,
    /// Full-queue behaviour.
    pub on_full: OnFull,
    /// How long the writer waits for a database lock held by someone else before the batch fails.
    pub busy_timeout: Duration,
    /// Optional JSON Lines copy of committed records.
    pub jsonl: Option<JsonlSink>,
    /// Keep an acknowledgement journal (`<log>.journal.<n>`) so that [`LogWriter::append_journaled`] can return
    /// as soon as a record is written there, before its batch commits. Leftover journal files are committed at
    /// start whether or not this is set.
    pub journal: bool,
    /// A journal file is rotated once it would grow past this many bytes (the writer removes a file once a
    /// record of the next one is committed).
    pub journal_rotate_bytes: u64,
    /// How long the writer lets journaled records gather before it commits them: nobody waits for that commit,
    /// and one commit of many records costs much less than many commits of a few (the same pages go to the WAL
    /// once). Records reach SQLite about this much after the journal; a [`LogWriter::flush`] may wait as long.
    pub journal_linger: Duration,
    /// Sign the chain head into an anchors file (at start, every `every_records` records, every `every` while
    /// records arrive, and at shutdown), on the writer thread, never per record. `None`: no anchors.
    pub anchor: Option<AnchorOptions>,
    /// Hand each committed batch to a shipper through this feed, and write the shipping mark it reports in the
    /// next transaction (see [`ShipFeed`]). `None`: no shipper.
    pub ship: Option<Arc<ShipFeed>>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            queue_capacity: 8192,
            batch_max: 512,
            on_full: OnFull::Wait,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            jsonl: None,
            journal: false,
            journal_rotate_bytes: journal::ROTATE_BYTES,
            journal_linger: Duration::from_millis(10),
            anchor: None,
            ship: None,
        }
    }
}

/// Counters since the writer started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogStats {
    /// Records accepted into the queue.
    pub appended: u64,
    /// Records committed to the database.
    pub committed: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Appends that found the queue full and waited (`OnFull::Wait`).
    pub queue_full_waits: u64,
    /// Appends refused because the queue was full (`OnFull::FailClosed`).
    pub queue_full_rejections: u64,
    /// Records that could not be committed (their tickets got the error).
    pub errors: u64,
    /// JSON Lines sink write failures (the records are committed regardless).
    pub sink_errors: u64,
    /// Records acknowledged from the journal before an earlier stop and committed at this start.
    pub recovered: u64,
    /// Signed anchors appended.
    pub anchors: u64,
    /// Anchors that could not be signed or appended (the records are committed regardless).
    pub anchor_errors: u64,
}

#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    committed: AtomicU64,
    batches: AtomicU64,
    queue_full_waits: AtomicU64,
    queue_full_rejections: AtomicU64,
    errors: AtomicU64,
    sink_errors: AtomicU64,
    recovered: AtomicU64,
    anchors: AtomicU64,
    anchor_errors: AtomicU64,
}

type Callback = Box<dyn FnOnce(Result<(), WriteError>) + Send + 'static>;

enum Notify {
    Ticket(Sender<Result<(), WriteError>>),
    Callback(Callback),
    /// Numbered for the batch acknowledgement ([`LogWriter::append_acked`]): told through [`Acks`], per batch.
    Acked(u64),
}

impl Notify {
    fn send(self, res: Result<(), WriteError>) {
        match self {
            // The caller may have dropped its ticket; nothing to tell then.
            Notify::Ticket(tx) => {
                let _ = tx.send(res);
            }
            Notify::Callback(f) => f(res),
            Notify::Acked(_) => {}
        }
    }
}

enum Msg {
    /// A record, how to tell its caller, and where it ends in the journal when it was journaled.
    Record(Box<DecisionRecord>, Notify, Option<JournalPos>),
    Flush(Sender<()>),
    Shutdown,
}

/// Lets the caller wait until its record is committed.
#[derive(Debug)]
#[must_use = "dropping a ticket is fine, but then nobody learns whether the record was committed"]
pub struct Ticket {
    rx: Receiver<Result<(), WriteError>>,
}

impl Ticket {
    /// Blocks until the record is committed (`Ok`) or its batch failed.
    pub fn wait(self) -> Result<(), WriteError> {
        self.rx.recv().unwrap_or(Err(WriteError::Closed))
    }
}

/// The handle to the writer thread. Share it behind an `Arc`; `append` is cheap and thread-safe.
pub struct LogWriter {
    tx: Sender<Msg>,
    on_full: OnFull,
    counters: Arc<Counters>,
    /// Appends to the journal and queues in one critical section, so queue order is journal order.
    /// `None` once shut down (which releases the journal's lock).
    journal: Mutex<Option<Journal>>,
    journaling: bool,
    stopping: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    /// The batch acknowledgement of [`LogWriter::append_acked`].
    acks: Arc<Acks>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("on_full", &self.on_full)
            .field("stats", &self.stats())
            .finish()
    }
}

impl LogWriter {
    /// Opens (creating and migrating if needed) the log database at `path` and starts the writer thread. The
    /// chain continues from the last stored record.
    pub fn start(path: &Path, opts: LogOptions) -> Result<LogWriter, WriteError> {
        let mut conn = db::open_write(path, opts.busy_timeout)?;
        // Fail at start, not at the first append, if the existing chain head is unreadable.
        db::head(&conn)?;
        // Records acknowledged from a journal before the last stop are committed before anything new.
        // The journal lock is taken only where there is a journal to recover or to write, so a log without one
        // gets no lock file; a writer that finds the lock held leaves the journal to its owner.
        let lock = if opts.journal || !journal::files(path)?.is_empty() {
            journal::lock(path)?
        } else {
            None
        };
        let recovered = match &lock {
            Some(_) => journal::recover(&mut conn, path)?,
            None => journal::Recovered::default(),
        };
        let journal = match (opts.journal, lock) {
            (false, _) => None,
            (true, None) => return Err(journal::locked(path).into()),
            (true, Some(lock)) => Some(Journal::open(
                path,
                recovered.next_generation,
                opts.journal_rotate_bytes.max(1),
                lock,
            )?),
        };
        // The first anchor signs the head as found (journaled records included) before anything new is committed;
        // a writer that cannot sign does not start.
        let anchor = match &opts.anchor {
            None => None,
            Some(a) => {
                let (seq, hash) = db::head(&conn)?.unwrap_or((0, GENESIS_HASH.to_string()));
                let signed = a.append(seq, &hash, AnchorReason::Start)?;
                Some(AnchorState {
                    opts: a.clone(),
                    since: 0,
                    last: Instant::now(),
                    head: (seq, hash),
                    pending: signed,
                })
            }
        };
        // Checkpoints run on their own thread (below), not inside a commit that requests are waiting for.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Checkpointer::start(path, opts.busy_timeout)?;
        let sink = match &opts.jsonl {
            None => None,
            Some(s) => Some(SinkState::open(s.clone())?),
        };
        let (tx, rx) = bounded(opts.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        counters
            .recovered
            .store(recovered.records, Ordering::Relaxed);
        if anchor.is_some() {
            counters.anchors.fetch_add(1, Ordering::Relaxed);
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Acks::default());
        let worker = Worker {
            acks: acks.clone(),
            anchor,
            conn,
            rx,
            batch_max: opts.batch_max.max(1),
            counters: counters.clone(),
            sink,
            journal_files: journal
                .as_ref()
                .map(|_| (path.to_path_buf(), recovered.next_generation)),
            stopping: stopping.clone(),
            journal_stuck: false,
            linger: opts.journal_linger,
            feed: opts.ship.clone(),
            canonical: Vec::new(),
            restarted: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("jitgate-decision-log".into())
            .spawn(move || worker.run())
            .map_err(|e| Fault::io("cannot start the writer thread", e))?;
        Ok(LogWriter {
            tx,
            on_full: opts.on_full,
            counters,
            journaling: journal.is_some(),
            journal: Mutex::new(journal),
            stopping,
            thread: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(Some(checkpointer)),
            acks,
        })
    }

    /// Queues `rec`; the returned ticket resolves when it is committed.
    pub fn append(&self, rec: DecisionRecord) -> Result<Ticket, WriteError> {
        let rec = normalize(rec)?;
        let (tx, rx) = bounded(1);
        self.enqueue(Msg::Record(Box::new(rec), Notify::Ticket(tx), None))?;
        Ok(Ticket { rx })
    }

    /// Queues `rec`; the returned [`Ack`] resolves once it is committed (`Ok`), or its batch failed or the writer
    /// stopped before committing it (`Err`). For async callers: the writer answers each batch once, not each record
    /// (see `engine/src/log/ack.rs`).
    pub fn append_acked(&self, rec: DecisionRecord) -> Result<Ack, WriteError> {
        let rec = Box::new(normalize(rec)?);
        let n = self
            .acks
            .number(|n| self.enqueue(Msg::Record(rec, Notify::Acked(n), None)))?;
        Ok(Ack::new(self.acks.clone(), n))
    }

    /// Queues `rec`; `done` runs on the writer thread once it is committed or failed. Keep `done` short (e.g.
    /// complete a oneshot channel): it delays the next batch.
    pub fn append_with(
        &self,
        rec: DecisionRecord,
        done: impl FnOnce(Result<(), WriteError>) + Send + 'static,
    ) -> Result<(), WriteError> {
        let rec = normalize(rec)?;
        self.enqueue(Msg::Record(
            Box::new(rec),
            Notify::Callback(Box::new(done)),
            None,
        ))
    }

    /// Writes `rec` to the journal and queues it; returns once it is in the journal, which is when the caller may
    /// treat it as logged: a process killed from here on loses nothing, the next start commits it (see
    /// `engine/src/log/journal.rs`). `done` runs on the writer thread once the record is committed to SQLite (keep it
    /// short). A batch that fails to commit is retried, never skipped, so the chain keeps journal order. Needs
    /// [`LogOptions::journal`].
    pub fn append_journaled(
        &self,
        rec: DecisionRecord,
        done: impl FnOnce(Result<(), WriteError>) + Send + 'static,
    ) -> Result<(), WriteError> {
        if !self.journaling {
            return Err(WriteError::Invalid {
                what: "append".into(),
                reason: "this writer was started without a journal (LogOptions::journal)".into(),
            });
        }
        let rec = normalize(rec)?;
        let mut line = serde_json::to_vec(&rec).map_err(|e| Fault::Invalid {
            what: format!("record {}", rec.id),
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        let mut guard = self.journal.lock();
        let Some(j) = guard.as_mut() else {
            return Err(WriteError::Closed);
        };
        let pos = j.append(&line)?;
        let queued = self.enqueue(Msg::Record(
            Box::new(rec),
            Notify::Callback(Box::new(done)),
            Some(pos),
        ));
        if queued.is_err() {
            // Not queued, so not acknowledged: take it back out of the journal too.
            j.unappend(pos, line.len() as u64);
        }
        queued
    }

    fn enqueue(&self, msg: Msg) -> Result<(), WriteError> {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Disconnected(_)) => return Err(WriteError::Closed),
            Err(TrySendError::Full(msg)) => match self.on_full {
                OnFull::FailClosed => {
                    self.counters
                        .queue_full_rejections
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(WriteError::QueueFull);
                }
                OnFull::Wait => {
                    self.counters
                        .queue_full_waits
                        .fetch_add(1, Ordering::Relaxed);
                    self.tx.send(msg).map_err(|_| WriteError::Closed)?;
                }
            },
        }
        self.counters.appended.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until every record queued before this call is committed (or failed).
    pub fn flush(&self) -> Result<(), WriteError> {
        let (tx, rx) = bounded(1);
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| WriteError::Closed)?;
        rx.recv().map_err(|_| WriteError::Closed)
    }

    /// Whether the writer thread is still there to commit records: not after [`LogWriter::shutdown`], nor once the
    /// thread has ended on its own.
    pub fn is_running(&self) -> bool {
        self.thread
            .lock()
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }

    /// Commits what is queued and stops the thread. Appends after this return [`WriteError::Closed`].
    pub fn shutdown(&self) -> Result<(), WriteError> {
        let Some(handle) = self.thread.lock().take() else {
            return Ok(());
        };
        // A batch being retried gives up now; its records stay in the journal for the next start.
        self.stopping.store(true, Ordering::Relaxed);
        // If the thread already died, join reports it below.
        let _ = self.tx.send(Msg::Shutdown);
        let joined = handle
            .join()
            .map_err(|_| Fault::io("", "the writer thread panicked"));
        if let Some(checkpointer) = self.checkpointer.lock().take() {
            checkpointer.stop();
        }
        self.journal.lock().take();
        Ok(joined?)
    }

    /// The counters.
    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            appended: c.appended.load(Ordering::Relaxed),
            committed: c.committed.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            queue_full_waits: c.queue_full_waits.load(Ordering::Relaxed),
            queue_full_rejections: c.queue_full_rejections.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            sink_errors: c.sink_errors.load(Ordering::Relaxed),
            recovered: c.recovered.load(Ordering::Relaxed),
            anchors: c.anchors.load(Ordering::Relaxed),
            anchor_errors: c.anchor_errors.load(Ordering::Relaxed),
        }
    }
}

/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// How often the writer, between two batches, checkpoints the WAL itself. The checkpoint thread's `PASSIVE`
/// checkpoints never finish while batches keep coming (each one starts while the writer appends), so under sustained
/// load SQLite never starts the WAL over and it grows without bound (tens of MB a second at full load). Run by the
/// writer, between its own transactions, a `PASSIVE` checkpoint copies what is left (little, after the thread's) and
/// the next transaction starts the WAL from its beginning; it still never waits for a reader.
const WAL_RESTART_EVERY: Duration = Duration::from_secs(1);

/// A thread with its own connection that checkpoints the WAL (`PASSIVE`: it never waits for, nor blocks, the
/// writer). Between checkpoints a page rewritten by many batches is copied into the file once.
struct Checkpointer {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path, busy_timeout: Duration) -> Result<Checkpointer, Fault> {
        let conn = connect(path, busy_timeout)?;
        let (stop, stopped) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("jitgate-log-checkpoint".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "decision log: WAL checkpoint failed");
                    }
                }
                // A last full checkpoint once the writer has stopped, so a clean stop leaves a short WAL.
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .map_err(|e| Fault::io("cannot start the checkpoint thread", e))?;
        Ok(Checkpointer { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Best effort: a writer dropped without shutdown still commits what it accepted.
        let _ = self.shutdown();
    }
}

/// The writer's anchoring: what it signs, and how much was committed since the last anchor.
struct AnchorState {
    opts: AnchorOptions,
    /// Records committed by this writer since the last anchor.
    since: u64,
    /// When the last anchor was signed.
    last: Instant,
    /// The newest head this writer committed (or found at start).
    head: (i64, String),
    /// An anchor signed before the sink existed (the start anchor), for the sink.
    pending: Option<Anchor>,
}

struct Worker {
    /// Told the outcome of each batch's numbered records; closed when the worker ends, however it ends.
    acks: Arc<Acks>,
    anchor: Option<AnchorState>,
    conn: Connection,
    rx: Receiver<Msg>,
    batch_max: usize,
    counters: Arc<Counters>,
    sink: Option<SinkState>,
    /// The log path and the oldest journal generation still on disk, when journaling.
    journal_files: Option<(PathBuf, u64)>,
    stopping: Arc<AtomicBool>,
    /// A journaled batch was given up at shutdown: no later journaled record may be committed before it.
    journal_stuck: bool,
    linger: Duration,
    /// Where committed records go for the shipper, when there is one.
    feed: Option<Arc<ShipFeed>>,
    /// The canonical bytes of each record of the batch being committed, kept for the feed.
    canonical: Vec<Vec<u8>>,
    /// When the writer last checkpointed the WAL itself (see [`WAL_RESTART_EVERY`]).
    restarted: Instant,
}

/// Waits between attempts to commit a failed batch of journaled records: from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

type Batch = Vec<(DecisionRecord, Notify, Option<JournalPos>)>;

impl Drop for Worker {
    fn drop(&mut self) {
        // Whatever is numbered and not committed by now never will be (thread ended, or panicked).
        self.acks.close();
    }
}

/// The range `[start, end)` of the numbered records of `batch` (contiguous: numbers follow queue order).
fn acked_range(batch: &Batch) -> Option<(u64, u64)> {
    let mut numbers = batch.iter().filter_map(|(_, n, _)| match n {
        Notify::Acked(n) => Some(*n),
        _ => None,
    });
    let first = numbers.next()?;
    let last = numbers.next_back().unwrap_or(first);
    Some((first, last + 1))
}

impl Worker {
    fn run(mut self) {
        let mut batch: Batch = Vec::with_capacity(self.batch_max);
        if let Some(a) = self.anchor.as_mut().and_then(|a| a.pending.take()) {
            self.sink_anchor(&a);
        }
        // Exits when every sender is gone or on Shutdown, after committing what was queued.
        loop {
            let first = match &self.anchor {
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
                Some(a) => {
                    let due = a.opts.every.saturating_sub(a.last.elapsed());
                    match self.rx.recv_timeout(due.max(Duration::from_millis(1))) {
                        Ok(m) => m,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            self.anchor_if_due();
                            // Nothing committed since the last anchor: wait a whole interval again.
                            if let Some(a) = self.anchor.as_mut().filter(|a| a.since == 0) {
                                a.last = Instant::now();
                            }
                            continue;
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            // At most as many records as fit before the next count anchor, so an anchor follows every
            // `every_records` records exactly.
            let batch_max = match &self.anchor {
                Some(a) => {
                    (a.opts.every_records.saturating_sub(a.since) as usize).clamp(1, self.batch_max)
                }
                None => self.batch_max,
            };
            // Journaled records were acknowledged already, so nobody waits for their commit: let more arrive, for
            // bigger batches (the cost of a commit is mostly per batch) and no wake-up per record.
            if matches!(first, Msg::Record(_, _, Some(_)))
                && !self.linger.is_zero()
                && self.rx.len() + 1 < self.batch_max
            {
                std::thread::sleep(self.linger);
            }
            let mut control = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(r, n, p) => batch.push((*r, n, p)),
                    other => {
                        // Control messages keep their place in the order: commit what came before them first.
                        control = Some(other);
                        break;
                    }
                }
                if batch.len() >= batch_max {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
                self.restart_wal_if_due();
            }
            match control {
                Some(Msg::Flush(done)) => {
                    let _ = done.send(());
                }
                Some(Msg::Shutdown) => {
                    self.drain_rest(&mut batch);
                    self.anchor_now(AnchorReason::Shutdown);
                    return;
                }
                _ => {}
            }
        }
        self.anchor_now(AnchorReason::Shutdown);
    }

    /// After a batch (whose callers were answered already): every [`WAL_RESTART_EVERY`], a `PASSIVE` checkpoint on
    /// the writer's own connection, so that the WAL restarts at the next transaction instead of growing.
    fn restart_wal_if_due(&mut self) {
        if self.restarted.elapsed() < WAL_RESTART_EVERY {
            return;
        }
        self.restarted = Instant::now();
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "decision log: WAL checkpoint by the writer failed");
        }
    }

    /// After a commit or a quiet interval: signs the head when `every_records` records were committed since the last
    /// anchor, or `every` has passed and some were.
    fn anchor_if_due(&mut self) {
        let Some(a) = &self.anchor else {
            return;
        };
        if a.since >= a.opts.every_records {
            self.anchor_now(AnchorReason::Count);
        } else if a.since > 0 && a.last.elapsed() >= a.opts.every {
            self.anchor_now(AnchorReason::Interval);
        }
    }

    fn anchor_now(&mut self, reason: AnchorReason) {
        let Some(a) = &mut self.anchor else {
            return;
        };
        let (seq, hash) = a.head.clone();
        match a.opts.append(seq, &hash, reason) {
            Ok(signed) => {
                a.since = 0;
                a.last = Instant::now();
                if let Some(signed) = signed {
                    self.counters.anchors.fetch_add(1, Ordering::Relaxed);
                    self.sink_anchor(&signed);
                }
            }
            Err(e) => {
                // Retried at the next interval; the records stay committed and chained.
                a.last = Instant::now();
                self.counters.anchor_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, seq, "decision log: anchor not signed");
            }
        }
    }

    /// A copy of an anchor in the JSON Lines sink (`{"anchor": ...}`), so it can live on another host.
    fn sink_anchor(&mut self, a: &Anchor) {
        let Some(sink) = &mut self.sink else {
            return;
        };
        let line = serde_json::to_vec(&serde_json::json!({ "anchor": a }));
        if let Err(e) = line.map_err(|e| Fault::io("", e)).and_then(|mut l| {
            l.push(b'\n');
            sink.write_line(&l)
        }) {
            self.counters.sink_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "decision log: JSON Lines sink write failed");
        }
    }

    /// After Shutdown: commit anything still queued so a clean stop loses nothing.
    fn drain_rest(&mut self, batch: &mut Batch) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Record(r, n, p) => batch.push((*r, n, p)),
                Msg::Flush(done) => {
                    self.commit(batch);
                    let _ = done.send(());
                }
                Msg::Shutdown => {}
            }
            if batch.len() >= self.batch_max {
                self.commit(batch);
            }
        }
        self.commit(batch);
    }

    /// One attempt at committing `batch`, with the shipping mark the feed reports; on success the feed learns that
    /// the mark is written, and `self.canonical` holds each record's canonical bytes.
    fn write(&mut self, batch: &mut Batch, pos: Option<JournalPos>) -> Result<(), Fault> {
        let Some(feed) = &self.feed else {
            return write_batch(&mut self.conn, batch, pos, None, None);
        };
        let mark = feed.mark_due();
        self.canonical.clear();
        // Until the batch is in the feed (or failed), a shipper leaves the log alone.
        feed.set_committing(true);
        let written = write_batch(&mut self.conn, batch, pos, mark, Some(&mut self.canonical));
        if let Err(e) = written {
            feed.set_committing(false);
            return Err(e);
        }
        if let Some(m) = mark {
            feed.set_marked(m);
        }
        Ok(())
    }

    fn commit(&mut self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let pos = batch.iter().rev().find_map(|(_, _, p)| *p);
        let mut result = if pos.is_some() && self.journal_stuck {
            Err(Fault::io(
                "",
                "an earlier journaled batch is not committed; left in the journal for the next start",
            ))
        } else {
            self.write(batch, pos)
        };
        // Journaled records were acknowledged already: retry rather than skip them (a later batch would move the
        // stored journal position past them). The queue fills meanwhile, so callers wait or fail closed.
        let mut wait = RETRY_FIRST;
        while let Err(e) = &result {
            if pos.is_none() || self.journal_stuck {
                break;
            }
            if self.stopping.load(Ordering::Relaxed) {
                self.journal_stuck = true;
                break;
            }
            self.counters.errors.fetch_add(n, Ordering::Relaxed);
            tracing::error!(error = %e, records = n, retry_in = ?wait, "decision log: journaled batch not committed");
            std::thread::sleep(wait);
            wait = (wait * 2).min(RETRY_MAX);
            result = self.write(batch, pos);
        }
        match result {
            Ok(()) => {
                if let (Some(p), Some((log, oldest))) = (pos, &mut self.journal_files) {
                    journal::remove_before(log, oldest, p.generation);
                }
                self.counters.committed.fetch_add(n, Ordering::Relaxed);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                if let (Some(a), Some((last, _, _))) = (&mut self.anchor, batch.last()) {
                    a.head = (last.seq, last.hash.clone());
                    a.since += n;
                }
                if let Some(sink) = &mut self.sink {
                    for (r, _, _) in batch.iter() {
                        if let Err(e) = sink.write(r) {
                            self.counters.sink_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "decision log: JSON Lines sink write failed");
                        }
                    }
                }
                // The shipper's copy before anyone is told: a shipper that sees a committed record in the log also
                // finds it in the feed, and reads the log only for real gaps.
                if let Some(feed) = &self.feed {
                    let head = batch.last().map_or(0, |(r, _, _)| r.seq);
                    let mut canonical = self.canonical.drain(..);
                    let shipped = batch
                        .iter_mut()
                        .map(|(r, _, _)| stored(r, canonical.next().unwrap_or_default()))
                        .collect();
                    drop(canonical);
                    feed.push(shipped, head);
                }
                let acked = acked_range(batch);
                for (_, notify, _) in batch.drain(..) {
                    notify.send(Ok(()));
                }
                if let Some((start, end)) = acked {
                    self.acks.resolve(start, end, Ok(()));
                }
                self.anchor_if_due();
            }
            Err(e) => {
                self.counters.errors.fetch_add(n, Ordering::Relaxed);
                tracing::error!(error = %e, records = n, "decision log: batch not committed");
                let acked = acked_range(batch);
                for (_, notify, _) in batch.drain(..) {
                    notify.send(Err(e.clone().into()));
                }
                if let Some((start, end)) = acked {
                    self.acks.resolve(start, end, Err(e.into()));
                }
            }
        }
    }
}

/// Rewrites the record's time in the one stored format (text order is then time order); a bad time is refused
/// at append, not in the middle of a batch.
fn normalize(mut rec: DecisionRecord) -> Result<DecisionRecord, Fault> {
    if is_stored_time(&rec.time) {
        return Ok(rec);
    }
    let t = parse_time(&rec.time).map_err(|reason| Fault::Invalid {
        what: format!("record {} time", rec.id),
        reason,
    })?;
    rec.time = format_time(t);
    Ok(rec)
}

/// Seals and inserts a batch in one `IMMEDIATE` transaction. The head is read inside the transaction (not
/// cached), so prune or a second writer on the same file cannot fork the chain.
fn write_batch(
    conn: &mut Connection,
    batch: &mut [(DecisionRecord, Notify, Option<JournalPos>)],
    journal_pos: Option<JournalPos>,
    shipped: Option<i64>,
    canonical: Option<&mut Vec<Vec<u8>>>,
) -> Result<(), Fault> {
    write_records(
        conn,
        batch.iter_mut().map(|(r, _, _)| r),
        journal_pos,
        shipped,
        canonical,
    )
}

/// Seals `records` onto the chain head and inserts them in one `IMMEDIATE` transaction, storing `journal_pos`
/// (where the last journaled one ends) and the shipping mark `shipped` (moved forward only, and only where a
/// shipper has set one) with them. With `canonical`, each record's canonical bytes are pushed there (for the
/// shipper's feed). The writer's batches and journal recovery both go through here.
pub(crate) fn write_records<'a>(
    conn: &mut Connection,
    records: impl Iterator<Item = &'a mut DecisionRecord>,
    journal_pos: Option<JournalPos>,
    shipped: Option<i64>,
    canonical: Option<&mut Vec<Vec<u8>>>,
) -> Result<(), Fault> {
    // BEGIN and COMMIT through cached statements: a transaction of rusqlite's parses both afresh for every batch.
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let written = seal_and_insert(conn, records, journal_pos, shipped, canonical).and_then(|()| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    });
    if written.is_err() && !conn.is_autocommit() {
        // Nothing of a failed batch stays (a failed COMMIT leaves the transaction open).
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "decision log: rollback of a failed batch failed");
        }
    }
    written
}

/// The body of [`write_records`]' transaction.
fn seal_and_insert<'a>(
    conn: &Connection,
    records: impl Iterator<Item = &'a mut DecisionRecord>,
    journal_pos: Option<JournalPos>,
    shipped: Option<i64>,
    mut canonical: Option<&mut Vec<Vec<u8>>>,
) -> Result<(), Fault> {
    let (mut seq, mut prev) = db::head(conn)?.unwrap_or((0, GENESIS_HASH.to_string()));
    let mut bytes = Vec::new();
    for r in records {
        seq += 1;
        // Each JSON column is serialized once, for the row and for the canonical bytes the hash covers.
        r.start_seal(seq, &prev);
        let cols = db::JsonColumns::of(r)?;
        bytes.clear();
        canonical_from_columns(r, &cols, &mut bytes)?;
        r.finish_seal(&bytes);
        db::insert_with(conn, r, &cols)?;
        prev.clone_from(&r.hash);
        if let Some(out) = canonical.as_deref_mut() {
            let keep = Vec::with_capacity(bytes.capacity());
            out.push(std::mem::replace(&mut bytes, keep));
        }
    }
    db::set_head(conn, seq, &prev)?;
    if let Some(p) = journal_pos {
        journal::store_pos(conn, p)?;
    }
    if let Some(s) = shipped {
        db::advance_shipped(conn, s)?;
    }
    Ok(())
}

/// A committed record as the shipper takes it. The strings a request worker made (time, principal) are copied, not
/// moved: the record is then freed here, on the writer, as it is without a shipper, and the copies (made on this
/// thread) are freed by the shipper a pass later. Moved, a worker's allocations lived until the shipper's pass and
/// came back to the worker's heap from another thread in bulk, and the workers spent more of their time in the
/// allocator (mimalloc's cross-thread frees).
fn stored(r: &mut DecisionRecord, canonical: Vec<u8>) -> StoredRecord {
    let json = r.sealed_json(canonical);
    let grants_used = if r.grants_used.is_empty() {
        "[]".to_string()
    } else {
        serde_json::to_string(&r.grants_used).unwrap_or_else(|_| "[]".to_string())
    };
    StoredRecord {
        seq: r.seq,
        time: r.time.as_str().to_owned(),
        kind: r.kind.as_str(),
        principal: r.principal.as_str().to_owned(),
        grants_used,
        json,
        prev_hash: std::mem::take(&mut r.prev_hash),
        hash: std::mem::take(&mut r.hash),
    }
}

struct SinkState {
    sink: JsonlSink,
    file: Option<File>,
    size: u64,
}

impl SinkState {
    fn open(sink: JsonlSink) -> Result<SinkState, Fault> {
        let mut s = SinkState {
            sink,
            file: None,
            size: 0,
        };
        if let JsonlSink::File { path, .. } = &s.sink {
            let path = path.clone();
            s.open_file(&path)?;
        }
        Ok(s)
    }

    fn open_file(&mut self, path: &Path) -> Result<(), Fault> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Fault::io(format!("cannot open {}", path.display()), e))?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    fn write(&mut self, r: &DecisionRecord) -> Result<(), Fault> {
        let mut line = serde_json::to_vec(r).map_err(|e| Fault::io("", e))?;
        line.push(b'\n');
        self.write_line(&line)
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), Fault> {
        match self.sink.clone() {
            JsonlSink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line)?;
                Ok(())
            }
            JsonlSink::File {
                path,
                max_bytes,
                keep,
            } => {
                if self.size > 0 && self.size + line.len() as u64 > max_bytes {
                    self.file = None;
                    rotate(&path, keep)?;
                    self.open_file(&path)?;
                }
                if self.file.is_none() {
                    self.open_file(&path)?;
                }
                let f = self
                    .file
                    .as_mut()
                    .ok_or_else(|| Fault::io("", "sink file not open"))?;
                f.write_all(line)?;
                self.size += line.len() as u64;
                Ok(())
            }
        }
    }
}

/// `path.(keep-1)` -> `path.keep`, ..., `path` -> `path.1`; the oldest beyond `keep` is dropped.
fn rotate(path: &Path, keep: u32) -> Result<(), Fault> {
    let numbered = |i: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{i}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        std::fs::remove_file(path)?;
        return Ok(());
    }
    let _ = std::fs::remove_file(numbered(keep));
    for i in (1..keep).rev() {
        let from = numbered(i);
        if from.exists() {
            std::fs::rename(&from, numbered(i + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::log::record::{Outcome, RecordKind};

    fn records(range: std::ops::Range<usize>) -> Vec<DecisionRecord> {
        range
            .map(|i| {
                let mut r = DecisionRecord::new(RecordKind::Decision);
                r.principal = format!(r#"User::"u{i}""#);
                r.action = r#"Action::"GET""#.into();
                r.resource = format!(r#"Service::"s{i}""#);
                r.decision = Some(Outcome::Allow);
                r.grants_used = vec![format!("g{i}")];
                r.revision = "rev1".into();
                r.engine = "cedar".into();
                r
            })
            .collect()
    }

    fn seqs(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT seq FROM decisions ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_batch_that_fails_inside_its_transaction_leaves_nothing_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let mut conn = db::open_write(&path, DEFAULT_BUSY_TIMEOUT).unwrap();
        write_records(&mut conn, records(0..3).iter_mut(), None, None, None).unwrap();
        let head = db::head(&conn).unwrap().unwrap();
        assert_eq!(head.0, 3);
        // The fifth record of the next batch is refused after the four before it were inserted.
        conn.execute_batch(
            r#"CREATE TRIGGER refuse BEFORE INSERT ON decisions WHEN NEW.resource = 'Service::"s7"'
               BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"#,
        )
        .unwrap();
        let err =
            write_records(&mut conn, records(3..10).iter_mut(), None, None, None).unwrap_err();
        assert!(err.to_string().contains("refused by the test"), "{err}");
        // Rolled back: no transaction left open, none of the batch's rows, grant rows or head.
        assert!(conn.is_autocommit());
        assert_eq!(seqs(&conn), [1, 2, 3]);
        let grant_rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM decision_grants", [], |r| r.get(0))
            .unwrap();
        assert_eq!(grant_rows, 3);
        assert_eq!(db::head(&conn).unwrap().unwrap(), head);
        // The next batch continues the chain from the same head.
        conn.execute_batch("DROP TRIGGER refuse").unwrap();
        let mut next = records(10..12);
        write_records(&mut conn, next.iter_mut(), None, None, None).unwrap();
        assert_eq!(next[0].seq, 4);
        assert_eq!(next[0].prev_hash, head.1);
        assert_eq!(seqs(&conn), [1, 2, 3, 4, 5]);
        drop(conn);
        assert!(crate::log::verify_store(&path).unwrap().ok);
    }
}
