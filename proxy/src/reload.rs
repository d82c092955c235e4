//! Hot reload: watch the bundle directory, debounce bursts, build the new snapshot off the request path, run the
//! gate (full validation and the bundle's own tests), and swap atomically. A bundle that fails the gate never goes
//! live: the active one keeps serving and the failure is reported (log line, status, metric).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jitgate_engine::clock::now_system;
use jitgate_engine::{Authorizer, Bundle, Diagnostic, Diagnostics, UnixTime};
use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::Metrics;

/// How long the directory must be quiet before a reload starts (editors and `git pull` write in bursts).
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// The outcome of one reload attempt.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attempt {
    /// When it ran (Unix seconds).
    pub at: UnixTime,
    /// `live` (a new revision went live), `unchanged` (same revision), or `failed`.
    pub outcome: String,
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
        let result = Bundle::load(&self.path)
            .map(Arc::new)
            .and_then(|b| (self.gate)(&b).map(|()| b));
        let duration_ms = started.elapsed().as_millis() as u64;
        let attempt = match result {
            Err(d) => {
                for e in &d.0 {
                    tracing::error!(bundle = %self.path.display(), error = %e, "bundle reload refused; the active bundle keeps serving");
                }
                self.metrics.reloads.inc("failed");
                Attempt {
                    at,
                    outcome: "failed".into(),
                    revision: None,
                    errors: d.0,
                    duration_ms,
                }
            }
            Ok(b) if b.revision == self.authorizer.bundle().revision => Attempt {
                at,
                outcome: "unchanged".into(),
                revision: Some(b.revision.clone()),
                errors: Vec::new(),
                duration_ms,
            },
            Ok(b) => {
                let revision = b.revision.clone();
                let old = self.authorizer.swap_bundle(b);
                tracing::info!(from = %old.short_revision(), to = %revision.get(..12).unwrap_or(&revision), ms = duration_ms, "bundle reloaded");
                self.metrics.reloads.inc("ok");
                let mut s = self.status.lock();
                s.active_revision = revision.clone();
                s.active_since = at;
                Attempt {
                    at,
                    outcome: "live".into(),
                    revision: Some(revision),
                    errors: Vec::new(),
                    duration_ms,
                }
            }
        };
        self.status.lock().last_attempt = Some(attempt.clone());
        attempt
    }

    /// Watches the bundle directory (recursively, plus its parent so that a swapped symlink is seen) and reloads
    /// after each quiet period. The returned guard stops watching when dropped.
    pub fn watch(self: &Arc<Self>) -> Result<WatchGuard, notify::Error> {
        let (tx, rx) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx)?;
        watcher.watch(&self.path, RecursiveMode::Recursive)?;
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("jitgate-reload".into())
            .spawn(move || {
                // Blocks until the first relevant event, then waits for quiet, then reloads; ends when the watcher
                // (the sender) is dropped.
                while let Ok(ev) = rx.recv() {
                    if !relevant(&ev) {
                        continue;
                    }
                    loop {
                        match rx.recv_timeout(DEBOUNCE) {
                            Ok(_) => continue,
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    me.reload_now();
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(WatchGuard {
            _watcher: Box::new(watcher),
            _thread: thread,
        })
    }
}

/// Keeps the file watcher alive.
pub struct WatchGuard {
    _watcher: Box<dyn Watcher + Send>,
    _thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchGuard")
    }
}

/// Editor temp files and access-only events never trigger a reload.
fn relevant(ev: &notify::Result<notify::Event>) -> bool {
    let Ok(ev) = ev else { return true };
    if matches!(ev.kind, notify::EventKind::Access(_)) {
        return false;
    }
    ev.paths.iter().any(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let temp = name.ends_with('~')
            || name.ends_with(".swp")
            || name.ends_with(".swx")
            || name.ends_with(".tmp")
            || name == "4913"
            || (name.starts_with('.') && !name.starts_with(".."));
        !temp
    })
}

/// The standard gate: full validation (done by loading) and the bundle's own tests.
pub fn standard_gate() -> Box<Gate> {
    Box::new(jitgate_engine::testing::gate)
}
