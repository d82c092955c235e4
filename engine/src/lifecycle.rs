//! The JIT access lifecycle: access requests checked against the bundle's per-role settings, approvals (N of M
//! distinct approvers, any deny ends it, pending TTL), auto-approval and break glass, grants and revocation.
//! Pure logic over a [`Store`] and the [`Authorizer`]; every step is itself decided by the bundle's policies.
//! No HTTP here: the proxy's admin API calls this and turns [`LifecycleError`] into status codes and [`Event`]s into
//! decision-log records and notifications.

use std::sync::Arc;

use serde::Serialize;

use crate::access::{AccessRequest, Approval, RequestFilter, RequestState, Verdict};
use crate::authorize::Authorizer;
use crate::bundle::Bundle;
use crate::clock::{UnixTime, parse_duration, parse_rfc3339};
use crate::decision::{Decision, Effect};
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::request::{AuthzRequest, Context, Principal, Resource};
use crate::store::{PendingInsert, RecordedVerdict, Store, StoreError, VerdictError, VerdictWrite};

/// The role of the approval of one held request (the data plane's `Hold`).
pub const HOLD_ROLE: &str = "hold";

/// Who approves automatically, as recorded in a grant's approvers.
pub const POLICY_APPROVER: &str = "policy";

/// The longest `reason` an access request may give, in bytes (UTF-8): it is stored, logged and shown to approvers
/// on every listing, so one requester must not be able to grow the state or the listings without bound.
pub const MAX_REASON_BYTES: usize = 1024;

/// The longest `ticket` an access request may give, in bytes (UTF-8), for the same reason as [`MAX_REASON_BYTES`].
pub const MAX_TICKET_BYTES: usize = 1024;

/// Why a lifecycle call failed. Each kind maps to one HTTP status in the admin API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// Bad input (400): the field and why.
    #[error("{field}: {reason}")]
    BadInput {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The policies refused (403).
    #[error("{action} denied: {reason}")]
    Forbidden {
        /// The control-plane action.
        action: String,
        /// The resource it was asked on, e.g. `AccessRequest::"01a2..."` or `Service::"jitgate"`.
        resource: String,
        /// The determining policies, or that none allowed it.
        reason: String,
        /// The decision, for the log.
        decision: Box<Decision>,
    },
    /// No such request or grant (404).
    #[error("{0} not found")]
    NotFound(String),
    /// The transition is not possible from the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The store failed (500); nothing took effect.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn bad(field: &str, reason: impl Into<String>) -> LifecycleError {
    LifecycleError::BadInput {
        field: field.into(),
        reason: reason.into(),
    }
}

/// What happened, for the decision log and notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A request was created (pending).
    Created,
    /// A request for a held data-plane request was created.
    Held,
    /// One approver approved; more approvals are needed.
    ApprovalRecorded,
    /// The request is approved and its grant exists.
    Approved,
    /// The request was denied.
    Denied,
    /// The request passed its pending TTL undecided.
    Expired,
    /// A grant was revoked by an approver.
    Revoked,
    /// A grant was dropped by its holder.
    Dropped,
    /// A break-glass grant was self-activated.
    BreakGlass,
}

impl EventKind {
    /// The wire form (`created`, `approved`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Held => "held",
            EventKind::ApprovalRecorded => "approval_recorded",
            EventKind::Approved => "approved",
            EventKind::Denied => "denied",
            EventKind::Expired => "expired",
            EventKind::Revoked => "revoked",
            EventKind::Dropped => "dropped",
            EventKind::BreakGlass => "break_glass",
        }
    }
}

/// One lifecycle event: links the request, the verdict and the grant.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Who did it (`User::"bob"`, or `policy`).
    pub actor: String,
    /// The request, as it is after the event.
    pub request: Option<AccessRequest>,
    /// The grant created or ended, if any.
    pub grant: Option<Grant>,
    /// The approver's comment, if any.
    pub comment: String,
    /// The policies that allowed the step.
    pub policies: Vec<String>,
    /// When (authorizer clock).
    pub at: UnixTime,
}

/// A request with its verdicts and grant, plus the events the call produced.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    /// The request.
    pub request: AccessRequest,
    /// The verdicts given so far.
    pub approvals: Vec<Approval>,
    /// How many distinct approvals the request needs in all (not how many are still missing), under the active
    /// bundle; the same number on every read: 0 for a break-glass role (self-activated, no approver), 1 for a held
    /// request (`hold`), otherwise the role's `approvals_required` but at least 1 (even a role whose number is 0
    /// needs one human unless a policy auto-approves it; a role no longer in the bundle counts as 1).
    pub approvals_required: u32,
    /// The grant it produced, if approved: from the in-memory index while it is there, else from the store by the
    /// grant id derived from the request id, so an ended (revoked, expired, used-up) grant shows after a restart
    /// too. `None` before approval, and for a grant made before grant ids were derived once it has left the index.
    pub grant: Option<Grant>,
    /// Events produced by this call (not serialized in API answers).
    #[serde(skip)]
    pub events: Vec<Event>,
}

/// Access requests as listed, plus the events the listing produced (requests it found past their pending TTL and
/// moved to `expired`), which the caller must log.
#[derive(Debug, Clone)]
pub struct RequestList {
    /// The matching requests, newest first, as they are after any expiry.
    pub requests: Vec<AccessRequest>,
    /// One `expired` event per request this call moved to `expired`.
    pub events: Vec<Event>,
}

/// An access request as asked for (the admin API's JSON body).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// The role, a key of the bundle's `[roles]`.
    #[serde(default)]
    pub role: String,
    /// The scope, an entity reference such as `Service::"payments"`.
    #[serde(default)]
    pub scope: String,
    /// How long the grant should last, e.g. `30m`.
    #[serde(default)]
    pub duration: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// A ticket reference.
    #[serde(default)]
    pub ticket: Option<String>,
    /// RFC 3339 start time (default: at approval).
    #[serde(default)]
    pub starts_at: Option<String>,
}

/// A new, time-ordered access-request id (UUID v7).
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A held data-plane request waiting for approval of that exact request.
#[derive(Debug, Clone)]
pub struct HoldSpec {
    /// The id the access request gets, chosen by the caller ([`new_request_id`]) so that it can be named before the
    /// request exists: a held connection that goes away while the request is being created still records it.
    pub id: String,
    /// The resource of the held request (the grant's scope).
    pub resource: EntityRef,
    /// The digest of the exact request ([`crate::request::request_digest`]).
    pub digest: String,
    /// What the caller was doing (e.g. `DELETE /databases/prod-eu (deleteDatabase)`), shown to approvers.
    pub reason: String,
    /// How long the request may wait for a verdict, and how long the approval then stays usable.
    pub ttl_secs: i64,
}

/// The control-plane actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask for access.
    RequestAccess,
    /// Approve a request.
    Approve,
    /// Deny a request.
    Deny,
    /// Policy auto-approval.
    AutoApprove,
    /// End someone's grant.
    Revoke,
    /// End one's own grant.
    Drop,
    /// List requests and grants beyond one's own.
    ListRequests,
    /// Mint a token bound to a grant.
    IssueToken,
    /// Operate jitgate itself: status, reload, shadow evaluation (resource `Service::"jitgate"`).
    Operate,
    /// Read the decision log (resource `Service::"jitgate"`).
    ReadDecisions,
    /// Put or delete entity data kept in the store (resource `Service::"jitgate"`).
    WriteEntities,
    /// Read entity data kept in the store (resource `Service::"jitgate"`).
    ReadEntities,
}

impl Action {
    /// The action id the policies see.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::RequestAccess => "requestAccess",
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::AutoApprove => "autoApprove",
            Action::Revoke => "revoke",
            Action::Drop => "drop",
            Action::ListRequests => "listRequests",
            Action::IssueToken => "issueToken",
            Action::Operate => "operate",
            Action::ReadDecisions => "readDecisions",
            Action::WriteEntities => "writeEntities",
            Action::ReadEntities => "readEntities",
        }
    }
}

/// The lifecycle over one authorizer and its store.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    authorizer: Arc<Authorizer>,
    store: Arc<dyn Store>,
    /// Pending access requests one principal may have at once ([`Lifecycle::with_max_pending`]).
    max_pending: u32,
}

/// The resource attributes of an access request, as the control-plane policies see them.
pub fn request_attrs(r: &AccessRequest) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("requester".into(), r.requester.to_string().into());
    m.insert("role".into(), r.role.clone().into());
    m.insert("scope".into(), r.scope.to_string().into());
    m.insert("duration".into(), r.duration_secs.into());
    m.insert("reason".into(), r.reason.clone().into());
    m.insert("ticket".into(), r.ticket.clone().unwrap_or_default().into());
    // When the grant would start (Unix seconds): the requested start, or the request time when none was asked.
    m.insert(
        "starts_at".into(),
        r.starts_at.unwrap_or(r.created_at).into(),
    );
    m
}

impl Lifecycle {
    /// A lifecycle over `authorizer`, whose store must be `store`.
    pub fn new(authorizer: Arc<Authorizer>, store: Arc<dyn Store>) -> Self {
        Self {
            authorizer,
            store,
            max_pending: u32::MAX,
        }
    }

    /// The same lifecycle refusing a new pending request (held ones included) of a principal who already has
    /// `max` pending: one requester must not be able to flood approvers and the store. Unbounded by default.
    pub fn with_max_pending(mut self, max: u32) -> Self {
        self.max_pending = max;
        self
    }

    /// Inserts a new pending request within the per-principal cap (checked in the store's transaction).
    fn insert_pending(&self, request: &AccessRequest) -> Result<(), LifecycleError> {
        if self
            .store
            .insert_within_pending_cap(request, self.max_pending)?
        {
            return Ok(());
        }
        Err(self.pending_cap_reached(request))
    }

    /// The refusal of a request over its requester's pending cap.
    fn pending_cap_reached(&self, request: &AccessRequest) -> LifecycleError {
        LifecycleError::Conflict(format!(
            "{} already has {} pending access requests, the most allowed at once; wait for one to be decided or \
             to expire",
            request.requester, self.max_pending
        ))
    }

    /// The authorizer.
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    fn now(&self) -> UnixTime {
        self.authorizer.clock().now()
    }

    /// Decides a control-plane `action` by `caller` on `request` (no uses are spent: these are not data-plane calls).
    pub fn authorize(
        &self,
        bundle: &Bundle,
        caller: &Principal,
        ctx: &Context,
        action: Action,
        resource: Resource,
    ) -> Decision {
        let mut context = ctx.clone();
        context.time = self.now();
        let req = AuthzRequest {
            principal: caller.clone(),
            action: action.as_str().into(),
            resource,
            context,
            digest: None,
        };
        let grants: Vec<Arc<Grant>> = self
            .authorizer
            .grants()
            .for_principal(&caller.entity)
            .map(|g| g.to_vec())
            .unwrap_or_default();
        bundle.decide(&req, &grants)
    }

    fn require(
        &self,
        bundle: &Bundle,
        caller: &Principal,
        ctx: &Context,
        action: Action,
        request: &AccessRequest,
    ) -> Result<Decision, LifecycleError> {
        let entity = EntityRef::new("AccessRequest", &request.id);
        let resource = Resource {
            entity: entity.clone(),
            parents: Vec::new(),
            attrs: request_attrs(request),
        };
        let d = self.authorize(bundle, caller, ctx, action, resource);
        if d.effect == Effect::Allow {
            Ok(d)
        } else {
            Err(forbidden(action, d, &entity))
        }
    }

    /// Creates an access request (`POST /v1/requests`). Break-glass roles become an active grant at once;
    /// requests the policy auto-approves (`autoApprove`) too.
    pub fn request_access(
        &self,
        caller: &Principal,
        ctx: &Context,
        new: NewRequest,
    ) -> Result<RequestView, LifecycleError> {
        let bundle = self.authorizer.bundle();
        let now = self.now();
        if new.role.trim().is_empty() {
            return Err(bad("role", "is required"));
        }
        if new.role == HOLD_ROLE {
            return Err(bad(
                "role",
                "`hold` approvals are created by the proxy for held requests, not requested",
            ));
        }
        let Some(role) = bundle.roles.get(&new.role) else {
            let known: Vec<&str> = bundle.roles.keys().map(String::as_str).collect();
            return Err(bad(
                "role",
                format!(
                    "unknown role `{}` (the bundle defines: {})",
                    new.role,
                    known.join(", ")
                ),
            ));
        };
        let scope: EntityRef = new.scope.parse().map_err(|e| {
            bad(
                "scope",
                format!("`{}` is not an entity reference: {e}", new.scope),
            )
        })?;
        if new.duration.trim().is_empty() {
            return Err(bad("duration", "is required (e.g. `30m`)"));
        }
        if new.duration.trim().starts_with('-') {
            return Err(bad(
                "duration",
                format!(
                    "`{}` is negative; a grant lasts a positive time, e.g. 30m",
                    new.duration.trim()
                ),
            ));
        }
        let duration = parse_duration(&new.duration).map_err(|e| bad("duration", e))?;
        if duration <= 0 {
            return Err(bad("duration", "must be positive"));
        }
        if duration > role.max_duration {
            // In the units the requester wrote, and the role's limit in the same kind of words.
            return Err(bad(
                "duration",
                format!(
                    "{} is longer than role `{}` allows ({})",
                    new.duration.trim(),
                    new.role,
                    crate::clock::format_secs(role.max_duration)
                ),
            ));
        }
        if role.reason_required && new.reason.trim().is_empty() {
            return Err(bad(
                "reason",
                format!("role `{}` requires a reason", new.role),
            ));
        }
        // Bounded before anything is stored: see MAX_REASON_BYTES.
        too_long("reason", &new.reason, MAX_REASON_BYTES)?;
        too_long(
            "ticket",
            new.ticket.as_deref().unwrap_or(""),
            MAX_TICKET_BYTES,
        )?;
        let starts_at = match new.starts_at.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let t = parse_rfc3339(s).map_err(|e| bad("starts_at", e))?;
                if role.break_glass {
                    return Err(bad("starts_at", "break-glass access starts now"));
                }
                // Unbounded, a start date banks access for long after the request was reviewed.
                if t > now.saturating_add(role.max_start_delay) {
                    return Err(bad(
                        "starts_at",
                        format!(
                            "`{s}` is more than {}s after the request; role `{}` allows at most that (max_start_delay)",
                            role.max_start_delay, new.role
                        ),
                    ));
                }
                Some(t)
            }
        };
        let mut request = AccessRequest {
            id: new_request_id(),
            requester: caller.entity.clone(),
            role: new.role.clone(),
            scope,
            duration_secs: duration,
            reason: new.reason,
            ticket: new.ticket.filter(|t| !t.is_empty()),
            starts_at,
            state: RequestState::Pending,
            created_at: now,
            expires_at: now.saturating_add(role.pending_ttl),
            decided_at: None,
            request_digest: None,
        };
        let allowed = self.require(&bundle, caller, ctx, Action::RequestAccess, &request)?;
        let actor = caller.entity.to_string();
        let mut events = Vec::new();
        if role.break_glass {
            request.state = RequestState::Approved;
            request.decided_at = Some(now);
            self.store.put_access_request(&request)?;
            let grant = self.grant_for(&request, role.max_uses, vec![actor.clone()], true, now);
            self.authorizer.put_grant(grant.clone())?;
            events.push(event(
                EventKind::BreakGlass,
                &actor,
                &request,
                Some(&grant),
                "",
                &allowed,
                now,
            ));
            return Ok(RequestView {
                approvals: Vec::new(),
                approvals_required: self.approvals_required(&bundle, &request),
                grant: Some(grant),
                request,
                events,
            });
        }
        self.insert_pending(&request)?;
        events.push(event(
            EventKind::Created,
            &actor,
            &request,
            None,
            "",
            &allowed,
            now,
        ));
        // Auto-approval is a policy decision; a deny among the rules wins because decide() is deny-overrides.
        let resource = Resource {
            entity: EntityRef::new("AccessRequest", &request.id),
            parents: Vec::new(),
            attrs: request_attrs(&request),
        };
        let auto = self.authorize(&bundle, caller, ctx, Action::AutoApprove, resource);
        if auto.effect == Effect::Allow {
            let write = VerdictWrite {
                approval: Approval {
                    request_id: request.id.clone(),
                    approver: POLICY_APPROVER.into(),
                    verdict: Verdict::Approve,
                    comment: format!("auto-approved by {}", auto.policies.join(", ")),
                    at: now,
                },
                // The policy's approval is all an auto-approved request needs.
                approvals_required: 1,
                grant: self.grant_for(&request, role.max_uses, Vec::new(), false, now),
            };
            match self.store.record_verdict(&write) {
                Ok(RecordedVerdict {
                    request,
                    approvals,
                    grant: Some(grant),
                }) => {
                    self.authorizer.index_grant(grant.clone());
                    events.push(event(
                        EventKind::Approved,
                        POLICY_APPROVER,
                        &request,
                        Some(&grant),
                        "",
                        &auto,
                        now,
                    ));
                    return Ok(RequestView {
                        approvals,
                        approvals_required: self.approvals_required(&bundle, &request),
                        grant: Some(grant),
                        request,
                        events,
                    });
                }
                Err(VerdictError::Store(e)) => return Err(e.into()),
                // Decided by someone else since it was made: answered as made, pending.
                _ => {}
            }
        }
        Ok(RequestView {
            approvals: Vec::new(),
            approvals_required: self.approvals_required(&bundle, &request),
            grant: None,
            request,
            events,
        })
    }

    /// Records a held data-plane request as a pending `hold` request bound to its digest. Not a policy decision of
    /// its own: the data-plane policy that held the request is the authority. When the caller already has a pending
    /// `hold` request with the same digest, that one is returned (no events) and nothing is created; a new one
    /// counts against the per-principal pending cap (409 beyond it).
    pub fn create_hold(
        &self,
        caller: &Principal,
        spec: HoldSpec,
    ) -> Result<RequestView, LifecycleError> {
        let now = self.now();
        let ttl = spec.ttl_secs.max(1);
        let request = AccessRequest {
            id: spec.id,
            requester: caller.entity.clone(),
            role: HOLD_ROLE.into(),
            scope: spec.resource,
            duration_secs: ttl,
            // The composed preview of a held request is cut, never refused: the hold itself must still happen.
            reason: truncated(spec.reason, MAX_REASON_BYTES),
            ticket: None,
            starts_at: None,
            state: RequestState::Pending,
            created_at: now,
            expires_at: now.saturating_add(ttl),
            decided_at: None,
            request_digest: Some(spec.digest),
        };
        // A retry of the same held request (same caller, same digest) waits on the pending request it already
        // has, rather than making one more per retry: found or inserted in one store transaction, so two retries
        // at once make one request between them.
        match self
            .store
            .insert_pending_or_reuse(&request, self.max_pending)?
        {
            PendingInsert::Inserted => {}
            PendingInsert::Existing(existing) => {
                let existing = *existing;
                return Ok(RequestView {
                    approvals_required: self
                        .approvals_required(&self.authorizer.bundle(), &existing),
                    approvals: self.store.approvals_for(&existing.id)?,
                    request: existing,
                    grant: None,
                    events: Vec::new(),
                });
            }
            PendingInsert::CapReached => return Err(self.pending_cap_reached(&request)),
        }
        let ev = Event {
            kind: EventKind::Held,
            actor: caller.entity.to_string(),
            request: Some(request.clone()),
            grant: None,
            comment: String::new(),
            policies: Vec::new(),
            at: now,
        };
        Ok(RequestView {
            approvals_required: self.approvals_required(&self.authorizer.bundle(), &request),
            request,
            approvals: Vec::new(),
            grant: None,
            events: vec![ev],
        })
    }

    /// The total number of distinct approvals `r` needs (see [`RequestView::approvals_required`]); the one place
    /// that number is computed, for every answer and for [`Lifecycle::decide`].
    fn approvals_required(&self, bundle: &Bundle, r: &AccessRequest) -> u32 {
        if r.role == HOLD_ROLE {
            return 1;
        }
        match bundle.roles.get(&r.role) {
            // Self-activated: approved at creation, no approver.
            Some(role) if role.break_glass => 0,
            Some(role) => role.approvals_required.max(1),
            // A role removed from the bundle since the request was made still needs at least one human.
            None => 1,
        }
    }

    /// Why a pending request no longer fits its role as the bundle now defines it (a reload since it was made):
    /// an approval then would grant what no new request could get. `None` when it still fits.
    fn outdated(&self, bundle: &Bundle, r: &AccessRequest) -> Option<String> {
        if r.role == HOLD_ROLE {
            return None;
        }
        let Some(role) = bundle.roles.get(&r.role) else {
            return Some(format!(
                "the bundle no longer defines role `{}` (its settings, such as max_uses, are unknown)",
                r.role
            ));
        };
        if r.duration_secs > role.max_duration {
            return Some(format!(
                "it asks for {}s and role `{}` now allows at most {}s",
                r.duration_secs, r.role, role.max_duration
            ));
        }
        if role.reason_required && r.reason.trim().is_empty() {
            return Some(format!(
                "role `{}` now requires a reason, and it gives none",
                r.role
            ));
        }
        if role.break_glass {
            return Some(format!(
                "role `{}` is now break glass, which is self-activated and never approved",
                r.role
            ));
        }
        None
    }

    fn max_uses(&self, bundle: &Bundle, r: &AccessRequest) -> Option<u32> {
        if r.role == HOLD_ROLE {
            return Some(1);
        }
        bundle.roles.get(&r.role).and_then(|role| role.max_uses)
    }

    fn grant_for(
        &self,
        r: &AccessRequest,
        max_uses: Option<u32>,
        approvers: Vec<String>,
        break_glass: bool,
        now: UnixTime,
    ) -> Grant {
        let starts_at = r.starts_at.map_or(now, |s| s.max(now));
        Grant {
            id: grant_id_of_request(&r.id),
            principal: r.requester.clone(),
            role: r.role.clone(),
            scope: r.scope.clone(),
            starts_at,
            expires_at: starts_at.saturating_add(r.duration_secs),
            max_uses,
            uses: 0,
            status: GrantStatus::Active,
            approvers,
            reason: r.reason.clone(),
            break_glass,
            request_digest: r.request_digest.clone(),
            request_id: Some(r.id.clone()),
        }
    }

    /// Loads a request; a pending one past its TTL is moved to `expired` first (judged now, by the authorizer's
    /// clock), returning the event when this call made that move.
    fn load(&self, id: &str) -> Result<(AccessRequest, Option<Event>), LifecycleError> {
        let r = self
            .store
            .get_access_request(id)?
            .ok_or_else(|| LifecycleError::NotFound(format!("access request `{id}`")))?;
        self.expire_due(r, self.now())
    }

    /// Moves `r` to `expired` if it is pending and its pending TTL passed at `now`. The move is a compare-and-set,
    /// so of several callers finding the same request due exactly one makes it and gets the event; the others get
    /// the request as the store has it then.
    fn expire_due(
        &self,
        mut r: AccessRequest,
        now: UnixTime,
    ) -> Result<(AccessRequest, Option<Event>), LifecycleError> {
        if r.state != RequestState::Pending || now < r.expires_at {
            return Ok((r, None));
        }
        let moved = self.store.transition_access_request(
            &r.id,
            RequestState::Pending,
            RequestState::Expired,
            now,
        )?;
        if moved {
            r.state = RequestState::Expired;
            r.decided_at = Some(now);
            let ev = Event {
                kind: EventKind::Expired,
                actor: "jitgate".into(),
                request: Some(r.clone()),
                grant: None,
                comment: "pending TTL passed".into(),
                policies: Vec::new(),
                at: now,
            };
            return Ok((r, Some(ev)));
        }
        // Someone else expired or decided it meanwhile: read it again.
        let fresh = self
            .store
            .get_access_request(&r.id)?
            .ok_or_else(|| LifecycleError::NotFound(format!("access request `{}`", r.id)))?;
        Ok((fresh, None))
    }

    /// Moves request `id` to `expired` if it is pending past its pending TTL, and returns the `expired` event when
    /// this call made the move (at most one caller ever gets it); `None` when the request is not due or another
    /// call expired or decided it first. [`Lifecycle::decide`] refuses a due request without moving it, so callers
    /// run this first and log its event: every move to `expired` is then logged exactly once.
    pub fn expire_if_due(&self, id: &str) -> Result<Option<Event>, LifecycleError> {
        Ok(self.load(id)?.1)
    }

    /// The request, its verdicts and its grant. Expires it if its pending TTL passed.
    pub fn get(&self, id: &str) -> Result<RequestView, LifecycleError> {
        let bundle = self.authorizer.bundle();
        let (request, expired) = self.load(id)?;
        self.view(&bundle, request, expired.into_iter().collect())
    }

    fn view(
        &self,
        bundle: &Bundle,
        request: AccessRequest,
        events: Vec<Event>,
    ) -> Result<RequestView, LifecycleError> {
        let approvals = self.store.approvals_for(&request.id)?;
        let grant = self.grant_of_request(&request)?;
        Ok(RequestView {
            approvals_required: self.approvals_required(bundle, &request),
            approvals,
            grant,
            request,
            events,
        })
    }

    fn grant_of_request(&self, r: &AccessRequest) -> Result<Option<Grant>, LifecycleError> {
        if r.state != RequestState::Approved {
            return Ok(None);
        }
        // Grants of a request are few and live ones are in the index; fall back to the store for ended ones
        // (after a restart the index holds only grants that may still matter).
        let from_index = self
            .authorizer
            .grants()
            .for_principal(&r.requester)
            .and_then(|l| {
                l.iter()
                    .find(|g| g.request_id.as_deref() == Some(r.id.as_str()))
                    .map(|g| (**g).clone())
            });
        if from_index.is_some() {
            return Ok(from_index);
        }
        let stored = self
            .store
            .get_grant(&grant_id_of_request(&r.id))?
            .filter(|g| g.request_id.as_deref() == Some(r.id.as_str()));
        Ok(stored)
    }

    /// Approves or denies request `id` (`POST /v1/requests/{id}/approve|deny`).
    ///
    /// An unknown `id` is a 404 only for a caller who may `listRequests`, and otherwise the 403 of a request no
    /// policy lets them decide, so that ids cannot be probed.
    ///
    /// Order: policy (403), state (409: not pending, pending TTL passed), one verdict per approver (409), then a
    /// deny ends the request; the N-th distinct approval creates the grant. The verdict and all that follows from
    /// it is one store transaction ([`crate::store::RequestStore::record_verdict`]) that checks the state and the
    /// approver again, so verdicts from several processes at once are each counted, one after the other, and
    /// never decide a request twice.
    ///
    /// A pending request past its pending TTL is refused (409) but not moved to `expired` here, since a refusal
    /// carries no events: call [`Lifecycle::expire_if_due`] first and log its event.
    pub fn decide(
        &self,
        id: &str,
        caller: &Principal,
        ctx: &Context,
        verdict: Verdict,
        comment: &str,
    ) -> Result<RequestView, LifecycleError> {
        let bundle = self.authorizer.bundle();
        let action = match verdict {
            Verdict::Approve => Action::Approve,
            Verdict::Deny => Action::Deny,
        };
        let mut request = match self.store.get_access_request(id)? {
            Some(r) => r,
            None => {
                return Err(self.unknown(
                    caller,
                    ctx,
                    action,
                    EntityRef::new("AccessRequest", id),
                    format!("access request `{id}`"),
                ));
            }
        };
        let allowed = self.require(&bundle, caller, ctx, action, &request)?;
        let now = self.now();
        let due = request.state == RequestState::Pending && now >= request.expires_at;
        if request.state != RequestState::Pending || due {
            return Err(not_pending(&request, due, verdict));
        }
        if verdict == Verdict::Approve {
            if let Some(why) = self.outdated(&bundle, &request) {
                return Err(LifecycleError::Conflict(format!(
                    "access request `{id}` can no longer be approved: {why}; deny it and ask again"
                )));
            }
        }
        let actor = caller.entity.to_string();
        let write = VerdictWrite {
            approval: Approval {
                request_id: id.into(),
                approver: actor.clone(),
                verdict,
                comment: comment.into(),
                at: now,
            },
            approvals_required: self.approvals_required(&bundle, &request),
            grant: self.grant_for(
                &request,
                self.max_uses(&bundle, &request),
                Vec::new(),
                false,
                now,
            ),
        };
        let recorded = match self.store.record_verdict(&write) {
            Ok(r) => r,
            Err(VerdictError::AlreadyVoted { .. }) => {
                return Err(LifecycleError::Conflict(format!(
                    "{actor} already gave a verdict on access request `{id}`; approvals must come from distinct approvers"
                )));
            }
            // Decided, expired or past its TTL since it was read above: the answer a later call would get.
            Err(VerdictError::NotPending { state, .. }) => {
                request.state = state;
                return Err(not_pending(&request, false, verdict));
            }
            Err(VerdictError::PastTtl { .. }) => return Err(not_pending(&request, true, verdict)),
            Err(VerdictError::Denied(_)) => {
                return Err(LifecycleError::Conflict(format!(
                    "access request `{id}` was denied"
                )));
            }
            Err(VerdictError::NotFound(_)) => {
                return Err(LifecycleError::NotFound(format!("access request `{id}`")));
            }
            Err(VerdictError::Store(e)) => return Err(e.into()),
        };
        let kind = match recorded.request.state {
            RequestState::Denied => EventKind::Denied,
            RequestState::Approved => EventKind::Approved,
            _ => EventKind::ApprovalRecorded,
        };
        if let Some(grant) = &recorded.grant {
            self.authorizer.index_grant(grant.clone());
        }
        let events = vec![event(
            kind,
            &actor,
            &recorded.request,
            recorded.grant.as_ref(),
            comment,
            &allowed,
            now,
        )];
        let mut v = self.view(&bundle, recorded.request, events)?;
        if recorded.grant.is_some() {
            v.grant = recorded.grant;
        }
        Ok(v)
    }

    /// The grant and the request it came from (attributes for the policies). An unknown id is judged by
    /// `Lifecycle::unknown` for `action` by `caller`.
    fn grant_and_request(
        &self,
        grant_id: &str,
        caller: &Principal,
        ctx: &Context,
        action: Action,
    ) -> Result<(Grant, AccessRequest), LifecycleError> {
        let grant = match self.store.get_grant(grant_id)? {
            Some(g) => g,
            None => {
                return Err(self.unknown(
                    caller,
                    ctx,
                    action,
                    EntityRef::new("Grant", grant_id),
                    format!("grant `{grant_id}`"),
                ));
            }
        };
        let request = match grant.request_id.as_deref() {
            Some(rid) => self.store.get_access_request(rid)?,
            None => None,
        };
        // A grant made outside the lifecycle (seeded) is judged on its own attributes.
        let request = request.unwrap_or_else(|| AccessRequest {
            id: grant.id.clone(),
            requester: grant.principal.clone(),
            role: grant.role.clone(),
            scope: grant.scope.clone(),
            duration_secs: grant.expires_at.saturating_sub(grant.starts_at),
            reason: grant.reason.clone(),
            ticket: None,
            starts_at: Some(grant.starts_at),
            state: RequestState::Approved,
            created_at: grant.starts_at,
            expires_at: grant.expires_at,
            decided_at: None,
            request_digest: grant.request_digest.clone(),
        });
        Ok((grant, request))
    }

    /// Ends a grant early: `revoke` (an approver) or `drop` (its holder). Committed to the store, then visible to
    /// the very next decision. A grant that is no longer active is a 409.
    pub fn end_grant(
        &self,
        grant_id: &str,
        caller: &Principal,
        ctx: &Context,
        action: Action,
        comment: &str,
    ) -> Result<(Grant, Vec<Event>), LifecycleError> {
        let bundle = self.authorizer.bundle();
        let (grant, request) = self.grant_and_request(grant_id, caller, ctx, action)?;
        let allowed = self.require(&bundle, caller, ctx, action, &request)?;
        let now = self.now();
        // A grant not yet started may still be revoked; one expired, revoked or used up may not.
        let live = grant.is_active_at(now)
            || (grant.status == GrantStatus::Active && now < grant.starts_at);
        if !live {
            let state = if grant.status == GrantStatus::Active {
                "expired"
            } else {
                grant.status.as_str()
            };
            return Err(LifecycleError::Conflict(format!(
                "grant `{grant_id}` is already {state}"
            )));
        }
        let actor = caller.entity.to_string();
        let ended = self
            .authorizer
            .revoke_grant(grant_id, &actor)?
            .ok_or_else(|| LifecycleError::NotFound(format!("grant `{grant_id}`")))?;
        if ended.status != GrantStatus::Revoked {
            return Err(LifecycleError::Conflict(format!(
                "grant `{grant_id}` is already {}",
                ended.status.as_str()
            )));
        }
        let kind = if action == Action::Drop {
            EventKind::Dropped
        } else {
            EventKind::Revoked
        };
        let ev = event(kind, &actor, &request, Some(&ended), comment, &allowed, now);
        Ok((ended, vec![ev]))
    }

    /// A grant the caller may mint a token for (`issueToken`): it must be active now.
    pub fn grant_for_token(
        &self,
        grant_id: &str,
        caller: &Principal,
        ctx: &Context,
    ) -> Result<Grant, LifecycleError> {
        let bundle = self.authorizer.bundle();
        let (grant, request) = self.grant_and_request(grant_id, caller, ctx, Action::IssueToken)?;
        self.require(&bundle, caller, ctx, Action::IssueToken, &request)?;
        if grant.principal != caller.entity {
            return Err(LifecycleError::Conflict(format!(
                "grant `{grant_id}` belongs to {}; tokens are minted for the holder only",
                grant.principal
            )));
        }
        if !grant.is_active_at(self.now()) {
            return Err(LifecycleError::Conflict(format!(
                "grant `{grant_id}` is not active now"
            )));
        }
        Ok(grant)
    }

    /// Requests visible to the caller: their own always; anyone's when the policy allows `listRequests`.
    ///
    /// Pending requests among them that are past their pending TTL are moved to `expired` first (as
    /// [`Lifecycle::get`] does), so the list shows them `expired` and a `state` filter sees the new state; the
    /// events of the moves this call made come back with the list, to be logged.
    pub fn list_requests(
        &self,
        caller: &Principal,
        ctx: &Context,
        mut filter: RequestFilter,
        all: bool,
    ) -> Result<RequestList, LifecycleError> {
        if all
            || filter
                .requester
                .as_ref()
                .is_some_and(|r| r != &caller.entity)
        {
            self.require_list(caller, ctx)?;
        } else {
            filter.requester = Some(caller.entity.clone());
        }
        let mut events = Vec::new();
        // Only pending and expired rows can change or appear by expiring; other state filters need no sweep.
        if matches!(
            filter.state,
            None | Some(RequestState::Pending) | Some(RequestState::Expired)
        ) {
            let pending = RequestFilter {
                requester: filter.requester.clone(),
                state: Some(RequestState::Pending),
                role: filter.role.clone(),
                limit: None,
                after: None,
            };
            let now = self.now();
            for r in self.store.list_access_requests(&pending)? {
                if let (_, Some(ev)) = self.expire_due(r, now)? {
                    events.push(ev);
                }
            }
        }
        Ok(RequestList {
            requests: self.store.list_access_requests(&filter)?,
            events,
        })
    }

    /// The answer for `action` on a request or grant that does not exist (`what`). Only a caller the policies
    /// allow to `listRequests` (who may see everyone's requests and grants anyway) learns that it does not exist
    /// (`NotFound`, a 404). Anyone else gets the refusal they would get for someone else's request that no policy
    /// lets them act on (`Forbidden`, "no policy allows it"), so that ids cannot be probed.
    fn unknown(
        &self,
        caller: &Principal,
        ctx: &Context,
        action: Action,
        resource: EntityRef,
        what: String,
    ) -> LifecycleError {
        match self.require_on_service(caller, ctx, Action::ListRequests) {
            Ok(_) => LifecycleError::NotFound(what),
            Err(LifecycleError::Forbidden { decision, .. }) => LifecycleError::Forbidden {
                action: action.as_str().into(),
                resource: resource.to_string(),
                reason: "no policy allows it".into(),
                decision,
            },
            Err(e) => e,
        }
    }

    fn require_list(&self, caller: &Principal, ctx: &Context) -> Result<(), LifecycleError> {
        self.require_on_service(caller, ctx, Action::ListRequests)
            .map(|_| ())
    }

    /// Requires `action` by `caller` on `Service::"jitgate"`, the resource of the admin API's calls that concern no
    /// single request (listRequests, operate, readDecisions): the allowing decision, or `Forbidden`.
    pub fn require_on_service(
        &self,
        caller: &Principal,
        ctx: &Context,
        action: Action,
    ) -> Result<Decision, LifecycleError> {
        let bundle = self.authorizer.bundle();
        let entity = EntityRef::new("Service", "jitgate");
        let resource = Resource {
            entity: entity.clone(),
            parents: Vec::new(),
            attrs: serde_json::Map::new(),
        };
        let d = self.authorize(&bundle, caller, ctx, action, resource);
        if d.effect == Effect::Allow {
            Ok(d)
        } else {
            Err(forbidden(action, d, &entity))
        }
    }

    /// Grants that may still matter (active or not yet started): the caller's, or everyone's with `listRequests`.
    pub fn list_grants(
        &self,
        caller: &Principal,
        ctx: &Context,
        all: bool,
    ) -> Result<Vec<Grant>, LifecycleError> {
        if all {
            self.require_list(caller, ctx)?;
        }
        let now = self.now();
        let mut grants: Vec<Grant> = self
            .store
            .load_grants(now)?
            .into_iter()
            .filter(|g| all || g.principal == caller.entity)
            .filter(|g| g.max_uses.is_none_or(|m| g.uses < m))
            .collect();
        grants.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
        Ok(grants)
    }
}

/// The id of the grant request `request_id` produces: a UUID (version 8) from a SHA-256 of the request id. A request
/// yields at most one grant, and deriving its id lets [`RequestView::grant`] find an ended grant in the store by id.
fn grant_id_of_request(request_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"jitgate grant of access request\0")
        .chain_update(request_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    for (b, d) in bytes.iter_mut().zip(digest.iter()) {
        *b = *d;
    }
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A `field` longer than `max` bytes is bad input naming the field and the limit.
fn too_long(field: &str, value: &str, max: usize) -> Result<(), LifecycleError> {
    if value.len() > max {
        return Err(bad(
            field,
            format!(
                "is {} bytes long; at most {max} bytes are allowed",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// `s` cut to at most `max` bytes on a character boundary, ending in `…` when cut (the marker fits in `max`).
fn truncated(mut s: String, max: usize) -> String {
    const MARK: &str = "\u{2026}";
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
    s
}

/// The refusal of a verdict on `request`, which is not pending (or, when `due`, pending past its TTL).
fn not_pending(request: &AccessRequest, due: bool, verdict: Verdict) -> LifecycleError {
    let id = &request.id;
    LifecycleError::Conflict(if due || request.state == RequestState::Expired {
        format!(
            "access request `{id}` expired undecided at {} (pending TTL); it can no longer be {}",
            crate::clock::to_rfc3339(request.expires_at),
            verb(verdict)
        )
    } else {
        format!(
            "access request `{id}` is already {}; it can no longer be {}",
            request.state.as_str(),
            verb(verdict)
        )
    })
}

fn verb(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approved",
        Verdict::Deny => "denied",
    }
}

fn forbidden(action: Action, d: Decision, resource: &EntityRef) -> LifecycleError {
    let reason = if !d.errors.is_empty() {
        "the decision could not be evaluated".to_string()
    } else if d.policies.is_empty() {
        "no policy allows it".to_string()
    } else {
        format!("by policy {}", d.policies.join(", "))
    };
    LifecycleError::Forbidden {
        action: action.as_str().into(),
        resource: resource.to_string(),
        reason,
        decision: Box::new(d),
    }
}

fn event(
    kind: EventKind,
    actor: &str,
    request: &AccessRequest,
    grant: Option<&Grant>,
    comment: &str,
    decision: &Decision,
    at: UnixTime,
) -> Event {
    Event {
        kind,
        actor: actor.into(),
        request: Some(request.clone()),
        grant: grant.cloned(),
        comment: comment.into(),
        policies: decision.policies.clone(),
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_requests_reason_is_cut_to_its_bound_on_a_char_boundary() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let cut = truncated(long, MAX_REASON_BYTES);
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
        assert!(cut.ends_with('\u{2026}'));
        assert_eq!(truncated("short".into(), MAX_REASON_BYTES), "short");
        assert!(too_long("reason", &"x".repeat(MAX_REASON_BYTES), MAX_REASON_BYTES).is_ok());
        assert!(
            too_long(
                "reason",
                &"x".repeat(MAX_REASON_BYTES + 1),
                MAX_REASON_BYTES
            )
            .is_err()
        );
    }
}
