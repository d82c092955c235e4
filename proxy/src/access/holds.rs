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
    /// What each held request is, exactly, until its verdict (for approvers; see [`HeldRequest`]).
    described: HashMap<String, HeldRequest>,
}

/// The most held requests described at once; beyond it a new hold is shown by its reason alone.
const MAX_DESCRIBED: usize = 10_000;

/// A held request as an approver should see it before approving: the exact method, host, path, query (its secrets
/// redacted as in the log), and the body's size, SHA-256 and, when it is text, its first bytes. Kept in memory by
/// the replica that holds the connection, until a verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldRequest {
    /// The method, e.g. `DELETE`.
    pub method: String,
    /// The host the caller named, if any.
    pub host: Option<String>,
    /// The normalized path (what the upstream receives).
    pub path: String,
    /// The query without `?` (redacted), empty when none.
    pub query: String,
    /// The body's size in bytes.
    pub body_bytes: usize,
    /// The body's SHA-256, hex.
    pub body_sha256: String,
    /// The body's first bytes when it is UTF-8 text (cut at a character boundary), else `None`.
    pub body_preview: Option<String>,
}

/// The longest body preview, in bytes.
pub const PREVIEW_BYTES: usize = 2048;

impl HeldRequest {
    /// Describes a request from its parts and whole `body`.
    pub fn new(method: &str, host: Option<&str>, path: &str, query: &str, body: &[u8]) -> Self {
        use sha2::Digest;
        let preview = match std::str::from_utf8(body) {
            Ok(text) => Some(text),
            // Text cut in the middle of a character by nothing but the end of the body is still text.
            Err(e) if e.error_len().is_none() => std::str::from_utf8(&body[..e.valid_up_to()]).ok(),
            Err(_) => None,
        }
        .map(|text| {
            let mut end = text.len().min(PREVIEW_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_string()
        });
        HeldRequest {
            method: method.to_string(),
            host: host.map(str::to_string),
            path: path.to_string(),
            query: query.to_string(),
            body_bytes: body.len(),
            body_sha256: hex::encode(sha2::Sha256::digest(body)),
            body_preview: preview,
        }
    }
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
        let mut inner = self.inner.lock();
        if signal != HoldSignal::Waiting {
            inner.described.remove(id);
        }
        if let Some((tx, _)) = inner.by_id.get(id) {
            let _ = tx.send(signal);
        }
    }

    /// Keeps what held request `id` is, for approvers, until its verdict (unless [`MAX_DESCRIBED`] are kept).
    pub fn describe(&self, id: &str, request: HeldRequest) {
        let mut inner = self.inner.lock();
        if inner.described.len() < MAX_DESCRIBED || inner.described.contains_key(id) {
            inner.described.insert(id.to_string(), request);
        }
    }

    /// What held request `id` is, when this replica holds it and it has no verdict yet.
    pub fn described(&self, id: &str) -> Option<HeldRequest> {
        self.inner.lock().described.get(id).cloned()
    }

    /// Connections waiting now.
    pub fn waiting(&self) -> usize {
        self.inner.lock().by_id.values().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_held_request_is_described_exactly_with_a_preview_of_text_only() {
        let h = HeldRequest::new("DELETE", Some("api.test"), "/databases/db1", "force=1", b"");
        assert_eq!(h.body_bytes, 0);
        assert_eq!(
            h.body_sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(h.body_preview.as_deref(), Some(""));
        // Text longer than the preview is cut at a character boundary, never inside one.
        let long = "é".repeat(PREVIEW_BYTES);
        let h = HeldRequest::new("POST", None, "/p", "", long.as_bytes());
        let preview = h.body_preview.unwrap();
        assert!(preview.len() <= PREVIEW_BYTES && preview.len() >= PREVIEW_BYTES - 1);
        assert!(preview.chars().all(|c| c == 'é'));
        assert_eq!(h.body_bytes, long.len());
        // A binary body has no preview.
        let h = HeldRequest::new("POST", None, "/p", "", &[0xff, 0x00, 0xfe, b'a']);
        assert_eq!(h.body_preview, None);
    }

    #[test]
    fn a_verdict_forgets_the_description() {
        let holds = Holds::default();
        holds.describe("r1", HeldRequest::new("DELETE", None, "/x", "", b"{}"));
        assert_eq!(
            holds.described("r1").unwrap().body_preview.as_deref(),
            Some("{}")
        );
        holds.fire("r1", HoldSignal::Approved);
        assert_eq!(holds.described("r1"), None);
    }
}
