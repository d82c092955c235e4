//! The entity-data handlers of the admin API (`/v1/entities`, routed with the access routes): put, read and delete the
//! entity data kept in the store. Thin handlers over the [`AccessService`]; a refused body answers 400 with every
//! problem (uid, line, attribute, reason).

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jitgate_engine::EntityRef;
use jitgate_engine::authorize::EntityError;
use serde_json::json;

use super::error::ApiError;
use crate::access::{AccessError, AccessService, Caller};

/// A refusal: problems with the entity data get their own list, everything else the one error answer.
fn refused(e: AccessError) -> Response {
    match e {
        AccessError::Entities(EntityError::Invalid(problems)) => {
            let message = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "error": "bad_request",
                    "message": format!("entity data refused, nothing was stored: {message}"),
                    "problems": problems,
                })),
            )
                .into_response()
        }
        other => ApiError::from(other).into_response(),
    }
}

/// `PUT /v1/entities`: a JSON array of Cedar JSON entities, each inserted or replacing the stored one of its uid.
pub(super) async fn put(State(s): State<AccessService>, caller: Caller, body: Bytes) -> Response {
    let text = match String::from_utf8(body.to_vec()) {
        Ok(t) => t,
        Err(e) => return ApiError::bad_body(&format!("not UTF-8: {e}")).into_response(),
    };
    match s.put_entities(caller, text).await {
        Ok((given, total)) => {
            axum::Json(json!({ "stored": given, "total": total })).into_response()
        }
        Err(e) => refused(e),
    }
}

/// The uids a `DELETE /v1/entities` names: `uid` query parameters, or a body that is a JSON array of uids
/// (`"Type::\"id\""` or `{"type", "id"}`); a 400 names the one that is not a uid.
fn uids_of(pairs: &[(String, String)], body: &Bytes) -> Result<Vec<EntityRef>, ApiError> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        if k != "uid" {
            return Err(ApiError::bad_field(k, "unknown parameter; expected uid"));
        }
        out.push(
            v.parse::<EntityRef>()
                .map_err(|e| ApiError::bad_field("uid", e.to_string()))?,
        );
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_body(&format!(
                "line {} column {}: {e} (expected a JSON array of uids)",
                e.line(),
                e.column()
            ))
        })?;
        for (i, item) in items.iter().enumerate() {
            let uid = match item {
                serde_json::Value::String(s) => s.parse::<EntityRef>().ok(),
                other => jitgate_engine::overlay::uid_of(&json!({ "uid": other })),
            };
            out.push(uid.ok_or_else(|| {
                ApiError::bad_field(
                    &format!("[{i}]"),
                    format!("{item} is not a uid (\"Type::\\\"id\\\"\" or {{\"type\", \"id\"}})"),
                )
            })?);
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad_field(
            "uid",
            "name the entities to delete (uid=Type::\"id\", or a JSON array of uids in the body)",
        ));
    }
    Ok(out)
}

/// `DELETE /v1/entities`: removes the named entities (unknown ones are ignored).
pub(super) async fn delete(
    State(s): State<AccessService>,
    caller: Caller,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let pairs = match q {
        Ok(Query(p)) => p,
        Err(e) => return ApiError::bad_query(e.body_text()).into_response(),
    };
    let uids = match uids_of(&pairs, &body) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    match s.delete_entities(caller, uids).await {
        Ok(n) => axum::Json(json!({ "deleted": n })).into_response(),
        Err(e) => refused(e),
    }
}

/// `GET /v1/entities?type=T&id=I`: the stored entities (as given), those of type `T` and id `I` when named.
pub(super) async fn list(
    State(s): State<AccessService>,
    caller: Caller,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let pairs = match q {
        Ok(Query(p)) => p,
        Err(e) => return ApiError::bad_query(e.body_text()).into_response(),
    };
    let (mut ty, mut id) = (None, None);
    for (k, v) in pairs {
        match k.as_str() {
            "type" => ty = Some(v),
            "id" => id = Some(v),
            other => {
                return ApiError::bad_field(other, "unknown parameter; expected type or id")
                    .into_response();
            }
        }
    }
    match s.entities(caller, ty, id).await {
        Ok(list) => axum::Json(json!({
            "entities": list.into_iter().map(|e| e.data).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => refused(e),
    }
}
