//! `[server]`: the data-plane listener (address, limits, timeouts, trusted proxies, TLS, context headers).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::problems::Problems;

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// TLS settings; plain HTTP (h1 and h2c) when absent.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// Most concurrent connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request head (bytes).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body (bytes).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Time to receive the request head (slow clients).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    /// A connection (HTTP/1.1 keep-alive or HTTP/2) with no request in flight for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// Longest a whole request may take, upstream included.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
    /// How long SIGTERM waits for in-flight requests.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: String,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `strip` (default) or `keep` a trailing slash.
    #[serde(default = "default_trailing_slash")]
    pub trailing_slash: String,
    /// Request headers copied into the decision context (lower-case names).
    #[serde(default)]
    pub context_headers: Vec<String>,
    /// Pass on paths with a double-encoded `.`, `/`, `\` or NUL (`%252e`); refused with 400 unless true.
    #[serde(default)]
    pub allow_double_encoding: bool,
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates (enables mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse connections without a client certificate (only with `client_ca`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// Entity type of principals from client certificates.
    #[serde(default = "default_workload")]
    pub client_principal_type: String,
    /// Groups of certificate principals, by principal id (a certificate carries no groups of its own).
    #[serde(default)]
    pub workload_groups: BTreeMap<String, Vec<String>>,
    /// A SPIFFE trust domain (`example.org`): when set, a client certificate names its principal only by its one
    /// URI SAN, which must be a SPIFFE ID `spiffe://<trust domain>/<path>`; any other certificate's requests are
    /// refused (401). Unset: the first URI SAN, else DNS SAN, else email SAN, else the subject CN names it.
    #[serde(default)]
    pub spiffe_trust_domain: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| RawServer {
            listen: default_listen(),
            tls: None,
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            request_timeout: default_request_timeout(),
            shutdown_grace: default_shutdown_grace(),
            trusted_proxies: Vec::new(),
            trailing_slash: default_trailing_slash(),
            context_headers: Vec::new(),
            allow_double_encoding: false,
        })
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_header_timeout() -> String {
    "10s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_request_timeout() -> String {
    "60s".into()
}
fn default_shutdown_grace() -> String {
    "30s".into()
}
fn default_trailing_slash() -> String {
    "strip".into()
}
/// The entity type of certificate principals unless configured.
pub(crate) fn default_workload() -> String {
    "Workload".into()
}

/// Whether `domain` is a SPIFFE trust domain name: lower-case letters, digits, `.`, `-` and `_`, not empty.
fn valid_trust_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

/// Trailing slash handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailingSlash {
    /// `/a/` becomes `/a`.
    Strip,
    /// `/a/` stays `/a/`.
    Keep,
}

/// TLS settings, validated.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    /// Client CA (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is mandatory.
    pub require_client_cert: bool,
    /// Principal type for certificate identities.
    pub client_principal_type: String,
    /// Groups of certificate principals.
    pub workload_groups: BTreeMap<String, Vec<String>>,
    /// The SPIFFE trust domain client certificates must name their principal in, if set.
    pub spiffe_trust_domain: Option<String>,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) listen: SocketAddr,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) max_connections: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_body_bytes: u64,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) trailing_slash: TrailingSlash,
    pub(crate) context_headers: Vec<String>,
    pub(crate) allow_double_encoding: bool,
}

/// Validates `[server]`.
pub(crate) fn check(raw: RawServer, p: &mut Problems<'_>) -> Server {
    let listen = raw.listen.parse().unwrap_or_else(|e| {
        p.err(
            "server.listen",
            format!("`{}` is not an address: {e}", raw.listen),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let header_timeout = p.timeout("server.header_timeout", &raw.header_timeout);
    let request_timeout = p.timeout("server.request_timeout", &raw.request_timeout);
    let idle_timeout = p.timeout("server.idle_timeout", &raw.idle_timeout);
    for (i, name) in raw.context_headers.iter().enumerate() {
        if let Err(why) = context_header_name(name) {
            p.err(&format!("server.context_headers[{i}]"), why);
        }
    }
    let shutdown_grace = p.duration("server.shutdown_grace", &raw.shutdown_grace);
    let mut trusted_proxies = Vec::new();
    for (i, t) in raw.trusted_proxies.iter().enumerate() {
        match t
            .parse::<IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => p.err(
                &format!("server.trusted_proxies[{i}]"),
                format!("`{t}` is not an IP or CIDR"),
            ),
        }
    }
    let trailing_slash = match raw.trailing_slash.as_str() {
        "strip" => TrailingSlash::Strip,
        "keep" => TrailingSlash::Keep,
        other => {
            p.err(
                "server.trailing_slash",
                format!("`{other}` must be `strip` or `keep`"),
            );
            TrailingSlash::Strip
        }
    };
    if raw.max_connections == 0 {
        p.err("server.max_connections", "must be at least 1".into());
    }
    let tls = raw.tls.map(|t| {
        if t.require_client_cert && t.client_ca.is_none() {
            p.err("server.tls.require_client_cert", "needs `client_ca`".into());
        }
        if let Some(domain) = &t.spiffe_trust_domain {
            if t.client_ca.is_none() {
                p.err(
                    "server.tls.spiffe_trust_domain",
                    "needs `client_ca` (it applies to client certificates)".into(),
                );
            }
            if !valid_trust_domain(domain) {
                p.err(
                    "server.tls.spiffe_trust_domain",
                    format!(
                        "`{domain}` is not a trust domain name (lower-case letters, digits, `.`, `-`, `_`; no \
                         scheme, port or path)"
                    ),
                );
            }
        }
        TlsConfig {
            cert: p.existing_file("server.tls.cert", &t.cert),
            key: p.existing_file("server.tls.key", &t.key),
            client_ca: t
                .client_ca
                .as_deref()
                .map(|c| p.existing_file("server.tls.client_ca", c)),
            require_client_cert: t.require_client_cert,
            client_principal_type: t.client_principal_type,
            workload_groups: t.workload_groups,
            spiffe_trust_domain: t.spiffe_trust_domain,
        }
    });
    Server {
        listen,
        tls,
        max_connections: raw.max_connections,
        max_header_bytes: raw.max_header_bytes,
        max_body_bytes: raw.max_body_bytes,
        header_timeout,
        idle_timeout,
        request_timeout,
        shutdown_grace,
        trusted_proxies,
        trailing_slash,
        allow_double_encoding: raw.allow_double_encoding,
        context_headers: raw
            .context_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    }
}

/// Why a `server.context_headers` entry cannot be given to the policies: the policies must see what the upstream
/// gets, and for these names the upstream gets jitgate's value (or nothing) instead of the client's.
fn context_header_name(name: &str) -> Result<(), String> {
    let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
        return Err(format!("`{name}` is not a header name"));
    };
    if crate::headers::is_claimed(header.as_str(), None) {
        return Err(format!(
            "`{name}` is set or removed by jitgate before forwarding, so the policies would decide on what the \
             client claimed (use `context.source_ip`, `context.host` or the token's claims instead)"
        ));
    }
    if header == http::header::HOST
        || crate::headers::is_hop_by_hop(&http::HeaderMap::new(), &header)
    {
        return Err(format!(
            "`{name}` never reaches the upstream as the client sent it (use `context.host` for the host)"
        ));
    }
    Ok(())
}
