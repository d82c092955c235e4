//! Build, the first half of start-up: from a validated config to what can be checked without side effects — the
//! bundle through the reload gate, the shadow bundle, TLS server configs, the local issuer's key, warnings as data.
//! It opens no store or log, binds nothing and creates no file: `jitgate check --config` prints its [`Preflight`],
//! `jitgate serve` goes on with [`Preflight::ready`] to [`crate::run`], which does all of those.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jitgate_engine::testing::{self, Report};
use jitgate_engine::{Bundle, Diagnostic, Diagnostics};

use crate::authenticate::{AuthError, LocalIssuer};
use crate::config::Config;
use crate::reload::{Gate, proxy_gate, upstream_coverage};
use crate::state::StartError;
use crate::tls::TlsError;

/// A bundle loaded and tested, before the gate's verdict: `jitgate check` prints the parts, start-up refuses on
/// [`CheckedBundle::problems`].
#[derive(Debug)]
pub struct CheckedBundle {
    /// The bundle.
    pub bundle: Arc<Bundle>,
    /// Its own tests' report (`None` when it lists none).
    pub report: Option<Report>,
    /// Routes to a service the config has no upstream for.
    pub unrouted: Vec<Diagnostic>,
}

impl CheckedBundle {
    /// Loads the bundle at `dir` and runs its own tests; `services` are the configured upstreams.
    pub fn load(dir: &Path, services: &BTreeSet<String>) -> Result<Self, Diagnostics> {
        let (bundle, report) = testing::check(dir)?;
        let unrouted = upstream_coverage(&bundle, services);
        Ok(CheckedBundle {
            bundle,
            report,
            unrouted,
        })
    }

    /// What the gate refuses, in the order a reload reports it: routes without upstream, then failed tests.
    pub fn problems(&self) -> Diagnostics {
        let mut problems = self.unrouted.clone();
        if let Some(report) = &self.report {
            problems.extend(testing::gate::problems(report).0);
        }
        Diagnostics(problems)
    }
}

/// A start-up warning: the proxy starts, but something deserves a look.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// The admin listener is plain HTTP on an address other hosts can reach.
    PlainAdmin {
        /// The configured admin address.
        addr: SocketAddr,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::PlainAdmin { addr } => write!(
                f,
                "the admin listener {addr} is plain HTTP on a non-loopback address; bearer tokens and approvals \
                 would cross the network in clear text (set [admin.tls])"
            ),
        }
    }
}

/// Whether the local issuer's signing key is there yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFile {
    /// The key file exists and holds a usable key.
    Present,
    /// The key file does not exist: start-up generates it.
    Missing,
}

/// Every start-up check on a config, each with its own outcome, so that a pre-flight reports them all.
#[derive(Debug)]
pub struct Preflight {
    /// The config checked.
    pub config: Config,
    /// The bundle it names, loaded and tested.
    pub bundle: Result<CheckedBundle, Diagnostics>,
    /// The shadow bundle, if one is configured.
    pub shadow: Option<Result<Bundle, Diagnostics>>,
    /// The data plane's TLS, if configured.
    pub tls: Option<Result<Arc<rustls::ServerConfig>, TlsError>>,
    /// The admin listener's TLS, if configured.
    pub admin_tls: Option<Result<Arc<rustls::ServerConfig>, TlsError>>,
    /// The local issuer's key file, if a local issuer is configured.
    pub local_key: Option<Result<KeyFile, AuthError>>,
    /// Warnings that do not stop a start.
    pub warnings: Vec<Warning>,
}

/// Runs every start-up check on `config` (see the module docs). Blocking: it reads files and runs bundle tests.
pub fn prepare(config: Config) -> Preflight {
    let services: BTreeSet<String> = config.upstreams.keys().cloned().collect();
    let bundle = CheckedBundle::load(&config.bundle_path, &services);
    let shadow = config.bundle_shadow.as_deref().map(Bundle::load);
    let tls = config.tls.as_ref().map(crate::tls::server_config);
    let admin_tls = config.admin_tls.as_ref().map(crate::tls::server_config);
    let local_key = config.local_issuer.as_ref().map(|l| {
        LocalIssuer::check_key_file(&l.key_file).map(|present| {
            if present {
                KeyFile::Present
            } else {
                KeyFile::Missing
            }
        })
    });
    let mut warnings = Vec::new();
    if let (None, Some(addr)) = (&config.admin_tls, config.admin_listen) {
        if !addr.ip().is_loopback() {
            warnings.push(Warning::PlainAdmin { addr });
        }
    }
    Preflight {
        config,
        bundle,
        shadow,
        tls,
        admin_tls,
        local_key,
        warnings,
    }
}

/// What `jitgate check --config FILE --online` found at each configured issuer, in config order: its discovery
/// document (when configured by discovery) and its keys, fetched once as start-up would (see
/// [`crate::authenticate::probe_issuer`]), with `timeout` for each request. Unlike [`prepare`], this reaches the
/// network; it still writes nothing.
pub async fn online(
    config: &Config,
    timeout: std::time::Duration,
) -> Vec<(String, Result<crate::authenticate::IssuerProbe, String>)> {
    let mut out = Vec::new();
    for cfg in &config.issuers {
        let found = crate::authenticate::probe_issuer(cfg, timeout).await;
        out.push((cfg.issuer.clone(), found));
    }
    out
}

/// What start-up needs from a preflight that passed: everything checked, nothing opened.
#[derive(Debug)]
pub struct Prepared {
    /// The config.
    pub config: Config,
    /// The bundle, through the gate.
    pub bundle: Arc<Bundle>,
    /// The shadow bundle, if configured.
    pub shadow: Option<Arc<Bundle>>,
    /// The data plane's TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The admin listener's TLS.
    pub admin_tls: Option<Arc<rustls::ServerConfig>>,
    /// Warnings for the log.
    pub warnings: Vec<Warning>,
}

impl Prepared {
    /// The gate every later reload of this proxy's bundle must pass (the one the start-up bundle passed).
    pub fn gate(&self) -> Box<Gate> {
        proxy_gate(self.config.upstreams.keys().cloned().collect())
    }
}

impl Preflight {
    /// The prepared start-up, or the first refusal in start-up order: the bundle (a refused start leaves no files
    /// behind), the shadow bundle, TLS, the local issuer's key.
    pub fn ready(self) -> Result<Prepared, StartError> {
        let refused = |path: &PathBuf, diagnostics| StartError::Bundle {
            path: path.display().to_string(),
            diagnostics,
        };
        let config = self.config;
        let bundle = self
            .bundle
            .and_then(|b| b.problems().into_result().map(|()| b.bundle))
            .map_err(|d| refused(&config.bundle_path, d))?;
        let shadow = match self.shadow {
            None => None,
            Some(Ok(b)) => Some(Arc::new(b)),
            Some(Err(d)) => {
                return Err(refused(
                    &config.bundle_shadow.clone().unwrap_or_default(),
                    d,
                ));
            }
        };
        let tls = self.tls.transpose()?;
        let admin_tls = self.admin_tls.transpose()?;
        self.local_key.transpose().map_err(StartError::Auth)?;
        Ok(Prepared {
            config,
            bundle,
            shadow,
            tls,
            admin_tls,
            warnings: self.warnings,
        })
    }
}
