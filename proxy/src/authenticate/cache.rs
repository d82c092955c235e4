//! The verified-token cache: SHA-256 of a token -> the identity it proved and the fingerprint of the key that
//! verified it, until the token's `exp` or the issuer's `cache_max_age_secs`, whichever comes first.
//! Sharded RwLock'd maps so a hit is one hash and one read lock (and a look at the issuer's current key set);
//! bounded, evicting expired entries first.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use super::Identity;
use super::jwks::Fingerprint;

const SHARDS: usize = 16;

/// A cached identity and the window in which the cache may serve it.
pub(crate) struct Entry {
    pub(crate) identity: Arc<Identity>,
    /// The token's `exp`, or when the entry was cached plus the issuer's cache max age if earlier: never served
    /// at or after it (the token is then verified again).
    pub(crate) until: i64,
    /// The token's `nbf` less the leeway, if any: never served before it (clocks in tests may go back).
    pub(crate) not_before: Option<i64>,
    /// The fingerprint of the key that verified the token: the entry is served only while its issuer's key set
    /// holds that very key. A `kid` alone is not enough: an issuer may put a new key behind an old `kid`, or
    /// publish keys without one.
    pub(crate) fingerprint: Fingerprint,
}

pub(crate) type TokenKey = [u8; 32];

/// Hashes a token into its cache key.
pub(crate) fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

/// Hashes a [`TokenKey`] by eight of its bytes (the 9th to the 16th: the first picks the shard). The key is already a SHA-256 digest, uniform and out of an
/// attacker's choosing (only verified tokens are cached), so SipHash over its 32 bytes would add nothing but work on
/// every request.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length (a `usize`, through `write_usize`) then its bytes: keep the bytes'.
        let mut b = [0u8; 8];
        for (d, s) in b.iter_mut().zip(bytes.iter().skip(8)) {
            *d = *s;
        }
        self.0 ^= u64::from_le_bytes(b);
    }
    fn write_usize(&mut self, _: usize) {}
}

type Shard = HashMap<TokenKey, Entry, BuildHasherDefault<DigestHasher>>;

pub(crate) struct TokenCache {
    shards: Vec<RwLock<Shard>>,
    per_shard: usize,
}

impl TokenCache {
    /// A cache holding about `capacity` tokens (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS);
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard,
        }
    }

    fn shard(&self, key: &TokenKey) -> Option<&RwLock<Shard>> {
        self.shards.get(usize::from(key[0]) % SHARDS)
    }

    /// The identity for this token if it was verified before, `now` is inside its window, and `still_trusted`
    /// says the key that verified it is still the issuer's.
    pub(crate) fn get(
        &self,
        key: &TokenKey,
        now: i64,
        still_trusted: impl FnOnce(&Entry) -> bool,
    ) -> Option<Arc<Identity>> {
        let shard = self.shard(key)?.read();
        let entry = shard.get(key)?;
        let in_window = now < entry.until && entry.not_before.is_none_or(|nb| now >= nb);
        (in_window && still_trusted(entry)).then(|| Arc::clone(&entry.identity))
    }

    /// Remembers a verified token. Over capacity, expired entries go first, then arbitrary ones down to 90%.
    pub(crate) fn insert(&self, key: TokenKey, entry: Entry, now: i64) {
        if self.per_shard == 0 || entry.until <= now {
            return;
        }
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let mut map = shard.write();
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, e| e.until > now);
            if map.len() >= self.per_shard {
                let keep = self.per_shard * 9 / 10;
                let excess: Vec<TokenKey> = map.keys().take(map.len() - keep).copied().collect();
                for k in excess {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, entry);
    }

    /// How many tokens are cached (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}
