//! `[upstreams.<name>]`: the services routes forward to, with their timeouts and injected credentials.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;

/// `[upstreams.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URL, e.g. `http://127.0.0.1:9000` (a path prefix is allowed).
    pub url: String,
    /// TCP connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Time to the upstream's response head.
    #[serde(default = "default_upstream_timeout")]
    pub timeout: String,
    /// A credential injected on every forwarded request.
    #[serde(default)]
    pub credential: Option<RawCredential>,
}

/// `[upstreams.<name>.credential]`: the header is set from an env var or a file, never from the caller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// Header name, e.g. `authorization`.
    pub header: String,
    /// Environment variable holding the value.
    #[serde(default)]
    pub value_env: Option<String>,
    /// File holding the value (trailing newline trimmed).
    #[serde(default)]
    pub value_file: Option<PathBuf>,
    /// Prefix such as `Bearer `.
    #[serde(default)]
    pub prefix: String,
}

fn default_connect_timeout() -> String {
    "2s".into()
}
fn default_upstream_timeout() -> String {
    "30s".into()
}

/// An upstream, validated.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Scheme + authority, e.g. `http://127.0.0.1:9000`.
    pub base: http::Uri,
    /// Path prefix prepended to forwarded paths ("" when none).
    pub prefix: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response-head timeout.
    pub timeout: Duration,
    /// Injected credential: header name and full value.
    pub credential: Option<(http::HeaderName, http::HeaderValue)>,
}

/// Validates `[upstreams]`.
pub(crate) fn check(
    raw: &BTreeMap<String, RawUpstream>,
    p: &mut Problems<'_>,
) -> BTreeMap<String, Upstream> {
    let mut upstreams = BTreeMap::new();
    for (name, u) in raw {
        let key = format!("upstreams.{name}");
        let uri: Result<http::Uri, _> = u.url.parse();
        let (base_uri, prefix) = match uri {
            Ok(uri) if matches!(uri.scheme_str(), Some("http")) && uri.authority().is_some() => {
                let prefix = uri.path().trim_end_matches('/').to_string();
                let base = http::Uri::builder()
                    .scheme("http")
                    .authority(uri.authority().map(|a| a.as_str()).unwrap_or_default())
                    .path_and_query("/")
                    .build();
                match base {
                    Ok(b) => (b, prefix),
                    Err(e) => {
                        p.err(&format!("{key}.url"), e.to_string());
                        continue;
                    }
                }
            }
            Ok(_) => {
                p.err(
                    &format!("{key}.url"),
                    format!("`{}` must be an http:// URL with a host", u.url),
                );
                continue;
            }
            Err(e) => {
                p.err(&format!("{key}.url"), format!("`{}`: {e}", u.url));
                continue;
            }
        };
        let credential = match &u.credential {
            None => None,
            Some(c) => {
                let value = match (&c.value_env, &c.value_file) {
                    (Some(v), None) => std::env::var(v)
                        .map_err(|_| format!("environment variable `{v}` is not set")),
                    (None, Some(f)) => std::fs::read_to_string(p.resolve(f))
                        .map(|s| s.trim_end().to_string())
                        .map_err(|e| format!("cannot read `{}`: {e}", p.resolve(f).display())),
                    _ => Err("set exactly one of `value_env` and `value_file`".to_string()),
                };
                match value.and_then(|v| {
                    let name =
                        http::HeaderName::from_bytes(c.header.to_ascii_lowercase().as_bytes())
                            .map_err(|e| format!("header `{}`: {e}", c.header))?;
                    let val = http::HeaderValue::from_str(&format!("{}{v}", c.prefix))
                        .map_err(|e| format!("value: {e}"))?;
                    Ok((name, val))
                }) {
                    Ok(pair) => Some(pair),
                    Err(e) => {
                        p.err(&format!("{key}.credential"), e);
                        None
                    }
                }
            }
        };
        let connect_timeout = p.timeout(&format!("{key}.connect_timeout"), &u.connect_timeout);
        let timeout = p.timeout(&format!("{key}.timeout"), &u.timeout);
        upstreams.insert(
            name.clone(),
            Upstream {
                base: base_uri,
                prefix,
                connect_timeout,
                timeout,
                credential,
            },
        );
    }
    upstreams
}
