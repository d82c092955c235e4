//! The admin listener: health (`/healthz`, `/readyz`), Prometheus `/metrics`, and the JSON admin API under `/v1`.
//! Admin API calls are authenticated like the data plane and authorized by the bundle's own policies.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::Proxy;

/// The admin router.
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/reload", axum::routing::post(reload))
        .route(
            "/v1/shadow",
            get(shadow_status).post(shadow_set).delete(shadow_clear),
        )
        .merge(crate::lifecycle::router())
        .with_state(proxy)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when a bundle is active and the decision log accepts records.
async fn readyz(State(p): State<Arc<Proxy>>) -> Response {
    if p.log.is_healthy() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "decision log unavailable\n",
        )
            .into_response()
    }
}

async fn metrics(State(p): State<Arc<Proxy>>) -> Response {
    let grants = p.authorizer.grants().len() as f64;
    let queued = p.log.queued() as f64;
    let body = p.metrics.render(&[
        (
            "jitgate_grants_indexed",
            "Grants held in the in-memory index.",
            grants,
        ),
        (
            "jitgate_log_queue_depth",
            "Decision records waiting to be committed.",
            queued,
        ),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn status(State(p): State<Arc<Proxy>>) -> Response {
    let b = p.authorizer.bundle();
    axum::Json(serde_json::json!({
        "bundle": {
            "name": b.manifest.name,
            "engine": b.engine().as_str(),
            "revision": b.revision,
            "path": b.dir.display().to_string(),
            "routes": b.routes.len(),
            "policies": b.backend().policy_ids().len(),
        },
        "grants_indexed": p.authorizer.grants().len(),
        "reload": p.reloader.status(),
    }))
    .into_response()
}

/// Reloads the bundle now and reports the outcome (`live`, `unchanged` or `failed` with file:line errors).
/// 200 unless the candidate failed the gate (422); the active bundle keeps serving either way.
async fn reload(State(p): State<Arc<Proxy>>) -> Response {
    let r = p.reloader.clone();
    match tokio::task::spawn_blocking(move || r.reload_now()).await {
        Ok(attempt) => {
            let status = if attempt.outcome == "failed" {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            (status, axum::Json(attempt)).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The shadow candidate, the comparison counts and the recent disagreements.
async fn shadow_status(State(p): State<Arc<Proxy>>) -> Response {
    axum::Json(p.shadow.status()).into_response()
}

/// Body of `POST /v1/shadow`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShadowBody {
    /// The candidate bundle directory (on the proxy's machine).
    path: std::path::PathBuf,
}

/// Loads a candidate bundle and starts shadowing it: 200 with its revision, 422 with file:line errors when it does
/// not load (nothing changes then).
async fn shadow_set(
    State(p): State<Arc<Proxy>>,
    body: Result<axum::Json<ShadowBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({ "error": e.body_text() })),
            )
                .into_response();
        }
    };
    let shadow = p.shadow.clone();
    match tokio::task::spawn_blocking(move || shadow.load(&body.path)).await {
        Ok(Ok(candidate)) => axum::Json(candidate).into_response(),
        Ok(Err(d)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({ "errors": d.0 })),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Stops shadow evaluation (200 with the candidate that was set, 404 when none was).
async fn shadow_clear(State(p): State<Arc<Proxy>>) -> Response {
    match p.shadow.clear() {
        Some(c) => axum::Json(c).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": "no shadow bundle is set" })),
        )
            .into_response(),
    }
}
