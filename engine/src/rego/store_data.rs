//! The store's entity data (`PUT /v1/entities`, `jitgate entities put`) as Rego sees it: one document at
//! `data.jitgate.entities`, keyed by entity type, then by entity id, built once per change of the store's data,
//! never per request.
//!
//! ```json
//! {"jitgate": {"entities": {"Document": {"memo": {
//!     "uid": {"type": "Document", "id": "memo"},
//!     "attrs": {"owner": {"type": "User", "id": "alice"}, "budget": "1200.00"},
//!     "parents": [{"type": "Folder", "id": "plans"}],
//!     "ancestors": [{"type": "Folder", "id": "plans"}, {"type": "Service", "id": "docs"}],
//!     "tags": {}
//! }}}}}
//! ```
//!
//! Each entity is checked as Cedar's JSON entity format (the format the store keeps, parsed without a schema) and
//! written in a form Rego reads without escapes: an entity reference (`{"__entity": {"type", "id"}}` or the implicit
//! `{"type", "id"}`) is `{"type", "id"}`, an extension value (`{"__extn": {"fn": "decimal", "arg": "1200.00"}}`) is
//! its argument string, everything else stays as written. `ancestors` is the transitive closure of `parents` over the
//! store's entities (a parent the store does not hold ends its branch), nearest first; a parent cycle is refused, as
//! Cedar bundles refuse it.

use std::collections::{BTreeMap, HashMap, HashSet};

use regorus::Value;

use crate::EntityRef;
use crate::overlay::EntityProblem;
use crate::store::StoredEntity;

/// Where the document sits under `data`.
pub(crate) const PATH: [&str; 2] = ["jitgate", "entities"];

/// The `data` document holding `stored` at `data.jitgate.entities` (every problem reported, by uid).
pub(crate) fn document(stored: &[StoredEntity]) -> Result<Value, Vec<EntityProblem>> {
    let mut problems = Vec::new();
    let mut parents: HashMap<&EntityRef, Vec<EntityRef>> = HashMap::with_capacity(stored.len());
    for s in stored {
        if let Err(e) = cedar_policy::Entity::from_json_value(s.data.clone(), None) {
            problems.push(EntityProblem::new(
                s.uid.to_string(),
                crate::cedar::entity_error_message(&e),
            ));
            continue;
        }
        let list = match s.data.get("parents") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(entity_ref).collect(),
            Some(_) => {
                problems.push(EntityProblem::new(
                    s.uid.to_string(),
                    "`parents` must be an array of entity references",
                ));
                continue;
            }
        };
        parents.insert(&s.uid, list);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Some(cycle) = find_cycle(stored, &parents) {
        let path = cycle
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" -> ");
        let at = cycle.first().map(ToString::to_string).unwrap_or_default();
        return Err(vec![EntityProblem::new(at, format!("parent cycle {path}"))]);
    }
    let mut by_type: BTreeMap<Value, BTreeMap<Value, Value>> = BTreeMap::new();
    for s in stored {
        let own = parents.get(&s.uid).map(Vec::as_slice).unwrap_or(&[]);
        let mut fields: BTreeMap<Value, Value> = BTreeMap::new();
        fields.insert(text("uid"), reference(&s.uid));
        fields.insert(text("attrs"), field(&s.data, "attrs"));
        fields.insert(
            text("parents"),
            Value::from(own.iter().map(reference).collect::<Vec<_>>()),
        );
        fields.insert(
            text("ancestors"),
            Value::from(
                ancestors(own, &parents)
                    .iter()
                    .map(reference)
                    .collect::<Vec<_>>(),
            ),
        );
        fields.insert(text("tags"), field(&s.data, "tags"));
        by_type
            .entry(text(&s.uid.ty))
            .or_default()
            .insert(text(&s.uid.id), Value::from(fields));
    }
    let entities = Value::from(
        by_type
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect::<BTreeMap<Value, Value>>(),
    );
    let mut doc = entities;
    for key in PATH.iter().rev() {
        doc = Value::from(BTreeMap::from([(text(key), doc)]));
    }
    Ok(doc)
}

fn text(s: &str) -> Value {
    Value::from(s)
}

fn reference(e: &EntityRef) -> Value {
    Value::from(BTreeMap::from([
        (text("type"), text(&e.ty)),
        (text("id"), text(&e.id)),
    ]))
}

/// `data[name]` (an object) in Rego's form, `{}` when absent.
fn field(data: &serde_json::Value, name: &str) -> Value {
    match data.get(name) {
        Some(v @ serde_json::Value::Object(_)) => plain(v),
        _ => Value::from(BTreeMap::new()),
    }
}

/// An entity reference in Cedar's JSON form: `{"type", "id"}` or `{"__entity": {"type", "id"}}`.
fn entity_ref(v: &serde_json::Value) -> Option<EntityRef> {
    let v = v.get("__entity").unwrap_or(v);
    let obj = v.as_object()?;
    if obj.len() != 2 {
        return None;
    }
    Some(EntityRef::new(
        obj.get("type")?.as_str()?,
        obj.get("id")?.as_str()?,
    ))
}

/// A Cedar JSON value without escapes: `__entity` as `{"type", "id"}`, a one-argument `__extn` as its argument.
fn plain(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (None, Some(u), _) => Value::from(u),
            (None, None, Some(f)) => Value::from(f),
            (None, None, None) => Value::Null,
        },
        serde_json::Value::String(s) => text(s),
        serde_json::Value::Array(items) => Value::from(items.iter().map(plain).collect::<Vec<_>>()),
        serde_json::Value::Object(map) => {
            if map.len() == 1 {
                if let Some(e) = map.get("__entity").and_then(|_| entity_ref(v)) {
                    return reference(&e);
                }
                if let Some(arg) = map
                    .get("__extn")
                    .and_then(|x| x.get("arg"))
                    .and_then(serde_json::Value::as_str)
                {
                    return text(arg);
                }
            }
            Value::from(
                map.iter()
                    .map(|(k, v)| (text(k), plain(v)))
                    .collect::<BTreeMap<Value, Value>>(),
            )
        }
    }
}

/// Every entity above `own` (breadth first, nearest first, each once), through the parents the store gives.
fn ancestors(own: &[EntityRef], parents: &HashMap<&EntityRef, Vec<EntityRef>>) -> Vec<EntityRef> {
    let mut out: Vec<EntityRef> = Vec::new();
    let mut seen: HashSet<&EntityRef> = HashSet::new();
    let mut queue: std::collections::VecDeque<&EntityRef> = own.iter().collect();
    while let Some(u) = queue.pop_front() {
        if !seen.insert(u) {
            continue;
        }
        out.push(u.clone());
        if let Some(ps) = parents.get(u) {
            queue.extend(ps.iter());
        }
    }
    out
}

/// A parent cycle among the stored entities (a path that ends where it starts), if any.
fn find_cycle(
    stored: &[StoredEntity],
    parents: &HashMap<&EntityRef, Vec<EntityRef>>,
) -> Option<Vec<EntityRef>> {
    crate::entity::find_parent_cycle(stored.iter().map(|e| &e.uid), |u| {
        parents.get(u).into_iter().flatten()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(v: serde_json::Value) -> StoredEntity {
        let uid = entity_ref(&v["uid"]).unwrap();
        StoredEntity {
            uid,
            data: v,
            updated_at: 0,
        }
    }

    fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
        path.iter().fold(v, |v, k| &v[*k])
    }

    #[test]
    fn entities_by_type_and_id_without_escapes_with_ancestors() {
        let doc = document(&[
            stored(json!({"uid": {"type": "Team", "id": "t1"}, "attrs": {}, "parents": [{"type": "Org", "id": "o"}]})),
            stored(json!({"uid": {"type": "Org", "id": "o"}, "attrs": {"name": "Acme"}, "parents": []})),
            stored(json!({
                "uid": {"type": "User", "id": "alice"},
                "attrs": {
                    "manager": {"__entity": {"type": "User", "id": "bob"}},
                    "budget": {"__extn": {"fn": "decimal", "arg": "12.50"}},
                    "level": 3,
                    "home": {"city": "Oslo"}
                },
                "parents": [{"__entity": {"type": "Team", "id": "t1"}}]
            })),
        ])
        .unwrap();
        let alice = at(&doc, &["jitgate", "entities", "User", "alice"]);
        assert_eq!(
            alice["attrs"]["manager"],
            Value::from_json_str(r#"{"type": "User", "id": "bob"}"#).unwrap()
        );
        assert_eq!(alice["attrs"]["budget"], text("12.50"));
        assert_eq!(alice["attrs"]["level"], Value::from(3i64));
        assert_eq!(alice["attrs"]["home"]["city"], text("Oslo"));
        assert_eq!(
            alice["ancestors"],
            Value::from_json_str(r#"[{"type": "Team", "id": "t1"}, {"type": "Org", "id": "o"}]"#)
                .unwrap()
        );
        assert_eq!(
            alice["parents"],
            Value::from_json_str(r#"[{"type": "Team", "id": "t1"}]"#).unwrap()
        );
        assert_eq!(
            at(&doc, &["jitgate", "entities", "Org", "o", "attrs", "name"]),
            &text("Acme")
        );
    }

    #[test]
    fn a_cycle_and_a_malformed_entity_are_refused_by_uid() {
        let err = document(&[
            stored(json!({"uid": {"type": "Team", "id": "a"}, "attrs": {}, "parents": [{"type": "Team", "id": "b"}]})),
            stored(json!({"uid": {"type": "Team", "id": "b"}, "attrs": {}, "parents": [{"type": "Team", "id": "a"}]})),
        ])
        .unwrap_err();
        assert!(err[0].reason.contains("parent cycle"), "{err:?}");
        assert!(err[0].reason.contains("Team::\"a\""), "{err:?}");

        let err = document(&[stored(
            json!({"uid": {"type": "Team", "id": "a"}, "attrs": 5, "parents": []}),
        )])
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].uid, "Team::\"a\"");
    }
}
