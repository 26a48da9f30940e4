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
            used: entry.unwritten_use(),
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
#[path = "held_tests.rs"]
mod tests;
