//! Keeps one replica's grant index in step with a [`PgStore`] shared by several: a thread of its own LISTENs on the
//! store's channel, refreshes each grant a notification names, reloads the store's entity data when it changed, and
//! tells the replica of changed access requests (to release held callers); it resyncs the whole index on connecting and periodically as a safety net, sends a
//! heartbeat when nothing happens, and reconnects with backoff when the connection breaks. Every success counts as
//! hearing from the store ([`Freshness`]); silence beyond the bound makes the replica fail closed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::PgStore;
use crate::access::AccessRequest;
use crate::authorize::Authorizer;
use crate::grant::Grant;
use crate::store::{Freshness, RequestStore, StoreError};

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a replica does with changes other replicas made (after the index has them).
pub trait ChangeSink: Send + Sync {
    /// A grant changed; the index holds it as stored now.
    fn grant_changed(&self, grant: &Grant);
    /// An access request changed; this is it as stored now.
    fn request_changed(&self, request: &AccessRequest);
}

/// How often the follower checks in.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// A full resync of the index this often, whatever the notifications said.
    pub resync_every: Duration,
    /// A heartbeat query when no notification came for this long (keep it well under `max_staleness`).
    pub heartbeat_every: Duration,
}

/// Counters of the follower, for metrics.
#[derive(Debug, Default)]
pub struct FollowStats {
    /// Notifications handled.
    pub notifications: AtomicU64,
    /// Sum of their lags (commit to applied), in milliseconds.
    pub lag_ms_sum: AtomicU64,
    /// The largest lag seen, in milliseconds.
    pub lag_ms_max: AtomicU64,
    /// Full resyncs of the index.
    pub resyncs: AtomicU64,
    /// Times the connection was lost and opened again.
    pub reconnects: AtomicU64,
    /// Whether the follower's connection is up now.
    pub connected: AtomicBool,
}

/// The running follower; dropping it stops the thread (within a heartbeat).
#[derive(Debug)]
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<FollowStats>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct Ctx {
    store: Arc<PgStore>,
    authorizer: Arc<Authorizer>,
    freshness: Arc<Freshness>,
    sink: Arc<dyn ChangeSink>,
    opts: FollowOptions,
    stop: Arc<AtomicBool>,
    stats: Arc<FollowStats>,
}

impl Follower {
    /// Starts following `store` for `authorizer`'s index (whose freshness is `freshness`), counting in `stats`.
    pub fn start(
        store: Arc<PgStore>,
        authorizer: Arc<Authorizer>,
        freshness: Arc<Freshness>,
        sink: Arc<dyn ChangeSink>,
        stats: Arc<FollowStats>,
        opts: FollowOptions,
    ) -> Result<Follower, StoreError> {
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Ctx {
            store,
            authorizer,
            freshness,
            sink,
            opts,
            stop: stop.clone(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("jitgate-store-follow".into())
            .spawn(move || run(ctx))
            .map_err(|e| StoreError::database("cannot start the store follower", e))?;
        Ok(Follower {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// The follower's counters.
    pub fn stats(&self) -> &Arc<FollowStats> {
        &self.stats
    }

    /// Stops the thread and waits for it (up to a heartbeat).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(ctx: Ctx) {
    let mut backoff = MIN_BACKOFF;
    while !ctx.stop.load(Ordering::Acquire) {
        match session(&ctx, &mut backoff) {
            Ok(()) => return,
            Err(e) => {
                ctx.stats.connected.store(false, Ordering::Release);
                ctx.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "store follower: lost the store; reconnecting");
            }
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !ctx.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Quotes an identifier for SQL.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// One connection's life: LISTEN, resync, then notifications and heartbeats until it breaks or the follower
/// stops (`Ok`).
fn session(ctx: &Ctx, backoff: &mut Duration) -> Result<(), StoreError> {
    let mut client = ctx.store.connect_dedicated()?;
    client
        .batch_execute(&format!("LISTEN {}", quote_ident(ctx.store.channel())))
        .map_err(|e| super::pg_err("cannot LISTEN", e))?;
    // After LISTEN: whatever commits from here on is notified, and whatever committed before is in the resync.
    resync(ctx)?;
    ctx.stats.connected.store(true, Ordering::Release);
    *backoff = MIN_BACKOFF;
    let mut last_resync = Instant::now();
    loop {
        if ctx.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut payloads = Vec::new();
        {
            use postgres::fallible_iterator::FallibleIterator;
            let mut n = client.notifications();
            let first = n
                .timeout_iter(ctx.opts.heartbeat_every)
                .next()
                .map_err(|e| super::pg_err("notifications", e))?;
            if let Some(first) = first {
                payloads.push(first.payload().to_string());
                // Whatever else is already here, without waiting.
                let mut more = n.iter();
                while let Some(m) = more.next().map_err(|e| super::pg_err("notifications", e))? {
                    payloads.push(m.payload().to_string());
                }
            }
        }
        if payloads.is_empty() {
            client
                .simple_query("SELECT 1")
                .map_err(|e| super::pg_err("heartbeat", e))?;
            ctx.freshness.heard();
        } else {
            apply(ctx, &payloads)?;
        }
        if last_resync.elapsed() >= ctx.opts.resync_every {
            resync(ctx)?;
            last_resync = Instant::now();
        }
    }
}

fn resync(ctx: &Ctx) -> Result<(), StoreError> {
    let n = ctx.authorizer.resync_grants()?;
    ctx.authorizer.resync_entities()?;
    ctx.stats.resyncs.fetch_add(1, Ordering::Relaxed);
    ctx.freshness.heard();
    tracing::debug!(grants = n, "store follower: index resynced");
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Applies a batch of notifications (`<kind> <epoch ms> <id>`): grants first, each read once, then requests, so a
/// held caller released by a request's change finds the grant its approval wrote.
fn apply(ctx: &Ctx, payloads: &[String]) -> Result<(), StoreError> {
    let mut grants = BTreeSet::new();
    let mut requests = BTreeSet::new();
    let mut entities = false;
    let now = now_ms();
    for p in payloads {
        let mut parts = p.splitn(3, ' ');
        let (Some(kind), Some(at), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            tracing::warn!(payload = %p, "store follower: unknown notification ignored");
            continue;
        };
        if let Ok(at) = at.parse::<u64>() {
            let lag = now.saturating_sub(at);
            ctx.stats.lag_ms_sum.fetch_add(lag, Ordering::Relaxed);
            ctx.stats.lag_ms_max.fetch_max(lag, Ordering::Relaxed);
        }
        ctx.stats.notifications.fetch_add(1, Ordering::Relaxed);
        match kind {
            "g" => {
                grants.insert(id.to_string());
            }
            "r" => {
                requests.insert(id.to_string());
            }
            // The entity data changed (one notification per statement): read again whole, once per batch.
            "e" => entities = true,
            _ => tracing::warn!(payload = %p, "store follower: unknown notification ignored"),
        }
    }
    for id in &grants {
        if let Some(g) = ctx.authorizer.refresh_grant(id)? {
            ctx.sink.grant_changed(&g);
        }
    }
    if entities {
        ctx.authorizer.resync_entities()?;
    }
    for id in &requests {
        if let Some(r) = ctx.store.get_access_request(id)? {
            ctx.sink.request_changed(&r);
        }
    }
    ctx.freshness.heard();
    Ok(())
}
