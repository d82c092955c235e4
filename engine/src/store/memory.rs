//! A [`Store`](super::Store) held in memory: for the policy-test runner, benchmarks and tests, where nothing
//! must outlive the process. One mutex over all of it, so every call (a verdict's several writes too) is atomic.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use super::{
    EntityStore, GrantStore, PendingInsert, RecordedVerdict, RequestStore, Spent, StoreError,
    StoredEntity, VerdictError, VerdictWrite, issued_grant, verdict_effect,
};
use crate::access::{AccessRequest, Approval, RequestFilter, RequestState};
use crate::clock::UnixTime;
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};

/// Grants, access requests and approvals in memory, with the semantics of [`crate::sqlite::SqliteStore`].
#[derive(Debug, Default)]
pub struct MemStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// By id, so that listings come out in id order as SQLite's do.
    grants: BTreeMap<String, Grant>,
    requests: HashMap<String, AccessRequest>,
    /// Per request, in insertion order.
    approvals: HashMap<String, Vec<Approval>>,
    /// Entity data by uid (type, then id).
    entities: BTreeMap<EntityRef, StoredEntity>,
}

impl State {
    fn approvals_for(&self, request_id: &str) -> Vec<Approval> {
        let mut list = self.approvals.get(request_id).cloned().unwrap_or_default();
        list.sort_by(|a, b| (a.at, &a.approver).cmp(&(b.at, &b.approver)));
        list
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `grants`.
    pub fn with_grants(grants: impl IntoIterator<Item = Grant>) -> Self {
        let store = Self::default();
        store
            .state
            .lock()
            .grants
            .extend(grants.into_iter().map(|g| (g.id.clone(), g)));
        store
    }
}

impl GrantStore for MemStore {
    fn load_grants(&self, now: UnixTime) -> Result<Vec<Grant>, StoreError> {
        Ok(self
            .state
            .lock()
            .grants
            .values()
            .filter(|g| g.status == GrantStatus::Active && g.expires_at > now)
            .cloned()
            .collect())
    }

    fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.state
            .lock()
            .grants
            .insert(grant.id.clone(), grant.clone());
        Ok(())
    }

    fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        Ok(self.state.lock().grants.get(id).cloned())
    }

    fn consume_use(&self, id: &str, now: UnixTime) -> Result<Option<Grant>, StoreError> {
        let mut state = self.state.lock();
        let Some(g) = state.grants.get_mut(id).filter(|g| g.is_active_at(now)) else {
            return Ok(None);
        };
        g.uses = g.uses.saturating_add(1);
        if g.max_uses.is_some_and(|m| g.uses >= m) {
            g.status = GrantStatus::Consumed;
        }
        Ok(Some(g.clone()))
    }

    fn consume_uses(&self, ids: &[&str], now: UnixTime) -> Result<Spent, StoreError> {
        let mut state = self.state.lock();
        // Checked first, all under the one lock: either every grant has a use left or none is touched.
        if let Some(lost) = ids
            .iter()
            .find(|id| !state.grants.get(**id).is_some_and(|g| g.is_active_at(now)))
        {
            return Ok(Spent::Lost((*lost).to_string()));
        }
        let mut sorted: Vec<&str> = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut spent = Vec::with_capacity(sorted.len());
        for id in sorted {
            if let Some(g) = state.grants.get_mut(id) {
                g.uses = g.uses.saturating_add(1);
                if g.max_uses.is_some_and(|m| g.uses >= m) {
                    g.status = GrantStatus::Consumed;
                }
                spent.push(g.clone());
            }
        }
        Ok(Spent::All(spent))
    }

    fn revoke_grant(
        &self,
        id: &str,
        _by: &str,
        _at: UnixTime,
    ) -> Result<Option<Grant>, StoreError> {
        let mut state = self.state.lock();
        let Some(g) = state.grants.get_mut(id) else {
            return Ok(None);
        };
        if g.status == GrantStatus::Active {
            g.status = GrantStatus::Revoked;
        }
        Ok(Some(g.clone()))
    }
}

impl EntityStore for MemStore {
    fn load_entities(&self) -> Result<Vec<StoredEntity>, StoreError> {
        Ok(self.state.lock().entities.values().cloned().collect())
    }

    fn put_entities(&self, entities: &[StoredEntity]) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        for e in entities {
            state.entities.insert(e.uid.clone(), e.clone());
        }
        Ok(())
    }

    fn delete_entities(&self, uids: &[EntityRef]) -> Result<usize, StoreError> {
        let mut state = self.state.lock();
        Ok(uids
            .iter()
            .filter(|u| state.entities.remove(*u).is_some())
            .count())
    }
}

impl RequestStore for MemStore {
    fn put_access_request(&self, request: &AccessRequest) -> Result<(), StoreError> {
        self.state
            .lock()
            .requests
            .insert(request.id.clone(), request.clone());
        Ok(())
    }

    fn insert_within_pending_cap(
        &self,
        request: &AccessRequest,
        max_pending: u32,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock();
        let pending = state
            .requests
            .values()
            .filter(|r| r.requester == request.requester)
            .filter(|r| r.state == RequestState::Pending && r.expires_at > request.created_at)
            .count();
        if pending >= usize::try_from(max_pending).unwrap_or(usize::MAX) {
            return Ok(false);
        }
        state.requests.insert(request.id.clone(), request.clone());
        Ok(true)
    }

    fn insert_pending_or_reuse(
        &self,
        request: &AccessRequest,
        max_pending: u32,
    ) -> Result<PendingInsert, StoreError> {
        let mut state = self.state.lock();
        let live = |r: &&AccessRequest| {
            r.requester == request.requester
                && r.state == RequestState::Pending
                && r.expires_at > request.created_at
        };
        if request.request_digest.is_some() {
            let existing = state
                .requests
                .values()
                .filter(live)
                .filter(|r| r.role == request.role && r.request_digest == request.request_digest)
                .max_by(|a, b| {
                    a.created_at
                        .cmp(&b.created_at)
                        .then_with(|| b.id.cmp(&a.id))
                });
            if let Some(existing) = existing {
                return Ok(PendingInsert::Existing(Box::new(existing.clone())));
            }
        }
        let pending = state.requests.values().filter(live).count();
        if pending >= usize::try_from(max_pending).unwrap_or(usize::MAX) {
            return Ok(PendingInsert::CapReached);
        }
        state.requests.insert(request.id.clone(), request.clone());
        Ok(PendingInsert::Inserted)
    }

    fn get_access_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        Ok(self.state.lock().requests.get(id).cloned())
    }

    fn list_access_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let state = self.state.lock();
        let mut list: Vec<AccessRequest> = state
            .requests
            .values()
            .filter(|r| filter.requester.as_ref().is_none_or(|q| &r.requester == q))
            .filter(|r| filter.state.is_none_or(|s| r.state == s))
            .filter(|r| filter.role.as_ref().is_none_or(|role| &r.role == role))
            .filter(|r| {
                filter.after.as_ref().is_none_or(|(at, id)| {
                    r.created_at < *at || (r.created_at == *at && r.id.as_str() > id.as_str())
                })
            })
            .cloned()
            .collect();
        list.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        if let Some(limit) = filter.limit {
            list.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok(list)
    }

    fn transition_access_request(
        &self,
        id: &str,
        from: RequestState,
        to: RequestState,
        at: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock();
        match state.requests.get_mut(id) {
            Some(r) if r.state == from && from.may_move_to(to) => {
                r.state = to;
                r.decided_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn add_approval(&self, approval: &Approval) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if !state.requests.contains_key(&approval.request_id) {
            return Err(StoreError::NotFound(format!(
                "access request `{}`",
                approval.request_id
            )));
        }
        let list = state
            .approvals
            .entry(approval.request_id.clone())
            .or_default();
        if list.iter().any(|a| a.approver == approval.approver) {
            return Err(StoreError::Conflict(format!(
                "`{}` already gave a verdict on access request `{}`",
                approval.approver, approval.request_id
            )));
        }
        list.push(approval.clone());
        Ok(())
    }

    fn approvals_for(&self, request_id: &str) -> Result<Vec<Approval>, StoreError> {
        Ok(self.state.lock().approvals_for(request_id))
    }

    fn record_verdict(&self, write: &VerdictWrite) -> Result<RecordedVerdict, VerdictError> {
        let a = &write.approval;
        let mut state = self.state.lock();
        let mut request = state
            .requests
            .get(&a.request_id)
            .cloned()
            .ok_or_else(|| VerdictError::NotFound(a.request_id.clone()))?;
        let before = state.approvals_for(&a.request_id);
        let moved = verdict_effect(&request, &before, write)?;
        // Every check passed: nothing below can fail, so the writes are all or nothing.
        state
            .approvals
            .entry(a.request_id.clone())
            .or_default()
            .push(a.clone());
        let approvals = state.approvals_for(&a.request_id);
        let mut grant = None;
        if let Some(to) = moved {
            request.state = to;
            request.decided_at = Some(a.at);
            state.requests.insert(request.id.clone(), request.clone());
            if to == RequestState::Approved {
                let g = issued_grant(&write.grant, &approvals);
                state.grants.insert(g.id.clone(), g.clone());
                grant = Some(g);
            }
        }
        Ok(RecordedVerdict {
            request,
            approvals,
            grant,
        })
    }
}
