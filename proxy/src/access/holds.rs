//! Held data-plane connections waiting on a verdict: one watch channel per pending `hold` request, registered by the
//! hold stage and fired by the access service. Only the signal lives here; the truth is in the store.
//!
//! Several connections may wait on one request (a retry of the same held request waits on the request it already
//! has), and one principal may keep at most a configured number of connections waiting at once, so that a caller
//! cannot pin an unbounded number of open connections and buffered bodies.

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

/// Waiting connections by access-request id, and how many each principal has.
#[derive(Debug, Default)]
pub struct Holds {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The channel of each request waited on, with how many connections wait on it.
    by_id: HashMap<String, (watch::Sender<HoldSignal>, usize)>,
    /// Connections waiting per principal.
    by_principal: HashMap<String, usize>,
}

/// A registration; dropping it forgets the waiter.
#[derive(Debug)]
pub struct Waiter {
    holds: Arc<Holds>,
    id: String,
    principal: String,
    /// Fires when a verdict arrives.
    pub rx: watch::Receiver<HoldSignal>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut inner = self.holds.inner.lock();
        if let Some((_, n)) = inner.by_id.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.by_id.remove(&self.id);
            }
        }
        if let Some(n) = inner.by_principal.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.by_principal.remove(&self.principal);
            }
        }
    }
}

impl Holds {
    /// Registers interest of a connection of `principal` in request `id`, unless `principal` already has `max`
    /// connections waiting (`None`: the caller answers at once, as when the wait ends).
    pub fn register(self: &Arc<Self>, id: &str, principal: &str, max: usize) -> Option<Waiter> {
        let mut inner = self.inner.lock();
        let mine = inner.by_principal.get(principal).copied().unwrap_or(0);
        if mine >= max {
            return None;
        }
        *inner.by_principal.entry(principal.to_string()).or_default() += 1;
        let rx = match inner.by_id.get_mut(id) {
            Some((tx, n)) => {
                *n += 1;
                tx.subscribe()
            }
            None => {
                let (tx, rx) = watch::channel(HoldSignal::Waiting);
                inner.by_id.insert(id.to_string(), (tx, 1));
                rx
            }
        };
        Some(Waiter {
            holds: self.clone(),
            id: id.to_string(),
            principal: principal.to_string(),
            rx,
        })
    }

    /// Tells the connections waiting on `id`, if any, about the verdict.
    pub fn fire(&self, id: &str, signal: HoldSignal) {
        if let Some((tx, _)) = self.inner.lock().by_id.get(id) {
            let _ = tx.send(signal);
        }
    }

    /// Connections waiting now.
    pub fn waiting(&self) -> usize {
        self.inner.lock().by_id.values().map(|(_, n)| n).sum()
    }
}
