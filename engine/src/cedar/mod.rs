//! The Cedar backend: loads a schema and policy files into a per-action policy index, and decides requests by
//! building the principal, its grants, roles, the resource and the action as Cedar entities. No grant selection here.
//!
//! How a request becomes Cedar (the schema in `schemas/jitgate.cedarschema` documents the same from the policy side):
//! - principal: its `EntityRef`, parents `Group::"<g>"` for each group and `Grant::"<id>"` for each materialized grant;
//! - each grant: `Grant::"<id>"` with its attributes, parent `Role::"<role>"`;
//! - resource: its attributes from JSON (strings, bools, integers, arrays as sets, objects as records; floats and
//!   nulls dropped), parents its ancestors. A string attribute becomes an entity reference when the schema declares
//!   that attribute of the resource's type entity-typed and the text parses as `Type::"id"` (e.g. an access request's
//!   `requester`); undeclared or `String` attributes keep their text;
//! - action: `Action::"<action>"` with its action groups from the schema;
//! - context: `time` {epoch, hour, weekday}, `source_ip` (ipaddr, 0.0.0.0 when unknown), `method`, `path`, `host`,
//!   `query` ("" when absent), `claims`, `grants` (set of Grant refs), `break_glass`, then each `context.attrs` entry
//!   as a further top-level attribute (the built-in names win on a clash; same entity-ref rule, using the action's
//!   declared context type).
//!
//! Decision: `forbid` policies annotated `@hold("why")` live in a separate set. The main set decides; an allow is
//! turned into `Hold` when a hold policy of the action is satisfied. Any evaluation error in either set is a deny.

mod cache;
mod convert;
mod load;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, Response, Schema,
};
use cedar_policy_core::ast::{self, PartialValue, Value};
use cedar_policy_core::entities::{
    Dereference, Entities as CoreEntities, NoEntitiesSchema, TCComputation,
};
use cedar_policy_core::extensions::Extensions;
use smol_str::SmolStr;
use std::collections::BTreeMap;

use self::cache::{CallerSide, GrantTypes, caller_side, grant_entities};
use self::convert::{EntityAttrs, hour_and_weekday, ip_value, json_to_value, type_name, uid};
use self::load::{
    ActionIndex, Loaded, any_action, applies_to, fail, load_policies, load_schema, roles_of,
    set_of, unattributed_roles, validate,
};
use crate::backend::PolicyBackend;
use crate::decision::{Effect, EngineKind, Evaluation};
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

/// The next [`CedarBackend`] id.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Up to this many items, repeats are found by comparing each with those kept (cheaper than hashing).
const SMALL: usize = 32;

/// Entity type names the engine uses on every request, parsed once.
#[derive(Debug, Clone)]
struct Types {
    group: EntityTypeName,
    grant: EntityTypeName,
    role: EntityTypeName,
    action: EntityTypeName,
}

/// A validated Cedar policy set with its schema, indexed by action.
pub struct CedarBackend {
    /// Unique among the backends of this process, so per-thread caches never mix two bundles' entities.
    id: u64,
    schema: Schema,
    ids: Vec<String>,
    /// Action id (e.g. `deleteDatabase`) -> the policies that can apply to it.
    by_action: HashMap<String, ActionIndex>,
    /// For actions the schema does not declare: only the policies whose action scope is unconstrained.
    any_action: ActionIndex,
    /// Policy id -> roles it rests on (permits only).
    roles: HashMap<String, Vec<String>>,
    types: Types,
    /// Every entity type of the schema by name, so requests do not re-parse type names.
    type_cache: HashMap<String, EntityTypeName>,
    entity_attrs: EntityAttrs,
    authorizer: Authorizer,
}

impl std::fmt::Debug for CedarBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CedarBackend")
            .field("policies", &self.ids.len())
            .field("actions", &self.by_action.len())
            .finish()
    }
}

impl CedarBackend {
    /// Loads and validates `schema` and `policy_files` (paths are absolute or relative to the working directory).
    ///
    /// Every problem is reported (parse errors in each file, missing or duplicate `@id`s, `@hold` on a permit, strict
    /// schema validation errors, entity types the engine needs that the schema lacks), each with file, line, column.
    pub fn load(_dir: &Path, schema: &Path, policy_files: &[PathBuf]) -> Result<Self, Diagnostics> {
        let mut errors = Vec::new();
        let schema_parts = load_schema(schema, &mut errors);

        let mut sources: HashMap<PathBuf, String> = HashMap::new();
        let mut loaded: Vec<Loaded> = Vec::new();
        for file in policy_files {
            if let Some((src, policies)) = load_policies(file, &mut errors) {
                sources.insert(file.clone(), src);
                loaded.extend(policies);
            }
        }
        let mut origin: HashMap<String, (PathBuf, usize, usize)> = HashMap::new();
        let mut unique: Vec<Loaded> = Vec::new();
        for l in loaded {
            let id = l.policy.id().to_string();
            if let Some((file, line, col)) = origin.get(&id) {
                errors.push(Diagnostic::at(
                    &l.file,
                    l.line,
                    l.column,
                    format!(
                        "duplicate policy id `{id}` (first defined at {}:{line}:{col})",
                        file.display()
                    ),
                ));
                continue;
            }
            origin.insert(id, (l.file.clone(), l.line, l.column));
            unique.push(l);
        }
        let all = match set_of(unique.iter().map(|l| &l.policy)) {
            Ok(s) => s,
            Err(e) => {
                errors.push(Diagnostic::file(
                    schema,
                    format!("cannot build the policy set: {e}"),
                ));
                return Err(Diagnostics(errors));
            }
        };
        let Some((schema_obj, entity_attrs)) = schema_parts else {
            return Err(Diagnostics(errors));
        };
        validate(&schema_obj, &all, &sources, &origin, &mut errors);
        for l in &unique {
            let missing = unattributed_roles(&l.policy);
            if let Some(first) = missing.first() {
                errors.push(Diagnostic::at(
                    &l.file,
                    l.line,
                    l.column,
                    format!(
                        "policy `{}` relies on role {} outside its principal scope, so the grants it rests on would never \
                         be named as used (a use-limited grant would never be spent): write `principal in \
                         Role::\"{first}\"` in its scope, or annotate it `@role(\"{}\")`",
                        l.policy.id(),
                        missing.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "),
                        missing.join(",")
                    ),
                ));
            }
        }
        fail(errors)?;

        let types = Types {
            group: parse_type("Group", schema)?,
            grant: parse_type("Grant", schema)?,
            role: parse_type("Role", schema)?,
            action: parse_type("Action", schema)?,
        };
        let type_cache: HashMap<String, EntityTypeName> = schema_obj
            .entity_types()
            .map(|t| (t.to_string(), t.clone()))
            .collect();

        let action_entities = schema_obj.action_entities().map_err(|e| {
            Diagnostics::one(Diagnostic::file(
                schema,
                format!("cannot build the action entities: {e}"),
            ))
        })?;
        let entity_of: HashMap<EntityUid, &Entity> =
            action_entities.iter().map(|e| (e.uid(), e)).collect();
        let index_err = |e: String| {
            Diagnostics::one(Diagnostic::file(
                schema,
                format!("cannot index policies: {e}"),
            ))
        };
        let mut by_action = HashMap::new();
        for action in schema_obj.actions() {
            let ancestors: HashSet<EntityUid> = action_entities
                .ancestors(action)
                .map(|a| a.cloned().collect())
                .unwrap_or_default();
            let applicable = || {
                unique
                    .iter()
                    .filter(|l| applies_to(&l.policy, action, &ancestors))
            };
            let main =
                set_of(applicable().filter(|l| !l.hold).map(|l| &l.policy)).map_err(index_err)?;
            let holds =
                set_of(applicable().filter(|l| l.hold).map(|l| &l.policy)).map_err(index_err)?;
            let entities = std::iter::once(action)
                .chain(ancestors.iter())
                .filter_map(|u| {
                    entity_of
                        .get(u)
                        .map(|e| Arc::new(AsRef::<ast::Entity>::as_ref(*e).clone()))
                })
                .collect();
            let key = action.id().unescaped().to_string();
            let any_hold = holds.policies().next().is_some();
            let holds = any_hold.then_some(holds);
            by_action.entry(key).or_insert(ActionIndex {
                uid: Some(action.clone()),
                main,
                holds,
                entities,
            });
        }
        let any_main = set_of(
            unique
                .iter()
                .filter(|l| !l.hold && any_action(&l.policy))
                .map(|l| &l.policy),
        )
        .map_err(index_err)?;
        let any_holds = set_of(
            unique
                .iter()
                .filter(|l| l.hold && any_action(&l.policy))
                .map(|l| &l.policy),
        )
        .map_err(index_err)?;
        let any_hold = any_holds.policies().next().is_some();
        let any_action = ActionIndex {
            uid: None,
            main: any_main,
            holds: any_hold.then_some(any_holds),
            entities: Vec::new(),
        };
        let roles = unique
            .iter()
            .map(|l| (l.policy.id().to_string(), roles_of(&l.policy)))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        let ids = unique.iter().map(|l| l.policy.id().to_string()).collect();
        Ok(CedarBackend {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            schema: schema_obj,
            ids,
            by_action,
            any_action,
            roles,
            types,
            type_cache,
            entity_attrs,
            authorizer: Authorizer::new(),
        })
    }

    /// The validated schema (for tooling such as `jitgate check`).
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Ids of the policies that can apply to `action` (main and hold sets), sorted; for tests and coverage.
    pub fn policies_for_action(&self, action: &str) -> Vec<String> {
        let idx = self.by_action.get(action).unwrap_or(&self.any_action);
        let mut ids: Vec<String> = idx
            .main
            .policies()
            .chain(idx.holds.iter().flat_map(|h| h.policies()))
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// Builds the request and its entities straight from values: no expression evaluation and no transitive-closure
    /// computation (the engine knows the closure: principal -> groups, grants -> roles; resource -> its ancestors;
    /// action entities come from the schema already closed).
    ///
    /// The caller's side (principal, grants, roles, action entities) is taken from this thread's cache when the same
    /// caller, groups, grants (the same `Arc`s) and action were seen last time; the resource side is built each time.
    fn build(
        &self,
        input: &DecisionInput<'_>,
        idx: &ActionIndex,
    ) -> Result<(Request, Entities), String> {
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
        let resource_side = self.resource_side(request, &resource)?;
        let mut fresh: Vec<Arc<ast::Entity>> = Vec::with_capacity(resource_side.len());
        let mut entities = None;
        for e in resource_side {
            match side.entities.entity(e.uid()) {
                Dereference::Data(_) if e.uid().entity_type().is_action() => {
                    // The resource side would shadow an action entity: rare enough to build everything afresh.
                    entities =
                        Some(self.all_entities(request, &unique, &principal, &resource, idx)?);
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
        let context = self.context(request, side.grants.clone(), side.break_glass)?;
        let req = Request::new(principal, action_uid, resource, context, None)
            .map_err(|e| format!("request: {e}"))?;
        Ok((req, Entities::from(entities)))
    }

    /// The principal with its groups and grants as parents and their roles as further ancestors, the grants and roles,
    /// in that order (repeats not removed), with the grants' uids and whether any is break-glass.
    fn principal_and_grants(
        &self,
        request: &AuthzRequest,
        grants: &[&Arc<Grant>],
        principal: &EntityUid,
    ) -> (Vec<Arc<ast::Entity>>, Vec<ast::EntityUID>, bool) {
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
        for g in &request.principal.groups {
            parents.insert(ast::EntityUID::from_components(
                AsRef::<ast::EntityType>::as_ref(&self.types.group).clone(),
                ast::Eid::new(g.as_str()),
                None,
            ));
        }
        parents.extend(grant_uids.iter().cloned());
        entities.push(Arc::new(ast::Entity::new_with_attr_partial_value(
            principal.clone().into(),
            [],
            role_uids,
            parents,
            [],
        )));
        (entities, grant_uids, break_glass)
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
            self.principal_and_grants(request, grants, principal);
        entities.extend(idx.entities.iter().cloned());
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
        })
    }

    /// The resource with its attributes and parents, then each parent with those above it.
    fn resource_side(
        &self,
        request: &AuthzRequest,
        resource: &EntityUid,
    ) -> Result<Vec<Arc<ast::Entity>>, String> {
        let cache = &self.type_cache;
        let resource_parents: Vec<ast::EntityUID> = request
            .resource
            .parents
            .iter()
            .map(|p| uid(cache, p).map(ast::EntityUID::from))
            .collect::<Result<_, _>>()?;
        let declared = self.entity_attrs.by_type.get(&request.resource.entity.ty);
        let attrs = request.resource.attrs.iter().filter_map(|(k, v)| {
            json_to_value(cache, v, declared.is_some_and(|d| d.contains(k)))
                .map(|v| (SmolStr::from(k.as_str()), PartialValue::from(v)))
        });
        let mut entities = Vec::with_capacity(1 + resource_parents.len());
        entities.push(Arc::new(ast::Entity::new_with_attr_partial_value(
            resource.clone().into(),
            attrs,
            HashSet::new(),
            resource_parents.iter().cloned().collect(),
            [],
        )));
        for (i, p) in resource_parents.iter().enumerate() {
            let above = resource_parents
                .get(i + 1..)
                .unwrap_or(&[])
                .iter()
                .cloned()
                .collect();
            entities.push(Arc::new(ast::Entity::new_with_attr_partial_value(
                p.clone(),
                [],
                HashSet::new(),
                above,
                [],
            )));
        }
        Ok(first_by_uid(entities))
    }

    /// Every entity of a request, built without the cache: caller's side, resource side, action entities, in that
    /// order, the first of repeated uids kept.
    fn all_entities(
        &self,
        request: &AuthzRequest,
        grants: &[&Arc<Grant>],
        principal: &EntityUid,
        resource: &EntityUid,
        idx: &ActionIndex,
    ) -> Result<CoreEntities, String> {
        let (mut entities, _, _) = self.principal_and_grants(request, grants, principal);
        entities.extend(self.resource_side(request, resource)?);
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
    fn context(
        &self,
        request: &AuthzRequest,
        grants: Value,
        break_glass: bool,
    ) -> Result<Context, String> {
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
        let claims = Value::record(
            c.claims
                .iter()
                .filter_map(|(k, v)| json_to_value(cache, v, false).map(|e| (k.as_str(), e))),
            None,
        );
        let ip = ip_value(c.source_ip.as_deref().unwrap_or("0.0.0.0"))?;
        let mut map: BTreeMap<SmolStr, Value> = BTreeMap::from([
            ("time".into(), time),
            ("source_ip".into(), ip),
            ("method".into(), text(&c.method)),
            ("path".into(), text(&c.path)),
            ("host".into(), text(&c.host)),
            ("query".into(), text(&c.query)),
            ("claims".into(), claims),
            ("grants".into(), grants),
            ("break_glass".into(), Value::from(break_glass)),
        ]);
        let declared = self.entity_attrs.by_action.get(&request.action);
        for (k, v) in &c.attrs {
            if BUILTIN_CONTEXT.contains(&k.as_str()) {
                continue;
            }
            if let Some(e) = json_to_value(cache, v, declared.is_some_and(|d| d.contains(k))) {
                map.insert(k.as_str().into(), e);
            }
        }
        Ok(Context::from(ast::Context::Value(Arc::new(map))))
    }

    fn roles_for<'a>(&self, permits: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for id in permits {
            for r in self.roles.get(id).into_iter().flatten() {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
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

fn errors_of(r: &Response) -> Vec<String> {
    r.diagnostics().errors().map(|e| e.to_string()).collect()
}

fn reasons_of(r: &Response) -> Vec<String> {
    let mut ids: Vec<String> = r.diagnostics().reason().map(|p| p.to_string()).collect();
    ids.sort();
    ids
}

fn deny(errors: Vec<String>) -> Evaluation {
    Evaluation {
        effect: Effect::Deny,
        policies: Vec::new(),
        roles: Vec::new(),
        errors,
    }
}

impl PolicyBackend for CedarBackend {
    fn engine(&self) -> EngineKind {
        EngineKind::Cedar
    }

    fn evaluate(&self, input: &DecisionInput<'_>) -> Evaluation {
        let idx = self
            .by_action
            .get(input.action())
            .unwrap_or(&self.any_action);
        let (req, entities) = match self.build(input, idx) {
            Ok(x) => x,
            Err(e) => return deny(vec![e]),
        };
        let main = self.authorizer.is_authorized(&req, &idx.main, &entities);
        let errors = errors_of(&main);
        if !errors.is_empty() {
            return deny(errors);
        }
        let reasons = reasons_of(&main);
        if main.decision() == CedarDecision::Deny {
            // Without a satisfied permit Cedar gives no reason; with a satisfied forbid the reasons are the forbids.
            return Evaluation {
                effect: Effect::Deny,
                policies: reasons,
                roles: Vec::new(),
                errors: Vec::new(),
            };
        }
        let roles = self.roles_for(reasons.iter().map(String::as_str));
        if let Some(holds) = &idx.holds {
            let held = self.authorizer.is_authorized(&req, holds, &entities);
            let errors = errors_of(&held);
            if !errors.is_empty() {
                return deny(errors);
            }
            let fired = reasons_of(&held);
            if !fired.is_empty() {
                return Evaluation {
                    effect: Effect::Hold,
                    policies: fired,
                    roles,
                    errors: Vec::new(),
                };
            }
        }
        Evaluation {
            effect: Effect::Allow,
            policies: reasons,
            roles,
            errors: Vec::new(),
        }
    }

    fn policy_ids(&self) -> Vec<String> {
        self.ids.clone()
    }

    fn check_entity_type(&self, ty: &str) -> Result<(), String> {
        if self.type_cache.contains_key(ty) {
            Ok(())
        } else {
            let mut known: Vec<&str> = self.type_cache.keys().map(String::as_str).collect();
            known.sort_unstable();
            Err(format!(
                "entity type `{ty}` is not declared in the schema (it declares: {})",
                known.join(", ")
            ))
        }
    }

    fn check_route(
        &self,
        action: &str,
        resource_type: &str,
        parent_types: &[&str],
    ) -> Result<(), String> {
        // The action as a request finds it: by its id, in whichever namespace the schema declares it.
        let uid = self
            .by_action
            .get(action)
            .and_then(|i| i.uid.clone())
            .unwrap_or_else(|| {
                EntityUid::from_type_name_and_id(self.types.action.clone(), EntityId::new(action))
            });
        let Some(resources) = self.schema.resources_for_action(&uid) else {
            return Err(format!(
                "action `{action}` is not declared in the schema (declare `action {action} appliesTo {{ ... }};`)"
            ));
        };
        let resources: Vec<String> = resources.map(|t| t.to_string()).collect();
        if resources.is_empty() && self.schema.action_groups().any(|g| g == &uid) {
            // A group has no `appliesTo`: a request for it would fail the schema and be denied, every time.
            return Err(format!(
                "action `{action}` is an action group, and no request can be for a group (map the route to one of                  its member actions; policies about `{action}` still apply to them)"
            ));
        }
        let Some(ty) = self.type_cache.get(resource_type) else {
            return Err(format!(
                "resource type `{resource_type}` is not declared in the schema"
            ));
        };
        if !resources.iter().any(|r| r == resource_type) {
            return Err(format!(
                "action `{action}` does not apply to resource type `{resource_type}` in the schema (it applies to: {})",
                if resources.is_empty() {
                    "nothing".to_string()
                } else {
                    resources.join(", ")
                }
            ));
        }
        let ancestors: Vec<String> = self
            .schema
            .ancestors(ty)
            .map(|a| a.map(|t| t.to_string()).collect())
            .unwrap_or_default();
        for parent in parent_types {
            if !self.type_cache.contains_key(*parent) {
                return Err(format!(
                    "parent type `{parent}` is not declared in the schema"
                ));
            }
            if !ancestors.iter().any(|a| a == parent) {
                return Err(format!(
                    "the schema does not let `{resource_type}` be in `{parent}`, so policies about `{parent}` would \
                     be validated as never applying to this route's resource (declare `entity {resource_type} in \
                     [{parent}]`)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::entity::EntityRef;
    use crate::grant::GrantStatus;
    use crate::request::{Context as ReqContext, Principal, Resource};

    const SCHEMA: &str = r#"entity Group;
entity Role;
entity Grant in [Role];
entity User in [Group, Grant];
entity Workload in [Group, Grant];
entity Anonymous;
entity Doc = { owner: User, level: Long };
type Ctx = { time: { epoch: Long, hour: Long, weekday: Long }, break_glass: Bool };
action writes;
action read appliesTo { principal: [User], resource: [Doc], context: Ctx };
action write, erase in [writes] appliesTo { principal: [User], resource: [Doc], context: Ctx };
"#;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(schema: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("s.cedarschema"), schema).unwrap();
            Fixture { dir }
        }

        fn load(&self, files: &[(&str, &str)]) -> Result<CedarBackend, Diagnostics> {
            let paths: Vec<PathBuf> = files
                .iter()
                .map(|(name, src)| {
                    let p = self.dir.path().join(name);
                    std::fs::write(&p, src).unwrap();
                    p
                })
                .collect();
            CedarBackend::load(
                self.dir.path(),
                &self.dir.path().join("s.cedarschema"),
                &paths,
            )
        }
    }

    fn load(policies: &str) -> CedarBackend {
        Fixture::new(SCHEMA)
            .load(&[("p.cedar", policies)])
            .unwrap_or_else(|d| panic!("{d}"))
    }

    fn request(action: &str, groups: &[&str], time: i64) -> AuthzRequest {
        let mut attrs = serde_json::Map::new();
        attrs.insert("owner".into(), r#"User::"alice""#.into());
        attrs.insert("level".into(), 3.into());
        AuthzRequest {
            principal: Principal {
                entity: EntityRef::new("User", "alice"),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
            action: action.into(),
            resource: Resource {
                entity: EntityRef::new("Doc", "d1"),
                parents: vec![],
                attrs,
            },
            context: ReqContext::at(time),
            digest: None,
        }
    }

    fn grant(id: &str, role: &str) -> Arc<Grant> {
        Arc::new(Grant {
            id: id.into(),
            principal: EntityRef::new("User", "alice"),
            role: role.into(),
            scope: EntityRef::new("Doc", "d1"),
            starts_at: 0,
            expires_at: i64::MAX,
            max_uses: None,
            uses: 0,
            status: GrantStatus::Active,
            approvers: vec![],
            reason: String::new(),
            break_glass: false,
            request_digest: None,
            request_id: None,
        })
    }

    #[test]
    fn every_policy_needs_an_id() {
        let err = Fixture::new(SCHEMA)
            .load(&[("p.cedar", "@id(\"a\")\npermit (principal, action, resource);\n\n// no id\npermit (principal, action, resource);\n")])
            .unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let d = &err.0[0];
        assert!(d.file.ends_with("p.cedar"));
        assert_eq!((d.line, d.column), (Some(5), Some(1)), "{d}");
        assert!(d.message.contains("@id"), "{d}");
    }

    /// A permit that relies on a role in its condition must name it (scope or `@role`), or its grants are never
    /// spent nor recorded: the loader refuses it at its line. Forbids and annotated permits are fine.
    #[test]
    fn a_permit_relying_on_a_role_must_name_it() {
        let err = Fixture::new(SCHEMA)
            .load(&[(
                "p.cedar",
                "@id(\"ok\") @role(\"auditor\")\npermit (principal, action, resource) when { principal in Role::\"auditor\" };\n\n\
                 @id(\"deny-contractors\")\nforbid (principal, action, resource) unless { principal in Role::\"staff\" };\n\n\
                 @id(\"not-suspended\")\npermit (principal in Role::\"writer\", action, resource) unless { principal in Role::\"suspended\" };\n\n\
                 @id(\"hidden\")\npermit (principal in Role::\"writer\", action, resource)\n  when { principal in Role::\"once\" || principal in Role::\"auditor\" };\n",
            )])
            .unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let d = &err.0[0];
        assert_eq!(d.line, Some(10), "{d}");
        assert!(
            d.message.contains(
                "policy `hidden` relies on role `auditor`, `once` outside its principal scope"
            ) && d.message.contains("@role(\"auditor,once\")"),
            "{d}"
        );
    }

    #[test]
    fn duplicate_ids_across_files_are_reported_with_both_places() {
        let err = Fixture::new(SCHEMA)
            .load(&[
                (
                    "a.cedar",
                    "@id(\"x\")\npermit (principal, action, resource);\n",
                ),
                (
                    "b.cedar",
                    "\n\n@id(\"x\")\nforbid (principal, action, resource);\n",
                ),
            ])
            .unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let d = &err.0[0];
        assert!(d.file.ends_with("b.cedar"));
        assert_eq!(d.line, Some(3));
        assert!(
            d.message.contains("duplicate policy id `x`") && d.message.contains("a.cedar:1:1"),
            "{d}"
        );
    }

    #[test]
    fn parse_errors_name_file_line_and_column_in_every_file() {
        let err = Fixture::new(SCHEMA)
            .load(&[
                (
                    "a.cedar",
                    "@id(\"a\")\npermit (principal, action, resource)\nwhen { 1 + };\n",
                ),
                (
                    "b.cedar",
                    "@id(\"b\")\npermit (principal, acton, resource);\n",
                ),
            ])
            .unwrap_err();
        let files: Vec<String> = err.0.iter().map(|d| d.to_string()).collect();
        assert!(files.iter().any(|d| d.contains("a.cedar:3:")), "{err}");
        assert!(files.iter().any(|d| d.contains("b.cedar:2:")), "{err}");
        assert!(
            err.0.iter().all(|d| d.line.is_some() && d.column.is_some()),
            "{err}"
        );
    }

    #[test]
    fn schema_violations_point_at_the_offending_expression() {
        let src = "@id(\"ok\")\npermit (principal, action == Action::\"read\", resource);\n\n@id(\"bad\")\npermit (principal, action == Action::\"read\", resource)\nwhen { resource.colour == \"red\" };\n";
        let err = Fixture::new(SCHEMA).load(&[("p.cedar", src)]).unwrap_err();
        assert!(!err.0.is_empty());
        let d = &err.0[0];
        assert!(d.file.ends_with("p.cedar"), "{d}");
        assert_eq!(d.line, Some(6), "{d}");
        assert!(
            d.message.contains("policy `bad`") && d.message.contains("colour"),
            "{d}"
        );
    }

    #[test]
    fn schema_errors_and_missing_engine_types() {
        let err = Fixture::new("entity User;\nentity Doc = { owner: Nope };\n")
            .load(&[(
                "p.cedar",
                "@id(\"a\")\npermit (principal, action, resource);\n",
            )])
            .unwrap_err();
        assert!(
            err.0.iter().any(|d| d.file.ends_with("s.cedarschema")),
            "{err}"
        );
        let err = Fixture::new("entity User;\nentity Doc;\naction read appliesTo { principal: User, resource: Doc };\n")
            .load(&[("p.cedar", "@id(\"a\")\npermit (principal, action, resource);\n")])
            .unwrap_err();
        let d = &err.0[0];
        assert!(d.file.ends_with("s.cedarschema"), "{d}");
        assert!(
            d.message.contains("Workload")
                && d.message.contains("Grant")
                && !d.message.contains("User,"),
            "{d}"
        );
        let err = Fixture::new("entity User\n")
            .load(&[(
                "p.cedar",
                "@id(\"a\")\npermit (principal, action, resource);\n",
            )])
            .unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|d| d.file.ends_with("s.cedarschema") && d.line.is_some()),
            "{err}"
        );
    }

    #[test]
    fn hold_only_on_forbid() {
        let err = Fixture::new(SCHEMA)
            .load(&[(
                "p.cedar",
                "@id(\"h\")\n@hold(\"why\")\npermit (principal, action, resource);\n",
            )])
            .unwrap_err();
        assert!(err.0[0].message.contains("@hold"), "{err}");
    }

    #[test]
    fn holds_fire_only_where_otherwise_allowed() {
        let b = load(
            r#"
@id("readers") permit (principal in Group::"r", action, resource);
@id("hold-erase") @hold("needs approval") forbid (principal, action == Action::"erase", resource) unless { principal in Role::"boss" };
@id("no-night") forbid (principal, action == Action::"erase", resource) when { context.time.hour >= 22 };
@id("boss") permit (principal in Role::"boss", action, resource);
"#,
        );
        let e = b.evaluate(&DecisionInput::materialized(
            &request("erase", &["r"], 3600 * 10),
            &[],
        ));
        assert_eq!(
            (e.effect, e.policies.clone()),
            (Effect::Hold, vec!["hold-erase".to_string()]),
            "{e:?}"
        );
        // Not otherwise allowed: deny, not hold.
        let e = b.evaluate(&DecisionInput::materialized(
            &request("erase", &[], 3600 * 10),
            &[],
        ));
        assert_eq!(
            (e.effect, e.policies.clone()),
            (Effect::Deny, vec![]),
            "{e:?}"
        );
        // A forbid beats the hold.
        let e = b.evaluate(&DecisionInput::materialized(
            &request("erase", &["r"], 3600 * 23),
            &[],
        ));
        assert_eq!(
            (e.effect, e.policies.clone()),
            (Effect::Deny, vec!["no-night".to_string()]),
            "{e:?}"
        );
        // The hold's own exception.
        let e = b.evaluate(&DecisionInput::materialized(
            &request("erase", &[], 3600 * 10),
            &[grant("g", "boss")],
        ));
        assert_eq!(
            (e.effect, e.policies.clone(), e.roles.clone()),
            (
                Effect::Allow,
                vec!["boss".to_string()],
                vec!["boss".to_string()]
            )
        );
        // Holds of other actions do not apply.
        let e = b.evaluate(&DecisionInput::materialized(
            &request("write", &["r"], 3600 * 10),
            &[],
        ));
        assert_eq!(e.effect, Effect::Allow);
    }

    #[test]
    fn evaluation_errors_deny_even_when_another_permit_allows() {
        let b = load(
            r#"
@id("open") permit (principal, action, resource);
@id("overflow") permit (principal, action == Action::"write", resource) when { context.time.epoch * 100000000000 > 0 };
@id("hold-overflow") @hold("x") forbid (principal, action == Action::"erase", resource) when { context.time.epoch * 100000000000 > 0 };
"#,
        );
        let t = 1_700_000_000;
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(&request("read", &[], t), &[]))
                .effect,
            Effect::Allow
        );
        for action in ["write", "erase"] {
            let e = b.evaluate(&DecisionInput::materialized(&request(action, &[], t), &[]));
            assert_eq!(e.effect, Effect::Deny, "{action}: {e:?}");
            assert!(
                !e.errors.is_empty() && e.policies.is_empty(),
                "{action}: {e:?}"
            );
        }
    }

    #[test]
    fn roles_come_from_the_scope_or_the_annotation() {
        let schema = r#"entity Group;
entity Role;
entity Grant in [Role] = { uses_left: Long };
entity User in [Group, Grant];
entity Workload in [Group, Grant];
entity Anonymous;
entity Doc = { owner: User, level: Long };
type Ctx = { grants: Set<Grant> };
action read, write, erase appliesTo { principal: [User], resource: [Doc], context: Ctx };
"#;
        let load = |src: &str| {
            Fixture::new(schema)
                .load(&[("p.cedar", src)])
                .unwrap_or_else(|d| panic!("{d}"))
        };
        let b = load(
            r#"
@id("by-scope") permit (principal in Role::"writer", action == Action::"write", resource);
@id("by-note") @role("auditor") permit (principal, action == Action::"write", resource) when { context has break_glass && principal in Role::"auditor" };
@id("standing") permit (principal in Group::"r", action == Action::"read", resource);
"#,
        );
        let e = b.evaluate(&DecisionInput::materialized(
            &request("write", &[], 0),
            &[grant("g1", "writer"), grant("g2", "auditor")],
        ));
        assert_eq!(e.effect, Effect::Allow);
        assert_eq!(e.policies, vec!["by-note", "by-scope"]);
        let mut roles = e.roles.clone();
        roles.sort();
        assert_eq!(roles, vec!["auditor", "writer"]);
        let e = b.evaluate(&DecisionInput::materialized(
            &request("read", &["r"], 0),
            &[grant("g1", "writer")],
        ));
        assert_eq!((e.effect, e.roles.len()), (Effect::Allow, 0), "{e:?}");
        // A grant for another role opens nothing.
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(
                &request("write", &[], 0),
                &[grant("g3", "reader")]
            ))
            .effect,
            Effect::Deny
        );
    }

    #[test]
    fn entity_typed_attributes_become_references() {
        let b = load(
            r#"@id("own") permit (principal, action == Action::"read", resource) when { resource.owner == principal && resource.level == 3 };"#,
        );
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(&request("read", &[], 0), &[]))
                .effect,
            Effect::Allow
        );
    }

    #[test]
    fn the_index_keeps_only_policies_that_can_apply() {
        let b = load(
            r#"
@id("any") permit (principal in Group::"a", action, resource);
@id("read") permit (principal, action == Action::"read", resource);
@id("list") permit (principal, action in [Action::"read", Action::"erase"], resource);
@id("group") forbid (principal, action in Action::"writes", resource) when { context.time.hour < 1 };
@id("hold") @hold("h") forbid (principal, action in [Action::"writes"], resource) when { context.time.hour > 22 };
"#,
        );
        assert_eq!(b.policies_for_action("read"), vec!["any", "list", "read"]);
        assert_eq!(b.policies_for_action("write"), vec!["any", "group", "hold"]);
        assert_eq!(
            b.policies_for_action("erase"),
            vec!["any", "group", "hold", "list"]
        );
        assert_eq!(b.policies_for_action("unknown"), vec!["any"]);
        // Group membership through the schema's action groups is seen at evaluation time.
        let e = b.evaluate(&DecisionInput::materialized(
            &request("write", &["a"], 1800),
            &[],
        ));
        assert_eq!(
            (e.effect, e.policies),
            (Effect::Deny, vec!["group".to_string()])
        );
        // An action the schema does not know is decided by the any-action policies alone.
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(
                &request("unknown", &["a"], 7200),
                &[]
            ))
            .effect,
            Effect::Allow
        );
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(
                &request("unknown", &[], 7200),
                &[]
            ))
            .effect,
            Effect::Deny
        );
        let mut ids = b.policy_ids();
        ids.sort();
        assert_eq!(ids, vec!["any", "group", "hold", "list", "read"]);
    }

    #[test]
    fn cached_caller_entities_follow_grant_changes_groups_and_bundles() {
        let schema = r#"entity Group;
entity Role;
entity Grant in [Role] = { uses_left: Long };
entity User in [Group, Grant];
entity Workload in [Group, Grant];
entity Anonymous;
entity Doc = { owner: User, level: Long };
type Ctx = { grants: Set<Grant> };
action read, write, erase appliesTo { principal: [User], resource: [Doc], context: Ctx };
"#;
        let load = |src: &str| {
            Fixture::new(schema)
                .load(&[("p.cedar", src)])
                .unwrap_or_else(|d| panic!("{d}"))
        };
        let b = load(
            r#"
@id("by-scope") permit (principal in Role::"writer", action == Action::"write", resource);
@id("uses") permit (principal, action == Action::"read", resource) when { context.grants.contains(Grant::"g1") && Grant::"g1".uses_left == 2 };
@id("group") permit (principal in Group::"r", action == Action::"erase", resource);
"#,
        );
        let writer = grant("g1", "writer");
        let req = request("write", &[], 0);
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(
                &req,
                std::slice::from_ref(&writer)
            ))
            .effect,
            Effect::Allow
        );
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(
                &req,
                std::slice::from_ref(&writer)
            ))
            .effect,
            Effect::Allow
        );
        // The same grant id, changed (a new Arc): decided on the new content, also when the old Arc is gone.
        let reader = grant("g1", "reader");
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(
                &req,
                std::slice::from_ref(&reader)
            ))
            .effect,
            Effect::Deny
        );
        drop(writer);
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(&req, &[reader]))
                .effect,
            Effect::Deny
        );
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(&req, &[])).effect,
            Effect::Deny
        );
        // Attribute changes of a grant are seen.
        let mut limited = (*grant("g1", "writer")).clone();
        limited.max_uses = Some(3);
        limited.uses = 1;
        let read = request("read", &[], 0);
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(
                &read,
                &[Arc::new(limited.clone())]
            ))
            .effect,
            Effect::Allow
        );
        limited.uses = 2;
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(&read, &[Arc::new(limited)]))
                .effect,
            Effect::Deny
        );
        // Groups are part of the caller's side.
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(
                &request("erase", &["r"], 0),
                &[]
            ))
            .effect,
            Effect::Allow
        );
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(&request("erase", &[], 0), &[]))
                .effect,
            Effect::Deny
        );
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(
                &request("erase", &["r"], 0),
                &[]
            ))
            .effect,
            Effect::Allow
        );
        // Another bundle (whose schema puts `write` in the action group `writes`) never sees this one's entities.
        let other =
            self::load(r#"@id("w") permit (principal, action in Action::"writes", resource);"#);
        let g = grant("g2", "reader");
        for _ in 0..2 {
            assert_eq!(
                b.evaluate(&DecisionInput::materialized(&req, std::slice::from_ref(&g)))
                    .effect,
                Effect::Deny
            );
            assert_eq!(
                other
                    .evaluate(&DecisionInput::materialized(&req, std::slice::from_ref(&g)))
                    .effect,
                Effect::Allow
            );
        }
    }

    #[test]
    fn a_resource_that_is_also_the_principal_keeps_the_principal_entity() {
        let b = load(
            r#"@id("self") permit (principal, action == Action::"read", resource) when { principal in Group::"r" };"#,
        );
        let mut r = request("read", &["r"], 0);
        r.resource.entity = EntityRef::new("User", "alice");
        r.resource.attrs.clear();
        for _ in 0..2 {
            assert_eq!(
                b.evaluate(&DecisionInput::materialized(&r, &[])).effect,
                Effect::Allow
            );
        }
    }

    #[test]
    fn bad_request_values_deny_with_an_error() {
        let b = load(r#"@id("open") permit (principal, action, resource);"#);
        let mut r = request("read", &[], 0);
        r.context.source_ip = Some("not an ip".into());
        let e = b.evaluate(&DecisionInput::materialized(&r, &[]));
        assert_eq!(e.effect, Effect::Deny);
        assert!(!e.errors.is_empty(), "{e:?}");
    }
}
