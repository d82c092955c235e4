//! The seam between the engine and a policy language: one trait, implemented by Cedar and Rego.
//! A backend sees one [`DecisionInput`]: the request and the caller's grants already filtered to active-and-in-scope.

use crate::decision::{EngineKind, Evaluation};
use crate::diag::Diagnostic;
use crate::explain::PolicyTraces;
use crate::input::DecisionInput;
use crate::overlay::EntityProblem;
use crate::store::StoredEntity;

/// A loaded, validated, immutable policy set that can evaluate requests.
///
/// Contract:
/// - `input.grants()` holds only the caller's grants active at the request's time whose scope covers the resource
///   (and never request-bound approvals, which the engine handles itself).
/// - Any evaluation error makes the effect `Deny` and is listed in `errors`.
/// - `Hold` is returned only when the request would otherwise be allowed and a hold policy fires.
/// - `roles` lists the roles the determining permit policies rest on, so the engine can name the grant used.
pub trait PolicyBackend: Send + Sync + std::fmt::Debug {
    /// Which language this is.
    fn engine(&self) -> EngineKind;

    /// Decides one request, as `input` shows it.
    fn evaluate(&self, input: &DecisionInput<'_>) -> Evaluation;

    /// Explains one request (for `jitgate eval --explain`, never on the decision path): each policy that can apply
    /// with its scope and condition outcome, `determining` being the decision's policies. Backends that cannot say
    /// more return a note.
    fn explain(&self, input: &DecisionInput<'_>, determining: &[String]) -> PolicyTraces {
        let _ = (input, determining);
        PolicyTraces {
            note: Some("this policy language gives no explanation".into()),
            ..PolicyTraces::default()
        }
    }

    /// Ids of every policy in the set (for coverage reports).
    fn policy_ids(&self) -> Vec<String>;

    /// One line on how the policy set is split so that a decision evaluates only what can apply, for
    /// `jitgate check`; `None` when the backend has nothing to say.
    fn index_summary(&self) -> Option<String> {
        None
    }

    /// What loaded but deserves a word, for `jitgate check` (e.g. a Cedar policy without `@id`, named by position).
    fn warnings(&self) -> Vec<Diagnostic> {
        Vec::new()
    }

    /// Checks that a route's action and resource fit the policy language's schema, so that a typo in a route is
    /// caught when the bundle loads instead of denying every request that meets it. `Err` says what does not fit.
    /// Backends without a schema accept every route.
    fn check_route(
        &self,
        action: &str,
        resource_type: &str,
        parent_types: &[&str],
    ) -> Result<(), String> {
        let _ = (action, resource_type, parent_types);
        Ok(())
    }

    /// The actions a grant of `role` can open: those with a permit that rests on the role (`principal in
    /// Role::"x"` in its scope, or `@role("x")`), sorted; used to refuse access requests whose scope holds none of
    /// them. `None` when the backend cannot tell (a permit of the role applies to every action, or the language
    /// keeps no such index): then nothing is refused for it.
    fn role_actions(&self, role: &str) -> Option<Vec<String>> {
        let _ = role;
        None
    }

    /// Checks that an entity type (of a policy test's principal, resource or grant scope) is declared in the
    /// policy language's schema. Backends without a schema accept every type.
    fn check_entity_type(&self, ty: &str) -> Result<(), String> {
        let _ = ty;
        Ok(())
    }

    /// Checks the store's entity data (all of it, as it would be) against this policy set: each entity parsed by the
    /// schema, and no parent cycle once merged with the bundle's own data (see [`crate::overlay`] for the
    /// precedence). Changes nothing. Backends that take no entity data from the store refuse any.
    fn check_store_entities(&self, entities: &[StoredEntity]) -> Result<(), Vec<EntityProblem>> {
        refuse_store_entities(self.engine(), entities)
    }

    /// [`PolicyBackend::check_store_entities`], then makes `entities` the store's data the next decisions see (the
    /// bundle's data with the store's over it). On `Err` nothing changes.
    fn set_store_entities(&self, entities: &[StoredEntity]) -> Result<(), Vec<EntityProblem>> {
        refuse_store_entities(self.engine(), entities)
    }
}

/// Refuses store entity data for a backend that does not take it (none given is fine).
fn refuse_store_entities(
    engine: EngineKind,
    entities: &[StoredEntity],
) -> Result<(), Vec<EntityProblem>> {
    if entities.is_empty() {
        return Ok(());
    }
    Err(entities
        .iter()
        .map(|e| {
            EntityProblem::new(
                e.uid.to_string(),
                format!(
                    "entity data in the store is for Cedar bundles; the active bundle is {}",
                    engine.as_str()
                ),
            )
        })
        .collect())
}
