//! The identity policies of each principal, parsed once and kept until the next IAM change.
//!
//! A call that misses works a principal's policies out from the entities outside the cache's
//! lock. If an IAM change lands meanwhile and empties the cache, what that call read may be
//! from before the change: put back, it would revive a revoked policy until some later change.
//! So every change starts a new generation, and what was worked out after a miss is kept only
//! if no change came since the miss. A call that reads the entities after the change always
//! missed after it too, and a revocation takes effect from the first call after it returns.

use crate::policy::NamedPolicy;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A principal's identity policies: its own, its groups', or its role's.
pub type IdentityPolicies = Arc<Vec<NamedPolicy>>;

#[derive(Default)]
struct Generation {
    number: u64,
    by_principal: HashMap<String, IdentityPolicies>,
}

/// Parsed identity policies by principal ARN.
#[derive(Default)]
pub struct PolicyCache {
    current: RwLock<Generation>,
}

/// A miss, and the generation it happened in: hand it back with what was worked out.
#[derive(Debug)]
#[must_use = "a miss is handed back to keep what was worked out"]
pub struct Miss {
    generation: u64,
}

impl PolicyCache {
    fn read(&self) -> RwLockReadGuard<'_, Generation> {
        match self.current.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, Generation> {
        match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The policies kept for `principal_arn`, or a miss. Ask before reading the entities.
    pub fn get(&self, principal_arn: &str) -> Result<IdentityPolicies, Miss> {
        let current = self.read();
        current
            .by_principal
            .get(principal_arn)
            .cloned()
            .ok_or(Miss {
                generation: current.number,
            })
    }

    /// Keeps `policies` for `principal_arn`, unless an IAM change came after `miss`: then they
    /// may be stale and are dropped. Returns whether they were kept.
    pub fn insert(&self, miss: Miss, principal_arn: &str, policies: IdentityPolicies) -> bool {
        let mut current = self.write();
        if current.number != miss.generation {
            return false;
        }
        current
            .by_principal
            .insert(principal_arn.to_owned(), policies);
        true
    }

    /// Forgets everything and starts a new generation. Called after every IAM change, once
    /// the change is what the entities say.
    pub fn invalidate(&self) {
        let mut current = self.write();
        current.number += 1;
        current.by_principal.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, PolicyKind};

    const ARN: &str = "arn:keyhaven:iam::111122223333:user/alice";

    fn policies(action: &str) -> IdentityPolicies {
        let text =
            format!(r#"{{"Statement":[{{"Effect":"Allow","Action":"{action}","Resource":"*"}}]}}"#);
        Arc::new(vec![NamedPolicy {
            name: "user/alice/inline".into(),
            policy: Arc::new(Policy::parse(&text, PolicyKind::Identity).unwrap()),
        }])
    }

    #[test]
    fn a_miss_is_filled_and_a_change_empties_the_cache() {
        let cache = PolicyCache::default();
        let miss = cache.get(ARN).unwrap_err();
        let allowed = policies("kms:Encrypt");
        assert!(cache.insert(miss, ARN, allowed.clone()));
        assert!(Arc::ptr_eq(&cache.get(ARN).unwrap(), &allowed));
        cache.invalidate();
        assert!(cache.get(ARN).is_err());
    }

    /// The interleaving that revived revoked policies: a call misses and reads the entities;
    /// an IAM change (DeleteUserPolicy, say) updates them and empties the cache; the call then
    /// stores what it read before the change.
    #[test]
    fn what_was_read_before_a_change_is_not_kept_after_it() {
        let cache = PolicyCache::default();
        let before = cache.get(ARN).unwrap_err();
        let read_before_the_change = policies("kms:Encrypt");
        // The change lands.
        cache.invalidate();
        // A call that misses after it reads the new entities (no policy left) and keeps that.
        let after = cache.get(ARN).unwrap_err();
        // The slow call comes back with the stale policies: dropped.
        assert!(!cache.insert(before, ARN, read_before_the_change));
        assert!(cache.get(ARN).is_err(), "stale policies were kept");
        let revoked = Arc::new(Vec::new());
        assert!(cache.insert(after, ARN, revoked.clone()));
        assert!(Arc::ptr_eq(&cache.get(ARN).unwrap(), &revoked));
    }

    /// The other order: the slow call stores before the change empties the cache; the change
    /// then drops it.
    #[test]
    fn what_was_kept_before_a_change_goes_with_it() {
        let cache = PolicyCache::default();
        let miss = cache.get(ARN).unwrap_err();
        assert!(cache.insert(miss, ARN, policies("kms:Encrypt")));
        cache.invalidate();
        assert!(cache.get(ARN).is_err());
    }
}
