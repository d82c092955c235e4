//! The Cedar backend: loads a schema and policy files into a per-action policy index (`load`), and decides requests
//! by building them as Cedar entities (`entities`) and asking Cedar. No grant selection here.
//!
//! Decision: `forbid` policies annotated `@hold("why")` live in a separate set. The main set decides; an allow is
//! turned into `Hold` when a hold policy of the action is satisfied. Any evaluation error in either set is a deny.

mod cache;
mod convert;
mod data;
mod entities;
mod explain;
mod load;
mod overlay;
mod typed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use cedar_policy::{
    AuthorizationError, Authorizer, Decision as CedarDecision, EntityId, EntityUid, Response,
    Schema,
};

use self::data::EntityData;
pub(crate) use self::data::entity_error_message;
use self::entities::EntityBuilder;
use self::load::ActionIndex;
use crate::backend::PolicyBackend;
use crate::decision::{Effect, EngineAnswer, EngineKind, Evaluation, PolicyError};
use crate::diag::{Diagnostic, Diagnostics};
use crate::explain::PolicyTraces;
use crate::input::DecisionInput;
use crate::manifest::CedarValidation;

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
    /// Turns a decision's input into a Cedar request and entities for this schema, with the bundle's own entity data.
    entities: EntityBuilder,
    /// What decisions use: [`CedarBackend::entities`], or a copy with the store's entity data merged over the
    /// bundle's. Replaced (never changed) when the store's data changes, so a decision keeps the one it started with.
    current: ArcSwap<EntityBuilder>,
    /// Entity literals of the policies (their data is part of every request).
    literals: Vec<cedar_policy_core::ast::EntityUID>,
    authorizer: Authorizer,
    /// What loaded but deserves a word (policies without `@id`).
    warnings: Vec<Diagnostic>,
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
    ///
    /// `entity_files` hold the bundle's entity data (Cedar's JSON entity format), parsed against the schema; each
    /// problem names the file, the entity's line and its uid. `link_files` link the policy files' templates (see
    /// `schemas/links.schema.json`); each link is a policy named by its id. A policy or template without `@id` is
    /// named by its position (see [`CedarBackend::warnings`](PolicyBackend::warnings)).
    pub fn load(
        dir: &Path,
        schema: &Path,
        policy_files: &[PathBuf],
        entity_files: &[PathBuf],
        link_files: &[PathBuf],
    ) -> Result<Self, Diagnostics> {
        Self::load_with(
            dir,
            schema,
            policy_files,
            entity_files,
            link_files,
            CedarValidation::Strict,
        )
    }

    /// [`CedarBackend::load`] with the bundle's `[cedar] validation`: `Warn` reports what strict validation finds as
    /// warnings instead of refusing the bundle, and reads entity data that does not conform to the schema without it
    /// (a warning per entity that did not).
    pub fn load_with(
        dir: &Path,
        schema: &Path,
        policy_files: &[PathBuf],
        entity_files: &[PathBuf],
        link_files: &[PathBuf],
        validation: CedarValidation,
    ) -> Result<Self, Diagnostics> {
        let mut index = load::load(dir, schema, policy_files, link_files, validation)?;
        let mut data = if entity_files.is_empty() {
            EntityData::default()
        } else {
            let (data, warnings) = EntityData::load(
                &index.schema,
                entity_files,
                validation == CedarValidation::Warn,
            )?;
            index.warnings.extend(warnings);
            data
        };
        data.pin(index.literals.iter());
        let entities = EntityBuilder::new(
            &index.schema,
            index.entity_attrs,
            Arc::new(data),
            schema,
            &index.base,
        )?;
        let current = ArcSwap::from_pointee(entities.with_data(entities.data.clone()));
        Ok(CedarBackend {
            schema: index.schema,
            ids: index.ids,
            by_action: index.by_action,
            any_action: index.any_action,
            roles: index.roles,
            entities,
            current,
            literals: index.literals,
            authorizer: Authorizer::new(),
            warnings: index.warnings,
        })
    }

    /// How many entities the bundle's entity data holds (with the store's, once set).
    pub fn entity_count(&self) -> usize {
        self.current.load().data.len()
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

fn errors_of(r: &Response) -> Vec<String> {
    r.diagnostics().errors().map(|e| e.to_string()).collect()
}

/// The erroring policies of a response, each with Cedar's message (without the `error while evaluating policy`
/// prefix that `errors_of` keeps).
fn policy_errors_of(r: &Response) -> Vec<PolicyError> {
    r.diagnostics()
        .errors()
        .map(|e| match e {
            AuthorizationError::PolicyEvaluationError(pe) => PolicyError {
                policy: pe.policy_id().to_string(),
                message: pe.inner().to_string(),
            },
        })
        .collect()
}

fn reasons_of(r: &Response) -> Vec<String> {
    let mut ids: Vec<String> = r
        .diagnostics()
        .reason()
        .map(|p| {
            // As `to_string` writes it (escaped), without the formatter where nothing needs escaping.
            let s: &str = p.as_ref();
            if s.chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '\'')
            {
                s.to_string()
            } else {
                p.to_string()
            }
        })
        .collect();
    ids.sort();
    ids
}

fn deny(errors: Vec<String>) -> Evaluation {
    Evaluation {
        effect: Effect::Deny,
        errors,
        ..Default::default()
    }
}

/// A deny forced by erroring policies (fail closed), naming them and keeping what Cedar itself answered.
fn deny_erred(r: &Response, answer: EngineAnswer) -> Evaluation {
    Evaluation {
        effect: Effect::Deny,
        errors: errors_of(r),
        policy_errors: policy_errors_of(r),
        engine_answer: Some(answer),
        ..Default::default()
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
        let (req, entities) = match self.current.load().build(input, idx) {
            Ok(x) => x,
            Err(e) => return deny(vec![e]),
        };
        let main = self.authorizer.is_authorized(&req, &idx.main, &entities);
        let main_erred = main.diagnostics().errors().next().is_some();
        let reasons = reasons_of(&main);
        if main.decision() == CedarDecision::Deny {
            if main_erred {
                return deny_erred(
                    &main,
                    EngineAnswer {
                        effect: Effect::Deny,
                        policies: reasons,
                    },
                );
            }
            // Without a satisfied permit Cedar gives no reason; with a satisfied forbid the reasons are the forbids.
            // Only the first kind is explained (what came nearest), and only here, off the allow path.
            let nearest = if reasons.is_empty() {
                explain::nearest(self, idx, &req, &entities)
            } else {
                Vec::new()
            };
            return Evaluation {
                effect: Effect::Deny,
                policies: reasons,
                nearest,
                ..Default::default()
            };
        }
        let roles = self.roles_for(reasons.iter().map(String::as_str));
        let mut effect = Effect::Allow;
        let mut policies = reasons;
        if let Some(holds) = &idx.holds {
            let held = self.authorizer.is_authorized(&req, holds, &entities);
            let fired = reasons_of(&held);
            if held.diagnostics().errors().next().is_some() {
                // Cedar's own answer: the hold set alone decides whether an allow is held.
                let answer = if fired.is_empty() {
                    EngineAnswer {
                        effect: Effect::Allow,
                        policies,
                    }
                } else {
                    EngineAnswer {
                        effect: Effect::Hold,
                        policies: fired,
                    }
                };
                let mut eval = deny_erred(&held, answer);
                if main_erred {
                    let mut errors = errors_of(&main);
                    errors.append(&mut eval.errors);
                    eval.errors = errors;
                    let mut pe = policy_errors_of(&main);
                    pe.append(&mut eval.policy_errors);
                    eval.policy_errors = pe;
                }
                return eval;
            }
            if !fired.is_empty() {
                effect = Effect::Hold;
                policies = fired;
            }
        }
        if main_erred {
            return deny_erred(&main, EngineAnswer { effect, policies });
        }
        Evaluation {
            effect,
            policies,
            roles,
            ..Default::default()
        }
    }

    fn explain(&self, input: &DecisionInput<'_>, determining: &[String]) -> PolicyTraces {
        let idx = self
            .by_action
            .get(input.action())
            .unwrap_or(&self.any_action);
        match self.current.load().build(input, idx) {
            Ok((req, entities)) => PolicyTraces {
                policies: explain::trace(self, idx, &req, &entities, determining),
                ..PolicyTraces::default()
            },
            Err(e) => PolicyTraces {
                note: Some(format!(
                    "the request could not be built, so no policy was evaluated: {e}"
                )),
                ..PolicyTraces::default()
            },
        }
    }

    fn policy_ids(&self) -> Vec<String> {
        self.ids.clone()
    }

    fn warnings(&self) -> Vec<Diagnostic> {
        self.warnings.clone()
    }

    fn index_summary(&self) -> Option<String> {
        let current = self.current.load();
        let data = &current.data;
        (!data.is_empty()).then(|| format!("entity data: {} entities", data.len()))
    }

    fn role_actions(&self, role: &str) -> Option<Vec<String>> {
        let rests = |p: &cedar_policy::Policy| {
            self.roles
                .get(&p.id().to_string())
                .is_some_and(|r| r.iter().any(|x| x == role))
        };
        if self.any_action.main.policies().any(rests) {
            return None;
        }
        let mut actions: Vec<String> = self
            .by_action
            .iter()
            .filter(|(_, idx)| idx.main.policies().any(rests))
            .map(|(a, _)| a.clone())
            .collect();
        actions.sort();
        Some(actions)
    }

    fn check_store_entities(
        &self,
        entities: &[crate::store::StoredEntity],
    ) -> Result<(), Vec<crate::overlay::EntityProblem>> {
        overlay::merge(&self.schema, &self.entities.data, entities, &self.literals).map(|_| ())
    }

    fn set_store_entities(
        &self,
        entities: &[crate::store::StoredEntity],
    ) -> Result<(), Vec<crate::overlay::EntityProblem>> {
        let data = if entities.is_empty() {
            self.entities.data.clone()
        } else {
            Arc::new(overlay::merge(
                &self.schema,
                &self.entities.data,
                entities,
                &self.literals,
            )?)
        };
        self.current.store(Arc::new(self.entities.with_data(data)));
        Ok(())
    }

    fn check_entity_type(&self, ty: &str) -> Result<(), String> {
        if self.entities.type_cache.contains_key(ty) {
            Ok(())
        } else {
            let mut known: Vec<&str> = self
                .entities
                .type_cache
                .keys()
                .map(String::as_str)
                .collect();
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
                EntityUid::from_type_name_and_id(
                    self.entities.types.action.clone(),
                    EntityId::new(action),
                )
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
        let Some(ty) = self.entities.type_cache.get(resource_type) else {
            return Err(format!(
                "resource type `{resource_type}` is not declared in the schema"
            ));
        };
        // Compared by full name: a short name may resolve to the engine's `Jitgate::` type.
        let resource_full = ty.to_string();
        if !resources.iter().any(|r| r == &resource_full) {
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
            let Some(parent_ty) = self.entities.type_cache.get(*parent) else {
                return Err(format!(
                    "parent type `{parent}` is not declared in the schema"
                ));
            };
            let parent_full = parent_ty.to_string();
            if !ancestors.iter().any(|a| a == &parent_full) {
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
mod tests;

#[cfg(test)]
mod data_tests;

#[cfg(test)]
mod caller_tests;

#[cfg(test)]
mod base_tests;
