//! Conversions from the engine's request model (JSON attributes, Unix times) to Cedar values, and the schema facts
//! those conversions need (which attributes are entity-typed). No policy evaluation happens here.

use std::collections::{HashMap, HashSet};

use cedar_policy::{EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::Value;

use crate::clock::UnixTime;
use crate::entity::EntityRef;

/// Attribute names declared entity-typed, per entity type (resource attributes) and per action (context attributes).
///
/// A string attribute such as `requester: "User::\"bob\""` becomes an entity reference only when the schema declares
/// that attribute as an entity type; everywhere else strings stay strings (so `scope: "Service::\"payments\""`,
/// declared `String`, keeps its text).
#[derive(Debug, Default, Clone)]
pub(crate) struct EntityAttrs {
    /// Entity type (as written in requests, e.g. `AccessRequest`) -> attribute names.
    pub(crate) by_type: HashMap<String, HashSet<String>>,
    /// Action id (e.g. `approve`) -> top-level context attribute names.
    pub(crate) by_action: HashMap<String, HashSet<String>>,
}

impl EntityAttrs {
    /// Reads the facts from the schema in its JSON form (`SchemaFragment::to_json_value` or a `.cedarschema.json`).
    pub(crate) fn from_schema_json(json: &Value) -> Self {
        let mut out = EntityAttrs::default();
        let Some(namespaces) = json.as_object() else {
            return out;
        };
        // Entity and common type names per namespace, to tell `EntityOrCommon` references apart.
        for (ns, body) in namespaces {
            let qualify = |name: &str| {
                if ns.is_empty() {
                    name.to_string()
                } else {
                    format!("{ns}::{name}")
                }
            };
            let entity_names: HashSet<String> = body
                .get("entityTypes")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let common = body.get("commonTypes").and_then(Value::as_object);
            let lookup = Lookup {
                entity_names: &entity_names,
                common,
            };
            if let Some(types) = body.get("entityTypes").and_then(Value::as_object) {
                for (name, def) in types {
                    let attrs = def
                        .get("shape")
                        .map(|s| lookup.entity_attrs(s, 0))
                        .unwrap_or_default();
                    if !attrs.is_empty() {
                        out.by_type.insert(qualify(name), attrs);
                    }
                }
            }
            if let Some(actions) = body.get("actions").and_then(Value::as_object) {
                for (name, def) in actions {
                    let ctx = def.get("appliesTo").and_then(|a| a.get("context"));
                    let attrs = ctx.map(|c| lookup.entity_attrs(c, 0)).unwrap_or_default();
                    if !attrs.is_empty() {
                        out.by_action.insert(name.clone(), attrs);
                    }
                }
            }
        }
        out
    }
}

struct Lookup<'a> {
    entity_names: &'a HashSet<String>,
    common: Option<&'a serde_json::Map<String, Value>>,
}

impl Lookup<'_> {
    /// Names of the top-level attributes of a record type (possibly behind common-type names) that are entity-typed.
    fn entity_attrs(&self, ty: &Value, depth: usize) -> HashSet<String> {
        let mut out = HashSet::new();
        let Some(record) = self.resolve(ty, depth) else {
            return out;
        };
        if let Some(attrs) = record.get("attributes").and_then(Value::as_object) {
            for (name, attr) in attrs {
                if self.is_entity(attr, depth) {
                    out.insert(name.clone());
                }
            }
        }
        out
    }

    /// Follows common-type references (bounded, in case of a cycle the schema parser would reject anyway).
    fn resolve<'v>(&'v self, ty: &'v Value, depth: usize) -> Option<&'v Value> {
        if depth > 8 {
            return None;
        }
        let kind = ty.get("type").and_then(Value::as_str)?;
        match kind {
            "Record" => Some(ty),
            "Entity" | "Set" | "Extension" | "String" | "Long" | "Boolean" => None,
            // `EntityOrCommon` (from the human format) or a bare common-type name.
            _ => {
                let name = if kind == "EntityOrCommon" {
                    ty.get("name").and_then(Value::as_str)?
                } else {
                    kind
                };
                let def = self.common?.get(name)?;
                self.resolve(def, depth + 1)
            }
        }
    }

    fn is_entity(&self, ty: &Value, depth: usize) -> bool {
        match ty.get("type").and_then(Value::as_str) {
            Some("Entity") => true,
            Some("EntityOrCommon") => {
                let Some(name) = ty.get("name").and_then(Value::as_str) else {
                    return false;
                };
                if self.common.is_some_and(|c| c.contains_key(name)) {
                    return depth < 8
                        && self
                            .common
                            .and_then(|c| c.get(name))
                            .is_some_and(|d| self.is_entity(d, depth + 1));
                }
                // An undeclared name here is an entity type of another namespace (or a qualified one).
                self.entity_names.contains(name) || name.contains("::")
            }
            _ => false,
        }
    }
}

/// Hour of the day (0-23) and ISO weekday (1 = Monday .. 7 = Sunday) of a Unix time, UTC.
pub(crate) fn hour_and_weekday(t: UnixTime) -> (i64, i64) {
    let hour = t.rem_euclid(86_400) / 3_600;
    // 1970-01-01 was a Thursday (ISO 4).
    let weekday = (t.div_euclid(86_400) + 3).rem_euclid(7) + 1;
    (hour, weekday)
}

/// Parses an entity type name, reusing the ones known from the schema.
pub(crate) fn type_name(
    cache: &HashMap<String, EntityTypeName>,
    ty: &str,
) -> Result<EntityTypeName, String> {
    if let Some(t) = cache.get(ty) {
        return Ok(t.clone());
    }
    ty.parse::<EntityTypeName>()
        .map_err(|e| format!("invalid entity type `{ty}`: {e}"))
}

/// A Cedar entity uid for an [`EntityRef`].
pub(crate) fn uid(
    cache: &HashMap<String, EntityTypeName>,
    e: &EntityRef,
) -> Result<EntityUid, String> {
    Ok(EntityUid::from_type_name_and_id(
        type_name(cache, &e.ty)?,
        EntityId::new(&e.id),
    ))
}

/// Converts a JSON value. Floats and nulls have no Cedar form and are skipped (`None`), inside sets and records too.
/// When `entity_attr` is set, a string of the form `Type::"id"` becomes an entity reference.
pub(crate) fn json_to_expr(
    cache: &HashMap<String, EntityTypeName>,
    v: &Value,
    entity_attr: bool,
) -> Option<RestrictedExpression> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n.as_i64().map(RestrictedExpression::new_long),
        Value::String(s) => {
            if entity_attr {
                if let Some(u) = s
                    .parse::<EntityRef>()
                    .ok()
                    .and_then(|e| uid(cache, &e).ok())
                {
                    return Some(RestrictedExpression::new_entity_uid(u));
                }
            }
            Some(RestrictedExpression::new_string(s.clone()))
        }
        Value::Array(items) => Some(RestrictedExpression::new_set(
            items
                .iter()
                .filter_map(|i| json_to_expr(cache, i, entity_attr)),
        )),
        Value::Object(map) => RestrictedExpression::new_record(
            map.iter()
                .filter_map(|(k, v)| json_to_expr(cache, v, false).map(|e| (k.clone(), e))),
        )
        .ok(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn weekday_and_hour() {
        // 2026-11-23 is a Monday.
        let monday_10 = crate::clock::parse_rfc3339("2026-11-23T10:30:00Z").unwrap();
        assert_eq!(hour_and_weekday(monday_10), (10, 1));
        let sunday_23 = crate::clock::parse_rfc3339("2026-11-29T23:59:59Z").unwrap();
        assert_eq!(hour_and_weekday(sunday_23), (23, 7));
        assert_eq!(hour_and_weekday(0), (0, 4));
        assert_eq!(hour_and_weekday(-1), (23, 3));
    }

    #[test]
    fn entity_attrs_follow_common_types() {
        let src = r#"
            entity User;
            type Ctx = { who: User, n: Long };
            entity Req = { requester: User, scope: String, nested: { x: User } };
            action a appliesTo { principal: User, resource: Req, context: Ctx };
        "#;
        let (frag, _) = cedar_policy::SchemaFragment::from_cedarschema_str(src).unwrap();
        let attrs = EntityAttrs::from_schema_json(&frag.to_json_value().unwrap());
        let req = attrs.by_type.get("Req").unwrap();
        assert!(req.contains("requester"));
        assert!(!req.contains("scope"));
        assert!(!req.contains("nested"));
        assert!(attrs.by_action.get("a").unwrap().contains("who"));
    }
}
