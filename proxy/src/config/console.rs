//! `[console]`: the approver console's sign-in (OpenID Connect authorization code flow with PKCE) and sessions.
//! The console itself is always served by the admin listener at `/ui/`; without `[console]` nobody can sign in to
//! it, except in the quickstart, whose development sign-in is no config key (see [`super::Config::console_dev_users`]).

use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use crate::authenticate::IssuerConfig;

/// `[console]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// The OpenID provider people sign in with: the `issuer` of one of the `[[issuers]]`.
    pub issuer: String,
    /// The console's client id at the provider; the ID token's `aud`, so one of that issuer's `audiences`.
    pub client_id: String,
    /// Environment variable holding the client secret, for a confidential client (PKCE is used either way).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Where the provider sends people back: `<public_url>/ui/callback`, registered at the provider.
    pub redirect_url: String,
    /// The console's address as people's browsers reach it (links in webhooks; `https://` makes cookies Secure).
    pub public_url: String,
    /// How long a sign-in lasts (`8h`); at most 24h.
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime: String,
}

fn default_session_lifetime() -> String {
    "8h".into()
}

/// The longest session lifetime accepted.
const MAX_SESSION: Duration = Duration::from_secs(24 * 3600);

/// Validated `[console]`.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The issuer (one of the trusted `[[issuers]]`).
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret, if any.
    pub client_secret: Option<String>,
    /// The redirect URL.
    pub redirect_url: String,
    /// The public URL, without a trailing `/`.
    pub public_url: String,
    /// Session lifetime.
    pub session_lifetime: Duration,
}

impl ConsoleConfig {
    /// Whether the console is served over HTTPS (its cookies are then `Secure`).
    pub fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

fn http_url(v: &str) -> bool {
    (v.starts_with("http://") || v.starts_with("https://"))
        && v.split_once("://").is_some_and(|(_, rest)| {
            !rest.is_empty() && !rest.starts_with('/') && !rest.chars().any(char::is_whitespace)
        })
}

/// Validates `[console]` against the trusted `issuers`.
pub(crate) fn check(
    raw: Option<RawConsole>,
    issuers: &[IssuerConfig],
    p: &mut Problems<'_>,
) -> Option<ConsoleConfig> {
    let raw = raw?;
    match issuers.iter().find(|i| i.issuer == raw.issuer) {
        None => {
            let known: Vec<&str> = issuers.iter().map(|i| i.issuer.as_str()).collect();
            p.err(
                "console.issuer",
                format!(
                    "`{}` is not one of the [[issuers]] the data plane trusts ({}); the console signs people in \
                     only with a trusted issuer",
                    raw.issuer,
                    if known.is_empty() {
                        "none is configured".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        Some(i) if !i.audiences.contains(&raw.client_id) => p.err(
            "console.client_id",
            format!(
                "`{}` is not one of the audiences of issuer `{}` ({:?}); add it there, so that the ID tokens the \
                 console receives (whose `aud` is the client id) verify",
                raw.client_id, raw.issuer, i.audiences
            ),
        ),
        Some(_) => {}
    }
    if raw.client_id.trim().is_empty() {
        p.err("console.client_id", "must not be empty".into());
    }
    for (key, v) in [
        ("console.redirect_url", &raw.redirect_url),
        ("console.public_url", &raw.public_url),
    ] {
        if !http_url(v) {
            p.err(
                key,
                format!("`{v}` must be an http:// or https:// URL with a host"),
            );
        }
    }
    let public_url = raw.public_url.trim_end_matches('/').to_string();
    if http_url(&raw.redirect_url)
        && http_url(&raw.public_url)
        && raw.redirect_url != format!("{public_url}/ui/callback")
    {
        p.err(
            "console.redirect_url",
            format!(
                "`{}` must be `{public_url}/ui/callback` (the console's callback under `public_url`)",
                raw.redirect_url
            ),
        );
    }
    let client_secret = match &raw.client_secret_env {
        None => None,
        Some(v) => match std::env::var(v) {
            Ok(s) if !s.is_empty() => Some(s),
            _ => {
                p.err(
                    "console.client_secret_env",
                    format!("environment variable `{v}` is not set"),
                );
                None
            }
        },
    };
    let session_lifetime = p.duration("console.session_lifetime", &raw.session_lifetime);
    if session_lifetime < Duration::from_secs(60) || session_lifetime > MAX_SESSION {
        p.err(
            "console.session_lifetime",
            format!("`{}` must be from 1m to 24h", raw.session_lifetime),
        );
    }
    Some(ConsoleConfig {
        issuer: raw.issuer,
        client_id: raw.client_id,
        client_secret,
        redirect_url: raw.redirect_url,
        public_url,
        session_lifetime,
    })
}
