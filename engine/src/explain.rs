//! Explaining one decision (`jitgate eval --explain`): for each policy of the action's partition whether its scope
//! matched and whether its condition held or erred, and for each of the caller's grants why it was or was not
//! materialized. Off the hot path: it evaluates every policy on its own, which a decision never does.

use std::sync::Arc;

use serde::Serialize;

use crate::clock::UnixTime;
use crate::decision::Decision;
use crate::grant::{Grant, GrantStatus};
use crate::request::AuthzRequest;

/// Whether a policy's condition (`when` / `unless`) held for the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "message")]
pub enum Condition {
    /// It held (a policy without conditions holds whenever its scope matches).
    Held,
    /// It did not hold.
    False,
    /// Evaluating it failed (the message is the language's); jitgate denies the request.
    Error(String),
    /// Not evaluated: the scope did not match.
    Skipped,
}

impl Condition {
    /// `held`, `false`, `error` or `skipped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Condition::Held => "held",
            Condition::False => "false",
            Condition::Error(_) => "error",
            Condition::Skipped => "skipped",
        }
    }
}

/// One policy of the action's partition, as the request met it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyTrace {
    /// The policy id (a template link's id for a link).
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// Whether it is a hold policy (`@hold`), which turns an allow into a hold.
    pub hold: bool,
    /// The policy's scope, as written (`principal in Role::"db-admin", action == Action::"x", resource`).
    pub scope: String,
    /// Whether the scope matched the request.
    pub scope_matched: bool,
    /// Whether the condition held.
    pub condition: Condition,
    /// Whether it is among the policies that determined the decision.
    pub determining: bool,
}

/// What a backend can say about one request's policies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyTraces {
    /// Each policy of the action's partition (Cedar), in id order; empty for Rego.
    pub policies: Vec<PolicyTrace>,
    /// Rego: the deciding package's document for this input (`data.<package>`): every rule that evaluated to a
    /// value, the `allow` / `deny` / `hold` sets among them; rules that are undefined are absent, as in `opa eval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<serde_json::Value>,
    /// What this backend cannot explain, when something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why one of the caller's grants was, or was not, given to the policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantFate {
    /// Active at the request's time and its scope covers the resource: the policies saw it.
    Materialized,
    /// Its window starts after the request's time.
    NotStarted,
    /// Its window ended at or before the request's time.
    Expired,
    /// Revoked early.
    Revoked,
    /// Every use spent.
    UsedUp,
    /// Its scope is neither the resource nor one of its ancestors.
    OutOfScope,
    /// It approves one exact held request; the engine, not the policies, looks it up.
    RequestBound,
}

impl GrantFate {
    /// The reason in words.
    pub fn describe(self) -> &'static str {
        match self {
            GrantFate::Materialized => "materialized (active, scope covers the resource)",
            GrantFate::NotStarted => "not started",
            GrantFate::Expired => "expired",
            GrantFate::Revoked => "revoked",
            GrantFate::UsedUp => "used up",
            GrantFate::OutOfScope => "scope does not cover the resource",
            GrantFate::RequestBound => "bound to one exact request (an approved hold)",
        }
    }

    /// What happened to `grant` for `request`, at the request's own time. The order of the checks is the order a
    /// reader asks in: is it for this request at all, is it alive, does it reach the resource.
    pub fn of(grant: &Grant, request: &AuthzRequest) -> GrantFate {
        let now: UnixTime = request.context.time;
        if grant.request_digest.is_some() {
            GrantFate::RequestBound
        } else if grant.status == GrantStatus::Revoked {
            GrantFate::Revoked
        } else if grant.status == GrantStatus::Consumed
            || grant.max_uses.is_some_and(|m| grant.uses >= m)
        {
            GrantFate::UsedUp
        } else if now < grant.starts_at {
            GrantFate::NotStarted
        } else if now >= grant.expires_at {
            GrantFate::Expired
        } else if !grant.covers(&request.resource) {
            GrantFate::OutOfScope
        } else {
            GrantFate::Materialized
        }
    }
}

/// One of the caller's grants and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantTrace {
    /// The grant id.
    pub id: String,
    /// Its role.
    pub role: String,
    /// Its scope, as an entity reference.
    pub scope: String,
    /// First second of validity (Unix seconds).
    pub starts_at: UnixTime,
    /// First second of invalidity (Unix seconds).
    pub expires_at: UnixTime,
    /// Uses left, when limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
    /// What happened to it.
    pub fate: GrantFate,
    /// Whether the decision rested on it.
    pub used: bool,
}

/// A decision with its explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The decision, exactly as the proxy would make it (without spending uses).
    pub decision: Decision,
    /// The policies, as the request met them.
    #[serde(flatten)]
    pub traces: PolicyTraces,
    /// Each of the caller's grants (those of the request's principal), in the order given.
    pub grants: Vec<GrantTrace>,
}

/// The fate of each of `grants` that belongs to the request's principal.
pub fn grant_traces(
    request: &AuthzRequest,
    grants: &[Arc<Grant>],
    decision: &Decision,
) -> Vec<GrantTrace> {
    grants
        .iter()
        .filter(|g| g.principal == request.principal.entity)
        .map(|g| GrantTrace {
            id: g.id.clone(),
            role: g.role.clone(),
            scope: g.scope.to_string(),
            starts_at: g.starts_at,
            expires_at: g.expires_at,
            uses_left: g.uses_left(),
            fate: GrantFate::of(g, request),
            used: decision.grants_used.iter().any(|u| u == &g.id),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::entity::EntityRef;
    use crate::request::{Context, Principal, Resource};

    fn grant(id: &str, scope: &str) -> Grant {
        Grant {
            id: id.into(),
            principal: EntityRef::new("User", "alice"),
            role: "r".into(),
            scope: EntityRef::new("Service", scope),
            starts_at: 50,
            expires_at: 200,
            max_uses: None,
            uses: 0,
            status: GrantStatus::Active,
            approvers: vec![],
            reason: String::new(),
            break_glass: false,
            request_digest: None,
            request_id: None,
        }
    }

    #[test]
    fn each_grant_says_why() {
        let request = AuthzRequest {
            principal: Principal::new(EntityRef::new("User", "alice"), vec![]),
            action: "read".into(),
            resource: Resource {
                entity: EntityRef::new("Doc", "d1"),
                parents: vec![EntityRef::new("Service", "s")],
                attrs: Default::default(),
            },
            context: Context::at(100),
            digest: None,
        };
        let fate = |g: Grant| GrantFate::of(&g, &request);
        assert_eq!(fate(grant("ok", "s")), GrantFate::Materialized);
        assert_eq!(fate(grant("other", "t")), GrantFate::OutOfScope);
        let mut g = grant("later", "s");
        g.starts_at = 150;
        assert_eq!(fate(g), GrantFate::NotStarted);
        let mut g = grant("gone", "s");
        g.expires_at = 100;
        assert_eq!(fate(g), GrantFate::Expired);
        let mut g = grant("spent", "s");
        g.max_uses = Some(2);
        g.uses = 2;
        assert_eq!(fate(g), GrantFate::UsedUp);
        let mut g = grant("revoked", "s");
        g.status = GrantStatus::Revoked;
        assert_eq!(fate(g), GrantFate::Revoked);
        let mut g = grant("bound", "s");
        g.request_digest = Some("d".into());
        assert_eq!(fate(g), GrantFate::RequestBound);
        // The fates agree with what a decision materializes.
        for g in [grant("ok", "s"), grant("other", "t")] {
            let materialized = g.request_digest.is_none()
                && g.is_active_at(request.context.time)
                && g.covers(&request.resource);
            assert_eq!(fate(g) == GrantFate::Materialized, materialized);
        }
    }
}
