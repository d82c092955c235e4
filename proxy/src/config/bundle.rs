//! `[bundle]` and `[store]`: the policy bundle (with its shadow candidate) and where grants and access requests live.

use std::path::PathBuf;

use serde::Deserialize;

use super::problems::Problems;

/// `[bundle]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundle {
    /// The bundle directory.
    pub path: PathBuf,
    /// Reload on file changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// A candidate bundle decided beside the active one for every request (shadow evaluation); its decisions are
    /// compared, never served.
    #[serde(default)]
    pub shadow: Option<PathBuf>,
}

impl Default for RawBundle {
    fn default() -> Self {
        RawBundle {
            path: PathBuf::from("policies/quickstart-cedar"),
            watch: true,
            shadow: None,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// SQLite file for grants and access requests.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// How many access requests (held ones included) one principal may have pending at once; the next is refused
    /// (409) until one is decided or expires. Bounds what one requester can make the store keep.
    #[serde(default = "default_max_pending")]
    pub max_pending_per_principal: u32,
    /// A PostgreSQL store shared by several replicas (`postgres://user@host:port/db`) instead of the SQLite file;
    /// exclusive with `path`.
    #[serde(default)]
    pub url: Option<String>,
    /// With `url`: how long this replica may go without hearing from the store (a notification, a heartbeat, a
    /// resync) before it denies requests that rest on a grant and reports not ready.
    #[serde(default = "default_max_staleness")]
    pub max_staleness: String,
    /// With `url`: how often the grant index is reloaded whole from the store, beside the notifications.
    #[serde(default = "default_resync_every")]
    pub resync_every: String,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            path: default_store_path(),
            max_pending_per_principal: default_max_pending(),
            url: None,
            max_staleness: default_max_staleness(),
            resync_every: default_resync_every(),
        }
    }
}

fn default_max_staleness() -> String {
    "5s".into()
}

fn default_resync_every() -> String {
    "30s".into()
}

fn default_max_pending() -> u32 {
    20
}

fn default_true() -> bool {
    true
}
fn default_store_path() -> PathBuf {
    PathBuf::from(".jitgate/jitgate.db")
}

/// `[bundle]` and `[store]`, their paths resolved.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    pub(crate) bundle_path: PathBuf,
    pub(crate) bundle_watch: bool,
    pub(crate) bundle_shadow: Option<PathBuf>,
    pub(crate) store_path: PathBuf,
    pub(crate) max_pending_per_principal: u32,
    pub(crate) store_url: Option<String>,
    pub(crate) max_staleness: std::time::Duration,
    pub(crate) resync_every: std::time::Duration,
}

/// Resolves `[bundle]` and `[store]`; of the files nothing can be wrong before they are read, the store URL is
/// read here (reaching the server is start-up's).
pub(crate) fn check(bundle: RawBundle, store: RawStore, p: &mut Problems<'_>) -> Files {
    if let Some(url) = &store.url {
        if store.path != default_store_path() {
            p.err(
                "store.url",
                "`url` (PostgreSQL) and `path` (SQLite) are exclusive: set one".into(),
            );
        }
        if let Err(e) = jitgate_engine::postgres::check_url(url) {
            p.err("store.url", e.to_string());
        }
    }
    let max_staleness = p.timeout("store.max_staleness", &store.max_staleness);
    let resync_every = p.timeout("store.resync_every", &store.resync_every);
    Files {
        store_url: store.url.clone(),
        max_staleness,
        resync_every,
        bundle_path: p.resolve(&bundle.path),
        bundle_watch: bundle.watch,
        bundle_shadow: bundle.shadow.as_deref().map(|s| p.resolve(s)),
        store_path: p.resolve(&store.path),
        max_pending_per_principal: store.max_pending_per_principal,
    }
}
