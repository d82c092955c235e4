//! Shadow evaluation: a candidate bundle decides every request beside the active one, after the active decision,
//! with the same request and grants; only the active decision is ever served. Disagreements are counted and kept.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use jitgate_engine::clock::now_system;
use jitgate_engine::{AuthzRequest, Bundle, Decision, Diagnostics, Effect, Grant, GrantIndex};
use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::Metrics;

/// How many disagreements are kept for `GET /v1/shadow` (the oldest are dropped first).
pub const RING_CAPACITY: usize = 256;

/// One side of a comparison.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Side {
    /// `allow`, `deny` or `hold`.
    pub effect: String,
    /// The determining policies.
    pub policies: Vec<String>,
    /// The bundle revision that decided.
    pub revision: String,
    /// Evaluation errors (an error is a deny).
    pub errors: Vec<String>,
}

impl From<&Decision> for Side {
    fn from(d: &Decision) -> Self {
        Side {
            effect: d.effect.as_str().to_string(),
            policies: d.policies.clone(),
            revision: d.revision.clone(),
            errors: d.errors.clone(),
        }
    }
}

/// A request the candidate decided differently from the active bundle.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Disagreement {
    /// When (Unix seconds).
    pub at: i64,
    /// The principal (`User::"alice"`).
    pub principal: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// What the active bundle decided (and served).
    pub active: Side,
    /// What the candidate would have decided.
    pub shadow: Side,
}

/// The candidate in use.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Candidate {
    /// Its directory.
    pub path: String,
    /// Its revision.
    pub revision: String,
    /// When it started shadowing (Unix seconds).
    pub since: i64,
}

/// What `GET /v1/shadow` reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShadowStatus {
    /// The candidate, if one is set.
    pub candidate: Option<Candidate>,
    /// Requests decided by both bundles since the candidate was set (after a clear: the last candidate's count).
    pub compared: u64,
    /// Requests decided differently since the candidate was set (kept after a clear, like `compared`).
    pub disagreements: u64,
    /// The most recent disagreements, oldest first (at most [`RING_CAPACITY`]).
    pub recent: Vec<Disagreement>,
}

struct Active {
    bundle: Arc<Bundle>,
    info: Candidate,
}

/// The shadow evaluator, shared by all requests. Costs one atomic load per request when no candidate is set.
pub struct Shadow {
    candidate: ArcSwapOption<Active>,
    compared: AtomicU64,
    disagreements: AtomicU64,
    recent: Mutex<VecDeque<Disagreement>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field(
                "candidate",
                &self.candidate.load().as_ref().map(|a| a.info.clone()),
            )
            .field("compared", &self.compared.load(Ordering::Relaxed))
            .finish()
    }
}

impl Shadow {
    /// An evaluator with no candidate; disagreements also count in `metrics.shadow_disagreements`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Shadow {
            candidate: ArcSwapOption::empty(),
            compared: AtomicU64::new(0),
            disagreements: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
            metrics,
        }
    }

    /// Loads the bundle at `path` (full validation) and makes it the candidate. Blocking: call off the runtime.
    /// A bundle that does not load changes nothing.
    pub fn load(&self, path: &Path) -> Result<Candidate, Diagnostics> {
        let bundle = Bundle::load(path)?;
        Ok(self.set(Arc::new(bundle)))
    }

    /// Makes `bundle` the candidate and starts counting afresh.
    pub fn set(&self, bundle: Arc<Bundle>) -> Candidate {
        let info = Candidate {
            path: bundle.dir.display().to_string(),
            revision: bundle.revision.clone(),
            since: now_system(),
        };
        self.recent.lock().clear();
        self.compared.store(0, Ordering::Relaxed);
        self.disagreements.store(0, Ordering::Relaxed);
        self.candidate.store(Some(Arc::new(Active {
            bundle,
            info: info.clone(),
        })));
        tracing::info!(path = %info.path, revision = %info.revision, "shadow evaluation started");
        info
    }

    /// Stops shadow evaluation; returns the candidate that was set. Its counts and disagreements stay readable
    /// until the next candidate is set.
    pub fn clear(&self) -> Option<Candidate> {
        let old = self.candidate.swap(None).map(|a| a.info.clone());
        if let Some(c) = &old {
            tracing::info!(path = %c.path, revision = %c.revision, "shadow evaluation stopped");
        }
        old
    }

    /// Whether a candidate is set.
    pub fn is_active(&self) -> bool {
        self.candidate.load().is_some()
    }

    /// Decides `request` with the candidate, after the active decision `served`, and records a disagreement.
    ///
    /// The candidate sees the caller's grants as the active decision saw them: a use the active decision just
    /// spent is given back for the comparison (uses are never spent by the shadow). Requests are mapped by the
    /// active bundle's routes; a candidate with different routes is compared on the active mapping.
    pub fn observe(&self, grants: &GrantIndex, request: &AuthzRequest, served: &Decision) {
        let guard = self.candidate.load();
        let Some(active) = guard.as_ref() else {
            return;
        };
        let mut mine: Vec<Arc<Grant>> = grants
            .for_principal(&request.principal.entity)
            .map(|g| g.to_vec())
            .unwrap_or_default();
        if served.effect == Effect::Allow {
            for g in mine.iter_mut() {
                if g.max_uses.is_some() && g.uses > 0 && served.grants_used.contains(&g.id) {
                    let mut before = (**g).clone();
                    before.uses -= 1;
                    *g = Arc::new(before);
                }
            }
        }
        let candidate = active.bundle.decide(request, &mine);
        self.compared.fetch_add(1, Ordering::Relaxed);
        if candidate.effect == served.effect {
            return;
        }
        self.disagreements.fetch_add(1, Ordering::Relaxed);
        self.metrics.shadow_disagreements.inc();
        let d = Disagreement {
            at: request.context.time,
            principal: request.principal.entity.to_string(),
            action: request.action.clone(),
            resource: request.resource.entity.to_string(),
            active: Side::from(served),
            shadow: Side::from(&candidate),
        };
        tracing::info!(
            principal = %d.principal, action = %d.action, resource = %d.resource,
            active = %d.active.effect, active_policies = ?d.active.policies,
            shadow = %d.shadow.effect, shadow_policies = ?d.shadow.policies,
            shadow_revision = %candidate.revision,
            "shadow bundle disagrees"
        );
        let mut ring = self.recent.lock();
        if ring.len() >= RING_CAPACITY {
            ring.pop_front();
        }
        ring.push_back(d);
    }

    /// The candidate, the counts and the recent disagreements.
    pub fn status(&self) -> ShadowStatus {
        ShadowStatus {
            candidate: self.candidate.load().as_ref().map(|a| a.info.clone()),
            compared: self.compared.load(Ordering::Relaxed),
            disagreements: self.disagreements.load(Ordering::Relaxed),
            recent: self.recent.lock().iter().cloned().collect(),
        }
    }
}
