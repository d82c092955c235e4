//! Shared helpers for the proxy's end-to-end tests: real RSA keys and a real JWKS server, a real demo upstream,
//! an upstream that holds its answer until the test releases it, a proxy started on 127.0.0.1:0 with the shipped
//! quickstart bundle, SQLite files in a tempdir, raw HTTP/1.1 requests (paths sent byte for byte) and a test PKI.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jitgate_engine::log::{DecisionRecord, Filter};
use jitgate_engine::{Clock, EntityRef, Grant, GrantStatus};
use jitgate_proxy::authenticate::IssuerConfig;
use jitgate_proxy::config::{Config, RawBundle, RawConfig, RawCredential, RawUpstream};
use jitgate_proxy::demo::DemoUpstream;
use jitgate_proxy::run::Running;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// The issuer and audience of test tokens.
pub const ISS: &str = "https://idp.test";
/// The audience the proxy accepts.
pub const AUD: &str = "jitgate-api";
/// The secret jitgate injects towards the payments upstream.
pub const UPSTREAM_SECRET: &str = "upstream-secret-123";
/// Upper bound for every network wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Bounds a future with [`WAIT`]; a hang is a failure, not a stuck CI job.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The quickstart bundle shipped in the repository.
pub fn quickstart_bundle() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/quickstart-cedar"
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// Keys and tokens

/// An RSA signing key and its public parts.
pub struct RsaKey {
    /// For signing tokens.
    pub enc: EncodingKey,
    n: String,
    e: String,
    /// The public key as SPKI PEM (for the HMAC key-confusion attack).
    pub public_pem: String,
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
    /// The key as a JWK with `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": self.n, "e": self.e})
    }
}

/// RSA key generation is slow: every test in a binary shares these.
pub static RSA_A: LazyLock<RsaKey> = LazyLock::new(rsa_key);
/// A second key (rotation, bad signatures).
pub static RSA_B: LazyLock<RsaKey> = LazyLock::new(rsa_key);

/// Signs `claims` with `alg`, `kid` and `key`.
pub fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Valid claims for `sub` with `groups` at `now`.
pub fn claims(sub: &str, groups: &[&str], now: i64) -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": sub, "groups": groups,
        "iat": now, "exp": now + 600, "jti": uuid::Uuid::new_v4().to_string(),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// A real JWKS server

struct JwksState {
    jwks: Mutex<Value>,
    fetches: AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
}

/// A JWKS endpoint on 127.0.0.1 whose key set the test can swap, counting fetches.
pub struct JwksServer {
    state: Arc<JwksState>,
    /// `http://127.0.0.1:<port>/jwks`.
    pub url: String,
}

impl JwksServer {
    /// Starts serving `{"keys": keys}`.
    pub async fn start(keys: Vec<Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let state = Arc::new(JwksState {
            jwks: Mutex::new(json!({ "keys": keys })),
            fetches: AtomicUsize::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        let app = axum::Router::new()
            .route("/jwks", get(serve_jwks))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { state, url }
    }

    /// Replaces the published keys.
    pub fn set(&self, keys: Vec<Value>) {
        *self.state.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    /// How many times the key set was fetched.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// While `failing`, the endpoint answers 503 (an identity provider that is down).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }
}

async fn serve_jwks(State(state): State<Arc<JwksState>>) -> Result<Json<Value>, StatusCode> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(Json(state.jwks.lock().unwrap().clone()))
}

// ---------------------------------------------------------------------------------------------------------------
// An upstream that answers only when released

/// An upstream that announces each request's path on `arrived` and answers 200 only after `release`.
pub struct GatedUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Paths of requests that reached it (sent before it waits).
    pub arrived: mpsc::UnboundedReceiver<String>,
    /// One `notify_one` releases one waiting (or the next) request.
    pub release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl GatedUpstream {
    /// Starts on 127.0.0.1.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, arrived) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let rel = release.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                let rel = rel.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let tx = tx.clone();
                        let rel = rel.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let _ = tx.send(path.clone());
                            rel.notified().await;
                            let body = json!({"upstream": "gated", "path": path}).to_string();
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            arrived,
            release,
            task,
        }
    }
}

impl Drop for GatedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address on 127.0.0.1 that refuses connections for as long as the returned socket lives: bound, never
/// listening, so no other test can take the port meanwhile.
pub fn dead_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

// ---------------------------------------------------------------------------------------------------------------
// The proxy under test

/// A running proxy with everything it talks to.
pub struct Harness {
    /// State files (store, decision log, upstream secret, TLS material).
    pub dir: tempfile::TempDir,
    /// The JWKS server of the issuer.
    pub jwks: JwksServer,
    /// The demo upstream behind both services (unless the test rewired them).
    pub upstream: DemoUpstream,
    /// The proxy; `None` once a test took it to shut it down.
    pub running: Option<Running>,
    /// The proxy's frozen clock (tokens are minted against it).
    pub clock: Clock,
    /// The proxy's data-plane address.
    pub addr: SocketAddr,
    /// The decision log file.
    pub log_path: PathBuf,
}

/// The default test configuration: quickstart bundle, no admin listener, files in `dir`, one RS256 issuer at
/// `jwks_url` (refresh interval 1s), both services on `upstream`, and an injected credential for payments.
pub fn base_config(dir: &Path, jwks_url: &str, upstream: SocketAddr) -> RawConfig {
    let mut raw = RawConfig {
        bundle: RawBundle {
            path: quickstart_bundle(),
            watch: false,
            shadow: None,
        },
        ..RawConfig::default()
    };
    raw.server.listen = "127.0.0.1:0".into();
    raw.server.shutdown_grace = "10s".into();
    raw.admin.listen = String::new();
    raw.store.path = dir.join("jitgate.db");
    raw.log.path = dir.join("decisions.db");
    let mut issuer = IssuerConfig::new(ISS, jwks_url, AUD, &["RS256"]);
    issuer.refresh_min_interval_secs = 1;
    raw.issuers = vec![issuer];
    let secret = dir.join("upstream-secret");
    std::fs::write(&secret, format!("{UPSTREAM_SECRET}\n")).unwrap();
    let up = |credential| RawUpstream {
        url: format!("http://{upstream}"),
        connect_timeout: "2s".into(),
        timeout: "10s".into(),
        credential,
    };
    raw.upstreams.insert(
        "payments".into(),
        up(Some(RawCredential {
            header: "authorization".into(),
            value_env: None,
            value_file: Some(secret),
            prefix: "Bearer ".into(),
        })),
    );
    raw.upstreams.insert("billing".into(), up(None));
    raw
}

impl Harness {
    /// Starts a proxy with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_, _| {}).await
    }

    /// Starts a proxy after `tweak` adjusted the default configuration (it gets the state directory too).
    pub async fn start_with(tweak: impl FnOnce(&mut RawConfig, &Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let jwks = JwksServer::start(vec![RSA_A.jwk("a")]).await;
        let upstream = DemoUpstream::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let mut raw = base_config(dir.path(), &jwks.url, upstream.addr);
        tweak(&mut raw, dir.path());
        let config = Config::validate(raw, Path::new("<test>"), dir.path()).unwrap();
        let log_path = config.log_path.clone();
        let clock = Clock::frozen(jitgate_engine::clock::now_system());
        let running = jitgate_proxy::run::start(config, clock.clone())
            .await
            .unwrap();
        Self {
            addr: running.addr,
            dir,
            jwks,
            upstream,
            running: Some(running),
            clock,
            log_path,
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A valid RS256 token (kid `a`) for `sub` in `groups`, at the proxy's clock.
    pub fn token(&self, sub: &str, groups: &[&str]) -> String {
        sign(
            Algorithm::RS256,
            "a",
            &RSA_A.enc,
            &claims(sub, groups, self.clock.now()),
        )
    }

    /// Gives `principal` (a user) an active grant of `role` on `scope` for ten minutes, through the authorizer.
    pub fn grant(&self, id: &str, user: &str, role: &str, scope: EntityRef) {
        let now = self.clock.now();
        let grant = Grant {
            id: id.into(),
            principal: EntityRef::new("User", user),
            role: role.into(),
            scope,
            starts_at: now,
            expires_at: now + 600,
            max_uses: None,
            uses: 0,
            status: GrantStatus::Active,
            approvers: vec!["test".into()],
            reason: "integration test".into(),
            break_glass: false,
            request_digest: None,
            request_id: None,
        };
        let running = self.running.as_ref().unwrap();
        running.proxy.authorizer.put_grant(grant).unwrap();
    }

    /// Every decision record so far, oldest first.
    pub fn records(&self) -> Vec<DecisionRecord> {
        jitgate_engine::log::query(&self.log_path, &Filter::default(), None, 10_000)
            .unwrap()
            .records
    }

    /// The one record of a request, by its decision id.
    pub fn record(&self, decision_id: &str) -> DecisionRecord {
        let filter = Filter {
            request_id: Some(decision_id.to_string()),
            ..Filter::default()
        };
        let page = jitgate_engine::log::query(&self.log_path, &filter, None, 10).unwrap();
        assert_eq!(
            page.records.len(),
            1,
            "exactly one record for decision {decision_id}"
        );
        page.records.into_iter().next().unwrap()
    }

    /// The admin listener's `/metrics` page (the harness must have been started with an admin address).
    pub async fn metrics_page(&self) -> String {
        let admin = self.running.as_ref().unwrap().admin_addr.unwrap();
        client()
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Asserts the log holds exactly `n` records and its hash chain verifies.
    pub fn assert_log(&self, n: usize) {
        let records = self.records();
        assert_eq!(
            records.len(),
            n,
            "records: {:#?}",
            records
                .iter()
                .map(|r| (r.method.clone(), r.path.clone(), r.status))
                .collect::<Vec<_>>()
        );
        let report = jitgate_engine::log::verify_store(&self.log_path).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, n as u64);
    }
}

/// An HTTP/1.1 client that talks to 127.0.0.1 directly.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Reply {
    /// The decision id the proxy put on a refusal.
    pub fn decision_id(&self) -> String {
        let id = self.json["decision_id"].as_str().unwrap().to_string();
        assert_eq!(
            self.headers.get("x-jitgate-decision-id").unwrap(),
            id.as_str()
        );
        id
    }

    /// The decision id the upstream saw (allowed requests).
    pub fn upstream_decision_id(&self) -> String {
        self.json["headers"]["x-jitgate-decision-id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Reads a reqwest response to the end.
pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = within("response body", resp.bytes()).await.unwrap();
    Reply {
        status,
        headers,
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

/// A boxed request body.
pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A complete body.
pub fn full_body(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A body of `chunks` sent with `Transfer-Encoding: chunked` (no declared length).
pub fn chunked_body(chunks: Vec<Bytes>) -> TestBody {
    let stream =
        futures_util::stream::iter(chunks.into_iter().map(|c| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(c))
        }));
    http_body_util::StreamBody::new(stream).boxed()
}

/// Sends one HTTP/1.1 request on a fresh connection with the request target exactly as given (no client-side
/// URL normalization, unlike reqwest), and reads the response to the end.
pub async fn raw(addr: SocketAddr, req: Request<TestBody>) -> Reply {
    within("raw request", async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        }
    })
    .await
}

/// A GET with the raw `target` and an optional bearer token.
pub fn raw_get(target: &str, token: Option<&str>) -> Request<TestBody> {
    let mut b = Request::get(target).header("host", "127.0.0.1");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(full_body(Bytes::new())).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// A test PKI

/// A CA and certificates it signed, as PEM.
pub struct Pki {
    /// The CA certificate.
    pub ca_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl Leaf {
    /// Key and certificate in one PEM (what reqwest's `Identity::from_pem` wants).
    pub fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.key_pem, self.cert_pem).as_bytes())
            .unwrap()
    }
}

impl Pki {
    /// A fresh self-signed CA.
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(&self, sans: Vec<rcgen::SanType>, usage: rcgen::ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.leaf(
            vec![
                rcgen::SanType::DnsName("localhost".try_into().unwrap()),
                rcgen::SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with one URI subject-alternative name.
    pub fn client_uri(&self, uri: &str) -> Leaf {
        self.leaf(
            vec![rcgen::SanType::URI(uri.try_into().unwrap())],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// A client certificate with one DNS subject-alternative name.
    pub fn client_dns(&self, dns: &str) -> Leaf {
        self.leaf(
            vec![rcgen::SanType::DnsName(dns.try_into().unwrap())],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// A client certificate with these subject-alternative names and, if given, this subject common name (else
    /// none at all).
    pub fn client_named(&self, sans: Vec<rcgen::SanType>, cn: Option<&str>) -> Leaf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The CA certificate for a reqwest client's roots.
    pub fn root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()
    }
}

/// The value of the sample `series` (name with labels, as rendered) in a Prometheus text page.
pub fn metric_sample(page: &str, series: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
