//! The `[[issuers]]` section of the proxy config: which token issuers are trusted and how their claims map to
//! principals. Parsing and validation only; the proxy's config loader turns key paths into file positions.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

/// One trusted token issuer (an `[[issuers]]` table in the proxy config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value of its tokens, e.g. `https://login.example.com/`.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Must not be empty.
    pub audiences: Vec<String>,
    /// Where the issuer publishes its JWKS. Set this or `discovery`, not both.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Find the JWKS through `<issuer>/.well-known/openid-configuration` (its `jwks_uri`).
    #[serde(default)]
    pub discovery: bool,
    /// Allowed signature algorithms, e.g. `["RS256", "ES256", "EdDSA"]`. `none` and `HS*` are always rejected:
    /// a public key must never be usable as an HMAC secret.
    pub algorithms: Vec<String>,
    /// The claim whose string value is the principal's id.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// How the `principal_claim` value is normalized before it names the principal: `exact` (as sent), `nfc`
    /// (Unicode NFC, so `é` composed and decomposed are one id) or `nfc_fold` (NFC, then lower case: `Erin` and
    /// `erin` are one principal). Ids with invisible, format or control characters are refused whatever this says.
    #[serde(default)]
    pub principal_normalize: PrincipalNormalize,
    /// The claim holding the caller's groups (an array of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The entity type of principals from this issuer (`User` gives `User::"<id>"`).
    #[serde(default = "default_principal_type")]
    pub principal_type: String,
    /// The entity type of the caller's groups (the `groups_claim` values), e.g. `Team` or `Acme::UserGroup`; unset:
    /// `Group`. Their own parents (a team in an organization) come from the bundle's entity data, and `in` follows
    /// them transitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_type: Option<String>,
    /// Principal attributes from token claims: attribute name -> claim name (`job = "job_title"`), or a JSON pointer
    /// into the claims when it starts with `/` (`region = "/address/region"`). The bundle's Cedar schema types each
    /// value (strings, longs, booleans, sets, records, entity references, `ipaddr`/`decimal`/`datetime`/`duration`);
    /// a claim the token lacks leaves the attribute out. What the entity data says about the same principal is
    /// merged under them (the token wins on a clash). Rego sees them as `input.principal.attrs`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub principal_attrs: BTreeMap<String, String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (at most 300).
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// The least time between two JWKS fetches for this issuer, in seconds (at least 1): unknown `kid`s cannot
    /// make jitgate hammer the issuer. Also the least time between two background refreshes, however short the
    /// issuer's `Cache-Control: max-age`.
    #[serde(default = "default_refresh_min_interval_secs")]
    pub refresh_min_interval_secs: u64,
    /// The longest time between two background refreshes of the JWKS, in seconds (at least
    /// `refresh_min_interval_secs`): the keys are refetched when the issuer's `Cache-Control: max-age` runs out,
    /// or after this long if that is sooner or the issuer sends none. A removed key stops verifying within it.
    #[serde(default = "default_refresh_max_interval_secs")]
    pub refresh_max_interval_secs: u64,
    /// The longest a verified token is served from the cache, in seconds, before it is verified again (0: never
    /// cached). Bounds how long a cached token outlives a change the cache cannot see.
    #[serde(default = "default_cache_max_age_secs")]
    pub cache_max_age_secs: u64,
    /// The longest token lifetime accepted, in seconds: `exp - iat` (or `exp - now` without `iat`). Unset: any.
    /// A long-lived token (one minted with a stolen key, say) is refused however valid its signature.
    #[serde(default)]
    pub max_token_lifetime_secs: Option<u64>,
    /// This issuer names the same people as the other issuers with its `principal_type` (two identity providers
    /// for one directory, e.g. during a migration), so the same id from either is one principal. Without it, two
    /// issuers may not share a `principal_type`: a `sub` minted by one would be the other's principal, with its
    /// grants and approvals.
    #[serde(default)]
    pub shares_principals: bool,
}

/// How an issuer's principal ids are normalized (`principal_normalize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalNormalize {
    /// As sent: ids are compared byte for byte.
    #[default]
    Exact,
    /// Unicode NFC.
    Nfc,
    /// Unicode NFC, then lower case.
    NfcFold,
}

fn default_principal_claim() -> String {
    "sub".to_string()
}
fn default_groups_claim() -> String {
    "groups".to_string()
}
fn default_principal_type() -> String {
    "User".to_string()
}
fn default_leeway_secs() -> u64 {
    30
}
fn default_refresh_min_interval_secs() -> u64 {
    30
}
fn default_refresh_max_interval_secs() -> u64 {
    3600
}
fn default_cache_max_age_secs() -> u64 {
    300
}

/// The most leeway an issuer may have: beyond this, an expired token is simply accepted.
pub const MAX_LEEWAY_SECS: u64 = 300;

impl IssuerConfig {
    /// An issuer with the given JWKS URL, audience and algorithms, and every other field at its default.
    pub fn new(
        issuer: impl Into<String>,
        jwks_url: impl Into<String>,
        audience: impl Into<String>,
        algorithms: &[&str],
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: vec![audience.into()],
            jwks_url: Some(jwks_url.into()),
            discovery: false,
            algorithms: algorithms.iter().map(|a| (*a).to_string()).collect(),
            principal_claim: default_principal_claim(),
            principal_normalize: PrincipalNormalize::default(),
            groups_claim: default_groups_claim(),
            principal_type: default_principal_type(),
            groups_type: None,
            principal_attrs: BTreeMap::new(),
            leeway_secs: default_leeway_secs(),
            refresh_min_interval_secs: default_refresh_min_interval_secs(),
            refresh_max_interval_secs: default_refresh_max_interval_secs(),
            cache_max_age_secs: default_cache_max_age_secs(),
            max_token_lifetime_secs: None,
            shares_principals: false,
        }
    }
}

/// One problem in the issuers config, located by its key path (`issuers[1].algorithms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    /// The key path, e.g. `issuers[1].algorithms`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Parses a configured algorithm name into an asymmetric algorithm, or says why it is refused.
pub(crate) fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        n if n.eq_ignore_ascii_case("none") => {
            Err(format!("`{n}` is not allowed (unsigned tokens)"))
        }
        n if n.to_ascii_uppercase().starts_with("HS") => Err(format!(
            "`{n}` is not allowed (shared-secret algorithms are not supported)"
        )),
        n => Err(format!(
            "unknown algorithm `{n}` (expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
        )),
    }
}

/// Whether `url` may be fetched for keys: `https`, or `http` to a loopback host only (tests, sidecars).
pub(crate) fn check_fetch_url(url: &str) -> Result<(), String> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match host.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(format!(
                "`{url}` must use https (plain http is only allowed to a loopback host)"
            ));
        }
        rest
    } else {
        return Err(format!("`{url}` is not an http(s) URL"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

fn is_entity_type(ty: &str) -> bool {
    !ty.is_empty()
        && ty.split("::").all(|seg| {
            !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Whether `name` can name a Cedar attribute written as `principal.name`.
fn is_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks every issuer and reports all problems at once, each with its key path (`issuers[1].algorithms`).
pub fn validate_issuers(issuers: &[IssuerConfig]) -> Result<(), Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, cfg) in issuers.iter().enumerate() {
        let mut problem = |field: &str, message: String| {
            problems.push(ConfigProblem {
                path: format!("issuers[{i}].{field}"),
                message,
            });
        };
        if cfg.issuer.trim().is_empty() {
            problem("issuer", "must not be empty".to_string());
        } else {
            let first = *seen.entry(cfg.issuer.as_str()).or_insert(i);
            if first != i {
                problem(
                    "issuer",
                    format!("`{}` is already configured as issuers[{first}]", cfg.issuer),
                );
            }
        }
        if cfg.audiences.is_empty() {
            problem("audiences", "must name at least one audience".to_string());
        }
        for (j, aud) in cfg.audiences.iter().enumerate() {
            if aud.trim().is_empty() {
                problems.push(ConfigProblem {
                    path: format!("issuers[{i}].audiences[{j}]"),
                    message: "must not be empty".to_string(),
                });
            }
        }
        let mut problem = |field: &str, message: String| {
            problems.push(ConfigProblem {
                path: format!("issuers[{i}].{field}"),
                message,
            });
        };
        match (&cfg.jwks_url, cfg.discovery) {
            (Some(_), true) => problem(
                "jwks_url",
                "set either `jwks_url` or `discovery = true`, not both".to_string(),
            ),
            (None, false) => problem(
                "jwks_url",
                "one of `jwks_url` or `discovery = true` is required".to_string(),
            ),
            (Some(url), false) => {
                if let Err(e) = check_fetch_url(url) {
                    problem("jwks_url", e);
                }
            }
            (None, true) => {
                if let Err(e) = check_fetch_url(&cfg.issuer) {
                    problem("issuer", format!("discovery needs an http(s) issuer: {e}"));
                }
            }
        }
        if cfg.algorithms.is_empty() {
            problem(
                "algorithms",
                "must allow at least one algorithm".to_string(),
            );
        }
        for alg in &cfg.algorithms {
            if let Err(e) = parse_algorithm(alg) {
                problem("algorithms", e);
            }
        }
        if cfg.principal_claim.trim().is_empty() {
            problem("principal_claim", "must not be empty".to_string());
        }
        if cfg.groups_claim.trim().is_empty() {
            problem("groups_claim", "must not be empty".to_string());
        }
        if !is_entity_type(&cfg.principal_type) {
            problem(
                "principal_type",
                format!(
                    "`{}` is not an entity type (e.g. `User` or `Acme::User`)",
                    cfg.principal_type
                ),
            );
        }
        if let Some(t) = &cfg.groups_type {
            if !is_entity_type(t) {
                problem(
                    "groups_type",
                    format!("`{t}` is not an entity type (e.g. `Team` or `Acme::UserGroup`)"),
                );
            }
        }
        for (attr, claim) in &cfg.principal_attrs {
            let key = format!("principal_attrs.{attr}");
            if !is_identifier(attr) {
                problem(
                    &key,
                    format!(
                        "`{attr}` is not an attribute name (letters, digits and `_`, not starting with a digit)"
                    ),
                );
            }
            if claim.trim().is_empty() {
                problem(
                    &key,
                    "must name a claim (or a JSON pointer like `/address/region`)".to_string(),
                );
            } else if claim.starts_with('/') && claim.split('/').skip(1).any(str::is_empty) {
                problem(
                    &key,
                    format!("`{claim}`: a JSON pointer with an empty step"),
                );
            }
        }
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            problem(
                "leeway_secs",
                format!(
                    "{} is more than the maximum {MAX_LEEWAY_SECS}",
                    cfg.leeway_secs
                ),
            );
        }
        if cfg.refresh_min_interval_secs == 0 {
            problem(
                "refresh_min_interval_secs",
                "must be at least 1".to_string(),
            );
        }
        if cfg.refresh_max_interval_secs < cfg.refresh_min_interval_secs {
            problem(
                "refresh_max_interval_secs",
                format!(
                    "{} is less than refresh_min_interval_secs ({})",
                    cfg.refresh_max_interval_secs, cfg.refresh_min_interval_secs
                ),
            );
        }
        if cfg.max_token_lifetime_secs == Some(0) {
            problem(
                "max_token_lifetime_secs",
                "must be at least 1 (leave it out to accept any lifetime)".to_string(),
            );
        }
    }
    // One principal namespace per issuer, unless every issuer sharing it says that it names the same people.
    let mut by_type: HashMap<&str, usize> = HashMap::new();
    for (i, cfg) in issuers.iter().enumerate() {
        let Some(&first) = by_type.get(cfg.principal_type.as_str()) else {
            by_type.insert(&cfg.principal_type, i);
            continue;
        };
        let other = issuers.get(first);
        if !(cfg.shares_principals && other.is_some_and(|o| o.shares_principals)) {
            problems.push(ConfigProblem {
                path: format!("issuers[{i}].principal_type"),
                message: format!(
                    "`{}` is also the principal type of issuers[{first}] (`{}`): the same id from both would be one \
                     principal, with one set of grants; give each issuer its own `principal_type`, or set \
                     `shares_principals = true` on both if they name the same people",
                    cfg.principal_type,
                    other.map(|o| o.issuer.as_str()).unwrap_or_default()
                ),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn good() -> IssuerConfig {
        IssuerConfig::new(
            "https://idp.example.com",
            "https://idp.example.com/jwks",
            "api",
            &["RS256"],
        )
    }

    fn messages(issuers: &[IssuerConfig]) -> Vec<String> {
        validate_issuers(issuers)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn accepts_a_good_issuer_and_defaults_from_toml() {
        assert!(validate_issuers(&[good()]).is_ok());
        let cfg: IssuerConfig = toml::from_str(
            r#"
            issuer = "https://idp.example.com"
            audiences = ["api"]
            discovery = true
            algorithms = ["RS256", "ES256", "EdDSA"]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.principal_claim, "sub");
        assert_eq!(cfg.groups_claim, "groups");
        assert_eq!(cfg.principal_type, "User");
        assert_eq!(cfg.leeway_secs, 30);
        assert_eq!(cfg.refresh_min_interval_secs, 30);
        assert_eq!(cfg.refresh_max_interval_secs, 3600);
        assert_eq!(cfg.cache_max_age_secs, 300);
        assert_eq!(cfg.max_token_lifetime_secs, None);
        assert!(validate_issuers(&[cfg]).is_ok());
    }

    #[test]
    fn caller_entity_keys_are_checked_and_named() {
        let cfg: IssuerConfig = toml::from_str(
            r#"
            issuer = "https://idp.example.com"
            audiences = ["api"]
            discovery = true
            algorithms = ["RS256"]
            groups_type = "Acme::Team"
            principal_attrs = { job = "job_title", region = "/address/region" }
            "#,
        )
        .unwrap();
        assert_eq!(cfg.groups_type.as_deref(), Some("Acme::Team"));
        assert_eq!(cfg.principal_attrs["region"], "/address/region");
        assert!(validate_issuers(&[cfg]).is_ok());
        let mut bad = good();
        bad.groups_type = Some("Team Leads".into());
        bad.principal_attrs = BTreeMap::from([
            ("job title".to_string(), "job".to_string()),
            ("region".to_string(), " ".to_string()),
            ("zone".to_string(), "/address//zone".to_string()),
        ]);
        let m = messages(&[bad]);
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(
            m[0].starts_with("issuers[0].groups_type: `Team Leads` is not an entity type"),
            "{m:?}"
        );
        assert!(
            m[1].starts_with("issuers[0].principal_attrs.job title: "),
            "{m:?}"
        );
        assert!(
            m[2].starts_with("issuers[0].principal_attrs.region: must name a claim"),
            "{m:?}"
        );
        assert!(
            m[3].starts_with("issuers[0].principal_attrs.zone: "),
            "{m:?}"
        );
    }

    #[test]
    fn refresh_max_interval_is_not_below_the_min() {
        let mut bad = good();
        bad.refresh_min_interval_secs = 60;
        bad.refresh_max_interval_secs = 59;
        assert_eq!(
            messages(&[bad]),
            [
                "issuers[0].refresh_max_interval_secs: 59 is less than refresh_min_interval_secs (60)"
            ]
        );
        let mut equal = good();
        equal.refresh_min_interval_secs = 60;
        equal.refresh_max_interval_secs = 60;
        assert!(validate_issuers(&[equal]).is_ok());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<IssuerConfig>(
            "issuer = \"x\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_uri = \"https://x\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("jwks_uri"), "{err}");
    }

    #[test]
    fn reports_every_problem_with_its_key_path() {
        let mut bad = good();
        bad.algorithms = vec!["HS256".into(), "none".into(), "RS1024".into()];
        bad.audiences = vec![];
        bad.leeway_secs = 3600;
        bad.refresh_min_interval_secs = 0;
        bad.max_token_lifetime_secs = Some(0);
        bad.principal_type = "not a type".into();
        let msgs = messages(&[good(), bad]);
        let expect = [
            "issuers[1].issuer: `https://idp.example.com` is already configured as issuers[0]",
            "issuers[1].audiences: must name at least one audience",
            "issuers[1].algorithms: `HS256` is not allowed (shared-secret algorithms are not supported)",
            "issuers[1].algorithms: `none` is not allowed (unsigned tokens)",
            "issuers[1].algorithms: unknown algorithm `RS1024`",
            "issuers[1].principal_type: `not a type` is not an entity type",
            "issuers[1].leeway_secs: 3600 is more than the maximum 300",
            "issuers[1].refresh_min_interval_secs: must be at least 1",
            "issuers[1].max_token_lifetime_secs: must be at least 1",
        ];
        for e in expect {
            assert!(
                msgs.iter().any(|m| m.starts_with(e)),
                "missing `{e}` in {msgs:#?}"
            );
        }
        assert_eq!(msgs.len(), expect.len(), "{msgs:#?}");
    }

    #[test]
    fn key_source_must_be_exactly_one_and_https() {
        let mut both = good();
        both.discovery = true;
        let mut neither = good();
        neither.issuer = "https://b.example.com".into();
        neither.jwks_url = None;
        let mut plain = good();
        plain.issuer = "https://c.example.com".into();
        plain.jwks_url = Some("http://idp.example.com/jwks".into());
        let mut loopback = good();
        loopback.issuer = "local".into();
        loopback.jwks_url = Some("http://127.0.0.1:8080/jwks".into());
        let mut discovery_bad_issuer = good();
        discovery_bad_issuer.issuer = "my-idp".into();
        discovery_bad_issuer.jwks_url = None;
        discovery_bad_issuer.discovery = true;
        let mut all = [both, neither, plain, loopback, discovery_bad_issuer];
        // One principal namespace each, so only the key sources are at fault.
        for (i, cfg) in all.iter_mut().enumerate() {
            cfg.principal_type = format!("User{i}");
        }
        let msgs = messages(&all);
        assert!(
            msgs[0].starts_with("issuers[0].jwks_url: set either"),
            "{msgs:#?}"
        );
        assert!(
            msgs[1].starts_with("issuers[1].jwks_url: one of"),
            "{msgs:#?}"
        );
        assert!(
            msgs[2]
                .starts_with("issuers[2].jwks_url: `http://idp.example.com/jwks` must use https"),
            "{msgs:#?}"
        );
        assert!(
            msgs[3].starts_with("issuers[4].issuer: discovery needs an http(s) issuer"),
            "{msgs:#?}"
        );
        assert_eq!(msgs.len(), 4, "{msgs:#?}");
    }

    /// `sub` is unique within one issuer only: two issuers share a principal type only when both say they name
    /// the same people.
    #[test]
    fn issuers_share_a_principal_type_only_when_both_say_so() {
        let a = good();
        let mut b = good();
        b.issuer = "https://other-idp.example.com".into();
        let msgs = messages(&[a.clone(), b.clone()]);
        assert_eq!(msgs.len(), 1, "{msgs:#?}");
        assert!(
            msgs[0].starts_with(
                "issuers[1].principal_type: `User` is also the principal type of issuers[0] (`https://idp.example.com`)"
            ),
            "{msgs:#?}"
        );
        // One side saying so is not enough.
        let mut b_shares = b.clone();
        b_shares.shares_principals = true;
        assert_eq!(messages(&[a.clone(), b_shares.clone()]).len(), 1);
        let mut a_shares = a.clone();
        a_shares.shares_principals = true;
        assert!(validate_issuers(&[a_shares, b_shares]).is_ok());
        let mut b_workload = b;
        b_workload.principal_type = "Workload".into();
        assert!(validate_issuers(&[a, b_workload]).is_ok());
    }
}
