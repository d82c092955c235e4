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
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            path: default_store_path(),
            max_pending_per_principal: default_max_pending(),
        }
    }
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
}

/// Resolves `[bundle]` and `[store]` (nothing there can be wrong before the files are read).
pub(crate) fn check(bundle: RawBundle, store: RawStore, p: &Problems<'_>) -> Files {
    Files {
        bundle_path: p.resolve(&bundle.path),
        bundle_watch: bundle.watch,
        bundle_shadow: bundle.shadow.as_deref().map(|s| p.resolve(s)),
        store_path: p.resolve(&store.path),
        max_pending_per_principal: store.max_pending_per_principal,
    }
}
