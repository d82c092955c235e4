//! Durable state behind traits: grants ([`GrantStore`]), access requests with their approvals ([`RequestStore`]) and
//! the entity data that changes between releases ([`EntityStore`]), in SQLite by default ([`crate::sqlite`]) or in memory ([`memory`]). Writes commit before they return; the
//! in-memory [`crate::GrantIndex`] follows the store. Every backend must pass [`conformance`].

pub mod conformance;
pub mod freshness;
pub mod memory;

use crate::access::{AccessRequest, Approval, RequestFilter, RequestState};
use crate::clock::UnixTime;
use crate::grant::Grant;

pub use freshness::Freshness;
pub use memory::MemStore;

/// The cause of a [`StoreError::Database`]: whatever the backend's driver reported.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed. Every store error on the decision path is a deny.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error; `context` says what was being done (empty when the cause says it all).
    #[error("store: {}{source}", prefix(context))]
    Database {
        /// What was being done, e.g. `cannot open /var/lib/jitgate/state.db`.
        context: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
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

fn prefix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    }
}

impl StoreError {
    /// A database error with what was being done when it happened.
    pub fn database(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Database {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Grant persistence. Implementations must be safe to call from many threads.
pub trait GrantStore: Send + Sync + std::fmt::Debug {
    /// Every grant that may still matter (not revoked/consumed and not expired before `now`).
    fn load_grants(&self, now: UnixTime) -> Result<Vec<Grant>, StoreError>;
    /// Inserts or replaces a grant (committed when this returns).
    fn put_grant(&self, grant: &Grant) -> Result<(), StoreError>;
    /// One grant by id.
    fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;
    /// Atomically takes one use of a grant that is active at `now` and has a use left (a grant without a limit
    /// counts its uses too). Returns the updated grant, or `None` when no use was left (or it is no longer
    /// active): exactly one of N concurrent callers wins the last use.
    fn consume_use(&self, id: &str, now: UnixTime) -> Result<Option<Grant>, StoreError>;
    /// Takes one use of each of `ids` as [`GrantStore::consume_use`] does, all or nothing: when one of them has no
    /// use left (or is no longer active) none is spent and its id is returned.
    fn consume_uses(&self, ids: &[&str], now: UnixTime) -> Result<Spent, StoreError>;
    /// Marks an active grant revoked (committed when this returns) and returns it; a grant already revoked or
    /// consumed is returned as it is; `None` if it does not exist.
    fn revoke_grant(&self, id: &str, by: &str, at: UnixTime) -> Result<Option<Grant>, StoreError>;
}

/// What [`GrantStore::consume_uses`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spent {
    /// One use of each grant was taken: the grants as they are now.
    All(Vec<Grant>),
    /// This grant had no use left (or was no longer active): nothing was spent.
    Lost(String),
}

/// A verdict to record with [`RequestStore::record_verdict`].
#[derive(Debug, Clone)]
pub struct VerdictWrite {
    /// The approver's verdict (its `at` is when it is recorded, and when a state change happens).
    pub approval: Approval,
    /// How many distinct approvals the request needs in all; the approval that reaches it approves the request.
    pub approvals_required: u32,
    /// The grant issued when this approval approves the request. Its `approvers` are replaced by the approvers
    /// who approved, in the order [`RequestStore::approvals_for`] lists them.
    pub grant: Grant,
}

/// What [`RequestStore::record_verdict`] committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedVerdict {
    /// The request as it is now: still `pending` (more approvals needed), `approved` or `denied`.
    pub request: AccessRequest,
    /// The verdicts given on it, this one included, oldest first.
    pub approvals: Vec<Approval>,
    /// The grant written with the approval that approved the request.
    pub grant: Option<Grant>,
}

/// Why [`RequestStore::record_verdict`] wrote nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerdictError {
    /// No such access request.
    #[error("access request `{0}` not found")]
    NotFound(String),
    /// The request left `pending` before this verdict.
    #[error("access request `{id}` is already {}", state.as_str())]
    NotPending {
        /// The request.
        id: String,
        /// Its state.
        state: RequestState,
    },
    /// The request is pending but its pending TTL has passed.
    #[error("access request `{id}` expired undecided at {expires_at}")]
    PastTtl {
        /// The request.
        id: String,
        /// When it expired.
        expires_at: UnixTime,
    },
    /// This approver already gave a verdict on the request.
    #[error("`{approver}` already gave a verdict on access request `{id}`")]
    AlreadyVoted {
        /// The request.
        id: String,
        /// The approver.
        approver: String,
    },
    /// A deny is recorded on the still-pending request (left by an interrupted write of an older version).
    #[error("access request `{0}` was denied")]
    Denied(String),
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`RequestStore::insert_pending_or_reuse`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingInsert {
    /// The request was inserted.
    Inserted,
    /// The requester already had a pending request for the same role and digest: this one, as stored. Nothing
    /// was written.
    Existing(Box<AccessRequest>),
    /// The requester already has the most pending requests allowed. Nothing was written.
    CapReached,
}

/// Access requests and approvals (held data-plane requests included: they are access requests bound to a digest).
/// Implementations must be safe to call from many threads and from several processes on one database.
pub trait RequestStore: Send + Sync + std::fmt::Debug {
    /// Inserts or replaces an access request (committed when this returns).
    fn put_access_request(&self, request: &AccessRequest) -> Result<(), StoreError>;
    /// Inserts a new access request unless its requester already has `max_pending` requests that are `pending`
    /// and within their pending TTL at `request.created_at`: counted and written in one transaction, so the cap
    /// holds across processes. Returns whether it was inserted (`false`: the cap is reached, nothing written).
    fn insert_within_pending_cap(
        &self,
        request: &AccessRequest,
        max_pending: u32,
    ) -> Result<bool, StoreError>;
    /// Inserts a new access request unless its requester already has one that is `pending`, within its pending
    /// TTL at `request.created_at`, and has the same `role` and the same `request_digest` (a retried held
    /// request): that one is returned (the newest, if several) and nothing is written. Otherwise it is inserted as
    /// [`RequestStore::insert_within_pending_cap`] would, within the same per-requester cap. The look-up, the
    /// count and the insert are one transaction (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: e.g. a transaction that
    /// first takes `pg_advisory_xact_lock` on the requester), so of concurrent callers with the same digest exactly
    /// one inserts and the others get its request, across processes. A request without a digest is never reused:
    /// it is inserted within the cap.
    fn insert_pending_or_reuse(
        &self,
        request: &AccessRequest,
        max_pending: u32,
    ) -> Result<PendingInsert, StoreError>;
    /// One access request by id.
    fn get_access_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError>;
    /// Access requests matching `filter`, newest first (by `created_at`; equal times by id).
    fn list_access_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<AccessRequest>, StoreError>;
    /// Moves a request from state `from` to `to` (compare-and-set, so two deciders cannot both win) if
    /// [`RequestState::may_move_to`] allows it; returns whether it moved.
    fn transition_access_request(
        &self,
        id: &str,
        from: RequestState,
        to: RequestState,
        at: UnixTime,
    ) -> Result<bool, StoreError>;
    /// Records an approver's verdict on a request. An approver has one verdict per request: a second one is a
    /// [`StoreError::Conflict`]; an unknown request is [`StoreError::NotFound`].
    fn add_approval(&self, approval: &Approval) -> Result<(), StoreError>;
    /// The verdicts given on a request, oldest first (by time, then approver).
    fn approvals_for(&self, request_id: &str) -> Result<Vec<Approval>, StoreError>;
    /// Records a verdict and what follows from it, all or nothing, checked against what is stored at that moment
    /// (across processes): the request must be pending and within its pending TTL, and the approver must not have
    /// voted on it. A deny moves it to `denied`; the approval that reaches [`VerdictWrite::approvals_required`]
    /// moves it to `approved` and writes [`VerdictWrite::grant`]; of two concurrent verdicts that would each
    /// decide it, exactly one does and the other gets [`VerdictError::NotPending`].
    fn record_verdict(&self, verdict: &VerdictWrite) -> Result<RecordedVerdict, VerdictError>;
}

/// One entity of the store's entity data: its uid and its Cedar JSON form (`uid`, `attrs`, `parents`, `tags`) as it
/// was accepted. The store keeps it as given; the engine parses it against the active bundle's schema.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredEntity {
    /// The entity's uid.
    pub uid: crate::EntityRef,
    /// The entity in Cedar's JSON entity format.
    pub data: serde_json::Value,
    /// When it was last written (Unix seconds).
    pub updated_at: UnixTime,
}

/// Entity data kept in the store (resource owners, team membership synced from elsewhere): one row per uid, shared
/// by every replica of the store. Implementations must be safe to call from many threads.
pub trait EntityStore: Send + Sync + std::fmt::Debug {
    /// Every stored entity, ordered by type then id.
    fn load_entities(&self) -> Result<Vec<StoredEntity>, StoreError>;
    /// Inserts or replaces each of `entities` (by uid), all in one transaction (committed when this returns).
    fn put_entities(&self, entities: &[StoredEntity]) -> Result<(), StoreError>;
    /// Removes the entities with these uids, all in one transaction; returns how many were there. Unknown uids are
    /// not an error.
    fn delete_entities(&self, uids: &[crate::EntityRef]) -> Result<usize, StoreError>;
}

/// A stored entity from its row, or [`StoreError::Corrupt`] naming it when its data is not JSON.
pub(crate) fn stored_entity(
    ty: String,
    id: String,
    data: &str,
    updated_at: UnixTime,
) -> Result<StoredEntity, StoreError> {
    let uid = crate::EntityRef::new(ty, id);
    let data = serde_json::from_str(data).map_err(|e| StoreError::Corrupt {
        table: "entities",
        reason: format!("entity {uid}: {e}"),
    })?;
    Ok(StoredEntity {
        uid,
        data,
        updated_at,
    })
}

/// Everything jitgate keeps: grants, access requests and approvals, and entity data in one backend.
pub trait Store: GrantStore + RequestStore + EntityStore {}

impl<T: GrantStore + RequestStore + EntityStore + ?Sized> Store for T {}

/// The grant [`RequestStore::record_verdict`] writes for `approvals`: the template with the approving approvers.
pub(crate) fn issued_grant(template: &Grant, approvals: &[Approval]) -> Grant {
    let mut grant = template.clone();
    grant.approvers = approvals
        .iter()
        .filter(|a| a.verdict == crate::access::Verdict::Approve)
        .map(|a| a.approver.clone())
        .collect();
    grant
}

/// Decides what a verdict does given the request and its approvals as stored (before this one): the one rule
/// every backend applies inside its transaction. Returns the state the request moves to, if any.
pub(crate) fn verdict_effect(
    request: &AccessRequest,
    before: &[Approval],
    write: &VerdictWrite,
) -> Result<Option<RequestState>, VerdictError> {
    let a = &write.approval;
    if request.state != RequestState::Pending {
        return Err(VerdictError::NotPending {
            id: request.id.clone(),
            state: request.state,
        });
    }
    if a.at >= request.expires_at {
        return Err(VerdictError::PastTtl {
            id: request.id.clone(),
            expires_at: request.expires_at,
        });
    }
    if before.iter().any(|b| b.approver == a.approver) {
        return Err(VerdictError::AlreadyVoted {
            id: request.id.clone(),
            approver: a.approver.clone(),
        });
    }
    if before
        .iter()
        .any(|b| b.verdict == crate::access::Verdict::Deny)
    {
        return Err(VerdictError::Denied(request.id.clone()));
    }
    Ok(match a.verdict {
        crate::access::Verdict::Deny => Some(RequestState::Denied),
        crate::access::Verdict::Approve => {
            let approving = before.len() as u64 + 1;
            (approving >= u64::from(write.approvals_required)).then_some(RequestState::Approved)
        }
    })
}
