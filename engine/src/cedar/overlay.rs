//! The store's entity data over a Cedar bundle's: each stored entity parsed against the schema, the bundle's entity
//! of the same uid replaced whole, parent cycles refused, and the merged set transitively closed into the
//! [`EntityData`] the next decisions see. Built once per change of the store's data, never per request.

use std::collections::HashSet;

use cedar_policy::Schema;
use cedar_policy_core::ast::{self, EntityUID};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;

use super::data::{EntityData, entity_error_message, find_cycle};
use crate::overlay::EntityProblem;
use crate::store::StoredEntity;

/// Parses the store's entities against `schema` (every problem reported, by uid).
fn parse(schema: &Schema, stored: &[StoredEntity]) -> Result<Vec<ast::Entity>, Vec<EntityProblem>> {
    let mut out = Vec::with_capacity(stored.len());
    let mut problems = Vec::new();
    for s in stored {
        match cedar_policy::Entity::from_json_value(s.data.clone(), Some(schema)) {
            Ok(e) => {
                let e: ast::Entity = AsRef::<ast::Entity>::as_ref(&e).clone();
                if e.uid().entity_type().is_action() {
                    problems.push(EntityProblem::new(
                        s.uid.to_string(),
                        "action entities come from the schema, not from entity data",
                    ));
                } else {
                    out.push(e);
                }
            }
            Err(e) => problems.push(EntityProblem::new(
                s.uid.to_string(),
                entity_error_message(&e),
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The bundle's data (`bundle`) with the store's entities (`stored`) over it, closed, with `literals` pinned.
pub(crate) fn merge(
    schema: &Schema,
    bundle: &EntityData,
    stored: &[StoredEntity],
    literals: &[EntityUID],
) -> Result<EntityData, Vec<EntityProblem>> {
    let store = parse(schema, stored)?;
    let replaced: HashSet<EntityUID> = store.iter().map(|e| e.uid().clone()).collect();
    // The bundle's entities as written: their own parents only (the closure is computed again over the merge).
    let mut all: Vec<ast::Entity> = bundle
        .iter()
        .filter(|e| !replaced.contains(e.uid()))
        .map(|e| {
            ast::Entity::new_with_attr_partial_value(
                e.uid().clone(),
                e.attrs().map(|(k, v)| (k.clone(), v.clone())),
                HashSet::new(),
                e.parents().cloned().collect(),
                e.tags().map(|(k, v)| (k.clone(), v.clone())),
            )
        })
        .collect();
    all.extend(store);
    if let Some(cycle) = find_cycle(&all) {
        let path = cycle
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" -> ");
        // Named by a stored entity on the cycle: that is what can be changed.
        let at = cycle
            .iter()
            .find(|u| replaced.contains(*u))
            .or(cycle.first())
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(vec![EntityProblem::new(at, format!("parent cycle {path}"))]);
    }
    let closed = CoreEntities::from_entities(
        all,
        None::<&NoEntitiesSchema>,
        TCComputation::ComputeNow,
        Extensions::all_available(),
    )
    .map_err(|e| vec![EntityProblem::new("(entity data)", e.to_string())])?;
    let mut data = EntityData::from_closed(&closed);
    data.pin(literals.iter());
    Ok(data)
}
