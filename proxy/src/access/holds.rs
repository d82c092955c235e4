//! Held data-plane connections waiting on a verdict: one watch channel per pending `hold` request, registered by the
//! hold stage and fired by the access service. Only the signal lives here; the truth is in the store.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// The verdict a waiting connection learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldSignal {
    /// No verdict yet.
    Waiting,
    /// Approved: the request-bound grant exists.
    Approved,
    /// Denied (or expired).
    Denied,
}

/// Waiting connections by access-request id.
#[derive(Debug, Default)]
pub struct Holds {
    waiters: Mutex<HashMap<String, watch::Sender<HoldSignal>>>,
}

/// A registration; dropping it forgets the waiter.
#[derive(Debug)]
pub struct Waiter {
    holds: Arc<Holds>,
    id: String,
    /// Fires when a verdict arrives.
    pub rx: watch::Receiver<HoldSignal>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.holds.waiters.lock().remove(&self.id);
    }
}

impl Holds {
    /// Registers interest in request `id`.
    pub fn register(self: &Arc<Self>, id: &str) -> Waiter {
        let (tx, rx) = watch::channel(HoldSignal::Waiting);
        self.waiters.lock().insert(id.to_string(), tx);
        Waiter {
            holds: self.clone(),
            id: id.to_string(),
            rx,
        }
    }

    /// Tells the connection waiting on `id`, if any, about the verdict.
    pub fn fire(&self, id: &str, signal: HoldSignal) {
        if let Some(tx) = self.waiters.lock().get(id) {
            let _ = tx.send(signal);
        }
    }

    /// Connections waiting now.
    pub fn waiting(&self) -> usize {
        self.waiters.lock().len()
    }
}
