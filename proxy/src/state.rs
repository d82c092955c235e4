//! The assembled proxy: configuration, the engine's authorizer, authentication, upstream pools, the decision log
//! and metrics, shared by every connection. Building it is [`crate::prepare`] and [`crate::run`]; this module
//! knows nothing of listeners or tasks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use jitgate_engine::log::WriteError;
use jitgate_engine::store::Store;
use jitgate_engine::store::StoreError;
use jitgate_engine::{Authorizer, Diagnostics};

use crate::authenticate::{AuthError, Authenticator, LocalIssuer};
use crate::config::Config;
use crate::decision_log::DecisionLog;
use crate::forward::UpstreamClient;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::shadow::Shadow;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The bundle failed to load or failed the gate (its own tests), as a reload would have.
    #[error("bundle {path} refused:\n{diagnostics}")]
    Bundle {
        /// The bundle directory.
        path: String,
        /// Every problem found.
        diagnostics: Diagnostics,
    },
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[source] StoreError),
    /// The store's entity data does not fit the bundle (or could not be read): start with a bundle that accepts it.
    #[error("store entity data: {0}")]
    Entities(#[source] jitgate_engine::authorize::EntityError),
    /// The PostgreSQL store of `[store] url` could not be opened (unreachable, no such database, refused
    /// credentials, a schema newer than this build, ...).
    #[error("[store] url `{url}`: {source}")]
    StoreUrl {
        /// The URL, its password masked.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A file or directory of the state directory could not be written (the quickstart's).
    #[error("store: {}: {source}", path.display())]
    StateDir {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The decision log could not be opened.
    #[error("decision log: {0}")]
    Log(#[source] WriteError),
    /// Authentication setup failed (the local issuer's key, an issuer's settings).
    #[error("authentication: {0}")]
    Auth(#[source] AuthError),
    /// TLS setup failed.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// OpenTelemetry traces could not be set up (`[telemetry]`, the `OTEL_*` variables).
    #[error("telemetry: {0}")]
    Telemetry(#[source] crate::telemetry::TelemetryError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The engine: active bundle, grant index, store.
    pub authorizer: Arc<Authorizer>,
    /// The store (grants, access requests, approvals): SQLite by default, behind the engine's store traits.
    pub store: Arc<dyn Store>,
    /// Bearer-token verification.
    pub auth: Authenticator,
    /// jitgate's own token issuer, if configured.
    pub local_issuer: Option<Arc<LocalIssuer>>,
    /// Upstream pools by service name.
    pub upstreams: HashMap<String, UpstreamClient>,
    /// The decision log.
    pub log: DecisionLog,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Entity type of certificate principals.
    pub client_principal_type: String,
    /// Groups of certificate principals.
    pub workload_groups: HashMap<String, Vec<String>>,
    /// Bundle reloads (watcher, SIGHUP, admin API).
    pub reloader: Arc<Reloader>,
    /// Shadow evaluation of a candidate bundle beside the active one.
    pub shadow: Arc<Shadow>,
    /// Access requests and grants for every front end (admin API, holds): logging, notification, hold release.
    pub access: crate::access::AccessService,
    /// Work that runs to its end whether or not its caller waits (admin API calls, the creation of a hold's access
    /// request): a caller that hangs up cannot leave a committed change without its record. Shutdown waits for it
    /// (up to the grace period) before the decision log is flushed.
    pub tasks: tokio_util::task::TaskTracker,
    /// Set once shutdown has begun: the proxy drains and takes no new work, so it is no longer ready.
    pub draining: std::sync::atomic::AtomicBool,
    /// The PostgreSQL store shared with other replicas, with its follower's counters (None: SQLite).
    pub shared: Option<SharedStore>,
    /// OpenTelemetry traces, when on (`[telemetry] otlp_endpoint` or the `OTEL_EXPORTER_OTLP_*` variables).
    pub telemetry: Option<crate::telemetry::Telemetry>,
}

/// A store shared by replicas, as the proxy watches it.
#[derive(Debug, Clone)]
pub struct SharedStore {
    /// The store.
    pub store: Arc<jitgate_engine::postgres::PgStore>,
    /// Its follower's counters (notifications, lag, resyncs, reconnects).
    pub follow: Arc<jitgate_engine::postgres::follow::FollowStats>,
    /// The decision-log shipper's counters (shipped, lag).
    pub ship: Arc<jitgate_engine::postgres::decisions::ShipStats>,
}

/// Why the proxy should be sent no traffic (`/readyz` answers 503 with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// Shutdown has begun: in-flight requests drain, new ones should go elsewhere.
    #[error("shutting down")]
    Draining,
    /// The decision log's writer is gone: every request would be refused.
    #[error("decision log unavailable")]
    LogUnavailable,
    /// The shared store has not been heard from within `[store] max_staleness`: requests resting on a grant are
    /// denied until it is.
    #[error("store not heard from within [store] max_staleness")]
    StoreStale,
    /// These issuers' keys have not been fetched yet (start-up keeps retrying): their tokens would be refused.
    #[error("issuer keys not fetched yet: {}", .0.join(", "))]
    IssuerKeys(Vec<String>),
}

impl Proxy {
    /// Whether the proxy should be sent traffic, and if not why.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.draining.load(std::sync::atomic::Ordering::Acquire) {
            return Err(NotReady::Draining);
        }
        if !self.log.is_healthy() {
            return Err(NotReady::LogUnavailable);
        }
        if self.authorizer.freshness().is_some_and(|f| f.is_stale()) {
            return Err(NotReady::StoreStale);
        }
        let missing = self.auth.issuers_without_keys();
        if !missing.is_empty() {
            return Err(NotReady::IssuerKeys(missing));
        }
        Ok(())
    }
}
