//! The approver console without a browser, through the real proxy on 127.0.0.1: the development sign-in (and that
//! a configured `serve` has none), CSRF refusal, session expiry, escaping, the same 403 as the API, and the OpenID
//! Connect authorization code flow with PKCE against a loopback provider stand-in (discovery, JWKS, authorize,
//! token) whose ID tokens the proxy verifies with its own JWKS machinery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle_common;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jitgate_engine::Clock;
use jitgate_proxy::authenticate::IssuerConfig;
use jitgate_proxy::config::{Config, RawConsole};
use jitgate_proxy::run::{Running, start};
use lifecycle_common::{T0, groups, raw_config};
use serde_json::{Value, json};
use sha2::Digest;

/// A proxy as the quickstart makes it (its development sign-in on) with a frozen clock.
struct Dev {
    running: Running,
    clock: Clock,
    http: reqwest::Client,
    _upstream: jitgate_proxy::demo::DemoUpstream,
    _dir: tempfile::TempDir,
}

impl Dev {
    async fn start() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let upstream = jitgate_proxy::demo::DemoUpstream::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let raw = raw_config(dir.path(), upstream.addr);
        let mut config = Config::validate(raw, Path::new("<test>"), dir.path()).unwrap();
        // What only the embedded quickstart does.
        config.console_dev_users = ["alice", "bob", "carol", "erin"]
            .iter()
            .map(|n| (n.to_string(), groups(n)))
            .collect();
        let clock = Clock::frozen(T0);
        let running = start(config, clock.clone()).await.unwrap();
        Dev {
            running,
            clock,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _upstream: upstream,
            _dir: dir,
        }
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr.unwrap())
    }

    fn token(&self, who: &str) -> String {
        let now = self.clock.now();
        self.running
            .proxy
            .local_issuer
            .as_ref()
            .unwrap()
            .mint_session(
                &jitgate_engine::EntityRef::new("User", who),
                &groups(who),
                now + 86_400,
                now,
            )
            .unwrap()
    }

    /// Signs `who` in with the development sign-in: (the `Cookie` header value, the page's CSRF token).
    async fn sign_in(&self, who: &str) -> (String, String) {
        let r = self
            .http
            .post(self.admin("/ui/login/dev"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("user={who}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(!set.contains("Secure"), "plain http: not Secure: {set}");
        let cookie = set.split(';').next().unwrap().to_string();
        let page = self.page(&cookie, "/ui/access").await.1;
        let csrf = page
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        (cookie, csrf)
    }

    async fn page(&self, cookie: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.admin(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(
        &self,
        cookie: &str,
        csrf: Option<&str>,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.admin(path))
            .header("cookie", cookie)
            .json(&body);
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn pending(&self) -> usize {
        let r = self
            .http
            .get(self.admin("/v1/requests?state=pending&all=true"))
            .bearer_auth(self.token("bob"))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["requests"].as_array().unwrap().len()
    }
}

fn writer_request(reason: &str) -> Value {
    json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "30m", "reason": reason})
}

#[tokio::test]
async fn state_changing_calls_need_the_sessions_csrf_token() {
    let d = Dev::start().await;
    let (cookie, csrf) = d.sign_in("alice").await;
    let (s, v) = d
        .post(&cookie, None, "/v1/requests", writer_request("INC-1"))
        .await;
    assert_eq!((s, v["error"].as_str()), (403, Some("csrf")), "{v}");
    let (s, v) = d
        .post(
            &cookie,
            Some("not-the-token"),
            "/v1/requests",
            writer_request("INC-1"),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (403, Some("csrf")), "{v}");
    assert_eq!(d.pending().await, 0, "a refused call changed nothing");
    let (s, v) = d
        .post(
            &cookie,
            Some(&csrf),
            "/v1/requests",
            writer_request("INC-1"),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["request"]["requester"], "User::\"alice\"");
    assert_eq!(d.pending().await, 1);
    // Sign-out is state-changing too.
    let r = d
        .http
        .post(d.admin("/ui/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        d.page(&cookie, "/v1/whoami").await.0,
        200,
        "still signed in"
    );
}

#[tokio::test]
async fn a_console_user_gets_the_apis_answers_and_its_403() {
    let d = Dev::start().await;
    let (alice, alice_csrf) = d.sign_in("alice").await;
    let (s, v) = d
        .post(
            &alice,
            Some(&alice_csrf),
            "/v1/requests",
            writer_request("INC-2"),
        )
        .await;
    assert_eq!(s, 201);
    let id = v["request"]["id"].as_str().unwrap().to_string();
    // alice may not approve her own request: the same 403 through the console session as with her token.
    let (s, by_session) = d
        .post(
            &alice,
            Some(&alice_csrf),
            &format!("/v1/requests/{id}/approve"),
            json!({}),
        )
        .await;
    let r = d
        .http
        .post(d.admin(&format!("/v1/requests/{id}/approve")))
        .bearer_auth(d.token("alice"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!((s, r.status().as_u16()), (403, 403));
    let by_token: Value = r.json().await.unwrap();
    assert_eq!(by_session["error"], by_token["error"]);
    // bob (payments-approvers) may.
    let (bob, bob_csrf) = d.sign_in("bob").await;
    let (s, v) = d
        .post(
            &bob,
            Some(&bob_csrf),
            &format!("/v1/requests/{id}/approve"),
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["request"]["state"], "approved");
    let (s, page) = d.page(&alice, "/ui/access").await;
    assert_eq!(s, 200);
    assert!(
        page.contains("class=\"countdown\""),
        "alice's grant shows its countdown"
    );
    // The Bundle view is `operate`, which bob lacks: the page says the API's 403.
    let (_, page) = d.page(&bob, "/ui/bundle").await;
    assert!(page.contains("403 "), "{page}");
}

#[tokio::test]
async fn sessions_end_after_their_lifetime() {
    let d = Dev::start().await;
    let (cookie, csrf) = d.sign_in("alice").await;
    assert_eq!(d.page(&cookie, "/v1/whoami").await.0, 200);
    d.clock.advance(8 * 3600 - 1);
    assert_eq!(d.page(&cookie, "/v1/whoami").await.0, 200);
    d.clock.advance(1);
    assert_eq!(d.page(&cookie, "/v1/whoami").await.0, 401, "expired");
    let (s, _) = d
        .post(&cookie, Some(&csrf), "/v1/requests", writer_request("late"))
        .await;
    assert_eq!(s, 401, "an ended session cannot act");
    let r = d
        .http
        .get(d.admin("/ui/access"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
}

#[tokio::test]
async fn user_text_is_escaped_and_pages_run_no_inline_script() {
    let d = Dev::start().await;
    let xss = r#"<script>alert(1)</script> "><img src=x onerror=alert(2)>"#;
    let r = d
        .http
        .post(d.admin("/v1/requests"))
        .bearer_auth(d.token("alice"))
        .json(&writer_request(xss))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (bob, _) = d.sign_in("bob").await;
    let r = d
        .http
        .get(d.admin("/ui/approvals"))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let page = r.text().await.unwrap();
    assert!(
        page.contains(
            "&lt;script&gt;alert(1)&lt;/script&gt; &quot;&gt;&lt;img src=x onerror=alert(2)&gt;"
        ),
        "{page}"
    );
    assert!(!page.contains("<script>alert") && !page.contains("<img src=x"));
}

#[tokio::test]
async fn a_configured_serve_has_no_development_sign_in() {
    // `console_dev_users` is no config key: neither at the top nor under [console].
    for text in [
        "console_dev_users = [[\"alice\", []]]\n",
        "[console]\ndev_users = [\"alice\"]\n",
    ] {
        let e = Config::parse(Path::new("jitgate.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
    // A configured proxy (everything from a file) answers 404 to the development sign-in and does not offer it.
    let dir = tempfile::tempdir().unwrap();
    let upstream = jitgate_proxy::demo::DemoUpstream::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let raw = raw_config(dir.path(), upstream.addr);
    let config = Config::validate(raw, Path::new("<test>"), dir.path()).unwrap();
    assert!(config.console_dev_users.is_empty());
    let running = start(config, Clock::frozen(T0)).await.unwrap();
    let admin = format!("http://{}", running.admin_addr.unwrap());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{admin}/ui/login/dev"))
        .body("user=alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("set-cookie").is_none());
    let page = http
        .get(format!("{admin}/ui/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("/ui/login/dev"), "{page}");
    assert!(page.contains("[console]"), "says how to configure sign-in");
}

#[test]
fn console_config_errors_name_the_key() {
    let text = r#"
[[issuers]]
issuer = "https://id.example"
audiences = ["jitgate-api"]
algorithms = ["RS256"]
jwks_url = "https://id.example/jwks"

[console]
issuer = "https://other.example"
client_id = "console"
redirect_url = "https://jitgate.example/callback"
public_url = "ftp://jitgate.example"
session_lifetime = "30d"
"#;
    let e = Config::parse(Path::new("jitgate.toml"), text)
        .unwrap_err()
        .to_string();
    for key in [
        "console.issuer",
        "console.public_url",
        "console.session_lifetime",
    ] {
        assert!(e.contains(key), "{key} not named in: {e}");
    }
    let text = text
        .replace("https://other.example", "https://id.example")
        .replace("ftp://", "https://")
        .replace("30d", "8h");
    let e = Config::parse(Path::new("jitgate.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("console.client_id"),
        "client id not an audience: {e}"
    );
    assert!(
        e.contains("console.redirect_url"),
        "redirect not under public_url: {e}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// A loopback OpenID provider stand-in

#[derive(Default)]
struct Provider {
    issuer: String,
    /// Codes handed out: (nonce, code_challenge, redirect_uri).
    codes: Mutex<HashMap<String, (String, String, String)>>,
    /// Token requests refused (a bad verifier, an unknown code).
    refused: Mutex<Vec<String>>,
}

fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect()
}

async fn discovery(State(p): State<Arc<Provider>>) -> impl IntoResponse {
    axum::Json(json!({
        "issuer": p.issuer,
        "authorization_endpoint": format!("{}/authorize", p.issuer),
        "token_endpoint": format!("{}/token", p.issuer),
        "jwks_uri": format!("{}/jwks", p.issuer),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks() -> impl IntoResponse {
    axum::Json(json!({"keys": [support::RSA_A.jwk("a")]}))
}

/// Signs alice in at once and sends the browser back with a code.
async fn authorize(
    State(p): State<Arc<Provider>>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "jitgate-console");
    assert_eq!(q["code_challenge_method"], "S256");
    let code = format!("code-{}", p.codes.lock().unwrap().len());
    p.codes.lock().unwrap().insert(
        code.clone(),
        (
            q["nonce"].clone(),
            q["code_challenge"].clone(),
            q["redirect_uri"].clone(),
        ),
    );
    Redirect::to(&format!(
        "{}?code={code}&state={}",
        q["redirect_uri"], q["state"]
    ))
}

async fn token(State(p): State<Arc<Provider>>, body: String) -> axum::response::Response {
    let f = form(&body);
    let refuse = |why: &str| {
        p.refused.lock().unwrap().push(why.to_string());
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    let Some((nonce, challenge, redirect)) = p.codes.lock().unwrap().remove(&f["code"]) else {
        return refuse("unknown code");
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())) != challenge {
        return refuse("code_verifier does not match the challenge");
    }
    if f["redirect_uri"] != redirect || f["grant_type"] != "authorization_code" {
        return refuse("redirect_uri or grant_type");
    }
    let now = jitgate_engine::clock::now_system();
    let claims = json!({
        "iss": p.issuer, "aud": f["client_id"], "sub": "alice", "groups": ["engineering"],
        "nonce": nonce, "iat": now, "exp": now + 300,
    });
    let id_token = support::sign(
        jsonwebtoken::Algorithm::RS256,
        "a",
        &support::RSA_A.enc,
        &claims,
    );
    axum::Json(json!({"access_token": "opaque", "token_type": "Bearer", "id_token": id_token}))
        .into_response()
}

async fn start_provider() -> Arc<Provider> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = Arc::new(Provider {
        issuer: format!("http://{}", listener.local_addr().unwrap()),
        ..Provider::default()
    });
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(p.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    p
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

#[tokio::test]
async fn openid_connect_code_flow_with_pkce_signs_in() {
    let provider = start_provider().await;
    let issuer = provider.issuer.clone();
    let h = support::Harness::start_with(|raw, _| {
        raw.admin.listen = "127.0.0.1:0".into();
        let mut i = IssuerConfig::new(&issuer, format!("{issuer}/jwks"), "jitgate-api", &["RS256"]);
        i.audiences.push("jitgate-console".into());
        raw.issuers = vec![i];
        raw.console = Some(RawConsole {
            issuer: issuer.clone(),
            client_id: "jitgate-console".into(),
            client_secret_env: None,
            redirect_url: "http://console.test/ui/callback".into(),
            public_url: "http://console.test".into(),
            session_lifetime: "1h".into(),
        });
    })
    .await;
    let admin = format!("http://{}", h.running.as_ref().unwrap().admin_addr.unwrap());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let page = http
        .get(format!("{admin}/ui/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("Sign in with {issuer}")), "{page}");
    assert!(
        !page.contains("/ui/login/dev"),
        "no development sign-in in a configured serve"
    );

    // Begin: off to the provider with a PKCE challenge, state and nonce; the state is tied to this browser.
    let r = http
        .get(format!("{admin}/ui/login/oidc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with(&format!("{issuer}/authorize?")), "{to}");
    for p in [
        "code_challenge=",
        "code_challenge_method=S256",
        "nonce=",
        "state=",
        "scope=openid",
    ] {
        assert!(to.contains(p), "{p} missing from {to}");
    }
    let login = set_cookie(&r, "jitgate_console_login").unwrap();
    let login = login.split(';').next().unwrap().to_string();

    // The provider signs alice in and sends her back with a code.
    let r = http.get(&to).send().await.unwrap();
    let back = r.headers()["location"].to_str().unwrap().to_string();
    let query = back.split_once('?').unwrap().1.to_string();
    assert!(
        back.starts_with("http://console.test/ui/callback?"),
        "{back}"
    );

    // Without the browser's login cookie the callback is refused (and the sign-in stays usable).
    let r = http
        .get(format!("{admin}/ui/callback?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "jitgate_console").is_none());

    let r = http
        .get(format!("{admin}/ui/callback?{query}"))
        .header("cookie", &login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", provider.refused.lock().unwrap());
    let session = set_cookie(&r, "jitgate_console").unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(session.contains("Max-Age=3600"), "{session}");
    let cookie = session.split(';').next().unwrap().to_string();
    let who: Value = http
        .get(format!("{admin}/v1/whoami"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["principal"], "User::\"alice\"", "{who}");
    assert_eq!(who["groups"], json!(["engineering"]));
    assert!(provider.refused.lock().unwrap().is_empty());

    // A code is good once.
    let r = http
        .get(format!("{admin}/ui/callback?{query}"))
        .header("cookie", &login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
