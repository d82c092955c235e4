//! The admin API of the access lifecycle (`/v1/requests`, `/v1/grants`): authenticate the caller like the data
//! plane, hand the call to [`jitgate_engine::lifecycle::Lifecycle`], then log every event and notify webhooks.
//! Status codes: 400 bad input (naming the field), 401, 403 policy deny, 404 (an unknown id, told only to callers
//! who may `listRequests`; others get the 403 of a refused one), 409 invalid transition, 500 store.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jitgate_engine::access::{AccessRequest, RequestFilter, RequestState, Verdict};
use jitgate_engine::lifecycle::{
    Action, Event, EventKind, HOLD_ROLE, LifecycleError, NewRequest, RequestView,
};
use jitgate_engine::log::{DecisionRecord, Outcome, RecordKind};
use jitgate_engine::store::RequestStore;
use jitgate_engine::{Context, Decision, EntityRef, Principal};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::hold::HoldSignal;
use crate::state::Proxy;

/// The lifecycle routes, to be merged into the admin router.
pub fn router() -> Router<Arc<Proxy>> {
    Router::new()
        .route("/v1/requests", post(create).get(list))
        .route("/v1/requests/{id}", get(show))
        .route("/v1/requests/{id}/approve", post(approve))
        .route("/v1/requests/{id}/deny", post(deny))
        .route("/v1/grants", get(grants))
        .route("/v1/grants/{id}/revoke", post(revoke))
        .route("/v1/grants/{id}/drop", post(drop_grant))
        .route("/v1/grants/{id}/token", post(token))
}

/// An admin API error as JSON `{"error", "message"[, "field"]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error without a field.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A 400 for a request body that does not parse, from the parser's `message`; `field` is the body field it
    /// names (an unknown, missing or mistyped field), when it names one.
    pub(crate) fn bad_body(message: &str) -> Self {
        // serde names the field for unknown or mistyped fields; keep its words.
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field"))
            .map(str::to_string);
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: format!("request body: {message}"),
            field,
        }
    }

    /// A 400 naming the bad `field` (a body field or query parameter).
    pub(crate) fn bad_field(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(f), Some(o)) = (self.field, body.as_object_mut()) {
            o.insert("field".into(), Value::String(f));
        }
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        let message = e.to_string();
        match e {
            LifecycleError::BadInput { field, .. } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                message,
                field: Some(field),
            },
            LifecycleError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            LifecycleError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            LifecycleError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            other => {
                tracing::error!(error = %other, "lifecycle store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; nothing was changed or the change is on disk (check the request)",
                )
            }
        }
    }
}

/// The authenticated caller of an admin call and the context its policies see.
pub(crate) struct Caller {
    /// Who called, with their groups.
    pub(crate) principal: Principal,
    /// The admin call as the control-plane policies see it.
    pub(crate) context: Context,
}

impl Caller {
    /// What the record of a refusal of this call needs, kept while the caller itself moves into the store work.
    pub(crate) fn meta(&self) -> CallMeta {
        CallMeta {
            principal: self.principal.entity.to_string(),
            client: self.context.source_ip.clone(),
            method: self.context.method.clone(),
            path: self.context.path.clone(),
        }
    }
}

/// Who made an admin call and how: the fields of its decision record.
#[derive(Debug, Clone)]
pub(crate) struct CallMeta {
    principal: String,
    client: Option<String>,
    method: Option<String>,
    path: Option<String>,
}

/// Authenticates an admin API call like the data plane (401 without a valid token, or with a token bound to a grant
/// that is no longer active) and builds the context its policies see.
pub(crate) async fn caller(
    p: &Proxy,
    headers: &HeaderMap,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
) -> Result<Caller, ApiError> {
    let now = p.authorizer.clock().now();
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let id = match p.auth.authenticate(h, now).await {
        Ok(id) => id,
        Err(e) => {
            p.metrics.auth_failures.inc();
            let reason = e.public_message();
            record_unauthenticated(p, peer, method, uri, reason).await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                reason,
            ));
        }
    };
    // A grant-bound token proves identity only while its grant is active, and only on the data plane: it carries
    // one grant's authority, so it may not request, approve, revoke, or mint a longer-lived token in its holder's
    // name.
    if let Some(gid) = &id.grant_id {
        if !grant_is_active(p, &id.principal, gid, now) {
            let reason = "the token's grant is no longer active";
            record_unauthenticated(p, peer, method, uri, reason).await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                reason,
            ));
        }
        let reason = format!(
            "a token bound to grant {gid} works on the data plane only; call the admin API with your own token"
        );
        let meta = CallMeta {
            principal: id.principal.to_string(),
            client: Some(peer.ip().to_canonical().to_string()),
            method: Some(method.to_string()),
            path: Some(uri.path().to_string()),
        };
        record_refused(p, &meta, StatusCode::FORBIDDEN, &reason).await;
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", &reason));
    }
    let mut context = Context::at(now);
    context.source_ip = Some(peer.ip().to_canonical().to_string());
    context.method = Some(method.to_string());
    context.path = Some(uri.path().to_string());
    context.query = Some(uri.query().unwrap_or("").to_string());
    context.host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    context.claims = id.claims.clone();
    Ok(Caller {
        principal: Principal {
            entity: id.principal,
            groups: id.groups,
        },
        context,
    })
}

/// Whether grant `grant_id` of `principal` is active at `now` in the index (the source the data plane decides on).
pub fn grant_is_active(p: &Proxy, principal: &EntityRef, grant_id: &str, now: i64) -> bool {
    p.authorizer
        .grants()
        .for_principal(principal)
        .is_some_and(|l| l.iter().any(|g| g.id == grant_id && g.is_active_at(now)))
}

/// Runs blocking store work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LifecycleError> + Send + 'static,
) -> Result<T, ApiError> {
    off_workers(f).await?.map_err(ApiError::from)
}

/// Runs `f` on the blocking pool; only a task that could not finish is an error here (500).
async fn off_workers<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LifecycleError> + Send + 'static,
) -> Result<Result<T, LifecycleError>, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Runs a policy-checked store call like [`blocking`]; a refusal by the policies (403) is a decision too, and is
/// written to the decision log (kind `decision`, the control-plane action and its resource, the determining
/// policies, status 403) before it is answered.
pub(crate) async fn decided<T: Send + 'static>(
    p: &Proxy,
    meta: &CallMeta,
    f: impl FnOnce() -> Result<T, LifecycleError> + Send + 'static,
) -> Result<T, ApiError> {
    let e = match off_workers(f).await? {
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
        record_refusal(p, meta, action, resource, decision).await;
    }
    Err(ApiError::from(e))
}

/// Appends the record of a control-plane call the policies refused (awaited, like the data plane's records). A
/// record that cannot be written is counted and logged; the call is refused either way.
pub(crate) async fn record_refusal(
    p: &Proxy,
    meta: &CallMeta,
    action: &str,
    resource: &str,
    decision: &Decision,
) {
    let mut rec = admin_record(meta, StatusCode::FORBIDDEN);
    rec.action = action.to_string();
    rec.resource = resource.to_string();
    rec.policies = decision.policies.clone();
    rec.errors = decision.errors.clone();
    rec.revision = decision.revision.clone();
    rec.engine = decision.engine.as_str().to_string();
    append_admin_record(p, rec).await;
}

/// Appends the record of an admin call refused before any decision because its caller did not authenticate
/// (401): no principal and no action, the reason among the errors, as the data plane records its 401s.
async fn record_unauthenticated(
    p: &Proxy,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    reason: &str,
) {
    let meta = CallMeta {
        principal: String::new(),
        client: Some(peer.ip().to_canonical().to_string()),
        method: Some(method.to_string()),
        path: Some(uri.path().to_string()),
    };
    record_refused(p, &meta, StatusCode::UNAUTHORIZED, reason).await;
}

/// Logs an admin call refused before any policy was asked, with `status` and why.
async fn record_refused(p: &Proxy, meta: &CallMeta, status: StatusCode, reason: &str) {
    let mut rec = admin_record(meta, status);
    let bundle = p.authorizer.bundle();
    rec.revision = bundle.revision.clone();
    rec.engine = bundle.engine().as_str().to_string();
    rec.errors = vec![reason.to_string()];
    append_admin_record(p, rec).await;
}

/// A `decision` record of an admin call refused with `status`: who, from where, what; `context.api` is `admin`.
fn admin_record(meta: &CallMeta, status: StatusCode) -> DecisionRecord {
    let mut rec = DecisionRecord::new(RecordKind::Decision);
    rec.principal = meta.principal.clone();
    rec.decision = Some(Outcome::Deny);
    rec.client_addr = meta.client.clone();
    rec.method = meta.method.clone();
    rec.path = meta.path.clone();
    rec.status = Some(status.as_u16());
    rec.context
        .insert("api".into(), Value::String("admin".into()));
    rec
}

async fn append_admin_record(p: &Proxy, rec: DecisionRecord) {
    let (action, status) = (rec.action.clone(), rec.status);
    if let Err(err) = p.log.lifecycle(rec).await {
        p.metrics.log_errors.inc();
        tracing::error!(error = %err, action, ?status, "the record of a refused admin call could not be logged");
    }
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // The path names a mistyped field (`role`); for an unknown or missing one serde's own words do.
        let path = e.path().to_string();
        let mut err = ApiError::bad_body(&e.inner().to_string());
        if path != "." && !path.is_empty() {
            err.field = Some(path);
        }
        err
    })
}

/// Appends every event to the decision log (awaited: the answer waits for the record) and queues notifications.
pub async fn record_events(p: &Proxy, events: &[Event]) {
    let revision = p.authorizer.bundle().revision.clone();
    for e in events {
        let mut rec = DecisionRecord::new(RecordKind::Lifecycle);
        rec.principal = e.actor.clone();
        rec.action = format!("lifecycle.{}", e.kind.as_str());
        rec.decision = Some(match e.kind {
            EventKind::Denied | EventKind::Expired | EventKind::Revoked | EventKind::Dropped => {
                Outcome::Deny
            }
            EventKind::Held | EventKind::Created | EventKind::ApprovalRecorded => Outcome::Hold,
            EventKind::Approved | EventKind::BreakGlass => Outcome::Allow,
        });
        rec.policies = e.policies.clone();
        rec.revision = revision.clone();
        let mut ctx = serde_json::Map::new();
        if let Some(r) = &e.request {
            rec.resource = format!("AccessRequest::\"{}\"", r.id);
            rec.request_id = Some(r.id.clone());
            ctx.insert("access_request".into(), Value::String(r.id.clone()));
            ctx.insert("requester".into(), Value::String(r.requester.to_string()));
            ctx.insert("role".into(), Value::String(r.role.clone()));
            ctx.insert("scope".into(), Value::String(r.scope.to_string()));
            ctx.insert("duration".into(), Value::from(r.duration_secs));
            ctx.insert("reason".into(), Value::String(r.reason.clone()));
            ctx.insert("state".into(), Value::String(r.state.as_str().into()));
            if let Some(d) = &r.request_digest {
                ctx.insert("request_digest".into(), Value::String(d.clone()));
            }
        }
        if let Some(g) = &e.grant {
            rec.grants_used = vec![g.id.clone()];
            rec.break_glass = g.break_glass;
            ctx.insert("grant".into(), Value::String(g.id.clone()));
            ctx.insert("approvers".into(), json!(g.approvers));
            ctx.insert("starts_at".into(), Value::from(g.starts_at));
            ctx.insert("expires_at".into(), Value::from(g.expires_at));
        }
        if !e.comment.is_empty() {
            ctx.insert("comment".into(), Value::String(e.comment.clone()));
        }
        rec.context = ctx;
        if let Err(err) = p.log.lifecycle(rec).await {
            // The state change is already committed; the missing record is loud, never silent.
            p.metrics.log_errors.inc();
            tracing::error!(error = %err, event = e.kind.as_str(), "lifecycle record could not be logged");
        }
        p.notifier.send(e.clone());
    }
}

/// Tells a data-plane connection waiting on `request` (a `hold` request) about its verdict, if it has one.
fn fire_hold(p: &Proxy, request: &AccessRequest) {
    if request.role != HOLD_ROLE {
        return;
    }
    match request.state {
        RequestState::Approved => p.holds.fire(&request.id, HoldSignal::Approved),
        RequestState::Denied | RequestState::Expired | RequestState::Cancelled => {
            p.holds.fire(&request.id, HoldSignal::Denied)
        }
        RequestState::Pending => {}
    }
}

fn fire_holds(p: &Proxy, view: &RequestView) {
    fire_hold(p, &view.request);
}

/// Logs the events a read of `view` caused (an expiry) and releases a held connection waiting on it.
async fn settle(p: &Proxy, view: &RequestView) {
    record_events(p, &view.events).await;
    fire_holds(p, view);
}

/// Logs the events of a call that may have moved requests to `expired` on the way, and releases held connections
/// waiting on them.
async fn record_expiries(p: &Proxy, events: &[Event]) {
    record_events(p, events).await;
    for r in events.iter().filter_map(|e| e.request.as_ref()) {
        fire_hold(p, r);
    }
}

async fn create(
    State(p): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&p, &headers, peer, &method, &uri).await?;
    let new: NewRequest = parse_body(&body)?;
    let lc = p.lifecycle.clone();
    let meta = c.meta();
    let view = decided(&p, &meta, move || {
        lc.request_access(&c.principal, &c.context, new)
    })
    .await?;
    record_events(&p, &view.events).await;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Filters of `GET /v1/requests`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    role: Option<String>,
    requester: Option<String>,
    all: Option<bool>,
    limit: Option<u32>,
}

async fn list(
    State(p): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let c = caller(&p, &headers, peer, &method, &uri).await?;
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(RequestState::parse(s).ok_or_else(|| ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: format!(
                "state: `{s}` must be pending, approved, denied, expired or cancelled"
            ),
            field: Some("state".into()),
        })?),
    };
    let requester = match q.requester.as_deref() {
        None => None,
        Some(r) => Some(r.parse::<EntityRef>().map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: format!("requester: `{r}` is not an entity reference: {e}"),
            field: Some("requester".into()),
        })?),
    };
    let filter = RequestFilter {
        requester,
        state,
        role: q.role,
        limit: q.limit,
    };
    let all = q.all.unwrap_or(false);
    let lc = p.lifecycle.clone();
    let meta = c.meta();
    let listed = decided(&p, &meta, move || {
        lc.list_requests(&c.principal, &c.context, filter, all)
    })
    .await?;
    // Requests found past their pending TTL were moved to `expired` by this call: log each move once.
    record_expiries(&p, &listed.events).await;
    Ok(axum::Json(json!({ "requests": listed.requests })).into_response())
}

async fn show(
    State(p): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&p, &headers, peer, &method, &uri).await?;
    let meta = c.meta();
    let lc = p.lifecycle.clone();
    let resource = EntityRef::new("AccessRequest", &id).to_string();
    /// What `GET /v1/requests/{id}` found for this caller.
    enum Shown {
        Visible(Box<RequestView>),
        /// Refused (listRequests denied), with the request when it exists: its expiry events are still logged.
        Refused(Option<Box<RequestView>>, Box<Decision>),
    }
    let shown = blocking(move || {
        // One's own request, or anyone's with listRequests (a policy check only: nothing is listed).
        let refusal = || match lc.require_on_service(&c.principal, &c.context, Action::ListRequests)
        {
            Ok(_) => Ok(None),
            Err(LifecycleError::Forbidden { decision, .. }) => Ok(Some(decision)),
            Err(e) => Err(e),
        };
        match lc.get(&id) {
            Ok(v) if v.request.requester == c.principal.entity => Ok(Shown::Visible(Box::new(v))),
            Ok(v) => Ok(match refusal()? {
                None => Shown::Visible(Box::new(v)),
                Some(d) => Shown::Refused(Some(Box::new(v)), d),
            }),
            // Only a caller who may see others' requests learns that an id does not exist; anyone else gets
            // the same 403 as for someone else's request, so ids cannot be probed.
            Err(LifecycleError::NotFound(what)) => match refusal()? {
                None => Err(LifecycleError::NotFound(what)),
                Some(d) => Ok(Shown::Refused(None, d)),
            },
            Err(e) => Err(e),
        }
    })
    .await?;
    // Reading a request may have moved it to `expired`: that is logged, and a held connection released, whoever
    // asked.
    match shown {
        Shown::Visible(view) => {
            settle(&p, &view).await;
            Ok(axum::Json(*view).into_response())
        }
        Shown::Refused(view, decision) => {
            if let Some(view) = view {
                settle(&p, &view).await;
            }
            record_refusal(
                &p,
                &meta,
                Action::ListRequests.as_str(),
                &resource,
                &decision,
            )
            .await;
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "listRequests denied: not your request and no policy allows listing others'",
            ))
        }
    }
}

/// Body of approve / deny / revoke / drop.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: String,
}

async fn verdict(
    p: Arc<Proxy>,
    c: Caller,
    id: String,
    v: Verdict,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CommentBody = parse_body(&body)?;
    // A pending request past its TTL is moved to `expired` first, and that move is logged whatever the verdict's
    // fate: decide() refuses a due request (409) without moving it, so no expiry goes unlogged.
    let lc = p.lifecycle.clone();
    let id2 = id.clone();
    // An unknown id is left to decide(), which answers 404 or 403 depending on who asks.
    let expired = blocking(move || match lc.expire_if_due(&id2) {
        Err(LifecycleError::NotFound(_)) => Ok(None),
        other => other,
    })
    .await?;
    record_expiries(&p, expired.as_slice()).await;
    let lc = p.lifecycle.clone();
    let id2 = id.clone();
    let meta = c.meta();
    let result = decided(&p, &meta, move || {
        lc.decide(&id2, &c.principal, &c.context, v, &b.comment)
    })
    .await;
    if matches!(&result, Err(e) if e.status == StatusCode::CONFLICT) {
        // The TTL may have passed between the expiry check and the verdict (decide() then refuses without moving
        // the request): move and log it now rather than leave it to the next read.
        let lc = p.lifecycle.clone();
        let id2 = id.clone();
        if let Ok(expired) = blocking(move || lc.expire_if_due(&id2)).await {
            record_expiries(&p, expired.as_slice()).await;
        }
        // Refused because it was decided or expired meanwhile: release a held connection waiting on it all the same.
        if let Ok(Some(r)) = p.store.get_access_request(&id) {
            fire_hold(&p, &r);
        }
    }
    let view = result?;
    settle(&p, &view).await;
    Ok(axum::Json(view).into_response())
}

async fn approve(
    State(p): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&p, &headers, peer, &method, &uri).await?;
    verdict(p, c, id, Verdict::Approve, body).await
}

async fn deny(
    State(p): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&p, &headers, peer, &method, &uri).await?;
    verdict(p, c, id, Verdict::Deny, body).await
}

/// Filters of `GET /v1/grants`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GrantsQuery {
    all: Option<bool>,
}

async fn grants(
    State(p): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    q: Result<Query<GrantsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let c = caller(&p, &headers, peer, &method, &uri).await?;
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let lc = p.lifecycle.clone();
    let all = q.all.unwrap_or(false);
    let meta = c.meta();
    let rows = decided(&p, &meta, move || {
        lc.list_grants(&c.principal, &c.context, all)
    })
    .await?;
    Ok(axum::Json(json!({ "grants": rows })).into_response())
}

async fn end(
    p: Arc<Proxy>,
    c: Caller,
    id: String,
    action: Action,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CommentBody = parse_body(&body)?;
    let lc = p.lifecycle.clone();
    let (grant, events) = decided(&p, &c.meta(), move || {
        lc.end_grant(&id, &c.principal, &c.context, action, &b.comment)
    })
    .await?;
    record_events(&p, &events).await;
    Ok(axum::Json(json!({ "grant": grant })).into_response())
}

async fn revoke(
    State(p): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&p, &headers, peer, &method, &uri).await?;
    end(p, c, id, Action::Revoke, body).await
}

async fn drop_grant(
    State(p): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&p, &headers, peer, &method, &uri).await?;
    end(p, c, id, Action::Drop, body).await
}

/// Body of `POST /v1/grants/{id}/token`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    /// Shorter life than the grant's remaining window, e.g. `10m`.
    #[serde(default)]
    ttl: Option<String>,
}

async fn token(
    State(p): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&p, &headers, peer, &method, &uri).await?;
    let b: TokenBody = parse_body(&body)?;
    let Some(issuer) = p.local_issuer.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "no [local_issuer] is configured; jitgate cannot mint tokens",
        ));
    };
    let ttl = match b.ttl.as_deref() {
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
                .map_err(|e| ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "bad_request",
                    message: format!("ttl: {e}"),
                    field: Some("ttl".into()),
                })?,
        ),
    };
    let lc = p.lifecycle.clone();
    let principal = c.principal.clone();
    let meta = c.meta();
    let grant = decided(&p, &meta, move || {
        lc.grant_for_token(&id, &c.principal, &c.context)
    })
    .await?;
    let now = p.authorizer.clock().now();
    let expires_at = match ttl {
        Some(t) => grant.expires_at.min(now.saturating_add(t)),
        None => grant.expires_at,
    };
    let token = issuer
        .mint(
            &principal.entity,
            &principal.groups,
            &grant.id,
            expires_at,
            now,
        )
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(axum::Json(json!({
        "token": token,
        "grant_id": grant.id,
        "expires_at": expires_at,
        "expires_at_rfc3339": jitgate_engine::clock::to_rfc3339(expires_at),
    }))
    .into_response())
}
