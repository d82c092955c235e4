//! Run, the second half of start-up: from a [`Prepared`] proxy to a running one. It opens the store and the
//! decision log, generates a missing signing key, binds the listeners and starts the background tasks (bundle
//! watch, decision-log retention, grant compaction); [`Running`] reloads on SIGHUP and shuts them down in order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use jitgate_engine::postgres::PgStore;
use jitgate_engine::postgres::decisions::{ShipOptions, ShipStats, Shipper};
use jitgate_engine::postgres::follow::{ChangeSink, FollowOptions, FollowStats, Follower};
use jitgate_engine::sqlite::SqliteStore;
use jitgate_engine::store::{Freshness, Store};
use jitgate_engine::{Authorizer, Clock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::authenticate::{Authenticator, LocalIssuer};
use crate::config::Config;
use crate::decision_log::DecisionLog;
use crate::forward::UpstreamClient;
use crate::metrics::Metrics;
use crate::prepare::{Prepared, prepare};
use crate::reload::{Reloader, WatchGuard};
use crate::retention::Retention;
use crate::shadow::Shadow;
use crate::state::{Proxy, SharedStore, StartError};

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
    /// Keeps the grant index in step with a store shared by replicas.
    follower: Option<Follower>,
    /// Copies this replica's sealed decision records into the shared store.
    shipper: Option<Shipper>,
    /// Keeps the issuers' keys fresh (stopped when dropped).
    _key_refresh: crate::authenticate::KeyRefresh,
    _watch: Option<WatchGuard>,
}

/// How often the log shipper looks for new sealed records once it has caught up.
const SHIP_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Records per shipping transaction at most: one pass ships what 200 ms brought at up to 25,000 decisions/s (each
/// pass is one PostgreSQL transaction that streams the records in with a binary COPY; the writer's feed supplies
/// them and carries the shipping mark back, so a pass costs the local log nothing).
const SHIP_BATCH: u32 = 5000;

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
        // Not ready from here on: a load balancer stops sending while the in-flight requests drain.
        self.proxy
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await;
    }

    /// Serves until SIGTERM or SIGINT, reloading the bundle on SIGHUP, then shuts down as [`Running::shutdown`]
    /// does. Fails only when the signal handlers cannot be installed.
    pub async fn until_signalled(self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    let r = self.proxy.reloader.clone();
                    if let Ok(a) = tokio::task::spawn_blocking(move || r.reload_now()).await {
                        tracing::info!(outcome = %a.outcome, revision = ?a.revision, "SIGHUP reload");
                    }
                }
            }
        }
        tracing::info!("signal received: draining");
        self.shutdown().await;
        Ok(())
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
        if let Some(f) = self.follower.take() {
            let _ = tokio::task::spawn_blocking(move || f.stop()).await;
        }
        self.proxy.log.flush().await;
        // After the flush: the last pass ships every record the log committed.
        if let Some(s) = self.shipper.take() {
            let _ = tokio::task::spawn_blocking(move || s.stop()).await;
        }
        // The spans of the drained requests go out before the process does (the export blocks: off the workers).
        if self.proxy.telemetry.is_some() {
            let proxy = self.proxy.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(t) = &proxy.telemetry {
                    t.shutdown();
                }
            })
            .await;
        }
    }
}

/// Prepares the proxy (see [`crate::prepare`]) and runs it. [`Running::shutdown`] (e.g. on SIGTERM) stops it
/// gracefully.
pub async fn start(config: Config, clock: Clock) -> Result<Running, StartError> {
    run(prepare(config).ready()?, clock).await
}

/// Opens what a prepared proxy needs and binds its listeners (see the module docs).
pub async fn run(prepared: Prepared, clock: Clock) -> Result<Running, StartError> {
    let tls = prepared.tls.clone();
    let admin_tls = prepared.admin_tls.clone();
    for w in &prepared.warnings {
        tracing::warn!("{w}");
    }
    let proxy = assemble(prepared, clock.clone())?;
    // Each issuer's keys are fetched before the listeners open (one attempt each, bounded by the fetch timeout);
    // an issuer that did not answer keeps being retried in the background, and `/readyz` says not ready until it
    // has keys. Its tokens are refused meanwhile: a missing key never lets a request through.
    let key_refresh = proxy.auth.start_key_refresh(clock).await;
    let missing = proxy.auth.issuers_without_keys();
    if !missing.is_empty() {
        tracing::warn!(
            issuers = ?missing,
            "starting without these issuers' keys: not ready, and their tokens are refused, until they are fetched"
        );
    }
    let cfg = proxy.config.clone();
    let bind = |addr: SocketAddr| async move {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let bound = l
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok::<_, StartError>((l, bound))
    };
    let (listener, addr) = bind(cfg.listen).await?;
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let (admin_addr, admin_task) = match cfg.admin_listen {
        Some(a) => {
            let (l, bound) = bind(a).await?;
            let app = crate::admin::router(proxy.clone());
            // Limits of its own, so that admin callers cannot take the data plane's connections.
            let limits = crate::listener::Limits {
                max_connections: cfg.admin_max_connections,
                header_timeout: cfg.admin_header_timeout,
                max_header_bytes: cfg.max_header_bytes,
                idle_timeout: cfg.idle_timeout,
                shutdown_grace: cfg.shutdown_grace,
            };
            let task = tokio::spawn(crate::admin::serve(
                l,
                app,
                admin_tls.map(tokio_rustls::TlsAcceptor::from),
                limits,
            ));
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
    // Started before retention: it marks the log as shipped first, so that no prune removes a record it has not
    // copied into the store yet.
    let shipper = match (&proxy.shared, proxy.log.writer()) {
        (Some(shared), Some(_)) => Some(
            Shipper::start(
                shared.store.clone(),
                ShipOptions {
                    replica: cfg.replica.clone(),
                    log: cfg.log_path.clone(),
                    anchors: cfg.log_anchor.as_ref().map(|a| a.file.clone()),
                    every: SHIP_EVERY,
                    batch: SHIP_BATCH,
                    feed: proxy.log.ship_feed(),
                },
                shared.ship.clone(),
            )
            .map_err(StartError::Store)?,
        ),
        _ => None,
    };
    // Automatic retention, beside the writer (see crate::retention for why that is safe).
    let retention = match (cfg.log_retain, proxy.log.writer()) {
        (Some(retain), Some(_)) => Some(Retention::spawn(
            cfg.log_path.clone(),
            retain,
            cfg.log_prune_interval,
            proxy.metrics.clone(),
            cfg.log_anchor
                .as_ref()
                .and_then(|a| crate::decision_log::anchor_options(a).ok()),
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
    let follower = match &proxy.shared {
        Some(shared) => Some(start_follower(&proxy, shared)?),
        None => None,
    };
    tracing::info!(%addr, admin = ?admin_addr, "jitgate listening");
    Ok(Running {
        follower,
        shipper,
        addr,
        admin_addr,
        proxy,
        stop: Some(stop_tx),
        task,
        admin_task,
        retention,
        compactor,
        _key_refresh: key_refresh,
        _watch: watch,
    })
}

/// Opens the configured store: the one place that picks a backend. Every backend implements the engine's store
/// traits and passes their conformance suite: SQLite (`[store] path`, one process) or PostgreSQL (`[store] url`,
/// shared by replicas; its schema is migrated here, under an advisory lock).
/// The store every part shares, and the PostgreSQL store itself when that is the backend (for its follower).
type OpenedStore = (Arc<dyn Store>, Option<Arc<PgStore>>);

fn open_store(config: &Config) -> Result<OpenedStore, StartError> {
    match &config.store_url {
        Some(url) => {
            let (pg, migrated) =
                PgStore::open_migrated(url).map_err(|source| StartError::StoreUrl {
                    url: jitgate_engine::postgres::redact_url(url),
                    source,
                })?;
            if migrated.from != migrated.to {
                tracing::info!(
                    from = migrated.from,
                    to = migrated.to,
                    "store schema migrated"
                );
            }
            tracing::info!(backend = "postgres", url = %pg.url(), replica = %config.replica, "store opened");
            let pg = Arc::new(pg);
            Ok((pg.clone(), Some(pg)))
        }
        None => {
            let store = SqliteStore::open(&config.store_path).map_err(StartError::Store)?;
            tracing::info!(backend = "sqlite", path = %config.store_path.display(), replica = %config.replica,
                "store opened");
            Ok((Arc::new(store), None))
        }
    }
}

/// Releases held callers of this replica when another replica decides their requests.
struct Releases(crate::access::AccessService);

impl ChangeSink for Releases {
    fn grant_changed(&self, grant: &jitgate_engine::Grant) {
        self.0.grant_changed_elsewhere(grant);
    }
    fn request_changed(&self, request: &jitgate_engine::access::AccessRequest) {
        self.0.request_changed_elsewhere(request);
    }
}

/// Starts following the shared store: notifications into the grant index and the holds, heartbeats every third
/// of `[store] max_staleness`, a full resync every `[store] resync_every`.
fn start_follower(proxy: &Arc<Proxy>, shared: &SharedStore) -> Result<Follower, StartError> {
    let freshness = proxy
        .authorizer
        .freshness()
        .cloned()
        .unwrap_or_else(|| Arc::new(Freshness::new(proxy.config.store_max_staleness)));
    let opts = FollowOptions {
        resync_every: proxy.config.store_resync_every,
        heartbeat_every: (proxy.config.store_max_staleness / 3)
            .max(std::time::Duration::from_millis(50)),
    };
    Follower::start(
        shared.store.clone(),
        proxy.authorizer.clone(),
        freshness,
        Arc::new(Releases(proxy.access.clone())),
        shared.follow.clone(),
        opts,
    )
    .map_err(StartError::Store)
}

/// The shared state of a prepared proxy: opens the store and the log, loads (or generates) the local signing key,
/// and sets up authentication and upstream pools.
fn assemble(prepared: Prepared, clock: Clock) -> Result<Arc<Proxy>, StartError> {
    let gate = prepared.gate();
    let Prepared {
        config,
        bundle,
        shadow: shadow_bundle,
        ..
    } = prepared;
    let (store, shared) = open_store(&config)?;
    let mut authorizer = Authorizer::new(bundle, store.clone(), clock)
        .map_err(StartError::Store)?
        .with_entity_store(store.clone())
        .map_err(StartError::Entities)?;
    if shared.is_some() {
        // Heard from just now: the index was loaded from the store above.
        authorizer =
            authorizer.with_freshness(Arc::new(Freshness::new(config.store_max_staleness)));
    }
    let authorizer = Arc::new(authorizer);
    let shared = shared.map(|store| SharedStore {
        store,
        follow: Arc::new(FollowStats::default()),
        ship: Arc::new(ShipStats::default()),
    });
    let local_issuer = match &config.local_issuer {
        Some(l) => Some(Arc::new(
            LocalIssuer::load_or_generate(&l.key_file, &l.issuer, &l.audience)
                .map_err(StartError::Auth)?,
        )),
        None => None,
    };
    let auth = Authenticator::new(config.issuers.clone(), local_issuer.as_deref().cloned())
        .map_err(StartError::Auth)?;
    let log = DecisionLog::open(&config).map_err(StartError::Log)?;
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
    if let Some(b) = shadow_bundle {
        shadow.set(b);
    }
    let lifecycle = jitgate_engine::lifecycle::Lifecycle::new(authorizer.clone(), store.clone())
        .with_max_pending(config.max_pending_per_principal);
    let notifier = crate::notify::Notifier::new(
        config.webhooks.clone(),
        config.console.as_ref().map(|c| c.public_url.clone()),
        metrics.clone(),
    );
    let tasks = tokio_util::task::TaskTracker::new();
    let telemetry = crate::telemetry::Telemetry::start(&config.telemetry.traces)
        .map_err(StartError::Telemetry)?;
    if let Some(t) = &telemetry {
        tracing::info!(endpoint = %t.resolved.endpoint, protocol = ?t.resolved.protocol, "telemetry: exporting traces over OTLP");
    }
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
        draining: Default::default(),
        shared,
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
        telemetry,
    }))
}
