//! The access service behind every control-plane front end: it finds the caller, runs one access command, and logs,
//! notifies and releases held connections in one place. Front ends only translate input and answers; no HTTP here.
//!
//! Each command runs as a task of its own on the proxy's [`TaskTracker`]: a front end whose caller goes away drops
//! its wait, not the command, so a committed change always gets its record, its webhook and its hold release. Store
//! work runs on the blocking pool, never on an async worker.

mod error;
mod holds;
mod record;

use std::future::Future;
use std::sync::Arc;

use jitgate_engine::access::{AccessRequest, RequestFilter, RequestState, Verdict};
use jitgate_engine::lifecycle::{
    Action, Event, HOLD_ROLE, HoldSpec, Lifecycle, LifecycleError, NewRequest, RequestView,
};
use jitgate_engine::log::DecisionRecord;
use jitgate_engine::{Authorizer, Context, EntityRef, Grant, Principal, UnixTime};
use tokio_util::task::TaskTracker;

pub use error::{AccessError, CallerError};
pub use holds::{HeldRequest, HoldSignal, Holds, Waiter};

use crate::authenticate::{Authenticator, Identity, LocalIssuer};
use crate::decision_log::DecisionLog;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use record::CallMeta;

/// What the access service is built from: parts of the assembled proxy, shared with it.
#[derive(Debug)]
pub struct AccessParts {
    /// The access-request lifecycle (policy checks and store writes).
    pub lifecycle: Lifecycle,
    /// Verifies callers' bearer tokens.
    pub auth: Authenticator,
    /// jitgate's own token issuer, if configured (grant-bound tokens).
    pub local_issuer: Option<Arc<LocalIssuer>>,
    /// Where events and refusals are recorded.
    pub log: DecisionLog,
    /// Counters (authentication failures, log errors).
    pub metrics: Arc<Metrics>,
    /// Webhook notifications of events.
    pub notifier: Notifier,
    /// Work that runs to its end whether or not its caller waits; shutdown waits for it.
    pub tasks: TaskTracker,
}

/// The access service. Cheap to clone (one `Arc`); every front end holds a clone of the same one.
#[derive(Debug, Clone)]
pub struct AccessService {
    parts: Arc<AccessParts>,
    holds: Arc<Holds>,
}

/// How a call reached a front end: what the control-plane policies see of it besides the caller.
#[derive(Debug, Clone, Default)]
pub struct CallInfo {
    /// The caller's address, canonical (`127.0.0.1`, not `::ffff:127.0.0.1`).
    pub client: String,
    /// The method, e.g. `POST`.
    pub method: String,
    /// The path, e.g. `/v1/requests`.
    pub path: String,
    /// The query string without `?`, empty when none.
    pub query: String,
    /// The host the caller named, if any.
    pub host: Option<String>,
}

impl CallInfo {
    fn meta(&self, principal: String) -> CallMeta {
        CallMeta {
            principal,
            client: Some(self.client.clone()),
            method: Some(self.method.clone()),
            path: Some(self.path.clone()),
        }
    }
}

/// An authenticated caller and the context its policies see ([`AccessService::authenticate`]).
#[derive(Debug, Clone)]
pub struct Caller {
    principal: Principal,
    context: Context,
}

impl Caller {
    /// Who called, with their groups.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The call as the control-plane policies see it.
    pub fn context(&self) -> &Context {
        &self.context
    }

    fn meta(&self) -> CallMeta {
        CallMeta {
            principal: self.principal.entity.to_string(),
            client: self.context.source_ip.clone(),
            method: self.context.method.clone(),
            path: self.context.path.clone(),
        }
    }
}

/// One row of a request listing: the request and how many approvals it has of how many it needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedRequest {
    /// The request.
    #[serde(flatten)]
    pub request: AccessRequest,
    /// Approvals given so far.
    pub approvals: usize,
    /// Approvals needed in all (see [`RequestView::approvals_required`]).
    pub approvals_required: u32,
}

/// How a grant ends early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantEnd {
    /// Ended by an approver (`revoke`).
    Revoke,
    /// Ended by its holder (`drop`).
    Drop,
}

impl GrantEnd {
    fn action(self) -> Action {
        match self {
            GrantEnd::Revoke => Action::Revoke,
            GrantEnd::Drop => Action::Drop,
        }
    }
}

/// A token bound to one grant ([`AccessService::mint_token`]).
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The signed token.
    pub token: String,
    /// The grant it is bound to.
    pub grant_id: String,
    /// When it expires (unix seconds): the grant's end, or sooner when asked.
    pub expires_at: UnixTime,
}

/// Whether grant `grant_id` of `principal` is active at `now` in the index (the source the data plane decides on).
pub fn grant_is_active(
    authorizer: &Authorizer,
    principal: &EntityRef,
    grant_id: &str,
    now: UnixTime,
) -> bool {
    authorizer
        .grants()
        .for_principal(principal)
        .is_some_and(|l| l.iter().any(|g| g.id == grant_id && g.is_active_at(now)))
}

/// Refuses a request that could never be used, naming the field: a scope naming a service the bundle does not route
/// to, or of an entity type no route decides on (nor a parent of one), a role whose permits open no routed action
/// under the scope (`payments-writer` on `Service::"billing"`), or a `starts_at` in the past (it would not be moved
/// silently to now).
fn usable(
    bundle: &jitgate_engine::Bundle,
    new: &NewRequest,
    now: UnixTime,
) -> Result<(), AccessError> {
    let bad = |field: &'static str, reason: String| Err(AccessError::BadInput { field, reason });
    // A scope that does not parse is named by the lifecycle.
    if let Ok(scope) = new.scope.parse::<EntityRef>() {
        let routes = bundle.routes.routes();
        let mut services: Vec<&str> = routes.iter().map(|r| r.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        let mut types: Vec<&str> = routes
            .iter()
            .flat_map(|r| std::iter::once(r.resource_type()).chain(r.parent_types()))
            .chain(std::iter::once("Service"))
            .collect();
        types.sort_unstable();
        types.dedup();
        if scope.ty == "Service" && !services.contains(&scope.id.as_str()) {
            return bad(
                "scope",
                format!(
                    "`{}` names no service of the bundle (its routes serve: {}); a grant on it could never be used",
                    new.scope,
                    services.join(", ")
                ),
            );
        }
        if !types.contains(&scope.ty.as_str()) {
            return bad(
                "scope",
                format!(
                    "no route decides on a `{}` (the bundle's routes name: {}); a grant on `{}` could never be used",
                    scope.ty,
                    types.join(", "),
                    new.scope
                ),
            );
        }
        // The routes a grant of the role can open (its permits' actions); a role the backend cannot tell about, or
        // one that opens no routed action (a control-plane role), is not judged here.
        if let Some(actions) = bundle.backend().role_actions(&new.role) {
            let opened: Vec<_> = routes
                .iter()
                .filter(|r| actions.binary_search(&r.action).is_ok())
                .collect();
            // A service scope covers its service's routes (whose default resource is a `Service` too).
            let under = |r: &jitgate_engine::routes::Route| {
                if scope.ty == "Service" {
                    r.service == scope.id
                } else {
                    r.resource_type() == scope.ty || r.parent_types().any(|t| t == scope.ty)
                }
            };
            if !opened.is_empty() && !opened.iter().any(|r| under(r)) {
                let mut on: Vec<String> = opened
                    .iter()
                    .map(|r| format!("{} on {} ({})", r.action, r.resource_type(), r.service))
                    .collect();
                on.sort();
                on.dedup();
                return bad(
                    "scope",
                    format!(
                        "role `{}` opens {}, none of them under `{}`; a grant of it there could never be used",
                        new.role,
                        on.join(", "),
                        new.scope
                    ),
                );
            }
        }
    }
    if let Some(s) = new.starts_at.as_deref().filter(|s| !s.is_empty()) {
        // A few seconds of clock difference between the caller and the proxy are not "the past".
        const LEEWAY: i64 = 60;
        if let Ok(t) = jitgate_engine::clock::parse_rfc3339(s) {
            if t < now.saturating_sub(LEEWAY) {
                return bad(
                    "starts_at",
                    format!(
                        "`{s}` is in the past (now is {}); leave it out to start at approval",
                        jitgate_engine::clock::to_rfc3339(now)
                    ),
                );
            }
        }
    }
    Ok(())
}

/// The caller that `id` proves, calling as `call` at `now`.
fn caller_of(id: Identity, call: CallInfo, now: UnixTime) -> Caller {
    let mut context = Context::at(now);
    context.source_ip = Some(call.client);
    context.method = Some(call.method);
    context.path = Some(call.path);
    context.query = Some(call.query);
    context.host = call.host;
    context.claims = id.claims;
    Caller {
        principal: Principal {
            entity: id.principal,
            groups: id.groups,
            group_type: id.group_type,
            attrs: id.attrs,
        },
        context,
    }
}

/// Runs blocking store work on the blocking pool; only a task that could not finish is an error here.
async fn off_workers<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}

impl AccessService {
    /// A service over `parts`, with no held connection waiting yet.
    pub fn new(parts: AccessParts) -> Self {
        AccessService {
            parts: Arc::new(parts),
            holds: Arc::default(),
        }
    }

    /// The connections waiting on held requests, which verdicts and expiries release.
    pub fn holds(&self) -> &Arc<Holds> {
        &self.holds
    }

    fn authorizer(&self) -> &Arc<Authorizer> {
        self.parts.lifecycle.authorizer()
    }

    /// Runs `work` to its end as a task of its own, whether or not the caller of this method still waits for it.
    async fn to_the_end<T, E>(
        &self,
        work: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<tokio::task::JoinError> + Send + 'static,
    {
        match self.parts.tasks.spawn(work).await {
            Ok(r) => r,
            Err(e) => Err(E::from(e)),
        }
    }

    /// Authenticates a caller from the `Authorization` value it sent (a refusal is logged: 401 without a valid
    /// token, or with a token bound to a grant no longer active; 403 with a grant-bound token, which works on the
    /// data plane only) and builds the context its policies see.
    pub async fn authenticate(
        &self,
        authorization: Option<String>,
        call: CallInfo,
    ) -> Result<Caller, CallerError> {
        let s = self.clone();
        self.to_the_end(async move {
            let now = s.authorizer().clock().now();
            let id = match s
                .parts
                .auth
                .authenticate(authorization.as_deref(), now)
                .await
            {
                Ok(id) => id,
                Err(e) => {
                    s.parts.metrics.auth_failures.inc();
                    let e = CallerError::Unauthenticated(e);
                    s.log_refused(&call.meta(String::new()), 401, &e).await;
                    return Err(e);
                }
            };
            // A grant-bound token carries one grant's authority, so it may not request, approve, revoke, or mint a
            // longer-lived token in its holder's name.
            if let Some(gid) = &id.grant_id {
                if !grant_is_active(s.authorizer(), &id.principal, gid, now) {
                    s.parts.metrics.auth_failures.inc();
                    let e = CallerError::GrantEnded;
                    s.log_refused(&call.meta(String::new()), 401, &e).await;
                    return Err(e);
                }
                let e = CallerError::GrantBound(gid.clone());
                s.log_refused(&call.meta(id.principal.to_string()), 403, &e)
                    .await;
                return Err(e);
            }
            Ok(caller_of(id, call, now))
        })
        .await
    }

    /// The caller of a console session: `identity` was proved by a token when the session began (an OpenID
    /// Connect ID token, or in the quickstart a development token), and the session stands in for the bearer token
    /// from then on. The caller gets the same context, and the same policies decide everything it asks.
    pub fn session_caller(&self, identity: Identity, call: CallInfo) -> Caller {
        caller_of(identity, call, self.authorizer().clock().now())
    }

    /// Lifecycle events as they are recorded (for live views); a receiver that falls behind misses some.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.parts.notifier.subscribe()
    }

    /// Requires the policies to allow `action` by `caller` on `Service::"jitgate"` (operate, readDecisions).
    pub async fn require(&self, caller: Caller, action: Action) -> Result<(), AccessError> {
        let s = self.clone();
        self.to_the_end(async move {
            s.checked(&caller, move |lc, p, c| lc.require_on_service(p, c, action))
                .await
                .map(|_| ())
        })
        .await
    }

    /// Creates an access request; a break-glass or auto-approved one is a grant at once.
    pub async fn create(
        &self,
        caller: Caller,
        new: NewRequest,
    ) -> Result<RequestView, AccessError> {
        let s = self.clone();
        self.to_the_end(async move {
            let now = s.authorizer().clock().now();
            usable(&s.authorizer().bundle(), &new, now)?;
            s.not_a_duplicate(&caller, &new).await?;
            let view = s
                .checked(&caller, move |lc, p, c| lc.request_access(p, c, new))
                .await?;
            s.record_events(&view.events).await;
            Ok(view)
        })
        .await
    }

    /// Refuses a request the caller already has pending (same role, scope, duration, reason, ticket and start):
    /// filing it again would only ask the approvers twice. Its id is named.
    async fn not_a_duplicate(&self, caller: &Caller, new: &NewRequest) -> Result<(), AccessError> {
        let Ok(scope) = new.scope.parse::<EntityRef>() else {
            // Not an entity reference: the lifecycle names the field.
            return Ok(());
        };
        let filter = RequestFilter {
            state: Some(RequestState::Pending),
            role: Some(new.role.clone()),
            ..RequestFilter::default()
        };
        let listed = self
            .checked(caller, move |lc, p, c| {
                lc.list_requests(p, c, filter, false)
            })
            .await?;
        self.record_expiries(&listed.events).await;
        let duration = jitgate_engine::clock::parse_duration(&new.duration).ok();
        let starts_at = new
            .starts_at
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(jitgate_engine::clock::parse_rfc3339)
            .transpose()
            .ok()
            .flatten();
        let ticket = new.ticket.as_deref().filter(|t| !t.is_empty());
        // The same request: everything the approvers judge is equal (another reason is another request).
        match listed.requests.iter().find(|r| {
            r.state == RequestState::Pending
                && r.scope == scope
                && Some(r.duration_secs) == duration
                && r.reason == new.reason
                && r.ticket.as_deref() == ticket
                && r.starts_at == starts_at
        }) {
            Some(r) => Err(AccessError::Duplicate {
                id: r.id.clone(),
                role: r.role.clone(),
                scope: r.scope.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The requests `filter` selects that the caller may see (anyone's with `all`), newest first. Requests found
    /// past their pending TTL are moved to `expired` on the way.
    pub async fn list_requests(
        &self,
        caller: Caller,
        filter: RequestFilter,
        all: bool,
    ) -> Result<Vec<ListedRequest>, AccessError> {
        let s = self.clone();
        self.to_the_end(async move {
            let listed = s
                .checked(&caller, move |lc, p, c| lc.list_requests(p, c, filter, all))
                .await?;
            // Each move to `expired` this call made is logged once.
            s.record_expiries(&listed.events).await;
            // Approvals so far, so that a listing tells at a glance how far each request is.
            let lc = s.parts.lifecycle.clone();
            let (rows, events) = off_workers(move || {
                let mut events = Vec::new();
                let rows = listed
                    .requests
                    .into_iter()
                    .map(|request| match lc.get(&request.id) {
                        Ok(mut v) => {
                            events.append(&mut v.events);
                            ListedRequest {
                                approvals: v
                                    .approvals
                                    .iter()
                                    .filter(|a| a.verdict == Verdict::Approve)
                                    .count(),
                                approvals_required: v.approvals_required,
                                request: v.request,
                            }
                        }
                        Err(_) => ListedRequest {
                            request,
                            approvals: 0,
                            approvals_required: 0,
                        },
                    })
                    .collect::<Vec<_>>();
                (rows, events)
            })
            .await?;
            // A request that fell due between the listing and the count is logged too.
            s.record_expiries(&events).await;
            Ok(rows)
        })
        .await
    }

    /// Request `id` with its verdicts and grant: one's own, or anyone's with `listRequests`. Reading it may move it
    /// to `expired`, which is logged (and a held connection released) whoever asked.
    pub async fn show(&self, caller: Caller, id: String) -> Result<RequestView, AccessError> {
        /// What the read found for this caller.
        enum Shown {
            Visible(Box<RequestView>),
            /// Refused (listRequests denied), with the request when it exists: its expiry events are still logged.
            Refused(Option<Box<RequestView>>, Box<jitgate_engine::Decision>),
        }
        let s = self.clone();
        self.to_the_end(async move {
            let resource = EntityRef::new("AccessRequest", &id).to_string();
            let lc = s.parts.lifecycle.clone();
            let (principal, context) = (caller.principal.clone(), caller.context.clone());
            let shown = off_workers(move || {
                // One's own request, or anyone's with listRequests (a policy check only: nothing is listed).
                let refusal =
                    || match lc.require_on_service(&principal, &context, Action::ListRequests) {
                        Ok(_) => Ok(None),
                        Err(LifecycleError::Forbidden { decision, .. }) => Ok(Some(decision)),
                        Err(e) => Err(e),
                    };
                match lc.get(&id) {
                    Ok(v) if v.request.requester == principal.entity => {
                        Ok(Shown::Visible(Box::new(v)))
                    }
                    Ok(v) => Ok(match refusal()? {
                        None => Shown::Visible(Box::new(v)),
                        Some(d) => Shown::Refused(Some(Box::new(v)), d),
                    }),
                    // Only a caller who may see others' requests learns that an id does not exist; anyone else
                    // gets the same refusal as for someone else's request, so ids cannot be probed.
                    Err(LifecycleError::NotFound(what)) => match refusal()? {
                        None => Err(LifecycleError::NotFound(what)),
                        Some(d) => Ok(Shown::Refused(None, d)),
                    },
                    Err(e) => Err(e),
                }
            })
            .await??;
            match shown {
                Shown::Visible(view) => {
                    s.settle(&view).await;
                    Ok(*view)
                }
                Shown::Refused(view, decision) => {
                    if let Some(view) = view {
                        s.settle(&view).await;
                    }
                    let action = Action::ListRequests.as_str();
                    s.log_admin(record::refused_by_policy(
                        &caller.meta(),
                        action,
                        &resource,
                        &decision,
                    ))
                    .await;
                    Err(AccessError::NotYours)
                }
            }
        })
        .await
    }

    /// Approves or denies request `id`, then logs the events, notifies, and releases a connection held on it.
    ///
    /// A pending request past its TTL is moved to `expired` first, and that move is logged whatever the verdict's
    /// fate: [`Lifecycle::decide`] refuses a due request (a conflict) without moving it, so no expiry goes unlogged.
    pub async fn decide(
        &self,
        caller: Caller,
        id: String,
        verdict: Verdict,
        comment: String,
    ) -> Result<RequestView, AccessError> {
        let s = self.clone();
        self.to_the_end(async move {
            let lc = s.parts.lifecycle.clone();
            let id2 = id.clone();
            // An unknown id is left to decide(), which tells it apart by who asks.
            let expired = off_workers(move || match lc.expire_if_due(&id2) {
                Err(LifecycleError::NotFound(_)) => Ok(None),
                other => other,
            })
            .await??;
            s.record_expiries(expired.as_slice()).await;
            let id2 = id.clone();
            let result = s
                .checked(&caller, move |lc, p, c| {
                    lc.decide(&id2, p, c, verdict, &comment)
                })
                .await;
            if matches!(
                &result,
                Err(AccessError::Lifecycle(LifecycleError::Conflict(_)))
            ) {
                s.settle_conflict(id).await;
            }
            let view = result?;
            s.settle(&view).await;
            Ok(view)
        })
        .await
    }

    /// After a verdict refused as a conflict: the TTL may have passed between the expiry check and the verdict
    /// (decide() then refuses without moving the request), so it is moved and logged now rather than left to the
    /// next read; and the request was decided or expired meanwhile, so a connection held on it is released.
    async fn settle_conflict(&self, id: String) {
        let lc = self.parts.lifecycle.clone();
        let Ok((expired, current)) =
            off_workers(move || (lc.expire_if_due(&id), lc.get(&id))).await
        else {
            return;
        };
        if let Ok(expired) = expired {
            self.record_expiries(expired.as_slice()).await;
        }
        if let Ok(view) = current {
            self.settle(&view).await;
        }
    }

    /// Grants that may still matter (active or not yet started): the caller's, or everyone's with `all`.
    pub async fn grants(&self, caller: Caller, all: bool) -> Result<Vec<Grant>, AccessError> {
        let s = self.clone();
        self.to_the_end(async move {
            s.checked(&caller, move |lc, p, c| lc.list_grants(p, c, all))
                .await
        })
        .await
    }

    /// Ends grant `id` early (`how`), then logs and notifies; the next decision no longer sees it.
    pub async fn end_grant(
        &self,
        caller: Caller,
        id: String,
        how: GrantEnd,
        comment: String,
    ) -> Result<Grant, AccessError> {
        let s = self.clone();
        self.to_the_end(async move {
            let (grant, events) = s
                .checked(&caller, move |lc, p, c| {
                    lc.end_grant(&id, p, c, how.action(), &comment)
                })
                .await?;
            s.record_events(&events).await;
            Ok(grant)
        })
        .await
    }

    /// Mints a token bound to the caller's active grant `id` (`issueToken`), living until the grant ends or for
    /// `ttl` (e.g. `10m`) when that is sooner.
    pub async fn mint_token(
        &self,
        caller: Caller,
        id: String,
        ttl: Option<String>,
    ) -> Result<MintedToken, AccessError> {
        let Some(issuer) = self.parts.local_issuer.clone() else {
            return Err(AccessError::NoIssuer);
        };
        let ttl = match ttl.as_deref() {
            None => None,
            Some(t) => Some(
                jitgate_engine::clock::parse_duration(t)
                    .and_then(|secs| {
                        if secs >= 1 {
                            Ok(secs)
                        } else {
                            Err(format!(
                                "`{t}` is shorter than 1s; leave ttl out for the grant's own end"
                            ))
                        }
                    })
                    .map_err(|reason| AccessError::BadInput {
                        field: "ttl",
                        reason,
                    })?,
            ),
        };
        let s = self.clone();
        self.to_the_end(async move {
            let grant = s
                .checked(&caller, move |lc, p, c| lc.grant_for_token(&id, p, c))
                .await?;
            let now = s.authorizer().clock().now();
            let expires_at = match ttl {
                Some(t) => grant.expires_at.min(now.saturating_add(t)),
                None => grant.expires_at,
            };
            let principal = caller.principal();
            let token = issuer
                .mint(
                    &principal.entity,
                    &principal.groups,
                    &grant.id,
                    expires_at,
                    now,
                )
                .map_err(AccessError::Mint)?;
            Ok(MintedToken {
                token,
                grant_id: grant.id,
                expires_at,
            })
        })
        .await
    }

    /// Creates the pending `hold` request of a held data-plane request (`spec`) and logs its `held` event, to the
    /// end even if the held connection goes away meanwhile: a pending request always has its record. Returns the
    /// id of the request to wait on: `spec.id`, or that of the caller's pending `hold` request with the same digest
    /// (a retry), which is reused and not created again.
    pub async fn create_hold(
        &self,
        principal: Principal,
        spec: HoldSpec,
    ) -> Result<String, AccessError> {
        let s = self.clone();
        self.to_the_end(async move {
            let lc = s.parts.lifecycle.clone();
            let view = off_workers(move || lc.create_hold(&principal, spec)).await??;
            s.record_events(&view.events).await;
            Ok(view.request.id)
        })
        .await
    }

    /// Runs a policy-checked lifecycle call `f` on the blocking pool. A refusal by the policies is a decision too:
    /// it is logged (kind `decision`, the control-plane action and its resource, the determining policies, status
    /// 403) before it is returned.
    async fn checked<T: Send + 'static>(
        &self,
        caller: &Caller,
        f: impl FnOnce(&Lifecycle, &Principal, &Context) -> Result<T, LifecycleError> + Send + 'static,
    ) -> Result<T, AccessError> {
        let lc = self.parts.lifecycle.clone();
        let (principal, context) = (caller.principal.clone(), caller.context.clone());
        let e = match off_workers(move || f(&lc, &principal, &context)).await? {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if let LifecycleError::Forbidden {
            action,
            resource,
            decision,
            ..
        } = &e
        {
            self.log_admin(record::refused_by_policy(
                &caller.meta(),
                action,
                resource,
                decision,
            ))
            .await;
        }
        Err(e.into())
    }

    /// Inserts or replaces entities of the store's entity data (`writeEntities` on `Service::"jitgate"`) from `body`,
    /// a JSON array of Cedar JSON entities: checked against the active bundle (each problem names uid, line and
    /// reason; nothing is stored), committed, seen by the next decision, and recorded in the decision log. Returns
    /// how many entities were given and how many the store holds now.
    pub async fn put_entities(
        &self,
        caller: Caller,
        body: String,
    ) -> Result<(usize, usize), AccessError> {
        let s = self.clone();
        self.to_the_end(async move {
            let decision = s
                .checked(&caller, |lc, p, c| {
                    lc.require_on_service(p, c, Action::WriteEntities)
                })
                .await?;
            let now = s.authorizer().clock().now();
            let parsed = jitgate_engine::overlay::parse_body(&body, now)
                .map_err(jitgate_engine::authorize::EntityError::Invalid)?;
            let uids: Vec<String> = parsed.iter().map(|(e, _)| e.uid.to_string()).collect();
            let given = parsed.len();
            let lines: Vec<(String, usize, usize)> = parsed
                .iter()
                .enumerate()
                .map(|(i, (e, line))| (e.uid.to_string(), i, *line))
                .collect();
            let entities = parsed.into_iter().map(|(e, _)| e).collect();
            let authorizer = s.authorizer().clone();
            let n = match off_workers(move || authorizer.put_entities(entities)).await? {
                Ok(n) => n,
                // Each problem with an entity of this body names where it is in the body.
                Err(jitgate_engine::authorize::EntityError::Invalid(mut problems)) => {
                    for p in &mut problems {
                        if let Some((_, i, line)) = lines.iter().find(|(u, _, _)| *u == p.uid) {
                            p.index = Some(*i);
                            p.line = Some(*line);
                        }
                    }
                    return Err(jitgate_engine::authorize::EntityError::Invalid(problems).into());
                }
                Err(e) => return Err(e.into()),
            };
            s.log_admin(record::entities_changed(
                &caller.meta(),
                "put",
                &uids,
                &decision,
            ))
            .await;
            Ok((given, n))
        })
        .await
    }

    /// Removes entities from the store's entity data (`writeEntities`), as [`AccessService::put_entities`] does;
    /// returns how many of `uids` were there.
    pub async fn delete_entities(
        &self,
        caller: Caller,
        uids: Vec<EntityRef>,
    ) -> Result<usize, AccessError> {
        let s = self.clone();
        self.to_the_end(async move {
            let decision = s
                .checked(&caller, |lc, p, c| {
                    lc.require_on_service(p, c, Action::WriteEntities)
                })
                .await?;
            let names: Vec<String> = uids.iter().map(ToString::to_string).collect();
            let authorizer = s.authorizer().clone();
            let n = off_workers(move || authorizer.delete_entities(&uids)).await??;
            s.log_admin(record::entities_changed(
                &caller.meta(),
                "delete",
                &names,
                &decision,
            ))
            .await;
            Ok(n)
        })
        .await
    }

    /// The store's entity data (`readEntities`), those of type `ty` and id `id` when given.
    pub async fn entities(
        &self,
        caller: Caller,
        ty: Option<String>,
        id: Option<String>,
    ) -> Result<Vec<jitgate_engine::store::StoredEntity>, AccessError> {
        self.require(caller, Action::ReadEntities).await?;
        Ok(self
            .authorizer()
            .store_entities()
            .iter()
            .filter(|e| ty.as_ref().is_none_or(|t| &e.uid.ty == t))
            .filter(|e| id.as_ref().is_none_or(|i| &e.uid.id == i))
            .cloned()
            .collect())
    }

    /// Logs a call refused before any policy was asked, with `status` and why.
    async fn log_refused(&self, meta: &CallMeta, status: u16, reason: &CallerError) {
        let mut rec = record::refused(meta, status);
        let bundle = self.authorizer().bundle();
        rec.revision = bundle.revision.clone();
        rec.engine = bundle.engine().as_str().to_string();
        rec.errors = vec![reason.to_string()];
        self.log_admin(rec).await;
    }

    /// Appends the record of a refused call (awaited, like the data plane's records). A record that cannot be
    /// written is counted and logged; the call is refused either way.
    async fn log_admin(&self, rec: DecisionRecord) {
        let (action, status) = (rec.action.clone(), rec.status);
        if let Err(err) = self.parts.log.lifecycle(rec).await {
            self.parts.metrics.log_errors.inc();
            tracing::error!(error = %err, action, ?status, "the record of a refused admin call could not be logged");
        }
    }

    /// Appends every event to the decision log (awaited: the answer waits for the record) and queues notifications.
    async fn record_events(&self, events: &[Event]) {
        let revision = self.authorizer().bundle().revision.clone();
        for e in events {
            if let Err(err) = self
                .parts
                .log
                .lifecycle(record::lifecycle_event(e, &revision))
                .await
            {
                // The state change is already committed; the missing record is loud, never silent.
                self.parts.metrics.log_errors.inc();
                tracing::error!(error = %err, event = e.kind.as_str(), "lifecycle record could not be logged");
            }
            self.parts.notifier.send(e.clone());
        }
    }

    /// Tells a data-plane connection waiting on `request` (a `hold` request) about its verdict, if it has one.
    /// Another replica changed `grant` (the index has it now): a caller of this replica held on the request the
    /// grant approves is released.
    pub fn grant_changed_elsewhere(&self, grant: &jitgate_engine::Grant) {
        if grant.status != jitgate_engine::GrantStatus::Active || grant.request_digest.is_none() {
            return;
        }
        if let Some(id) = grant.request_id.as_deref() {
            self.holds.fire(id, HoldSignal::Approved);
        }
    }

    /// Another replica changed `request`: a caller of this replica held on it learns a denial (or expiry, or
    /// cancellation). Approvals release through their grant ([`AccessService::grant_changed_elsewhere`]), which
    /// is in the index by then.
    pub fn request_changed_elsewhere(&self, request: &AccessRequest) {
        if request.state != RequestState::Approved {
            self.release(request);
        }
    }

    fn release(&self, request: &AccessRequest) {
        if request.role != HOLD_ROLE {
            return;
        }
        match request.state {
            RequestState::Approved => self.holds.fire(&request.id, HoldSignal::Approved),
            RequestState::Denied | RequestState::Expired | RequestState::Cancelled => {
                self.holds.fire(&request.id, HoldSignal::Denied)
            }
            RequestState::Pending => {}
        }
    }

    /// Logs the events a call on `view` caused and releases a connection held on its request.
    async fn settle(&self, view: &RequestView) {
        self.record_events(&view.events).await;
        self.release(&view.request);
    }

    /// Logs the events of a call that may have moved requests to `expired` on the way, and releases connections
    /// held on them.
    async fn record_expiries(&self, events: &[Event]) {
        self.record_events(events).await;
        for r in events.iter().filter_map(|e| e.request.as_ref()) {
            self.release(r);
        }
    }
}
