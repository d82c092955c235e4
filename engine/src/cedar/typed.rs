//! Schema-directed conversion of request JSON (principal attributes from token claims, resource attributes, context
//! attributes and claims) into Cedar values: the schema's declared type of each attribute, read once per bundle
//! load, says what a JSON value means. Evaluates no policy.
//!
//! What a declared type accepts (Cedar's JSON value format, plus the plain forms a token or a suite writes):
//! - `String`, `Long`, `Bool`: a JSON string, integer (a float without a fraction too), boolean;
//! - an entity type `T`: `{"__entity": {"type": "T", "id": "x"}}`, `{"type": "T", "id": "x"}`, the text
//!   `T::"x"`, or a plain id `"x"` (taken as `T::"x"`); another type is an error;
//! - `ipaddr`, `decimal`, `datetime`, `duration`: the constructor's argument as a string (`"10.0.0.0/8"`,
//!   `"12.50"`, `"2026-11-23"`, `"1h30m"`; a `decimal` may be a JSON number), or `{"__extn": {"fn": ..., "arg": ...}}`
//!   (also without the `__extn` wrapper);
//! - `Set<T>`: an array, each element as `T`; a single value is a set of one (an OIDC claim may be either);
//! - a record: an object, each declared attribute as declared, the others as undeclared.
//!
//! Undeclared values keep the untyped conversion (strings stay strings), except that Cedar's explicit
//! `__entity` and `__extn` escapes are understood anywhere. `null` is an absent attribute. A value that does not
//! fit its declared type is an error naming where it is: the decision is a deny (fail closed), the suite case says why.

use std::collections::{HashMap, HashSet};

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use cedar_policy_core::ast::{self, RestrictedExpr, Value};
use cedar_policy_core::evaluator::RestrictedEvaluator;
use cedar_policy_core::extensions::Extensions;

use crate::entity::EntityRef;

/// How deep declared types are followed (a valid schema is far shallower; common types cannot be cyclic).
const MAX_DEPTH: usize = 32;

/// A Cedar extension type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ext {
    /// `ipaddr`, made by `ip`.
    Ip,
    /// `decimal`.
    Decimal,
    /// `datetime`.
    Datetime,
    /// `duration`.
    Duration,
}

impl Ext {
    fn from_type(name: &str) -> Option<Ext> {
        match name.strip_prefix("__cedar::").unwrap_or(name) {
            "ipaddr" => Some(Ext::Ip),
            "decimal" => Some(Ext::Decimal),
            "datetime" => Some(Ext::Datetime),
            "duration" => Some(Ext::Duration),
            _ => None,
        }
    }

    /// The single-argument constructor.
    fn constructor(self) -> &'static str {
        match self {
            Ext::Ip => "ip",
            Ext::Decimal => "decimal",
            Ext::Datetime => "datetime",
            Ext::Duration => "duration",
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Ext::Ip => "ipaddr",
            Ext::Decimal => "decimal",
            Ext::Datetime => "datetime",
            Ext::Duration => "duration",
        }
    }
}

/// A type as the schema declares it, common types resolved.
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// Not declared, or not understood: the untyped conversion.
    Any,
    /// `String`.
    String,
    /// `Long`.
    Long,
    /// `Bool`.
    Bool,
    /// An entity type, fully qualified (`Acme::User`).
    Entity(String),
    /// An extension type.
    Extension(Ext),
    /// `Set<T>`.
    Set(Box<Shape>),
    /// A record: its declared attributes.
    Record(HashMap<String, Shape>),
}

impl Shape {
    /// The declared type of attribute `name` of this record (`Any` when this is no record or it is undeclared).
    pub(crate) fn attr(&self, name: &str) -> &Shape {
        match self {
            Shape::Record(attrs) => attrs.get(name).unwrap_or(&Shape::Any),
            _ => &Shape::Any,
        }
    }

    fn describe(&self) -> String {
        match self {
            Shape::Any => "any value".into(),
            Shape::String => "a String".into(),
            Shape::Long => "a Long".into(),
            Shape::Bool => "a Bool".into(),
            Shape::Entity(t) => format!("an entity of type {t}"),
            Shape::Extension(e) => format!("an {}", e.type_name()),
            Shape::Set(_) => "a Set".into(),
            Shape::Record(_) => "a record".into(),
        }
    }
}

/// The declared types of a schema: each entity type's attributes and each action's context, as records.
#[derive(Debug, Default, Clone)]
pub(crate) struct Shapes {
    /// Entity type (as written in requests, e.g. `AccessRequest`, `Acme::User`) -> its attributes.
    pub(crate) by_type: HashMap<String, Shape>,
    /// Action id (e.g. `approve`) -> its context record.
    pub(crate) by_action: HashMap<String, Shape>,
}

impl Shapes {
    /// Reads the declared types from the schema in its JSON form (`SchemaFragment::to_json_value` or a
    /// `.cedarschema.json`). What it cannot read stays `Any` (the schema itself was validated by Cedar).
    pub(crate) fn from_schema_json(json: &serde_json::Value) -> Self {
        let mut out = Shapes::default();
        let Some(namespaces) = json.as_object() else {
            return out;
        };
        let qualify = |ns: &str, name: &str| {
            if ns.is_empty() {
                name.to_string()
            } else {
                format!("{ns}::{name}")
            }
        };
        let mut entities: HashSet<String> = HashSet::new();
        let mut common: HashMap<String, &serde_json::Value> = HashMap::new();
        for (ns, body) in namespaces {
            if let Some(types) = body
                .get("entityTypes")
                .and_then(serde_json::Value::as_object)
            {
                entities.extend(types.keys().map(|n| qualify(ns, n)));
            }
            if let Some(types) = body
                .get("commonTypes")
                .and_then(serde_json::Value::as_object)
            {
                common.extend(types.iter().map(|(n, d)| (qualify(ns, n), d)));
            }
        }
        let resolver = Resolver {
            entities: &entities,
            common: &common,
        };
        for (ns, body) in namespaces {
            if let Some(types) = body
                .get("entityTypes")
                .and_then(serde_json::Value::as_object)
            {
                for (name, def) in types {
                    let shape = def
                        .get("shape")
                        .map(|s| resolver.shape(ns, s, 0))
                        .unwrap_or(Shape::Any);
                    out.by_type.insert(qualify(ns, name), shape);
                }
            }
            if let Some(actions) = body.get("actions").and_then(serde_json::Value::as_object) {
                for (name, def) in actions {
                    if let Some(ctx) = def.get("appliesTo").and_then(|a| a.get("context")) {
                        out.by_action
                            .insert(name.clone(), resolver.shape(ns, ctx, 0));
                    }
                }
            }
        }
        out
    }
}

struct Resolver<'a> {
    entities: &'a HashSet<String>,
    common: &'a HashMap<String, &'a serde_json::Value>,
}

impl Resolver<'_> {
    fn shape(&self, ns: &str, ty: &serde_json::Value, depth: usize) -> Shape {
        if depth > MAX_DEPTH {
            return Shape::Any;
        }
        let Some(kind) = ty.get("type").and_then(serde_json::Value::as_str) else {
            return Shape::Any;
        };
        let name = ty.get("name").and_then(serde_json::Value::as_str);
        match kind {
            "Record" => Shape::Record(
                ty.get("attributes")
                    .and_then(serde_json::Value::as_object)
                    .map(|attrs| {
                        attrs
                            .iter()
                            .map(|(k, v)| (k.clone(), self.shape(ns, v, depth + 1)))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            "Set" => Shape::Set(Box::new(
                ty.get("element")
                    .map(|e| self.shape(ns, e, depth + 1))
                    .unwrap_or(Shape::Any),
            )),
            "Entity" => match name {
                Some(n) => Shape::Entity(self.entity_name(ns, n).unwrap_or_else(|| n.to_string())),
                None => Shape::Any,
            },
            "Extension" => name
                .and_then(Ext::from_type)
                .map_or(Shape::Any, Shape::Extension),
            "EntityOrCommon" => match name {
                Some(n) => self.named(ns, n, depth),
                None => Shape::Any,
            },
            other => self.named(ns, other, depth),
        }
    }

    /// A type written by name: a common type, an entity type, a primitive or an extension type, in that order of
    /// lookup (the namespace's own names before the global ones), as Cedar resolves them.
    fn named(&self, ns: &str, name: &str, depth: usize) -> Shape {
        let local = if ns.is_empty() || name.contains("::") {
            None
        } else {
            Some(format!("{ns}::{name}"))
        };
        for candidate in local.iter().map(String::as_str).chain([name]) {
            if let Some(def) = self.common.get(candidate) {
                return self.shape(ns, def, depth + 1);
            }
            if self.entities.contains(candidate) {
                return Shape::Entity(candidate.to_string());
            }
        }
        match name.strip_prefix("__cedar::").unwrap_or(name) {
            "String" => Shape::String,
            "Long" => Shape::Long,
            "Bool" | "Boolean" => Shape::Bool,
            other => Ext::from_type(other).map_or(Shape::Any, Shape::Extension),
        }
    }

    fn entity_name(&self, ns: &str, name: &str) -> Option<String> {
        if !ns.is_empty() && !name.contains("::") {
            let local = format!("{ns}::{name}");
            if self.entities.contains(&local) {
                return Some(local);
            }
        }
        self.entities.contains(name).then(|| name.to_string())
    }
}

/// Converts `v`, declared `shape`, into a Cedar value (`None`: absent, for `null`). Errors name the place inside
/// `v` (`.a.b[2]: expected ...`) so the caller can prefix where `v` itself is.
pub(crate) fn to_value(
    cache: &HashMap<String, EntityTypeName>,
    v: &serde_json::Value,
    shape: &Shape,
) -> Result<Option<Value>, String> {
    use serde_json::Value as J;
    if v.is_null() {
        return Ok(None);
    }
    let wrong = || Err(format!(": expected {}, got {}", shape.describe(), brief(v)));
    match shape {
        Shape::Any => untyped(cache, v),
        Shape::String => match v {
            J::String(s) => Ok(Some(Value::from(s.as_str()))),
            _ => wrong(),
        },
        Shape::Long => match v {
            J::Number(n) => match n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            }) {
                Some(i) => Ok(Some(Value::from(i))),
                None => wrong(),
            },
            _ => wrong(),
        },
        Shape::Bool => match v {
            J::Bool(b) => Ok(Some(Value::from(*b))),
            _ => wrong(),
        },
        Shape::Entity(ty) => entity(cache, v, Some(ty)).map(Some),
        Shape::Extension(ext) => extension(v, Some(*ext)).map(Some),
        Shape::Set(element) => {
            let items: Vec<&J> = match v {
                J::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                if let Some(x) = to_value(cache, item, element).map_err(|e| format!("[{i}]{e}"))? {
                    out.push(x);
                }
            }
            Ok(Some(Value::set(out, None)))
        }
        Shape::Record(_) => match v {
            J::Object(map) => record(cache, map, shape).map(Some),
            _ => wrong(),
        },
    }
}

/// A JSON object as a record declared `shape` (its undeclared attributes untyped).
pub(crate) fn record(
    cache: &HashMap<String, EntityTypeName>,
    map: &serde_json::Map<String, serde_json::Value>,
    shape: &Shape,
) -> Result<Value, String> {
    let mut out: Vec<(&str, Value)> = Vec::with_capacity(map.len());
    for (k, v) in map {
        if let Some(x) = to_value(cache, v, shape.attr(k)).map_err(|e| format!(".{k}{e}"))? {
            out.push((k.as_str(), x));
        }
    }
    Ok(Value::record(out, None))
}

/// The untyped conversion: strings, booleans, integers, arrays as sets, objects as records (floats and nulls
/// dropped), Cedar's explicit `__entity` / `__extn` escapes understood.
fn untyped(
    cache: &HashMap<String, EntityTypeName>,
    v: &serde_json::Value,
) -> Result<Option<Value>, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => None,
        J::Bool(b) => Some(Value::from(*b)),
        J::Number(n) => n.as_i64().map(Value::from),
        J::String(s) => Some(Value::from(s.as_str())),
        J::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(x) = untyped(cache, item).map_err(|e| format!("[{i}]{e}"))? {
                    out.push(x);
                }
            }
            Some(Value::set(out, None))
        }
        J::Object(map) if map.len() == 1 && map.contains_key("__entity") => {
            Some(entity(cache, v, None)?)
        }
        J::Object(map) if map.len() == 1 && map.contains_key("__extn") => Some(extension(v, None)?),
        J::Object(map) => Some(record(cache, map, &Shape::Any)?),
    })
}

/// An entity reference, of type `expected` when given.
fn entity(
    cache: &HashMap<String, EntityTypeName>,
    v: &serde_json::Value,
    expected: Option<&str>,
) -> Result<Value, String> {
    use serde_json::Value as J;
    let what = || match expected {
        Some(t) => format!("an entity of type {t}"),
        None => "an entity reference".to_string(),
    };
    let e = match v {
        J::String(s) => match s.parse::<EntityRef>() {
            Ok(e) => e,
            Err(err) => match expected {
                // A plain id of the declared type (a token's `manager: "bob"`).
                Some(t) if !s.is_empty() => EntityRef::new(t, s.as_str()),
                _ => return Err(format!(": expected {}, got {}: {err}", what(), brief(v))),
            },
        },
        J::Object(map) => {
            let inner = map.get("__entity").unwrap_or(v);
            match (
                inner.get("type").and_then(J::as_str),
                inner.get("id").and_then(J::as_str),
            ) {
                (Some(t), Some(id)) if inner.as_object().is_some_and(|o| o.len() == 2) => {
                    EntityRef::new(t, id)
                }
                _ => {
                    return Err(format!(
                        ": expected {} ({{\"type\": ..., \"id\": ...}}), got {}",
                        what(),
                        brief(v)
                    ));
                }
            }
        }
        _ => return Err(format!(": expected {}, got {}", what(), brief(v))),
    };
    // A short name resolves through the schema's names (`User` may mean `Jitgate::User`, see `base.cedarschema`).
    let ty = match cache.get(&e.ty) {
        Some(t) => t.clone(),
        None => {
            e.ty.parse::<EntityTypeName>()
                .map_err(|err| format!(": invalid entity type `{}`: {err}", e.ty))?
        }
    };
    if let Some(t) = expected {
        if e.ty != t && ty.to_string() != t {
            return Err(format!(": expected an entity of type {t}, got {e}"));
        }
    }
    let uid = EntityUid::from_type_name_and_id(ty, EntityId::new(&e.id));
    Ok(Value::from(ast::EntityUID::from(uid)))
}

/// An extension value, of type `expected` when given.
fn extension(v: &serde_json::Value, expected: Option<Ext>) -> Result<Value, String> {
    use serde_json::Value as J;
    let (func, args): (String, Vec<String>) = match v {
        J::String(s) => match expected {
            Some(ext) => (ext.constructor().to_string(), vec![s.clone()]),
            None => return Err(format!(": expected an extension value, got {}", brief(v))),
        },
        J::Number(n) if expected == Some(Ext::Decimal) => ("decimal".into(), vec![n.to_string()]),
        J::Object(map) => {
            let call = map.get("__extn").unwrap_or(v);
            let func = call.get("fn").and_then(J::as_str);
            let args: Option<Vec<String>> = match (call.get("arg"), call.get("args")) {
                (Some(J::String(a)), None) => Some(vec![a.clone()]),
                (None, Some(J::Array(items))) => items
                    .iter()
                    .map(|a| a.as_str().map(str::to_string))
                    .collect(),
                _ => None,
            };
            match (func, args) {
                (Some(f), Some(a)) => (f.to_string(), a),
                _ => {
                    return Err(format!(
                        ": expected an extension call ({{\"fn\": \"ip\", \"arg\": \"10.0.0.1\"}}), got {}",
                        brief(v)
                    ));
                }
            }
        }
        _ => {
            let what = expected.map_or("extension value", Ext::type_name);
            return Err(format!(": expected an {what}, got {}", brief(v)));
        }
    };
    let value = call(&func, &args)?;
    if let Some(ext) = expected {
        let got = match value.value_kind() {
            ast::ValueKind::ExtensionValue(x) => x.typename().to_string(),
            _ => String::new(),
        };
        if got != ext.type_name() {
            return Err(format!(
                ": expected an {}, got `{func}(...)` ({got})",
                ext.type_name()
            ));
        }
    }
    Ok(value)
}

/// Calls the extension function `func` on string arguments.
fn call(func: &str, args: &[String]) -> Result<Value, String> {
    let name = ast::Name::parse_unqualified_name(func)
        .map_err(|e| format!(": unknown extension function `{func}`: {e}"))?;
    let expr = RestrictedExpr::call_extension_fn(
        name,
        args.iter().map(|a| RestrictedExpr::val(a.as_str())),
    );
    RestrictedEvaluator::new(Extensions::all_available())
        .interpret(expr.as_borrowed())
        .map_err(|e| format!(": {func}({}): {e}", quoted(args)))
}

fn quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short rendering of a JSON value for errors.
fn brief(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shapes(src: &str) -> Shapes {
        let (frag, _) = cedar_policy::SchemaFragment::from_cedarschema_str(src).unwrap();
        Shapes::from_schema_json(&frag.to_json_value().unwrap())
    }

    const SCHEMA: &str = r#"
        entity Team;
        entity User in [Team] = {
            job?: String, level?: Long, admin?: Bool, manager?: User, teams?: Set<Team>,
            profile?: { home: ipaddr, budget?: decimal, since?: datetime, shift?: duration, region?: String },
        };
        type Ctx = { who?: User, src?: ipaddr, nested?: { owners?: Set<User> } };
        entity Doc;
        action read appliesTo { principal: User, resource: Doc, context: Ctx };
        namespace Acme { entity Role; entity Member = { role?: Role }; }
    "#;

    fn conv(shape: &Shape, v: serde_json::Value) -> Result<Option<Value>, String> {
        to_value(&HashMap::new(), &v, shape)
    }

    #[test]
    fn declared_types_direct_the_conversion() {
        let s = shapes(SCHEMA);
        let user = s.by_type.get("User").unwrap();
        assert_eq!(
            conv(user.attr("manager"), json!("bob"))
                .unwrap()
                .unwrap()
                .to_string(),
            r#"User::"bob""#
        );
        assert_eq!(
            conv(user.attr("manager"), json!(r#"User::"bob""#))
                .unwrap()
                .unwrap()
                .to_string(),
            r#"User::"bob""#
        );
        assert_eq!(
            conv(
                user.attr("manager"),
                json!({"__entity": {"type": "User", "id": "b"}})
            )
            .unwrap()
            .unwrap()
            .to_string(),
            r#"User::"b""#
        );
        let e = conv(user.attr("manager"), json!(r#"Team::"x""#)).unwrap_err();
        assert!(e.contains("expected an entity of type User"), "{e}");
        // A single value for a set is a set of one.
        let teams = conv(user.attr("teams"), json!("eng")).unwrap().unwrap();
        assert_eq!(teams.to_string(), r#"[Team::"eng"]"#);
        assert_eq!(
            conv(user.attr("level"), json!(3.0)).unwrap().unwrap(),
            Value::from(3)
        );
        let e = conv(user.attr("level"), json!("3")).unwrap_err();
        assert!(e.contains("expected a Long"), "{e}");
        let profile = conv(
            user.attr("profile"),
            json!({"home": "10.1.0.0/16", "budget": 12.5, "since": "2026-01-02", "shift": "8h",
                   "extra": {"__extn": {"fn": "ip", "arg": "::1"}}}),
        )
        .unwrap()
        .unwrap();
        let text = profile.to_string();
        for want in ["ip(", "decimal(", "datetime(", "duration(", "::1"] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let e = conv(user.attr("profile"), json!({"home": "not an ip"})).unwrap_err();
        assert!(e.starts_with(".home: "), "{e}");
        let ctx = s.by_action.get("read").unwrap();
        let nested = conv(
            ctx.attr("nested"),
            json!({"owners": ["alice", "User::\"bob\""]}),
        )
        .unwrap()
        .unwrap();
        assert!(nested.to_string().contains(r#"User::"alice""#), "{nested}");
        let e = conv(ctx.attr("nested"), json!({"owners": ["alice", 3]})).unwrap_err();
        assert!(
            e.starts_with(".owners[1]: expected an entity of type User"),
            "{e}"
        );
        // Namespaced types resolve within their namespace.
        let member = s.by_type.get("Acme::Member").unwrap();
        assert_eq!(
            conv(member.attr("role"), json!("admin"))
                .unwrap()
                .unwrap()
                .to_string(),
            r#"Acme::Role::"admin""#
        );
    }

    #[test]
    fn undeclared_values_stay_untyped_but_escapes_are_understood() {
        let v = conv(
            &Shape::Any,
            json!({"a": "User::\"x\"", "b": {"__entity": {"type": "User", "id": "y"}},
                   "c": {"__extn": {"fn": "decimal", "arg": "1.5"}}, "d": 2.5, "e": null}),
        )
        .unwrap()
        .unwrap();
        let ast::ValueKind::Record(r) = v.value_kind() else {
            panic!("{v}")
        };
        assert_eq!(
            r.get("a"),
            Some(&Value::from("User::\"x\"")),
            "a string stays a string"
        );
        assert_eq!(
            r.get("b").map(ToString::to_string).as_deref(),
            Some(r#"User::"y""#)
        );
        assert!(
            r.get("c")
                .map(ToString::to_string)
                .is_some_and(|c| c.starts_with("decimal("))
        );
        assert!(r.get("d").is_none() && r.get("e").is_none(), "{v}");
        let e = conv(
            &Shape::Any,
            json!({"x": {"__extn": {"fn": "nope", "arg": "1"}}}),
        )
        .unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }
}
