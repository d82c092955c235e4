//! Issuer keys: parsing a JWK set into verification keys, fetching it (directly or via OIDC discovery), and the
//! per-issuer cache with rate-limited, single-flight refresh. Never builds an HMAC key from anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::AuthError;

/// The most bytes read from a JWKS or discovery response.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// The kind of a public key, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// The key type as a JWK names it (`RSA`, `EC P-256`, `EC P-384`, `OKP Ed25519`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::P256 => "EC P-256",
            KeyKind::P384 => "EC P-384",
            KeyKind::Ed25519 => "OKP Ed25519",
        }
    }

    /// Whether a key of this kind may verify `alg`: RSA only RS*/PS*, each curve only its own ECDSA, Ed25519 only EdDSA.
    pub(crate) fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One verification key.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) kind: KeyKind,
    /// The `alg` the JWK pins itself to, if any.
    pub(crate) alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
    /// SHA-256 of the key's kind and public-key bytes: what a cache entry remembers of the key that verified it,
    /// so a key replaced behind the same `kid` (or published without one) is told apart.
    pub(crate) fingerprint: Fingerprint,
}

/// A key's identity, independent of its `kid` (see [`fingerprint`]).
pub(crate) type Fingerprint = [u8; 32];

/// Hashes a public key: a kind tag, then each component length-prefixed (RSA `n` and `e` without leading zero
/// bytes, so two encodings of one key hash alike).
pub(crate) fn fingerprint(kind: KeyKind, parts: &[&[u8]]) -> Fingerprint {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update([kind as u8]);
    for part in parts {
        let start = if kind == KeyKind::Rsa {
            part.iter().take_while(|b| **b == 0).count()
        } else {
            0
        };
        let part = part.get(start..).unwrap_or_default();
        h.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// An immutable key set, replaced whole on refresh.
pub(crate) struct KeySet {
    pub(crate) by_kid: HashMap<String, Arc<VerifyKey>>,
    /// Keys published without a `kid`: usable only by tokens without one.
    pub(crate) unnamed: Vec<Arc<VerifyKey>>,
    /// When it was fetched (request time, unix seconds).
    pub(crate) fetched_at: i64,
    /// Bumped on every successful fetch, so waiters can tell that someone else refreshed.
    pub(crate) generation: u64,
    /// The `Cache-Control: max-age` the issuer sent with the set, in seconds (`no-cache`/`no-store`: 0).
    pub(crate) max_age: Option<u64>,
    /// Keys of the document that were skipped, each with why (reported by `jitgate check --online`).
    pub(crate) skipped: Vec<String>,
}

impl KeySet {
    /// The key for `kid`, or for a token without `kid` the only unnamed key that fits `alg`.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => {
                let mut fitting = self
                    .unnamed
                    .iter()
                    .chain(self.by_kid.values())
                    .filter(|k| k.kind.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }
    }

    /// Whether the set still holds the key with this fingerprint, under any `kid` or none.
    pub(crate) fn holds(&self, fp: &Fingerprint) -> bool {
        self.by_kid
            .values()
            .chain(self.unnamed.iter())
            .any(|k| &k.fingerprint == fp)
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn b64(s: &str, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("`{name}`: bad base64url: {e}"))
}

fn parse_jwk(raw: RawJwk) -> Result<(Option<String>, VerifyKey), String> {
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err("not a signature key (`use` is not `sig`)".to_string());
    }
    let alg = match raw.alg.as_deref() {
        None => None,
        Some(a) => Some(super::config::parse_algorithm(a)?),
    };
    let field = |v: Option<String>, name: &str| v.ok_or_else(|| format!("`{name}` is missing"));
    let (kind, key, fingerprint) = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => {
            let n = field(raw.n, "n")?;
            let e = field(raw.e, "e")?;
            let n_bytes = b64(&n, "n")?;
            let e_bytes = b64(&e, "e")?;
            let bits = n_bytes.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA modulus of {bits} bits is below the minimum {MIN_RSA_BITS}"
                ));
            }
            let key = DecodingKey::from_rsa_components(&n, &e).map_err(|e| e.to_string())?;
            let fp = fingerprint(KeyKind::Rsa, &[&n_bytes, &e_bytes]);
            (KeyKind::Rsa, key, fp)
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (kind, len) = if crv == "P-256" {
                (KeyKind::P256, 32)
            } else {
                (KeyKind::P384, 48)
            };
            let x = field(raw.x, "x")?;
            let y = field(raw.y, "y")?;
            let (xb, yb) = (b64(&x, "x")?, b64(&y, "y")?);
            if xb.len() != len || yb.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes"));
            }
            (
                kind,
                DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?,
                fingerprint(kind, &[&xb, &yb]),
            )
        }
        ("OKP", Some("Ed25519")) => {
            let x = field(raw.x, "x")?;
            // The verifier slices the first 32 bytes without checking: a short key must never reach it.
            let xb = b64(&x, "x")?;
            if xb.len() != 32 {
                return Err("Ed25519 `x` must be 32 bytes".to_string());
            }
            (
                KeyKind::Ed25519,
                DecodingKey::from_ed_components(&x).map_err(|e| e.to_string())?,
                fingerprint(KeyKind::Ed25519, &[&xb]),
            )
        }
        ("oct", _) => return Err("symmetric keys are never trusted".to_string()),
        (kty, crv) => return Err(format!("unsupported key type `{kty}` (crv {crv:?})")),
    };
    if let Some(alg) = alg {
        if !kind.fits(alg) {
            return Err(format!("`alg` {alg:?} does not fit a {kind:?} key"));
        }
    }
    Ok((
        raw.kid,
        VerifyKey {
            kind,
            alg,
            key,
            fingerprint,
        },
    ))
}

/// Parses a JWK set. Keys that are unusable (symmetric, unknown type, too small) are skipped and logged, so one
/// odd key does not take down the issuer; a document that is not a JWK set is an error.
pub(crate) fn parse_jwks(
    body: &[u8],
    issuer: &str,
    fetched_at: i64,
    generation: u64,
) -> Result<KeySet, String> {
    let raw: RawJwks = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut set = KeySet {
        by_kid: HashMap::new(),
        unnamed: Vec::new(),
        fetched_at,
        generation,
        max_age: None,
        skipped: Vec::new(),
    };
    for (i, value) in raw.keys.into_iter().enumerate() {
        let parsed = serde_json::from_value::<RawJwk>(value)
            .map_err(|e| e.to_string())
            .and_then(parse_jwk);
        match parsed {
            Ok((Some(kid), key)) => {
                set.by_kid.insert(kid, Arc::new(key));
            }
            Ok((None, key)) => set.unnamed.push(Arc::new(key)),
            Err(reason) => {
                tracing::debug!(issuer, index = i, %reason, "skipping JWK");
                set.skipped.push(format!("keys[{i}]: {reason}"));
            }
        }
    }
    Ok(set)
}

/// Where an issuer's keys come from.
pub(crate) enum KeySource {
    /// Fetched from this URL.
    Url(String),
    /// Found through `<issuer>/.well-known/openid-configuration`.
    Discovery,
    /// Fixed at start-up (jitgate's own key).
    Static,
}

/// Fetch bookkeeping, guarded by one async mutex per issuer: holding it is what makes a refresh single-flight.
#[derive(Default)]
pub(crate) struct FetchState {
    /// Request time of the last fetch attempt, for the rate limit.
    pub(crate) last_attempt: Option<i64>,
    /// Why the last attempt failed, reported while further attempts are rate-limited.
    pub(crate) last_error: Option<String>,
    /// The JWKS URL found by discovery, kept until a fetch from it fails.
    pub(crate) discovered: Option<String>,
    pub(crate) generation: u64,
    /// Request time of the last refetch forced by an unknown `kid` or a failed signature. Such a refetch is
    /// immediate when none happened within the issuer's `refresh_min_interval_secs`, so a rotation is seen at once.
    pub(crate) last_forced: Option<i64>,
    /// The start of the rate-limit window already warned about: one warning per window, not one per request.
    pub(crate) warned_window: Option<i64>,
}

/// Reads a response body up to [`MAX_DOCUMENT_BYTES`], with the `max-age` of its `Cache-Control` header.
async fn get_limited(http: &reqwest::Client, url: &str) -> Result<(Vec<u8>, Option<u64>), String> {
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    let max_age = resp
        .headers()
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(cache_max_age);
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "GET {url}: response larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

/// The freshness lifetime a `Cache-Control` value gives, in seconds: its `max-age`, or 0 for `no-cache` and
/// `no-store`; `None` when it says neither (or says it unreadably).
pub(crate) fn cache_max_age(value: &str) -> Option<u64> {
    let mut found = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(0);
        }
        if name.eq_ignore_ascii_case("max-age") {
            found = arg.and_then(|a| a.parse::<u64>().ok());
        }
    }
    found
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[derive(Deserialize)]
struct Discovery {
    issuer: Option<String>,
    jwks_uri: String,
}

/// The URL of the issuer's OpenID configuration.
pub(crate) fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Why an OpenID configuration's `issuer` is not the configured one, naming a mere trailing-slash difference as
/// such (a common mistake: `iss` is compared exactly, so every token would be refused).
pub(crate) fn issuer_mismatch(url: &str, named: Option<&str>, issuer: &str) -> Option<String> {
    match named {
        Some(named) if named == issuer => None,
        Some(named) if named.trim_end_matches('/') == issuer.trim_end_matches('/') => {
            Some(format!(
                "{url}: names issuer `{named}`, configured `{issuer}`: they differ only by a trailing slash; tokens \
             carry the advertised value in `iss`, which is compared exactly, so set `issuer = \"{named}\"`"
            ))
        }
        Some(named) => Some(format!(
            "{url}: names issuer `{named}`, expected `{issuer}`"
        )),
        None => Some(format!("{url}: names no `issuer`, expected `{issuer}`")),
    }
}

/// Finds the JWKS URL in the issuer's OpenID configuration; the document must name the same issuer.
pub(crate) async fn discover(http: &reqwest::Client, issuer: &str) -> Result<String, String> {
    let url = discovery_url(issuer);
    let (body, _) = get_limited(http, &url).await?;
    let doc: Discovery = serde_json::from_slice(&body)
        .map_err(|e| format!("{url}: not an OpenID configuration: {e}"))?;
    // OpenID Connect Discovery 1.0, section 4.3: the document must name the issuer it was fetched for.
    if let Some(why) = issuer_mismatch(&url, doc.issuer.as_deref(), issuer) {
        return Err(why);
    }
    // The keys are the trust anchor: a discovered URL is held to the rule a configured `jwks_url` is.
    super::config::check_fetch_url(&doc.jwks_uri).map_err(|e| format!("{url}: jwks_uri {e}"))?;
    Ok(doc.jwks_uri)
}

/// Fetches the issuer's key set (discovering its URL first if needed).
pub(crate) async fn fetch(
    http: &reqwest::Client,
    issuer: &str,
    source: &KeySource,
    state: &mut FetchState,
    now: i64,
) -> Result<KeySet, String> {
    let url = match source {
        KeySource::Url(url) => url.clone(),
        KeySource::Discovery => match &state.discovered {
            Some(url) => url.clone(),
            None => {
                let url = discover(http, issuer).await?;
                state.discovered = Some(url.clone());
                url
            }
        },
        KeySource::Static => return Err("static key set cannot be refreshed".to_string()),
    };
    let result = fetch_set(http, issuer, &url, now, state.generation + 1).await;
    if result.is_err() {
        // The issuer may have moved its keys: discover again next time.
        state.discovered = None;
    }
    result
}

/// Fetches and parses the key set at `url`, keeping the response's `max-age`.
pub(crate) async fn fetch_set(
    http: &reqwest::Client,
    issuer: &str,
    url: &str,
    now: i64,
    generation: u64,
) -> Result<KeySet, String> {
    let (body, max_age) = get_limited(http, url).await?;
    let mut set = parse_jwks(&body, issuer, now, generation).map_err(|e| format!("{url}: {e}"))?;
    set.max_age = max_age;
    Ok(set)
}

/// Builds the HTTP client used for every key fetch. Redirects are not followed: one could downgrade https to http.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, AuthError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AuthError::Config(format!("HTTP client for JWKS: {e}")))
}
