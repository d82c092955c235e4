//! log: the proxy's side of the decision log. A slot is reserved before a request can reach an upstream (so a full
//! queue waits or fails closed up front), and the record is logged before the response leaves: committed to
//! SQLite (`[log] acknowledge = "commit"`), or written to the acknowledgement journal (`"journal"`), whose records
//! the writer commits right after and, after a crash, at the next start. The slot is freed once the record is
//! committed either way, so the queue bounds what is not yet in SQLite.

use std::sync::Arc;

use jitgate_engine::log::{
    Ack, AnchorKey, AnchorOptions, DEFAULT_FEED_CAPACITY, DecisionRecord, JsonlSink, LogOptions,
    LogWriter, OnFull, ShipFeed, WriteError, redact, redact_query,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::{Acknowledge, AnchorConfig, Config};

/// A reserved place in the log queue (empty when the log is disabled, or once taken).
#[derive(Debug, Default)]
pub struct Slot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// The engine's anchoring settings for `[log] anchor_key`: loads the key, generating it (0600) when missing.
pub fn anchor_options(a: &AnchorConfig) -> Result<AnchorOptions, WriteError> {
    let key = AnchorKey::load_or_generate(&a.key).map_err(|e| WriteError::Invalid {
        what: "log.anchor_key".into(),
        reason: e.to_string(),
    })?;
    Ok(AnchorOptions {
        key: Arc::new(key),
        file: a.file.clone(),
        replica: a.replica.clone(),
        every: a.every,
        every_records: a.every_records,
    })
}

/// Lifecycle and admin records that may wait for their commit at once (beside `[log] queue_capacity`).
const LIFECYCLE_SLOTS: usize = 64;

/// The decision log as the proxy uses it.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    /// `None` when `[log] enabled = false` (benchmarks only).
    writer: Option<Arc<LogWriter>>,
    /// Room for data-plane records, reserved before a request can reach an upstream (`on_full` applies).
    slots: Arc<Semaphore>,
    /// Room for lifecycle and admin records, apart from the data plane's: a held request keeps its slot while it
    /// waits for an approval, so an approval's record must never wait for a data-plane slot.
    lifecycle_slots: Arc<Semaphore>,
    capacity: usize,
    on_full: OnFull,
    acknowledge: Acknowledge,
    redact: Arc<Vec<String>>,
    /// Query parameters whose values are masked in every record (`[log] redact_query`).
    redact_query: Arc<Vec<String>>,
    /// Committed records for the shipper, with a store shared by replicas (`[store] url`).
    feed: Option<Arc<ShipFeed>>,
}

impl DecisionLog {
    /// Opens the log file named in the config and starts its writer thread.
    pub fn open(config: &Config) -> Result<DecisionLog, WriteError> {
        let jsonl = config.log_jsonl.as_deref().map(|s| match s {
            "stdout" | "-" => JsonlSink::Stdout,
            path => JsonlSink::File {
                path: path.into(),
                max_bytes: 64 * 1024 * 1024,
                keep: 5,
            },
        });
        // With a shared store the shipper takes committed records from the writer in memory.
        let feed = (config.log_enabled && config.store_url.is_some())
            .then(|| Arc::new(ShipFeed::new(DEFAULT_FEED_CAPACITY)));
        // The writer's own queue never fills: slots are reserved here first, and there are no more slots than room.
        let opts = LogOptions {
            ship: feed.clone(),
            queue_capacity: config.log_queue_capacity + LIFECYCLE_SLOTS,
            on_full: OnFull::Wait,
            jsonl,
            journal: config.log_acknowledge == Acknowledge::Journal,
            anchor: match (&config.log_anchor, config.log_enabled) {
                (Some(a), true) => Some(anchor_options(a)?),
                _ => None,
            },
            ..LogOptions::default()
        };
        let writer = if config.log_enabled {
            Some(Arc::new(LogWriter::start(&config.log_path, opts)?))
        } else {
            tracing::warn!(
                "the decision log is DISABLED ([log] enabled = false): decisions are not recorded"
            );
            None
        };
        Ok(DecisionLog {
            writer,
            slots: Arc::new(Semaphore::new(config.log_queue_capacity)),
            lifecycle_slots: Arc::new(Semaphore::new(LIFECYCLE_SLOTS)),
            capacity: config.log_queue_capacity,
            on_full: config.log_on_full,
            acknowledge: config.log_acknowledge,
            redact: Arc::new(config.log_redact.clone()),
            redact_query: Arc::new(config.log_redact_query.clone()),
            feed,
        })
    }

    /// The feed of committed records for a shipper (`None` without a shared store or with the log disabled).
    pub fn ship_feed(&self) -> Option<Arc<ShipFeed>> {
        self.feed.clone()
    }

    /// The underlying writer (`None` when the log is disabled).
    pub fn writer(&self) -> Option<&Arc<LogWriter>> {
        self.writer.as_ref()
    }

    /// Reserves a slot: waits for room, or fails at once under `fail_closed`.
    pub async fn reserve(&self) -> Result<Slot, WriteError> {
        match self.on_full {
            _ if self.writer.is_none() => Ok(Slot(None)),
            OnFull::FailClosed => self
                .slots
                .clone()
                .try_acquire_owned()
                .map(|p| Slot(Some(p)))
                .map_err(|_| WriteError::QueueFull),
            OnFull::Wait => {
                if let Ok(p) = self.slots.clone().try_acquire_owned() {
                    return Ok(Slot(Some(p)));
                }
                tracing::warn!("decision log queue full; waiting");
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map(|p| Slot(Some(p)))
                    .map_err(|_| WriteError::Closed)
            }
        }
    }

    /// Logs a record: waits until it is committed, or only until it is in the journal (see the module docs). The
    /// slot is released when the commit finishes.
    pub async fn commit(&self, slot: Slot, rec: DecisionRecord) -> Result<(), WriteError> {
        match self.queue(slot, rec, true)? {
            Queued::Acked(waiting) => waiting.await,
            Queued::Channel(committed) => committed.await.map_err(|_| WriteError::Closed)?,
            Queued::Logged => Ok(()),
        }
    }

    /// Queues a record without waiting for it: for a request whose caller went away, where nobody is left to wait.
    /// The writer commits it like any other (or, journaled, it is in the journal when this returns); the slot is
    /// released after the commit.
    pub fn commit_detached(&self, slot: Slot, rec: DecisionRecord) -> Result<(), WriteError> {
        self.queue(slot, rec, false).map(drop)
    }

    /// Redacts and queues `rec`, releasing `slot` once it is committed. Returns what tells of that commit: with
    /// `waited` (someone awaits it) the writer's batch acknowledgement, else a channel from the writer thread; nothing
    /// when there is nothing to wait for (the log is off, or the record is acknowledged by its journal write).
    fn queue(
        &self,
        slot: Slot,
        mut rec: DecisionRecord,
        waited: bool,
    ) -> Result<Queued, WriteError> {
        self.redact(&mut rec);
        let Some(writer) = &self.writer else {
            return Ok(Queued::Logged);
        };
        if self.acknowledge == Acknowledge::Journal {
            // A failed commit is retried by the writer (the record is already acknowledged); the slot stays taken
            // until then, so a log that cannot commit fills the queue and `on_full` applies.
            writer.append_journaled(rec, move |_| drop(slot))?;
            return Ok(Queued::Logged);
        }
        if waited {
            // One acknowledgement per batch from the writer; the slot is held until the record is committed.
            return Ok(Queued::Acked(Waiting {
                ack: Some(writer.append_acked(rec)?),
                slot: Some(slot),
            }));
        }
        let (tx, rx) = oneshot::channel();
        writer.append_with(rec, move |r| {
            drop(slot);
            let _ = tx.send(r);
        })?;
        Ok(Queued::Channel(rx))
    }

    /// Masks what `[log] redact` and `[log] redact_query` name in `rec`.
    fn redact(&self, rec: &mut DecisionRecord) {
        if !self.redact.is_empty() {
            redact(rec, &self.redact);
        }
        redact_query(rec, &self.redact_query);
    }

    /// Appends a record that is not a data-plane request's: a lifecycle event or a refused admin call. Its slot
    /// comes from a room of its own and is waited for whatever `on_full` says: the change it records is already
    /// committed, and `fail_closed` refuses requests, never the record of something done.
    pub async fn lifecycle(&self, rec: DecisionRecord) -> Result<(), WriteError> {
        let slot = match &self.writer {
            None => Slot(None),
            Some(_) => self
                .lifecycle_slots
                .clone()
                .acquire_owned()
                .await
                .map(|p| Slot(Some(p)))
                .map_err(|_| WriteError::Closed)?,
        };
        self.commit(slot, rec).await
    }

    /// Waits until everything queued is committed.
    pub async fn flush(&self) {
        if let Some(w) = self.writer.clone() {
            let _ = tokio::task::spawn_blocking(move || w.flush()).await;
        }
    }

    /// Records waiting to be committed.
    pub fn queued(&self) -> usize {
        self.capacity.saturating_sub(self.slots.available_permits())
    }

    /// Whether records can be committed: the log is disabled (nothing to commit), or its writer thread runs.
    pub fn is_healthy(&self) -> bool {
        self.writer.as_ref().is_none_or(|w| w.is_running())
    }
}

/// What tells of a queued record's commit.
enum Queued {
    /// The writer's batch acknowledgement.
    Acked(Waiting),
    /// A channel the writer thread completes (a record nobody awaits, whose slot goes at the commit).
    Channel(oneshot::Receiver<Result<(), WriteError>>),
    /// Nothing to wait for.
    Logged,
}

/// A record being waited for with its slot. Dropped before the answer (the caller went away), the slot stays taken
/// until the record is committed, on a task of its own, so the queue still bounds what is not yet in SQLite.
struct Waiting {
    ack: Option<Ack>,
    slot: Option<Slot>,
}

impl std::future::Future for Waiting {
    type Output = Result<(), WriteError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Some(ack) = self.ack.as_mut() else {
            return std::task::Poll::Ready(Err(WriteError::Closed));
        };
        let done = std::pin::Pin::new(ack).poll(cx);
        if done.is_ready() {
            // Answered: the slot goes with this (no task to keep it).
            self.ack = None;
        }
        done
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let (Some(ack), Some(slot)) = (self.ack.take(), self.slot.take()) else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = ack.await;
                drop(slot);
            });
        }
    }
}
