//! Refuses a signature seen before, for as long as its timestamp would still be accepted.

use crate::clock::UnixSeconds;
use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 16;

/// Signatures seen, each kept until the time its request would be refused as stale anyway.
/// Sharded by the signature's first byte so that concurrent requests rarely contend.
pub struct ReplayCache {
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    seen: HashMap<[u8; 32], UnixSeconds>,
    /// Size after the last pruning; the shard is pruned again when it has doubled.
    pruned_at: usize,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl ReplayCache {
    /// Records `signature` until `expires`; false when it was already recorded and unexpired.
    pub fn first_use(&self, signature: &[u8; 32], expires: UnixSeconds, now: UnixSeconds) -> bool {
        let shard = &self.shards[signature[0] as usize % SHARDS];
        let mut shard = match shard.lock() {
            Ok(shard) => shard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if shard.seen.len() >= 2 * shard.pruned_at.max(1024) {
            shard.seen.retain(|_, expiry| *expiry >= now);
            shard.pruned_at = shard.seen.len();
        }
        match shard.seen.get(signature) {
            Some(expiry) if *expiry >= now => false,
            _ => {
                shard.seen.insert(*signature, expires);
                true
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.seen.len()).unwrap_or(0))
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
        let before = cache.len();
        for i in 0..2_000u32 {
            let mut sig = [1u8; 32];
            sig[28..].copy_from_slice(&i.to_be_bytes());
            sig[0] = 0;
            cache.first_use(&sig, 1000, 500);
        }
        assert!(cache.len() < before, "{} >= {before}", cache.len());
    }
}
