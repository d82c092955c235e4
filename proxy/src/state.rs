//! The assembled proxy: configuration, the engine's authorizer, authentication, upstream pools, the decision log
//! and metrics, plus `start` which binds the listeners, starts the background tasks (bundle watch, decision-log
//! retention) and returns a handle that shuts everything down in order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use jitgate_engine::sqlite::SqliteStore;
use jitgate_engine::{Authorizer, Bundle, Clock, Diagnostics};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::authenticate::{Authenticator, LocalIssuer};
use crate::config::Config;
use crate::decision_log::DecisionLog;
use crate::forward::UpstreamClient;
use crate::metrics::Metrics;
use crate::reload::{Reloader, WatchGuard, proxy_gate};
use crate::retention::Retention;
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
    Store(String),
    /// The decision log could not be opened.
    #[error("decision log: {0}")]
    Log(String),
    /// Authentication setup failed.
    #[error("authentication: {0}")]
    Auth(String),
    /// TLS setup failed.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The engine: active bundle, grant index, store.
    pub authorizer: Arc<Authorizer>,
    /// The SQLite store (grants, access requests).
    pub store: Arc<SqliteStore>,
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
}

impl Proxy {
    /// Loads the bundle and runs the reload gate on it (its own tests must pass), then opens the store and the log,
    /// and prepares authentication and upstream pools.
    pub async fn build(config: Config, clock: Clock) -> Result<Arc<Proxy>, StartError> {
        // The gate a reload must pass applies at start-up too: a bundle that fails its own tests, or routes to a
        // service the config has no upstream for, never goes live, whether it arrives by a reload or a restart. It
        // runs before the store or the log is opened, so a refused start leaves no files behind.
        let gate = proxy_gate(config.upstreams.keys().cloned().collect());
        let bundle = Bundle::load(&config.bundle_path)
            .map(Arc::new)
            .and_then(|b| gate(&b).map(|()| b))
            .map_err(|diagnostics| StartError::Bundle {
                path: config.bundle_path.display().to_string(),
                diagnostics,
            })?;
        let store = Arc::new(
            SqliteStore::open(&config.store_path).map_err(|e| StartError::Store(e.to_string()))?,
        );
        let authorizer = Arc::new(
            Authorizer::new(bundle, store.clone(), clock)
                .map_err(|e| StartError::Store(e.to_string()))?,
        );
        let local_issuer = match &config.local_issuer {
            Some(l) => Some(Arc::new(
                LocalIssuer::load_or_generate(&l.key_file, &l.issuer, &l.audience)
                    .map_err(|e| StartError::Auth(e.to_string()))?,
            )),
            None => None,
        };
        let auth = Authenticator::new(config.issuers.clone(), local_issuer.as_deref().cloned())
            .map_err(|e| StartError::Auth(e.to_string()))?;
        let log = DecisionLog::open(&config).map_err(|e| StartError::Log(e.to_string()))?;
        let upstreams = config
            .upstreams
            .iter()
            .map(|(k, u)| (k.clone(), UpstreamClient::new(u.clone())))
            .collect();
        let (client_principal_type, workload_groups) = match &config.tls {
            Some(t) => (
                t.client_principal_type.clone(),
                t.workload_groups.clone().into_iter().collect(),
            ),
            None => ("Workload".to_string(), HashMap::new()),
        };
        let metrics = Arc::new(Metrics::default());
        let reloader = Arc::new(Reloader::new(
            authorizer.clone(),
            config.bundle_path.clone(),
            gate,
            metrics.clone(),
        ));
        let shadow = Arc::new(Shadow::new(metrics.clone()));
        if let Some(path) = &config.bundle_shadow {
            shadow
                .load(path)
                .map_err(|diagnostics| StartError::Bundle {
                    path: path.display().to_string(),
                    diagnostics,
                })?;
        }
        let lifecycle =
            jitgate_engine::lifecycle::Lifecycle::new(authorizer.clone(), store.clone());
        let notifier = crate::notify::Notifier::new(config.webhooks.clone(), metrics.clone());
        let tasks = tokio_util::task::TaskTracker::new();
        let access = crate::access::AccessService::new(crate::access::AccessParts {
            lifecycle,
            auth: auth.clone(),
            local_issuer: local_issuer.clone(),
            log: log.clone(),
            metrics: metrics.clone(),
            notifier,
            tasks: tasks.clone(),
        });
        Ok(Arc::new(Proxy {
            access,
            tasks,
            reloader,
            shadow,
            config: Arc::new(config),
            authorizer,
            store,
            auth,
            local_issuer,
            upstreams,
            log,
            metrics,
            client_principal_type,
            workload_groups,
        }))
    }
}

/// A running proxy: its bound addresses and a way to stop it.
#[derive(Debug)]
pub struct Running {
    /// The data-plane address (useful when configured with port 0).
    pub addr: SocketAddr,
    /// The admin address, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The shared state.
    pub proxy: Arc<Proxy>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    admin_task: Option<JoinHandle<()>>,
    retention: Option<Retention>,
    /// Drops ended grants from the index every [`COMPACT_EVERY`].
    compactor: JoinHandle<()>,
    _watch: Option<WatchGuard>,
}

/// How often ended grants (expired, revoked, consumed) are dropped from the in-memory index.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Drop for Running {
    fn drop(&mut self) {
        self.compactor.abort();
    }
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to the grace period), stops retention (waiting up to the grace
    /// period for a run in progress), then flushes the decision log.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await;
    }

    /// Waits until the data plane stops (after a shutdown signal), then stops the admin listener, waits (up to the
    /// grace period) for admin calls and hold creations still running, stops retention and flushes the log.
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
        if let Some(a) = self.admin_task.take() {
            a.abort();
        }
        self.compactor.abort();
        let grace = self.proxy.config.shutdown_grace;
        let tasks = &self.proxy.tasks;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                running = tasks.len(),
                "shutdown: admin calls still running after the grace period"
            );
        }
        if let Some(r) = self.retention.take() {
            r.stop(grace).await;
        }
        self.proxy.log.flush().await;
    }
}

/// Builds the proxy and binds its listeners. `shutdown` (e.g. SIGTERM) starts a graceful stop; [`Running::shutdown`]
/// does the same on demand.
pub async fn start(config: Config, clock: Clock) -> Result<Running, StartError> {
    let proxy = Proxy::build(config, clock).await?;
    start_with(proxy).await
}

/// Binds the listeners for an already built proxy.
pub async fn start_with(proxy: Arc<Proxy>) -> Result<Running, StartError> {
    let cfg = proxy.config.clone();
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| StartError::Bind {
            addr: cfg.listen,
            reason: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| StartError::Bind {
        addr: cfg.listen,
        reason: e.to_string(),
    })?;
    let tls = match &cfg.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            t,
        )?)),
        None => None,
    };
    let (admin_addr, admin_task) = match cfg.admin_listen {
        Some(a) => {
            let l = TcpListener::bind(a).await.map_err(|e| StartError::Bind {
                addr: a,
                reason: e.to_string(),
            })?;
            let bound = l.local_addr().map_err(|e| StartError::Bind {
                addr: a,
                reason: e.to_string(),
            })?;
            let admin_tls = match &cfg.admin_tls {
                Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
                    t,
                )?)),
                None => {
                    if !bound.ip().is_loopback() {
                        tracing::warn!(admin = %bound, "the admin listener is plain HTTP on a non-loopback address: bearer tokens and approvals cross the network in clear text; set [admin.tls]");
                    }
                    None
                }
            };
            let app = crate::admin::router(proxy.clone());
            let task = tokio::spawn(crate::admin::serve(l, app, admin_tls));
            (Some(bound), Some(task))
        }
        None => (None, None),
    };
    let watch = if cfg.bundle_watch {
        match proxy.reloader.watch() {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(error = %e, bundle = %cfg.bundle_path.display(), "cannot watch the bundle; reload with SIGHUP or the admin API");
                None
            }
        }
    } else {
        None
    };
    // Automatic retention, beside the writer (see crate::retention for why that is safe).
    let retention = match (cfg.log_retain, proxy.log.writer()) {
        (Some(retain), Some(_)) => Some(Retention::spawn(
            cfg.log_path.clone(),
            retain,
            cfg.log_prune_interval,
            proxy.metrics.clone(),
        )),
        (Some(_), None) => {
            tracing::warn!(
                "[log] retain is set but the decision log is disabled: nothing to prune"
            );
            None
        }
        (None, _) => None,
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let p = proxy.clone();
    let task = tokio::spawn(async move {
        crate::server::serve(p, listener, tls, async move {
            let _ = stop_rx.await;
        })
        .await;
    });
    let p = proxy.clone();
    let compactor = tokio::spawn(async move {
        let mut every = tokio::time::interval(COMPACT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            // Copies every shard: off the async workers.
            let q = p.clone();
            let _ = tokio::task::spawn_blocking(move || q.authorizer.compact_grants()).await;
        }
    });
    tracing::info!(%addr, admin = ?admin_addr, "jitgate listening");
    Ok(Running {
        addr,
        admin_addr,
        proxy,
        stop: Some(stop_tx),
        task,
        admin_task,
        retention,
        compactor,
        _watch: watch,
    })
}
