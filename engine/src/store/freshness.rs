//! How recently this replica heard from a shared store: a replica that has heard nothing (no notification, no
//! heartbeat, no resync) for longer than its bound may hold a stale grant index, so it stops allowing requests
//! that rest on a grant until it hears again (fail closed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the store was last heard from, and how long silence may last.
#[derive(Debug)]
pub struct Freshness {
    start: Instant,
    /// Milliseconds since `start` when the store was last heard from.
    heard_ms: AtomicU64,
    bound: Duration,
}

impl Freshness {
    /// Heard from just now; stale after `bound` of silence.
    pub fn new(bound: Duration) -> Self {
        Freshness {
            start: Instant::now(),
            heard_ms: AtomicU64::new(0),
            bound,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records that the store answered or notified just now.
    pub fn heard(&self) {
        self.heard_ms.fetch_max(self.now_ms(), Ordering::AcqRel);
    }

    /// How long since the store was last heard from.
    pub fn silent_for(&self) -> Duration {
        let heard = self.heard_ms.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(heard))
    }

    /// The bound (`max_staleness`).
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Whether the silence has lasted longer than the bound.
    pub fn is_stale(&self) -> bool {
        self.silent_for() > self.bound
    }
}
