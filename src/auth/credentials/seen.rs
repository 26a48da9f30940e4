//! The signatures of calls that may change state, stored so that a restarted daemon (or
//! another sharing the store) still refuses their replay: written with the call's own change,
//! read back at a start (only those dated from it on), looked up for a request dated before
//! the start, and swept once stale.

use super::{CredentialStore, MAX_SKEW_SECONDS, SignatureUse};
use crate::auth::replay::ReplayCache;
use crate::clock::UnixSeconds;
use crate::store::{Store, StoreError, WriteBatch};

/// Signatures of calls that change state, kept until they would be refused as stale anyway:
/// `auth/seen/<expiry, 8 bytes><the 9 signature bytes the replay cache looks at>`, no value.
const SEEN_PREFIX: &[u8] = b"auth/seen/";
/// Stored signatures read at a time by the sweep.
const SEEN_SWEEP: usize = 1_000;

/// An expiry as 8 bytes that sort as the times do (big-endian, sign bit flipped).
fn sortable(expires: UnixSeconds) -> [u8; 8] {
    ((expires as u64) ^ (1 << 63)).to_be_bytes()
}

fn seen_name(expires: UnixSeconds, signature: &[u8; 32]) -> Vec<u8> {
    let mut name = SEEN_PREFIX.to_vec();
    name.extend_from_slice(&sortable(expires));
    name.extend_from_slice(&signature[..ReplayCache::KEPT]);
    name.push(signature[ReplayCache::SHARD_BYTE]);
    name
}

/// A stored signature: the bytes the replay cache looks at, zeros elsewhere.
pub(super) fn parse_seen_name(name: &[u8]) -> Option<SignatureUse> {
    let rest = name.strip_prefix(SEEN_PREFIX)?;
    let (expires, kept) = rest.split_at_checked(8)?;
    let expires = u64::from_be_bytes(expires.try_into().ok()?) ^ (1 << 63);
    let (prefix, shard) = kept.split_at_checked(ReplayCache::KEPT)?;
    let [shard] = shard else { return None };
    let mut signature = [0u8; 32];
    signature[..ReplayCache::KEPT].copy_from_slice(prefix);
    signature[ReplayCache::SHARD_BYTE] = *shard;
    Some(SignatureUse {
        expires: expires as i64,
        signature,
        view: 0,
    })
}

/// The replay cache a start begins with: the stored signatures dated from `now` on (a client
/// whose clock runs ahead), read a page at a time. Those dated before the start are refused on
/// their date anyway, and looked up in the store only to name a replay as one (see
/// [`CredentialStore::stored_before_start`]); the stored signatures sort by expiry, so after
/// heavy traffic the scan starts past the many dated earlier.
pub(super) fn load(store: &Store, now: UnixSeconds) -> Result<ReplayCache, StoreError> {
    let replay = ReplayCache::default();
    let mut after = seen_name(
        now.saturating_add(MAX_SKEW_SECONDS).saturating_sub(1),
        &[0xff; 32],
    );
    loop {
        let page = store.scan(SEEN_PREFIX, Some(&after), SEEN_SWEEP)?;
        for (name, _) in &page {
            if let Some(used) = parse_seen_name(name) {
                replay.first_use(&used.signature, used.expires, now);
            }
        }
        match page.last() {
            Some((name, _)) if page.len() == SEEN_SWEEP => after = name.clone(),
            _ => return Ok(replay),
        }
    }
}

impl CredentialStore {
    /// Stores `used`, the signature of a call that may change state, so that a restarted
    /// daemon still refuses its replay (while it runs, the replay cache in memory does).
    ///
    /// On a store no other daemon writes the record is staged ([`Store::stage`]): the call's
    /// own commit carries it, in the batch and the flush that make the call's change durable;
    /// the caller [`Store::settle`]s it when the call ends, changed or not. On a shared store
    /// it is applied at once, fenced on the view the signature was checked at.
    ///
    /// Returns `false` when another daemon sharing the store stored the signature first: the
    /// call is a replay there.
    pub fn remember(&self, used: &SignatureUse) -> Result<bool, StoreError> {
        let mut batch = WriteBatch::new();
        let name = seen_name(used.expires, &used.signature);
        batch.put(name.clone(), Vec::new());
        batch.require_unchanged(name, used.view);
        match self.store.stage(batch) {
            Ok(()) => Ok(true),
            Err(crate::store::CommitError::Stale) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Whether `used` would still be accepted by this daemon restarted now: a signature
    /// dated after the daemon's clock (a client whose clock runs ahead) is not refused as
    /// dated before the start. A read dated in the current second is not remembered: only a
    /// daemon restarted within that same second could accept it again.
    pub fn outlives_a_restart(&self, used: &SignatureUse) -> bool {
        used.expires - MAX_SKEW_SECONDS > self.clock.now()
    }

    /// Whether a signature dated before this run started was stored by an earlier run (or
    /// another daemon sharing the store): a replay. Such a request is refused on its date
    /// anyway, so this costs a store read only on a path that refuses; it names the refusal
    /// (the replay cache in memory holds only signatures dated from the start on). A failed
    /// read leaves the request to be refused on its date.
    pub(super) fn stored_before_start(
        &self,
        signature: &[u8; 32],
        request_time: UnixSeconds,
    ) -> bool {
        if request_time >= self.started {
            return false;
        }
        let name = seen_name(request_time + MAX_SKEW_SECONDS, signature);
        match self.store.get(&name) {
            Ok(found) => found.is_some(),
            Err(error) => {
                tracing::warn!(%error, "cannot look up a signature dated before the start");
                false
            }
        }
    }

    /// Removes the stored signatures whose requests are refused as stale by now (they sort by
    /// expiry: the sweep stops at the first that is not); returns how many went. Durable with
    /// the next flush.
    pub fn forget_stale_signatures(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut count = 0;
        // A page is one batch: no more than the store takes in one (etcd bounds them).
        let page_size = SEEN_SWEEP.min(self.store.max_batch_ops());
        loop {
            let page = self.store.scan(SEEN_PREFIX, None, page_size)?;
            let full = page.len() == page_size;
            let mut batch = WriteBatch::new();
            let mut reached_fresh = false;
            for (name, _) in page {
                match parse_seen_name(&name) {
                    Some(used) if used.expires >= now => {
                        reached_fresh = true;
                        break;
                    }
                    _ => {
                        batch.delete(name);
                        count += 1;
                    }
                }
            }
            if !batch.is_empty() {
                self.store.apply(batch)?;
            }
            if reached_fresh || !full {
                return Ok(count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;
    use std::sync::Arc;

    #[test]
    fn stored_signatures_read_back_and_sort_by_expiry() {
        // What is kept of a signature: the bytes the replay cache looks at.
        let kept = |b: u8| {
            let mut signature = [0u8; 32];
            signature[..ReplayCache::KEPT].fill(b);
            signature[ReplayCache::SHARD_BYTE] = b;
            signature
        };
        let times = [-5, 0, 1_800_000_300, 1_800_000_301];
        let names: Vec<Vec<u8>> = times
            .iter()
            .zip([7, 8, 9, 1])
            .map(|(t, b)| seen_name(*t, &[b; 32]))
            .collect();
        let read = |name: &[u8]| parse_seen_name(name).map(|u| (u.expires, u.signature));
        assert_eq!(read(&names[0]), Some((-5, kept(7))));
        assert_eq!(read(&names[2]), Some((1_800_000_300, kept(9))));
        assert_eq!(read(&names[3]), Some((1_800_000_301, kept(1))));
        // A replay cache loaded from what is kept refuses the whole signature.
        let cache = ReplayCache::default();
        let stored = parse_seen_name(&names[2]).unwrap();
        assert!(cache.first_use(&stored.signature, stored.expires, 0));
        assert!(!cache.first_use(&[9; 32], 1_800_000_300, 0));
        // The sweep stops at the first unexpired one, and the start-up load begins there:
        // names must sort by expiry first, whatever the signature.
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(parse_seen_name(b"auth/seen/short"), None);
        assert_eq!(parse_seen_name(&names[0][1..]), None);
    }

    /// After heavy traffic the store holds many unexpired signatures, nearly all dated before
    /// the start: a start reads only those dated from it on, and finds the others when a
    /// request dated before the start comes, to name a replay as one.
    #[test]
    fn a_start_reads_only_the_signatures_dated_from_it_on() {
        use crate::clock::{Clock, OffsetClock};
        use crate::seal::{self, KdfParams};
        let dir = tempfile::tempdir().unwrap();
        let passphrase = SecretString::new("replay test".into());
        let (_, master) = seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
        let backend = crate::store::SledBackend::open(&dir.path().join("store")).unwrap();
        let barrier = crate::store::Barrier::new(master.record_integrity_key());
        let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
        let clock = OffsetClock::new();
        let now = clock.now();
        let (before, ahead) = ([1u8; 32], [2u8; 32]);
        let mut batch = WriteBatch::new();
        for i in 0..50u8 {
            // Dated 10 s before the start.
            batch.put(
                seen_name(now - 10 + MAX_SKEW_SECONDS, &[i + 100; 32]),
                Vec::new(),
            );
        }
        batch.put(seen_name(now - 10 + MAX_SKEW_SECONDS, &before), Vec::new());
        // Dated 5 s ahead of it: a client whose clock runs ahead.
        batch.put(seen_name(now + 5 + MAX_SKEW_SECONDS, &ahead), Vec::new());
        store.apply(batch).unwrap();
        let credentials = CredentialStore::open(
            Arc::new(master),
            store,
            Arc::new(clock),
            "aws",
            "us-east-1",
            "111122223333",
        )
        .unwrap();
        assert_eq!(credentials.replay.len(), 1);
        assert!(credentials.replay.seen(&ahead, now + 5 + MAX_SKEW_SECONDS));
        assert!(credentials.stored_before_start(&before, now - 10));
        assert!(!credentials.stored_before_start(&[3u8; 32], now - 10));
        assert!(!credentials.stored_before_start(&before, now - 11));
        // Dated from the start on: the replay cache in memory answers, not the store.
        assert!(!credentials.stored_before_start(&ahead, now + 5));
    }
}
