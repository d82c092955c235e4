//! Durable state behind a trait: grants (and, later, access requests and approvals) in SQLite by default.
//! Writes that matter are committed before they take effect; the in-memory [`crate::GrantIndex`] follows the store.

use crate::clock::UnixTime;
use crate::grant::Grant;

/// Why a store operation failed. Every store error on the decision path is a deny.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("store: {0}")]
    Database(String),
    /// A row could not be decoded.
    #[error("store: corrupt row in `{table}`: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The thing asked for does not exist.
    #[error("store: {0} not found")]
    NotFound(String),
    /// The write conflicts with what is stored (e.g. a second verdict by the same approver).
    #[error("store: conflict: {0}")]
    Conflict(String),
}

/// Grant persistence. Implementations must be safe to call from many threads.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Every grant that may still matter (not revoked/consumed and not expired before `now`).
    fn load_grants(&self, now: UnixTime) -> Result<Vec<Grant>, StoreError>;
    /// Inserts or replaces a grant (committed when this returns).
    fn put_grant(&self, grant: &Grant) -> Result<(), StoreError>;
    /// One grant by id.
    fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;
    /// Atomically takes one use of a use-limited grant that is active at `now`. Returns the updated grant, or
    /// `None` when no use was left (or it is no longer active): exactly one of N concurrent callers wins the last use.
    fn consume_use(&self, id: &str, now: UnixTime) -> Result<Option<Grant>, StoreError>;
    /// Marks a grant revoked (committed when this returns) and returns it; `None` if it does not exist.
    fn revoke_grant(&self, id: &str, by: &str, at: UnixTime) -> Result<Option<Grant>, StoreError>;
}
