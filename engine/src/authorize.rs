//! The authorization hot path: look up the caller's grants, assemble the decision's input, decide, spend uses.
//! The bundle is swapped atomically by reloads; grants live in an index that follows the store.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::bundle::Bundle;
use crate::clock::Clock;
use crate::decision::{Decision, Effect};
use crate::grant::{Grant, GrantIndex};
use crate::input::DecisionInput;
use crate::request::AuthzRequest;
use crate::store::{Freshness, GrantStore, Spent, StoreError};

/// How many times a decision is retried when a concurrent request spent the grant it rested on.
const MAX_CONSUME_RETRIES: usize = 3;

/// The engine as the proxy and the tools use it: the active bundle, the grant index and the store.
#[derive(Debug)]
pub struct Authorizer {
    bundle: ArcSwap<Bundle>,
    grants: Arc<GrantIndex>,
    store: Arc<dyn GrantStore>,
    clock: Clock,
    /// Held across each grant write to the store and its upsert into the index, so the index applies writes in
    /// the order the store committed them: a spent use read before a revocation can never land after it and make
    /// the revoked grant active again.
    writes: parking_lot::Mutex<()>,
    /// For a store shared by replicas: how recently it was heard from. While it is stale, decisions that rest on
    /// a grant are denied (the index may miss a revocation made through another replica).
    freshness: Option<Arc<Freshness>>,
}

impl Authorizer {
    /// Builds an authorizer and fills the grant index from the store. `bundle` is a [`Bundle`] or an
    /// `Arc<Bundle>` already shared (e.g. with the gate that checked it).
    pub fn new(
        bundle: impl Into<Arc<Bundle>>,
        store: Arc<dyn GrantStore>,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let grants = Arc::new(GrantIndex::from_grants(store.load_grants(clock.now())?));
        Ok(Self {
            bundle: ArcSwap::new(bundle.into()),
            grants,
            store,
            clock,
            writes: parking_lot::Mutex::new(()),
            freshness: None,
        })
    }

    /// Makes decisions that rest on a grant depend on `freshness`: denied while the store has been silent for
    /// longer than its bound.
    pub fn with_freshness(mut self, freshness: Arc<Freshness>) -> Self {
        self.freshness = Some(freshness);
        self
    }

    /// How recently the shared store was heard from (`None`: a store of this process only, always current).
    pub fn freshness(&self) -> Option<&Arc<Freshness>> {
        self.freshness.as_ref()
    }

    /// Reads grant `id` from the store and puts it in the index as stored now (e.g. when another replica changed
    /// it). Returns it, or `None` when the store has no such grant.
    pub fn refresh_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        let _w = self.writes.lock();
        let grant = self.store.get_grant(id)?;
        if let Some(g) = &grant {
            self.grants.upsert(g.clone());
        }
        Ok(grant)
    }

    /// Replaces the whole index with the grants the store holds now (a resync); returns how many.
    pub fn resync_grants(&self) -> Result<usize, StoreError> {
        let _w = self.writes.lock();
        let grants = self.store.load_grants(self.clock.now())?;
        let n = grants.len();
        self.grants.replace_all(grants);
        Ok(n)
    }

    /// The active bundle snapshot. A request keeps the snapshot it started with, whatever reloads happen meanwhile.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle.load_full()
    }

    /// Makes `bundle` the active snapshot; returns the one it replaced.
    pub fn swap_bundle(&self, bundle: Arc<Bundle>) -> Arc<Bundle> {
        self.bundle.swap(bundle)
    }

    /// The grant index.
    pub fn grants(&self) -> &Arc<GrantIndex> {
        &self.grants
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn GrantStore> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Persists a grant, then makes it visible to the next decision.
    pub fn put_grant(&self, grant: Grant) -> Result<(), StoreError> {
        let _w = self.writes.lock();
        self.store.put_grant(&grant)?;
        self.grants.upsert(grant);
        Ok(())
    }

    /// Makes a grant the store already committed (e.g. with a verdict, [`crate::store::RequestStore::record_verdict`])
    /// visible to the next decision.
    pub fn index_grant(&self, grant: Grant) {
        let _w = self.writes.lock();
        self.grants.upsert(grant);
    }

    /// Revokes a grant: committed to the store first, then visible to the very next decision.
    pub fn revoke_grant(&self, id: &str, by: &str) -> Result<Option<Grant>, StoreError> {
        let _w = self.writes.lock();
        let revoked = self.store.revoke_grant(id, by, self.clock.now())?;
        if let Some(g) = &revoked {
            self.grants.upsert(g.clone());
        }
        Ok(revoked)
    }

    /// Drops the grants that can never be active again (expired, revoked, consumed) from the index, so a
    /// principal's history does not grow what each of its requests copies. The store keeps them.
    pub fn compact_grants(&self) {
        let _w = self.writes.lock();
        self.grants.compact(self.clock.now());
    }

    /// Decides `request` against `bundle` (normally [`Authorizer::bundle`]), spending one use of every use-limited
    /// grant the decision rests on. Any store error is a deny.
    ///
    /// When a concurrent request spent the last use first, the decision is made again without that grant, so exactly
    /// one of many concurrent requests gets a one-use grant.
    pub fn decide(&self, bundle: &Bundle, request: &AuthzRequest) -> Decision {
        self.decide_bound(bundle, request, None)
    }

    /// [`Authorizer::decide`] for a caller whose credential is bound to one grant (`bound`, e.g. a token minted
    /// for a pipeline): only that grant of the caller's is materialized, and the grants for one exact request (an
    /// approved hold), so the credential carries its grant's authority and not the holder's other grants. `None`
    /// gives every grant, as `decide` does.
    pub fn decide_bound(
        &self,
        bundle: &Bundle,
        request: &AuthzRequest,
        bound: Option<&str>,
    ) -> Decision {
        let now = request.context.time;
        let mut grants: Vec<Arc<Grant>> = self
            .grants
            .for_principal(&request.principal.entity)
            .map(|g| g.to_vec())
            .unwrap_or_default();
        if let Some(id) = bound {
            // Grants for one exact request (an approved hold) stay: they open only the identical request, so a
            // bound token's held request can still be released once it is approved.
            grants.retain(|g| g.id == id || g.request_digest.is_some());
        }
        for _ in 0..MAX_CONSUME_RETRIES {
            // Assembled once per attempt: a retry decides without the grant it lost.
            let input = DecisionInput::new(request, &grants);
            let decision = bundle.decide_input(&input);
            if decision.effect != Effect::Allow {
                return decision;
            }
            let stale = self.freshness.as_ref().filter(|f| f.is_stale());
            if let Some(f) = stale.filter(|_| !decision.grants_used.is_empty()) {
                return Decision::error(
                    &bundle.revision,
                    bundle.engine(),
                    format!(
                        "the grant store has not been heard from for {}ms (max_staleness {}ms): decisions resting \
                         on a grant are denied until it is",
                        f.silent_for().as_millis(),
                        f.bound().as_millis()
                    ),
                );
            }
            let limited: Vec<&str> = decision
                .grants_used
                .iter()
                .filter_map(|id| grants.iter().find(|g| &g.id == id))
                .filter(|g| g.max_uses.is_some())
                .map(|g| g.id.as_str())
                .collect();
            if limited.is_empty() {
                // The common allow touches no store.
                return decision;
            }
            let writes = self.writes.lock();
            // All or nothing: a decision resting on two use-limited grants spends both or neither.
            match self.store.consume_uses(&limited, now) {
                Ok(Spent::All(spent)) => {
                    for g in spent {
                        self.grants.upsert(g);
                    }
                    return decision;
                }
                // Someone else took the last use: refresh that grant from the store and decide again without it.
                Ok(Spent::Lost(id)) => {
                    if let Ok(Some(fresh)) = self.store.get_grant(&id) {
                        self.grants.upsert(fresh);
                    }
                    drop(writes);
                    grants.retain(|g| g.id != id);
                }
                Err(e) => {
                    return Decision::error(&bundle.revision, bundle.engine(), e.to_string());
                }
            }
        }
        Decision::error(
            &bundle.revision,
            bundle.engine(),
            "grant uses contended; retry the request",
        )
    }
}
