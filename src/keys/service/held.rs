//! What the service holds of its keys in memory: an index of every key (its state and the
//! dates the scheduler acts on, about 27 bytes a key; see `index`), and the whole entries
//! (record, parsed policy, nonce counter, last use, change gate) of the keys used most
//! recently, in a bounded LRU (`key_cache` in the config). Any other key's entry is read from
//! the store when a call asks for it.
//!
//! Three things an entry carries must outlive its eviction, and do:
//! - **Its gate.** An entry someone holds is never evicted, so a key never has two entries, and
//!   so never two gates: changes to it stay serialised.
//! - **Its nonce counter.** Read again from its record, a counter takes every reserved count
//!   as used (as after a restart), so a hot key cycling through the cache would burn its
//!   version a reserved block at a time. What an evicted entry's counter has left (the counts
//!   reserved and not used) is parked in the key's summary in the index, at no cost in
//!   memory, and given to the entry that reads the key again. At a clean stop the counts left
//!   are kept beside the store, for the next start's entries (see [`KeptCount`]). On a store
//!   other daemons share (they reserve blocks on the same records) a counter is parked whole,
//!   in a map.
//! - **Its last use**, not yet written to its record: parked too, for the scheduler's pass.
//!   Few are: an entry's first use is written soon, while the entry is held (see
//!   [`Held::first_use`]), so that over many keys eviction parks nothing to read back.
//!
//! A read from the store must not install a record older than one a change has already
//! written and dropped: every change to a stored key record counts in [`Held::changes`] while
//! its writer still holds the entry, and a read that saw the count move is made again.

use super::index::{KeyIndex, Summary};
use super::{KeyEntry, ParkedCounter, SeenUse};
use lru::LruCache;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use uuid::Uuid;

/// Entries held by default.
pub const KEY_CACHE: usize = 10_000;

/// Last uses parked at which the scheduler is asked to write them before its next pass: after
/// calls over many keys the map of parked uses would otherwise hold one for every key used
/// since the last pass (a million keys used in a minute: ~100 MB).
pub(super) const PARKED_USES_SOON: usize = 16_384;

/// First uses of entries read from the store at which the scheduler is asked to write them,
/// at most (a quarter of the cache's capacity, if fewer): written while their entries are
/// still held, so that eviction parks nothing and the pass reads nothing back, and soon
/// enough that the store's page cache still holds the leaf the read pulled in (2,048 cost
/// Encrypt over a million random keys ~10 % more server CPU a call).
pub(super) const FIRST_USES_SOON: usize = 256;

/// What was found for a key asked for.
pub(super) enum Lookup {
    Held(Arc<KeyEntry>),
    /// Not held: read it, note [`Held::changes`] from before the read, and [`Held::insert`].
    Absent,
    /// No such key.
    Unknown,
}

/// What an evicted entry leaves behind besides its summary's unused counts: its counter, on a
/// store other daemons share; a use not yet written. Kept in a map until the
/// scheduler's next pass writes the uses.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Parked {
    pub counter: Option<ParkedCounter>,
    /// A use not yet written to the key's record.
    pub used: Option<SeenUse>,
    /// The counts reserved and not used that the key's summary held (see [`Summary`]): the
    /// version's low 16 bits, and how many. Given to the entry made; never in the map.
    pub unused: Option<(u16, u32)>,
}

/// A key's encryption counts as kept at a clean stop: its current version's low 16 bits, and
/// how many counts it had reserved on its record and not used. The next start takes them
/// (once: it overwrites what was kept before it serves), so that a key's first Encrypt after
/// a restart does not reserve a block on disk. Without them, every reserved count is taken as
/// used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeptCount {
    pub id: Uuid,
    pub version: u16,
    pub unused: u32,
}

/// A kept count's bytes: the key's id, its version's low 16 bits, the count unused.
const KEPT_COUNT_LEN: usize = 16 + 2 + 4;

/// Counts in the order of their keys' ids (as [`Held::counts`] makes them).
pub(super) fn encode_counts(counts: &[KeptCount]) -> Vec<u8> {
    let mut out = Vec::with_capacity(counts.len() * KEPT_COUNT_LEN);
    for count in counts {
        out.extend_from_slice(count.id.as_bytes());
        out.extend_from_slice(&count.version.to_le_bytes());
        out.extend_from_slice(&count.unused.to_le_bytes());
    }
    out
}

/// The counts [`encode_counts`] made; `None` for bytes that are not those.
pub(super) fn decode_counts(bytes: &[u8]) -> Option<Vec<KeptCount>> {
    if !bytes.len().is_multiple_of(KEPT_COUNT_LEN) {
        return None;
    }
    bytes
        .chunks_exact(KEPT_COUNT_LEN)
        .map(|kept| {
            Some(KeptCount {
                id: Uuid::from_bytes(kept[..16].try_into().ok()?),
                version: u16::from_le_bytes(kept[16..18].try_into().ok()?),
                unused: u32::from_le_bytes(kept[18..].try_into().ok()?),
            })
        })
        .collect()
}

/// Counts reserved and not used: `reserved - used`, as many as fit (fewer leaves more taken
/// as used, never fewer).
fn unused_counts(used: u64, reserved: u64) -> u32 {
    u32::try_from(reserved.saturating_sub(used)).unwrap_or(u32::MAX)
}

pub(super) struct Held {
    index: RwLock<KeyIndex>,
    entries: Mutex<LruCache<Uuid, Arc<KeyEntry>>>,
    capacity: usize,
    /// What evicted entries left: for the entry that reads the key again, and (last uses)
    /// for the scheduler's pass.
    parked: Mutex<HashMap<Uuid, Parked>>,
    /// Told each time [`PARKED_USES_SOON`] (`uses_soon`) more are parked (see
    /// [`Held::uses_piling_up`]).
    uses_piling_up: tokio::sync::Notify,
    uses_soon: usize,
    /// Keys whose entries were used for the first time since they were made, their uses not
    /// yet written: the scheduler is told each time `first_uses_soon` more are.
    first_uses: Mutex<Vec<Uuid>>,
    first_uses_soon: usize,
    /// Changes to stored key records so far, by a hash of the key's id (see the module's
    /// note): a change to one key sends only the reads of keys sharing its stripe round again.
    changes: [AtomicU64; STRIPES],
    /// The `key_cache` metric's two counters, looked up once.
    counted: Option<(IntCounter, IntCounter)>,
    /// Other daemons reserve counts on the same records: a count left relative to the record's
    /// reservation could fall in another daemon's block once it reserves one, so evicted
    /// counters are parked whole, in the map.
    shared: bool,
}

const STRIPES: usize = 64;

fn stripe(id: Uuid) -> usize {
    id.as_u128() as usize % STRIPES
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Held {
    /// `shared`: other daemons write the store, and reserve counts on the same records.
    pub fn new(index: KeyIndex, capacity: usize, shared: bool) -> Self {
        Self {
            shared,
            index: RwLock::new(index),
            entries: Mutex::new(LruCache::unbounded()),
            capacity: capacity.max(1),
            parked: Mutex::new(HashMap::new()),
            uses_piling_up: tokio::sync::Notify::new(),
            uses_soon: PARKED_USES_SOON,
            first_uses: Mutex::new(Vec::new()),
            first_uses_soon: (capacity / 4).clamp(1, FIRST_USES_SOON),
            changes: std::array::from_fn(|_| AtomicU64::new(0)),
            counted: crate::metrics::metrics().map(|m| {
                (
                    m.key_cache.with_label_values(&["hit"]),
                    m.key_cache.with_label_values(&["miss"]),
                )
            }),
        }
    }

    pub fn index(&self) -> RwLockReadGuard<'_, KeyIndex> {
        match self.index.read() {
            Ok(index) => index,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, KeyIndex> {
        match self.index.write() {
            Ok(index) => index,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn summary(&self, id: Uuid) -> Option<Summary> {
        self.index().get(id)
    }

    pub fn len(&self) -> usize {
        self.index().len()
    }

    /// The key's entry if held (made most recently used), else whether the key exists.
    pub fn lookup(&self, id: Uuid) -> Lookup {
        if let Some(entry) = lock(&self.entries).get(&id) {
            self.count(true);
            return Lookup::Held(entry.clone());
        }
        if self.index().contains(id) {
            self.count(false);
            Lookup::Absent
        } else {
            Lookup::Unknown
        }
    }

    /// The key's entry if held, without making it more recently used.
    pub fn peek(&self, id: Uuid) -> Option<Arc<KeyEntry>> {
        lock(&self.entries).peek(&id).cloned()
    }

    /// The entries held now.
    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        lock(&self.entries).iter().map(|(_, e)| e.clone()).collect()
    }

    /// Changes counted so far for keys sharing `id`'s stripe.
    pub fn changes(&self, id: Uuid) -> u64 {
        self.changes[stripe(id)].load(Ordering::SeqCst)
    }

    /// Counts a change to a stored key record: called by its writer while it still holds the
    /// key's entry, or by the follower before it looks for the entry of a key another daemon
    /// changed.
    pub fn changed(&self, id: Uuid) {
        self.changes[stripe(id)].fetch_add(1, Ordering::SeqCst);
    }

    fn count(&self, hit: bool) {
        if let Some((hits, misses)) = &self.counted {
            if hit { hits } else { misses }.inc();
        }
    }

    /// Holds the entry `make` makes from a record read when [`Held::changes`] was `since`,
    /// unless the key is held already (that entry is returned) or a change was counted since
    /// (`None`: read again). `make` gets what the key's last entry left, if anything.
    pub fn insert(
        &self,
        id: Uuid,
        since: u64,
        make: impl FnOnce(Parked) -> KeyEntry,
    ) -> Option<Arc<KeyEntry>> {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get(&id) {
            return Some(entry.clone());
        }
        if self.changes(id) != since {
            return None;
        }
        let mut parked = lock(&self.parked).remove(&id).unwrap_or_default();
        parked.unused = self.take_unused(id);
        let entry = Arc::new(make(parked));
        entries.put(id, entry.clone());
        self.evict(&mut entries);
        Some(entry)
    }

    /// Makes the key's entry, if held, the first to be evicted once nobody holds it (for a
    /// pass over keys that calls are not using).
    pub fn demote(&self, id: Uuid) {
        lock(&self.entries).demote(&id);
    }

    /// Holds the entry of a key just made here, unless one is held already (another daemon's
    /// change to it heard first: that one is kept). Returns the entry held.
    pub fn insert_created(&self, entry: KeyEntry) -> Arc<KeyEntry> {
        let mut entries = lock(&self.entries);
        let id = entry.id;
        let held = match entries.get(&id) {
            Some(held) => held.clone(),
            None => {
                let entry = Arc::new(entry);
                entries.put(id, entry.clone());
                entry
            }
        };
        self.set_summary(id, Some(Summary::of(&held.record())));
        self.evict(&mut entries);
        held
    }

    /// Evicts the least recently used entries nobody holds, down to the capacity. An entry
    /// someone holds stays (its gate may be taken): the cache may exceed its capacity by the
    /// entries in use.
    fn evict(&self, entries: &mut LruCache<Uuid, Arc<KeyEntry>>) {
        while entries.len() > self.capacity {
            // Only the cache holds it: nobody can take it but through this lock.
            let Some(id) = entries
                .iter()
                .rev()
                .find(|(_, e)| Arc::strong_count(e) == 1)
                .map(|(id, _)| *id)
            else {
                return;
            };
            if let Some(entry) = entries.pop(&id) {
                self.park(&entry);
            }
        }
    }

    fn park(&self, entry: &KeyEntry) {
        // A counter alone on its record leaves its unused counts in the key's summary (a
        // counter whose counts are all used leaves nothing: its record gives the same).
        let counter = entry
            .nonces()
            .map(|c| c.park())
            .filter(|c| c.used < c.reserved);
        let counter = match counter {
            Some(c) if c.floor == 0 && !self.shared => {
                self.index_mut().park_unused(
                    entry.id,
                    c.version as u16,
                    unused_counts(c.used, c.reserved),
                );
                None
            }
            shared => shared,
        };
        let parked = Parked {
            counter,
            used: entry
                .last_use
                .lock()
                .ok()
                .and_then(|u| *u)
                .filter(|u| !u.recorded_in(&entry.record())),
            unused: None,
        };
        if parked.counter.is_some() || parked.used.is_some() {
            let mut map = lock(&self.parked);
            map.insert(entry.id, parked);
            // Counted with the counters parked whole, which only a shared store has.
            if map.len().is_multiple_of(self.uses_soon) {
                self.uses_piling_up.notify_one();
            }
        }
    }

    /// Returns once [`PARKED_USES_SOON`] more uses are parked, or `first_uses_soon` entries
    /// are used for the first time (see [`Held::first_use`]), or at once if either happened
    /// since the last call: the scheduler writes them then, besides at its pass.
    pub async fn uses_piling_up(&self) {
        self.uses_piling_up.notified().await
    }

    /// Notes the first use of the key's entry since it was made. Over many keys (a cache
    /// miss each) these are written soon, while the entries are held: written only once
    /// evicted, each use would be parked, and its key read from the store a second time to
    /// write it.
    pub fn first_use(&self, id: Uuid) {
        let mut first = lock(&self.first_uses);
        // Bounded while nothing takes them (no scheduler, or a pass running long): a key
        // left out keeps its use in its entry, for the pass or for its eviction to park.
        if first.len() >= self.first_uses_soon.saturating_mul(4) {
            return;
        }
        first.push(id);
        if first.len().is_multiple_of(self.first_uses_soon) {
            self.uses_piling_up.notify_one();
        }
    }

    /// Takes the keys noted by [`Held::first_use`].
    pub fn take_first_uses(&self) -> Vec<Uuid> {
        std::mem::take(&mut *lock(&self.first_uses))
    }

    /// The last use of an evicted entry not yet written, if any.
    pub fn parked_use(&self, id: Uuid) -> Option<SeenUse> {
        lock(&self.parked).get(&id).and_then(|p| p.used)
    }

    /// Takes the parked last uses, to write them.
    pub fn take_parked_uses(&self) -> Vec<(Uuid, SeenUse)> {
        let mut taken = Vec::new();
        let mut parked = lock(&self.parked);
        parked.retain(|id, parked| {
            if let Some(used) = parked.used.take() {
                taken.push((*id, used));
            }
            parked.counter.is_some()
        });
        // After a burst over many keys, the map's room goes with its entries.
        if parked.capacity() > 4 * parked.len().max(1024) {
            parked.shrink_to_fit();
        }
        taken
    }

    /// Parks a use again whose write failed (unless a newer one is parked meanwhile).
    pub fn repark_use(&self, id: Uuid, used: SeenUse) {
        let mut parked = lock(&self.parked);
        let slot = &mut parked.entry(id).or_default().used;
        if slot.is_none_or(|u| u.time < used.time) {
            *slot = Some(used);
        }
    }

    /// Sets (or, with `None`, removes) the key's summary. Returns the one it replaces.
    pub fn set_summary(&self, id: Uuid, summary: Option<Summary>) -> Option<Summary> {
        let mut index = self.index_mut();
        match summary {
            Some(summary) => index.insert(id, summary),
            None => index.remove(id),
        }
    }

    /// The index as bytes (see [`decode_index`]).
    pub fn encode_index(&self) -> Vec<u8> {
        self.index().encode()
    }

    /// The counts kept at the last clean stop for the key, taken: an entry takes them once.
    fn take_unused(&self, id: Uuid) -> Option<(u16, u32)> {
        self.index_mut().take_unused(id)
    }

    /// Gives the index the counts kept at the last clean stop, both in the order of their
    /// ids; returns how many it took (a key it does not hold has none).
    pub fn give_counts(index: &mut KeyIndex, counts: &[KeptCount]) -> usize {
        index.give_unused(counts.iter().map(|c| (c.id, c.version, c.unused)))
    }

    /// Every key's counts reserved and not used, in the order of their ids, for the next
    /// start: a held entry's from its counter, any other key's from its summary. (A counter
    /// parked whole shares its record with other daemons, and is not kept.)
    pub fn counts(&self) -> Vec<KeptCount> {
        let held: HashMap<Uuid, Option<(u16, u32)>> = self
            .entries()
            .iter()
            .map(|entry| {
                let current = entry.record().versions.last().map(|v| v.number);
                let counts = entry
                    .nonces()
                    .filter(|c| Some(c.version) == current && c.floor.load(Ordering::Acquire) == 0)
                    .map(|c| {
                        let used = c.used.load(Ordering::Acquire);
                        let reserved = c.reserved.load(Ordering::Acquire);
                        (c.version as u16, unused_counts(used, reserved))
                    });
                (entry.id, counts)
            })
            .collect();
        self.index()
            .iter()
            .filter_map(|(id, summary)| {
                let (version, unused) = match held.get(&id) {
                    Some(counts) => (*counts)?,
                    None => (summary.unused_version, summary.unused),
                };
                (unused > 0).then_some(KeptCount {
                    id,
                    version,
                    unused,
                })
            })
            .collect()
    }

    /// Forgets a key removed from the store (by another daemon).
    pub fn remove(&self, id: Uuid) -> Option<Summary> {
        lock(&self.entries).pop(&id);
        lock(&self.parked).remove(&id);
        self.set_summary(id, None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::clock::SystemClock;
    use crate::crypto::EncryptionContext;
    use crate::keystore::sealed::SealedKeyStore;
    use crate::seal::{self, KdfParams};
    use crate::secret::SecretString;
    use crate::store::{Barrier, SledBackend};

    /// A key service on a sealed keystore and sled that holds `capacity` entries, and the
    /// store it writes.
    struct Harness {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        service: KeyService,
    }

    fn harness(capacity: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let passphrase = SecretString::new("key cache test".into());
        let (_, master) = seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
        let backend = SledBackend::open(&dir.path().join("store")).unwrap();
        let barrier = Barrier::new(master.record_integrity_key());
        let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
        let sealed = SealedKeyStore::open(Arc::new(master), store.clone(), dir.path()).unwrap();
        let mut config = KeyServiceConfig::new("111122223333");
        config.key_cache = capacity;
        config.nonce_reservation_block = 100;
        let service = KeyService::open(
            config,
            Arc::new(SystemClock),
            store.clone(),
            vec![Arc::new(sealed) as Arc<dyn KeyStore>],
        )
        .unwrap();
        Harness {
            _dir: dir,
            store,
            service,
        }
    }

    async fn keys(service: &KeyService, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let record = service
                .create_key(String::new(), None, BTreeMap::new(), None)
                .await
                .unwrap();
            ids.push(record.id.to_string());
        }
        ids
    }

    fn stored(store: &Store, id: &str) -> KeyRecord {
        let id = Uuid::parse_str(id).unwrap();
        serde_json::from_slice(&store.get(&key_record_name(id)).unwrap().unwrap()).unwrap()
    }

    fn empty() -> EncryptionContext {
        EncryptionContext::new(BTreeMap::new()).unwrap()
    }

    fn held(service: &KeyService) -> usize {
        service.held.entries().len()
    }

    /// A key made without a policy stores none: GetKeyPolicy gives the account's default
    /// text, and the key's policy read back from the store is the default already parsed
    /// (shared, not parsed again). A key made with a policy stores it.
    #[tokio::test]
    async fn a_key_made_without_a_policy_stores_none_and_is_under_the_default() {
        let h = harness(1);
        let ids = keys(&h.service, 2).await;
        assert_eq!(stored(&h.store, &ids[0]).policy, None);
        assert_eq!(
            h.service.get_key_policy(&ids[0]).unwrap(),
            crate::policy::default_key_policy("keyhaven", "111122223333")
        );
        // Evicted by the second key: read back from the store.
        let id = Uuid::parse_str(&ids[0]).unwrap();
        let default = h.service.default_policy().unwrap();
        assert!(Arc::ptr_eq(&h.service.key_policy(id).policy, &default));
        let own = crate::policy::default_key_policy("keyhaven", "444455556666");
        let record = h
            .service
            .create_key(String::new(), None, BTreeMap::new(), Some(own.clone()))
            .await
            .unwrap();
        assert_eq!(stored(&h.store, &record.id.to_string()).policy, Some(own));
        assert!(!Arc::ptr_eq(
            &h.service.key_policy(record.id).policy,
            &default
        ));
    }

    /// Keys evicted and read back from the store answer as they did: their state, their
    /// ciphertexts, a change made to them while evicted.
    #[tokio::test]
    async fn evicted_keys_are_read_again_and_answer_as_before() {
        let h = harness(2);
        let ids = keys(&h.service, 6).await;
        assert_eq!(held(&h.service), 2);
        let mut blobs = Vec::new();
        for id in &ids {
            blobs.push(h.service.encrypt(id, b"secret", &empty()).await.unwrap().0);
        }
        h.service.disable_key(&ids[0]).await.unwrap();
        for id in &ids[1..] {
            h.service.describe_key(id).unwrap();
        }
        assert_eq!(held(&h.service), 2, "the cache holds its capacity");
        assert_eq!(
            h.service.describe_key(&ids[0]).unwrap().state,
            KeyState::Disabled
        );
        for (id, blob) in ids.iter().zip(&blobs).skip(1) {
            let decrypted = h.service.decrypt(blob, &empty(), None).await.unwrap();
            assert_eq!(decrypted.key_id.to_string(), *id);
            assert_eq!(decrypted.plaintext.expose(), b"secret");
        }
        let error = h
            .service
            .decrypt(&blobs[0], &empty(), None)
            .await
            .unwrap_err();
        assert!(matches!(error, KeyError::Disabled(_)), "{error:?}");
        assert_eq!(h.service.count(), 6);
        assert_eq!(h.service.count_by_state()["Disabled"], 1);
        assert_eq!(h.service.list_keys(0, "").unwrap().items.len(), 6);
    }

    /// An entry someone holds stays, however many keys are read meanwhile: a key has one
    /// entry, so one gate.
    #[tokio::test]
    async fn an_entry_in_use_is_never_evicted() {
        let h = harness(1);
        let ids = keys(&h.service, 4).await;
        let first = Uuid::parse_str(&ids[0]).unwrap();
        let pinned = h.service.entry_by_id(first).unwrap().unwrap();
        for id in &ids[1..] {
            h.service.describe_key(id).unwrap();
        }
        let again = h.service.entry_by_id(first).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&pinned, &again),
            "a second entry for a held key"
        );
        drop((pinned, again));
        for id in &ids[1..] {
            h.service.describe_key(id).unwrap();
        }
        assert!(h.service.held.peek(first).is_none(), "evicted once let go");
    }

    /// An evicted key's encryption count goes on where it stopped: read again from its
    /// record alone, it would take the whole reserved block as used and write a new one.
    #[tokio::test]
    async fn an_evicted_keys_encryption_count_goes_on() {
        let h = harness(1);
        let ids = keys(&h.service, 2).await;
        for _ in 0..10 {
            h.service.encrypt(&ids[0], b"x", &empty()).await.unwrap();
        }
        h.service.describe_key(&ids[1]).unwrap();
        let first = Uuid::parse_str(&ids[0]).unwrap();
        assert!(h.service.held.peek(first).is_none());
        for _ in 0..10 {
            h.service.encrypt(&ids[0], b"x", &empty()).await.unwrap();
        }
        let counter = h
            .service
            .entry_by_id(first)
            .unwrap()
            .unwrap()
            .nonces()
            .unwrap();
        assert_eq!(counter.used.load(Ordering::SeqCst), 20);
        assert_eq!(
            stored(&h.store, &ids[0]).versions[0].nonces_reserved,
            100,
            "no block reserved beyond the first"
        );
    }

    /// After a clean stop a key's encryption count goes on where it stopped, evicted or held,
    /// once: a start that did not follow a clean stop takes every reserved count as used.
    #[tokio::test]
    async fn a_clean_stops_encryption_counts_are_taken_once() {
        let h = harness(1);
        let ids = keys(&h.service, 3).await;
        // Two evicted already: their counters left their counts in the index, not in a map.
        assert!(super::lock(&h.service.held.parked).is_empty());
        let left = |id: &str| {
            let summary = h
                .service
                .held
                .summary(Uuid::parse_str(id).unwrap())
                .unwrap();
            (summary.unused_version, summary.unused)
        };
        assert_eq!(left(&ids[0]), (1, 100));
        for _ in 0..10 {
            h.service.encrypt(&ids[0], b"x", &empty()).await.unwrap();
        }
        assert_eq!(
            left(&ids[0]),
            (0, 0),
            "taken by the entry that read the key again"
        );
        for _ in 0..5 {
            h.service.encrypt(&ids[1], b"x", &empty()).await.unwrap();
        }
        // The first two are evicted by now (one parked counter each), the third is held.
        h.service.describe_key(&ids[2]).unwrap();
        let counts = h.service.held.counts();
        assert_eq!(counts.len(), 3, "{counts:?}");
        h.service.keep_index();
        let reopen = || {
            KeyService::open(
                h.service.config.clone(),
                Arc::new(SystemClock),
                h.store.clone(),
                h.service.keystores.values().cloned().collect(),
            )
            .unwrap()
        };
        let used = |service: &KeyService, id: &str| {
            let id = Uuid::parse_str(id).unwrap();
            let entry = service.entry_by_id(id).unwrap().unwrap();
            entry.nonces().unwrap().used.load(Ordering::SeqCst)
        };
        let reserved = |id: &str| stored(&h.store, id).versions[0].nonces_reserved;
        let after_stop = reopen();
        after_stop.encrypt(&ids[0], b"x", &empty()).await.unwrap();
        assert_eq!(used(&after_stop, &ids[0]), 11);
        assert_eq!(used(&after_stop, &ids[1]), 5);
        assert_eq!(used(&after_stop, &ids[2]), 0);
        assert_eq!(reserved(&ids[0]), 100, "no block reserved beyond the first");
        // Not stopped cleanly (nothing kept since): the counts were taken already, and the
        // open that finds them taken writes nothing.
        let counts_file = || {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(h._dir.path().join("store/aside/key-counts"))
                .unwrap()
                .ino()
        };
        let taken = counts_file();
        let after_crash = reopen();
        assert_eq!(counts_file(), taken, "the taken counts were written again");
        assert_eq!(used(&after_crash, &ids[1]), 100);
        after_crash.encrypt(&ids[1], b"x", &empty()).await.unwrap();
        assert!(reserved(&ids[1]) > 100, "a new block");
    }

    /// The pass that writes last uses reads back the keys evicted since they were used, and
    /// leaves each next in line for eviction: of the keys calls were using, all but those the
    /// pass's concurrent writers pushed out stay held.
    #[tokio::test]
    async fn writing_evicted_keys_last_uses_leaves_the_keys_in_use_held() {
        let capacity = super::super::usage::USE_WRITERS + 16;
        let h = harness(capacity);
        let ids = keys(&h.service, 3 * capacity).await;
        // Used, then evicted by the keys after them: their uses are parked.
        for id in &ids[..2 * capacity] {
            h.service.encrypt(id, b"x", &empty()).await.unwrap();
        }
        let in_use = &ids[2 * capacity..];
        for id in in_use {
            h.service.describe_key(id).unwrap();
        }
        let still_held = |service: &KeyService| {
            in_use
                .iter()
                .filter(|id| service.held.peek(Uuid::parse_str(id).unwrap()).is_some())
                .count()
        };
        assert_eq!(still_held(&h.service), capacity);
        h.service.record_uses().await;
        assert!(stored(&h.store, &ids[0]).last_used.is_some());
        assert!(
            still_held(&h.service) >= capacity - super::super::usage::USE_WRITERS,
            "{} of {capacity} keys in use still held",
            still_held(&h.service)
        );
    }

    /// Calls over many keys park a use for each key evicted: once `uses_soon` are parked, the
    /// scheduler writes them without waiting for its pass (an hour away here), and the map of
    /// parked uses is empty again.
    #[tokio::test]
    async fn many_parked_uses_are_written_before_the_schedulers_pass() {
        let mut h = harness(1);
        h.service.held.uses_soon = 4;
        // Parked uses alone call the writes here.
        h.service.held.first_uses_soon = usize::MAX;
        let ids = keys(&h.service, 6).await;
        let service = Arc::new(h.service);
        let scheduler = hourly_scheduler(&service);
        // Five used: the first four are evicted by the one after each, and park their uses.
        for id in &ids[..5] {
            service.encrypt(id, b"x", &empty()).await.unwrap();
        }
        let written = |id: &str| stored(&h.store, id).last_used.is_some();
        eventually(
            || ids[..4].iter().all(|id| written(id)),
            "the parked uses written before the pass",
        )
        .await;
        assert_eq!(
            stored(&h.store, &ids[0]).last_used.map(|u| u.operation),
            Some("Encrypt".to_owned())
        );
        assert!(super::lock(&service.held.parked).is_empty());
        // The key never used has no use written.
        assert!(!written(&ids[5]));
        scheduler.stop().await;
    }

    /// The scheduler, its pass an hour away: only the calls for writes soon run it here.
    fn hourly_scheduler(service: &Arc<KeyService>) -> crate::background::Background {
        crate::keys::scheduler::spawn_scheduler(
            service.clone(),
            std::time::Duration::from_secs(3600),
            Arc::new(|_| {}),
            Arc::new(|| true),
        )
    }

    /// Waits up to 10 seconds for `done`.
    async fn eventually(mut done: impl FnMut() -> bool, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "not so: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Calls over many keys (a miss each): once `first_uses_soon` entries read from the store
    /// are used, the scheduler writes those uses (its pass an hour away here) while the
    /// entries are held, so that their eviction parks nothing to read back. A key used again
    /// after its first use was written waits for the pass.
    #[tokio::test]
    async fn first_uses_are_written_while_their_keys_are_held() {
        let mut h = harness(8);
        h.service.held.first_uses_soon = 4;
        let ids = keys(&h.service, 16).await;
        let service = Arc::new(h.service);
        let scheduler = hourly_scheduler(&service);
        let last_use = |id: &str| stored(&h.store, id).last_used.map(|u| u.operation);
        let written = |ids: &[String]| ids.iter().all(|id| last_use(id).is_some());
        // Made last, so held: used, written, and still held.
        for id in &ids[12..] {
            service.encrypt(id, b"x", &empty()).await.unwrap();
        }
        eventually(|| written(&ids[12..]), "first uses written before the pass").await;
        let held = |id: &String| service.held.peek(Uuid::parse_str(id).unwrap()).is_some();
        assert!(ids[12..].iter().all(held), "written from the entries held");
        // Used again, by another operation: not a first use.
        let blob = service.encrypt(&ids[12], b"x", &empty()).await.unwrap().0;
        service.decrypt(&blob, &empty(), None).await.unwrap();
        // Four more keys (evicted since they were made) read and used: their uses are
        // written too, and the twelve keys evicted meanwhile park nothing.
        for id in &ids[..4] {
            service.encrypt(id, b"x", &empty()).await.unwrap();
        }
        eventually(|| written(&ids[..4]), "first uses written before the pass").await;
        for id in &ids[4..12] {
            service.describe_key(id).unwrap();
        }
        assert!(!held(&ids[12]));
        let parked: Vec<Uuid> = super::lock(&service.held.parked).keys().copied().collect();
        assert_eq!(
            parked,
            [Uuid::parse_str(&ids[12]).unwrap()],
            "only the use after"
        );
        assert_eq!(last_use(&ids[12]).as_deref(), Some("Encrypt"));
        scheduler.stop().await;
        // The pass writes the key's latest use.
        service.record_uses().await;
        assert_eq!(last_use(&ids[12]).as_deref(), Some("Decrypt"));
        assert_eq!(last_use(&ids[4]), None, "never used");
    }

    /// With nothing taking them (no scheduler here), the first uses noted stop at four times
    /// `first_uses_soon`; the uses left out are written all the same, by the pass.
    #[tokio::test]
    async fn first_uses_noted_are_bounded_and_no_use_is_lost() {
        let mut h = harness(8);
        h.service.held.first_uses_soon = 2;
        let ids = keys(&h.service, 12).await;
        for id in &ids {
            h.service.encrypt(id, b"x", &empty()).await.unwrap();
        }
        assert_eq!(h.service.held.take_first_uses().len(), 8);
        h.service.record_uses().await;
        assert!(
            ids.iter()
                .all(|id| stored(&h.store, id).last_used.is_some())
        );
    }

    /// A use seen before the key's entry was evicted is written by the next pass.
    #[tokio::test]
    async fn an_evicted_keys_last_use_is_written() {
        let h = harness(1);
        let ids = keys(&h.service, 2).await;
        h.service.encrypt(&ids[0], b"x", &empty()).await.unwrap();
        h.service.describe_key(&ids[1]).unwrap();
        let first = stored(&h.store, &ids[0]);
        assert_eq!(first.last_used, None);
        assert_eq!(
            h.service.last_use(&first).map(|u| u.operation),
            Some("Encrypt".to_owned())
        );
        h.service.record_uses().await;
        let used = stored(&h.store, &ids[0]).last_used.unwrap();
        assert_eq!(used.operation, "Encrypt");
        assert!(h.service.held.take_parked_uses().is_empty());
    }

    /// A record read before a change to its key, installed after the change's writer let the
    /// entry go, would serve the key as it was: the read is refused and made again.
    #[tokio::test]
    async fn a_record_read_before_a_change_is_not_installed() {
        let h = harness(1);
        let ids = keys(&h.service, 2).await;
        let first = Uuid::parse_str(&ids[0]).unwrap();
        let since = h.service.held.changes(first);
        let before = stored(&h.store, &ids[0]);
        h.service.disable_key(&ids[0]).await.unwrap();
        h.service.describe_key(&ids[1]).unwrap();
        assert!(h.service.held.peek(first).is_none());
        let installed = h.service.held.insert(first, since, |parked| {
            KeyEntry::with_parked(before, false, 0, parked)
        });
        assert!(installed.is_none(), "a stale record was installed");
        assert_eq!(
            h.service.describe_key(&ids[0]).unwrap().state,
            KeyState::Disabled
        );
    }

    /// The index answers for keys whose entries are not held: due dates, liveness.
    #[tokio::test]
    async fn the_index_follows_changes_to_keys_not_held() {
        let h = harness(1);
        let ids = keys(&h.service, 3).await;
        h.service.schedule_deletion(&ids[0], Some(7)).await.unwrap();
        h.service.describe_key(&ids[1]).unwrap();
        let first = Uuid::parse_str(&ids[0]).unwrap();
        assert!(h.service.held.peek(first).is_none());
        let now = h.service.now();
        assert!(h.service.due_keys(now).0.is_empty());
        assert_eq!(h.service.due_keys(now + 8 * DAY).0, vec![first]);
        assert_eq!(h.service.count_by_state()["PendingDeletion"], 1);
        assert_eq!(h.service.list_keys(0, "").unwrap().items.len(), 3);
    }

    /// The index answers the scheduler's questions as the record itself would, in every state.
    #[tokio::test]
    async fn a_summary_is_due_when_its_record_is() {
        let h = harness(4);
        let id = keys(&h.service, 1).await.remove(0);
        let base = (*h.service.describe_key(&id).unwrap()).clone();
        let now = 1_000_000;
        let mut checked = 0;
        for state in [
            KeyState::Enabled,
            KeyState::Disabled,
            KeyState::PendingDeletion,
            KeyState::Deleted,
            KeyState::PendingImport,
        ] {
            for date in [None, Some(now - 1), Some(now), Some(now + 1)] {
                for (enabled, present) in [(false, false), (true, true), (true, false)] {
                    let mut record = base.clone();
                    record.state = state;
                    record.deletion_date = date;
                    record.rotation.enabled = enabled;
                    record.rotation.next_rotation = date;
                    record.imported = Some(crate::keys::ImportedMaterial {
                        commitment: None,
                        present,
                        valid_to: date,
                    });
                    let summary = super::super::index::Summary::of(&record);
                    assert_eq!(
                        summary.deletion_due(now),
                        record.deletion_due(now),
                        "{record:?}"
                    );
                    assert_eq!(
                        summary.rotation_due(now),
                        record.rotation_due(now),
                        "{record:?}"
                    );
                    assert_eq!(
                        summary.material_expired(now),
                        record.material_expired(now),
                        "{record:?}"
                    );
                    assert_eq!(summary.live(), record.state != KeyState::Deleted);
                    checked += summary.deletion_due(now) as u32
                        + summary.rotation_due(now) as u32
                        + summary.material_expired(now) as u32;
                }
            }
        }
        assert!(checked > 0, "no case was due");
    }

    /// The index kept at shutdown is the one a pass over every record makes, and a later
    /// start takes it instead; a change that may have missed the index stops it being kept.
    #[tokio::test]
    async fn the_kept_index_is_the_records_and_is_not_kept_after_a_missed_change() {
        let h = harness(2);
        let ids = keys(&h.service, 6).await;
        h.service.disable_key(&ids[1]).await.unwrap();
        h.service.schedule_deletion(&ids[2], Some(7)).await.unwrap();
        h.service.enable_rotation(&ids[3], None).await.unwrap();
        h.service.keep_index();
        let kept = h
            .store
            .aside(super::super::kept::INDEX_ASIDE)
            .expect("the index was kept");
        let (full, live) = KeyService::index_every_record(&h.store, &h.service.keystores).unwrap();
        assert_eq!(live, 6);
        assert_eq!(super::KeyIndex::decode(&kept).unwrap(), full);
        assert_eq!(kept, super::Held::new(full, 2, false).encode_index());
        // A later open takes it: the index it holds is the kept one.
        let reopened = KeyService::open(
            h.service.config.clone(),
            Arc::new(SystemClock),
            h.store.clone(),
            h.service.keystores.values().cloned().collect(),
        )
        .unwrap();
        assert_eq!(reopened.held.encode_index(), kept);
        assert_eq!(reopened.live_keys.load(Ordering::Acquire), 6);
        // A change whose end the index never heard of: not kept again.
        drop(h.service.index_change());
        h.service.disable_key(&ids[4]).await.unwrap();
        h.service.keep_index();
        assert_eq!(h.store.aside(super::super::kept::INDEX_ASIDE), None);
    }
}
