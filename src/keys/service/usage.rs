//! What the keys are used for: counts by state, uses of keys pending deletion, last use.

use super::*;
use futures_util::StreamExt as _;

/// Keys whose last use [`KeyService::record_uses`] writes at once.
pub(super) const USE_WRITERS: usize = 64;

impl KeyService {
    /// Keys by state (for the `keys` gauge).
    pub fn count_by_state(&self) -> BTreeMap<&'static str, i64> {
        let mut counts = BTreeMap::new();
        for state in [
            KeyState::Enabled,
            KeyState::Disabled,
            KeyState::PendingDeletion,
            KeyState::Deleted,
        ] {
            counts.insert(state.as_str(), 0);
        }
        for (_, state) in self.held.index().states(std::ops::Bound::Unbounded) {
            *counts.entry(state.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// How many calls tried to use a key pending deletion since start-up.
    pub fn pending_deletion_uses(&self) -> u64 {
        self.pending_deletion_uses.load(Ordering::Relaxed)
    }

    pub(super) fn note_use(&self, entry: &KeyEntry, operation: &'static str) {
        let now = self.now();
        let first = match entry.last_use.lock() {
            Ok(mut last) => {
                // Same second, same operation: nothing new to say.
                if last
                    .as_ref()
                    .is_some_and(|u| u.time == now && u.operation == operation)
                {
                    return;
                }
                last.replace(SeenUse {
                    time: now,
                    operation,
                })
                .is_none()
            }
            Err(_) => false,
        };
        if first {
            self.held.first_use(entry.id);
        }
    }

    /// The latest use of a key, recorded or not yet.
    pub fn last_use(&self, record: &KeyRecord) -> Option<KeyUse> {
        let in_memory = match self.held.peek(record.id) {
            Some(entry) => entry.seen_use(),
            None => self.held.parked_use(record.id),
        }
        .map(SeenUse::key_use);
        match (in_memory, &record.last_used) {
            (Some(m), Some(r)) if r.time > m.time => Some(r.clone()),
            (Some(m), _) => Some(m),
            (None, r) => r.clone(),
        }
    }

    /// Writes the uses seen since the last call into the key records (the scheduler does
    /// this; a use is not worth a disk write per request). [`USE_WRITERS`] keys at a time:
    /// their commits gather into one batch and one flush, where one key after the other paid
    /// a flush each (after Encrypt over a million random keys, a pass made one fsync per key
    /// for minutes, and the calls served meanwhile waited behind them).
    /// The uses to write are those of the entries held, and those parked when their entries
    /// were evicted. A key this pass reads back is left next in line for eviction, so that
    /// the pass does not push the keys calls use out of the cache.
    pub async fn record_uses(&self) {
        // Every held entry's use is written here: none is left to write soon.
        drop(self.held.take_first_uses());
        let held = (self.held.entries().into_iter())
            .filter_map(|entry| Some((entry.id, entry.unwritten_use()?)));
        let used: Vec<(Uuid, SeenUse)> = held.chain(self.held.take_parked_uses()).collect();
        self.write_uses(used).await;
    }

    /// Writes the uses calls over many keys leave (the scheduler does this once
    /// [`KeyService::uses_piling_up`] returns): the parked ones, and the first uses of the
    /// entries read since the last pass, while those are held. A key used again since its
    /// entry's first use was written waits for the pass: among keys used often, a write per
    /// key at every pass is enough.
    pub async fn record_uses_soon(&self) {
        // A key evicted since has its use parked.
        let first = (self.held.take_first_uses().into_iter())
            .filter_map(|id| Some((id, self.held.peek(id)?.unwritten_use()?)));
        let used: Vec<(Uuid, SeenUse)> = first.chain(self.held.take_parked_uses()).collect();
        self.write_uses(used).await;
    }

    async fn write_uses(&self, used: Vec<(Uuid, SeenUse)>) {
        futures_util::stream::iter(used)
            .for_each_concurrent(USE_WRITERS, |(id, seen)| async move {
                // A held entry is written as it is (and left where it is in the cache); any
                // other key is read back.
                let entry = match self.held.peek(id) {
                    Some(entry) => entry,
                    None => match self.entry_by_id(id) {
                        Ok(Some(entry)) => {
                            self.held.demote(id);
                            entry
                        }
                        Ok(None) => return,
                        Err(error) => {
                            tracing::warn!(%error, "could not record a key's last use");
                            self.held.repark_use(id, seen);
                            return;
                        }
                    },
                };
                let result = self
                    .change_key(&entry, |record| {
                        if record
                            .last_used
                            .as_ref()
                            .is_none_or(|r| r.time <= seen.time)
                        {
                            record.last_used = Some(seen.key_use());
                        }
                        Ok(WriteBatch::new())
                    })
                    .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "could not record a key's last use");
                    self.held.repark_use(id, seen);
                }
            })
            .await;
    }

    /// Returns once calls over many keys have parked many uses not yet written (see
    /// `held::PARKED_USES_SOON`), or used many entries read from the store for the first time
    /// (`held::FIRST_USES_SOON`): the scheduler then writes them
    /// ([`KeyService::record_uses_soon`]) without waiting for its pass, so that what is
    /// parked stays bounded whatever the number of keys used, and little is.
    pub async fn uses_piling_up(&self) {
        self.held.uses_piling_up().await
    }
}
