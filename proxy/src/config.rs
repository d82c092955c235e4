//! The proxy's TOML configuration: raw structs as written (unknown keys rejected), then a validated [`Config`] the
//! rest of the proxy can trust. Every problem is reported with its key path before start-up fails, not just the first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use jitgate_engine::diag::{Diagnostic, Diagnostics, parse_toml, read_file};
use serde::Deserialize;

use crate::authenticate::IssuerConfig;

/// `jitgate.toml` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The data-plane listener.
    #[serde(default)]
    pub server: RawServer,
    /// The admin listener (health, metrics, admin API).
    #[serde(default)]
    pub admin: RawAdmin,
    /// The policy bundle.
    #[serde(default)]
    pub bundle: RawBundle,
    /// Where grants and access requests live.
    #[serde(default)]
    pub store: RawStore,
    /// The decision log.
    #[serde(default)]
    pub log: RawLog,
    /// JWT issuers trusted for bearer tokens.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// jitgate's own issuer for short-lived grant-bound tokens.
    #[serde(default)]
    pub local_issuer: Option<RawLocalIssuer>,
    /// Upstream services by name (the `service` of bundle routes).
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Holding requests for approval.
    #[serde(default)]
    pub hold: RawHold,
    /// Webhooks notified of lifecycle events.
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

/// `[hold]`: how held requests wait for approval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHold {
    /// How long the connection waits for a verdict before answering 202 with the approval id.
    #[serde(default = "default_hold_wait")]
    pub wait: String,
    /// Largest body a held request may carry (it is buffered); larger is 413.
    #[serde(default = "default_hold_body")]
    pub max_body_bytes: u64,
    /// How long a held request may wait for a verdict, and an approval then stays usable for a resend.
    #[serde(default = "default_hold_ttl")]
    pub approval_ttl: String,
}

impl Default for RawHold {
    fn default() -> Self {
        RawHold {
            wait: default_hold_wait(),
            max_body_bytes: default_hold_body(),
            approval_ttl: default_hold_ttl(),
        }
    }
}

fn default_hold_wait() -> String {
    "30s".into()
}
fn default_hold_body() -> u64 {
    1024 * 1024
}
fn default_hold_ttl() -> String {
    "1h".into()
}

/// `[[webhooks]]`: where lifecycle events are POSTed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// The endpoint (http:// or https://).
    pub url: String,
    /// Environment variable holding the HMAC-SHA256 secret (signature header `x-jitgate-signature`).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// `json` (default) or `slack` (a Slack-compatible `{"text": ...}` body).
    #[serde(default = "default_webhook_format")]
    pub format: String,
    /// Attempts per event, the first included.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after each.
    #[serde(default = "default_webhook_backoff")]
    pub backoff: String,
    /// Per-attempt timeout.
    #[serde(default = "default_webhook_timeout")]
    pub timeout: String,
}

fn default_webhook_format() -> String {
    "json".into()
}
fn default_webhook_attempts() -> u32 {
    4
}
fn default_webhook_backoff() -> String {
    "500ms".into()
}
fn default_webhook_timeout() -> String {
    "5s".into()
}

/// Validated `[hold]`.
#[derive(Debug, Clone)]
pub struct HoldConfig {
    /// How long a held connection waits.
    pub wait: Duration,
    /// Largest buffered body.
    pub max_body_bytes: u64,
    /// Pending lifetime of a held request and life of its approval.
    pub approval_ttl: Duration,
}

/// Body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event as JSON.
    Json,
    /// `{"text": "..."}` for Slack-compatible receivers.
    Slack,
}

/// Validated `[[webhooks]]` entry.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The endpoint.
    pub url: String,
    /// The HMAC secret, if configured.
    pub secret: Option<Vec<u8>>,
    /// Body format.
    pub format: WebhookFormat,
    /// Attempts per event.
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

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
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener; empty disables it.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// HTTPS for the admin listener: its callers send bearer tokens and approve access.
    #[serde(default)]
    pub tls: Option<RawAdminTls>,
}

/// `[admin.tls]`: the admin listener's certificate (callers authenticate with bearer tokens, not certificates).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[bundle]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundle {
    /// The bundle directory.
    pub path: PathBuf,
    /// Reload on file changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// A candidate bundle decided beside the active one for every request (shadow evaluation); its decisions are
    /// compared, never served.
    #[serde(default)]
    pub shadow: Option<PathBuf>,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// SQLite file for grants and access requests.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// SQLite file for the decision log.
    #[serde(default = "default_log_path")]
    pub path: PathBuf,
    /// Benchmarking only: `false` turns the decision log off (no records, nothing to verify). Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Bounded queue size.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// `wait` or `fail_closed` when the queue is full.
    #[serde(default = "default_on_full")]
    pub on_full: String,
    /// When a response may leave: `commit` (its record is committed to SQLite) or `journal` (its record is in
    /// the acknowledgement journal; committed in batches right after, and at the next start after a crash).
    #[serde(default = "default_acknowledge")]
    pub acknowledge: String,
    /// Context fields masked before a record is written (`claims.email`, `headers.x-api-key`).
    #[serde(default)]
    pub redact: Vec<String>,
    /// Also write records as JSON Lines: `stdout` or a file path.
    #[serde(default)]
    pub jsonl: Option<String>,
    /// Automatic retention: records older than this duration (`365d`) are pruned, leaving a checkpoint. Absent:
    /// everything is kept.
    #[serde(default)]
    pub retain: Option<String>,
    /// How often retention runs (the first run is at start; default `1h`). Only with `retain`.
    #[serde(default)]
    pub prune_interval: Option<String>,
}

/// `[local_issuer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalIssuer {
    /// PKCS#8 PEM Ed25519 key; generated (0600) when missing.
    pub key_file: PathBuf,
    /// The `iss` of minted tokens.
    #[serde(default = "default_local_iss")]
    pub issuer: String,
    /// The `aud` of minted tokens.
    #[serde(default = "default_local_iss")]
    pub audience: String,
}

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

impl Default for RawServer {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| RawServer {
            listen: default_listen(),
            tls: None,
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
            header_timeout: default_header_timeout(),
            request_timeout: default_request_timeout(),
            shutdown_grace: default_shutdown_grace(),
            trusted_proxies: Vec::new(),
            trailing_slash: default_trailing_slash(),
            context_headers: Vec::new(),
        })
    }
}
impl Default for RawBundle {
    fn default() -> Self {
        RawBundle {
            path: PathBuf::from("policies/quickstart-cedar"),
            watch: true,
            shadow: None,
        }
    }
}
impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
            tls: None,
        }
    }
}
impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            path: default_store_path(),
        }
    }
}
impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            path: default_log_path(),
            enabled: true,
            queue_capacity: default_queue(),
            on_full: default_on_full(),
            acknowledge: default_acknowledge(),
            redact: Vec::new(),
            jsonl: None,
            retain: None,
            prune_interval: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
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
fn default_request_timeout() -> String {
    "60s".into()
}
fn default_shutdown_grace() -> String {
    "30s".into()
}
fn default_trailing_slash() -> String {
    "strip".into()
}
fn default_workload() -> String {
    "Workload".into()
}
fn default_true() -> bool {
    true
}
fn default_store_path() -> PathBuf {
    PathBuf::from(".jitgate/jitgate.db")
}
fn default_log_path() -> PathBuf {
    PathBuf::from(".jitgate/decisions.db")
}
fn default_queue() -> usize {
    10_000
}
fn default_on_full() -> String {
    "wait".into()
}
fn default_acknowledge() -> String {
    "commit".into()
}
fn default_local_iss() -> String {
    "jitgate".into()
}
fn default_connect_timeout() -> String {
    "2s".into()
}
fn default_upstream_timeout() -> String {
    "30s".into()
}

/// How often automatic retention runs when `[log] prune_interval` is not set.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// What to do when the decision log's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Hold the request until there is room.
    Wait,
    /// Refuse the request (503) before it reaches the upstream.
    FailClosed,
}

/// When a request's decision record counts as logged, so its response may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledge {
    /// Once the record's batch is committed to the SQLite file.
    Commit,
    /// Once the record is written to the acknowledgement journal next to the log (the batch commits after).
    Journal,
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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data-plane address.
    pub listen: SocketAddr,
    /// TLS, if any.
    pub tls: Option<TlsConfig>,
    /// Connection limit.
    pub max_connections: usize,
    /// Request head limit.
    pub max_header_bytes: usize,
    /// Body limit.
    pub max_body_bytes: u64,
    /// Head read timeout.
    pub header_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Shutdown drain deadline.
    pub shutdown_grace: Duration,
    /// Trusted proxy networks.
    pub trusted_proxies: Vec<IpNet>,
    /// Trailing slash policy.
    pub trailing_slash: TrailingSlash,
    /// Headers copied into the context.
    pub context_headers: Vec<String>,
    /// Admin address (None: disabled).
    pub admin_listen: Option<SocketAddr>,
    /// HTTPS for the admin listener (certificate and key only; no client certificates).
    pub admin_tls: Option<TlsConfig>,
    /// Bundle directory.
    pub bundle_path: PathBuf,
    /// Watch the bundle for changes.
    pub bundle_watch: bool,
    /// The shadow (candidate) bundle directory, if any.
    pub bundle_shadow: Option<PathBuf>,
    /// Store file.
    pub store_path: PathBuf,
    /// Decision log file.
    pub log_path: PathBuf,
    /// Whether decisions are logged (only a benchmark turns this off).
    pub log_enabled: bool,
    /// Log queue capacity.
    pub log_queue_capacity: usize,
    /// Full-queue behaviour.
    pub log_on_full: OnFull,
    /// When a record counts as logged.
    pub log_acknowledge: Acknowledge,
    /// Redacted context fields.
    pub log_redact: Vec<String>,
    /// JSON Lines sink.
    pub log_jsonl: Option<String>,
    /// Automatic retention: prune records older than this (None: keep everything).
    pub log_retain: Option<Duration>,
    /// How often automatic retention runs.
    pub log_prune_interval: Duration,
    /// Trusted issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Local issuer.
    pub local_issuer: Option<RawLocalIssuer>,
    /// Upstreams by service name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// `[hold]`.
    pub hold: HoldConfig,
    /// `[[webhooks]]`.
    pub webhooks: Vec<WebhookConfig>,
}

impl Config {
    /// Reads and validates a config file; relative paths inside are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        let source = read_file(path)?;
        let raw: RawConfig = parse_toml(path, &source)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::check(raw, base).map_err(|errs| {
            Diagnostics(
                errs.into_iter()
                    .map(|(key, msg)| Diagnostic::at_toml_key(path, &source, &key, msg))
                    .collect(),
            )
        })
    }

    /// Validates raw settings. `file` names the source in errors; `base` resolves relative paths. Without the
    /// file's text the errors name the key but not the line; [`Config::load`] gives both.
    pub fn validate(raw: RawConfig, file: &Path, base: &Path) -> Result<Config, Diagnostics> {
        Config::check(raw, base).map_err(|errs| {
            Diagnostics(
                errs.into_iter()
                    .map(|(_, msg)| Diagnostic::file(file, msg))
                    .collect(),
            )
        })
    }

    /// The checks behind [`Config::validate`]: every problem as its key path and its message (which starts with
    /// the key path).
    fn check(raw: RawConfig, base: &Path) -> Result<Config, Vec<(String, String)>> {
        let mut errs: Vec<(String, String)> = Vec::new();
        let mut err =
            |key: &str, msg: String| errs.push((key.to_string(), format!("{key}: {msg}")));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let dur = |key: &str, v: &str, err: &mut dyn FnMut(&str, String)| {
            match humantime::parse_duration(v) {
                Ok(d) => d,
                Err(e) => {
                    err(key, format!("`{v}` is not a duration: {e}"));
                    Duration::ZERO
                }
            }
        };

        let listen = raw.server.listen.parse().unwrap_or_else(|e| {
            err(
                "server.listen",
                format!("`{}` is not an address: {e}", raw.server.listen),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let admin_listen = if raw.admin.listen.is_empty() {
            None
        } else {
            match raw.admin.listen.parse() {
                Ok(a) => Some(a),
                Err(e) => {
                    err(
                        "admin.listen",
                        format!("`{}` is not an address: {e}", raw.admin.listen),
                    );
                    None
                }
            }
        };
        // A timeout of 0s would end every request (or connection) at once: refused rather than read as "off".
        let timeout = |key: &str, v: &str, err: &mut dyn FnMut(&str, String)| {
            let d = dur(key, v, err);
            if d.is_zero() && humantime::parse_duration(v).is_ok() {
                err(
                    key,
                    format!(
                        "`{v}` must be longer than 0s (a zero timeout would fail every request)"
                    ),
                );
            }
            d
        };
        let header_timeout = timeout(
            "server.header_timeout",
            &raw.server.header_timeout,
            &mut err,
        );
        let request_timeout = timeout(
            "server.request_timeout",
            &raw.server.request_timeout,
            &mut err,
        );
        for (i, name) in raw.server.context_headers.iter().enumerate() {
            if let Err(why) = context_header_name(name) {
                err(&format!("server.context_headers[{i}]"), why);
            }
        }
        let shutdown_grace = dur(
            "server.shutdown_grace",
            &raw.server.shutdown_grace,
            &mut err,
        );
        let mut trusted_proxies = Vec::new();
        for (i, p) in raw.server.trusted_proxies.iter().enumerate() {
            match p
                .parse::<IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
            {
                Ok(n) => trusted_proxies.push(n),
                Err(_) => err(
                    &format!("server.trusted_proxies[{i}]"),
                    format!("`{p}` is not an IP or CIDR"),
                ),
            }
        }
        let trailing_slash = match raw.server.trailing_slash.as_str() {
            "strip" => TrailingSlash::Strip,
            "keep" => TrailingSlash::Keep,
            other => {
                err(
                    "server.trailing_slash",
                    format!("`{other}` must be `strip` or `keep`"),
                );
                TrailingSlash::Strip
            }
        };
        if raw.server.max_connections == 0 {
            err("server.max_connections", "must be at least 1".into());
        }
        let tls = raw.server.tls.map(|t| {
            if t.require_client_cert && t.client_ca.is_none() {
                err("server.tls.require_client_cert", "needs `client_ca`".into());
            }
            for (k, p) in [
                ("server.tls.cert", Some(&t.cert)),
                ("server.tls.key", Some(&t.key)),
                ("server.tls.client_ca", t.client_ca.as_ref()),
            ] {
                if let Some(p) = p {
                    if !resolve(p).is_file() {
                        err(k, format!("`{}` does not exist", resolve(p).display()));
                    }
                }
            }
            TlsConfig {
                cert: resolve(&t.cert),
                key: resolve(&t.key),
                client_ca: t.client_ca.as_deref().map(resolve),
                require_client_cert: t.require_client_cert,
                client_principal_type: t.client_principal_type,
                workload_groups: t.workload_groups,
            }
        });
        if admin_listen.is_none() && raw.admin.tls.is_some() {
            err(
                "admin.tls",
                "the admin listener is disabled (`admin.listen = \"\"`)".into(),
            );
        }
        let admin_tls = raw.admin.tls.map(|t| {
            for (k, p) in [("admin.tls.cert", &t.cert), ("admin.tls.key", &t.key)] {
                if !resolve(p).is_file() {
                    err(k, format!("`{}` does not exist", resolve(p).display()));
                }
            }
            TlsConfig {
                cert: resolve(&t.cert),
                key: resolve(&t.key),
                client_ca: None,
                require_client_cert: false,
                client_principal_type: default_workload(),
                workload_groups: BTreeMap::new(),
            }
        });
        let log_on_full = match raw.log.on_full.as_str() {
            "wait" => OnFull::Wait,
            "fail_closed" => OnFull::FailClosed,
            other => {
                err(
                    "log.on_full",
                    format!("`{other}` must be `wait` or `fail_closed`"),
                );
                OnFull::Wait
            }
        };
        let log_acknowledge = match raw.log.acknowledge.as_str() {
            "commit" => Acknowledge::Commit,
            "journal" => Acknowledge::Journal,
            other => {
                err(
                    "log.acknowledge",
                    format!("`{other}` must be `commit` or `journal`"),
                );
                Acknowledge::Commit
            }
        };
        if raw.log.queue_capacity == 0 {
            err("log.queue_capacity", "must be at least 1".into());
        }
        // Retention: both at least a second (a shorter interval would re-verify the whole chain back to back).
        let mut at_least_1s = |key: &str, v: &str| match humantime::parse_duration(v) {
            Ok(d) if d >= Duration::from_secs(1) => Some(d),
            Ok(_) => {
                err(key, format!("`{v}` must be at least 1s"));
                None
            }
            Err(e) => {
                err(key, format!("`{v}` is not a duration: {e}"));
                None
            }
        };
        let log_retain = raw
            .log
            .retain
            .as_deref()
            .and_then(|v| at_least_1s("log.retain", v));
        let log_prune_interval = match raw.log.prune_interval.as_deref() {
            None => Some(DEFAULT_PRUNE_INTERVAL),
            Some(v) => at_least_1s("log.prune_interval", v),
        }
        .unwrap_or(DEFAULT_PRUNE_INTERVAL);
        if raw.log.prune_interval.is_some() && raw.log.retain.is_none() {
            err("log.prune_interval", "needs `log.retain`".into());
        }
        if let Err(problems) = crate::authenticate::validate_issuers(&raw.issuers) {
            for p in problems {
                err(&p.path, p.message);
            }
        }
        // Client certificates name principals too: their type must not be an issuer's, or a SAN `alice` would be
        // the issuer's alice.
        if let Some(t) = tls.as_ref().filter(|t| t.client_ca.is_some()) {
            if let Some((i, _)) = raw
                .issuers
                .iter()
                .enumerate()
                .find(|(_, c)| c.principal_type == t.client_principal_type)
            {
                err(
                    "server.tls.client_principal_type",
                    format!(
                        "`{}` is also the principal type of issuers[{i}]: a certificate's SAN would be that issuer's \
                         principal of the same id; give certificates their own type (the default is `Workload`)",
                        t.client_principal_type
                    ),
                );
            }
        }
        let mut upstreams = BTreeMap::new();
        for (name, u) in &raw.upstreams {
            let key = format!("upstreams.{name}");
            let uri: Result<http::Uri, _> = u.url.parse();
            let (base_uri, prefix) = match uri {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http")) && uri.authority().is_some() =>
                {
                    let prefix = uri.path().trim_end_matches('/').to_string();
                    let base = http::Uri::builder()
                        .scheme("http")
                        .authority(uri.authority().map(|a| a.as_str()).unwrap_or_default())
                        .path_and_query("/")
                        .build();
                    match base {
                        Ok(b) => (b, prefix),
                        Err(e) => {
                            err(&format!("{key}.url"), e.to_string());
                            continue;
                        }
                    }
                }
                Ok(_) => {
                    err(
                        &format!("{key}.url"),
                        format!("`{}` must be an http:// URL with a host", u.url),
                    );
                    continue;
                }
                Err(e) => {
                    err(&format!("{key}.url"), format!("`{}`: {e}", u.url));
                    continue;
                }
            };
            let credential = match &u.credential {
                None => None,
                Some(c) => {
                    let value = match (&c.value_env, &c.value_file) {
                        (Some(v), None) => std::env::var(v)
                            .map_err(|_| format!("environment variable `{v}` is not set")),
                        (None, Some(f)) => std::fs::read_to_string(resolve(f))
                            .map(|s| s.trim_end().to_string())
                            .map_err(|e| format!("cannot read `{}`: {e}", resolve(f).display())),
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
                            err(&format!("{key}.credential"), e);
                            None
                        }
                    }
                }
            };
            let connect_timeout = timeout(
                &format!("{key}.connect_timeout"),
                &u.connect_timeout,
                &mut err,
            );
            let timeout = timeout(&format!("{key}.timeout"), &u.timeout, &mut err);
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
        let hold = HoldConfig {
            wait: dur("hold.wait", &raw.hold.wait, &mut err),
            max_body_bytes: raw.hold.max_body_bytes,
            approval_ttl: dur("hold.approval_ttl", &raw.hold.approval_ttl, &mut err),
        };
        if hold.approval_ttl.as_secs() == 0 {
            err("hold.approval_ttl", "must be at least 1s".into());
        }
        if !request_timeout.is_zero() && hold.wait >= request_timeout {
            err(
                "hold.wait",
                format!(
                    "`{}` must be shorter than server.request_timeout (`{}`): a held request would end in 504 before \
                     its caller is given the approval id to resend with",
                    raw.hold.wait, raw.server.request_timeout
                ),
            );
        }
        let mut webhooks = Vec::new();
        for (i, w) in raw.webhooks.iter().enumerate() {
            let key = format!("webhooks[{i}]");
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                err(
                    &format!("{key}.url"),
                    format!("`{}` must be an http:// or https:// URL", w.url),
                );
            }
            let format = match w.format.as_str() {
                "json" => WebhookFormat::Json,
                "slack" => WebhookFormat::Slack,
                other => {
                    err(
                        &format!("{key}.format"),
                        format!("`{other}` must be `json` or `slack`"),
                    );
                    WebhookFormat::Json
                }
            };
            let secret = match &w.secret_env {
                None => None,
                Some(v) => match std::env::var(v) {
                    Ok(s) if !s.is_empty() => Some(s.into_bytes()),
                    _ => {
                        err(
                            &format!("{key}.secret_env"),
                            format!("environment variable `{v}` is not set"),
                        );
                        None
                    }
                },
            };
            if w.max_attempts == 0 {
                err(&format!("{key}.max_attempts"), "must be at least 1".into());
            }
            webhooks.push(WebhookConfig {
                url: w.url.clone(),
                secret,
                format,
                max_attempts: w.max_attempts,
                backoff: dur(&format!("{key}.backoff"), &w.backoff, &mut err),
                timeout: dur(&format!("{key}.timeout"), &w.timeout, &mut err),
            });
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Config {
            hold,
            webhooks,
            listen,
            tls,
            max_connections: raw.server.max_connections,
            max_header_bytes: raw.server.max_header_bytes,
            max_body_bytes: raw.server.max_body_bytes,
            header_timeout,
            request_timeout,
            shutdown_grace,
            trusted_proxies,
            trailing_slash,
            context_headers: raw
                .server
                .context_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            admin_listen,
            admin_tls,
            bundle_path: resolve(&raw.bundle.path),
            bundle_watch: raw.bundle.watch,
            bundle_shadow: raw.bundle.shadow.as_deref().map(&resolve),
            store_path: resolve(&raw.store.path),
            log_path: resolve(&raw.log.path),
            log_enabled: raw.log.enabled,
            log_queue_capacity: raw.log.queue_capacity,
            log_on_full,
            log_acknowledge,
            log_redact: raw.log.redact,
            log_jsonl: raw.log.jsonl,
            log_retain,
            log_prune_interval,
            issuers: raw.issuers,
            local_issuer: raw.local_issuer.map(|mut l| {
                l.key_file = resolve(&l.key_file);
                l
            }),
            upstreams,
        })
    }
}

/// Why a `server.context_headers` entry cannot be given to the policies: the policies must see what the upstream
/// gets, and for these names the upstream gets jitgate's value (or nothing) instead of the client's.
fn context_header_name(name: &str) -> Result<(), String> {
    let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
        return Err(format!("`{name}` is not a header name"));
    };
    if crate::forward::is_claimed(header.as_str(), None) {
        return Err(format!(
            "`{name}` is set or removed by jitgate before forwarding, so the policies would decide on what the \
             client claimed (use `context.source_ip`, `context.host` or the token's claims instead)"
        ));
    }
    if header == http::header::HOST
        || crate::forward::is_hop_by_hop(&http::HeaderMap::new(), &header)
    {
        return Err(format!(
            "`{name}` never reaches the upstream as the client sent it (use `context.host` for the host)"
        ));
    }
    Ok(())
}
