//! The authorization hot path: look up the caller's grants, assemble the decision's input, decide, spend uses.
//! The bundle is swapped atomically by reloads; grants live in an index that follows the store.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::bundle::Bundle;
use crate::clock::Clock;
use crate::decision::{Decision, Effect};
use crate::grant::{Grant, GrantIndex};
use crate::input::DecisionInput;
use crate::overlay::EntityProblem;
use crate::request::AuthzRequest;
use crate::store::{EntityStore, Freshness, GrantStore, Spent, StoreError, StoredEntity};

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
    /// Where entity data that changes between releases is kept ([`Authorizer::with_entity_store`]).
    entity_store: Option<Arc<dyn EntityStore>>,
    /// The store's entity data the active bundle has over its own, by uid; held across each change of it (a write,
    /// a resync, a bundle swap) so that they apply in order.
    store_entities: parking_lot::Mutex<Arc<Vec<StoredEntity>>>,
    /// Why the store's entity data as read last could not be applied (the last good data keeps deciding).
    entity_fault: parking_lot::Mutex<Option<String>>,
}

/// Why a change of the store's entity data was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntityError {
    /// The active bundle does not accept the data (schema, parent cycle): each problem names the uid; nothing was
    /// written.
    #[error("entity data refused: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<EntityProblem>),
    /// No entity store is configured.
    #[error("this authorizer keeps no entity data")]
    NoStore,
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
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
            entity_store: None,
            store_entities: parking_lot::Mutex::new(Arc::new(Vec::new())),
            entity_fault: parking_lot::Mutex::new(None),
        })
    }

    /// Takes entity data from `store` too: read now and put over the active bundle's. `Err` when it cannot be read,
    /// or when the bundle does not accept it (each problem names the uid).
    pub fn with_entity_store(mut self, store: Arc<dyn EntityStore>) -> Result<Self, EntityError> {
        let loaded = store.load_entities()?;
        self.bundle
            .load()
            .set_store_entities(&loaded)
            .map_err(EntityError::Invalid)?;
        self.store_entities = parking_lot::Mutex::new(Arc::new(loaded));
        self.entity_store = Some(store);
        Ok(self)
    }

    /// The store's entity data the active bundle has over its own, ordered by type then id.
    pub fn store_entities(&self) -> Arc<Vec<StoredEntity>> {
        self.store_entities.lock().clone()
    }

    /// Why the store's entity data as last read does not apply to the active bundle (the data applied before keeps
    /// deciding), if it does not.
    pub fn entity_fault(&self) -> Option<String> {
        self.entity_fault.lock().clone()
    }

    /// Inserts or replaces `entities` (by uid) in the store's entity data: the whole data as it would be is checked
    /// against the active bundle first (nothing is written when it does not fit), then committed to the store, then
    /// seen by the very next decision. Returns how many entities the store's data holds now.
    pub fn put_entities(&self, entities: Vec<StoredEntity>) -> Result<usize, EntityError> {
        let store = self.entity_store.as_ref().ok_or(EntityError::NoStore)?;
        let mut current = self.store_entities.lock();
        let mut next: std::collections::BTreeMap<crate::EntityRef, StoredEntity> =
            current.iter().map(|e| (e.uid.clone(), e.clone())).collect();
        for e in &entities {
            next.insert(e.uid.clone(), e.clone());
        }
        let next: Vec<StoredEntity> = next.into_values().collect();
        self.apply_entities(&next, || store.put_entities(&entities))?;
        let n = next.len();
        *current = Arc::new(next);
        Ok(n)
    }

    /// Removes the entities with these uids from the store's entity data (unknown ones are ignored): checked,
    /// committed, then seen by the next decision, as [`Authorizer::put_entities`] does. Returns how many were there.
    pub fn delete_entities(&self, uids: &[crate::EntityRef]) -> Result<usize, EntityError> {
        let store = self.entity_store.as_ref().ok_or(EntityError::NoStore)?;
        let mut current = self.store_entities.lock();
        let next: Vec<StoredEntity> = current
            .iter()
            .filter(|e| !uids.contains(&e.uid))
            .cloned()
            .collect();
        let mut deleted = 0;
        self.apply_entities(&next, || {
            deleted = store.delete_entities(uids)?;
            Ok(())
        })?;
        *current = Arc::new(next);
        Ok(deleted)
    }

    /// Checks `next` against the active bundle, runs `write`, then puts `next` over the bundle's data.
    fn apply_entities(
        &self,
        next: &[StoredEntity],
        write: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), EntityError> {
        let bundle = self.bundle.load_full();
        bundle
            .check_store_entities(next)
            .map_err(EntityError::Invalid)?;
        write()?;
        // Checked above against this very bundle: only a bug could make it fail now.
        if let Err(p) = bundle.set_store_entities(next) {
            return Err(EntityError::Invalid(p));
        }
        *self.entity_fault.lock() = None;
        Ok(())
    }

    /// Reads the store's entity data again (another replica may have changed it) and puts it over the active
    /// bundle's when it differs. When the bundle does not accept it, the data applied before keeps deciding and
    /// the reason is kept ([`Authorizer::entity_fault`]). Returns how many entities the store holds.
    pub fn resync_entities(&self) -> Result<usize, StoreError> {
        let Some(store) = &self.entity_store else {
            return Ok(0);
        };
        let mut current = self.store_entities.lock();
        let loaded = store.load_entities()?;
        let n = loaded.len();
        if **current == loaded {
            return Ok(n);
        }
        match self.bundle.load().set_store_entities(&loaded) {
            Ok(()) => {
                *current = Arc::new(loaded);
                *self.entity_fault.lock() = None;
            }
            Err(problems) => {
                let why = problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(error = %why, "the store's entity data does not fit the active bundle; the data applied before keeps deciding");
                *self.entity_fault.lock() = Some(why);
            }
        }
        Ok(n)
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

    /// Makes `bundle` the active snapshot, with the store's entity data over its own; returns the one it replaced.
    /// A bundle that does not accept the store's entity data is refused (each problem names the uid) and the active
    /// one keeps deciding.
    pub fn try_swap_bundle(&self, bundle: Arc<Bundle>) -> Result<Arc<Bundle>, Vec<EntityProblem>> {
        let current = self.store_entities.lock();
        if self.entity_store.is_some() {
            bundle.set_store_entities(&current)?;
        }
        Ok(self.bundle.swap(bundle))
    }

    /// [`Authorizer::try_swap_bundle`] for a bundle known to accept the store's entity data (or where none is kept);
    /// should it not, it goes live without the store's data and the reason is kept ([`Authorizer::entity_fault`]).
    pub fn swap_bundle(&self, bundle: Arc<Bundle>) -> Arc<Bundle> {
        let current = self.store_entities.lock();
        if self.entity_store.is_some() {
            if let Err(p) = bundle.set_store_entities(&current) {
                let why = p
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(error = %why, "the new bundle does not accept the store's entity data");
                *self.entity_fault.lock() = Some(why);
            }
        }
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
