//! What a key service keeps beside the store at a clean stop, for the next start to read
//! instead of every key record: the index of every key, and the encryption counts reserved
//! and not used (see `Store::put_aside`); and the guard that stops the keeping when a change
//! to a key record may have missed the index.

use super::index::{KeyIndex, Summary};
use super::{KeyService, held, records};
use crate::keys::{KeyError, KeyState};
use crate::keystore::KeyStore;
use crate::store::Store;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The name the key index is kept under beside the store.
pub(super) const INDEX_ASIDE: &str = "key-index";
/// The encryption counts kept beside the store at a clean stop (see [`held::KeptCount`]).
const COUNTS_ASIDE: &str = "key-counts";

/// See [`KeyService::index_change`].
pub(super) struct IndexChange<'a>(&'a std::sync::atomic::AtomicBool);

impl IndexChange<'_> {
    /// The index has the change (or the change was not applied).
    pub(super) fn settled(self) {
        std::mem::forget(self);
    }
}

impl Drop for IndexChange<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl KeyService {
    /// The index a start begins with, and how many keys are live: the one kept at the last
    /// clean stop if the records are exactly as they were then, else one made from every key
    /// record; with the counts kept at that stop.
    pub(super) fn index_at_open(
        store: &Store,
        keystores: &HashMap<String, Arc<dyn KeyStore>>,
    ) -> Result<(KeyIndex, usize), KeyError> {
        let (mut index, live) = match store.aside(INDEX_ASIDE).and_then(|b| KeyIndex::decode(&b)) {
            // Kept at the last close, and the records are exactly as they were then.
            Some(index) => {
                let live = index
                    .states(Bound::Unbounded)
                    .filter(|(_, state)| *state != KeyState::Deleted)
                    .count();
                tracing::info!(keys = index.len(), "key index read back from its copy");
                (index, live)
            }
            None => Self::index_every_record(store, keystores)?,
        };
        Self::take_counts(store, &mut index);
        Ok((index, live))
    }

    /// Keeps the index beside the store, for the next start to read instead of every key
    /// record (see `Store::put_aside`): at shutdown, once nothing else is written. Not when a
    /// change to a key record may have been applied without the index hearing of it.
    pub fn keep_index(&self) {
        if self.index_drifted.load(Ordering::Acquire) {
            tracing::info!("the key index is not kept: a change may have missed it");
            return;
        }
        if let Err(error) = self.store.put_aside(INDEX_ASIDE, &self.held.encode_index()) {
            tracing::warn!(%error, "the key index was not kept: the next start reads every key");
        }
        let counts = self.held.counts();
        if let Err(error) = self
            .store
            .put_aside(COUNTS_ASIDE, &held::encode_counts(&counts))
        {
            tracing::warn!(%error, "the encryption counts were not kept");
        }
    }

    /// Takes the encryption counts the last clean stop kept (see [`held::KeptCount`]) into
    /// `index`, if the records are exactly as they were then, and overwrites them first: a
    /// start after this one that was not preceded by a clean stop finds none, and takes every
    /// reserved count as used. Counts are taken only once that overwrite is durable.
    /// Overwritten even when out of date: records changed since could come back to the very
    /// set they were kept with.
    fn take_counts(store: &Store, index: &mut KeyIndex) {
        let kept = store.aside(COUNTS_ASIDE);
        if kept.as_deref().is_some_and(<[u8]>::is_empty) {
            // Taken by an earlier open, with the records as they are now: nothing to overwrite.
            return;
        }
        let counts = kept
            .and_then(|b| held::decode_counts(&b))
            .unwrap_or_default();
        let overwritten = store.put_aside(COUNTS_ASIDE, &[]);
        if counts.is_empty() {
            return;
        }
        if let Err(error) = overwritten {
            tracing::warn!(%error, "the kept encryption counts are not taken");
            return;
        }
        let given = held::Held::give_counts(index, &counts);
        tracing::info!(keys = given, "encryption counts read back from their copy");
    }

    /// A guard for a change to a key record: unless it is settled once the index has the
    /// change, the index is not kept at shutdown (a call dropped between its commit and the
    /// index's update, or a commit whose outcome is unknown).
    pub(super) fn index_change(&self) -> IndexChange<'_> {
        IndexChange(&self.index_drifted)
    }

    /// The index of every key record, and how many keys are live.
    pub(super) fn index_every_record(
        store: &Store,
        keystores: &HashMap<String, Arc<dyn KeyStore>>,
    ) -> Result<(KeyIndex, usize), KeyError> {
        let mut index = KeyIndex::default();
        let mut live = 0;
        records::for_every_record(store, |page| {
            for record in page {
                if record.state != KeyState::Deleted {
                    live += 1;
                    if !keystores.contains_key(&record.keystore) {
                        tracing::error!(key = %record.id, keystore = %record.keystore,
                            "key lives in a keystore that is not configured; its operations will fail");
                    }
                }
                index.insert(record.id, Summary::of(record));
            }
            Ok(())
        })?;
        Ok((index, live))
    }
}
