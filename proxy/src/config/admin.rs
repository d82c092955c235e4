//! `[admin]`: the admin listener (health, metrics, admin API) and its HTTPS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

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
            tls: None,
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}

/// `[admin]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) tls: Option<TlsConfig>,
}

/// Validates `[admin]`.
pub(crate) fn check(raw: RawAdmin, p: &mut Problems<'_>) -> Admin {
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
    let tls = raw.tls.map(|t| TlsConfig {
        cert: p.existing_file("admin.tls.cert", &t.cert),
        key: p.existing_file("admin.tls.key", &t.key),
        client_ca: None,
        require_client_cert: false,
        client_principal_type: default_workload(),
        workload_groups: BTreeMap::new(),
    });
    Admin { listen, tls }
}
