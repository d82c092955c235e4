//! Loading a Cedar bundle: schema and policy files parsed, ids and holds checked, strict validation, every problem
//! reported with file, line and column. Builds the per-action policy index the hot path reads; decides nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Effect as CedarEffect, Entity, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, Schema, SchemaFragment, ValidationMode, Validator,
};
use cedar_policy_core::ast;

use super::convert::EntityAttrs;
use crate::diag::{Diagnostic, Diagnostics, line_col, read_file};

/// Entity types the engine creates itself, so every schema must declare them (unqualified).
pub(crate) const REQUIRED_TYPES: [&str; 6] =
    ["User", "Workload", "Anonymous", "Group", "Role", "Grant"];

/// One parsed policy with where it came from.
pub(crate) struct Loaded {
    pub(crate) policy: Policy,
    pub(crate) file: PathBuf,
    /// 1-based line and column of the policy's first character (its first annotation).
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) hold: bool,
}

/// The policies that can apply to one action, split into the main set and the hold set.
#[derive(Debug)]
pub(crate) struct ActionIndex {
    pub(crate) uid: Option<EntityUid>,
    pub(crate) main: PolicySet,
    pub(crate) holds: Option<PolicySet>,
    /// The action entity and its action-group ancestors, as the schema declares them.
    pub(crate) entities: Vec<Arc<ast::Entity>>,
}

/// Converts a miette diagnostic (cedar's error type) into ours: the first label gives the position, `related`
/// errors are reported separately, `fallback` positions errors that carry no span.
pub(crate) fn from_miette(
    file: &Path,
    source: &str,
    err: &dyn miette::Diagnostic,
    fallback: Option<(usize, usize)>,
    out: &mut Vec<Diagnostic>,
) {
    let mut msg = err.to_string();
    if let Some(help) = err.help() {
        msg.push_str(&format!(" (help: {help})"));
    }
    let offset = err.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    out.push(match (offset, fallback) {
        (Some(o), _) => Diagnostic::at_offset(file, source, o, msg),
        (None, Some((line, col))) => Diagnostic::at(file, line, col, msg),
        (None, None) => Diagnostic::file(file, msg),
    });
    if let Some(related) = err.related() {
        for r in related {
            from_miette(file, source, r, fallback, out);
        }
    }
}

/// Parses the schema (`.cedarschema` or `.cedarschema.json`), returning it with its JSON form (for attribute facts).
pub(crate) fn load_schema(
    path: &Path,
    errors: &mut Vec<Diagnostic>,
) -> Option<(Schema, EntityAttrs)> {
    let source = match read_file(path) {
        Ok(s) => s,
        Err(d) => {
            errors.push(d);
            return None;
        }
    };
    let is_json = path.to_string_lossy().ends_with(".json");
    let (schema, json) = if is_json {
        let json: serde_json::Value = match serde_json::from_str(&source) {
            Ok(j) => j,
            Err(e) => {
                errors.push(Diagnostic::at(
                    path,
                    e.line(),
                    e.column(),
                    format!("invalid JSON schema: {e}"),
                ));
                return None;
            }
        };
        match Schema::from_json_value(json.clone()) {
            Ok(s) => (s, json),
            Err(e) => {
                from_miette(path, &source, &e, None, errors);
                return None;
            }
        }
    } else {
        let schema = match Schema::from_cedarschema_str(&source) {
            Ok((s, _warnings)) => s,
            Err(e) => {
                from_miette(path, &source, &e, None, errors);
                return None;
            }
        };
        // Parsing succeeded above, so the fragment parses too; its JSON form is only used for attribute facts.
        let json = SchemaFragment::from_cedarschema_str(&source)
            .ok()
            .and_then(|(f, _)| f.to_json_value().ok())
            .unwrap_or(serde_json::Value::Null);
        (schema, json)
    };
    let declared: HashSet<String> = schema.entity_types().map(|t| t.to_string()).collect();
    let missing: Vec<&str> = REQUIRED_TYPES
        .iter()
        .copied()
        .filter(|t| !declared.contains(*t))
        .collect();
    if !missing.is_empty() {
        errors.push(Diagnostic::file(
            path,
            format!(
                "the schema must declare the entity types the engine creates (without a namespace); missing: {}",
                missing.join(", ")
            ),
        ));
        return None;
    }
    Some((schema, EntityAttrs::from_schema_json(&json)))
}

/// Parses one policy file: every policy must carry `@id("...")`; `@hold` only on a `forbid`.
pub(crate) fn load_policies(
    path: &Path,
    errors: &mut Vec<Diagnostic>,
) -> Option<(String, Vec<Loaded>)> {
    let source = match read_file(path) {
        Ok(s) => s,
        Err(d) => {
            errors.push(d);
            return None;
        }
    };
    let pset: PolicySet = match source.parse() {
        Ok(p) => p,
        Err(e) => {
            let e: cedar_policy::ParseErrors = e;
            from_miette(path, &source, &e, None, errors);
            return None;
        }
    };
    if pset.templates().next().is_some() {
        errors.push(Diagnostic::file(
            path,
            "templates (policies with ?principal or ?resource slots) are not supported",
        ));
    }
    let mut out = Vec::new();
    // The parser names policies policy0, policy1, ... in file order; their text is the exact source slice, so a
    // forward search from the previous policy's end finds each one's position.
    let mut cursor = 0;
    for i in 0..pset.policies().count() {
        let Some(policy) = pset.policy(&PolicyId::new(format!("policy{i}"))) else {
            continue;
        };
        let text = policy.to_string();
        let offset = source
            .get(cursor..)
            .and_then(|rest| rest.find(&text))
            .map(|o| o + cursor)
            .unwrap_or(cursor);
        cursor = offset + text.len();
        let (line, column) = line_col(&source, offset);
        let Some(id) = policy.annotation("id") else {
            errors.push(Diagnostic::at(
                path,
                line,
                column,
                "policy has no @id(\"...\") annotation (every policy needs a unique id)",
            ));
            continue;
        };
        if id.trim().is_empty() || id.trim() != id {
            errors.push(Diagnostic::at(
                path,
                line,
                column,
                format!("@id(\"{id}\"): an id must be non-empty, without surrounding spaces"),
            ));
            continue;
        }
        let hold = policy.annotation("hold").is_some();
        if hold && policy.effect() != CedarEffect::Forbid {
            errors.push(Diagnostic::at(
                path,
                line,
                column,
                format!("policy `{id}`: @hold is only allowed on a forbid policy"),
            ));
            continue;
        }
        out.push(Loaded {
            policy: policy.new_id(PolicyId::new(id)),
            file: path.to_path_buf(),
            line,
            column,
            hold,
        });
    }
    Some((source, out))
}

/// Strict validation of every policy; errors point into the policy's own file.
pub(crate) fn validate(
    schema: &Schema,
    pset: &PolicySet,
    sources: &HashMap<PathBuf, String>,
    origin: &HashMap<String, (PathBuf, usize, usize)>,
    errors: &mut Vec<Diagnostic>,
) {
    let result = Validator::new(schema.clone()).validate(pset, ValidationMode::Strict);
    for e in result.validation_errors() {
        let id = e.policy_id().to_string();
        match origin.get(&id) {
            Some((file, line, col)) => {
                let source = sources.get(file).map(String::as_str).unwrap_or("");
                let mut found = Vec::new();
                from_miette(file, source, e, Some((*line, *col)), &mut found);
                for mut d in found {
                    d.message = format!("policy `{id}`: {}", d.message);
                    errors.push(d);
                }
            }
            None => errors.push(Diagnostic::file(
                "<policies>",
                format!("policy `{id}`: {e}"),
            )),
        }
    }
}

/// Whether a policy's action scope can match `action` (whose action-group ancestors are `ancestors`).
pub(crate) fn applies_to(
    policy: &Policy,
    action: &EntityUid,
    ancestors: &HashSet<EntityUid>,
) -> bool {
    match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => &a == action,
        ActionConstraint::In(list) => list.iter().any(|a| a == action || ancestors.contains(a)),
    }
}

/// Whether a policy applies to any action (the only ones used for actions the schema does not know).
pub(crate) fn any_action(policy: &Policy) -> bool {
    matches!(policy.action_constraint(), ActionConstraint::Any)
}

/// The roles a permit rests on: `principal in Role::"x"` in its scope and/or `@role("x")` (comma-separated allowed).
pub(crate) fn roles_of(policy: &Policy) -> Vec<String> {
    let mut roles = Vec::new();
    if policy.effect() != CedarEffect::Permit {
        return roles;
    }
    let scope = match policy.principal_constraint() {
        PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => Some(u),
        _ => None,
    };
    if let Some(u) = scope.filter(|u| u.type_name().to_string() == "Role") {
        roles.push(u.id().unescaped().to_string());
    }
    if let Some(list) = policy.annotation("role") {
        for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            if !roles.iter().any(|x| x == r) {
                roles.push(r.to_string());
            }
        }
    }
    roles
}

/// Roles a permit's conditions rely on (`when { principal in Role::"x" }`, and the same under `||`, `&&`, an
/// `if` branch, or a double negation) without resting on them as [`roles_of`] sees it. The grants such a permit
/// relies on would never be named as used: a use-limited grant would never be spent, and the decision record would
/// not name it. A role the permit only excludes (`unless { principal in Role::"suspended" }`) is not relied on.
pub(crate) fn unattributed_roles(policy: &Policy) -> Vec<String> {
    if policy.effect() != CedarEffect::Permit {
        return Vec::new();
    }
    let named = roles_of(policy);
    let mut out = Vec::new();
    if let Ok(est) = policy.to_json() {
        for c in est["conditions"].as_array().into_iter().flatten() {
            relied_roles(&c["body"], c["kind"] == "when", &mut out);
        }
    }
    out.retain(|r| !named.contains(r));
    out.sort();
    out.dedup();
    out
}

/// Collects the `Role` ids that `expr` (Cedar's JSON form) tests membership in where a true test helps it hold
/// (`positive`); negation flips, `&&`, `||` and the branches of an `if` keep the polarity.
fn relied_roles(expr: &serde_json::Value, positive: bool, out: &mut Vec<String>) {
    let Some((op, arg)) = expr.as_object().and_then(|o| o.iter().next()) else {
        return;
    };
    match op.as_str() {
        "!" => relied_roles(&arg["arg"], !positive, out),
        "&&" | "||" => {
            relied_roles(&arg["left"], positive, out);
            relied_roles(&arg["right"], positive, out);
        }
        "if-then-else" => {
            relied_roles(&arg["then"], positive, out);
            relied_roles(&arg["else"], positive, out);
        }
        "in" if positive => {
            let right = &arg["right"];
            let literals = match right.get("Set").and_then(|s| s.as_array()) {
                Some(items) => items.iter().collect::<Vec<_>>(),
                None => vec![right],
            };
            for l in literals {
                let e = &l["Value"]["__entity"];
                if e["type"] == "Role" {
                    if let Some(id) = e["id"].as_str() {
                        out.push(id.to_string());
                    }
                }
            }
        }
        _ => {}
    }
}

/// Builds a policy set from policies known to have unique ids.
pub(crate) fn set_of<'a>(policies: impl Iterator<Item = &'a Policy>) -> Result<PolicySet, String> {
    let mut set = PolicySet::new();
    for p in policies {
        set.add(p.clone()).map_err(|e| e.to_string())?;
    }
    Ok(set)
}

/// Wraps errors found while loading.
pub(crate) fn fail(errors: Vec<Diagnostic>) -> Result<(), Diagnostics> {
    Diagnostics(errors).into_result()
}

/// A loaded, validated policy set with its schema, indexed by action: what the backend decides with.
pub(crate) struct PolicyIndex {
    pub(crate) schema: Schema,
    /// Which attributes the schema declares entity-typed (for building entities).
    pub(crate) entity_attrs: EntityAttrs,
    /// Every policy id, in load order.
    pub(crate) ids: Vec<String>,
    /// Action id (e.g. `deleteDatabase`) -> the policies that can apply to it.
    pub(crate) by_action: HashMap<String, ActionIndex>,
    /// For actions the schema does not declare: only the policies whose action scope is unconstrained.
    pub(crate) any_action: ActionIndex,
    /// Policy id -> roles it rests on (permits only).
    pub(crate) roles: HashMap<String, Vec<String>>,
}

/// Loads and validates `schema` and `policy_files`, then indexes the policies by action. Every problem is reported
/// (see [`CedarBackend::load`](super::CedarBackend::load)).
pub(crate) fn load(schema: &Path, policy_files: &[PathBuf]) -> Result<PolicyIndex, Diagnostics> {
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
    Ok(PolicyIndex {
        schema: schema_obj,
        entity_attrs,
        ids,
        by_action,
        any_action,
        roles,
    })
}
