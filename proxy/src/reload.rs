//! Hot reload: watch the bundle directory, debounce bursts, build the new snapshot off the request path, run the
//! gate (full validation and the bundle's own tests), and swap atomically. A bundle that fails the gate never goes
//! live: the active one keeps serving and the failure is reported (log line, status, metric). The proxy's gate
//! ([`proxy_gate`]) also requires an upstream for every route's service, and its start-up
//! ([`crate::prepare::Preflight::ready`]) runs the same gate on the bundle it starts with.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jitgate_engine::bundle::is_temp_file;
use jitgate_engine::clock::now_system;
use jitgate_engine::{Authorizer, Bundle, Diagnostic, Diagnostics, UnixTime};
use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// How long the directory must be quiet before a reload starts (editors and `git pull` write in bursts).
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// How a reload attempt ended (`live`, `unchanged` or `failed` in JSON).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// A new revision went live.
    Live,
    /// The candidate has the active revision: nothing changed.
    Unchanged,
    /// The candidate did not load or failed the gate; the active bundle keeps serving.
    Failed,
}

impl std::fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReloadOutcome::Live => "live",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Failed => "failed",
        })
    }
}

/// The outcome of one reload attempt.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attempt {
    /// When it ran (Unix seconds).
    pub at: UnixTime,
    /// How it ended.
    pub outcome: ReloadOutcome,
    /// The candidate's revision, when it loaded.
    pub revision: Option<String>,
    /// What failed, each naming file and line.
    pub errors: Vec<Diagnostic>,
    /// How long load + gate + swap took, in milliseconds.
    pub duration_ms: u64,
}

/// What the admin API reports about reloads.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadStatus {
    /// The active revision.
    pub active_revision: String,
    /// When it went live (Unix seconds).
    pub active_since: UnixTime,
    /// Attempts so far (watcher, SIGHUP and admin API together): a caller waits for this to move.
    pub attempts: u64,
    /// The last attempt, if any.
    pub last_attempt: Option<Attempt>,
}

/// The gate a candidate must pass after loading: e.g. the bundle's own policy tests.
pub type Gate = dyn Fn(&Arc<Bundle>) -> Result<(), Diagnostics> + Send + Sync;

/// Reloads the bundle into an [`Authorizer`].
pub struct Reloader {
    authorizer: Arc<Authorizer>,
    path: PathBuf,
    gate: Box<Gate>,
    metrics: Arc<Metrics>,
    status: Mutex<ReloadStatus>,
    // One reload at a time: a watcher event, SIGHUP and the admin API may race.
    running: Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .field("status", &*self.status.lock())
            .finish()
    }
}

impl Reloader {
    /// A reloader for the bundle at `path`, currently active in `authorizer`.
    pub fn new(
        authorizer: Arc<Authorizer>,
        path: PathBuf,
        gate: Box<Gate>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let active_revision = authorizer.bundle().revision.clone();
        Self {
            authorizer,
            path,
            gate,
            metrics,
            status: Mutex::new(ReloadStatus {
                active_revision,
                active_since: now_system(),
                attempts: 0,
                last_attempt: None,
            }),
            running: Mutex::new(()),
        }
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current status.
    pub fn status(&self) -> ReloadStatus {
        self.status.lock().clone()
    }

    /// Loads, gates and (if it passes and differs) swaps in the bundle now. Blocking: call from a blocking thread.
    pub fn reload_now(&self) -> Attempt {
        let _one = self.running.lock();
        let started = std::time::Instant::now();
        let at = now_system();
        // A candidate that loads but fails its gate still has a revision: the attempt names it.
        let mut loaded_revision = None;
        let result = Bundle::load(&self.path).map(Arc::new).and_then(|b| {
            loaded_revision = Some(b.revision.clone());
            (self.gate)(&b).map(|()| b)
        });
        let duration_ms = started.elapsed().as_millis() as u64;
        let attempt = match result {
            Err(d) => {
                for e in &d.0 {
                    tracing::error!(bundle = %self.path.display(), error = %e, "bundle reload refused; the active bundle keeps serving");
                }
                self.metrics.reloads.inc("failed");
                self.metrics.reload_failing.set(1);
                Attempt {
                    at,
                    outcome: ReloadOutcome::Failed,
                    revision: loaded_revision,
                    errors: d.0,
                    duration_ms,
                }
            }
            Ok(b) if b.revision == self.authorizer.bundle().revision => {
                self.metrics.reloads.inc("unchanged");
                self.metrics.reload_failing.set(0);
                Attempt {
                    at,
                    outcome: ReloadOutcome::Unchanged,
                    revision: Some(b.revision.clone()),
                    errors: Vec::new(),
                    duration_ms,
                }
            }
            Ok(b) => {
                let revision = b.revision.clone();
                match self.authorizer.try_swap_bundle(b) {
                    Ok(old) => {
                        tracing::info!(from = %old.short_revision(), to = %revision.get(..12).unwrap_or(&revision), ms = duration_ms, "bundle reloaded");
                        self.metrics.reloads.inc("live");
                        self.metrics.reload_failing.set(0);
                        Attempt {
                            at,
                            outcome: ReloadOutcome::Live,
                            revision: Some(revision),
                            errors: Vec::new(),
                            duration_ms,
                        }
                    }
                    // The store's entity data must fit the new schema too: a bundle that refuses it never goes live.
                    Err(problems) => {
                        let errors: Vec<Diagnostic> = problems
                            .iter()
                            .map(|p| {
                                Diagnostic::file(
                                    &self.path,
                                    format!(
                                        "the store's entity data does not fit this bundle: {p} (change the bundle, \
                                         or the entity with `jitgate entities put|delete`)"
                                    ),
                                )
                            })
                            .collect();
                        for e in &errors {
                            tracing::error!(bundle = %self.path.display(), error = %e, "bundle reload refused; the active bundle keeps serving");
                        }
                        self.metrics.reloads.inc("failed");
                        self.metrics.reload_failing.set(1);
                        Attempt {
                            at,
                            outcome: ReloadOutcome::Failed,
                            revision: Some(revision),
                            errors,
                            duration_ms,
                        }
                    }
                }
            }
        };
        // One lock for the whole update: a reader never sees the new revision without the attempt that made it.
        let mut s = self.status.lock();
        if let (true, Some(revision)) = (attempt.outcome == ReloadOutcome::Live, &attempt.revision)
        {
            s.active_revision = revision.clone();
            s.active_since = at;
        }
        s.attempts += 1;
        s.last_attempt = Some(attempt.clone());
        attempt
    }

    /// Watches the bundle directory recursively, and its parent directory for events naming the bundle directory
    /// itself (a directory renamed over it, or a swapped symlink: the recursive watch would stay on the old
    /// target). Reloads after each quiet period. The returned guard stops watching when dropped.
    pub fn watch(self: &Arc<Self>) -> Result<WatchGuard, notify::Error> {
        let root = std::path::absolute(&self.path).map_err(notify::Error::io)?;
        let (tx, rx) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx)?;
        watcher.watch(&root, RecursiveMode::Recursive)?;
        if let Some(parent) = root.parent() {
            if let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive) {
                tracing::warn!(error = %e, dir = %parent.display(), "cannot watch the bundle's parent directory; a swap of the directory itself will not be seen");
            }
        }
        let watcher = Arc::new(Mutex::new(Some(watcher)));
        let me = self.clone();
        let shared = watcher.clone();
        let thread = std::thread::Builder::new()
            .name("jitgate-reload".into())
            .spawn(move || {
                // Blocks until the first relevant event, then waits for quiet, then reloads; ends when the watcher
                // (the sender) is dropped by the guard.
                while let Ok(ev) = rx.recv() {
                    let Some(mut root_changed) = relevant(&ev, &root) else {
                        continue;
                    };
                    // Quiet means no *relevant* event for DEBOUNCE: events that do not concern the bundle (a
                    // database written next to it, in the watched parent) must not postpone the reload forever.
                    let mut quiet_at = Instant::now() + DEBOUNCE;
                    loop {
                        let left = quiet_at.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match rx.recv_timeout(left) {
                            Ok(ev) => {
                                if let Some(r) = relevant(&ev, &root) {
                                    root_changed |= r;
                                    quiet_at = Instant::now() + DEBOUNCE;
                                }
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    if root_changed {
                        // Re-watch before loading: whatever changes after this is seen by the new watch, whatever
                        // changed before is read by the load.
                        if let Some(w) = shared.lock().as_mut() {
                            let _ = w.unwatch(&root);
                            if let Err(e) = w.watch(&root, RecursiveMode::Recursive) {
                                tracing::warn!(error = %e, bundle = %root.display(), "cannot watch the bundle directory again after it was replaced");
                            }
                        }
                    }
                    me.reload_now();
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(WatchGuard {
            watcher,
            _thread: thread,
        })
    }
}

/// Keeps the file watcher alive; dropping it stops the watcher and its thread.
pub struct WatchGuard {
    watcher: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        // Dropping the watcher drops the channel's sender, which ends the thread.
        self.watcher.lock().take();
    }
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchGuard")
    }
}

/// Whether an event should trigger a reload: `None` when not; `Some(true)` when it names the bundle directory
/// itself (replaced or re-linked), `Some(false)` for a change inside it. Editor temp files, access-only events and
/// the parent's other entries never trigger one; watcher errors do (logged), since a change may have been missed.
fn relevant(ev: &notify::Result<notify::Event>, root: &Path) -> Option<bool> {
    let ev = match ev {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(error = %e, bundle = %root.display(), "bundle watcher error; reloading to be safe");
            return Some(false);
        }
    };
    if matches!(ev.kind, notify::EventKind::Access(_)) {
        return None;
    }
    let mut hit = None;
    for p in &ev.paths {
        if p == root {
            return Some(true);
        }
        if !p.starts_with(root) || is_temp(p) {
            continue;
        }
        hit = Some(false);
    }
    // A rescan request names no path: something was missed.
    if ev.paths.is_empty() && ev.need_rescan() {
        return Some(false);
    }
    hit
}

/// Temp files ([`is_temp_file`]) and hidden entries. Kubernetes' `..data` and `..2026_...` entries are not hidden
/// files: their swap is the change; neither is an OPA bundle's `.manifest`, which is part of the bundle.
fn is_temp(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name != jitgate_engine::rego::opa_manifest::OPA_MANIFEST_FILE
        && (is_temp_file(name) || (name.starts_with('.') && !name.starts_with("..")))
}

/// The gate of a proxy whose config has upstreams for `services`: every route must name one of them (a route to a
/// service without an upstream would answer every request it matches with a 502), then the standard gate. All
/// problems are reported together, each route's by its file and line.
pub fn proxy_gate(services: BTreeSet<String>) -> Box<Gate> {
    Box::new(move |bundle: &Arc<Bundle>| {
        let mut problems = upstream_coverage(bundle, &services);
        if let Err(d) = jitgate_engine::testing::gate(bundle) {
            problems.extend(d.0);
        }
        Diagnostics(problems).into_result()
    })
}

/// One diagnostic per route of `bundle` whose service is not among `services`.
pub fn upstream_coverage(bundle: &Bundle, services: &BTreeSet<String>) -> Vec<Diagnostic> {
    bundle
        .routes
        .routes()
        .iter()
        .filter(|r| !services.contains(&r.service))
        .map(|r| {
            let (file, line) = &r.origin;
            Diagnostic::at(
                file,
                *line,
                1,
                format!(
                    "route `{} {}`: service `{}` has no upstream in the config (add `[upstreams.{}]`; configured: {})",
                    r.method.as_deref().unwrap_or("*"),
                    r.path,
                    r.service,
                    r.service,
                    if services.is_empty() {
                        "none".to_string()
                    } else {
                        services.iter().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::is_temp;
    use std::path::Path;

    /// An OPA bundle's `.manifest` is part of the bundle: editing it must reload, unlike other hidden files.
    #[test]
    fn an_opa_manifest_is_no_temp_file() {
        assert!(!is_temp(Path::new("/b/.manifest")));
        assert!(!is_temp(Path::new("/b/..data")));
        assert!(is_temp(Path::new("/b/.hidden")));
        assert!(is_temp(Path::new("/b/.authz.rego.swp")));
        assert!(!is_temp(Path::new("/b/authz.rego")));
    }
}
