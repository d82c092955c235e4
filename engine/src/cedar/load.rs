//! Loading a Cedar bundle: schema and policy files parsed, ids and holds checked, strict validation, every problem
//! reported with file, line and column. Builds the per-action policy index the hot path reads; decides nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Effect as CedarEffect, Entity, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, Schema, SchemaFragment, SlotId, Template, ValidationMode, Validator,
};
use cedar_policy_core::ast;

use super::convert::EntityAttrs;
use super::data::read_json_array;
use crate::diag::{Diagnostic, Diagnostics, line_col, read_file};
use crate::manifest::CedarValidation;

/// Entity types the engine creates itself. A schema that declares all of them without a namespace (the older form,
/// `schemas/jitgate.cedarschema`) is used as it is; any other schema gets the engine's own types added under
/// [`BASE_NAMESPACE`] (see `base.cedarschema`).
pub(crate) const REQUIRED_TYPES: [&str; 6] =
    ["User", "Workload", "Anonymous", "Group", "Role", "Grant"];

/// The namespace of the entity types the engine brings to a schema that does not declare them itself.
pub(crate) const BASE_NAMESPACE: &str = "Jitgate";

/// The schema the engine brings (its types under [`BASE_NAMESPACE`]).
pub(crate) const BASE_SCHEMA: &str = include_str!("base.cedarschema");

/// The engine's JIT role type in its namespace (never dropped: the engine makes one per grant).
pub(crate) const BASE_ROLE: &str = "JitRole";

/// The engine's grant type in its namespace (never dropped).
pub(crate) const BASE_GRANT: &str = "JitGrant";

/// Where the engine's own entity types live in a bundle's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BaseTypes {
    /// The bundle's schema declares them itself, without a namespace (`Grant`, `Role`, ...).
    Declared,
    /// The engine added its types under [`BASE_NAMESPACE`]: `Jitgate::JitRole`, `Jitgate::JitGrant` and, of its
    /// default types (`User`, `Group`, `Service`, ...), those the application does not declare itself (`added`,
    /// short names), which the same short names in requests resolve to.
    Namespaced {
        /// Short names of the default types the engine added (not declared by the application).
        added: Vec<String>,
    },
}

impl BaseTypes {
    /// The full name of the JIT role type: `Role`, or `Jitgate::JitRole`.
    pub(crate) fn role_type(&self) -> String {
        match self {
            BaseTypes::Declared => "Role".to_string(),
            BaseTypes::Namespaced { .. } => format!("{BASE_NAMESPACE}::{BASE_ROLE}"),
        }
    }

    /// The full name of the grant type: `Grant`, or `Jitgate::JitGrant`.
    pub(crate) fn grant_type(&self) -> String {
        match self {
            BaseTypes::Declared => "Grant".to_string(),
            BaseTypes::Namespaced { .. } => format!("{BASE_NAMESPACE}::{BASE_GRANT}"),
        }
    }

    /// The default types the engine added, as (short name, full name): what short names in requests resolve to.
    pub(crate) fn aliases(&self) -> Vec<(String, String)> {
        match self {
            BaseTypes::Declared => Vec::new(),
            BaseTypes::Namespaced { added } => added
                .iter()
                .map(|a| (a.clone(), format!("{BASE_NAMESPACE}::{a}")))
                .collect(),
        }
    }
}

/// The engine's base schema in Cedar's JSON form.
fn base_fragment_json() -> serde_json::Value {
    SchemaFragment::from_cedarschema_str(BASE_SCHEMA)
        .ok()
        .and_then(|(f, _)| f.to_json_value().ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The engine's base schema (JSON form) for an application that declares `declared` (qualified names): without the
/// default types whose name the application declares in the empty namespace (Cedar forbids a namespaced type named
/// like one of the empty namespace), with the short names of the defaults it keeps.
fn base_for(declared: &HashSet<String>) -> (serde_json::Value, Vec<String>) {
    let mut json = base_fragment_json();
    let mut added = Vec::new();
    if let Some(types) = json
        .get_mut(BASE_NAMESPACE)
        .and_then(|ns| ns.get_mut("entityTypes"))
        .and_then(serde_json::Value::as_object_mut)
    {
        types.retain(|name, _| {
            name == BASE_ROLE || name == BASE_GRANT || !declared.contains(name.as_str())
        });
        added = types
            .keys()
            .filter(|n| *n != BASE_ROLE && *n != BASE_GRANT)
            .cloned()
            .collect();
    }
    added.sort();
    (json, added)
}

/// The entity types a schema in Cedar's JSON form declares, qualified by their namespace.
fn declared_types(json: &serde_json::Value) -> HashSet<String> {
    let mut out = HashSet::new();
    for (ns, body) in json.as_object().into_iter().flatten() {
        for name in body
            .get("entityTypes")
            .and_then(serde_json::Value::as_object)
            .into_iter()
            .flat_map(|t| t.keys())
        {
            out.insert(if ns.is_empty() {
                name.clone()
            } else {
                format!("{ns}::{name}")
            });
        }
    }
    out
}

/// One parsed policy with where it came from.
pub(crate) struct Loaded {
    pub(crate) policy: Policy,
    pub(crate) file: PathBuf,
    /// 1-based line and column of the policy's first character (its first annotation).
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) hold: bool,
}

/// One parsed template (a policy with `?principal` / `?resource` slots) with where it came from.
pub(crate) struct LoadedTemplate {
    pub(crate) template: Template,
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// The policies that can apply to one action, split into the main set and the hold set.
#[derive(Debug)]
pub(crate) struct ActionIndex {
    pub(crate) uid: Option<EntityUid>,
    pub(crate) main: PolicySet,
    pub(crate) holds: Option<PolicySet>,
    /// The action entity and its action-group ancestors, as the schema declares them.
    pub(crate) entities: Vec<Arc<ast::Entity>>,
    /// The main set's permits with their conditions removed, built on the first deny that no policy determined
    /// (to name the permits whose scope matched); never on the allow path.
    pub(crate) permit_scopes: std::sync::OnceLock<PolicySet>,
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

/// Parses the schema (`.cedarschema` or `.cedarschema.json`), returning it with its JSON form (for attribute facts)
/// and where the engine's own types are: declared by the schema itself, or added by the engine under
/// [`BASE_NAMESPACE`] when the schema does not declare all of [`REQUIRED_TYPES`] without a namespace.
pub(crate) fn load_schema(
    path: &Path,
    errors: &mut Vec<Diagnostic>,
) -> Option<(Schema, EntityAttrs, BaseTypes)> {
    let source = match read_file(path) {
        Ok(s) => s,
        Err(d) => {
            errors.push(d);
            return None;
        }
    };
    let is_json = path.to_string_lossy().ends_with(".json");
    let (fragment, json) = if is_json {
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
        match SchemaFragment::from_json_value(json.clone()) {
            Ok(f) => (f, json),
            Err(e) => {
                from_miette(path, &source, &e, None, errors);
                return None;
            }
        }
    } else {
        match SchemaFragment::from_cedarschema_str(&source) {
            Ok((f, _warnings)) => {
                // Its JSON form (which consumes a fragment, so a second parse of the same source gives it) is only
                // used for attribute facts and the declared types.
                let json = SchemaFragment::from_cedarschema_str(&source)
                    .ok()
                    .and_then(|(g, _)| g.to_json_value().ok())
                    .unwrap_or(serde_json::Value::Null);
                (f, json)
            }
            Err(e) => {
                from_miette(path, &source, &e, None, errors);
                return None;
            }
        }
    };
    if json.get(BASE_NAMESPACE).is_some() {
        errors.push(Diagnostic::file(
            path,
            format!(
                "the namespace `{BASE_NAMESPACE}` is reserved for the entity types the engine brings (Jitgate::User, \
                 Jitgate::Group, Jitgate::Role, Jitgate::Grant, ...); name the application's namespace otherwise"
            ),
        ));
        return None;
    }
    let declared = declared_types(&json);
    let (schema, json, base) = if REQUIRED_TYPES.iter().all(|t| declared.contains(*t)) {
        // Rebuilt from the source so that errors point into it.
        let schema = if is_json {
            Schema::from_json_value(json.clone()).map_err(|e| {
                let mut found = Vec::new();
                from_miette(path, &source, &e, None, &mut found);
                found
            })
        } else {
            Schema::from_cedarschema_str(&source)
                .map(|(s, _)| s)
                .map_err(|e| {
                    let mut found = Vec::new();
                    from_miette(path, &source, &e, None, &mut found);
                    found
                })
        };
        match schema {
            Ok(s) => (s, json, BaseTypes::Declared),
            Err(found) => {
                errors.extend(found);
                return None;
            }
        }
    } else {
        let (base_json, added) = base_for(&declared);
        let base_fragment = match SchemaFragment::from_json_value(base_json.clone()) {
            Ok(f) => f,
            Err(e) => {
                errors.push(Diagnostic::file(
                    path,
                    format!("the engine's base schema does not load: {e}"),
                ));
                return None;
            }
        };
        let schema = match Schema::from_schema_fragments([base_fragment, fragment]) {
            Ok(s) => s,
            Err(e) => {
                let mut found = Vec::new();
                from_miette(path, &source, &e, None, &mut found);
                for d in &mut found {
                    if d.message.contains(BASE_NAMESPACE) {
                        d.message.push_str(&format!(
                            " (the engine brings its own types under `{BASE_NAMESPACE}::`, see \
                             engine/src/cedar/base.cedarschema: `{BASE_ROLE}` and `{BASE_GRANT}` are its names)"
                        ));
                    }
                }
                errors.extend(found);
                return None;
            }
        };
        let mut merged = json;
        if let (Some(m), Some(b)) = (merged.as_object_mut(), base_json.as_object()) {
            m.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        (schema, merged, BaseTypes::Namespaced { added })
    };
    Some((schema, EntityAttrs::from_schema_json(&json), base))
}

/// Parses one policy file: a policy without `@id("...")` is named by its position (see [`generated_id`]) and a
/// warning says so; `@hold` only on a `forbid`.
pub(crate) fn load_policies(
    path: &Path,
    prefix: Option<&str>,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<(String, Vec<Loaded>, Vec<LoadedTemplate>)> {
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
    let mut out = Vec::new();
    let mut templates = Vec::new();
    // The parser names policies and templates policy0, policy1, ... in file order; their text is the exact source
    // slice, so a forward search from the previous policy's end finds each one's position.
    let mut cursor = 0;
    for i in 0..pset.policies().count() + pset.templates().count() {
        let pid = PolicyId::new(format!("policy{i}"));
        let Some(policy) = pset.policy(&pid) else {
            if let Some(t) = pset.template(&pid) {
                let text = t.to_string();
                let offset = source
                    .get(cursor..)
                    .and_then(|rest| rest.find(&text))
                    .map(|o| o + cursor)
                    .unwrap_or(cursor);
                cursor = offset + text.len();
                let (line, column) = line_col(&source, offset);
                let id = match t.annotation("id") {
                    Some(id) => id.to_string(),
                    None => {
                        let generated = generated_id(prefix, i);
                        warnings.push(Diagnostic::at(
                            path,
                            line,
                            column,
                            format!(
                                "template has no @id(\"...\"); it is named `{generated}` after its place in the \
                                 file, which changes when policies are added above it, and links must use that name"
                            ),
                        ));
                        generated
                    }
                };
                if t.annotation("hold").is_some() {
                    errors.push(Diagnostic::at(
                        path,
                        line,
                        column,
                        format!("template `{id}`: @hold is only allowed on a forbid policy, not on a template"),
                    ));
                    continue;
                }
                templates.push(LoadedTemplate {
                    template: t.new_id(PolicyId::new(id)),
                    file: path.to_path_buf(),
                    line,
                    column,
                });
            }
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
        let generated;
        let id = match policy.annotation("id") {
            Some(id) => id,
            None => {
                generated = generated_id(prefix, i);
                warnings.push(Diagnostic::at(
                    path,
                    line,
                    column,
                    format!(
                        "policy has no @id(\"...\"); it is named `{generated}` after its place in the file, which \
                         changes when policies are added above it"
                    ),
                ));
                generated.as_str()
            }
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
    Some((source, out, templates))
}

/// One entry of a links file (`links.json`): a template linked to entities for its slots.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkSpec {
    /// The linked policy's id, named in decisions.
    id: String,
    /// The template's `@id`.
    template: String,
    /// Slot (`?principal`, `?resource`) -> the entity, as `{"type", "id"}` (or `{"__entity": {...}}`).
    values: BTreeMap<String, serde_json::Value>,
}

/// Reads links files (`[{"id", "template", "values": {"?principal": {"type", "id"}, "?resource": ...}}]`) and
/// links each to its template, giving a static policy named by the link's id (so decisions name the link). Every
/// problem names the file, the link's line and its id: a missing template, a slot the template does not have or one
/// it has left unfilled, an entity that is not a `{"type", "id"}`.
pub(crate) fn load_links(
    files: &[PathBuf],
    templates: &[LoadedTemplate],
    schema: Option<&Schema>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Loaded> {
    let mut out = Vec::new();
    for file in files {
        let (source, items) = match read_json_array(
            file,
            "links must be a JSON array of {\"id\", \"template\", \"values\"}",
        ) {
            Ok(x) => x,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        let positions = super::data::element_positions(&source);
        for (i, item) in items.into_iter().enumerate() {
            let (line, column) = positions.get(i).copied().unwrap_or((1, 1));
            let named = item["id"]
                .as_str()
                .map(|s| format!("link `{s}`"))
                .unwrap_or_else(|| format!("link #{}", i + 1));
            let mut fail = |msg: String| {
                errors.push(Diagnostic::at(
                    file,
                    line,
                    column,
                    format!("{named}: {msg}"),
                ))
            };
            let spec: LinkSpec = match serde_json::from_value(item) {
                Ok(s) => s,
                Err(e) => {
                    fail(e.to_string());
                    continue;
                }
            };
            if spec.id.trim().is_empty() || spec.id.trim() != spec.id {
                fail("an id must be non-empty, without surrounding spaces".into());
                continue;
            }
            let Some(t) = templates
                .iter()
                .find(|t| t.template.id().to_string() == spec.template)
            else {
                let mut known: Vec<String> = templates
                    .iter()
                    .map(|t| t.template.id().to_string())
                    .collect();
                known.sort();
                fail(format!(
                    "no template `{}` in the bundle's policies (templates: {})",
                    spec.template,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
                continue;
            };
            let slots: Vec<String> = t.template.slots().map(ToString::to_string).collect();
            let mut vals: HashMap<SlotId, EntityUid> = HashMap::new();
            let mut bad = false;
            for (slot, value) in &spec.values {
                let slot_id = match slot.as_str() {
                    "?principal" if slots.iter().any(|s| s == "?principal") => SlotId::principal(),
                    "?resource" if slots.iter().any(|s| s == "?resource") => SlotId::resource(),
                    _ => {
                        fail(format!(
                            "template `{}` has no slot `{slot}` (its slots: {})",
                            spec.template,
                            slots.join(", ")
                        ));
                        bad = true;
                        continue;
                    }
                };
                match EntityUid::from_json(value.clone()) {
                    Ok(u) => {
                        if let Some(schema) = schema {
                            let allowed = slot_types(schema, &t.template, slot == "?principal");
                            let ty = u.type_name().to_string();
                            if !allowed.contains(&ty) {
                                let mut allowed: Vec<String> = allowed.into_iter().collect();
                                allowed.sort();
                                fail(format!(
                                    "{slot} is {u}, but the actions of template `{}` apply to {} of type {}",
                                    spec.template,
                                    if slot == "?principal" {
                                        "principals"
                                    } else {
                                        "resources"
                                    },
                                    if allowed.is_empty() {
                                        "none".to_string()
                                    } else {
                                        allowed.join(", ")
                                    }
                                ));
                                bad = true;
                                continue;
                            }
                        }
                        vals.insert(slot_id, u);
                    }
                    Err(e) => {
                        fail(format!("{slot}: not an entity {{\"type\", \"id\"}}: {e}"));
                        bad = true;
                    }
                }
            }
            if bad {
                continue;
            }
            let missing: Vec<&String> = slots
                .iter()
                .filter(|s| !spec.values.contains_key(*s))
                .collect();
            if !missing.is_empty() {
                fail(format!(
                    "template `{}` has slot(s) {} that the link does not fill",
                    spec.template,
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            }
            let mut set = PolicySet::new();
            let linked = set
                .add_template(t.template.clone())
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    set.link(t.template.id().clone(), PolicyId::new(&spec.id), vals)
                        .map_err(|e| e.to_string())
                })
                .and_then(|()| {
                    set.policy(&PolicyId::new(&spec.id))
                        .ok_or_else(|| "the linked policy is missing".to_string())
                        .and_then(|p| p.to_json().map_err(|e| e.to_string()))
                })
                .and_then(|est| {
                    Policy::from_json(Some(PolicyId::new(&spec.id)), est).map_err(|e| e.to_string())
                });
            match linked {
                Ok(policy) => out.push(Loaded {
                    policy,
                    file: file.clone(),
                    line,
                    column,
                    hold: false,
                }),
                Err(e) => fail(format!("cannot link template `{}`: {e}", spec.template)),
            }
        }
    }
    out
}

/// The id of the `index`-th policy (from 0) of a file when it carries no `@id`: `policy<index>`, as the Cedar CLI
/// names the policies of its one file; in a bundle of several policy files, prefixed with the file's path relative
/// to the bundle and `:` (`admin/rules.cedar:policy2`), so ids stay unique.
pub(crate) fn generated_id(prefix: Option<&str>, index: usize) -> String {
    match prefix {
        Some(p) => format!("{p}:policy{index}"),
        None => format!("policy{index}"),
    }
}

/// The entity types a template's slot may hold: the principal (or resource) types of the actions the template
/// applies to, and the types that may contain them (a slot is compared with `==` or `in`).
fn slot_types(schema: &Schema, template: &Template, principal: bool) -> HashSet<String> {
    let action_entities = schema.action_entities().ok();
    let mut out = HashSet::new();
    for action in schema.actions() {
        let applies = match template.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => &a == action,
            ActionConstraint::In(list) => {
                let ancestors: HashSet<EntityUid> = action_entities
                    .as_ref()
                    .and_then(|e| e.ancestors(action).map(|a| a.cloned().collect()))
                    .unwrap_or_default();
                list.iter().any(|a| a == action || ancestors.contains(a))
            }
        };
        if !applies {
            continue;
        }
        let types: Vec<cedar_policy::EntityTypeName> = if principal {
            schema
                .principals_for_action(action)
                .map(|i| i.cloned().collect())
                .unwrap_or_default()
        } else {
            schema
                .resources_for_action(action)
                .map(|i| i.cloned().collect())
                .unwrap_or_default()
        };
        for ty in &types {
            out.insert(ty.to_string());
            for a in schema.ancestors(ty).into_iter().flatten() {
                out.insert(a.to_string());
            }
        }
    }
    out
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
pub(crate) fn roles_of(policy: &Policy, role_type: &str) -> Vec<String> {
    let mut roles = Vec::new();
    if policy.effect() != CedarEffect::Permit {
        return roles;
    }
    let scope = match policy.principal_constraint() {
        PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => Some(u),
        _ => None,
    };
    if let Some(u) = scope.filter(|u| u.type_name().to_string() == role_type) {
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
pub(crate) fn unattributed_roles(policy: &Policy, role_type: &str) -> Vec<String> {
    if policy.effect() != CedarEffect::Permit {
        return Vec::new();
    }
    let named = roles_of(policy, role_type);
    let mut out = Vec::new();
    if let Ok(est) = policy.to_json() {
        for c in est["conditions"].as_array().into_iter().flatten() {
            relied_roles(&c["body"], c["kind"] == "when", role_type, &mut out);
        }
    }
    out.retain(|r| !named.contains(r));
    out.sort();
    out.dedup();
    out
}

/// Collects the `Role` ids that `expr` (Cedar's JSON form) tests membership in where a true test helps it hold
/// (`positive`); negation flips, `&&`, `||` and the branches of an `if` keep the polarity.
fn relied_roles(expr: &serde_json::Value, positive: bool, role_type: &str, out: &mut Vec<String>) {
    let Some((op, arg)) = expr.as_object().and_then(|o| o.iter().next()) else {
        return;
    };
    match op.as_str() {
        "!" => relied_roles(&arg["arg"], !positive, role_type, out),
        "&&" | "||" => {
            relied_roles(&arg["left"], positive, role_type, out);
            relied_roles(&arg["right"], positive, role_type, out);
        }
        "if-then-else" => {
            relied_roles(&arg["then"], positive, role_type, out);
            relied_roles(&arg["else"], positive, role_type, out);
        }
        "in" if positive => {
            let right = &arg["right"];
            let literals = match right.get("Set").and_then(|s| s.as_array()) {
                Some(items) => items.iter().collect::<Vec<_>>(),
                None => vec![right],
            };
            for l in literals {
                let e = &l["Value"]["__entity"];
                if e["type"] == role_type {
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
    /// Entity literals the policies name (their data is part of every request).
    pub(crate) literals: Vec<ast::EntityUID>,
    /// What loaded but deserves a word (policies without `@id`).
    pub(crate) warnings: Vec<Diagnostic>,
    /// Where the engine's own entity types are (declared by the bundle, or brought under `Jitgate::`).
    pub(crate) base: BaseTypes,
}

/// Loads and validates `schema` and `policy_files`, then indexes the policies by action. Every problem is reported
/// (see [`CedarBackend::load`](super::CedarBackend::load)).
pub(crate) fn load(
    dir: &Path,
    schema: &Path,
    policy_files: &[PathBuf],
    link_files: &[PathBuf],
    validation: CedarValidation,
) -> Result<PolicyIndex, Diagnostics> {
    let mut errors = Vec::new();
    let schema_parts = load_schema(schema, &mut errors);

    let mut sources: HashMap<PathBuf, String> = HashMap::new();
    let mut loaded: Vec<Loaded> = Vec::new();
    let mut templates: Vec<LoadedTemplate> = Vec::new();
    let mut warnings = Vec::new();
    for file in policy_files {
        let rel = file
            .strip_prefix(dir)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        let prefix = (policy_files.len() > 1).then_some(rel.as_str());
        if let Some((src, policies, t)) = load_policies(file, prefix, &mut errors, &mut warnings) {
            sources.insert(file.clone(), src);
            loaded.extend(policies);
            templates.extend(t);
        }
    }
    for (i, t) in templates.iter().enumerate() {
        let id = t.template.id();
        if let Some(first) = templates
            .get(..i)
            .unwrap_or(&[])
            .iter()
            .find(|f| f.template.id() == id)
        {
            errors.push(Diagnostic::at(
                &t.file,
                t.line,
                t.column,
                format!(
                    "duplicate template id `{id}` (first defined at {}:{}:{})",
                    first.file.display(),
                    first.line,
                    first.column
                ),
            ));
        }
    }
    let links = load_links(
        link_files,
        &templates,
        schema_parts.as_ref().map(|(s, _, _)| s),
        &mut errors,
    );
    for l in &links {
        if let Ok(src) = std::fs::read_to_string(&l.file) {
            sources.entry(l.file.clone()).or_insert(src);
        }
    }
    loaded.extend(links);
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
        if let Some(t) = templates.iter().find(|t| t.template.id().to_string() == id) {
            errors.push(Diagnostic::at(
                &l.file,
                l.line,
                l.column,
                format!(
                    "policy id `{id}` is also a template's (at {}:{}:{})",
                    t.file.display(),
                    t.line,
                    t.column
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
    let Some((schema_obj, entity_attrs, base)) = schema_parts else {
        return Err(Diagnostics(errors));
    };
    let role_type = base.role_type();
    let mut checked = all.clone();
    for t in &templates {
        let id = t.template.id().to_string();
        origin
            .entry(id)
            .or_insert((t.file.clone(), t.line, t.column));
        if let Err(e) = checked.add_template(t.template.clone()) {
            errors.push(Diagnostic::at(&t.file, t.line, t.column, e.to_string()));
        }
    }
    match validation {
        CedarValidation::Strict => validate(&schema_obj, &checked, &sources, &origin, &mut errors),
        CedarValidation::Warn => {
            let mut found = Vec::new();
            validate(&schema_obj, &checked, &sources, &origin, &mut found);
            warnings.extend(found.into_iter().map(|mut d| {
                d.message = format!(
                    "{} (validation = \"warn\": the bundle loads; if it errs, a deny)",
                    d.message
                );
                d
            }));
        }
    }
    for l in &unique {
        let missing = unattributed_roles(&l.policy, &role_type);
        if let Some(first) = missing.first() {
            errors.push(Diagnostic::at(
                &l.file,
                l.line,
                l.column,
                format!(
                    "policy `{}` relies on role {} outside its principal scope, so the grants it rests on would never \
                     be named as used (a use-limited grant would never be spent): write `principal in \
                     {role_type}::\"{first}\"` in its scope, or annotate it `@role(\"{}\")`",
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
            permit_scopes: std::sync::OnceLock::new(),
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
        permit_scopes: std::sync::OnceLock::new(),
    };
    let roles = unique
        .iter()
        .map(|l| (l.policy.id().to_string(), roles_of(&l.policy, &role_type)))
        .filter(|(_, r)| !r.is_empty())
        .collect();
    let ids = unique.iter().map(|l| l.policy.id().to_string()).collect();
    let mut literals = Vec::new();
    for l in &unique {
        if let Ok(est) = l.policy.to_json() {
            entity_literals(&est, &mut literals);
        }
    }
    literals.sort();
    literals.dedup();
    Ok(PolicyIndex {
        schema: schema_obj,
        entity_attrs,
        ids,
        by_action,
        any_action,
        roles,
        literals,
        warnings,
        base,
    })
}

/// Every entity literal (`{"__entity": {"type", "id"}}`) in a policy's JSON form.
fn entity_literals(v: &serde_json::Value, out: &mut Vec<ast::EntityUID>) {
    match v {
        serde_json::Value::Object(o) => {
            if let Some(e) = o.get("__entity") {
                if let (Some(t), Some(id)) = (e["type"].as_str(), e["id"].as_str()) {
                    if let Ok(u) = ast::EntityUID::with_eid_and_type(t, id) {
                        out.push(u);
                    }
                }
            }
            for x in o.values() {
                entity_literals(x, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                entity_literals(x, out);
            }
        }
        _ => {}
    }
}
