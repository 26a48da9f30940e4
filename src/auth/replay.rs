//! Refuses a signature seen before, for as long as its timestamp would still be accepted.
//!
//! A signature's expiry is fixed by its request time (which it signs), so signatures are
//! kept in one set per expiry second: a replay is looked up in exactly one set, and expired
//! signatures are dropped a whole second at a time. Each entry is the signature's first
//! 8 bytes (an HMAC output nobody can choose), about 10–15 bytes of memory: at 10,000 requests
//! a second that is about 45 MB for clients whose clocks are right (five minutes of
//! signatures), and twice that at most. Two different signatures are confused only if their
//! first 64 bits match within the same expiry second and shard: with 10,000 requests a second,
//! about one request in 10^16 would be refused as a replay.

use crate::clock::UnixSeconds;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

const SHARDS: usize = 16;

/// Signatures are uniformly random and chosen by nobody: their own bits are a good hash.
#[derive(Default)]
struct SignatureHasher(u64);

impl Hasher for SignatureHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Seen = HashSet<u64, BuildHasherDefault<SignatureHasher>>;

/// Signatures seen, each kept until the time its request would be refused as stale anyway.
/// Sharded by the signature's first byte so that concurrent requests rarely contend.
pub struct ReplayCache {
    shards: Vec<Mutex<BTreeMap<UnixSeconds, Seen>>>,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(BTreeMap::new())).collect(),
        }
    }
}

impl ReplayCache {
    /// How many leading bytes of a signature are remembered.
    pub const KEPT: usize = 8;
    /// The signature byte that picks the shard.
    pub const SHARD_BYTE: usize = 16;

    /// Records `signature` until `expires`; false when it was already recorded and unexpired.
    /// A signature is always recorded with the same `expires` (its request time, plus the
    /// allowed skew), so only that second's set is looked at.
    pub fn first_use(&self, signature: &[u8; 32], expires: UnixSeconds, now: UnixSeconds) -> bool {
        let shard = &self.shards[signature[Self::SHARD_BYTE] as usize % SHARDS];
        let mut shard = match shard.lock() {
            Ok(shard) => shard,
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some(entry) = shard.first_entry() {
            if *entry.key() >= now {
                break;
            }
            entry.remove();
        }
        if expires < now {
            // Stale already: the caller refuses it on its timestamp; nothing to remember.
            return true;
        }
        let mut prefix = [0u8; Self::KEPT];
        prefix.copy_from_slice(&signature[..Self::KEPT]);
        shard
            .entry(expires)
            .or_default()
            .insert(u64::from_le_bytes(prefix))
    }

    /// Whether `signature` is recorded under `expires`, without recording it: a replay is
    /// named as such before its signature is checked (a captured request sent on to another
    /// address no longer verifies, but it is still a replay).
    pub fn seen(&self, signature: &[u8; 32], expires: UnixSeconds) -> bool {
        let shard = &self.shards[signature[Self::SHARD_BYTE] as usize % SHARDS];
        let shard = match shard.lock() {
            Ok(shard) => shard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut prefix = [0u8; Self::KEPT];
        prefix.copy_from_slice(&signature[..Self::KEPT]);
        shard
            .get(&expires)
            .is_some_and(|seen| seen.contains(&u64::from_le_bytes(prefix)))
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .map(|s| s.values().map(HashSet::len).sum())
                    .unwrap_or(0)
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_is_refused_until_expiry() {
        let cache = ReplayCache::default();
        let sig = [7u8; 32];
        assert!(cache.first_use(&sig, 100, 50));
        assert!(!cache.first_use(&sig, 100, 60));
        assert!(!cache.first_use(&sig, 100, 100));
        assert!(cache.first_use(&sig, 200, 101));
        assert!(cache.first_use(&[8u8; 32], 100, 50));
        // The same signature is remembered only under its own expiry.
        assert!(!cache.first_use(&sig, 200, 150));
        // Looking does not record.
        assert!(cache.seen(&sig, 200));
        assert!(!cache.seen(&[9u8; 32], 200));
        assert!(!cache.seen(&[9u8; 32], 200));
        assert!(!cache.seen(&sig, 201));
    }

    #[test]
    fn expired_entries_are_pruned() {
        let cache = ReplayCache::default();
        for i in 0..3_000u32 {
            let mut sig = [0u8; 32];
            sig[..4].copy_from_slice(&i.to_be_bytes());
            sig[0] = 0;
            assert!(cache.first_use(&sig, 10, 0));
        }
        assert_eq!(cache.len(), 3_000);
        for i in 0..2_000u32 {
            let mut sig = [1u8; 32];
            sig[..4].copy_from_slice(&i.to_be_bytes());
            sig[16] = i as u8;
            cache.first_use(&sig, 1000, 500);
        }
        // Every shard has been touched after the first batch expired: only the second is left.
        assert_eq!(cache.len(), 2_000);
    }
}
