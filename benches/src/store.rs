//! A grant store held in memory, for benchmarks only: the hot path reads the grant index, and touches the store
//! only to spend uses of use-limited grants, which the measured request does not rest on.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use jitgate_engine::UnixTime;
use jitgate_engine::grant::{Grant, GrantStatus};
use jitgate_engine::store::{Store, StoreError};

/// Grants by id behind one mutex.
#[derive(Debug, Default)]
pub struct MemStore {
    grants: Mutex<HashMap<String, Grant>>,
}

impl MemStore {
    /// A store holding `grants`.
    pub fn with_grants(grants: impl IntoIterator<Item = Grant>) -> Self {
        Self {
            grants: Mutex::new(grants.into_iter().map(|g| (g.id.clone(), g)).collect()),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Grant>>, StoreError> {
        self.grants
            .lock()
            .map_err(|_| StoreError::Database("memory store lock poisoned".into()))
    }
}

impl Store for MemStore {
    fn load_grants(&self, now: UnixTime) -> Result<Vec<Grant>, StoreError> {
        Ok(self
            .lock()?
            .values()
            .filter(|g| g.status == GrantStatus::Active && g.expires_at > now)
            .cloned()
            .collect())
    }

    fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.lock()?.insert(grant.id.clone(), grant.clone());
        Ok(())
    }

    fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        Ok(self.lock()?.get(id).cloned())
    }

    fn consume_use(&self, id: &str, now: UnixTime) -> Result<Option<Grant>, StoreError> {
        let mut map = self.lock()?;
        let Some(g) = map.get_mut(id) else {
            return Ok(None);
        };
        if !g.is_active_at(now) || g.max_uses.is_none() {
            return Ok(None);
        }
        g.uses += 1;
        if g.max_uses.is_some_and(|m| g.uses >= m) {
            g.status = GrantStatus::Consumed;
        }
        Ok(Some(g.clone()))
    }

    fn revoke_grant(
        &self,
        id: &str,
        _by: &str,
        _at: UnixTime,
    ) -> Result<Option<Grant>, StoreError> {
        let mut map = self.lock()?;
        let Some(g) = map.get_mut(id) else {
            return Ok(None);
        };
        g.status = GrantStatus::Revoked;
        Ok(Some(g.clone()))
    }
}
