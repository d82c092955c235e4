//! JIT grants and the in-memory index the hot path reads them from.
//! A grant is active only inside `[starts_at, expires_at)`, while not revoked or used up: activity is always judged
//! at the request's own time, so no background sweeper is needed for safety.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::entity::EntityRef;
use crate::request::Resource;

/// Where a grant is in its life. "Expired" is not stored: it is `Active` past `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GrantStatus {
    /// Approved; usable inside its window.
    #[default]
    Active,
    /// Ended early by an approver or dropped by its holder.
    Revoked,
    /// All of its uses are spent.
    Consumed,
}

impl GrantStatus {
    /// `active`, `revoked` or `consumed`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::Revoked => "revoked",
            GrantStatus::Consumed => "consumed",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(GrantStatus::Active),
            "revoked" => Some(GrantStatus::Revoked),
            "consumed" => Some(GrantStatus::Consumed),
            _ => None,
        }
    }
}

/// A time-bound, approved elevation: `principal` may act as `role` on resources within `scope`
/// from `starts_at` until `expires_at`, optionally for at most `max_uses` requests, or for one exact request
/// (`request_digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Unique id.
    pub id: String,
    /// Who holds it.
    pub principal: EntityRef,
    /// The role it confers (Cedar: membership in `Role::"<role>"`).
    pub role: String,
    /// The resource subtree it covers (the resource itself or an ancestor must equal it).
    pub scope: EntityRef,
    /// First second of validity.
    pub starts_at: UnixTime,
    /// First second of invalidity.
    pub expires_at: UnixTime,
    /// At most this many allowed requests may use it.
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Uses spent so far.
    #[serde(default)]
    pub uses: u32,
    /// Lifecycle status.
    #[serde(default)]
    pub status: GrantStatus,
    /// Who approved it (`policy` for auto-approval).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// The requester's reason.
    #[serde(default)]
    pub reason: String,
    /// Self-activated break-glass access: flagged in every decision that uses it.
    #[serde(default)]
    pub break_glass: bool,
    /// Bound to one exact request: the request digest it answers (one use).
    #[serde(default)]
    pub request_digest: Option<String>,
    /// The access request it came from, if any.
    #[serde(default)]
    pub request_id: Option<String>,
}

impl Grant {
    /// Whether the grant may be used at `now` (status, window and remaining uses).
    pub fn is_active_at(&self, now: UnixTime) -> bool {
        self.status == GrantStatus::Active
            && self.starts_at <= now
            && now < self.expires_at
            && self.max_uses.is_none_or(|m| self.uses < m)
    }

    /// Whether the grant's scope covers `resource`.
    pub fn covers(&self, resource: &Resource) -> bool {
        resource.is_within(&self.scope)
    }

    /// Uses left, when limited.
    pub fn uses_left(&self) -> Option<u32> {
        self.max_uses.map(|m| m.saturating_sub(self.uses))
    }
}

const SHARDS: usize = 64;

type Shard = HashMap<EntityRef, Arc<[Arc<Grant>]>>;

/// The grants, indexed by principal, read lock-free on the hot path.
///
/// Each shard is an immutable map swapped atomically when one of its principals' grants change, so a reader sees
/// either the old or the new set, never a half-updated one, and a change costs a copy of one shard, not a rebuild.
pub struct GrantIndex {
    shards: Box<[ArcSwap<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    writer: Mutex<()>,
}

impl Default for GrantIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for GrantIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantIndex")
            .field("grants", &self.len())
            .finish()
    }
}

impl GrantIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| ArcSwap::from_pointee(Shard::new()))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            writer: Mutex::new(()),
        }
    }

    /// An index holding `grants`.
    pub fn from_grants(grants: impl IntoIterator<Item = Grant>) -> Self {
        let idx = Self::new();
        idx.replace_all(grants);
        idx
    }

    fn shard_of(&self, principal: &EntityRef) -> &ArcSwap<Shard> {
        let i = (self.hasher.hash_one(principal) as usize) % SHARDS;
        // `i < SHARDS == shards.len()` by construction.
        &self.shards[i]
    }

    /// All grants of `principal` (any status); the caller filters by time and scope.
    pub fn for_principal(&self, principal: &EntityRef) -> Option<Arc<[Arc<Grant>]>> {
        self.shard_of(principal).load().get(principal).cloned()
    }

    /// Adds or replaces a grant (matched by id). A grant never comes back from an end: an active copy does not
    /// replace a revoked or consumed one, nor one with more uses spent (a late write of an older row is ignored).
    pub fn upsert(&self, grant: Grant) {
        let _w = self.writer.lock();
        let shard = self.shard_of(&grant.principal);
        let older = shard
            .load()
            .get(&grant.principal)
            .and_then(|l| l.iter().find(|g| g.id == grant.id).cloned())
            .is_some_and(|held| {
                held.status != GrantStatus::Active && grant.status == GrantStatus::Active
                    || held.status == grant.status && held.uses > grant.uses
            });
        if older {
            return;
        }
        let mut map: Shard = (**shard.load()).clone();
        let mut list: Vec<Arc<Grant>> = map
            .get(&grant.principal)
            .map(|l| l.iter().filter(|g| g.id != grant.id).cloned().collect())
            .unwrap_or_default();
        let principal = grant.principal.clone();
        list.push(Arc::new(grant));
        map.insert(principal, list.into());
        shard.store(Arc::new(map));
    }

    /// Removes a grant by principal and id; returns whether it was there.
    pub fn remove(&self, principal: &EntityRef, id: &str) -> bool {
        let _w = self.writer.lock();
        let shard = self.shard_of(principal);
        let mut map: Shard = (**shard.load()).clone();
        let Some(list) = map.get(principal) else {
            return false;
        };
        let kept: Vec<Arc<Grant>> = list.iter().filter(|g| g.id != id).cloned().collect();
        let removed = kept.len() != list.len();
        if kept.is_empty() {
            map.remove(principal);
        } else {
            map.insert(principal.clone(), kept.into());
        }
        shard.store(Arc::new(map));
        removed
    }

    /// Replaces the whole index (start-up, or a resync from the store).
    pub fn replace_all(&self, grants: impl IntoIterator<Item = Grant>) {
        let _w = self.writer.lock();
        let mut maps: Vec<HashMap<EntityRef, Vec<Arc<Grant>>>> =
            (0..SHARDS).map(|_| HashMap::new()).collect();
        for g in grants {
            let i = (self.hasher.hash_one(&g.principal) as usize) % SHARDS;
            if let Some(m) = maps.get_mut(i) {
                m.entry(g.principal.clone()).or_default().push(Arc::new(g));
            }
        }
        for (shard, m) in self.shards.iter().zip(maps) {
            shard.store(Arc::new(
                m.into_iter().map(|(k, v)| (k, v.into())).collect(),
            ));
        }
    }

    /// Drops grants that can never be active again as of `now` (expired, revoked, consumed). Optional hygiene.
    pub fn compact(&self, now: UnixTime) {
        let _w = self.writer.lock();
        let live = |g: &Arc<Grant>| g.status == GrantStatus::Active && g.expires_at > now;
        for shard in self.shards.iter() {
            let map = shard.load();
            // A shard with nothing to drop is left as it is: no copy, and readers keep their snapshot.
            if map.values().all(|l| l.iter().all(live)) {
                continue;
            }
            let new: Shard = map
                .iter()
                .filter_map(|(p, l)| {
                    let kept: Vec<Arc<Grant>> = l.iter().filter(|g| live(g)).cloned().collect();
                    (!kept.is_empty()).then(|| (p.clone(), kept.into()))
                })
                .collect();
            shard.store(Arc::new(new));
        }
    }

    /// Number of grants held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.load().values().map(|l| l.len()).sum::<usize>())
            .sum()
    }

    /// Whether the index holds no grant.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn grant(id: &str, who: &str, role: &str, scope: &str, from: i64, to: i64) -> Grant {
        Grant {
            id: id.into(),
            principal: EntityRef::new("User", who),
            role: role.into(),
            scope: scope.parse().unwrap(),
            starts_at: from,
            expires_at: to,
            max_uses: None,
            uses: 0,
            status: GrantStatus::Active,
            approvers: vec![],
            reason: String::new(),
            break_glass: false,
            request_digest: None,
            request_id: None,
        }
    }

    #[test]
    fn window_is_half_open() {
        let g = grant("g", "a", "r", r#"Service::"s""#, 100, 200);
        assert!(!g.is_active_at(99));
        assert!(g.is_active_at(100));
        assert!(g.is_active_at(199));
        assert!(!g.is_active_at(200));
        let mut used = g.clone();
        used.max_uses = Some(1);
        used.uses = 1;
        assert!(!used.is_active_at(150));
        let mut revoked = g;
        revoked.status = GrantStatus::Revoked;
        assert!(!revoked.is_active_at(150));
    }

    /// Writes that reach the index late (a use spent before a revocation, upserted after it) never bring a grant
    /// back from its end, nor give back a spent use.
    #[test]
    fn a_late_older_copy_never_replaces_a_newer_one() {
        let idx = GrantIndex::new();
        let a = EntityRef::new("User", "a");
        let mut spent = grant("g1", "a", "r", r#"Service::"s""#, 0, 10);
        spent.max_uses = Some(5);
        spent.uses = 1;
        let mut revoked = spent.clone();
        revoked.status = GrantStatus::Revoked;
        idx.upsert(revoked);
        idx.upsert(spent.clone());
        let held = idx.for_principal(&a).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].status, GrantStatus::Revoked);
        assert!(!held[0].is_active_at(5));
        // Uses only grow.
        let mut more = spent.clone();
        more.id = "g2".into();
        more.uses = 3;
        idx.upsert(more.clone());
        let mut stale = more.clone();
        stale.uses = 2;
        idx.upsert(stale);
        assert_eq!(
            idx.for_principal(&a)
                .unwrap()
                .iter()
                .find(|g| g.id == "g2")
                .unwrap()
                .uses,
            3
        );
        // A newer copy still replaces: a spent use, then the end.
        let mut next = more.clone();
        next.uses = 4;
        idx.upsert(next.clone());
        next.status = GrantStatus::Consumed;
        idx.upsert(next);
        let g2 = idx
            .for_principal(&a)
            .unwrap()
            .iter()
            .find(|g| g.id == "g2")
            .cloned()
            .unwrap();
        assert_eq!((g2.uses, g2.status), (4, GrantStatus::Consumed));
    }

    #[test]
    fn index_upsert_and_remove() {
        let idx = GrantIndex::new();
        idx.upsert(grant("g1", "a", "r", r#"Service::"s""#, 0, 10));
        idx.upsert(grant("g2", "a", "r", r#"Service::"s""#, 0, 10));
        idx.upsert(grant("g3", "b", "r", r#"Service::"s""#, 0, 10));
        let a = EntityRef::new("User", "a");
        assert_eq!(idx.for_principal(&a).unwrap().len(), 2);
        let mut g1 = grant("g1", "a", "r", r#"Service::"s""#, 0, 10);
        g1.status = GrantStatus::Revoked;
        idx.upsert(g1);
        let list = idx.for_principal(&a).unwrap();
        assert_eq!(list.len(), 2);
        assert!(
            list.iter()
                .any(|g| g.id == "g1" && g.status == GrantStatus::Revoked)
        );
        assert!(idx.remove(&a, "g2"));
        assert_eq!(idx.len(), 2);
        idx.compact(5);
        assert_eq!(idx.len(), 1);
    }
}
