//! The access-request domain: requests for a time-bound elevation, their states, and approvers' verdicts.
//! Plain data shared by the lifecycle ([`crate::lifecycle`]) and every store backend ([`crate::store`]); no I/O here.

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::entity::EntityRef;

/// Where an access request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for approvers.
    Pending,
    /// Approved: a grant was (or will be) issued.
    Approved,
    /// Denied by an approver or a policy.
    Denied,
    /// Nobody decided before its pending TTL ran out.
    Expired,
    /// Withdrawn by its requester.
    Cancelled,
}

impl RequestState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Expired => "expired",
            RequestState::Cancelled => "cancelled",
        }
    }

    /// Whether a request in this state may move to `to`: only a pending request changes state, and only once
    /// (to approved, denied, expired or cancelled). Every backend checks this inside the write that moves it.
    pub fn may_move_to(self, to: RequestState) -> bool {
        self == RequestState::Pending && to != RequestState::Pending
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RequestState::Pending,
            "approved" => RequestState::Approved,
            "denied" => RequestState::Denied,
            "expired" => RequestState::Expired,
            "cancelled" => RequestState::Cancelled,
            _ => return None,
        })
    }
}

/// Someone's request for a time-bound elevation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// Unique id.
    pub id: String,
    /// Who asks.
    pub requester: EntityRef,
    /// The role asked for.
    pub role: String,
    /// The resource subtree asked for.
    pub scope: EntityRef,
    /// How long the grant should last, in seconds.
    pub duration_secs: i64,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// A change/incident ticket reference.
    #[serde(default)]
    pub ticket: Option<String>,
    /// When the grant should start (`None`: on approval).
    #[serde(default)]
    pub starts_at: Option<UnixTime>,
    /// Lifecycle state.
    pub state: RequestState,
    /// When it was made.
    pub created_at: UnixTime,
    /// When a still-pending request expires (its pending TTL).
    pub expires_at: UnixTime,
    /// When it left `pending`.
    #[serde(default)]
    pub decided_at: Option<UnixTime>,
    /// For a held request (role `hold`): the digest of the one exact request an approval lets through.
    #[serde(default)]
    pub request_digest: Option<String>,
}

/// Which access requests to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    /// Only this requester's.
    pub requester: Option<EntityRef>,
    /// Only in this state.
    pub state: Option<RequestState>,
    /// Only for this role.
    pub role: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
    /// Only those after this `(created_at, id)` in the listing's order (newest first, equal times by id): the
    /// last one of the previous page, so a listing can be paged.
    pub after: Option<(UnixTime, String)>,
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

impl Verdict {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(Verdict::Approve),
            "deny" => Some(Verdict::Deny),
            _ => None,
        }
    }
}

/// One approver's verdict on one access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The access request.
    pub request_id: String,
    /// Who decided (an entity reference in its printed form, or `policy`).
    pub approver: String,
    /// Approve or deny.
    pub verdict: Verdict,
    /// Free text.
    #[serde(default)]
    pub comment: String,
    /// When.
    pub at: UnixTime,
}
