//! What outlives a restart of the replay guard, so that a restarted daemon (or another sharing
//! the store) still refuses a replay: written with the call's own change.
//!
//! - On a store other daemons share, the signature of every call that may change state: read
//!   back at a start (only those dated from it on), looked up for a request dated before the
//!   start (to name a replay as one), and swept once stale.
//! - On a store one daemon writes, only the signatures dated after the daemon's clock (a client
//!   whose clock runs ahead). For the others one record says up to which second such calls
//!   were accepted: a start accepts signatures dated after it only (waiting out that second
//!   when it restarts within it), so every unstored signature is dated before the start and
//!   refused on its date. One record however many calls, instead of one each (a third of the
//!   store's records, and of its integrity tree, right after a burst of CreateKeys).

use super::{CredentialStore, MAX_SKEW_SECONDS, SignatureUse};
use crate::auth::replay::ReplayCache;
use crate::clock::{Clock, UnixSeconds};
use crate::store::{Store, StoreError, WriteBatch};

/// Signatures of calls that change state, kept until they would be refused as stale anyway:
/// `auth/seen/<expiry, 8 bytes><the 9 signature bytes the replay cache looks at>`, no value.
const SEEN_PREFIX: &[u8] = b"auth/seen/";
/// Stored signatures read at a time by the sweep.
const SEEN_SWEEP: usize = 1_000;
/// On a store one daemon writes: the last second up to which a call that may change state was
/// accepted with a signature not stored (8 bytes, big-endian).
const ACCEPTED_UNTIL: &[u8] = b"auth/accepted-until";
/// How long a start waits for its clock to pass [`ACCEPTED_UNTIL`] (a restart within the same
/// second); a clock set back by more than that refuses signatures dated up to it until it has
/// passed it.
const START_WAIT: std::time::Duration = std::time::Duration::from_millis(1_500);

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

/// Up to which second an earlier run accepted signatures it did not store; none if it stored
/// them all (or nothing was ever accepted).
pub(super) fn accepted_until(store: &Store) -> Result<Option<UnixSeconds>, StoreError> {
    let Some(value) = store.get(ACCEPTED_UNTIL)? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = value.as_slice().try_into().map_err(|_| {
        StoreError(format!(
            "{} is damaged: {} bytes, not 8",
            String::from_utf8_lossy(ACCEPTED_UNTIL),
            value.len()
        ))
    })?;
    Ok(Some(i64::from_be_bytes(bytes)))
}

/// The first second whose signatures a start may accept: its own, or the second after those an
/// earlier run accepted without storing them.
pub(super) fn first_second(until: Option<UnixSeconds>, now: UnixSeconds) -> UnixSeconds {
    until.map_or(now, |until| now.max(until.saturating_add(1)))
}

/// Waits (up to [`START_WAIT`]) until `clock` has passed the second up to which an earlier run
/// accepted signatures it did not store, so that a start within that second refuses nobody who
/// signs after it. Call before [`CredentialStore::open`].
pub async fn wait_past_accepted(store: &Store, clock: &dyn Clock) -> Result<(), StoreError> {
    let Some(until) = accepted_until(store)? else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + START_WAIT;
    while clock.now() <= until && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if clock.now() <= until {
        tracing::warn!(
            accepted_until = until,
            now = clock.now(),
            "an earlier run accepted requests dated after this clock (was the clock set back?): \
             signatures dated up to then are refused until the clock has passed it"
        );
    }
    Ok(())
}

/// The replay cache a start begins with: the stored signatures dated from `now` on (a client
/// whose clock runs ahead), read a page at a time. Those dated before the start are refused on
/// their date anyway, and looked up in the store only to name a replay as one (see
/// [`CredentialStore::stored_before_start`]); the stored signatures sort by expiry, so after
/// heavy traffic the scan starts past the many dated earlier.
pub(super) fn load(store: &Store, now: UnixSeconds) -> Result<ReplayCache, StoreError> {
    let replay = ReplayCache::default();
    load_into(store, now, now, &replay)?;
    Ok(replay)
}

/// Adds to `replay` the stored signatures dated from `from` on (`now`: the clock, for what
/// has gone stale): [`load`], and the signatures other daemons stored while this one could
/// not hear them by name (see `CredentialStore::heard`).
pub(super) fn load_into(
    store: &Store,
    from: UnixSeconds,
    now: UnixSeconds,
    replay: &ReplayCache,
) -> Result<(), StoreError> {
    let mut after = seen_name(
        from.saturating_add(MAX_SKEW_SECONDS).saturating_sub(1),
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
            _ => return Ok(()),
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
    ///
    /// On a store no other daemon writes, a signature dated up to the daemon's clock is not
    /// stored: the second up to which such calls were accepted is, staged the same way, and the
    /// next start accepts only signatures dated after it.
    pub fn remember(&self, used: &SignatureUse) -> Result<bool, StoreError> {
        if !self.store.is_shared() && !self.outlives_a_restart(used) {
            self.mark_accepted(used.expires - MAX_SKEW_SECONDS)?;
            return Ok(true);
        }
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

    /// Stages [`ACCEPTED_UNTIL`] at the latest second a call was accepted with an unstored
    /// signature dated `request_time`. Under one lock, so that the value staged last is the
    /// greatest: concurrent calls never stage an earlier second over a later one.
    fn mark_accepted(&self, request_time: UnixSeconds) -> Result<(), StoreError> {
        let mut until = match self.accepted_until.lock() {
            Ok(until) => until,
            Err(poisoned) => poisoned.into_inner(),
        };
        *until = (*until).max(self.clock.now()).max(request_time);
        let mut batch = WriteBatch::new();
        batch.put(ACCEPTED_UNTIL.to_vec(), until.to_be_bytes().to_vec());
        Ok(self.store.stage(batch)?)
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

    /// On a store one daemon writes, changes dated up to the daemon's clock leave one record,
    /// which never goes back, and the next start accepts only signatures dated after it.
    #[test]
    fn changes_dated_up_to_the_clock_leave_one_record_and_the_next_start_is_after_it() {
        use crate::clock::OffsetClock;
        use crate::seal::{self, KdfParams};
        let dir = tempfile::tempdir().unwrap();
        let passphrase = SecretString::new("replay test".into());
        let (_, master) = seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
        let master = Arc::new(master);
        let backend = crate::store::SledBackend::open(&dir.path().join("store")).unwrap();
        let barrier = crate::store::Barrier::new(master.record_integrity_key());
        let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
        let clock = OffsetClock::new();
        let open = || {
            CredentialStore::open(
                master.clone(),
                store.clone(),
                Arc::new(clock.clone()),
                "aws",
                "us-east-1",
                "111122223333",
            )
        };
        let credentials = open().unwrap();
        assert_eq!(accepted_until(&store).unwrap(), None);
        let now = clock.now();
        let used = |b: u8, request_time: UnixSeconds| SignatureUse {
            signature: [b; 32],
            expires: request_time + MAX_SKEW_SECONDS,
            view: 0,
        };
        // Dated now and before: not stored; dated ahead: stored, as on any store.
        for (b, t) in [(1, now), (2, now - 1), (3, now - 200), (4, now + 30)] {
            assert!(credentials.remember(&used(b, t)).unwrap());
        }
        store.settle().unwrap();
        let stored: Vec<_> = store
            .scan(SEEN_PREFIX, None, usize::MAX)
            .unwrap()
            .iter()
            .filter_map(|(name, _)| parse_seen_name(name))
            .map(|u| u.expires - MAX_SKEW_SECONDS)
            .collect();
        assert_eq!(stored, [now + 30]);
        let until = accepted_until(&store).unwrap().expect("the record");
        assert!((now..=clock.now()).contains(&until), "{until} from {now}");
        // An earlier second staged after a later one (the clock set back) does not move it back.
        clock.advance(-1_000);
        credentials.mark_accepted(now - 500).unwrap();
        store.settle().unwrap();
        assert_eq!(accepted_until(&store).unwrap(), Some(until));
        clock.advance(1_000);

        // A start within that second begins after it; a later one at its own second.
        assert_eq!(first_second(Some(until), until), until + 1);
        assert_eq!(first_second(Some(until), until - 60), until + 1);
        assert_eq!(first_second(Some(until), until + 5), until + 5);
        assert_eq!(first_second(None, until), until);
        drop(credentials);
        let restarted = open().unwrap();
        assert!(restarted.started > until && restarted.started >= now);
        // Its replay cache holds the signature dated ahead.
        assert!(restarted.replay.seen(&[4; 32], now + 30 + MAX_SKEW_SECONDS));
        // Waiting at a start ends once the clock has passed the record.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime
            .block_on(wait_past_accepted(&store, &clock))
            .unwrap();
        assert!(clock.now() > until);

        // A record of the wrong length refuses the start, naming it, and stays as it was.
        let mut batch = WriteBatch::new();
        batch.put(ACCEPTED_UNTIL.to_vec(), vec![1, 2, 3]);
        store.apply(batch).unwrap();
        let refused = open().err().expect("a damaged record refuses the start");
        assert_eq!(
            refused.to_string(),
            "metadata store: auth/accepted-until is damaged: 3 bytes, not 8"
        );
        assert_eq!(store.get(ACCEPTED_UNTIL).unwrap(), Some(vec![1, 2, 3]));
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
