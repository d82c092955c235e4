//! Why a Cedar decision came out as it did: each policy of the action's partition evaluated on its own, its scope
//! apart from its condition. Cedar reports only the determining policies, so each policy is re-evaluated as a
//! permit (with and without its conditions); that costs a second evaluation and is done only for `jitgate eval
//! --explain` and, in its short form (the nearest permits), on a deny that no policy determined.

use std::collections::{BTreeMap, BTreeSet};

use cedar_policy::{Effect as CedarEffect, Entities, Policy, PolicySet, Request, Response};
use serde_json::Value;

use super::CedarBackend;
use super::load::ActionIndex;
use crate::decision::{Candidate, MAX_CANDIDATES};
use crate::explain::{Condition, PolicyTrace};

/// `policy` as a permit with the same id and scope, its conditions kept or dropped; `None` when its JSON form does
/// not round-trip (then it is left out of the explanation, never out of a decision).
fn as_permit(policy: &Policy, keep_conditions: bool) -> Option<Policy> {
    let mut json = policy.to_json().ok()?;
    let obj = json.as_object_mut()?;
    obj.insert("effect".into(), Value::from("permit"));
    if !keep_conditions {
        obj.insert("conditions".into(), Value::Array(Vec::new()));
    }
    Policy::from_json(Some(policy.id().clone()), json).ok()
}

fn set_of(policies: impl Iterator<Item = Policy>) -> PolicySet {
    let mut set = PolicySet::new();
    for p in policies {
        // Ids are unique in the partition they come from, so adding cannot collide.
        let _ = set.add(p);
    }
    set
}

fn id_of(p: &Policy) -> &str {
    AsRef::<str>::as_ref(p.id())
}

fn satisfied(r: &Response) -> BTreeSet<String> {
    r.diagnostics().reason().map(|p| p.to_string()).collect()
}

/// The permits nearest to allowing a request that no policy determined: first those whose scope matched (so their
/// condition was false), then the others with the scope that did not match; at most [`MAX_CANDIDATES`].
pub(crate) fn nearest(
    backend: &CedarBackend,
    idx: &ActionIndex,
    req: &Request,
    entities: &Entities,
) -> Vec<Candidate> {
    let scopes = idx.permit_scopes.get_or_init(|| {
        set_of(
            idx.main
                .policies()
                .filter(|p| p.effect() == CedarEffect::Permit)
                .filter_map(|p| as_permit(p, false)),
        )
    });
    if scopes.is_empty() {
        return Vec::new();
    }
    let matched = satisfied(&backend.authorizer.is_authorized(req, scopes, entities));
    let mut out: Vec<Candidate> = matched
        .iter()
        .take(MAX_CANDIDATES)
        .map(|id| Candidate {
            policy: id.clone(),
            why: "condition false".into(),
        })
        .collect();
    if out.len() < MAX_CANDIDATES {
        let mut rest: Vec<&Policy> = idx
            .main
            .policies()
            .filter(|p| p.effect() == CedarEffect::Permit && !matched.contains(id_of(p)))
            .collect();
        rest.sort_by(|a, b| id_of(a).cmp(id_of(b)));
        for p in rest.into_iter().take(MAX_CANDIDATES - out.len()) {
            out.push(Candidate {
                policy: p.id().to_string(),
                why: format!("scope not matched: {}", scope_text(p)),
            });
        }
    }
    out
}

/// Each policy of the partition (main and hold sets), sorted by id, with its scope and condition outcome.
pub(crate) fn trace(
    backend: &CedarBackend,
    idx: &ActionIndex,
    req: &Request,
    entities: &Entities,
    determining: &[String],
) -> Vec<PolicyTrace> {
    let mut all: BTreeMap<String, (&Policy, bool)> = BTreeMap::new();
    for p in idx.main.policies() {
        all.insert(p.id().to_string(), (p, false));
    }
    for p in idx.holds.iter().flat_map(|h| h.policies()) {
        all.insert(p.id().to_string(), (p, true));
    }
    let scopes = set_of(all.values().filter_map(|(p, _)| as_permit(p, false)));
    let full = set_of(all.values().filter_map(|(p, _)| as_permit(p, true)));
    let scope_hit = satisfied(&backend.authorizer.is_authorized(req, &scopes, entities));
    let full_response = backend.authorizer.is_authorized(req, &full, entities);
    let held = satisfied(&full_response);
    let erred: BTreeMap<String, String> = super::policy_errors_of(&full_response)
        .into_iter()
        .map(|e| (e.policy, e.message))
        .collect();
    all.into_iter()
        .map(|(id, (p, hold))| {
            let scope_matched = scope_hit.contains(&id);
            let condition = if !scope_matched {
                Condition::Skipped
            } else if let Some(msg) = erred.get(&id) {
                Condition::Error(msg.clone())
            } else if held.contains(&id) {
                Condition::Held
            } else {
                Condition::False
            };
            PolicyTrace {
                determining: determining.contains(&id),
                effect: match p.effect() {
                    CedarEffect::Permit => "permit",
                    CedarEffect::Forbid => "forbid",
                },
                hold,
                scope: scope_text(p),
                scope_matched,
                condition,
                id,
            }
        })
        .collect()
}

/// A policy's scope as Cedar text (`principal in Role::"db-admin", action == Action::"read", resource`).
pub(crate) fn scope_text(p: &Policy) -> String {
    let Ok(json) = p.to_json() else {
        return String::from("(scope not shown)");
    };
    ["principal", "action", "resource"]
        .iter()
        .map(|var| constraint(var, json.get(*var)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn constraint(var: &str, c: Option<&Value>) -> String {
    let Some(c) = c else {
        return var.to_string();
    };
    let target = || {
        if let Some(e) = c.get("entity") {
            entity_text(e)
        } else if let Some(slot) = c.get("slot").and_then(Value::as_str) {
            slot.to_string()
        } else if let Some(list) = c.get("entities").and_then(Value::as_array) {
            format!(
                "[{}]",
                list.iter().map(entity_text).collect::<Vec<_>>().join(", ")
            )
        } else {
            String::from("?")
        }
    };
    match c.get("op").and_then(Value::as_str) {
        Some("==") => format!("{var} == {}", target()),
        Some("in") => format!("{var} in {}", target()),
        Some("is") => {
            let ty = c.get("entity_type").and_then(Value::as_str).unwrap_or("?");
            match c.get("in") {
                Some(inner) => format!("{var} is {ty} in {}", constraint_target(inner)),
                None => format!("{var} is {ty}"),
            }
        }
        _ => var.to_string(),
    }
}

fn constraint_target(c: &Value) -> String {
    if let Some(e) = c.get("entity") {
        entity_text(e)
    } else if let Some(slot) = c.get("slot").and_then(Value::as_str) {
        slot.to_string()
    } else {
        String::from("?")
    }
}

fn entity_text(e: &Value) -> String {
    let e = e.get("__entity").unwrap_or(e);
    let ty = e.get("type").and_then(Value::as_str).unwrap_or("?");
    let id = e.get("id").and_then(Value::as_str).unwrap_or("?");
    format!(
        "{ty}::{}",
        serde_json::to_string(id).unwrap_or_else(|_| format!("\"{id}\""))
    )
}
