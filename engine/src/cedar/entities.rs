//! Builds a decision's Cedar request and entities from its [`DecisionInput`], straight from values (no expression
//! evaluation, no transitive-closure computation). Loads nothing and decides nothing.
//!
//! How a request becomes Cedar (the schema in `schemas/jitgate.cedarschema` documents the same from the policy side):
//! - principal: its `EntityRef`, parents `<group type>::"<g>"` for each group (`Group` unless the issuer configures
//!   another type) and `Grant::"<id>"` for each materialized grant; its attributes (from token claims) typed by the
//!   schema's declaration of its type, over what the entity data says about it;
//! - each grant: `Grant::"<id>"` with its attributes, parent `Role::"<role>"`;
//! - resource: its attributes from JSON (strings, bools, integers, arrays as sets, objects as records; floats and
//!   nulls dropped), parents its ancestors. Declared attributes are converted by their declared type (see
//!   [`super::typed`]: an entity-typed `requester: "User::\"bob\""` becomes a reference, an `ipaddr` string an
//!   address); undeclared attributes keep their JSON form (strings stay strings);
//! - action: `Action::"<action>"` with its action groups from the schema;
//! - context: `time` {epoch, hour, weekday}, `source_ip` (ipaddr, 0.0.0.0 when unknown), `method`, `path`, `host`,
//!   `query` ("" when absent), `claims`, `grants` (set of Grant refs), `break_glass`, then each `context.attrs` entry
//!   as a further top-level attribute (the built-in names win on a clash). `claims` and the attributes are converted
//!   by the action's declared context type, at any depth (records, sets), as the resource's attributes are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::{Context, Entities, EntityId, EntityTypeName, EntityUid, Request, Schema};
use cedar_policy_core::ast::{self, PartialValue, Value};
use cedar_policy_core::entities::{
    Dereference, Entities as CoreEntities, NoEntitiesSchema, TCComputation,
};
use cedar_policy_core::extensions::Extensions;
use smol_str::SmolStr;

use super::cache::{CallerSide, GrantTypes, caller_side, grant_entities};
use super::convert::{EntityAttrs, hour_and_weekday, ip_value, type_name, uid};
use super::data::{EntityData, uids_in};
use super::load::{ActionIndex, BaseTypes};
use super::typed::{Shape, record, to_value};
use crate::diag::{Diagnostic, Diagnostics};
use crate::grant::Grant;
use crate::input::DecisionInput;
use crate::request::AuthzRequest;

/// Context attribute names the engine sets itself; `context.attrs` entries with these names are ignored.
const BUILTIN_CONTEXT: [&str; 9] = [
    "time",
    "source_ip",
    "method",
    "path",
    "host",
    "query",
    "claims",
    "grants",
    "break_glass",
];

/// The principal, grant and role entities of a request, the grants' uids, and whether any grant is break-glass.
type CallerEntities = (Vec<Arc<ast::Entity>>, Vec<ast::EntityUID>, bool);

/// The next [`EntityBuilder`] id.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Up to this many items, repeats are found by comparing each with those kept (cheaper than hashing).
const SMALL: usize = 32;

/// Entity type names the engine uses on every request, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Types {
    pub(crate) group: EntityTypeName,
    pub(crate) grant: EntityTypeName,
    pub(crate) role: EntityTypeName,
    pub(crate) action: EntityTypeName,
}

/// What turns a decision's input into Cedar for one schema: the entity types parsed once and the schema's
/// entity-typed attributes.
#[derive(Debug)]
pub(crate) struct EntityBuilder {
    /// Unique among the builders of this process, so per-thread caches never mix two bundles' entities.
    id: u64,
    pub(crate) types: Types,
    /// Every entity type of the schema by name, so requests do not re-parse type names.
    pub(crate) type_cache: HashMap<String, EntityTypeName>,
    entity_attrs: EntityAttrs,
    /// The bundle's entity data (empty without `entities` in the manifest), with the store's over it once set.
    pub(crate) data: Arc<EntityData>,
}

impl EntityBuilder {
    /// The builder for `schema_obj` (loaded from `schema`, named in errors) and its entity-typed attributes. With the
    /// engine's types under `Jitgate::` (`base`), a short name of one of its default types that the schema does not
    /// declare itself (`User`, `Service`) resolves to the `Jitgate::` type in requests; grants and their roles are
    /// always the engine's (`Jitgate::JitGrant`, `Jitgate::JitRole`).
    pub(crate) fn new(
        schema_obj: &Schema,
        entity_attrs: EntityAttrs,
        data: Arc<EntityData>,
        schema: &Path,
        base: &BaseTypes,
    ) -> Result<Self, Diagnostics> {
        let mut type_cache: HashMap<String, EntityTypeName> = schema_obj
            .entity_types()
            .map(|t| (t.to_string(), t.clone()))
            .collect();
        let mut entity_attrs = entity_attrs;
        for (short, full) in base.aliases() {
            if let std::collections::hash_map::Entry::Vacant(slot) = type_cache.entry(short.clone())
            {
                // The short name's declared attributes are the `Jitgate::` type's.
                if let Some(shape) = entity_attrs.by_type.get(&full).cloned() {
                    entity_attrs.by_type.entry(short).or_insert(shape);
                }
                slot.insert(parse_type(&full, schema)?);
            }
        }
        let resolve = |short: &str| match type_cache.get(short) {
            Some(t) => Ok(t.clone()),
            None => parse_type(short, schema),
        };
        let types = Types {
            group: resolve("Group")?,
            grant: parse_type(&base.grant_type(), schema)?,
            role: parse_type(&base.role_type(), schema)?,
            action: parse_type("Action", schema)?,
        };
        Ok(EntityBuilder {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            types,
            type_cache,
            entity_attrs,
            data,
        })
    }

    /// This builder with other entity data (the store's merged over the bundle's), under a new id so that no
    /// per-thread cache serves an entity built from the old data.
    pub(crate) fn with_data(&self, data: Arc<EntityData>) -> Self {
        EntityBuilder {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            types: self.types.clone(),
            type_cache: self.type_cache.clone(),
            entity_attrs: self.entity_attrs.clone(),
            data,
        }
    }

    /// Builds the request and its entities straight from values: no expression evaluation and no transitive-closure
    /// computation (the engine knows the closure: principal -> groups, grants -> roles; resource -> its ancestors;
    /// action entities come from the schema already closed).
    ///
    /// The caller's side (principal, grants, roles, action entities) is taken from this thread's cache when the same
    /// caller, groups, grants (the same `Arc`s) and action were seen last time; the resource side is built each time,
    /// unless the side's last request was for the same resource (uid and route parents) and neither request brings
    /// resource attributes or entity references in its context: then the whole set is that request's.
    pub(crate) fn build(
        &self,
        input: &DecisionInput<'_>,
        idx: &ActionIndex,
    ) -> Result<(Request, Rc<Entities>), String> {
        let request = input.request();
        let cache = &self.type_cache;
        let action_uid = match &idx.uid {
            Some(u) => u.clone(),
            None => EntityUid::from_type_name_and_id(
                self.types.action.clone(),
                EntityId::new(&request.action),
            ),
        };
        let principal = uid(cache, &request.principal.entity)?;
        let resource = uid(cache, &request.resource.entity)?;
        // A grant id given twice is materialized once, as first given.
        let unique = first_by_id(input.grants());
        let side = caller_side(self.id, request, &unique, || {
            self.caller_side(request, &unique, &principal, idx)
        })?;
        let (context, seeds) = self.context(request, &side)?;
        let reusable = request.resource.attrs.is_empty() && seeds.is_empty();
        if reusable {
            if let Some(entities) = side.entities_for(&request.resource) {
                let req = Request::new(principal, action_uid, resource, context, None)
                    .map_err(|e| format!("request: {e}"))?;
                return Ok((req, entities));
            }
        }
        let resource_side = self.resource_side(request, &resource, &seeds)?;
        let mut fresh: Vec<Arc<ast::Entity>> = Vec::with_capacity(resource_side.len());
        let mut entities = None;
        for e in resource_side {
            match side.entities.entity(e.uid()) {
                Dereference::Data(had)
                    if e.uid().entity_type().is_action()
                        || (self.data.is_data(had) && !self.data.is_data(&e)) =>
                {
                    // The resource side would shadow an action entity, or the caller's side holds the data's own
                    // form of the resource (or a parent) that the resource side built with more: rare enough to
                    // build everything afresh.
                    entities = Some(
                        self.all_entities(request, &unique, &principal, &resource, &seeds, idx)?,
                    );
                    break;
                }
                // The caller's side comes first and wins, as in a full build.
                Dereference::Data(_) => {}
                _ => fresh.push(e),
            }
        }
        let entities = match entities {
            Some(e) => e,
            None if fresh.is_empty() => side.entities.clone(),
            None => side
                .entities
                .clone()
                .add_entities(
                    fresh,
                    None::<&NoEntitiesSchema>,
                    TCComputation::AssumeAlreadyComputed,
                    Extensions::all_available(),
                )
                .map_err(|e| format!("entities: {e}"))?,
        };
        let req = Request::new(principal, action_uid, resource, context, None)
            .map_err(|e| format!("request: {e}"))?;
        let entities = Rc::new(Entities::from(entities));
        if reusable {
            side.remember(&request.resource, &entities);
        }
        Ok((req, entities))
    }

    /// The principal with its groups and grants as parents and their roles as further ancestors, the grants and roles,
    /// in that order (repeats not removed), with the grants' uids and whether any is break-glass.
    fn principal_and_grants(
        &self,
        request: &AuthzRequest,
        grants: &[&Arc<Grant>],
        principal: &EntityUid,
    ) -> Result<CallerEntities, String> {
        let built = grant_entities(
            grants,
            &GrantTypes {
                grant: self.types.grant.as_ref(),
                role: self.types.role.as_ref(),
            },
        );
        let mut entities: Vec<Arc<ast::Entity>> = Vec::with_capacity(1 + 2 * built.len());
        let mut grant_uids: Vec<ast::EntityUID> = Vec::with_capacity(built.len());
        let mut role_uids: HashSet<ast::EntityUID> = HashSet::with_capacity(built.len());
        let mut break_glass = false;
        for (g, b) in grants.iter().zip(&built) {
            grant_uids.push(b.grant.uid().clone());
            role_uids.insert(b.role.uid().clone());
            break_glass |= g.break_glass;
            entities.push(Arc::clone(&b.grant));
        }
        entities.extend(built.iter().map(|b| Arc::clone(&b.role)));
        let mut parents: HashSet<ast::EntityUID> =
            HashSet::with_capacity(request.principal.groups.len() + grant_uids.len());
        let mut indirect = role_uids;
        for g in self.group_uids(request)? {
            // A group the data knows brings its own ancestors (a group in a group, a team in an organization).
            if let Some(d) = self.data.get(&g) {
                indirect.extend(d.ancestors().cloned());
            }
            parents.insert(g);
        }
        parents.extend(grant_uids.iter().cloned());
        let principal: ast::EntityUID = principal.clone().into();
        // What the data says about the caller: its attributes, parents and their ancestors.
        let (mut attrs, tags) = match self.data.get(&principal) {
            Some(d) => {
                parents.extend(d.parents().cloned());
                indirect.extend(d.indirect_ancestors().cloned());
                let attrs: BTreeMap<SmolStr, PartialValue> =
                    d.attrs().map(|(k, v)| (k.clone(), v.clone())).collect();
                let tags: Vec<(SmolStr, PartialValue)> =
                    d.tags().map(|(k, v)| (k.clone(), v.clone())).collect();
                (attrs, tags)
            }
            None => (BTreeMap::new(), Vec::new()),
        };
        // What the token says (claims mapped per issuer), typed by the schema; it wins over the data on a clash.
        if !request.principal.attrs.is_empty() {
            let shape = self
                .entity_attrs
                .by_type
                .get(&request.principal.entity.ty)
                .unwrap_or(&Shape::Any);
            for (k, v) in &request.principal.attrs {
                if let Some(v) = to_value(&self.type_cache, v, shape.attr(k))
                    .map_err(|e| format!("principal.{k}{e}"))?
                {
                    attrs.insert(SmolStr::from(k.as_str()), PartialValue::from(v));
                }
            }
        }
        indirect.retain(|u| !parents.contains(u));
        entities.push(Arc::new(ast::Entity::new_with_attr_partial_value(
            principal, attrs, indirect, parents, tags,
        )));
        Ok((entities, grant_uids, break_glass))
    }

    /// The caller's groups (from its token) as uids of its group type (`Group` unless its issuer says otherwise).
    fn group_uids<'a>(
        &'a self,
        request: &'a AuthzRequest,
    ) -> Result<impl Iterator<Item = ast::EntityUID> + 'a, String> {
        let ty: ast::EntityType = match &request.principal.group_type {
            None => AsRef::<ast::EntityType>::as_ref(&self.types.group).clone(),
            Some(t) => AsRef::<ast::EntityType>::as_ref(&type_name(&self.type_cache, t)?).clone(),
        };
        Ok(request.principal.groups.iter().map(move |g| {
            ast::EntityUID::from_components(ty.clone(), ast::Eid::new(g.as_str()), None)
        }))
    }

    /// The caller's side of a request's entities: principal, grants, roles and the action entities.
    fn caller_side(
        &self,
        request: &AuthzRequest,
        grants: &[&Arc<Grant>],
        principal: &EntityUid,
        idx: &ActionIndex,
    ) -> Result<CallerSide, String> {
        let (mut entities, grant_uids, break_glass) =
            self.principal_and_grants(request, grants, principal)?;
        entities.extend(idx.entities.iter().cloned());
        self.caller_data(request, principal, &mut entities)?;
        let entities = CoreEntities::new()
            .add_entities(
                first_by_uid(entities),
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| format!("entities: {e}"))?;
        Ok(CallerSide {
            entities,
            grants: Value::set(grant_uids.into_iter().map(Value::from), None),
            break_glass,
            last: std::cell::RefCell::new(None),
            claims: std::cell::RefCell::new(None),
        })
    }

    /// The data entities the caller reaches: the principal's and its groups' (with all they reference), and those
    /// the policies name; appended after the built ones, which win.
    fn caller_data(
        &self,
        request: &AuthzRequest,
        principal: &EntityUid,
        entities: &mut Vec<Arc<ast::Entity>>,
    ) -> Result<(), String> {
        if self.data.is_empty() {
            return Ok(());
        }
        let principal: ast::EntityUID = principal.clone().into();
        let mut seeds: Vec<ast::EntityUID> = self.group_uids(request)?.collect();
        seeds.push(principal.clone());
        if !request.principal.attrs.is_empty() {
            // Entities the token's attributes name (a manager, a home team) and what they reach.
            if let Some(p) = entities.iter().find(|e| e.uid() == &principal) {
                for (_, v) in p.attrs() {
                    if let PartialValue::Value(v) = v {
                        uids_in(v, &mut |u| seeds.push(u.clone()));
                    }
                }
            }
        }
        self.data.reach(seeds.iter(), true, entities);
        Ok(())
    }

    /// The resource with its attributes and parents, then each parent with those above it, then the data entities
    /// they and `seeds` (entity references in the context) reach. What the data holds for the resource or a parent
    /// is merged in: its attributes (the request's own win on a clash), its parents and their ancestors.
    fn resource_side(
        &self,
        request: &AuthzRequest,
        resource: &EntityUid,
        seeds: &[ast::EntityUID],
    ) -> Result<Vec<Arc<ast::Entity>>, String> {
        let cache = &self.type_cache;
        let resource_parents: Vec<ast::EntityUID> = request
            .resource
            .parents
            .iter()
            .map(|p| uid(cache, p).map(ast::EntityUID::from))
            .collect::<Result<_, _>>()?;
        let declared = self
            .entity_attrs
            .by_type
            .get(&request.resource.entity.ty)
            .unwrap_or(&Shape::Any);
        let resource: ast::EntityUID = resource.clone().into();
        let data = &self.data;
        let unchanged = data.get(&resource).is_some_and(|d| {
            request.resource.attrs.is_empty()
                && resource_parents.iter().enumerate().all(|(i, p)| {
                    let above = resource_parents.get(i + 1..).unwrap_or(&[]);
                    d.is_descendant_of(p)
                        && data
                            .get(p)
                            .is_some_and(|dp| above.iter().all(|a| dp.is_descendant_of(a)))
                })
        });
        if unchanged {
            // The request adds nothing to what the data says (no attributes; its parents, each with those above it,
            // are the data's already): the data's own entities serve, unbuilt and unmerged, and the caller's side
            // (which may hold them, e.g. as policy literals) needs no rebuild.
            let mut entities = Vec::new();
            data.reach(
                std::iter::once(&resource)
                    .chain(resource_parents.iter())
                    .chain(seeds.iter()),
                false,
                &mut entities,
            );
            return Ok(first_by_uid(entities));
        }
        let mut attrs: BTreeMap<SmolStr, PartialValue> = BTreeMap::new();
        let mut tags: Vec<(SmolStr, PartialValue)> = Vec::new();
        let mut parents: HashSet<ast::EntityUID> = resource_parents.iter().cloned().collect();
        let mut indirect: HashSet<ast::EntityUID> = HashSet::new();
        if let Some(d) = data.get(&resource) {
            attrs.extend(d.attrs().map(|(k, v)| (k.clone(), v.clone())));
            tags.extend(d.tags().map(|(k, v)| (k.clone(), v.clone())));
            parents.extend(d.parents().cloned());
            indirect.extend(d.indirect_ancestors().cloned());
        }
        let mut more_seeds: Vec<ast::EntityUID> = Vec::new();
        for (k, v) in &request.resource.attrs {
            if let Some(v) =
                to_value(cache, v, declared.attr(k)).map_err(|e| format!("resource.{k}{e}"))?
            {
                if !data.is_empty() {
                    uids_in(&v, &mut |u| more_seeds.push(u.clone()));
                }
                attrs.insert(SmolStr::from(k.as_str()), PartialValue::from(v));
            }
        }
        for p in &resource_parents {
            if let Some(d) = data.get(p) {
                indirect.extend(d.ancestors().cloned());
            }
        }
        indirect.retain(|u| !parents.contains(u));
        let mut entities = Vec::with_capacity(1 + resource_parents.len());
        entities.push(Arc::new(ast::Entity::new_with_attr_partial_value(
            resource.clone(),
            attrs,
            indirect,
            parents,
            tags,
        )));
        for (i, p) in resource_parents.iter().enumerate() {
            let above_list = resource_parents.get(i + 1..).unwrap_or(&[]);
            let mut above: HashSet<ast::EntityUID> = above_list.iter().cloned().collect();
            let mut indirect: HashSet<ast::EntityUID> = HashSet::new();
            let mut p_attrs: Vec<(SmolStr, PartialValue)> = Vec::new();
            let mut p_tags: Vec<(SmolStr, PartialValue)> = Vec::new();
            if let Some(d) = data.get(p) {
                p_attrs.extend(d.attrs().map(|(k, v)| (k.clone(), v.clone())));
                p_tags.extend(d.tags().map(|(k, v)| (k.clone(), v.clone())));
                above.extend(d.parents().cloned());
                indirect.extend(d.indirect_ancestors().cloned());
            }
            for a in above_list {
                if let Some(d) = data.get(a) {
                    indirect.extend(d.ancestors().cloned());
                }
            }
            indirect.retain(|u| !above.contains(u));
            entities.push(Arc::new(ast::Entity::new_with_attr_partial_value(
                p.clone(),
                p_attrs,
                indirect,
                above,
                p_tags,
            )));
        }
        if !data.is_empty() {
            data.reach(
                std::iter::once(&resource)
                    .chain(resource_parents.iter())
                    .chain(more_seeds.iter())
                    .chain(seeds.iter()),
                false,
                &mut entities,
            );
        }
        Ok(first_by_uid(entities))
    }

    /// Every entity of a request, built without the cache: the principal with its grants and roles, the resource
    /// side, the data the caller reaches, the action entities, in that order, the first of repeated uids kept.
    fn all_entities(
        &self,
        request: &AuthzRequest,
        grants: &[&Arc<Grant>],
        principal: &EntityUid,
        resource: &EntityUid,
        seeds: &[ast::EntityUID],
        idx: &ActionIndex,
    ) -> Result<CoreEntities, String> {
        let (mut entities, _, _) = self.principal_and_grants(request, grants, principal)?;
        entities.extend(self.resource_side(request, resource, seeds)?);
        self.caller_data(request, principal, &mut entities)?;
        entities.extend(idx.entities.iter().cloned());
        CoreEntities::new()
            .add_entities(
                first_by_uid(entities),
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| format!("entities: {e}"))
    }

    /// The request's context with the caller side's `grants` and `break_glass`; `claims` converted once per side
    /// while they stay the same (a caller's token).
    fn context(
        &self,
        request: &AuthzRequest,
        side: &CallerSide,
    ) -> Result<(Context, Vec<ast::EntityUID>), String> {
        let c = &request.context;
        let cache = &self.type_cache;
        let (hour, weekday) = hour_and_weekday(c.time);
        let time = Value::record(
            [
                ("epoch", Value::from(c.time)),
                ("hour", Value::from(hour)),
                ("weekday", Value::from(weekday)),
            ],
            None,
        );
        let text = |v: &Option<String>| Value::from(v.as_deref().unwrap_or(""));
        let declared = self
            .entity_attrs
            .by_action
            .get(&request.action)
            .unwrap_or(&Shape::Any);
        let claims = match side.claims_for(&c.claims) {
            Some(v) => v,
            None => {
                let v = record(cache, &c.claims, declared.attr("claims"))
                    .map_err(|e| format!("context.claims{e}"))?;
                side.remember_claims(&c.claims, &v);
                v
            }
        };
        let ip = ip_value(c.source_ip.as_deref().unwrap_or("0.0.0.0"))?;
        let mut map: BTreeMap<SmolStr, Value> = BTreeMap::from([
            ("time".into(), time),
            ("source_ip".into(), ip),
            ("method".into(), text(&c.method)),
            ("path".into(), text(&c.path)),
            ("host".into(), text(&c.host)),
            ("query".into(), text(&c.query)),
            ("claims".into(), claims),
            ("grants".into(), side.grants.clone()),
            ("break_glass".into(), Value::from(side.break_glass)),
        ]);
        let mut seeds: Vec<ast::EntityUID> = Vec::new();
        for (k, v) in &c.attrs {
            if BUILTIN_CONTEXT.contains(&k.as_str()) {
                continue;
            }
            if let Some(e) =
                to_value(cache, v, declared.attr(k)).map_err(|e| format!("context.{k}{e}"))?
            {
                if !self.data.is_empty() {
                    uids_in(&e, &mut |u| seeds.push(u.clone()));
                }
                map.insert(k.as_str().into(), e);
            }
        }
        Ok((Context::from(ast::Context::Value(Arc::new(map))), seeds))
    }
}

/// `grants` without later repeats of a grant id.
fn first_by_id(grants: &[Arc<Grant>]) -> Vec<&Arc<Grant>> {
    let mut out: Vec<&Arc<Grant>> = Vec::with_capacity(grants.len());
    if grants.len() <= SMALL {
        for g in grants {
            if !out.iter().any(|o| o.id == g.id) {
                out.push(g);
            }
        }
    } else {
        let mut seen: HashSet<&str> = HashSet::with_capacity(grants.len());
        out.extend(grants.iter().filter(|g| seen.insert(g.id.as_str())));
    }
    out
}

/// `entities` without later repeats of a uid (the first one given wins, as for grants).
fn first_by_uid(entities: Vec<Arc<ast::Entity>>) -> Vec<Arc<ast::Entity>> {
    let mut out: Vec<Arc<ast::Entity>> = Vec::with_capacity(entities.len());
    if entities.len() <= SMALL {
        for e in entities {
            if !out.iter().any(|o| o.uid() == e.uid()) {
                out.push(e);
            }
        }
    } else {
        let mut seen: HashSet<ast::EntityUID> = HashSet::with_capacity(entities.len());
        out.extend(
            entities
                .into_iter()
                .filter(|e| seen.insert(e.uid().clone())),
        );
    }
    out
}

fn parse_type(name: &str, schema: &Path) -> Result<EntityTypeName, Diagnostics> {
    type_name(&HashMap::new(), name).map_err(|e| Diagnostics::one(Diagnostic::file(schema, e)))
}
