//! The authenticate stage against a real JWKS server on 127.0.0.1: real RSA / P-256 / Ed25519 keys, real HTTP
//! fetches counted by the server, real files for jitgate's own signing key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jitgate_engine::EntityRef;
use jitgate_proxy::authenticate::{
    AuthError, AuthLimits, Authenticator, IssuerConfig, LocalIssuer, PrincipalNormalize,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://idp.test";
const AUD: &str = "jitgate-api";

// ---------------------------------------------------------------------------------------------------------------
// Keys

struct RsaKey {
    enc: EncodingKey,
    n: String,
    e: String,
    public_pem: String,
}

fn rsa_key() -> RsaKey {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let public = private.to_public_key();
    RsaKey {
        enc: EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes()),
        n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

impl RsaKey {
    fn jwk(&self, kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": self.n, "e": self.e})
    }
}

struct EcKey {
    enc: EncodingKey,
    x: String,
    y: String,
}

fn ec_key() -> EcKey {
    use p256::pkcs8::EncodePrivateKey;
    let signing = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let point = signing.verifying_key().to_encoded_point(false);
    EcKey {
        enc: EncodingKey::from_ec_der(signing.to_pkcs8_der().unwrap().as_bytes()),
        x: URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        y: URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    }
}

impl EcKey {
    fn jwk(&self, kid: &str) -> Value {
        json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": self.x, "y": self.y})
    }
}

/// RSA key generation is slow: every test shares these.
static RSA_A: LazyLock<RsaKey> = LazyLock::new(rsa_key);
static RSA_B: LazyLock<RsaKey> = LazyLock::new(rsa_key);
static EC: LazyLock<EcKey> = LazyLock::new(ec_key);

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "groups": ["dba", "oncall"],
        "iat": NOW, "exp": NOW + 600, "email": "alice@example.com",
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------------------------------------------
// A real JWKS server: swappable key set, fetch counter, optional gate that holds JWKS responses.

struct ServerState {
    jwks: Mutex<Value>,
    fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    base: String,
    /// When set, each JWKS request announces itself on `started` and waits for `release`.
    gate: Mutex<Option<(mpsc::UnboundedSender<()>, Arc<Notify>)>>,
    /// When set, served as the OpenID configuration instead of the one naming this server.
    discovery: Mutex<Option<Value>>,
    /// When set, the JWKS is served with this `Cache-Control` header.
    cache_control: Mutex<Option<String>>,
    /// While set, the JWKS endpoint answers 503 (an issuer that is down).
    failing: std::sync::atomic::AtomicBool,
}

struct JwksServer {
    state: Arc<ServerState>,
}

impl JwksServer {
    async fn start(jwks: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ServerState {
            jwks: Mutex::new(jwks),
            fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            base,
            gate: Mutex::new(None),
            discovery: Mutex::new(None),
            cache_control: Mutex::new(None),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        let app = axum::Router::new()
            .route("/jwks", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(serve_discovery))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { state }
    }

    fn url(&self) -> String {
        format!("{}/jwks", self.state.base)
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Holds every JWKS response from now on: each request announces itself on the receiver and waits for
    /// [`JwksServer::release_responses`].
    fn hold_responses(&self) -> (mpsc::UnboundedReceiver<()>, Arc<Notify>) {
        let (started_tx, started_rx) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        *self.state.gate.lock().unwrap() = Some((started_tx, Arc::clone(&release)));
        (started_rx, release)
    }

    /// Lets the held responses go, and serves later ones at once.
    fn release_responses(&self, release: &Notify) {
        *self.state.gate.lock().unwrap() = None;
        release.notify_waiters();
    }

    fn set(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    fn issuer(&self) -> IssuerConfig {
        IssuerConfig::new(ISS, self.url(), AUD, &["RS256", "ES256"])
    }
}

async fn serve_jwks(State(state): State<Arc<ServerState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let gate = state.gate.lock().unwrap().clone();
    if let Some((started, release)) = gate {
        // Waiting before `started` is sent: a `notify_waiters` right after it cannot be missed.
        let released = release.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        started.send(()).unwrap();
        released.await;
    }
    if state.failing.load(Ordering::SeqCst) {
        return http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut resp = Json(state.jwks.lock().unwrap().clone()).into_response();
    if let Some(cc) = state.cache_control.lock().unwrap().clone() {
        resp.headers_mut()
            .insert("cache-control", cc.parse().unwrap());
    }
    resp
}

async fn serve_discovery(State(state): State<Arc<ServerState>>) -> Json<Value> {
    state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(doc) = state.discovery.lock().unwrap().clone() {
        return Json(doc);
    }
    Json(
        json!({"issuer": state.base, "jwks_uri": format!("{}/jwks", state.base), "id_token_signing_alg_values_supported": ["RS256"]}),
    )
}

fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

async fn setup() -> (JwksServer, Authenticator) {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a"), EC.jwk("ec")])).await;
    let auth = Authenticator::new(vec![server.issuer()], None).unwrap();
    (server, auth)
}

async fn auth_err(auth: &Authenticator, token: &str, now: i64) -> AuthError {
    auth.authenticate(Some(&bearer(token)), now)
        .await
        .unwrap_err()
}

// ---------------------------------------------------------------------------------------------------------------
// Happy paths

#[tokio::test]
async fn valid_rs256_token_gives_identity_with_groups() {
    let (server, auth) = setup().await;
    assert_eq!(
        server.fetches(),
        0,
        "keys are fetched lazily, not at construction"
    );
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &claims());
    let id = auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    assert_eq!(id.principal, EntityRef::new("User", "alice"));
    assert_eq!(id.groups, vec!["dba".to_string(), "oncall".to_string()]);
    assert_eq!(id.issuer, ISS);
    assert_eq!(id.expires_at, NOW + 600);
    assert_eq!(id.grant_id, None);
    assert_eq!(id.claims["email"], "alice@example.com");
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn valid_es256_token_and_custom_claim_mapping() {
    let server = JwksServer::start(jwks(&[EC.jwk("ec")])).await;
    let mut cfg = server.issuer();
    cfg.principal_claim = "email".into();
    cfg.principal_type = "Acme::Person".into();
    cfg.groups_claim = "roles".into();
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    let token = sign(
        Algorithm::ES256,
        "ec",
        &EC.enc,
        &with(claims(), "roles", json!("admin")),
    );
    let id = auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    assert_eq!(
        id.principal,
        EntityRef::new("Acme::Person", "alice@example.com")
    );
    assert_eq!(id.groups, vec!["admin".to_string()]);
}

/// Issue 19 item 3: claims mapped to principal attributes (by name and by JSON pointer) and the groups' entity type
/// travel with the identity; an issuer without a mapping adds nothing.
#[tokio::test]
async fn claims_map_to_principal_attributes_and_groups_to_a_configured_type() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let mut cfg = server.issuer();
    cfg.groups_type = Some("Team".into());
    cfg.principal_attrs = std::collections::BTreeMap::from([
        ("job".to_string(), "job_title".to_string()),
        ("region".to_string(), "/address/region".to_string()),
        ("level".to_string(), "level".to_string()),
        ("absent".to_string(), "nowhere".to_string()),
    ]);
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    let c = with(
        with(
            with(claims(), "job_title", json!("manager")),
            "address",
            json!({"region": "eu", "city": "x"}),
        ),
        "level",
        json!(null),
    );
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &c);
    let id = auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    assert_eq!(id.group_type.as_deref(), Some("Team"));
    assert_eq!(id.groups, vec!["dba".to_string(), "oncall".to_string()]);
    assert_eq!(
        Value::Object(id.attrs),
        json!({"job": "manager", "region": "eu"}),
        "a null or missing claim leaves the attribute out"
    );

    let (_server, plain) = setup().await;
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &c);
    let id = plain
        .authenticate(Some(&bearer(&token)), NOW)
        .await
        .unwrap();
    assert!(id.attrs.is_empty() && id.group_type.is_none());
}

#[tokio::test]
async fn audience_may_be_an_array_and_scheme_is_case_insensitive() {
    let (_server, auth) = setup().await;
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "aud", json!(["other", AUD])),
    );
    auth.authenticate(Some(&format!("bearer  {token}")), NOW)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// Rejections

#[tokio::test]
async fn no_credential_is_missing_with_a_bare_challenge() {
    let (server, auth) = setup().await;
    for header in [None, Some(""), Some("Basic YWxpY2U6c2VjcmV0")] {
        let err = auth.authenticate(header, NOW).await.unwrap_err();
        assert_eq!(err, AuthError::Missing, "{header:?}");
        assert_eq!(err.www_authenticate(), r#"Bearer realm="jitgate""#);
    }
    assert_eq!(server.fetches(), 0);
}

#[tokio::test]
async fn malformed_tokens_are_rejected_without_fetching_keys() {
    let (server, auth) = setup().await;
    let good = sign(Algorithm::RS256, "a", &RSA_A.enc, &claims());
    let (h, rest) = good.split_once('.').unwrap();
    let cases = [
        "Bearer".to_string(),
        "Bearer abc".to_string(),
        "Bearer a.b.c.d".to_string(),
        "Bearer !!!.???.###".to_string(),
        format!("Bearer {h}.{}", URL_SAFE_NO_PAD.encode("not json")),
        format!("Bearer {}.{rest}", URL_SAFE_NO_PAD.encode(r#"{"kid":"a"}"#)),
        format!("Bearer {}", "a".repeat(20_000)),
    ];
    for header in &cases {
        let err = auth.authenticate(Some(header), NOW).await.unwrap_err();
        assert!(
            matches!(err, AuthError::Malformed(_)),
            "{header:.60}: {err:?}"
        );
        let challenge = err.www_authenticate();
        assert!(
            challenge.starts_with(
                r#"Bearer realm="jitgate", error="invalid_token", error_description=""#
            ),
            "{challenge}"
        );
        assert!(
            !challenge.contains(h),
            "the challenge must never echo the token"
        );
    }
    assert_eq!(server.fetches(), 0);
}

#[tokio::test]
async fn expiry_is_checked_with_leeway() {
    let (_server, auth) = setup().await;
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "exp", json!(NOW - 10)),
    );
    // Default leeway 30s: 10s past exp still passes, 31s past does not.
    auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    let err = auth_err(&auth, &token, NOW + 21).await;
    assert!(
        matches!(err, AuthError::Expired { exp, .. } if exp == NOW - 10),
        "{err:?}"
    );
    assert!(err.www_authenticate().contains("the token has expired"));

    let long_expired = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "exp", json!(NOW - 3600)),
    );
    assert!(matches!(
        auth_err(&auth, &long_expired, NOW).await,
        AuthError::Expired { .. }
    ));

    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &no_exp);
    assert_eq!(
        auth_err(&auth, &token, NOW).await,
        AuthError::MissingClaim("exp".into())
    );
}

#[tokio::test]
async fn nbf_in_the_future_is_rejected() {
    let (_server, auth) = setup().await;
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "nbf", json!(NOW + 120)),
    );
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::NotYetValid { .. }
    ));
    // Within the leeway it passes.
    auth.authenticate(Some(&bearer(&token)), NOW + 100)
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let (_server, auth) = setup().await;
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "aud", json!("someone-else")),
    );
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::WrongAudience(_)
    ));
    let mut no_aud = claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &no_aud);
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::WrongAudience(_)
    ));
}

#[tokio::test]
async fn unknown_issuer_is_rejected_before_any_fetch() {
    let (server, auth) = setup().await;
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "iss", json!("https://evil.test")),
    );
    let err = auth_err(&auth, &token, NOW).await;
    assert_eq!(err, AuthError::UnknownIssuer("https://evil.test".into()));
    assert!(
        !err.www_authenticate().contains("evil"),
        "the caller-facing text names no issuer"
    );
    assert_eq!(server.fetches(), 0);
}

#[tokio::test]
async fn missing_principal_claim_is_rejected() {
    let (_server, auth) = setup().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &c);
    assert_eq!(
        auth_err(&auth, &token, NOW).await,
        AuthError::MissingClaim("sub".into())
    );
}

/// A principal id with a character a reader cannot see (zero-width space, bidi controls, C0/C1, a no-break
/// space) would be a second principal that looks like the first, e.g. a second approver: refused, naming the
/// claim, whatever the issuer's normalization.
#[tokio::test]
async fn principal_ids_with_invisible_or_control_characters_are_refused() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    for normalize in [
        PrincipalNormalize::Exact,
        PrincipalNormalize::Nfc,
        PrincipalNormalize::NfcFold,
    ] {
        let mut cfg = server.issuer();
        cfg.principal_normalize = normalize;
        let auth = Authenticator::new(vec![cfg], None).unwrap();
        for id in [
            "erin\u{200b}",
            "\u{202e}nire",
            "er\u{2067}in",
            "erin\u{feff}",
            "erin\u{1}",
            "erin\u{85}",
            "erin\u{a0}",
        ] {
            let token = sign(
                Algorithm::RS256,
                "a",
                &RSA_A.enc,
                &with(claims(), "sub", json!(id)),
            );
            match auth_err(&auth, &token, NOW).await {
                AuthError::InvalidClaim(m) => assert!(m.contains("`sub`"), "{id:?}: {m}"),
                other => panic!("{id:?} ({normalize:?}): {other:?}"),
            }
        }
    }
}

/// With `principal_normalize = "nfc_fold"`, `Erin`, `erin` and a decomposed `é` name one principal (a grant or
/// an approval by one is the other's); by default ids stay exact.
#[tokio::test]
async fn principal_normalize_folds_case_and_composes_to_one_principal() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let token = |id: &str| {
        sign(
            Algorithm::RS256,
            "a",
            &RSA_A.enc,
            &with(claims(), "sub", json!(id)),
        )
    };
    let mut cfg = server.issuer();
    cfg.principal_normalize = PrincipalNormalize::NfcFold;
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    for id in ["Erin", "erin", "ERIN"] {
        let got = auth
            .authenticate(Some(&bearer(&token(id))), NOW)
            .await
            .unwrap();
        assert_eq!(got.principal, EntityRef::new("User", "erin"), "{id}");
    }
    let got = auth
        .authenticate(Some(&bearer(&token("Jose\u{301}"))), NOW)
        .await
        .unwrap();
    assert_eq!(got.principal, EntityRef::new("User", "jos\u{e9}"));

    let mut cfg = server.issuer();
    cfg.principal_normalize = PrincipalNormalize::Nfc;
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    let got = auth
        .authenticate(Some(&bearer(&token("Jose\u{301}"))), NOW)
        .await
        .unwrap();
    assert_eq!(got.principal, EntityRef::new("User", "Jos\u{e9}"));

    let auth = Authenticator::new(vec![server.issuer()], None).unwrap();
    let got = auth
        .authenticate(Some(&bearer(&token("Erin"))), NOW)
        .await
        .unwrap();
    assert_eq!(
        got.principal,
        EntityRef::new("User", "Erin"),
        "exact by default"
    );
}

#[tokio::test]
async fn token_signed_by_another_key_with_the_same_kid_is_a_bad_signature() {
    let (_server, auth) = setup().await;
    let forged = sign(Algorithm::RS256, "a", &RSA_B.enc, &claims());
    assert!(matches!(
        auth_err(&auth, &forged, NOW).await,
        AuthError::BadSignature(_)
    ));
    // A valid token whose payload was swapped keeps its signature but no longer verifies.
    let genuine = sign(Algorithm::RS256, "a", &RSA_A.enc, &claims());
    let parts: Vec<&str> = genuine.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("mallory")).to_string());
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert!(matches!(
        auth_err(&auth, &tampered, NOW).await,
        AuthError::BadSignature(_)
    ));
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let (_server, auth) = setup().await;
    for alg in ["none", "None", "NONE"] {
        let header =
            URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": "a"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        let err = auth_err(&auth, &format!("{header}.{payload}."), NOW).await;
        assert!(
            matches!(err, AuthError::AlgorithmNotAllowed(_)),
            "{alg}: {err:?}"
        );
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let (_server, auth) = setup().await;
    // The classic key-confusion attack: HMAC "secret" = the issuer's public key PEM.
    let token = sign(
        Algorithm::HS256,
        "a",
        &EncodingKey::from_secret(RSA_A.public_pem.as_bytes()),
        &claims(),
    );
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::AlgorithmNotAllowed(_)
    ));
}

#[tokio::test]
async fn allowed_algorithm_that_does_not_fit_the_key_is_rejected() {
    let (_server, auth) = setup().await;
    // ES256 is allowed for the issuer, but kid "a" is an RSA key.
    let token = sign(Algorithm::ES256, "a", &EC.enc, &claims());
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::AlgorithmNotAllowed(_)
    ));
    // RS384 fits the key type but is not on the allow-list.
    let token = sign(Algorithm::RS384, "a", &RSA_A.enc, &claims());
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::AlgorithmNotAllowed(_)
    ));
}

#[tokio::test]
async fn external_token_cannot_claim_a_grant_binding() {
    let (_server, auth) = setup().await;
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "jitgate_grant", json!("g-1")),
    );
    assert_eq!(
        auth.authenticate(Some(&bearer(&token)), NOW)
            .await
            .unwrap()
            .grant_id,
        None
    );
}

#[tokio::test]
async fn symmetric_and_short_keys_in_the_jwks_are_never_used() {
    // An `oct` key with the kid a token names must not turn into an HMAC secret, and a truncated Ed25519 key
    // must be skipped, not crash the verifier.
    let server = JwksServer::start(jwks(&[
        json!({"kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode("secret")}),
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": URL_SAFE_NO_PAD.encode([1u8; 8])}),
    ]))
    .await;
    let mut cfg = server.issuer();
    cfg.algorithms = vec!["RS256".into(), "EdDSA".into()];
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    let token = sign(
        Algorithm::HS256,
        "h",
        &EncodingKey::from_secret(b"secret"),
        &claims(),
    );
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::AlgorithmNotAllowed(_)
    ));
    let local =
        LocalIssuer::load_or_generate(&tempfile::tempdir().unwrap().path().join("k.pem"), ISS, AUD)
            .unwrap();
    let ed = local
        .mint(&EntityRef::new("User", "alice"), &[], "g", NOW + 60, NOW)
        .unwrap();
    let (h, rest) = ed.split_once('.').unwrap();
    let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    header["kid"] = json!("short");
    let token = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()));
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::UnknownKey { .. }
    ));
}

// ---------------------------------------------------------------------------------------------------------------
// Key rotation, refresh rate limit, single flight

/// Issue #17 finding 2: a new `kid` right after a fetch is fetched at once (it used to wait out
/// `refresh_min_interval_secs`, 401s all along); a further unknown `kid` within the interval waits.
#[tokio::test]
async fn rotation_new_kid_refetches_at_once_then_rate_limits() {
    let (server, auth) = setup().await;
    auth.authenticate(
        Some(&bearer(&sign(Algorithm::RS256, "a", &RSA_A.enc, &claims()))),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(server.fetches(), 1);

    server.set(jwks(&[RSA_A.jwk("a"), RSA_B.jwk("b")]));
    // One second after the first fetch, the new kid is fetched at once: the first refetch is immediate.
    let rotated = sign(Algorithm::RS256, "b", &RSA_B.enc, &claims());
    let id = auth
        .authenticate(Some(&bearer(&rotated)), NOW + 1)
        .await
        .unwrap();
    assert_eq!(id.principal.id, "alice");
    assert_eq!(server.fetches(), 2, "exactly one refetch for the new kid");

    // Another unknown kid within the interval (30s) of that refetch waits; after it, it is fetched.
    server.set(jwks(&[RSA_A.jwk("a"), RSA_B.jwk("b"), RSA_B.jwk("c")]));
    let third = sign(Algorithm::RS256, "c", &RSA_B.enc, &claims());
    assert!(matches!(
        auth_err(&auth, &third, NOW + 2).await,
        AuthError::UnknownKey { .. }
    ));
    assert_eq!(server.fetches(), 2);
    auth.authenticate(Some(&bearer(&third)), NOW + 31)
        .await
        .unwrap();
    assert_eq!(server.fetches(), 3);

    // Both keys now verify without further fetches.
    let again = sign(
        Algorithm::RS256,
        "b",
        &RSA_B.enc,
        &with(claims(), "jti", json!("x")),
    );
    auth.authenticate(Some(&bearer(&again)), NOW + 32)
        .await
        .unwrap();
    auth.authenticate(
        Some(&bearer(&sign(
            Algorithm::RS256,
            "a",
            &RSA_A.enc,
            &with(claims(), "jti", json!("y")),
        ))),
        NOW + 32,
    )
    .await
    .unwrap();
    assert_eq!(server.fetches(), 3);
}

/// Issue #17 finding 2: the issuer rotates to a new key under the SAME kid; a token signed by the new key passes on
/// its first try (the failed signature refetches once), and a further bad signature within the interval fetches
/// nothing.
#[tokio::test]
async fn rotation_behind_the_same_kid_passes_on_the_first_try() {
    let (server, auth) = setup().await;
    auth.authenticate(
        Some(&bearer(&sign(Algorithm::RS256, "a", &RSA_A.enc, &claims()))),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(server.fetches(), 1);

    server.set(jwks(&[RSA_B.jwk("a"), EC.jwk("ec")]));
    let rotated = sign(
        Algorithm::RS256,
        "a",
        &RSA_B.enc,
        &with(claims(), "jti", json!("new")),
    );
    let id = auth
        .authenticate(Some(&bearer(&rotated)), NOW + 1)
        .await
        .unwrap();
    assert_eq!(id.principal.id, "alice");
    assert_eq!(server.fetches(), 2, "one refetch on the failed signature");

    // The old key is gone: its tokens fail, and within the interval without another fetch.
    let old = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "jti", json!("old")),
    );
    assert!(matches!(
        auth_err(&auth, &old, NOW + 2).await,
        AuthError::BadSignature(_)
    ));
    assert_eq!(server.fetches(), 2, "rate-limited within the interval");
}

#[tokio::test]
async fn unknown_kid_flood_refetches_at_most_once_per_interval() {
    let (server, auth) = setup().await;
    auth.authenticate(
        Some(&bearer(&sign(Algorithm::RS256, "a", &RSA_A.enc, &claims()))),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(server.fetches(), 1);

    // 200 tokens with unknown kids, all at once, at a time when a refresh is allowed (interval 30s).
    let t = NOW + 31;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let auth = auth.clone();
            let token = sign(
                Algorithm::RS256,
                &format!("unknown-{i}"),
                &RSA_A.enc,
                &claims(),
            );
            tokio::spawn(async move { auth.authenticate(Some(&bearer(&token)), t).await })
        })
        .collect();
    for task in tasks {
        assert!(matches!(
            task.await.unwrap(),
            Err(AuthError::UnknownKey { .. })
        ));
    }
    assert_eq!(server.fetches(), 2, "one refetch for the whole flood");

    // Still inside the interval: no fetch at all.
    let token = sign(Algorithm::RS256, "unknown-x", &RSA_A.enc, &claims());
    assert!(matches!(
        auth_err(&auth, &token, t + 29).await,
        AuthError::UnknownKey { .. }
    ));
    assert_eq!(server.fetches(), 2);
    // The interval has passed: one more.
    assert!(matches!(
        auth_err(&auth, &token, t + 30).await,
        AuthError::UnknownKey { .. }
    ));
    assert_eq!(server.fetches(), 3);
    // Known keys keep working throughout, without fetching.
    let known = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "jti", json!("k")),
    );
    auth.authenticate(Some(&bearer(&known)), t + 31)
        .await
        .unwrap();
    assert_eq!(server.fetches(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_share_one_fetch() {
    let (server, auth) = setup().await;
    auth.authenticate(
        Some(&bearer(&sign(Algorithm::RS256, "a", &RSA_A.enc, &claims()))),
        NOW,
    )
    .await
    .unwrap();
    server.set(jwks(&[RSA_A.jwk("a"), RSA_B.jwk("b")]));

    // Hold the JWKS response until every caller has started: they all need the new kid at the same time.
    let (mut started_rx, release) = server.hold_responses();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let n = 50;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let auth = auth.clone();
            let ready = ready_tx.clone();
            let token = sign(
                Algorithm::RS256,
                "b",
                &RSA_B.enc,
                &with(claims(), "jti", json!(i)),
            );
            tokio::spawn(async move {
                ready.send(()).unwrap();
                auth.authenticate(Some(&bearer(&token)), NOW + 60).await
            })
        })
        .collect();
    for _ in 0..n {
        ready_rx.recv().await.unwrap();
    }
    started_rx.recv().await.unwrap();
    release.notify_waiters();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().principal.id, "alice");
    }
    assert_eq!(
        server.fetches(),
        2,
        "one shared fetch for all concurrent callers"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The verified-token cache

/// Repeats are served from the cache without a fetch or a signature check, also once the key set is stale (a hit
/// never waits for the issuer). But a key the issuer has removed (compromised, rotated out) stops vouching for the
/// tokens it signed, whatever `exp` they carry, as soon as a refetch has seen it gone.
#[tokio::test]
async fn cache_serves_repeats_only_while_the_issuer_still_publishes_the_key() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    // A short JWKS max age: at NOW+31 the set is stale, and past the refresh interval (30s) it may be refetched.
    let limits = AuthLimits {
        jwks_max_age_secs: 1,
        ..AuthLimits::default()
    };
    let auth = Authenticator::with_limits(vec![server.issuer()], None, limits).unwrap();
    // A far-off exp, as a token minted with a stolen key could carry.
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "exp", json!(NOW + 365 * 86_400)),
    );
    let first = auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    assert_eq!(server.fetches(), 1);
    assert_eq!(auth.cached_tokens(), 1);
    // The issuer removes every key. Until jitgate refetches, the cache still serves, stale set or not.
    server.set(jwks(&[]));
    let second = auth
        .authenticate(Some(&bearer(&token)), NOW + 31)
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(server.fetches(), 1, "a cache hit fetches nothing");
    // Another token is verified in full: the stale set is refetched, and the key is gone.
    let other = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "jti", json!("other")),
    );
    assert!(matches!(
        auth_err(&auth, &other, NOW + 31).await,
        AuthError::UnknownKey { .. }
    ));
    assert_eq!(server.fetches(), 2);
    // From then on the cached token is refused too. Its kid is unknown in the set: that refetches once, at once
    // (the first forced refetch; this used to wait out the interval), and the key is still gone.
    assert!(matches!(
        auth_err(&auth, &token, NOW + 32).await,
        AuthError::UnknownKey { .. }
    ));
    assert_eq!(server.fetches(), 3);
    // A key that is published again keeps its tokens served after the next refetch, from the cache too.
    server.set(jwks(&[RSA_A.jwk("a")]));
    let again = auth
        .authenticate(Some(&bearer(&token)), NOW + 62)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(server.fetches(), 4);
    let cached = auth
        .authenticate(Some(&bearer(&token)), NOW + 62)
        .await
        .unwrap();
    assert_eq!(cached, first);
    assert_eq!(server.fetches(), 4, "served from the cache again");
}

/// Issue #17 finding 1: a cached token is served only while the issuer publishes the very key that verified it.
/// When the issuer replaces the key behind the same `kid`, the cached token stops passing (a 10-year token used to
/// pass until its `exp`).
#[tokio::test]
async fn cached_token_stops_passing_once_the_key_behind_its_kid_is_replaced() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let limits = AuthLimits {
        jwks_max_age_secs: 1,
        ..AuthLimits::default()
    };
    let auth = Authenticator::with_limits(vec![server.issuer()], None, limits).unwrap();
    let far = with(claims(), "exp", json!(NOW + 10 * 365 * 86_400));
    let old = sign(Algorithm::RS256, "a", &RSA_A.enc, &far);
    auth.authenticate(Some(&bearer(&old)), NOW).await.unwrap();
    assert_eq!(auth.cached_tokens(), 1);

    // The issuer replaces the key behind `a`; a token of the new key makes jitgate refetch (the set is stale).
    server.set(jwks(&[RSA_B.jwk("a")]));
    let new = sign(
        Algorithm::RS256,
        "a",
        &RSA_B.enc,
        &with(claims(), "jti", json!("new")),
    );
    auth.authenticate(Some(&bearer(&new)), NOW + 31)
        .await
        .unwrap();
    assert_eq!(server.fetches(), 2);
    // The cached token of the replaced key is no longer served: it is verified, and fails.
    assert!(matches!(
        auth_err(&auth, &old, NOW + 32).await,
        AuthError::BadSignature(_)
    ));
}

/// Issue #17 finding 1, keys without `kid`: the cache must not take "the issuer has an unnamed key" for "the issuer
/// still has this key".
#[tokio::test]
async fn cached_token_stops_passing_once_an_unnamed_key_is_replaced() {
    let unnamed = |key: &RsaKey| {
        let mut jwk = key.jwk("x");
        jwk.as_object_mut().unwrap().remove("kid");
        jwk
    };
    let sign_no_kid = |key: &EncodingKey, claims: &Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, key).unwrap()
    };
    let server = JwksServer::start(jwks(&[unnamed(&RSA_A)])).await;
    let limits = AuthLimits {
        jwks_max_age_secs: 1,
        ..AuthLimits::default()
    };
    let auth = Authenticator::with_limits(vec![server.issuer()], None, limits).unwrap();
    let old = sign_no_kid(
        &RSA_A.enc,
        &with(claims(), "exp", json!(NOW + 10 * 365 * 86_400)),
    );
    auth.authenticate(Some(&bearer(&old)), NOW).await.unwrap();

    server.set(jwks(&[unnamed(&RSA_B)]));
    let new = sign_no_kid(&RSA_B.enc, &with(claims(), "jti", json!("new")));
    auth.authenticate(Some(&bearer(&new)), NOW + 31)
        .await
        .unwrap();
    assert_eq!(server.fetches(), 2);
    assert!(matches!(
        auth_err(&auth, &old, NOW + 32).await,
        AuthError::BadSignature(_)
    ));
}

/// Issue #17 finding 1: an entry older than the issuer's `cache_max_age_secs` is not served; the token is verified
/// again (seen here as the refetch of the stale key set that only a full verification does).
#[tokio::test]
async fn cache_entry_older_than_cache_max_age_is_verified_again() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let limits = AuthLimits {
        jwks_max_age_secs: 1,
        ..AuthLimits::default()
    };
    let mut cfg = server.issuer();
    cfg.cache_max_age_secs = 60;
    let auth = Authenticator::with_limits(vec![cfg], None, limits).unwrap();
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "exp", json!(NOW + 86_400)),
    );
    auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    assert_eq!(server.fetches(), 1);
    // Within the max age: a hit, which never fetches (although the key set is stale by now).
    auth.authenticate(Some(&bearer(&token)), NOW + 59)
        .await
        .unwrap();
    assert_eq!(server.fetches(), 1, "a hit within cache_max_age_secs");
    // Past it: verified again, which refetches the stale set.
    auth.authenticate(Some(&bearer(&token)), NOW + 60)
        .await
        .unwrap();
    assert_eq!(
        server.fetches(),
        2,
        "verified again past cache_max_age_secs"
    );
}

/// Issue #17 finding 1: an issuer's `max_token_lifetime_secs` refuses a long-lived token (a 10-year token used to
/// pass), measured from `iat`, or from now without `iat`.
#[tokio::test]
async fn token_longer_than_max_token_lifetime_is_refused() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let mut cfg = server.issuer();
    cfg.max_token_lifetime_secs = Some(86_400);
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    let ten_years = with(claims(), "exp", json!(NOW + 10 * 365 * 86_400));
    let err = auth_err(
        &auth,
        &sign(Algorithm::RS256, "a", &RSA_A.enc, &ten_years),
        NOW,
    )
    .await;
    assert!(
        matches!(err, AuthError::LifetimeTooLong { max: 86_400, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.public_message(),
        "the token lifetime is longer than allowed"
    );
    assert!(err.to_string().contains("max_token_lifetime_secs"), "{err}");
    // Without `iat`, what is left of it counts.
    let mut no_iat = ten_years.clone();
    no_iat.as_object_mut().unwrap().remove("iat");
    assert!(matches!(
        auth_err(
            &auth,
            &sign(Algorithm::RS256, "a", &RSA_A.enc, &no_iat),
            NOW
        )
        .await,
        AuthError::LifetimeTooLong { .. }
    ));
    // Within the maximum: accepted (with and without `iat`).
    auth.authenticate(
        Some(&bearer(&sign(Algorithm::RS256, "a", &RSA_A.enc, &claims()))),
        NOW,
    )
    .await
    .unwrap();
    let mut short_no_iat = claims();
    short_no_iat.as_object_mut().unwrap().remove("iat");
    auth.authenticate(
        Some(&bearer(&sign(
            Algorithm::RS256,
            "a",
            &RSA_A.enc,
            &short_no_iat,
        ))),
        NOW,
    )
    .await
    .unwrap();
}

/// A cached token is served while the issuer's keys are being refetched (or the issuer is down): it never waits
/// for a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tokens_do_not_wait_for_a_jwks_refresh() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let limits = AuthLimits {
        jwks_max_age_secs: 1,
        ..AuthLimits::default()
    };
    let auth = Authenticator::with_limits(vec![server.issuer()], None, limits).unwrap();
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &claims());
    auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    assert_eq!(server.fetches(), 1);
    // Hold every JWKS response, and start a refetch with a token that needs one (the set is stale by then).
    let (mut started_rx, release) = server.hold_responses();
    let later = NOW + 31;
    let refetching = {
        let auth = auth.clone();
        let other = sign(
            Algorithm::RS256,
            "a",
            &RSA_A.enc,
            &with(claims(), "jti", json!("other")),
        );
        tokio::spawn(async move { auth.authenticate(Some(&bearer(&other)), later).await })
    };
    started_rx.recv().await.unwrap();
    let served = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        auth.authenticate(Some(&bearer(&token)), later),
    )
    .await
    .expect("a cached token waited for the JWKS refetch");
    assert_eq!(served.unwrap().principal.id, "alice");
    server.release_responses(&release);
    assert!(refetching.await.unwrap().is_ok());
}

#[tokio::test]
async fn cache_never_serves_a_token_past_its_exp() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let mut cfg = server.issuer();
    cfg.leeway_secs = 0;
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "exp", json!(NOW + 10)),
    );
    auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    auth.authenticate(Some(&bearer(&token)), NOW + 9)
        .await
        .unwrap();
    assert!(matches!(
        auth_err(&auth, &token, NOW + 10).await,
        AuthError::Expired { .. }
    ));
    assert!(matches!(
        auth_err(&auth, &token, NOW + 1000).await,
        AuthError::Expired { .. }
    ));
    // And a clock that goes back before nbf is not served from the cache either.
    let nbf = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "nbf", json!(NOW)),
    );
    auth.authenticate(Some(&bearer(&nbf)), NOW).await.unwrap();
    assert!(matches!(
        auth_err(&auth, &nbf, NOW - 5).await,
        AuthError::NotYetValid { .. }
    ));
}

#[tokio::test]
async fn cache_is_bounded() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let limits = AuthLimits {
        cache_capacity: 64,
        ..AuthLimits::default()
    };
    let auth = Authenticator::with_limits(vec![server.issuer()], None, limits).unwrap();
    for i in 0..300 {
        let token = sign(
            Algorithm::RS256,
            "a",
            &RSA_A.enc,
            &with(claims(), "jti", json!(i)),
        );
        auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    }
    let cached = auth.cached_tokens();
    assert!(
        cached > 0 && cached <= 64,
        "{cached} cached for a capacity of 64"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Fetch failures and discovery

#[tokio::test]
async fn jwks_server_down_is_jwks_unavailable() {
    // A port bound but never listening: connections are refused, and no other test can take it meanwhile.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = refusing.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/jwks");
    let auth = Authenticator::new(
        vec![IssuerConfig::new(ISS, url.clone(), AUD, &["RS256"])],
        None,
    )
    .unwrap();
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &claims());
    match auth_err(&auth, &token, NOW).await {
        AuthError::JwksUnavailable(reason) => assert!(reason.contains(&url), "{reason}"),
        other => panic!("expected JwksUnavailable, got {other:?}"),
    }
    // Rate-limited retries keep failing closed and still say why.
    match auth_err(&auth, &token, NOW + 1).await {
        AuthError::JwksUnavailable(reason) => assert!(reason.contains(&url), "{reason}"),
        other => panic!("expected JwksUnavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn jwks_error_status_and_garbage_are_jwks_unavailable() {
    let server = JwksServer::start(json!({"not": "a jwks"})).await;
    let auth = Authenticator::new(vec![server.issuer()], None).unwrap();
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &claims());
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::JwksUnavailable(_)
    ));
    let missing = IssuerConfig::new(ISS, format!("{}/nope", server.state.base), AUD, &["RS256"]);
    let auth = Authenticator::new(vec![missing], None).unwrap();
    match auth_err(&auth, &token, NOW).await {
        AuthError::JwksUnavailable(reason) => assert!(reason.contains("404"), "{reason}"),
        other => panic!("expected JwksUnavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_finds_the_jwks() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let issuer = server.state.base.clone();
    let mut cfg = IssuerConfig::new(issuer.clone(), "", AUD, &["RS256"]);
    cfg.jwks_url = None;
    cfg.discovery = true;
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "iss", json!(issuer)),
    );
    let id = auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    assert_eq!(id.issuer, issuer);
    assert_eq!(server.state.discovery_fetches.load(Ordering::SeqCst), 1);
    assert_eq!(server.fetches(), 1);
}

/// The discovery document is held to what a configured issuer is: it must name the issuer, and its `jwks_uri`
/// (the trust anchor) must be https or loopback http, as a configured `jwks_url` must. Nothing is fetched from a
/// URL that fails the rule.
#[tokio::test]
async fn a_discovered_jwks_uri_and_issuer_are_checked_like_configured_ones() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let issuer = server.state.base.clone();
    let port = issuer.rsplit(':').next().unwrap().to_string();
    for (doc, expected) in [
        (
            json!({"issuer": issuer, "jwks_uri": format!("http://127.0.0.2:{port}/jwks")}),
            "must use https",
        ),
        (
            json!({"jwks_uri": format!("{issuer}/jwks")}),
            "names no `issuer`",
        ),
    ] {
        *server.state.discovery.lock().unwrap() = Some(doc.clone());
        let mut cfg = IssuerConfig::new(issuer.clone(), "", AUD, &["RS256"]);
        cfg.jwks_url = None;
        cfg.discovery = true;
        let auth = Authenticator::new(vec![cfg], None).unwrap();
        let token = sign(
            Algorithm::RS256,
            "a",
            &RSA_A.enc,
            &with(claims(), "iss", json!(issuer)),
        );
        let err = auth_err(&auth, &token, NOW).await;
        assert!(
            matches!(&err, AuthError::JwksUnavailable(m) if m.contains(expected)),
            "{doc}: {err:?}"
        );
        assert_eq!(server.fetches(), 0, "{doc}: no key set is fetched");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Keys fetched at start-up and refreshed in the background (issue #17 finding 2)

/// Bounds every wait for a background fetch.
const BACKGROUND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for the next JWKS request to arrive at the server, and returns how long that took.
async fn next_fetch(started: &mut mpsc::UnboundedReceiver<()>) -> std::time::Duration {
    let t = Instant::now();
    tokio::time::timeout(BACKGROUND_WAIT, started.recv())
        .await
        .expect("a background fetch within 10s")
        .unwrap();
    t.elapsed()
}

/// Until the authenticator has keys for every issuer (the key refresh publishes them after a fetch it was seen
/// to make), or 10s.
async fn until_keys(auth: &Authenticator) {
    tokio::time::timeout(BACKGROUND_WAIT, async {
        while !auth.issuers_without_keys().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("keys within 10s");
}

#[tokio::test]
async fn keys_are_fetched_at_start_up_and_tokens_need_no_fetch_of_their_own() {
    let (server, auth) = setup().await;
    assert_eq!(auth.issuers_without_keys(), [ISS]);
    let _refresh = auth
        .start_key_refresh(jitgate_engine::Clock::frozen(NOW))
        .await;
    assert_eq!(server.fetches(), 1, "fetched once at start-up");
    assert!(auth.issuers_without_keys().is_empty());
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &claims());
    auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    assert_eq!(server.fetches(), 1, "the token used the start-up keys");
}

/// An issuer that is down at start-up: its tokens are refused (never let through without a key), it is listed as
/// without keys (so the proxy is not ready), and it is retried with a backoff until it answers.
#[tokio::test]
async fn an_issuer_down_at_start_up_is_retried_and_its_tokens_are_refused_meanwhile() {
    let (server, auth) = setup().await;
    server.state.failing.store(true, Ordering::SeqCst);
    let _refresh = auth
        .start_key_refresh(jitgate_engine::Clock::frozen(NOW))
        .await;
    assert_eq!(server.fetches(), 1);
    assert_eq!(auth.issuers_without_keys(), [ISS]);
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &claims());
    let err = auth_err(&auth, &token, NOW).await;
    assert!(
        matches!(&err, AuthError::JwksUnavailable(m) if m.contains("503")),
        "{err:?}"
    );
    assert_eq!(auth.issuers_without_keys(), [ISS]);

    // Retried after a backoff (1s first); the issuer is back by then: the keys arrive and the token passes.
    let (mut started, release) = server.hold_responses();
    let waited = next_fetch(&mut started).await;
    assert!(
        waited >= std::time::Duration::from_millis(500),
        "{waited:?}"
    );
    server.state.failing.store(false, Ordering::SeqCst);
    server.release_responses(&release);
    until_keys(&auth).await;
    assert_eq!(server.fetches(), 2);
    let id = auth
        .authenticate(Some(&bearer(&token)), NOW + 60)
        .await
        .unwrap();
    assert_eq!(id.principal.id, "alice");
}

/// The keys are refetched in the background when the issuer's `Cache-Control: max-age` runs out, never sooner
/// than `refresh_min_interval_secs` and never later than `refresh_max_interval_secs`; without a max-age, after
/// the maximum.
#[tokio::test]
async fn keys_are_refreshed_in_the_background_on_max_age_within_the_configured_bounds() {
    use std::time::Duration;
    for (cache_control, min, max, at_least) in [
        (
            Some("public, max-age=1"),
            1,
            3600,
            Duration::from_millis(900),
        ),
        // `no-cache` says 0: the minimum interval holds.
        (Some("no-cache"), 2, 3600, Duration::from_millis(1900)),
        // A day-long max-age: the maximum interval holds.
        (Some("max-age=86400"), 1, 2, Duration::from_millis(1900)),
        (None, 1, 1, Duration::from_millis(900)),
    ] {
        let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
        *server.state.cache_control.lock().unwrap() = cache_control.map(str::to_string);
        let mut cfg = server.issuer();
        cfg.refresh_min_interval_secs = min;
        cfg.refresh_max_interval_secs = max;
        let auth = Authenticator::new(vec![cfg], None).unwrap();
        let _refresh = auth
            .start_key_refresh(jitgate_engine::Clock::frozen(NOW))
            .await;
        let (mut started, release) = server.hold_responses();
        let waited = next_fetch(&mut started).await;
        server.release_responses(&release);
        assert!(
            waited >= at_least,
            "{cache_control:?} min {min} max {max}: refetched after {waited:?}, expected at least {at_least:?}"
        );
        assert_eq!(server.fetches(), 2, "{cache_control:?}");
    }
}

/// The key refresh stops with its handle: no fetch after it is dropped.
#[tokio::test]
async fn dropping_the_key_refresh_stops_it() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    *server.state.cache_control.lock().unwrap() = Some("max-age=1".into());
    let mut cfg = server.issuer();
    cfg.refresh_min_interval_secs = 1;
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    let refresh = auth
        .start_key_refresh(jitgate_engine::Clock::frozen(NOW))
        .await;
    drop(refresh);
    let (mut started, _release) = server.hold_responses();
    let later = tokio::time::timeout(std::time::Duration::from_millis(2500), started.recv()).await;
    assert!(later.is_err(), "a fetch after the refresh was dropped");
    assert_eq!(server.fetches(), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// `jitgate check --online`: one issuer probed as start-up would

#[tokio::test]
async fn probe_reports_the_discovered_keys_and_their_max_age() {
    use jitgate_proxy::authenticate::probe_issuer;
    let server = JwksServer::start(jwks(&[
        RSA_A.jwk("a"),
        EC.jwk("ec"),
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
    ]))
    .await;
    *server.state.cache_control.lock().unwrap() = Some("max-age=300, must-revalidate".into());
    let issuer = server.state.base.clone();
    let mut cfg = IssuerConfig::new(issuer.clone(), "", AUD, &["RS256"]);
    cfg.jwks_url = None;
    cfg.discovery = true;
    let timeout = std::time::Duration::from_secs(5);
    let p = probe_issuer(&cfg, timeout).await.unwrap();
    assert_eq!(p.issuer, issuer);
    assert_eq!(
        p.discovery_url.as_deref(),
        Some(format!("{issuer}/.well-known/openid-configuration").as_str())
    );
    assert_eq!(p.jwks_url, server.url());
    let kids: Vec<_> = p.keys.iter().map(|k| k.kid.as_deref()).collect();
    assert_eq!(kids, [Some("a"), Some("ec")]);
    assert_eq!(p.keys[0].kind, "RSA");
    assert_eq!(p.keys[0].usable_for, ["RS256"]);
    assert_eq!(p.keys[1].kind, "EC P-256");
    assert!(p.keys[1].usable_for.is_empty(), "ES256 is not allowed");
    assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
    assert!(p.skipped[0].contains("symmetric"), "{:?}", p.skipped);
    assert_eq!(p.max_age, Some(300));
    assert_eq!(p.refresh_in_secs, 300);

    // Only the EC key left, and ES256 not allowed: no token of this issuer could verify.
    server.set(jwks(&[EC.jwk("ec")]));
    let err = probe_issuer(&cfg, timeout).await.unwrap_err();
    assert!(
        err.contains("none of its 1 usable key(s) can verify the allowed algorithms"),
        "{err}"
    );
    // The issuer is down.
    server.state.failing.store(true, Ordering::SeqCst);
    let err = probe_issuer(&cfg, timeout).await.unwrap_err();
    assert!(err.contains("HTTP 503"), "{err}");
}

/// A configured issuer that differs from the advertised one only by a trailing slash is named as such: every
/// token would be refused, since `iss` is compared exactly.
#[tokio::test]
async fn probe_names_a_trailing_slash_mismatch_between_configured_and_advertised_issuer() {
    use jitgate_proxy::authenticate::probe_issuer;
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let base = server.state.base.clone();
    *server.state.discovery.lock().unwrap() =
        Some(json!({"issuer": format!("{base}/"), "jwks_uri": server.url()}));
    let mut cfg = IssuerConfig::new(base.clone(), "", AUD, &["RS256"]);
    cfg.jwks_url = None;
    cfg.discovery = true;
    let err = probe_issuer(&cfg, std::time::Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        err.contains(&format!("names issuer `{base}/`, configured `{base}`"))
            && err.contains("differ only by a trailing slash"),
        "{err}"
    );
    // The proxy refuses to use that document too, with the same words.
    let auth = Authenticator::new(vec![cfg], None).unwrap();
    let token = sign(
        Algorithm::RS256,
        "a",
        &RSA_A.enc,
        &with(claims(), "iss", json!(base)),
    );
    let err = auth_err(&auth, &token, NOW).await;
    assert!(
        matches!(&err, AuthError::JwksUnavailable(m) if m.contains("differ only by a trailing slash")),
        "{err:?}"
    );
    assert_eq!(server.fetches(), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// jitgate's own issuer

#[tokio::test]
async fn local_issuer_mints_tokens_that_authenticate_with_their_grant() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/local.pem");
    let local = LocalIssuer::load_or_generate(&path, "https://jitgate.local", "jitgate").unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );

    let (server, _) = setup().await;
    let auth = Authenticator::new(vec![server.issuer()], Some(local.clone())).unwrap();
    let principal = EntityRef::new("User", "bob \"the admin\"");
    let token = local
        .mint(&principal, &["sre".to_string()], "grant-42", NOW + 300, NOW)
        .unwrap();
    let id = auth
        .authenticate(Some(&bearer(&token)), NOW + 1)
        .await
        .unwrap();
    assert_eq!(id.principal, principal);
    assert_eq!(id.grant_id.as_deref(), Some("grant-42"));
    assert_eq!(id.groups, vec!["sre".to_string()]);
    assert_eq!(id.issuer, "https://jitgate.local");
    assert_eq!(id.expires_at, NOW + 300);
    assert!(id.claims["jti"].is_string());
    assert_eq!(server.fetches(), 0, "the local issuer needs no JWKS fetch");
    assert!(matches!(
        auth_err(&auth, &token, NOW + 400).await,
        AuthError::Expired { .. }
    ));

    // Reloading the persisted key gives the same key: the same kid, and its tokens verify with the first.
    let reloaded =
        LocalIssuer::load_or_generate(&path, "https://jitgate.local", "jitgate").unwrap();
    assert_eq!(reloaded.kid(), local.kid());
    let token = reloaded
        .mint(&principal, &[], "grant-43", NOW + 300, NOW)
        .unwrap();
    assert_eq!(
        auth.authenticate(Some(&bearer(&token)), NOW)
            .await
            .unwrap()
            .grant_id
            .as_deref(),
        Some("grant-43")
    );

    // A different key file is a different key: its tokens do not verify.
    let other = LocalIssuer::load_or_generate(
        &dir.path().join("other.pem"),
        "https://jitgate.local",
        "jitgate",
    )
    .unwrap();
    assert_ne!(other.kid(), local.kid());
    let token = other
        .mint(&principal, &[], "grant-44", NOW + 300, NOW)
        .unwrap();
    assert!(matches!(
        auth_err(&auth, &token, NOW).await,
        AuthError::UnknownKey { .. }
    ));

    // Its JWKS is a usable JWK set for other verifiers: serving it from the test server verifies local tokens.
    let published = JwksServer::start(local.jwks()).await;
    let cfg = IssuerConfig::new(
        "https://jitgate.local",
        published.url(),
        "jitgate",
        &["EdDSA"],
    );
    let external = Authenticator::new(vec![cfg], None).unwrap();
    let token = local
        .mint(&principal, &[], "grant-45", NOW + 300, NOW)
        .unwrap();
    let id = external
        .authenticate(Some(&bearer(&token)), NOW)
        .await
        .unwrap();
    assert_eq!(
        id.principal,
        EntityRef::new("User", "bob \"the admin\""),
        "sub carries the id"
    );
    assert_eq!(
        id.grant_id, None,
        "only jitgate itself honours the grant binding"
    );
}

#[tokio::test]
async fn local_issuer_rejects_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pem");
    std::fs::write(&path, "not a key").unwrap();
    assert!(matches!(
        LocalIssuer::load_or_generate(&path, "i", "a"),
        Err(AuthError::LocalKey(_))
    ));
    let local = LocalIssuer::load_or_generate(&dir.path().join("ok.pem"), "i", "a").unwrap();
    assert!(matches!(
        local.mint(&EntityRef::new("User", "x"), &[], "g", NOW, NOW),
        Err(AuthError::LocalKey(_))
    ));
    // The local issuer may not shadow a configured one.
    let cfg = IssuerConfig::new("i", "https://idp.example.com/jwks", "a", &["RS256"]);
    assert!(matches!(
        Authenticator::new(vec![cfg], Some(local)),
        Err(AuthError::Config(_))
    ));
}

#[test]
fn invalid_config_is_reported_with_key_paths() {
    let mut bad = IssuerConfig::new(ISS, "https://idp.test/jwks", AUD, &["RS256", "HS256"]);
    bad.audiences.clear();
    let err = Authenticator::new(
        vec![
            IssuerConfig::new("x", "https://x/jwks", "a", &["ES256"]),
            bad,
        ],
        None,
    )
    .unwrap_err();
    let AuthError::Config(msg) = err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains("issuers[1].algorithms: `HS256` is not allowed"),
        "{msg}"
    );
    assert!(
        msg.contains("issuers[1].audiences: must name at least one audience"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Cost of a cache hit vs a full verification (printed, not asserted: numbers come from `--nocapture` runs).

#[tokio::test]
async fn measure_cache_hit_vs_full_rs256_verification() {
    let (_server, auth) = setup().await;
    let n = 300;
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            bearer(&sign(
                Algorithm::RS256,
                "a",
                &RSA_A.enc,
                &with(claims(), "jti", json!(i)),
            ))
        })
        .collect();
    auth.authenticate(Some(&tokens[0]), NOW).await.unwrap(); // warm the JWKS
    let start = Instant::now();
    for t in &tokens[1..] {
        auth.authenticate(Some(t), NOW).await.unwrap();
    }
    let full = start.elapsed() / (n - 1);
    let hits = 20_000u32;
    let start = Instant::now();
    for _ in 0..hits {
        auth.authenticate(Some(&tokens[0]), NOW).await.unwrap();
    }
    let hit = start.elapsed() / hits;
    println!("full RS256 verification: {full:?} per token; cache hit: {hit:?} per token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_mid_fetch_does_not_rate_limit_the_issuer() {
    let server = JwksServer::start(jwks(&[RSA_A.jwk("a")])).await;
    let auth = Authenticator::new(vec![server.issuer()], None).unwrap();
    let token = sign(Algorithm::RS256, "a", &RSA_A.enc, &claims());
    // The first caller's fetch is held at the JWKS server; the caller goes away (its future is dropped).
    let (mut started_rx, release) = server.hold_responses();
    let first = {
        let (auth, token) = (auth.clone(), token.clone());
        tokio::spawn(async move { auth.authenticate(Some(&bearer(&token)), NOW).await })
    };
    started_rx.recv().await.unwrap();
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    server.release_responses(&release);
    // The next caller, in the same second, gets the keys instead of being told they were not fetched yet: the
    // fetch the first caller started ran to its end without it, so nothing is fetched twice.
    let id = auth.authenticate(Some(&bearer(&token)), NOW).await.unwrap();
    assert_eq!(id.principal.id, "alice");
    assert_eq!(server.fetches(), 1);
}

/// Unknown `kid`s sent and cancelled in a loop (reset HTTP/2 streams) must not multiply fetches: the fetch the
/// first of them started runs to its end on its own and counts against the refresh interval like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_hang_up_mid_fetch_cannot_multiply_fetches() {
    let (server, auth) = setup().await;
    auth.authenticate(
        Some(&bearer(&sign(Algorithm::RS256, "a", &RSA_A.enc, &claims()))),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(server.fetches(), 1);
    let (mut started_rx, release) = server.hold_responses();
    // Past the refresh interval, so the first unknown kid may refetch once.
    let t = NOW + 31;
    let callers: Vec<_> = (0..20)
        .map(|i| {
            let auth = auth.clone();
            let token = sign(
                Algorithm::RS256,
                &format!("unknown-{i}"),
                &RSA_A.enc,
                &claims(),
            );
            tokio::spawn(async move { auth.authenticate(Some(&bearer(&token)), t).await })
        })
        .collect();
    started_rx.recv().await.unwrap();
    for caller in &callers {
        caller.abort();
    }
    for caller in callers {
        let _ = caller.await;
    }
    server.release_responses(&release);
    // One more unknown kid in the same second: it waits for the running fetch, then is refused without another.
    let token = sign(Algorithm::RS256, "unknown-last", &RSA_A.enc, &claims());
    let err = auth_err(&auth, &token, t).await;
    assert!(matches!(err, AuthError::UnknownKey { .. }), "{err:?}");
    assert_eq!(server.fetches(), 2, "one fetch for every cancelled caller");
}
