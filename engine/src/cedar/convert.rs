//! Conversions from the engine's request model (entity references, Unix times, addresses) to Cedar values; JSON
//! attributes are converted by the schema's declared types in [`super::typed`]. No policy evaluation happens here.

use std::collections::HashMap;

use std::cell::RefCell;

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use cedar_policy_core::ast::{self, Value};

use crate::clock::UnixTime;
use crate::entity::EntityRef;

/// The schema's declared types of entity attributes and action contexts (see [`super::typed`]).
pub(crate) type EntityAttrs = super::typed::Shapes;

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

/// Most requests come from few addresses; parsing an `ipaddr` goes through Cedar's extension evaluator, so each
/// thread keeps the values it has built (bounded: cleared when full).
const IP_CACHE_MAX: usize = 4096;

thread_local! {
    static IP_CACHE: RefCell<HashMap<String, Value>> = RefCell::new(HashMap::new());
}

/// The Cedar `ipaddr` value of `src` (an error when it is not an address or CIDR range).
pub(crate) fn ip_value(src: &str) -> Result<Value, String> {
    if let Some(v) = IP_CACHE.with(|c| c.borrow().get(src).cloned()) {
        return Ok(v);
    }
    let ctx = Context::from_pairs([("ip".to_string(), RestrictedExpression::new_ip(src))])
        .map_err(|e| format!("context.source_ip `{src}`: {e}"))?;
    let value = match AsRef::<ast::Context>::as_ref(&ctx) {
        ast::Context::Value(map) => map.get("ip").cloned(),
        ast::Context::RestrictedResidual(_) => None,
    }
    .ok_or_else(|| format!("context.source_ip `{src}`: not a value"))?;
    IP_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= IP_CACHE_MAX {
            c.clear();
        }
        c.insert(src.to_string(), value.clone());
    });
    Ok(value)
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
        use super::super::typed::Shape;
        let src = r#"
            entity User;
            type Ctx = { who: User, n: Long };
            entity Req = { requester: User, scope: String, nested: { x: User } };
            action a appliesTo { principal: User, resource: Req, context: Ctx };
        "#;
        let (frag, _) = cedar_policy::SchemaFragment::from_cedarschema_str(src).unwrap();
        let attrs = EntityAttrs::from_schema_json(&frag.to_json_value().unwrap());
        let req = attrs.by_type.get("Req").unwrap();
        assert!(matches!(req.attr("requester"), Shape::Entity(t) if t == "User"));
        assert!(matches!(req.attr("scope"), Shape::String));
        assert!(matches!(req.attr("nested").attr("x"), Shape::Entity(t) if t == "User"));
        let ctx = attrs.by_action.get("a").unwrap();
        assert!(matches!(ctx.attr("who"), Shape::Entity(t) if t == "User"));
        assert!(matches!(ctx.attr("n"), Shape::Long));
    }
}
