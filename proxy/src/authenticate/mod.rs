//! Stage 3, authenticate: turns an `Authorization: Bearer` JWT into an [`Identity`], or an [`AuthError`] (a deny).
//! It trusts only configured issuers (and jitgate's own [`LocalIssuer`]); mapping identities to policy input is not its job.
//!
//! Order of checks: bearer syntax, header, unverified `iss` (only to pick the issuer), the issuer's algorithm
//! allow-list, the key by `kid` (refreshing the JWKS once, rate-limited and single-flight, on an unknown `kid`), the
//! key type against `alg`, the signature, then `exp`/`nbf`/`aud` with the issuer's leeway and the principal claim.
//! Verified tokens are cached by SHA-256 until their `exp`.

mod cache;
pub mod config;
mod error;
mod jwks;
mod local;
mod principal;
pub mod request;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jitgate_engine::EntityRef;
use jsonwebtoken::Algorithm;
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use config::{ConfigProblem, IssuerConfig, PrincipalNormalize, validate_issuers};
pub use error::AuthError;
pub use local::{GRANT_CLAIM, LocalIssuer, PRINCIPAL_CLAIM};

use cache::{Entry, TokenCache, token_key};
use jwks::{FetchState, Fingerprint, KeySet, KeySource, VerifyKey};

/// Whether a principal id from a client certificate (its `what` name: `uri`, `dns`, `email`, `cn`) is visible
/// text, as token principal ids must be; says why not.
pub fn visible_principal_id(what: &str, id: &str) -> Result<(), String> {
    principal::visible(what, id)
}

/// The longest bearer token accepted, in bytes: bounds the hashing and decoding done for unauthenticated input.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Who the caller is, as proved by a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The principal entity, e.g. `User::"alice"`.
    pub principal: EntityRef,
    /// The caller's groups from the issuer's groups claim (empty when absent).
    pub groups: Vec<String>,
    /// The entity type of those groups, when the issuer sets one (`groups_type`; `None` is `Group`).
    pub group_type: Option<String>,
    /// Principal attributes from the issuer's `principal_attrs` mapping (empty when none is configured).
    pub attrs: Map<String, Value>,
    /// Every claim of the token, for the policy context.
    pub claims: Map<String, Value>,
    /// The issuer that vouched for it (the token's `iss`).
    pub issuer: String,
    /// The token's `exp` (unix seconds).
    pub expires_at: i64,
    /// The grant a jitgate-issued token is bound to; always `None` for external issuers.
    pub grant_id: Option<String>,
}

/// Operational limits of an [`Authenticator`]; the defaults suit production.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Timeout of one discovery or JWKS request (connect included).
    pub jwks_fetch_timeout: Duration,
    /// How many verified tokens the cache holds (0 disables it).
    pub cache_capacity: usize,
    /// After this many seconds a cached JWKS is refetched (rate-limited) so removed keys stop verifying.
    pub jwks_max_age_secs: u64,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            jwks_fetch_timeout: Duration::from_secs(5),
            cache_capacity: 100_000,
            jwks_max_age_secs: 3600,
        }
    }
}

/// How an issuer's claims name the principal.
enum PrincipalMapping {
    /// `<ty>::"<claims[claim]>"`.
    Claim {
        claim: String,
        ty: String,
        normalize: PrincipalNormalize,
    },
    /// The `principal` claim holds the full entity reference (jitgate's own tokens).
    EntityRefClaim,
}

/// One trusted issuer with its key cache.
struct Issuer {
    name: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    mapping: PrincipalMapping,
    groups_claim: String,
    /// The entity type of the groups, if not `Group`.
    groups_type: Option<String>,
    /// Attribute name -> claim name or JSON pointer (`principal_attrs`); empty for most issuers, then free.
    principal_attrs: Vec<(String, String)>,
    leeway: u64,
    refresh_min_interval: i64,
    /// The longest wait between two background refreshes (see [`Authenticator::start_key_refresh`]).
    refresh_max_interval: u64,
    /// How long a verified token may be served from the cache before it is verified again.
    cache_max_age: i64,
    /// The longest token lifetime accepted, if limited.
    max_token_lifetime: Option<u64>,
    /// Only jitgate's own tokens may carry a grant binding.
    grant_bound: bool,
    source: Arc<KeySource>,
    keys: Arc<RwLock<Option<Arc<KeySet>>>>,
    /// Held for the whole of a fetch, by the task that fetches (see [`Issuer::key`]).
    fetch: Arc<tokio::sync::Mutex<FetchState>>,
}

struct Inner {
    issuers: HashMap<String, Issuer>,
    http: reqwest::Client,
    cache: TokenCache,
    jwks_max_age: i64,
}

/// Verifies bearer tokens against the configured issuers. Cheap to clone (one `Arc`), `Send + Sync`.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.inner.issuers.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Authenticator")
            .field("issuers", &names)
            .finish_non_exhaustive()
    }
}

fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Authenticator {
    /// Builds an authenticator with default [`AuthLimits`]. Fails with every config problem listed.
    pub fn new(issuers: Vec<IssuerConfig>, local: Option<LocalIssuer>) -> Result<Self, AuthError> {
        Self::with_limits(issuers, local, AuthLimits::default())
    }

    /// Builds an authenticator with explicit limits. No key is fetched yet: [`Authenticator::start_key_refresh`]
    /// fetches them (the proxy calls it at start-up); without it, each issuer's JWKS is fetched on first use.
    pub fn with_limits(
        issuers: Vec<IssuerConfig>,
        local: Option<LocalIssuer>,
        limits: AuthLimits,
    ) -> Result<Self, AuthError> {
        if let Err(problems) = validate_issuers(&issuers) {
            let joined: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(AuthError::Config(joined.join("; ")));
        }
        let mut map = HashMap::new();
        for cfg in issuers {
            let algorithms = cfg
                .algorithms
                .iter()
                .filter_map(|a| config::parse_algorithm(a).ok())
                .collect();
            let source = match cfg.jwks_url {
                Some(url) => KeySource::Url(url),
                None => KeySource::Discovery,
            };
            let issuer = Issuer {
                name: cfg.issuer.clone(),
                audiences: cfg.audiences,
                algorithms,
                mapping: PrincipalMapping::Claim {
                    claim: cfg.principal_claim,
                    ty: cfg.principal_type,
                    normalize: cfg.principal_normalize,
                },
                groups_claim: cfg.groups_claim,
                groups_type: cfg.groups_type,
                principal_attrs: cfg.principal_attrs.into_iter().collect(),
                leeway: cfg.leeway_secs,
                refresh_min_interval: secs(cfg.refresh_min_interval_secs),
                refresh_max_interval: cfg.refresh_max_interval_secs,
                cache_max_age: secs(cfg.cache_max_age_secs),
                max_token_lifetime: cfg.max_token_lifetime_secs,
                grant_bound: false,
                source: Arc::new(source),
                keys: Arc::new(RwLock::new(None)),
                fetch: Arc::new(tokio::sync::Mutex::new(FetchState::default())),
            };
            map.insert(cfg.issuer, issuer);
        }
        if let Some(local) = local {
            if map.contains_key(local.issuer()) {
                return Err(AuthError::Config(format!(
                    "the local issuer `{}` is also configured under [[issuers]]",
                    local.issuer()
                )));
            }
            let key = VerifyKey {
                kind: jwks::KeyKind::Ed25519,
                alg: Some(Algorithm::EdDSA),
                key: jsonwebtoken::DecodingKey::from_ed_components(
                    &URL_SAFE_NO_PAD.encode(local.public_key()),
                )
                .map_err(|e| AuthError::LocalKey(format!("public key: {e}")))?,
                fingerprint: jwks::fingerprint(jwks::KeyKind::Ed25519, &[local.public_key()]),
            };
            let set = KeySet {
                by_kid: HashMap::from([(local.kid().to_string(), Arc::new(key))]),
                unnamed: Vec::new(),
                fetched_at: 0,
                generation: 1,
                max_age: None,
                skipped: Vec::new(),
            };
            let issuer = Issuer {
                name: local.issuer().to_string(),
                audiences: vec![local.audience().to_string()],
                algorithms: vec![Algorithm::EdDSA],
                mapping: PrincipalMapping::EntityRefClaim,
                groups_claim: "groups".to_string(),
                groups_type: None,
                principal_attrs: Vec::new(),
                // jitgate's replicas share a clock source; a little skew only.
                leeway: 5,
                refresh_min_interval: i64::MAX,
                refresh_max_interval: u64::MAX,
                // Its key never changes while jitgate runs; the cap only bounds how long a cached identity lives.
                cache_max_age: 300,
                max_token_lifetime: None,
                grant_bound: true,
                source: Arc::new(KeySource::Static),
                keys: Arc::new(RwLock::new(Some(Arc::new(set)))),
                fetch: Arc::new(tokio::sync::Mutex::new(FetchState::default())),
            };
            map.insert(local.issuer().to_string(), issuer);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                issuers: map,
                http: jwks::http_client(limits.jwks_fetch_timeout)?,
                cache: TokenCache::new(limits.cache_capacity),
                jwks_max_age: secs(limits.jwks_max_age_secs),
            }),
        })
    }

    /// Authenticates a request from its `Authorization` header value at request time `now` (unix seconds).
    /// Any error is a deny; the detailed reason is logged here, and the error carries a caller-safe message.
    pub async fn authenticate(
        &self,
        authorization_header: Option<&str>,
        now: i64,
    ) -> Result<Identity, AuthError> {
        let result = self.inner.authenticate(authorization_header, now).await;
        if let Err(err) = &result {
            match err {
                AuthError::Missing => tracing::debug!("authentication failed: {err}"),
                AuthError::JwksUnavailable(_) | AuthError::Config(_) => {
                    tracing::warn!("authentication failed: {err}")
                }
                _ => tracing::info!("authentication failed: {err}"),
            }
        }
        result
    }

    /// How many verified tokens are cached now.
    pub fn cached_tokens(&self) -> usize {
        self.inner.cache.len()
    }

    /// The issuers whose keys have not been fetched yet, sorted: their tokens are refused (401) meanwhile, and the
    /// proxy is not ready while any is listed.
    pub fn issuers_without_keys(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .issuers
            .values()
            .filter(|i| i.keys.read().is_none())
            .map(|i| i.name.clone())
            .collect();
        names.sort_unstable();
        names
    }

    /// Fetches every configured issuer's keys now and keeps them fresh in the background: each is refetched when
    /// the `Cache-Control: max-age` it was served with runs out, bounded by the issuer's
    /// `refresh_min_interval_secs` and `refresh_max_interval_secs`; a failed fetch is retried after 1s, doubling up
    /// to 60s. Returns once every issuer's first attempt has ended (each is bounded by the fetch timeout), whatever
    /// its outcome: see [`Authenticator::issuers_without_keys`]. Times of fetches are taken from `clock`, the
    /// clock requests are authenticated with. Must be called within a Tokio runtime.
    pub async fn start_key_refresh(&self, clock: jitgate_engine::Clock) -> KeyRefresh {
        let mut tasks = Vec::new();
        let mut firsts = Vec::new();
        let mut names: Vec<&String> = self
            .inner
            .issuers
            .iter()
            .filter(|(_, i)| i.fetched())
            .map(|(n, _)| n)
            .collect();
        names.sort_unstable();
        for name in names {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(Issuer::refresh_loop(
                Arc::clone(&self.inner),
                name.clone(),
                clock.clone(),
                tx,
            )));
            firsts.push(rx);
        }
        for rx in firsts {
            let _ = rx.await;
        }
        KeyRefresh { tasks }
    }
}

/// What `jitgate check --online` found at one issuer (see [`probe_issuer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerProbe {
    /// The configured issuer.
    pub issuer: String,
    /// The OpenID configuration read, when the keys are found by discovery (it named the configured issuer).
    pub discovery_url: Option<String>,
    /// Where the keys were fetched.
    pub jwks_url: String,
    /// The usable keys published.
    pub keys: Vec<ProbedKey>,
    /// Keys of the document that jitgate would not use, each with why.
    pub skipped: Vec<String>,
    /// The `Cache-Control: max-age` of the key set, in seconds, if the issuer sent one.
    pub max_age: Option<u64>,
    /// How long jitgate would wait before refreshing the keys, in seconds (the max-age, bounded by the issuer's
    /// refresh interval settings).
    pub refresh_in_secs: u64,
}

/// One usable key found by [`probe_issuer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedKey {
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// Its type, e.g. `RSA` or `EC P-256`.
    pub kind: String,
    /// The `alg` the key pins itself to, if any.
    pub alg: Option<String>,
    /// The issuer's allowed algorithms this key can verify (empty: no token of this issuer can use it).
    pub usable_for: Vec<String>,
}

/// Fetches an issuer's discovery document (when configured by discovery) and its keys once, as the proxy would,
/// and reports what it found. Fails when either cannot be fetched or read, when the discovery document names
/// another issuer (a trailing-slash difference is named as such), or when no published key can verify any of the
/// issuer's allowed algorithms. Nothing is cached.
pub async fn probe_issuer(cfg: &IssuerConfig, timeout: Duration) -> Result<IssuerProbe, String> {
    if let Err(problems) = validate_issuers(std::slice::from_ref(cfg)) {
        let joined: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(joined.join("; "));
    }
    let http = jwks::http_client(timeout).map_err(|e| e.to_string())?;
    let (discovery_url, jwks_url) = match &cfg.jwks_url {
        Some(url) => (None, url.clone()),
        None => (
            Some(jwks::discovery_url(&cfg.issuer)),
            jwks::discover(&http, &cfg.issuer).await?,
        ),
    };
    let set = jwks::fetch_set(&http, &cfg.issuer, &jwks_url, 0, 1).await?;
    let allowed: Vec<Algorithm> = cfg
        .algorithms
        .iter()
        .filter_map(|a| config::parse_algorithm(a).ok())
        .collect();
    let describe = |kid: Option<&String>, k: &VerifyKey| ProbedKey {
        kid: kid.cloned(),
        kind: k.kind.name().to_string(),
        alg: k.alg.map(|a| format!("{a:?}")),
        usable_for: allowed
            .iter()
            .filter(|a| k.kind.fits(**a) && k.alg.is_none_or(|p| p == **a))
            .map(|a| format!("{a:?}"))
            .collect(),
    };
    let mut keys: Vec<ProbedKey> = set
        .by_kid
        .iter()
        .map(|(kid, k)| describe(Some(kid), k.as_ref()))
        .collect();
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    keys.extend(set.unnamed.iter().map(|k| describe(None, k.as_ref())));
    if !keys.iter().any(|k| !k.usable_for.is_empty()) {
        return Err(format!(
            "{jwks_url}: none of its {} usable key(s) can verify the allowed algorithms {:?}{}",
            keys.len(),
            cfg.algorithms,
            if set.skipped.is_empty() {
                String::new()
            } else {
                format!(" (skipped: {})", set.skipped.join("; "))
            }
        ));
    }
    let min = cfg.refresh_min_interval_secs;
    let max = cfg.refresh_max_interval_secs.max(min);
    Ok(IssuerProbe {
        issuer: cfg.issuer.clone(),
        discovery_url,
        jwks_url,
        keys,
        skipped: set.skipped,
        max_age: set.max_age,
        refresh_in_secs: set.max_age.unwrap_or(max).clamp(min, max),
    })
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(AuthError::Missing)?;
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    // Another scheme is "no bearer credential" (RFC 6750 section 3.1), not a bad token.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed("empty bearer token".to_string()));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed(format!(
            "token longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    if !is_token_text(token.as_bytes()) {
        return Err(AuthError::Malformed(
            "token has characters outside base64url and `.`".to_string(),
        ));
    }
    Ok(token)
}

/// Whether every byte is base64url or `.` (a JWS compact serialization's alphabet). Every byte is looked at, with no
/// early exit, so that the loop is vectorized: a token is checked on every request, and is hundreds of bytes long.
fn is_token_text(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        let lower = b | 0x20;
        ok & (lower.is_ascii_lowercase()
            | b.is_ascii_digit()
            | (b == b'-')
            | (b == b'_')
            | (b == b'.'))
    })
}

fn b64_json<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| AuthError::Malformed(format!("{what} is not base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AuthError::Malformed(format!("{what} is not a JSON object: {e}")))
}

/// A NumericDate claim (RFC 7519): an integer, or a finite number whose fraction is dropped.
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or_else(|| AuthError::InvalidClaim(format!("`{name}` is not a number"))),
    }
}

impl Inner {
    async fn authenticate(&self, header: Option<&str>, now: i64) -> Result<Identity, AuthError> {
        let token = bearer(header)?;
        let cache_key = token_key(token);
        // A hit is served only while the issuer's key set still holds the very key (by fingerprint, not by `kid`)
        // that verified it: a key the issuer removed or replaced behind the same `kid` (compromised, rotated out)
        // stops vouching for its cached tokens, whatever `exp` they carry, as soon as a refetch has seen it gone.
        // The set's age is not checked here: a hit never waits for a fetch, and keeps being served while the
        // issuer is unreachable, but never longer than the issuer's cache max age.
        let hit = self.cache.get(&cache_key, now, |e| {
            self.issuers.get(&e.identity.issuer).is_some_and(|i| {
                i.keys
                    .read()
                    .as_ref()
                    .is_some_and(|set| set.holds(&e.fingerprint))
            })
        });
        if let Some(identity) = hit {
            return Ok(Identity::clone(&identity));
        }

        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "a JWT has three dot-separated parts".to_string(),
            ));
        };
        let header: RawHeader = b64_json(h64, "header")?;
        let claims: Map<String, Value> = b64_json(p64, "payload")?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed(
                "the header has critical extensions (`crit`), none are supported".to_string(),
            ));
        }

        // The unverified `iss` only picks whose keys to try; the signature then proves it.
        let iss = match claims.get("iss") {
            Some(Value::String(iss)) => iss.as_str(),
            Some(_) => return Err(AuthError::InvalidClaim("`iss` is not a string".to_string())),
            None => return Err(AuthError::MissingClaim("iss".to_string())),
        };
        let issuer = self
            .issuers
            .get(iss)
            .ok_or_else(|| AuthError::UnknownIssuer(iss.to_string()))?;

        let alg = config::parse_algorithm(&header.alg).map_err(AuthError::AlgorithmNotAllowed)?;
        if !issuer.algorithms.contains(&alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!(
                "`{}` is not allowed for issuer `{iss}`",
                header.alg
            )));
        }
        let kid = header.kid.as_deref();
        let signed = token.get(..h64.len() + 1 + p64.len()).unwrap_or_default();
        let mut key = issuer.key(kid, alg, now, self, None).await?;
        let mut refetched = false;
        loop {
            if !key.kind.fits(alg) || key.alg.is_some_and(|a| a != alg) {
                return Err(AuthError::AlgorithmNotAllowed(format!(
                    "`{}` does not fit key `{}` ({:?})",
                    header.alg,
                    kid.unwrap_or_default(),
                    key.kind
                )));
            }
            let failure = match jsonwebtoken::crypto::verify(s64, signed.as_bytes(), &key.key, alg)
            {
                Ok(true) => break,
                Ok(false) => AuthError::BadSignature(format!(
                    "does not verify with key `{}`",
                    kid.unwrap_or_default()
                )),
                Err(e) => AuthError::BadSignature(e.to_string()),
            };
            // The issuer may have put a new key behind the same `kid` (or replaced its only unnamed key): refetch
            // once, rate-limited, and try the key found there if it is another one.
            if refetched {
                return Err(failure);
            }
            refetched = true;
            match issuer
                .key(kid, alg, now, self, Some(&key.fingerprint))
                .await
            {
                Ok(newer) => key = newer,
                Err(_) => return Err(failure),
            }
        }

        issuer.identity(claims, now).map(|(identity, nbf)| {
            let identity = Arc::new(identity);
            let not_before = nbf.map(|nbf| nbf.saturating_sub(secs(issuer.leeway)));
            self.cache.insert(
                cache_key,
                Entry {
                    identity: Arc::clone(&identity),
                    until: identity
                        .expires_at
                        .min(now.saturating_add(issuer.cache_max_age)),
                    not_before,
                    fingerprint: key.fingerprint,
                },
                now,
            );
            Identity::clone(&identity)
        })
    }
}

/// Fetches an issuer's key set while its fetch lock is held (`state` is behind it), records the attempt and, on
/// success, publishes the new set.
async fn fetch_and_record(
    http: &reqwest::Client,
    name: &str,
    source: &KeySource,
    keys: &RwLock<Option<Arc<KeySet>>>,
    state: &mut FetchState,
    now: i64,
) -> Result<Arc<KeySet>, String> {
    let fetched = jwks::fetch(http, name, source, state, now).await;
    state.last_attempt = Some(now);
    match fetched {
        Ok(set) => {
            tracing::info!(
                issuer = %name,
                keys = set.by_kid.len() + set.unnamed.len(),
                max_age = ?set.max_age,
                "fetched issuer keys"
            );
            state.generation = set.generation;
            state.last_error = None;
            let set = Arc::new(set);
            *keys.write() = Some(Arc::clone(&set));
            Ok(set)
        }
        Err(e) => {
            tracing::warn!(issuer = %name, error = %e, "fetching issuer keys failed");
            state.last_error = Some(e.clone());
            Err(e)
        }
    }
}

/// The first wait after a failed background fetch; it doubles on each failure up to [`MAX_RETRY_DELAY`] (or the
/// issuer's `refresh_max_interval_secs`, if shorter).
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two background attempts while an issuer's keys cannot be fetched.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The background key refresh of every issuer whose keys are fetched (see [`Authenticator::start_key_refresh`]).
/// Dropping it stops the refresh.
#[derive(Debug)]
pub struct KeyRefresh {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KeyRefresh {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Issuer {
    /// Whether the keys come from the issuer (and so need fetching and refreshing).
    fn fetched(&self) -> bool {
        !matches!(*self.source, KeySource::Static)
    }

    /// Fetches the key set now, single flight with the request path's fetches, and records the attempt (so a
    /// request-path refetch right after is rate-limited as after any fetch; a forced one is not, see
    /// [`Issuer::key`]).
    async fn refresh(&self, inner: &Inner, now: i64) -> Result<Arc<KeySet>, String> {
        let mut state = Arc::clone(&self.fetch).lock_owned().await;
        fetch_and_record(
            &inner.http,
            &self.name,
            &self.source,
            &self.keys,
            &mut state,
            now,
        )
        .await
    }

    /// How long to wait before refreshing `set` again: its `max-age`, bounded by the issuer's refresh interval
    /// settings; the maximum when the issuer sent none.
    fn refresh_delay(&self, set: &KeySet) -> Duration {
        let min = u64::try_from(self.refresh_min_interval).unwrap_or(u64::MAX);
        let max = self.refresh_max_interval.max(min);
        Duration::from_secs(set.max_age.unwrap_or(max).clamp(min, max))
    }

    /// The background refresh of one issuer: fetch, then refetch when the keys' `max-age` runs out (bounded by
    /// the issuer's settings); after a failure retry with a doubling delay. `first` is told when the first
    /// attempt ended, whatever its outcome.
    async fn refresh_loop(
        inner: Arc<Inner>,
        name: String,
        clock: jitgate_engine::Clock,
        first: tokio::sync::oneshot::Sender<()>,
    ) {
        let Some(issuer) = inner.issuers.get(&name) else {
            return;
        };
        let mut first = Some(first);
        let mut retry = FIRST_RETRY_DELAY;
        let retry_cap =
            MAX_RETRY_DELAY.min(Duration::from_secs(issuer.refresh_max_interval.max(1)));
        let mut failures = 0u32;
        loop {
            let wait = match issuer.refresh(&inner, clock.now()).await {
                Ok(set) => {
                    if failures > 0 {
                        tracing::info!(issuer = %name, after_failures = failures, "issuer keys fetched again");
                    }
                    failures = 0;
                    retry = FIRST_RETRY_DELAY;
                    issuer.refresh_delay(&set)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = retry;
                    retry = (retry * 2).min(retry_cap);
                    if issuer.keys.read().is_none() {
                        tracing::warn!(
                            issuer = %name,
                            attempt = failures,
                            retry_in_secs = wait.as_secs(),
                            error = %e,
                            "no keys for this issuer yet: not ready, and its tokens are refused until they are fetched"
                        );
                    } else {
                        tracing::warn!(
                            issuer = %name,
                            attempt = failures,
                            retry_in_secs = wait.as_secs(),
                            error = %e,
                            "refreshing issuer keys failed; the keys fetched before stay in use"
                        );
                    }
                    wait
                }
            };
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Whether `set` may be used without refetching: a fixed set always, a fetched one for `max_age`.
    fn is_fresh(&self, set: &KeySet, now: i64, max_age: i64) -> bool {
        matches!(*self.source, KeySource::Static) || now < set.fetched_at.saturating_add(max_age)
    }

    /// The verification key for `kid`, fetching or refreshing the JWKS when needed.
    ///
    /// With `rejected` (the fingerprint of a key the signature just failed under), the JWKS is refetched and only
    /// another key is returned. Refetches for a key that is not there or did not verify (forced ones) are immediate
    /// when none happened within `refresh_min_interval`, so an issuer's rotation is seen on the first token; any
    /// other fetch (none yet, a stale set) waits `refresh_min_interval` after the last attempt. Either kind waits
    /// after a failed attempt, so an unreachable issuer is not hammered.
    async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: i64,
        inner: &Inner,
        rejected: Option<&Fingerprint>,
    ) -> Result<Arc<VerifyKey>, AuthError> {
        let unknown = || AuthError::UnknownKey {
            issuer: self.name.clone(),
            kid: kid.unwrap_or_default().to_string(),
        };
        let usable = |k: &Arc<VerifyKey>| rejected.is_none_or(|fp| &k.fingerprint != fp);
        let snapshot = self.keys.read().clone();
        let fresh = |set: &KeySet| self.is_fresh(set, now, inner.jwks_max_age);
        let in_snapshot = snapshot.as_ref().and_then(|s| s.find(kid, alg)).cloned();
        if let (Some(set), Some(key)) = (&snapshot, &in_snapshot) {
            if usable(key) && fresh(set) {
                return Ok(Arc::clone(key));
            }
        }
        if matches!(*self.source, KeySource::Static) {
            return Err(unknown());
        }
        // Forced: the issuer's set is there but lacks the key, or its key did not verify.
        let forced = snapshot.is_some() && (rejected.is_some() || in_snapshot.is_none());

        // Single flight: whoever holds the lock fetches; the others wait and then use what it fetched.
        let seen = snapshot.as_ref().map(|s| s.generation);
        let mut state = Arc::clone(&self.fetch).lock_owned().await;
        let current = self.keys.read().clone();
        let found = current
            .as_ref()
            .and_then(|s| s.find(kid, alg))
            .filter(|k| usable(k))
            .cloned();
        if current.as_ref().map(|s| s.generation) != seen {
            return found.ok_or_else(unknown);
        }
        let within =
            |t: Option<i64>| t.is_some_and(|t| now < t.saturating_add(self.refresh_min_interval));
        let window = if forced {
            if within(state.last_forced) {
                state.last_forced
            } else if state.last_error.is_some() && within(state.last_attempt) {
                state.last_attempt
            } else {
                None
            }
        } else if within(state.last_attempt) {
            state.last_attempt
        } else {
            None
        };
        if let Some(window) = window {
            if forced && state.warned_window != Some(window) {
                state.warned_window = Some(window);
                tracing::warn!(
                    issuer = %self.name,
                    kid = kid.unwrap_or_default(),
                    retry_in_secs = window.saturating_add(self.refresh_min_interval).saturating_sub(now),
                    "a key refetch for an unknown kid or a failed signature is rate-limited \
                     (refresh_min_interval_secs); tokens needing a new key are refused until then"
                );
            }
            if let Some(key) = found {
                return Ok(key);
            }
            return Err(match (&state.last_error, &current) {
                (Some(e), _) => AuthError::JwksUnavailable(format!(
                    "issuer `{}`: {e} (retrying at most every {}s)",
                    self.name, self.refresh_min_interval
                )),
                (None, None) => AuthError::JwksUnavailable(format!(
                    "issuer `{}`: keys not fetched yet",
                    self.name
                )),
                (None, Some(_)) => unknown(),
            });
        }
        if forced {
            state.last_forced = Some(now);
        }

        // The fetch runs in a task of its own, which holds the lock and records the attempt when it ends: a caller
        // that hangs up (a reset HTTP/2 stream, the request timeout) drops only its wait. Cancelling callers in a
        // loop therefore neither starts a fetch per caller nor leaves the issuer rate-limited with no keys.
        let fetching = {
            let (http, name, source) = (
                inner.http.clone(),
                self.name.clone(),
                Arc::clone(&self.source),
            );
            let keys = Arc::clone(&self.keys);
            tokio::spawn(async move {
                fetch_and_record(&http, &name, &source, &keys, &mut state, now).await
            })
        };
        let fetched = fetching
            .await
            .unwrap_or_else(|e| Err(format!("the key fetch did not finish: {e}")));
        match fetched {
            Ok(set) => set
                .find(kid, alg)
                .filter(|k| usable(k))
                .cloned()
                .ok_or_else(unknown),
            // A stale key still verifies while the issuer is unreachable; an unknown one cannot.
            Err(e) => found
                .ok_or_else(|| AuthError::JwksUnavailable(format!("issuer `{}`: {e}", self.name))),
        }
    }

    /// Checks the time window and audience and maps the claims to an identity. Returns the `nbf` too, for the cache.
    fn identity(
        &self,
        claims: Map<String, Value>,
        now: i64,
    ) -> Result<(Identity, Option<i64>), AuthError> {
        let leeway = secs(self.leeway);
        let exp = numeric_claim(&claims, "exp")?
            .ok_or_else(|| AuthError::MissingClaim("exp".to_string()))?;
        if now >= exp.saturating_add(leeway) {
            return Err(AuthError::Expired {
                exp,
                now,
                leeway: self.leeway,
            });
        }
        let nbf = numeric_claim(&claims, "nbf")?;
        if let Some(nbf) = nbf {
            if nbf > now.saturating_add(leeway) {
                return Err(AuthError::NotYetValid {
                    nbf,
                    now,
                    leeway: self.leeway,
                });
            }
        }
        if let Some(max) = self.max_token_lifetime {
            // From `iat` when the token says when it was issued; otherwise what is left of it from now on.
            let from = numeric_claim(&claims, "iat")?.unwrap_or(now);
            let lifetime = exp.saturating_sub(from);
            if lifetime > secs(max) {
                return Err(AuthError::LifetimeTooLong { lifetime, max });
            }
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => self.audiences.contains(aud),
            Some(Value::Array(auds)) => auds.iter().any(|a| {
                a.as_str()
                    .is_some_and(|a| self.audiences.iter().any(|x| x == a))
            }),
            Some(_) => {
                return Err(AuthError::InvalidClaim(
                    "`aud` is neither a string nor an array".to_string(),
                ));
            }
            None => {
                return Err(AuthError::WrongAudience(
                    "the token has no `aud`".to_string(),
                ));
            }
        };
        if !aud_ok {
            return Err(AuthError::WrongAudience(format!(
                "{} is not one of {:?}",
                claims.get("aud").map(Value::to_string).unwrap_or_default(),
                self.audiences
            )));
        }

        let principal = match &self.mapping {
            PrincipalMapping::Claim {
                claim,
                ty,
                normalize,
            } => match claims.get(claim) {
                Some(Value::String(id)) if !id.is_empty() => {
                    EntityRef::new(ty.clone(), principal::principal_id(claim, id, *normalize)?)
                }
                Some(_) => {
                    return Err(AuthError::InvalidClaim(format!(
                        "`{claim}` is not a non-empty string"
                    )));
                }
                None => return Err(AuthError::MissingClaim(claim.clone())),
            },
            PrincipalMapping::EntityRefClaim => match claims.get(PRINCIPAL_CLAIM) {
                Some(Value::String(text)) => text
                    .parse::<EntityRef>()
                    .map_err(|e| AuthError::InvalidClaim(format!("`{PRINCIPAL_CLAIM}`: {e}")))?,
                Some(_) => {
                    return Err(AuthError::InvalidClaim(format!(
                        "`{PRINCIPAL_CLAIM}` is not a string"
                    )));
                }
                None => return Err(AuthError::MissingClaim(PRINCIPAL_CLAIM.to_string())),
            },
        };
        let groups = match claims.get(&self.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(g)) => vec![g.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| g.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    AuthError::InvalidClaim(format!(
                        "`{}` has a non-string member",
                        self.groups_claim
                    ))
                })?,
            Some(_) => {
                return Err(AuthError::InvalidClaim(format!(
                    "`{}` is not a string array",
                    self.groups_claim
                )));
            }
        };
        // Mapped once per verified token (the identity is cached with it), never per request.
        let mut attrs = Map::new();
        for (attr, claim) in &self.principal_attrs {
            let value = match claim.strip_prefix('/') {
                // A JSON pointer: its first step names the claim, the rest goes inside it.
                Some(path) => {
                    let (first, rest) = match path.split_once('/') {
                        Some((f, r)) => (f, Some(r)),
                        None => (path, None),
                    };
                    let first = first.replace("~1", "/").replace("~0", "~");
                    claims.get(&first).and_then(|v| match rest {
                        Some(r) => v.pointer(&format!("/{r}")),
                        None => Some(v),
                    })
                }
                None => claims.get(claim),
            };
            if let Some(v) = value.filter(|v| !v.is_null()) {
                attrs.insert(attr.clone(), v.clone());
            }
        }
        let grant_id = if self.grant_bound {
            match claims.get(GRANT_CLAIM) {
                Some(Value::String(g)) if !g.is_empty() => Some(g.clone()),
                Some(_) => {
                    return Err(AuthError::InvalidClaim(format!(
                        "`{GRANT_CLAIM}` is not a non-empty string"
                    )));
                }
                // A session token minted by jitgate itself (e.g. the quickstart's dev tokens): not grant-bound.
                None => None,
            }
        } else {
            None
        };
        Ok((
            Identity {
                principal,
                groups,
                group_type: self.groups_type.clone(),
                attrs,
                claims,
                issuer: self.name.clone(),
                expires_at: exp,
                grant_id,
            },
            nbf,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_alphabet_is_base64url_and_the_dot() {
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        for b in 0..=u8::MAX {
            assert_eq!(is_token_text(&[b]), plain(b), "byte {b:#04x}");
            // Anywhere in a long token, one byte outside the alphabet is found.
            let mut token = vec![b'a'; 700];
            token[613] = b;
            assert_eq!(is_token_text(&token), plain(b), "byte {b:#04x} at 613");
        }
        assert!(is_token_text(
            b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_"
        ));
        assert!(is_token_text(b""));
    }
}
