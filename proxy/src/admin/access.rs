//! The access routes of the admin API (`/v1/requests`, `/v1/grants`, and `/v1/entities` whose handlers are in
//! [`super::entities`]): thin handlers that parse the call, hand it to
//! the [`AccessService`] and turn its answer into JSON; status codes come from [`ApiError`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jitgate_engine::EntityRef;
use jitgate_engine::access::{RequestFilter, RequestState, Verdict};
use jitgate_engine::lifecycle::NewRequest;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use crate::access::{AccessService, Caller, GrantEnd};

/// The access routes over `service`, to be merged into the admin router.
pub fn router(service: AccessService) -> Router {
    Router::new()
        .route("/v1/requests", post(create).get(list))
        .route("/v1/requests/{id}", get(show))
        .route("/v1/requests/{id}/approve", post(approve))
        .route("/v1/requests/{id}/deny", post(deny))
        .route("/v1/grants", get(grants))
        .route("/v1/grants/{id}/revoke", post(revoke))
        .route("/v1/grants/{id}/drop", post(drop_grant))
        .route("/v1/grants/{id}/token", post(token))
        .route("/v1/whoami", get(whoami))
        .route(
            "/v1/entities",
            get(super::entities::list)
                .put(super::entities::put)
                .delete(super::entities::delete),
        )
        .with_state(service)
}

/// The JSON body of a call (an empty body is the default), or a 400 naming the field at fault.
fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // The path names a mistyped field (`role`); for an unknown or missing one serde's own words do.
        let path = e.path().to_string();
        let err = ApiError::bad_body(&e.inner().to_string());
        if path != "." && !path.is_empty() {
            err.with_field(path)
        } else {
            err
        }
    })
}

async fn create(
    State(s): State<AccessService>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new: NewRequest = parse_body(&body)?;
    let view = s.create(caller, new).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Filters of `GET /v1/requests`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    role: Option<String>,
    requester: Option<String>,
    all: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Rows per page of a listing when the call names no `limit`.
pub const DEFAULT_PAGE: u32 = 100;
/// The most rows one page of a listing may hold: one call must not make an answer of unbounded size.
pub const MAX_PAGE: u32 = 1000;

/// The page size a call asks for: [`DEFAULT_PAGE`] when absent, 400 `limit` outside `1..=MAX_PAGE`.
fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_field(
            "limit",
            format!("{n} is not a page size; it must be from 1 to {MAX_PAGE}"),
        )),
    }
}

/// The opaque cursor of the row `(time, id)` a page ended on.
fn encode_cursor(time: i64, id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{time}:{id}"))
}

/// The row a `cursor` names, or 400 `cursor`.
fn decode_cursor(cursor: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_field(
            "cursor",
            "is not a cursor this listing returned as `next_cursor`".to_string(),
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (time, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((time.parse().map_err(|_| bad())?, id.to_string()))
}

async fn list(
    State(s): State<AccessService>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let state = match q.state.as_deref() {
        None => None,
        Some(v) => Some(RequestState::parse(v).ok_or_else(|| {
            ApiError::bad_field(
                "state",
                format!("`{v}` must be pending, approved, denied, expired or cancelled"),
            )
        })?),
    };
    let requester = match q.requester.as_deref() {
        None => None,
        Some(r) => Some(r.parse::<EntityRef>().map_err(|e| {
            ApiError::bad_field(
                "requester",
                format!("`{r}` is not an entity reference: {e}"),
            )
        })?),
    };
    let page = page_size(q.limit)?;
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    // One more than the page, to know whether another page follows.
    let filter = RequestFilter {
        requester,
        state,
        role: q.role,
        limit: Some(page.saturating_add(1)),
        after,
    };
    let mut requests = s
        .list_requests(caller, filter, q.all.unwrap_or(false))
        .await?;
    let next_cursor = if requests.len() > page as usize {
        requests.truncate(page as usize);
        requests
            .last()
            .map(|r| encode_cursor(r.request.created_at, &r.request.id))
    } else {
        None
    };
    Ok(axum::Json(json!({ "requests": requests, "next_cursor": next_cursor })).into_response())
}

async fn show(
    State(s): State<AccessService>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let view = s.show(caller, id).await?;
    Ok(axum::Json(view).into_response())
}

/// Body of approve / deny / revoke / drop.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: String,
}

async fn verdict(
    s: AccessService,
    caller: Caller,
    id: String,
    v: Verdict,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CommentBody = parse_body(&body)?;
    let view = s.decide(caller, id, v, b.comment).await?;
    Ok(axum::Json(view).into_response())
}

async fn approve(
    State(s): State<AccessService>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    verdict(s, caller, id, Verdict::Approve, body).await
}

async fn deny(
    State(s): State<AccessService>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    verdict(s, caller, id, Verdict::Deny, body).await
}

/// Filters of `GET /v1/grants`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GrantsQuery {
    all: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn grants(
    State(s): State<AccessService>,
    caller: Caller,
    q: Result<Query<GrantsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let page = page_size(q.limit)?;
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    // Ordered by (expires_at, id): the page starts after the cursor's row.
    let rows = s.grants(caller, q.all.unwrap_or(false)).await?;
    let mut rows: Vec<_> = rows
        .into_iter()
        .filter(|g| {
            after
                .as_ref()
                .is_none_or(|(at, id)| (g.expires_at, g.id.as_str()) > (*at, id.as_str()))
        })
        .take(page as usize + 1)
        .collect();
    let next_cursor = if rows.len() > page as usize {
        rows.truncate(page as usize);
        rows.last().map(|g| encode_cursor(g.expires_at, &g.id))
    } else {
        None
    };
    Ok(axum::Json(json!({ "grants": rows, "next_cursor": next_cursor })).into_response())
}

async fn end(
    s: AccessService,
    caller: Caller,
    id: String,
    how: GrantEnd,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CommentBody = parse_body(&body)?;
    let grant = s.end_grant(caller, id, how, b.comment).await?;
    Ok(axum::Json(json!({ "grant": grant })).into_response())
}

async fn revoke(
    State(s): State<AccessService>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    end(s, caller, id, GrantEnd::Revoke, body).await
}

async fn drop_grant(
    State(s): State<AccessService>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    end(s, caller, id, GrantEnd::Drop, body).await
}

/// Body of `POST /v1/grants/{id}/token`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    /// Shorter life than the grant's remaining window, e.g. `10m`.
    #[serde(default)]
    ttl: Option<String>,
}

async fn token(
    State(s): State<AccessService>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: TokenBody = parse_body(&body)?;
    let minted = s.mint_token(caller, id, b.ttl).await?;
    Ok(axum::Json(json!({
        "token": minted.token,
        "grant_id": minted.grant_id,
        "expires_at": minted.expires_at,
        "expires_at_rfc3339": jitgate_engine::clock::to_rfc3339(minted.expires_at),
    }))
    .into_response())
}

/// Who the token says the caller is: the principal, its groups, and its grants that are active or not yet started.
async fn whoami(State(s): State<AccessService>, caller: Caller) -> Result<Response, ApiError> {
    let principal = caller.principal().entity.to_string();
    let groups = caller.principal().groups.clone();
    let grants = s.grants(caller, false).await?;
    Ok(
        axum::Json(json!({ "principal": principal, "groups": groups, "grants": grants }))
            .into_response(),
    )
}
