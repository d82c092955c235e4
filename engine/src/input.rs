//! What one decision sees, assembled once per decision: the request (caller, resource, context) and the caller's
//! materialized grants, with the place where entity data from bundles and the store will join. Decides nothing.
//!
//! Both policy backends take a [`DecisionInput`] and turn it into their own form (Cedar entities and context, the
//! Rego `input` document). It borrows what the caller already built, so assembling it allocates no more than the
//! grant filtering did before it existed.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::clock::UnixTime;
use crate::grant::Grant;
use crate::request::{AuthzRequest, Context, Principal, Resource};

/// The snapshot one decision is made against.
///
/// - the caller: [`DecisionInput::principal`] (its entity and groups) and its token claims
///   ([`DecisionInput::claims`]);
/// - the action, the resource with its ancestors and attributes, and the context;
/// - [`DecisionInput::grants`]: the caller's grants active at the request's time whose scope covers the resource,
///   never request-bound approvals (those are found with [`DecisionInput::approval`], by the engine, not the policies);
/// - [`DecisionInput::entities`]: entity data from outside the request (empty for now).
#[derive(Debug, Clone)]
pub struct DecisionInput<'a> {
    request: &'a AuthzRequest,
    /// Active, in scope, not request-bound: what the policies see.
    grants: Cow<'a, [Arc<Grant>]>,
    /// The caller's grants as given (any status), where a request-bound approval is looked up.
    held: &'a [Arc<Grant>],
    entities: EntityData<'a>,
}

impl<'a> DecisionInput<'a> {
    /// Assembles the input for `request` from the caller's grants (any status): only those active at the request's
    /// own time whose scope covers the resource, and that are not bound to one exact request, are materialized.
    pub fn new(request: &'a AuthzRequest, grants: &'a [Arc<Grant>]) -> Self {
        let now = request.context.time;
        let active: Vec<Arc<Grant>> = grants
            .iter()
            .filter(|g| {
                g.request_digest.is_none() && g.is_active_at(now) && g.covers(&request.resource)
            })
            .cloned()
            .collect();
        Self {
            request,
            grants: Cow::Owned(active),
            held: grants,
            entities: EntityData::default(),
        }
    }

    /// An input whose grants are already materialized (active, in scope, not request-bound), taken as given: for
    /// exercising a backend directly. No request-bound approval can be found in it.
    pub fn materialized(request: &'a AuthzRequest, grants: &'a [Arc<Grant>]) -> Self {
        Self {
            request,
            grants: Cow::Borrowed(grants),
            held: &[],
            entities: EntityData::default(),
        }
    }

    /// The whole request.
    pub fn request(&self) -> &'a AuthzRequest {
        self.request
    }

    /// The caller: its entity and the groups it belongs to.
    pub fn principal(&self) -> &'a Principal {
        &self.request.principal
    }

    /// The caller's verified token claims.
    pub fn claims(&self) -> &'a serde_json::Map<String, serde_json::Value> {
        &self.request.context.claims
    }

    /// The action id.
    pub fn action(&self) -> &'a str {
        &self.request.action
    }

    /// The resource with its ancestors (nearest first) and attributes.
    pub fn resource(&self) -> &'a Resource {
        &self.request.resource
    }

    /// The request's context (its time, source, HTTP facts, claims and further attributes).
    pub fn context(&self) -> &'a Context {
        &self.request.context
    }

    /// The request's own time: the instant grants are materialized at.
    pub fn time(&self) -> UnixTime {
        self.request.context.time
    }

    /// The caller's materialized grants: active at the request's time, scope covering the resource, not bound to
    /// one exact request.
    pub fn grants(&self) -> &[Arc<Grant>] {
        &self.grants
    }

    /// The caller's active grant bound to this exact request (its digest), if any: an approved hold. When several
    /// are, the one that ends first (then the smallest id).
    pub fn approval(&self) -> Option<&'a Arc<Grant>> {
        let request = self.request;
        let digest = request.digest.as_deref()?;
        let now = request.context.time;
        self.held
            .iter()
            .filter(|g| {
                g.request_digest.as_deref() == Some(digest)
                    && g.principal == request.principal.entity
                    && g.is_active_at(now)
            })
            .min_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)))
    }

    /// Entity data from outside the request.
    pub fn entities(&self) -> &EntityData<'a> {
        &self.entities
    }
}

/// Entity data a decision sees beyond the request and the grants: where a bundle's own entity data and the entities
/// the store keeps will join, each backend adding them to its own form (Cedar entities, Rego `data`).
///
/// Empty for now: no source provides entity data yet, so it holds nothing and costs nothing per decision. It will
/// borrow from the bundle snapshot and the store's snapshot rather than copy them, hence the lifetime.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct EntityData<'a> {
    _borrows: PhantomData<&'a ()>,
}

impl EntityData<'_> {
    /// Whether there is no entity data (always, until a source provides some).
    pub fn is_empty(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::entity::EntityRef;
    use crate::grant::GrantStatus;

    fn request(digest: Option<&str>) -> AuthzRequest {
        AuthzRequest {
            principal: Principal {
                entity: EntityRef::new("User", "alice"),
                groups: vec!["eng".into()],
                group_type: None,
                attrs: Default::default(),
            },
            action: "read".into(),
            resource: Resource {
                entity: EntityRef::new("Doc", "d1"),
                parents: vec![EntityRef::new("Service", "s")],
                attrs: Default::default(),
            },
            context: Context::at(100),
            digest: digest.map(str::to_string),
        }
    }

    fn grant(id: &str, scope: &str, expires_at: UnixTime) -> Grant {
        Grant {
            id: id.into(),
            principal: EntityRef::new("User", "alice"),
            role: "r".into(),
            scope: EntityRef::new("Service", scope),
            starts_at: 0,
            expires_at,
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
    fn materializes_active_in_scope_grants_and_keeps_approvals_apart() {
        let mut bound = grant("bound", "s", 500);
        bound.request_digest = Some("d".into());
        let mut revoked = grant("revoked", "s", 500);
        revoked.status = GrantStatus::Revoked;
        let grants: Vec<Arc<Grant>> = [
            grant("ok", "s", 500),
            grant("expired", "s", 50),
            grant("elsewhere", "other", 500),
            revoked,
            bound,
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let req = request(Some("d"));
        let input = DecisionInput::new(&req, &grants);
        let ids: Vec<&str> = input.grants().iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["ok"]);
        assert_eq!(input.approval().map(|g| g.id.as_str()), Some("bound"));
        assert!(input.entities().is_empty());
        let other = request(Some("other digest"));
        assert!(DecisionInput::new(&other, &grants).approval().is_none());
        // Taken as given, and no approval without the caller's grants.
        let given = DecisionInput::materialized(&req, &grants);
        assert_eq!(given.grants().len(), grants.len());
        assert!(given.approval().is_none());
    }
}
