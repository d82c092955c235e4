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

mod convert;
mod load;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, Response, RestrictedExpression, Schema,
};

use self::convert::{EntityAttrs, hour_and_weekday, json_to_expr, type_name, uid};
use self::load::{
    ActionIndex, Loaded, any_action, applies_to, fail, load_policies, load_schema, roles_of,
    set_of, validate,
};
use crate::backend::PolicyBackend;
use crate::decision::{Effect, EngineKind, Evaluation};
use crate::diag::{Diagnostic, Diagnostics};
use crate::grant::Grant;
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
                .filter_map(|u| entity_of.get(u).map(|e| (*e).clone()))
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

    fn build(
        &self,
        request: &AuthzRequest,
        grants: &[Arc<Grant>],
        idx: &ActionIndex,
    ) -> Result<(Request, Entities), String> {
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

        let mut entities: Vec<Entity> = Vec::with_capacity(
            4 + 2 * grants.len() + request.resource.parents.len() + idx.entities.len(),
        );
        let mut seen: HashSet<EntityUid> = HashSet::with_capacity(entities.capacity());
        let mut grant_uids = Vec::with_capacity(grants.len());
        let mut roles: Vec<&str> = Vec::with_capacity(grants.len());
        let mut break_glass = false;
        for g in grants {
            let guid =
                EntityUid::from_type_name_and_id(self.types.grant.clone(), EntityId::new(&g.id));
            let role =
                EntityUid::from_type_name_and_id(self.types.role.clone(), EntityId::new(&g.role));
            let uses_left = g.uses_left().map(i64::from).unwrap_or(-1);
            let attrs: HashMap<String, RestrictedExpression> = [
                ("id", RestrictedExpression::new_string(g.id.clone())),
                ("role", RestrictedExpression::new_entity_uid(role.clone())),
                (
                    "scope",
                    RestrictedExpression::new_string(g.scope.to_string()),
                ),
                ("starts_at", RestrictedExpression::new_long(g.starts_at)),
                ("expires_at", RestrictedExpression::new_long(g.expires_at)),
                (
                    "approvers",
                    RestrictedExpression::new_set(
                        g.approvers
                            .iter()
                            .map(|a| RestrictedExpression::new_string(a.clone())),
                    ),
                ),
                ("reason", RestrictedExpression::new_string(g.reason.clone())),
                ("uses_left", RestrictedExpression::new_long(uses_left)),
                ("break_glass", RestrictedExpression::new_bool(g.break_glass)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let entity = Entity::new(guid.clone(), attrs, HashSet::from([role]))
                .map_err(|e| format!("grant `{}`: {e}", g.id))?;
            if seen.insert(guid.clone()) {
                entities.push(entity);
                grant_uids.push(guid);
            }
            if !roles.contains(&g.role.as_str()) {
                roles.push(&g.role);
            }
            break_glass |= g.break_glass;
        }
        for r in roles {
            let ruid = EntityUid::from_type_name_and_id(self.types.role.clone(), EntityId::new(r));
            if seen.insert(ruid.clone()) {
                entities.push(Entity::new_no_attrs(ruid, HashSet::new()));
            }
        }

        let mut parents: HashSet<EntityUid> =
            HashSet::with_capacity(request.principal.groups.len() + grant_uids.len());
        for g in &request.principal.groups {
            parents.insert(EntityUid::from_type_name_and_id(
                self.types.group.clone(),
                EntityId::new(g),
            ));
        }
        parents.extend(grant_uids.iter().cloned());
        if seen.insert(principal.clone()) {
            entities.push(Entity::new_no_attrs(principal.clone(), parents));
        }

        let resource_parents: Vec<EntityUid> = request
            .resource
            .parents
            .iter()
            .map(|p| uid(cache, p))
            .collect::<Result<_, _>>()?;
        let declared = self.entity_attrs.by_type.get(&request.resource.entity.ty);
        let attrs: HashMap<String, RestrictedExpression> = request
            .resource
            .attrs
            .iter()
            .filter_map(|(k, v)| {
                json_to_expr(cache, v, declared.is_some_and(|d| d.contains(k)))
                    .map(|e| (k.clone(), e))
            })
            .collect();
        if seen.insert(resource.clone()) {
            let entity = Entity::new(
                resource.clone(),
                attrs,
                resource_parents.iter().cloned().collect(),
            )
            .map_err(|e| format!("resource {}: {e}", request.resource.entity))?;
            entities.push(entity);
        }
        for (i, p) in resource_parents.iter().enumerate() {
            if seen.insert(p.clone()) {
                let above = resource_parents
                    .get(i + 1..)
                    .unwrap_or(&[])
                    .iter()
                    .cloned()
                    .collect();
                entities.push(Entity::new_no_attrs(p.clone(), above));
            }
        }
        for e in &idx.entities {
            if seen.insert(e.uid()) {
                entities.push(e.clone());
            }
        }
        let entities =
            Entities::from_entities(entities, None).map_err(|e| format!("entities: {e}"))?;

        let context = self.context(request, grant_uids, break_glass)?;
        let req = Request::new(principal, action_uid, resource, context, None)
            .map_err(|e| format!("request: {e}"))?;
        Ok((req, entities))
    }

    fn context(
        &self,
        request: &AuthzRequest,
        grants: Vec<EntityUid>,
        break_glass: bool,
    ) -> Result<Context, String> {
        let c = &request.context;
        let cache = &self.type_cache;
        let (hour, weekday) = hour_and_weekday(c.time);
        let time = RestrictedExpression::new_record([
            ("epoch".to_string(), RestrictedExpression::new_long(c.time)),
            ("hour".to_string(), RestrictedExpression::new_long(hour)),
            (
                "weekday".to_string(),
                RestrictedExpression::new_long(weekday),
            ),
        ])
        .map_err(|e| format!("context.time: {e}"))?;
        let text =
            |v: &Option<String>| RestrictedExpression::new_string(v.clone().unwrap_or_default());
        let claims = RestrictedExpression::new_record(
            c.claims
                .iter()
                .filter_map(|(k, v)| json_to_expr(cache, v, false).map(|e| (k.clone(), e))),
        )
        .map_err(|e| format!("context.claims: {e}"))?;
        let mut pairs: Vec<(String, RestrictedExpression)> = vec![
            ("time".into(), time),
            (
                "source_ip".into(),
                RestrictedExpression::new_ip(c.source_ip.as_deref().unwrap_or("0.0.0.0")),
            ),
            ("method".into(), text(&c.method)),
            ("path".into(), text(&c.path)),
            ("host".into(), text(&c.host)),
            ("query".into(), text(&c.query)),
            ("claims".into(), claims),
            (
                "grants".into(),
                RestrictedExpression::new_set(
                    grants.into_iter().map(RestrictedExpression::new_entity_uid),
                ),
            ),
            (
                "break_glass".into(),
                RestrictedExpression::new_bool(break_glass),
            ),
        ];
        let declared = self.entity_attrs.by_action.get(&request.action);
        for (k, v) in &c.attrs {
            if BUILTIN_CONTEXT.contains(&k.as_str()) {
                continue;
            }
            if let Some(e) = json_to_expr(cache, v, declared.is_some_and(|d| d.contains(k))) {
                pairs.push((k.clone(), e));
            }
        }
        Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))
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

    fn evaluate(&self, request: &AuthzRequest, grants: &[Arc<Grant>]) -> Evaluation {
        let idx = self
            .by_action
            .get(&request.action)
            .unwrap_or(&self.any_action);
        let (req, entities) = match self.build(request, grants, idx) {
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
}
