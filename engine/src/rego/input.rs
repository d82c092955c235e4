//! Builds the Rego `input` document from a decision's [`DecisionInput`], directly as `regorus::Value`.
//! The names mirror the Cedar backend's context so one policy reads the same in either language.

use std::collections::BTreeMap;

use regorus::Value;

use crate::clock::UnixTime;
use crate::entity::EntityRef;
use crate::grant::Grant;
use crate::input::DecisionInput;

/// `input` for one decision. Building `Value`s directly skips a JSON round trip on the hot path.
pub(crate) fn build(input: &DecisionInput<'_>) -> Value {
    let request = input.request();
    let mut principal = object([
        ("type", string(&request.principal.entity.ty)),
        ("id", string(&request.principal.entity.id)),
        (
            "groups",
            Value::from(
                request
                    .principal
                    .groups
                    .iter()
                    .map(|g| string(g))
                    .collect::<Vec<_>>(),
            ),
        ),
    ]);
    // Only when the issuer maps them: the principal of every other request keeps its three fields.
    if let Some(t) = &request.principal.group_type {
        set_field(&mut principal, "group_type", string(t));
    }
    if !request.principal.attrs.is_empty() {
        set_field(
            &mut principal,
            "attrs",
            json_object(&request.principal.attrs),
        );
    }

    let resource = object([
        ("type", string(&request.resource.entity.ty)),
        ("id", string(&request.resource.entity.id)),
        (
            "parents",
            Value::from(
                request
                    .resource
                    .parents
                    .iter()
                    .map(entity)
                    .collect::<Vec<_>>(),
            ),
        ),
        ("attrs", json_object(&request.resource.attrs)),
    ]);

    let ctx = &request.context;
    let mut context: BTreeMap<Value, Value> = BTreeMap::new();
    // Free-form attributes go in first so that the fixed fields below win on a name clash.
    for (k, v) in &ctx.attrs {
        context.insert(string(k), json(v));
    }
    context.insert(string("time"), time(ctx.time));
    context.insert(
        string("source_ip"),
        string(ctx.source_ip.as_deref().unwrap_or("0.0.0.0")),
    );
    context.insert(string("method"), opt_string(ctx.method.as_deref()));
    context.insert(string("path"), opt_string(ctx.path.as_deref()));
    context.insert(string("host"), opt_string(ctx.host.as_deref()));
    context.insert(string("query"), string(ctx.query.as_deref().unwrap_or("")));
    context.insert(
        string("headers"),
        Value::from(
            ctx.headers
                .iter()
                .map(|(k, v)| (string(k), string(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    );
    context.insert(string("claims"), json_object(&ctx.claims));

    object([
        ("principal", principal),
        ("action", string(&request.action)),
        ("resource", resource),
        ("context", Value::from(context)),
        (
            "grants",
            Value::from(input.grants().iter().map(|g| grant(g)).collect::<Vec<_>>()),
        ),
    ])
}

/// `{epoch, hour, weekday}`: hour 0-23 UTC, weekday 1 = Monday .. 7 = Sunday.
pub(crate) fn time(epoch: UnixTime) -> Value {
    let hour = epoch.rem_euclid(86_400) / 3_600;
    // 1970-01-01 was a Thursday (4).
    let weekday = (epoch.div_euclid(86_400) + 3).rem_euclid(7) + 1;
    object([
        ("epoch", Value::from(epoch)),
        ("hour", Value::from(hour)),
        ("weekday", Value::from(weekday)),
    ])
}

fn grant(g: &Grant) -> Value {
    let uses_left = g.uses_left().map_or(-1, i64::from);
    object([
        ("id", string(&g.id)),
        ("role", string(&g.role)),
        ("scope", string(&g.scope.to_string())),
        ("starts_at", Value::from(g.starts_at)),
        ("expires_at", Value::from(g.expires_at)),
        (
            "approvers",
            Value::from(g.approvers.iter().map(|a| string(a)).collect::<Vec<_>>()),
        ),
        ("reason", string(&g.reason)),
        ("uses_left", Value::from(uses_left)),
        ("break_glass", Value::from(g.break_glass)),
    ])
}

fn entity(e: &EntityRef) -> Value {
    object([("type", string(&e.ty)), ("id", string(&e.id))])
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::from(
        fields
            .into_iter()
            .map(|(k, v)| (string(k), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Sets `key` of an object built by [`object`] (a no-op on anything else).
fn set_field(obj: &mut Value, key: &str, v: Value) {
    if let Ok(map) = obj.as_object_mut() {
        map.insert(string(key), v);
    }
}

fn string(s: &str) -> Value {
    Value::from(s)
}

fn opt_string(s: Option<&str>) -> Value {
    s.map_or(Value::Null, string)
}

fn json_object(map: &serde_json::Map<String, serde_json::Value>) -> Value {
    Value::from(
        map.iter()
            .map(|(k, v)| (string(k), json(v)))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// JSON to Rego without serde's generic path (which clones the whole tree first).
pub(crate) fn json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => string(s),
        serde_json::Value::Array(a) => Value::from(a.iter().map(json).collect::<Vec<_>>()),
        serde_json::Value::Object(o) => json_object(o),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_fields_are_utc_hour_and_iso_weekday() {
        // 2024-01-01T00:00:00Z was a Monday.
        let t = time(1_704_067_200);
        assert_eq!(t["hour"], Value::from(0));
        assert_eq!(t["weekday"], Value::from(1));
        // 2024-01-07T23:59:59Z, a Sunday.
        let t = time(1_704_067_200 + 6 * 86_400 + 86_399);
        assert_eq!(t["hour"], Value::from(23));
        assert_eq!(t["weekday"], Value::from(7));
        // Before the epoch: 1969-12-31T23:00:00Z, a Wednesday.
        let t = time(-3_600);
        assert_eq!(t["hour"], Value::from(23));
        assert_eq!(t["weekday"], Value::from(3));
    }

    #[test]
    fn json_numbers_and_nesting_survive() {
        let v = json(
            &serde_json::json!({"a": [1, -2, 2.5, "x", null, true], "b": {"c": 18446744073709551615u64}}),
        );
        assert_eq!(v["a"][1], Value::from(-2));
        assert_eq!(v["a"][2], Value::from(2.5));
        assert_eq!(v["a"][4], Value::Null);
        assert_eq!(v["b"]["c"], Value::from(u64::MAX));
    }
}
