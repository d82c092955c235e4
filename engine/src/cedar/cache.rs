//! Per-thread caches of Cedar entities: those built for each grant (the grant and its role), and the caller's side of
//! a request (principal, grants, roles, action entities). Entries are only reused for the very same grants.
//!
//! Grants are immutable behind their `Arc`: a change (a use spent, a revocation) makes a new `Arc`. Entries keep a
//! `Weak` to each grant they were built from, which keeps that allocation from being reused, so an address equal to
//! a kept one is the same grant, unchanged. (`Arc::get_mut` also refuses while a `Weak` exists, so nothing can mutate
//! a cached grant in place.) Both caches are bounded: emptied when full, they refill with what is in use.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::{Arc, Weak};

use cedar_policy_core::ast::{self, Eid, EntityType, EntityUID, PartialValue, Value};
use cedar_policy_core::entities::Entities as CoreEntities;
use smol_str::SmolStr;

use crate::entity::EntityRef;
use crate::grant::Grant;
use crate::request::AuthzRequest;

/// Grant entries per thread before that cache is emptied.
const MAX_ENTRIES: usize = 4096;

/// Caller-side entries per thread before that cache is emptied.
const MAX_SIDES: usize = 1024;

/// The Cedar form of one grant.
#[derive(Debug, Clone)]
pub(crate) struct GrantEntities {
    /// `Grant::"<id>"` with its attributes, parent its role.
    pub(crate) grant: Arc<ast::Entity>,
    /// `Role::"<role>"`, no attributes, no parents.
    pub(crate) role: Arc<ast::Entity>,
}

struct Entry {
    source: Weak<Grant>,
    built: GrantEntities,
}

/// FNV-1a: a cheap hash for the keys of these per-thread maps (addresses and a few short strings; no untrusted party
/// chooses them in bulk, and a collision only costs a rebuild).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        // Heap addresses: the low bits are zero from alignment; multiply to spread the rest over all bits.
        self.0 = (self.0 ^ (n as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// What a caller-side entry was built from.
struct SideKey {
    backend: u64,
    action: String,
    principal: EntityRef,
    groups: Vec<String>,
    group_type: Option<String>,
    attrs: serde_json::Map<String, serde_json::Value>,
    grants: Vec<Weak<Grant>>,
}

impl SideKey {
    fn matches(&self, backend: u64, request: &AuthzRequest, grants: &[&Arc<Grant>]) -> bool {
        self.backend == backend
            && self.grants.len() == grants.len()
            && self
                .grants
                .iter()
                .zip(grants)
                .all(|(w, g)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(g)))
            && self.principal == request.principal.entity
            && self.action == request.action
            && self.groups == request.principal.groups
            && self.group_type == request.principal.group_type
            && self.attrs == request.principal.attrs
    }
}

thread_local! {
    static GRANTS: RefCell<FnvMap<usize, Entry>> = RefCell::new(FnvMap::default());
    static SIDES: RefCell<FnvMap<u64, (SideKey, Rc<CallerSide>)>> = RefCell::new(FnvMap::default());
}

/// A resource (its uid and route parents) and the whole entity set built for it on a caller side.
type LastSet = (EntityRef, Vec<EntityRef>, Rc<cedar_policy::Entities>);

/// The caller's side of a request's entities: the principal, its grants and their roles, and the action entities,
/// ready for the resource side to be added; with the context's `grants` set and `break_glass` flag.
#[derive(Debug)]
pub(crate) struct CallerSide {
    /// The entities, transitively closed.
    pub(crate) entities: CoreEntities,
    /// `context.grants`: the grants' uids.
    pub(crate) grants: Value,
    /// Whether any of the grants is break-glass.
    pub(crate) break_glass: bool,
    /// The whole entity set last built on this side for a resource without attributes and a context without entity
    /// references (then it depends on nothing else): the resource, its route parents, the entities.
    pub(crate) last: RefCell<Option<LastSet>>,
    /// The context's `claims` last converted on this side (the action's declared type), with their Cedar value.
    pub(crate) claims: RefCell<Option<(serde_json::Map<String, serde_json::Value>, Value)>>,
}

impl CallerSide {
    /// The entity set built last for `resource` (uid and route parents) on this side, if that was the last one.
    pub(crate) fn entities_for(
        &self,
        resource: &crate::request::Resource,
    ) -> Option<Rc<cedar_policy::Entities>> {
        let last = self.last.try_borrow().ok()?;
        let (uid, parents, entities) = last.as_ref()?;
        (uid == &resource.entity && parents == &resource.parents).then(|| Rc::clone(entities))
    }

    /// The Cedar value of `claims` when they are the ones converted last on this side.
    pub(crate) fn claims_for(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Value> {
        let last = self.claims.try_borrow().ok()?;
        let (json, value) = last.as_ref()?;
        (json == claims).then(|| value.clone())
    }

    /// Keeps `value` as the Cedar value of `claims` on this side.
    pub(crate) fn remember_claims(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
        value: &Value,
    ) {
        if let Ok(mut last) = self.claims.try_borrow_mut() {
            *last = Some((claims.clone(), value.clone()));
        }
    }

    /// Keeps `entities` as the set for `resource` on this side.
    pub(crate) fn remember(
        &self,
        resource: &crate::request::Resource,
        entities: &Rc<cedar_policy::Entities>,
    ) {
        if let Ok(mut last) = self.last.try_borrow_mut() {
            *last = Some((
                resource.entity.clone(),
                resource.parents.clone(),
                Rc::clone(entities),
            ));
        }
    }
}

/// The caller side for `request` with `grants` (already without repeated ids) under backend `backend`: this thread's
/// cached one when it was built from the same backend, action, principal (its groups, group type and
/// attributes) and grant `Arc`s, else `build()`.
pub(crate) fn caller_side(
    backend: u64,
    request: &AuthzRequest,
    grants: &[&Arc<Grant>],
    build: impl FnOnce() -> Result<CallerSide, String>,
) -> Result<Rc<CallerSide>, String> {
    let mut h = Fnv::default();
    h.write_u64(backend);
    h.write(request.action.as_bytes());
    h.write_u8(0xff);
    h.write(request.principal.entity.ty.as_bytes());
    h.write_u8(0xff);
    h.write(request.principal.entity.id.as_bytes());
    for g in &request.principal.groups {
        h.write_u8(0xff);
        h.write(g.as_bytes());
    }
    if let Some(t) = &request.principal.group_type {
        h.write_u8(0xfe);
        h.write(t.as_bytes());
    }
    for g in grants {
        h.write_usize(Arc::as_ptr(g) as usize);
    }
    // The principal's attributes are compared, not hashed: the same caller with other claims replaces the entry.
    let key = h.finish();
    let hit = SIDES.with(|c| {
        c.try_borrow().ok().and_then(|c| {
            c.get(&key)
                .filter(|(k, _)| k.matches(backend, request, grants))
                .map(|(_, side)| Rc::clone(side))
        })
    });
    if let Some(side) = hit {
        return Ok(side);
    }
    let side = Rc::new(build()?);
    SIDES.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if c.len() >= MAX_SIDES {
                c.clear();
            }
            let k = SideKey {
                backend,
                action: request.action.clone(),
                principal: request.principal.entity.clone(),
                groups: request.principal.groups.clone(),
                group_type: request.principal.group_type.clone(),
                attrs: request.principal.attrs.clone(),
                grants: grants.iter().map(|g| Arc::downgrade(g)).collect(),
            };
            c.insert(key, (k, Rc::clone(&side)));
        }
    });
    Ok(side)
}

/// The entity types grants are built with.
pub(crate) struct GrantTypes<'a> {
    pub(crate) grant: &'a EntityType,
    pub(crate) role: &'a EntityType,
}

/// The Cedar entities of each grant, from this thread's cache or built (and cached) now.
pub(crate) fn grant_entities(grants: &[&Arc<Grant>], types: &GrantTypes<'_>) -> Vec<GrantEntities> {
    GRANTS.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            // Re-entered on this thread (cannot happen today): build without the cache.
            return grants.iter().map(|g| build(g, types)).collect();
        };
        if cache.len() + grants.len() > MAX_ENTRIES {
            cache.clear();
        }
        grants
            .iter()
            .map(|g| {
                let key = Arc::as_ptr(g) as usize;
                if let Some(e) = cache.get(&key) {
                    if e.source.strong_count() > 0
                        && std::ptr::eq(e.source.as_ptr(), Arc::as_ptr(g))
                        && e.built.grant.uid().entity_type() == types.grant
                        && e.built.role.uid().entity_type() == types.role
                    {
                        return e.built.clone();
                    }
                }
                let built = build(g, types);
                cache.insert(
                    key,
                    Entry {
                        source: Arc::downgrade(g),
                        built: built.clone(),
                    },
                );
                built
            })
            .collect()
    })
}

fn build(g: &Grant, types: &GrantTypes<'_>) -> GrantEntities {
    let guid = EntityUID::from_components(types.grant.clone(), Eid::new(g.id.as_str()), None);
    let role = EntityUID::from_components(types.role.clone(), Eid::new(g.role.as_str()), None);
    let uses_left = g.uses_left().map(i64::from).unwrap_or(-1);
    let approvers = Value::set(g.approvers.iter().map(|a| Value::from(a.as_str())), None);
    let attrs: [(SmolStr, PartialValue); 9] = [
        ("id".into(), Value::from(g.id.as_str()).into()),
        ("role".into(), Value::from(role.clone()).into()),
        ("scope".into(), Value::from(g.scope.to_string()).into()),
        ("starts_at".into(), Value::from(g.starts_at).into()),
        ("expires_at".into(), Value::from(g.expires_at).into()),
        ("approvers".into(), approvers.into()),
        ("reason".into(), Value::from(g.reason.as_str()).into()),
        ("uses_left".into(), Value::from(uses_left).into()),
        ("break_glass".into(), Value::from(g.break_glass).into()),
    ];
    let grant = ast::Entity::new_with_attr_partial_value(
        guid,
        attrs,
        HashSet::new(),
        HashSet::from([role.clone()]),
        [],
    );
    let role =
        ast::Entity::new_with_attr_partial_value(role, [], HashSet::new(), HashSet::new(), []);
    GrantEntities {
        grant: Arc::new(grant),
        role: Arc::new(role),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::entity::EntityRef;
    use crate::grant::GrantStatus;

    fn grant(id: &str, role: &str, uses: u32) -> Arc<Grant> {
        Arc::new(Grant {
            id: id.into(),
            principal: EntityRef::new("User", "alice"),
            role: role.into(),
            scope: EntityRef::new("Service", "payments"),
            starts_at: 0,
            expires_at: 100,
            max_uses: Some(3),
            uses,
            status: GrantStatus::Active,
            approvers: vec!["bob".into()],
            reason: "r".into(),
            break_glass: false,
            request_digest: None,
            request_id: None,
        })
    }

    fn types() -> (EntityType, EntityType) {
        let t = |n: &str| EntityType::from(ast::Name::parse_unqualified_name(n).unwrap());
        (t("Grant"), t("Role"))
    }

    fn uses_left(e: &ast::Entity) -> PartialValue {
        e.get("uses_left").cloned().unwrap()
    }

    #[test]
    fn same_arc_is_served_from_the_cache_a_changed_grant_is_rebuilt() {
        let (g, r) = types();
        let types = GrantTypes {
            grant: &g,
            role: &r,
        };
        let first = grant("g1", "writer", 0);
        let a = grant_entities(&[&first], &types);
        let b = grant_entities(&[&first], &types);
        assert!(Arc::ptr_eq(&a[0].grant, &b[0].grant));
        assert_eq!(a[0].role.uid().eid().escaped(), "writer");
        assert_eq!(uses_left(&a[0].grant), Value::from(3).into());

        // A use spent: a new Arc, a new entity.
        let spent = grant("g1", "writer", 1);
        let c = grant_entities(&[&spent], &types);
        assert_eq!(uses_left(&c[0].grant), Value::from(2).into());

        // The old grant dropped and a new one made: never served the old entity, whatever the allocator reuses.
        drop(first);
        for uses in 0..3 {
            let fresh = grant("g1", "reader", uses);
            let d = grant_entities(&[&fresh], &types);
            assert_eq!(
                uses_left(&d[0].grant),
                Value::from(i64::from(3 - uses)).into()
            );
            assert_eq!(d[0].role.uid().eid().escaped(), "reader");
        }
    }
}
