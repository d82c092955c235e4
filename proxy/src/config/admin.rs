//! `[admin]`: the admin listener (health, metrics, admin API) and its HTTPS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::server::{TlsConfig, default_workload};

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener; empty disables it.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Most concurrent admin connections, apart from the data plane's `server.max_connections`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time to send the TLS handshake and each request head; `server.header_timeout` when unset.
    #[serde(default)]
    pub header_timeout: Option<String>,
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

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
            max_connections: default_max_connections(),
            header_timeout: None,
            tls: None,
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
/// Room for operators, approvers, pipelines and scrapers; far below what would starve the data plane of file
/// descriptors.
fn default_max_connections() -> usize {
    256
}

/// `[admin]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) tls: Option<TlsConfig>,
}

/// Validates `[admin]`; `server_header_timeout` is the header timeout when `[admin]` sets none.
pub(crate) fn check(raw: RawAdmin, server_header_timeout: Duration, p: &mut Problems<'_>) -> Admin {
    let listen = if raw.listen.is_empty() {
        None
    } else {
        match raw.listen.parse() {
            Ok(a) => Some(a),
            Err(e) => {
                p.err(
                    "admin.listen",
                    format!("`{}` is not an address: {e}", raw.listen),
                );
                None
            }
        }
    };
    if listen.is_none() && raw.tls.is_some() {
        p.err(
            "admin.tls",
            "the admin listener is disabled (`admin.listen = \"\"`)".into(),
        );
    }
    if raw.max_connections == 0 {
        p.err("admin.max_connections", "must be at least 1".into());
    }
    let header_timeout = match &raw.header_timeout {
        Some(t) => p.timeout("admin.header_timeout", t),
        None => server_header_timeout,
    };
    let tls = raw.tls.map(|t| TlsConfig {
        cert: p.existing_file("admin.tls.cert", &t.cert),
        key: p.existing_file("admin.tls.key", &t.key),
        client_ca: None,
        require_client_cert: false,
        client_principal_type: default_workload(),
        workload_groups: BTreeMap::new(),
        spiffe_trust_domain: None,
    });
    Admin {
        listen,
        max_connections: raw.max_connections,
        header_timeout,
        tls,
    }
}
