//! The approver console at `/ui/`: server-rendered pages (HTML, a stylesheet and a little JavaScript, all embedded
//! in the binary) for requesters, approvers and auditors.
//!
//! There is no second authorization model. Signing in (OpenID Connect authorization code flow with PKCE against
//! `[console] issuer`, or in the quickstart only a development sign-in) proves an identity once; the session then
//! supplies it where the admin API would take it from the bearer token ([`session_layer`], `caller.rs`). Pages read
//! through the access service with that caller, and every action is a call of the admin API itself (`/v1/...`)
//! from the page's script, so the same handlers and the same policies decide it: a console user who may not approve
//! gets the 403 the CLI gets.
//!
//! Sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when `public_url` is https), kept in
//! memory with a bounded lifetime. Every state-changing call made with the cookie must carry the session's CSRF
//! token in `x-csrf-token`, or it is refused (403) before any handler runs.

mod oidc;
mod views;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;

use super::error::ApiError;
use crate::authenticate::Identity;
use crate::state::Proxy;

/// The session cookie.
pub(crate) const COOKIE: &str = "jitgate_console";
/// The cookie that ties a sign-in in progress to the browser that began it.
const LOGIN_COOKIE: &str = "jitgate_console_login";
/// The header that carries the session's CSRF token on state-changing calls.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// Most sessions (and, separately, sign-ins in progress) held at once; the oldest go first beyond it.
const MAX_SESSIONS: usize = 10_000;
/// How long a sign-in may take at the provider.
const LOGIN_TTL: i64 = 600;
/// The lifetime of a development sign-in (quickstart only).
const DEV_SESSION: i64 = 8 * 3600;

/// The stylesheet and the script, embedded.
const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// A signed-in person.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// Who, as proved at sign-in.
    pub identity: Identity,
    /// The token state-changing calls must carry.
    pub csrf: String,
    /// When it ends (unix seconds, the proxy's clock).
    pub expires_at: i64,
}

/// A request extension set by [`session_layer`]: the identity of the session a call carried (with a valid CSRF
/// token when the call changes state). The admin API's caller extractor takes it in place of a bearer token.
#[derive(Debug, Clone)]
pub(crate) struct SessionIdentity {
    /// Who.
    pub identity: Identity,
    /// The session's CSRF token (pages put it where their script finds it).
    pub csrf: String,
    /// When the session ends.
    pub expires_at: i64,
    /// The caller's address, canonical, as the admin API's caller extractor takes it (what policies see).
    pub client: String,
    /// The host the call named, if any.
    pub host: Option<String>,
}

/// A sign-in in progress: what the callback must match and what it needs.
#[derive(Debug, Clone)]
struct PendingLogin {
    verifier: String,
    nonce: String,
    started_at: i64,
}

/// The console's state: sessions and sign-ins in progress, over the proxy.
#[derive(Debug)]
pub(crate) struct Console {
    proxy: Arc<Proxy>,
    sessions: Mutex<HashMap<String, Session>>,
    logins: Mutex<HashMap<String, PendingLogin>>,
    oidc: Option<oidc::Client>,
}

/// A random token: 32 bytes, base64url.
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Whether `a` and `b` are equal, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in `headers`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl Console {
    /// The console of `proxy`.
    pub(crate) fn new(proxy: Arc<Proxy>) -> Arc<Self> {
        let oidc = proxy.config.console.clone().map(oidc::Client::new);
        Arc::new(Console {
            proxy,
            sessions: Mutex::default(),
            logins: Mutex::default(),
            oidc,
        })
    }

    fn now(&self) -> i64 {
        self.proxy.authorizer.clock().now()
    }

    /// Whether cookies must be `Secure` (the console is reached over https).
    fn secure(&self) -> bool {
        self.proxy
            .config
            .console
            .as_ref()
            .is_some_and(|c| c.secure())
            || self.proxy.config.admin_tls.is_some()
    }

    /// The session `id` names, while it lasts.
    fn session(&self, id: &str) -> Option<Session> {
        let now = self.now();
        let mut sessions = self.sessions.lock();
        match sessions.get(id) {
            Some(s) if now < s.expires_at => Some(s.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Starts a session for `identity` lasting `lifetime` seconds; the answer sets its cookie and goes to `to`.
    fn begin(&self, identity: Identity, lifetime: i64, to: &str) -> Response {
        let now = self.now();
        let id = random_token();
        {
            let mut sessions = self.sessions.lock();
            sessions.retain(|_, s| now < s.expires_at);
            if sessions.len() >= MAX_SESSIONS {
                if let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.expires_at)
                    .map(|(k, _)| k.clone())
                {
                    sessions.remove(&oldest);
                }
            }
            sessions.insert(
                id.clone(),
                Session {
                    identity,
                    csrf: random_token(),
                    expires_at: now.saturating_add(lifetime),
                },
            );
        }
        let secure = if self.secure() { "; Secure" } else { "" };
        let cookie =
            format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={lifetime}{secure}");
        // A page, not a redirect: a Strict cookie set at the end of a redirect chain that began at the provider (a
        // cross-site navigation) would not be sent with the next hop; a same-site navigation from this page sends it.
        let body = views::redirect_page(to);
        let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, views::HTML)], body).into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        views::harden(r)
    }
}

/// Finds the session a call carries (cookie `jitgate_console`, only when the call has no `Authorization` header)
/// and hands its identity on as a [`SessionIdentity`]; a state-changing call (any method but GET, HEAD, OPTIONS)
/// made with a session must carry its CSRF token in `x-csrf-token`, else it is refused here with 403 `csrf`.
/// A cookie naming no live session is ignored: the call is then unauthenticated (401 from the API, the sign-in page
/// from the console).
pub(crate) async fn session_layer(
    State(c): State<Arc<Console>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !req.headers().contains_key(header::AUTHORIZATION) {
        if let Some(s) = cookie(req.headers(), COOKIE).and_then(|id| c.session(&id)) {
            // Signing in again acts on no session.
            let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
                || req.uri().path().starts_with("/ui/login/");
            let token = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !safe && !same(token, &s.csrf) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    format!(
                        "a call made with a console session must carry the session's CSRF token in `{CSRF_HEADER}`"
                    ),
                )
                .into_response();
            }
            let client = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map_or_else(
                    || "0.0.0.0".to_string(),
                    |c| c.0.ip().to_canonical().to_string(),
                );
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            req.extensions_mut().insert(SessionIdentity {
                identity: s.identity,
                csrf: s.csrf,
                expires_at: s.expires_at,
                client,
                host,
            });
        }
    }
    next.run(req).await
}

/// The console's routes.
pub(crate) fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/login", get(login_page))
        .route("/ui/login/dev", post(dev_login))
        .route("/ui/login/oidc", get(oidc_login))
        .route("/ui/callback", get(callback))
        .route("/ui/logout", post(logout))
        .route("/ui/events", get(events))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
        .route("/ui/access", get(views::access))
        .route("/ui/approvals", get(views::approvals))
        .route("/ui/grants", get(views::grants))
        .route("/ui/decisions", get(views::decisions))
        .route("/ui/bundle", get(views::bundle))
        .with_state(console)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        JS,
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

async fn home(s: Option<axum::Extension<SessionIdentity>>) -> Response {
    match s {
        Some(_) => see_other("/ui/access"),
        None => see_other("/ui/login"),
    }
}

async fn login_page(State(c): State<Arc<Console>>) -> Response {
    let dev: Vec<&str> = c
        .proxy
        .config
        .console_dev_users
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    views::login(&dev, c.oidc.as_ref().map(|o| o.issuer()), None)
}

/// The fields of a form body (`application/x-www-form-urlencoded`).
fn form(body: &[u8]) -> HashMap<String, String> {
    let decode = |v: &str| {
        percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// The quickstart's development sign-in: one of the demo people, by name. Only [`crate::quickstart`] fills
/// `console_dev_users`; elsewhere this answers 404 like any path the admin listener does not have. The identity is
/// that of a development token minted for the person by jitgate's own issuer and verified like any bearer token.
async fn dev_login(State(c): State<Arc<Console>>, body: Bytes) -> Response {
    let users = &c.proxy.config.console_dev_users;
    if users.is_empty() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the development sign-in exists only in the quickstart",
        )
        .into_response();
    }
    let f = form(&body);
    let who = f.get("user").map(String::as_str).unwrap_or("");
    let Some((name, groups)) = users.iter().find(|(n, _)| n == who) else {
        let names: Vec<&str> = users.iter().map(|(n, _)| n.as_str()).collect();
        return views::login(
            &names,
            c.oidc.as_ref().map(|o| o.issuer()),
            Some("pick one of the people listed"),
        );
    };
    let Some(issuer) = &c.proxy.local_issuer else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the development sign-in needs jitgate's own issuer",
        )
        .into_response();
    };
    let now = c.now();
    let token = match issuer.mint_session(
        &jitgate_engine::EntityRef::new("User", name.as_str()),
        groups,
        now.saturating_add(DEV_SESSION),
        now,
    ) {
        Ok(t) => t,
        Err(e) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                .into_response();
        }
    };
    let bearer = format!("Bearer {token}");
    match c.proxy.auth.authenticate(Some(bearer.as_str()), now).await {
        Ok(identity) => c.begin(identity, DEV_SESSION, "/ui/access"),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

/// Begins an OpenID Connect sign-in: a fresh `state`, `nonce` and PKCE verifier, then off to the provider.
async fn oidc_login(State(c): State<Arc<Console>>) -> Response {
    let Some(client) = &c.oidc else {
        return views::login(
            &[],
            None,
            Some("no OpenID Connect sign-in is configured ([console])"),
        );
    };
    let endpoints = match client.endpoints().await {
        Ok(e) => e,
        Err(e) => return views::login(&[], Some(client.issuer()), Some(&e)),
    };
    let now = c.now();
    let state = random_token();
    let login = PendingLogin {
        verifier: random_token(),
        nonce: random_token(),
        started_at: now,
    };
    let url = client.authorize_url(&endpoints, &state, &login.nonce, &login.verifier);
    {
        let mut logins = c.logins.lock();
        logins.retain(|_, l| now < l.started_at.saturating_add(LOGIN_TTL));
        if logins.len() >= MAX_SESSIONS {
            logins.clear();
        }
        logins.insert(state.clone(), login);
    }
    let secure = if c.secure() { "; Secure" } else { "" };
    // Lax: the provider's redirect back is a cross-site navigation, which must carry it.
    let cookie = format!(
        "{LOGIN_COOKIE}={state}; Path=/ui/callback; HttpOnly; SameSite=Lax; Max-Age={LOGIN_TTL}{secure}"
    );
    let mut r = see_other(&url);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Query of the provider's redirect back.
#[derive(Debug, serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Ends an OpenID Connect sign-in: the `state` must be the one this browser began (its login cookie), the code is
/// exchanged with the PKCE verifier, and the ID token is verified by the proxy's authenticator (the issuer's JWKS,
/// algorithms, `exp`, `aud`) and must be for this client, from this issuer, with this sign-in's nonce.
async fn callback(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    q: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let fail = |why: &str| {
        let mut r = views::login(&[], c.oidc.as_ref().map(|o| o.issuer()), Some(why));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r
    };
    let Some(client) = &c.oidc else {
        return fail("no OpenID Connect sign-in is configured ([console])");
    };
    let Ok(Query(q)) = q else {
        return fail("the provider's answer has a malformed query");
    };
    if let Some(e) = q.error {
        return fail(&format!(
            "the provider refused the sign-in: {e} {}",
            q.error_description.unwrap_or_default()
        ));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return fail("the provider's answer has no code or no state");
    };
    if !cookie(&headers, LOGIN_COOKIE).is_some_and(|s| same(&s, &state)) {
        return fail("this sign-in was not begun in this browser (state mismatch); sign in again");
    }
    let now = c.now();
    let Some(login) = c.logins.lock().remove(&state) else {
        return fail("this sign-in is unknown or already used; sign in again");
    };
    if now >= login.started_at.saturating_add(LOGIN_TTL) {
        return fail("this sign-in took too long; sign in again");
    }
    let id_token = match client.exchange(&code, &login.verifier).await {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let bearer = format!("Bearer {id_token}");
    let identity = match c.proxy.auth.authenticate(Some(bearer.as_str()), now).await {
        Ok(i) => i,
        Err(e) => return fail(&format!("the ID token does not verify: {e}")),
    };
    if let Err(e) = client.check_id_token(&identity, &login.nonce) {
        return fail(&e);
    }
    let lifetime = i64::try_from(client.config().session_lifetime.as_secs()).unwrap_or(DEV_SESSION);
    c.begin(identity, lifetime, "/ui/access")
}

/// Ends the session (a state-changing call: it needs the CSRF token like any other).
async fn logout(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    s: Option<axum::Extension<SessionIdentity>>,
) -> Response {
    if s.is_some() {
        if let Some(id) = cookie(&headers, COOKIE) {
            c.sessions.lock().remove(&id);
        }
    }
    let secure = if c.secure() { "; Secure" } else { "" };
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Server-sent events for live pages: one `change` event (its data the lifecycle event's kind, nothing about whose
/// request it was) per lifecycle event; the page then fetches its view again, which the policies filter as ever.
/// The stream ends with the session.
async fn events(
    State(c): State<Arc<Console>>,
    s: Option<axum::Extension<SessionIdentity>>,
) -> Response {
    let Some(axum::Extension(s)) = s else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "sign in first")
            .into_response();
    };
    let rx = c.proxy.access.subscribe();
    let console = c.clone();
    let stream = futures_util::stream::unfold(rx, move |mut rx| {
        let console = console.clone();
        let until = s.expires_at;
        async move {
            let left = until.saturating_sub(console.now());
            if left <= 0 {
                return None;
            }
            let wait = std::time::Duration::from_secs(u64::try_from(left).unwrap_or(0));
            let data = match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Ok(e)) => e.kind.as_str(),
                // Missed some: the page refreshes all the same.
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => "lagged",
                Ok(Err(_)) | Err(_) => return None,
            };
            let ev = SseEvent::default().event("change").data(data);
            Some((Ok::<_, std::convert::Infallible>(ev), rx))
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
