//! The proxy's TOML configuration: raw structs as written (unknown keys rejected), then a validated [`Config`] the
//! rest of the proxy can trust. Each section is a module that validates its part; every problem is reported with
//! its key path before start-up fails, not just the first.

mod admin;
mod bundle;
mod console;
mod hold;
mod issuers;
mod log;
mod problems;
mod server;
mod telemetry;
mod upstreams;
mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use jitgate_engine::diag::{Diagnostic, Diagnostics, read_file};
use serde::Deserialize;

pub use admin::{RawAdmin, RawAdminTls};
pub use bundle::{RawBundle, RawStore};
pub use console::{ConsoleConfig, RawConsole};

pub use hold::{HoldConfig, RawHold};
pub use issuers::RawLocalIssuer;
pub use log::{
    Acknowledge, AnchorConfig, DEFAULT_ANCHOR_INTERVAL, DEFAULT_ANCHOR_RECORDS,
    DEFAULT_PRUNE_INTERVAL, OnFull, RawLog,
};
pub use server::{RawServer, RawTls, TlsConfig, TrailingSlash};
pub use telemetry::{RawTelemetry, TelemetryConfig};
pub use upstreams::{RawCredential, RawUpstream, Upstream};
pub use webhooks::{RawWebhook, WebhookConfig, WebhookFormat};

use crate::authenticate::IssuerConfig;
use problems::Problems;

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
    /// The log format.
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// This process among several replicas.
    #[serde(default)]
    pub cluster: RawCluster,
    /// The approver console's sign-in.
    #[serde(default)]
    pub console: Option<RawConsole>,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// This replica's id, in start-up logs and decision records (default: the host name).
    #[serde(default)]
    pub replica: Option<String>,
}

/// The host name, or `jitgate` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "jitgate".to_string())
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
    /// Close connections (both listeners) with no request in flight for this long.
    pub idle_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Shutdown drain deadline.
    pub shutdown_grace: Duration,
    /// Trusted proxy networks.
    pub trusted_proxies: Vec<IpNet>,
    /// Trailing slash policy.
    pub trailing_slash: TrailingSlash,
    /// Whether paths with a double-encoded `.`, `/`, `\` or NUL (`%252e`) are passed on (default: refused).
    pub allow_double_encoding: bool,
    /// Headers copied into the context.
    pub context_headers: Vec<String>,
    /// Admin address (None: disabled).
    pub admin_listen: Option<SocketAddr>,
    /// Connection limit of the admin listener.
    pub admin_max_connections: usize,
    /// Head read timeout of the admin listener.
    pub admin_header_timeout: Duration,
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
    /// `[store] max_pending_per_principal`: pending access requests one principal may have at once.
    pub max_pending_per_principal: u32,
    /// `[store] url`: a PostgreSQL store shared by replicas (None: the SQLite file `store_path`).
    pub store_url: Option<String>,
    /// `[store] max_staleness`: silence from the shared store beyond which decisions resting on grants are denied.
    pub store_max_staleness: Duration,
    /// `[store] resync_every`: full reloads of the grant index from the shared store.
    pub store_resync_every: Duration,
    /// `[cluster] replica`: this replica's id (default: the host name).
    pub replica: String,
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
    /// Query parameters whose values are masked in records, hold reasons and logs.
    pub log_redact_query: Vec<String>,
    /// JSON Lines sink.
    pub log_jsonl: Option<String>,
    /// Automatic retention: prune records older than this (None: keep everything).
    pub log_retain: Option<Duration>,
    /// How often automatic retention runs.
    pub log_prune_interval: Duration,
    /// Signed anchors of the decision log (`[log] anchor_key`; None: off).
    pub log_anchor: Option<AnchorConfig>,
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
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[console]`: the approver console's OpenID Connect sign-in (None: only a development sign-in, if any).
    pub console: Option<ConsoleConfig>,
    /// The people the console's development sign-in offers, with their groups. Never read from a config file:
    /// only the embedded quickstart sets it (empty everywhere else, so no configured `serve` can turn it on).
    pub console_dev_users: Vec<(String, Vec<String>)>,
}

/// The most unknown keys reported from one file: past that, the file is surely not a jitgate config.
const MAX_UNKNOWN_KEYS: usize = 64;

/// Parses the config, reporting every unknown key at once (each with its line), not one per run: the parser stops
/// at the first, so each `key = value` line it names is blanked out (same length: the lines and columns of the rest
/// stay true) and the text parsed again. Any other error is reported when it comes first; after unknown keys it
/// waits for the next run, since a blanked line could be its cause.
fn parse_all_unknown_keys(path: &Path, source: &str) -> Result<RawConfig, Diagnostics> {
    let mut text = source.as_bytes().to_vec();
    let mut unknown = Vec::new();
    while unknown.len() < MAX_UNKNOWN_KEYS {
        let Ok(current) = std::str::from_utf8(&text) else {
            break;
        };
        let e = match toml::from_str::<RawConfig>(current) {
            Ok(raw) if unknown.is_empty() => return Ok(raw),
            Ok(_) => break,
            Err(e) => e,
        };
        let message = e.message().to_string();
        let Some(span) = e.span() else {
            return Err(if unknown.is_empty() {
                Diagnostics(vec![Diagnostic::file(path, message)])
            } else {
                Diagnostics(unknown)
            });
        };
        if !message.starts_with("unknown field") {
            if unknown.is_empty() {
                unknown.push(Diagnostic::at_offset(path, source, span.start, message));
            }
            break;
        }
        unknown.push(Diagnostic::at_offset(path, source, span.start, message));
        // Blank the line of the key, unless it opens a table (its keys would then land in the previous one).
        let start = text[..span.start.min(text.len())]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let end = text[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |i| start + i);
        let line = &text[start..end];
        let opens_table = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let multiline = (line.contains(&b'[') && !line.contains(&b']'))
            || line.windows(3).any(|w| w == b"\"\"\"" || w == b"'''")
            || (line.contains(&b'{') && !line.contains(&b'}'));
        if opens_table || multiline {
            break;
        }
        for (i, b) in text[start..end].iter_mut().enumerate() {
            *b = if i == 0 { b'#' } else { b' ' };
        }
    }
    Err(Diagnostics(unknown))
}

impl Config {
    /// Reads and validates a config file; relative paths inside are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        let source = read_file(path)?;
        Config::parse(path, &source)
    }

    /// Parses and validates `source`, the text of the config file at `path` (which names it in errors and whose
    /// directory relative paths are resolved against), as [`Config::load`] does once it has read the file.
    pub fn parse(path: &Path, source: &str) -> Result<Config, Diagnostics> {
        let raw = parse_all_unknown_keys(path, source)?;
        let base = path.parent().unwrap_or(Path::new("."));
        // `path` written out at its default value beside `url`: the checks below cannot tell it from unset.
        let both = toml::from_str::<toml::Table>(source).ok().is_some_and(|t| {
            t.get("store")
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key("path") && s.contains_key("url"))
        });
        let checked = match Config::check(raw, base) {
            Ok(_) if both => Err(Vec::new()),
            other => other,
        };
        checked.map_err(|mut errs| {
            let exclusive =
                "store.url: `url` (PostgreSQL) and `path` (SQLite) are exclusive: set one";
            if both && !errs.iter().any(|(_, m)| m == exclusive) {
                errs.push(("store.url".into(), exclusive.into()));
            }
            Diagnostics(
                errs.into_iter()
                    .map(|(key, msg)| Diagnostic::at_toml_key(path, source, &key, msg))
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

    /// The checks behind [`Config::validate`], section by section: every problem as its key path and its message
    /// (which starts with the key path).
    fn check(raw: RawConfig, base: &Path) -> Result<Config, Vec<(String, String)>> {
        let mut p = Problems::new(base);
        let raw_request_timeout = raw.server.request_timeout.clone();
        let server = server::check(raw.server, &mut p);
        let admin = admin::check(raw.admin, server.header_timeout, &mut p);
        // `[log] replica` (named anchors before `[cluster] replica` existed) is a deprecated alias of it.
        let log_replica = raw.log.replica.clone();
        let mut log = log::check(raw.log, &mut p);
        issuers::check(&raw.issuers, server.tls.as_ref(), &mut p);
        let upstreams = upstreams::check(&raw.upstreams, &mut p);
        let hold = hold::check(
            raw.hold,
            server.request_timeout,
            &raw_request_timeout,
            &mut p,
        );
        let webhooks = webhooks::check(&raw.webhooks, &mut p);
        let console = console::check(raw.console, &raw.issuers, &mut p);
        let telemetry = telemetry::check(raw.telemetry, &mut p);
        let files = bundle::check(raw.bundle, raw.store, &mut p);
        let (key, named) = match (raw.cluster.replica, log_replica) {
            (Some(c), Some(l)) if c != l => {
                p.err(
                    "cluster.replica",
                    format!(
                        "`{c}`, but the deprecated `[log] replica` says `{l}`: one replica has one id; set \
                         `[cluster] replica` only"
                    ),
                );
                ("cluster.replica", Some(c))
            }
            (Some(c), _) => ("cluster.replica", Some(c)),
            (None, Some(l)) => ("log.replica", Some(l)),
            (None, None) => ("cluster.replica", None),
        };
        let replica = match named {
            Some(r) if r.trim().is_empty() || r.chars().any(char::is_control) => {
                p.err(
                    key,
                    "must be a non-empty name without control characters".into(),
                );
                r
            }
            Some(r) => r,
            None => host_name(),
        };
        // Anchors name the replica whose chain they sign: the same id the shipped records carry.
        if let Some(a) = log.anchor.as_mut() {
            a.replica.clone_from(&replica);
        }
        let local_issuer = issuers::local_issuer(raw.local_issuer, &p);
        if !p.errs.is_empty() {
            return Err(p.errs);
        }
        Ok(Config {
            hold,
            webhooks,
            console,
            console_dev_users: Vec::new(),
            telemetry,
            listen: server.listen,
            tls: server.tls,
            max_connections: server.max_connections,
            max_header_bytes: server.max_header_bytes,
            max_body_bytes: server.max_body_bytes,
            header_timeout: server.header_timeout,
            idle_timeout: server.idle_timeout,
            request_timeout: server.request_timeout,
            shutdown_grace: server.shutdown_grace,
            trusted_proxies: server.trusted_proxies,
            trailing_slash: server.trailing_slash,
            allow_double_encoding: server.allow_double_encoding,
            context_headers: server.context_headers,
            admin_listen: admin.listen,
            admin_max_connections: admin.max_connections,
            admin_header_timeout: admin.header_timeout,
            admin_tls: admin.tls,
            bundle_path: files.bundle_path,
            bundle_watch: files.bundle_watch,
            bundle_shadow: files.bundle_shadow,
            store_path: files.store_path,
            max_pending_per_principal: files.max_pending_per_principal,
            store_url: files.store_url,
            store_max_staleness: files.max_staleness,
            store_resync_every: files.resync_every,
            replica,
            log_path: log.path,
            log_enabled: log.enabled,
            log_queue_capacity: log.queue_capacity,
            log_on_full: log.on_full,
            log_acknowledge: log.acknowledge,
            log_redact: log.redact,
            log_redact_query: log.redact_query,
            log_jsonl: log.jsonl,
            log_retain: log.retain,
            log_prune_interval: log.prune_interval,
            log_anchor: log.anchor,
            issuers: raw.issuers,
            local_issuer,
            upstreams,
        })
    }
}
