//! The admin listener: health (`/healthz`, `/readyz`), Prometheus `/metrics`, and the JSON admin API under `/v1`.
//! Admin API calls are authenticated and authorized by the access service (the bundle's own policies).

mod access;
mod caller;
mod console;
mod entities;
mod error;

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRef, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::service::TowerToHyperService;
use jitgate_engine::lifecycle::Action;
use jitgate_engine::log::{self, Cursor, Filter, Outcome, RecordKind};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use self::error::ApiError;
use crate::access::{AccessService, Caller};
use crate::listener::{Accepted, Limits};
use crate::metrics::Histogram;
use crate::state::Proxy;

/// Default and largest page size of `GET /v1/decisions`.
const DECISIONS_DEFAULT_LIMIT: u32 = 100;
const DECISIONS_MAX_LIMIT: u32 = 1000;

/// Serves `app` on `listener` until the task is dropped: plain HTTP, or HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with
/// `tls`, under the admin listener's own `limits` (connections, header and idle timeouts), so that admin callers
/// cannot take what the data plane needs. Handlers see the caller's address either way (`ConnectInfo`).
pub async fn serve(listener: TcpListener, app: Router, tls: Option<TlsAcceptor>, limits: Limits) {
    let make_service = move |conn: Accepted<'_>| {
        TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(conn.peer))))
    };
    // Stopped by dropping the task (see `Running::wait`), not by a shutdown signal.
    let never = std::future::pending::<()>();
    crate::listener::serve("admin", listener, tls, limits, never, make_service).await;
}

/// The admin router: the API under `/v1`, and the approver console under `/ui/` (see [`console`]).
pub fn router(proxy: Arc<Proxy>) -> Router {
    let console = console::Console::new(proxy.clone());
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
        .route("/v1/decisions", get(decisions))
        .with_state(proxy.clone())
        .merge(access::router(proxy.access.clone()))
        .merge(console::router(console.clone()))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            console,
            console::session_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(proxy, run_to_the_end))
}

impl FromRef<Arc<Proxy>> for AccessService {
    fn from_ref(p: &Arc<Proxy>) -> Self {
        p.access.clone()
    }
}

/// 404 for a path the admin API does not have, as JSON like every other error.
async fn unknown_route(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("the admin API has no {method} {}", uri.path()),
    )
    .into_response()
}

/// 405 for a method a route does not take, as JSON.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
    .into_response()
}

/// The largest admin API request body (axum's default limit for a buffered body).
const ADMIN_MAX_BODY: usize = 2 * 1024 * 1024;

/// Runs an admin call, once its body is in, in a task of its own ([`Proxy::tasks`]). hyper drops a call's future
/// when its caller hangs up (a FIN, an HTTP/2 reset); a call received whole goes on regardless, so a change it
/// commits (an approval, a break-glass grant, a revocation, an expiry) is never left without its record, its
/// webhook or the release of a held connection. A caller that hangs up before its body is in changes nothing.
async fn run_to_the_end(
    State(p): State<Arc<Proxy>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, ADMIN_MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let e = e.into_inner();
            if !e.is::<http_body_util::LengthLimitError>() {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the request body could not be read: {e}"),
                )
                .into_response();
            }
            // The rest of the body is never read, so the connection cannot carry another request: say so, or a
            // client reusing it races the close (RFC 9112, section 9.6).
            let mut r = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is over {ADMIN_MAX_BODY} bytes"),
            )
            .into_response();
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(body));
    match p.tasks.spawn(next.run(req)).await {
        Ok(r) => r,
        Err(e) => ApiError::task_failed("admin call", &e).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready unless shutdown has begun, the decision log cannot take records or an issuer's keys are not fetched yet
/// (see [`Proxy::readiness`]).
async fn readyz(State(p): State<Arc<Proxy>>) -> Response {
    match p.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(p): State<Arc<Proxy>>) -> Response {
    let grants = p.authorizer.grants().len() as f64;
    let queued = p.log.queued() as f64;
    let log = p.log.writer().map(|w| w.stats()).unwrap_or_default();
    let mut upstreams: Vec<(&str, &Histogram)> = p
        .upstreams
        .iter()
        .map(|(service, u)| (service.as_str(), &*u.latency))
        .collect();
    upstreams.sort_by_key(|(service, _)| *service);
    let mut gauges = vec![
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
    ];
    let mut counters = Vec::new();
    if let Some(shared) = &p.shared {
        use std::sync::atomic::Ordering::Relaxed;
        let (s, f, ship) = (shared.store.stats(), &shared.follow, &shared.ship);
        let silent = p
            .authorizer
            .freshness()
            .map(|f| f.silent_for().as_secs_f64())
            .unwrap_or(0.0);
        gauges.extend([
            (
                "jitgate_store_silent_seconds",
                "Time since the shared store was last heard from (beyond [store] max_staleness: fail closed).",
                silent,
            ),
            (
                "jitgate_store_connected",
                "Whether the store follower's connection is up (1) or being re-established (0).",
                if f.connected.load(Relaxed) { 1.0 } else { 0.0 },
            ),
            (
                "jitgate_store_notification_lag_max_seconds",
                "Largest delay from a change's commit to this replica's index seen since start.",
                f.lag_ms_max.load(Relaxed) as f64 / 1000.0,
            ),
            (
                "jitgate_log_shipper_lag_records",
                "Sealed local decision records not yet shipped to the shared store.",
                ship.lag_records.load(Relaxed) as f64,
            ),
            (
                "jitgate_log_shipper_lag_seconds",
                "Age of the oldest sealed local decision record not yet shipped (0 when none waits).",
                ship.lag_ms.load(Relaxed) as f64 / 1000.0,
            ),
            (
                "jitgate_log_shipped_seq",
                "The newest seq of this replica's decision log known to be in the shared store.",
                ship.shipped_seq.load(Relaxed) as f64,
            ),
        ]);
        counters.extend([
            (
                "jitgate_store_calls_total",
                "Calls to the shared store.",
                s.calls.load(Relaxed),
            ),
            (
                "jitgate_store_call_microseconds_total",
                "Time spent in calls to the shared store (mean latency: this / calls_total).",
                s.micros.load(Relaxed),
            ),
            (
                "jitgate_store_errors_total",
                "Calls to the shared store that failed.",
                s.errors.load(Relaxed),
            ),
            (
                "jitgate_store_notifications_total",
                "Change notifications applied to the grant index.",
                f.notifications.load(Relaxed),
            ),
            (
                "jitgate_store_notification_lag_milliseconds_total",
                "Sum of the notifications' delays from commit to applied (mean: this / notifications_total).",
                f.lag_ms_sum.load(Relaxed),
            ),
            (
                "jitgate_store_resyncs_total",
                "Full reloads of the grant index from the shared store.",
                f.resyncs.load(Relaxed),
            ),
            (
                "jitgate_store_reconnects_total",
                "Times the store follower lost its connection and reconnected.",
                f.reconnects.load(Relaxed),
            ),
            (
                "jitgate_log_shipped_records_total",
                "Decision records this process shipped to the shared store (copies already there not counted).",
                ship.shipped.load(Relaxed),
            ),
            (
                "jitgate_log_shipper_errors_total",
                "Shipping passes that failed (each is retried).",
                ship.errors.load(Relaxed),
            ),
            (
                "jitgate_log_ship_feed_records_total",
                "Decision records the shipper took from the writer in memory (not read back from the log).",
                ship.feed_records.load(Relaxed),
            ),
            (
                "jitgate_log_ship_reads_total",
                "Times the shipper read the local decision log back (records the writer's feed did not hold).",
                ship.log_reads.load(Relaxed),
            ),
            (
                "jitgate_log_ship_read_records_total",
                "Decision records the shipper read back from the local log (not in the writer's feed).",
                ship.log_records.load(Relaxed),
            ),
            (
                "jitgate_log_ship_feed_dropped_total",
                "Committed records the writer's feed could not hold (full); the shipper reads them from the log.",
                p.log.ship_feed().map_or(0, |f| f.dropped()),
            ),
        ]);
    }
    let body = p.metrics.render(
        &upstreams,
        &gauges,
        &[
            (
                "jitgate_log_records_committed_total",
                "Decision-log records committed to SQLite.",
                log.committed,
            ),
            (
                "jitgate_log_batches_total",
                "Decision-log transactions committed (records per batch: records_committed / batches).",
                log.batches,
            ),
            (
                "jitgate_log_records_recovered_total",
                "Journaled records committed at this start (acknowledged before an earlier stop).",
                log.recovered,
            ),
            (
                "jitgate_log_sink_errors_total",
                "JSON Lines sink write failures (the records are committed regardless).",
                log.sink_errors,
            ),
        ]
        .into_iter()
        .chain(counters)
        .collect::<Vec<_>>(),
    );
    let mut body = body;
    body.push_str(&bundle_info(&p.authorizer.bundle()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `jitgate_bundle_info`: the active bundle's revision, name and engine as labels (value 1), so that a dashboard can
/// show which revision serves and when it changed.
fn bundle_info(b: &jitgate_engine::Bundle) -> String {
    let label = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    format!(
        "# HELP jitgate_bundle_info The active bundle (value 1): revision, short revision, name, engine.\n\
         # TYPE jitgate_bundle_info gauge\n\
         jitgate_bundle_info{{revision=\"{}\",short_revision=\"{}\",name=\"{}\",engine=\"{}\"}} 1\n",
        label(&b.revision),
        label(b.short_revision()),
        label(&b.manifest.name),
        b.engine().as_str()
    )
}

async fn status(State(p): State<Arc<Proxy>>, caller: Caller) -> Response {
    if let Err(e) = p.access.require(caller, Action::Operate).await {
        return ApiError::from(e).into_response();
    }
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
async fn reload(State(p): State<Arc<Proxy>>, caller: Caller) -> Response {
    if let Err(e) = p.access.require(caller, Action::Operate).await {
        return ApiError::from(e).into_response();
    }
    let r = p.reloader.clone();
    match tokio::task::spawn_blocking(move || r.reload_now()).await {
        Ok(attempt) => {
            let status = if attempt.outcome == crate::reload::ReloadOutcome::Failed {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            (status, axum::Json(attempt)).into_response()
        }
        Err(e) => ApiError::task_failed("reload", &e).into_response(),
    }
}

/// The shadow candidate, the comparison counts and the recent disagreements.
async fn shadow_status(State(p): State<Arc<Proxy>>, caller: Caller) -> Response {
    if let Err(e) = p.access.require(caller, Action::Operate).await {
        return ApiError::from(e).into_response();
    }
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
/// not load (nothing changes then), 400 ([`ApiError`]) when the body is not a JSON `{"path": ...}`.
async fn shadow_set(
    State(p): State<Arc<Proxy>>,
    caller: Caller,
    body: Result<axum::Json<ShadowBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(e) = p.access.require(caller, Action::Operate).await {
        return ApiError::from(e).into_response();
    }
    let axum::Json(body) = match body {
        Ok(b) => b,
        Err(e) => return ApiError::bad_body(&e.body_text()).into_response(),
    };
    let shadow = p.shadow.clone();
    match tokio::task::spawn_blocking(move || shadow.load(&body.path)).await {
        Ok(Ok(candidate)) => axum::Json(candidate).into_response(),
        Ok(Err(d)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({ "errors": d.0 })),
        )
            .into_response(),
        Err(e) => ApiError::task_failed("shadow load", &e).into_response(),
    }
}

/// Stops shadow evaluation (200 with the candidate that was set, 404 ([`ApiError`]) when none was).
async fn shadow_clear(State(p): State<Arc<Proxy>>, caller: Caller) -> Response {
    if let Err(e) = p.access.require(caller, Action::Operate).await {
        return ApiError::from(e).into_response();
    }
    match p.shadow.clear() {
        Some(c) => axum::Json(c).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no shadow bundle is set",
        )
        .into_response(),
    }
}

/// The filter, cursor and page size of `GET /v1/decisions`, from its query string; a 400 naming the parameter for a
/// bad value or an unknown parameter.
fn decisions_query(pairs: &[(String, String)]) -> Result<(Filter, Option<Cursor>, u32), ApiError> {
    let mut f = Filter::default();
    let mut cursor = None;
    let mut limit = DECISIONS_DEFAULT_LIMIT;
    for (k, v) in pairs {
        let v = v.clone();
        match k.as_str() {
            "since" => f.since = Some(log::parse_time(&v).map_err(|e| ApiError::bad_field(k, e))?),
            "until" => f.until = Some(log::parse_time(&v).map_err(|e| ApiError::bad_field(k, e))?),
            "principal" => f.principal = Some(v),
            "action" => f.action = Some(v),
            "resource" => f.resource = Some(v),
            "decision" => {
                f.decision = Some(Outcome::parse(&v).ok_or_else(|| {
                    ApiError::bad_field(k, format!("`{v}` must be allow, deny, hold or error"))
                })?)
            }
            "grant" => f.grant = Some(v),
            "revision" => f.revision = Some(v),
            "request_id" => f.request_id = Some(v),
            "kind" => {
                f.kind = Some(RecordKind::parse(&v).ok_or_else(|| {
                    ApiError::bad_field(
                        k,
                        format!("`{v}` must be decision, lifecycle or checkpoint"),
                    )
                })?)
            }
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=DECISIONS_MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_field(
                            k,
                            format!("`{v}` must be a whole number from 1 to {DECISIONS_MAX_LIMIT}"),
                        )
                    })?
            }
            "after" => {
                cursor = Some(Cursor(
                    v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        ApiError::bad_field(
                            k,
                            format!("`{v}` is not a record seq (a `next` value)"),
                        )
                    })?,
                ))
            }
            other => {
                return Err(ApiError::bad_field(
                    other,
                    "unknown parameter; expected since, until, principal, action, resource, decision, grant, \
                     revision, request_id, kind, limit or after",
                ));
            }
        }
    }
    Ok((f, cursor, limit))
}

/// Reads the decision log (`readDecisions` on `Service::"jitgate"`): `{"records": [...], "next": seq|null}`, oldest
/// first; pass `next` back as `after` for the following page.
async fn decisions(
    State(p): State<Arc<Proxy>>,
    caller: Caller,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let page = read_decisions(&p, caller, q.map(|Query(pairs)| pairs)).await?;
    Ok(axum::Json(serde_json::json!({
        "records": page.records,
        "next": page.next.map(|c| c.0),
    }))
    .into_response())
}

/// One page of the decision log for `caller` (who must be allowed `readDecisions`), filtered by the query `pairs`
/// of `GET /v1/decisions`: the API's answer and the console's Decisions view.
pub(crate) async fn read_decisions(
    p: &Arc<Proxy>,
    caller: Caller,
    q: Result<Vec<(String, String)>, axum::extract::rejection::QueryRejection>,
) -> Result<log::Page, ApiError> {
    p.access.require(caller, Action::ReadDecisions).await?;
    let pairs = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let (filter, cursor, limit) = decisions_query(&pairs)?;
    // With `acknowledge = "journal"`, served decisions may still be on their way to SQLite: commit them first, so
    // the answer includes every decision served before this call.
    if p.config.log_acknowledge == crate::config::Acknowledge::Journal {
        p.log.flush().await;
    }
    let path = p.config.log_path.clone();
    match tokio::task::spawn_blocking(move || log::query(&path, &filter, cursor, limit)).await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "decision log query failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the decision log could not be read: {e}"),
            ))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )),
    }
}
