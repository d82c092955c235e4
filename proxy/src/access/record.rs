//! The decision-log records of the control plane: one per lifecycle event, one per refused admin call. Pure
//! builders; the service appends them and decides when.

use jitgate_engine::Decision;
use jitgate_engine::lifecycle::{Event, EventKind};
use jitgate_engine::log::{DecisionRecord, Outcome, RecordKind};
use serde_json::{Value, json};

/// Who made a control-plane call and how: the fields of the record of its refusal.
#[derive(Debug, Clone, Default)]
pub(super) struct CallMeta {
    /// The caller (`User::"bob"`), empty when not authenticated.
    pub(super) principal: String,
    /// The caller's address.
    pub(super) client: Option<String>,
    /// The call's method.
    pub(super) method: Option<String>,
    /// The call's path.
    pub(super) path: Option<String>,
}

/// A `decision` record of a call refused with `status`: who, from where, what; `context.api` is `admin`.
pub(super) fn refused(meta: &CallMeta, status: u16) -> DecisionRecord {
    let mut rec = DecisionRecord::new(RecordKind::Decision);
    rec.principal = meta.principal.clone();
    rec.decision = Some(Outcome::Deny);
    rec.client_addr = meta.client.clone();
    rec.method = meta.method.clone();
    rec.path = meta.path.clone();
    rec.status = Some(status);
    rec.context
        .insert("api".into(), Value::String("admin".into()));
    rec
}

/// The record of a call the policies refused (403): the control-plane action and its resource, the determining
/// policies.
pub(super) fn refused_by_policy(
    meta: &CallMeta,
    action: &str,
    resource: &str,
    decision: &Decision,
) -> DecisionRecord {
    let mut rec = refused(meta, 403);
    rec.action = action.to_string();
    rec.resource = resource.to_string();
    rec.policies = decision.policies.clone();
    rec.errors = decision.errors.clone();
    rec.revision = decision.revision.clone();
    rec.engine = decision.engine.as_str().to_string();
    if let Some(x) = decision.explain_json() {
        rec.context.insert("explain".into(), x);
    }
    rec
}

/// The `lifecycle` record of event `e` under bundle `revision`.
pub(super) fn lifecycle_event(e: &Event, revision: &str) -> DecisionRecord {
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
    rec.revision = revision.to_string();
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
        // An ended grant is what a revocation or a drop acts on: the record names it (the request stays in context).
        if matches!(e.kind, EventKind::Revoked | EventKind::Dropped) {
            rec.resource = jitgate_engine::EntityRef::new("Grant", &g.id).to_string();
        }
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
    rec
}

/// The record of a change of the store's entity data (`operation` `put` or `delete`, the uids it named), allowed by
/// `decision`: a `decision` record of action `writeEntities` on `Service::"jitgate"`, `context.api` `admin`.
pub(super) fn entities_changed(
    meta: &CallMeta,
    operation: &str,
    uids: &[String],
    decision: &Decision,
) -> DecisionRecord {
    let mut rec = refused(meta, 200);
    rec.decision = Some(Outcome::Allow);
    rec.action = "writeEntities".to_string();
    rec.resource = "Service::\"jitgate\"".to_string();
    rec.policies = decision.policies.clone();
    rec.revision = decision.revision.clone();
    rec.engine = decision.engine.as_str().to_string();
    rec.context.insert(
        "entities".into(),
        json!({ "operation": operation, "uids": uids }),
    );
    rec
}
