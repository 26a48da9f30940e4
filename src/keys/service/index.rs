//! The index of every key the service knows: its state, the encryption counts an evicted
//! entry left, and the dates the scheduler acts on, without its record (see `held`).
//!
//! Most keys have no date (no deletion pending, no automatic rotation, no imported material
//! that expires), so a key's dates are kept apart, for the keys that have any: the index of a
//! million keys without dates is ~27 MB (8 bytes a key beside its 16-byte id, in a B-tree),
//! where dates kept in every key's summary made it ~50 MB. The scheduler's questions (which
//! keys are due) then look only at the keys with dates.

use crate::clock::UnixSeconds;
use crate::keys::{KeyRecord, KeyState};
use std::collections::BTreeMap;
use std::ops::Bound;
use uuid::Uuid;

/// What the index knows of a key: enough to list it, count it, and find it when the scheduler
/// has something to do to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Summary {
    pub state: KeyState,
    /// Encryption counts the key's current version has reserved on its record and not used,
    /// while no entry holds its counter: left by its evicted entry, or kept at the last clean
    /// stop (see `held::KeptCount`). The entry that reads the key again takes them; none once
    /// anything changes the key. The version's low 16 bits, and the count.
    pub unused_version: u16,
    pub unused: u32,
    /// When the key's deletion is due (pending deletion only), its automatic rotation is due
    /// (enabled, with rotation on, only), and its imported material expires (still held
    /// only); [`NEVER`] for none.
    due: Dates,
}

type Dates = [UnixSeconds; 3];

/// A date that never comes.
const NEVER: UnixSeconds = UnixSeconds::MAX;
const UNDATED: Dates = [NEVER; 3];
const DELETION: usize = 0;
const ROTATION: usize = 1;
const EXPIRY: usize = 2;

impl Summary {
    pub fn of(record: &KeyRecord) -> Self {
        let deletion = (record.state == KeyState::PendingDeletion)
            .then_some(record.deletion_date)
            .flatten();
        let rotation = (record.state == KeyState::Enabled && record.rotation.enabled)
            .then_some(record.rotation.next_rotation)
            .flatten();
        let expiry = matches!(record.state, KeyState::Enabled | KeyState::Disabled)
            .then(|| record.imported.as_ref())
            .flatten()
            .filter(|i| i.present)
            .and_then(|i| i.valid_to);
        Self {
            state: record.state,
            unused_version: 0,
            unused: 0,
            due: [deletion, rotation, expiry].map(|d| d.unwrap_or(NEVER)),
        }
    }

    fn due(&self, which: usize, now: UnixSeconds) -> bool {
        self.due[which] != NEVER && self.due[which] <= now
    }

    /// [`KeyRecord::deletion_due`].
    pub fn deletion_due(&self, now: UnixSeconds) -> bool {
        self.due(DELETION, now)
    }

    /// [`KeyRecord::rotation_due`].
    pub fn rotation_due(&self, now: UnixSeconds) -> bool {
        self.due(ROTATION, now)
    }

    /// [`KeyRecord::material_expired`].
    pub fn material_expired(&self, now: UnixSeconds) -> bool {
        self.due(EXPIRY, now)
    }

    pub fn live(&self) -> bool {
        self.state != KeyState::Deleted
    }

    fn split(self) -> (Undated, Option<Dates>) {
        let undated = Undated {
            state: self.state,
            unused_version: self.unused_version,
            unused: self.unused,
        };
        (undated, (self.due != UNDATED).then_some(self.due))
    }
}

/// A summary without its dates: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Undated {
    state: KeyState,
    unused_version: u16,
    unused: u32,
}

impl Undated {
    fn with(self, due: Option<&Dates>) -> Summary {
        Summary {
            state: self.state,
            unused_version: self.unused_version,
            unused: self.unused,
            due: due.copied().unwrap_or(UNDATED),
        }
    }
}

/// Every key's [`Summary`], in the order of their ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyIndex {
    keys: BTreeMap<Uuid, Undated>,
    /// The dates of the keys that have any.
    dates: BTreeMap<Uuid, Dates>,
}

impl KeyIndex {
    pub fn get(&self, id: Uuid) -> Option<Summary> {
        let undated = self.keys.get(&id)?;
        Some(undated.with(self.dates.get(&id)))
    }

    pub fn contains(&self, id: Uuid) -> bool {
        self.keys.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Sets the key's summary; returns the one it replaces.
    pub fn insert(&mut self, id: Uuid, summary: Summary) -> Option<Summary> {
        let (undated, dates) = summary.split();
        let former_dates = match dates {
            Some(dates) => self.dates.insert(id, dates),
            None => self.dates.remove(&id),
        };
        let former = self.keys.insert(id, undated)?;
        Some(former.with(former_dates.as_ref()))
    }

    pub fn remove(&mut self, id: Uuid) -> Option<Summary> {
        let dates = self.dates.remove(&id);
        Some(self.keys.remove(&id)?.with(dates.as_ref()))
    }

    pub fn ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.keys.keys().copied()
    }

    /// Every key's summary, in the order of their ids.
    pub fn iter(&self) -> impl Iterator<Item = (Uuid, Summary)> + '_ {
        let mut dates = self.dates.iter().peekable();
        self.keys.iter().map(move |(id, undated)| {
            while dates.next_if(|(dated, _)| *dated < id).is_some() {}
            let due = dates.next_if(|(dated, _)| *dated == id).map(|(_, d)| d);
            (*id, undated.with(due))
        })
    }

    /// The keys that have a date, with their summaries: the only ones that can be due.
    pub fn dated(&self) -> impl Iterator<Item = (Uuid, Summary)> + '_ {
        self.dates.iter().filter_map(|(id, dates)| {
            let undated = self.keys.get(id)?;
            Some((*id, undated.with(Some(dates))))
        })
    }

    /// Every key's state, in the order of their ids, from `start` on.
    pub fn states(&self, start: Bound<Uuid>) -> impl Iterator<Item = (Uuid, KeyState)> + '_ {
        self.keys
            .range((start, Bound::Unbounded))
            .map(|(id, undated)| (*id, undated.state))
    }

    /// Leaves the counts an evicted entry had reserved and not used in the key's summary.
    pub fn park_unused(&mut self, id: Uuid, version: u16, unused: u32) {
        if let Some(undated) = self.keys.get_mut(&id) {
            undated.unused_version = version;
            undated.unused = unused;
        }
    }

    /// The counts parked in the key's summary, taken (the version's low 16 bits, how many).
    pub fn take_unused(&mut self, id: Uuid) -> Option<(u16, u32)> {
        let undated = self.keys.get_mut(&id)?;
        let version = std::mem::take(&mut undated.unused_version);
        let unused = std::mem::take(&mut undated.unused);
        (unused > 0).then_some((version, unused))
    }

    /// Parks counts, given in the order of their ids, in their keys' summaries; returns how
    /// many it parked (a key the index does not have has none).
    pub fn give_unused(&mut self, counts: impl IntoIterator<Item = (Uuid, u16, u32)>) -> usize {
        let mut given = 0;
        let mut counts = counts.into_iter().peekable();
        for (id, undated) in self.keys.iter_mut() {
            while counts.next_if(|c| c.0 < *id).is_some() {}
            if let Some((_, version, unused)) = counts.next_if(|c| c.0 == *id) {
                undated.unused_version = version;
                undated.unused = unused;
                given += 1;
            }
        }
        given
    }

    /// The index as bytes (see [`KeyIndex::decode`]): the encoded counts are not in it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * INDEXED_LEN);
        for (id, summary) in self.iter() {
            out.extend_from_slice(id.as_bytes());
            let state = STATES.iter().position(|s| *s == summary.state).unwrap_or(0);
            out.push(state as u8);
            for due in summary.due {
                out.extend_from_slice(&due.to_le_bytes());
            }
        }
        out
    }

    /// The index [`KeyIndex::encode`] made; `None` for bytes that are not one. Built from the
    /// keys in their order (as encoded) at once, not by inserting each.
    pub fn decode(bytes: &[u8]) -> Option<KeyIndex> {
        if !bytes.len().is_multiple_of(INDEXED_LEN) {
            return None;
        }
        let mut dates = Vec::new();
        let keys = bytes
            .chunks_exact(INDEXED_LEN)
            .map(|key| {
                let id = Uuid::from_bytes(key[..16].try_into().ok()?);
                let state = *STATES.get(usize::from(key[16]))?;
                let mut due = UNDATED;
                for (at, date) in key[17..].chunks_exact(8).enumerate() {
                    due[at] = UnixSeconds::from_le_bytes(date.try_into().ok()?);
                }
                let summary = Summary {
                    state,
                    unused_version: 0,
                    unused: 0,
                    due,
                };
                let (undated, due) = summary.split();
                if let Some(due) = due {
                    dates.push((id, due));
                }
                Some((id, undated))
            })
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(KeyIndex {
            keys,
            dates: dates.into_iter().collect(),
        })
    }
}

/// A key's bytes in the encoded index: its id, its state, its three dates.
const INDEXED_LEN: usize = 16 + 1 + 3 * 8;
/// The states, by their number in the encoded index.
const STATES: [KeyState; 5] = [
    KeyState::Enabled,
    KeyState::Disabled,
    KeyState::PendingDeletion,
    KeyState::Deleted,
    KeyState::PendingImport,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(state: KeyState, due: Dates) -> Summary {
        Summary {
            state,
            unused_version: 0,
            unused: 0,
            due,
        }
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Keys with and without dates, in and out of order: each reads back as it was set, the
    /// dates of a key set again without any are gone, and only keys with dates are dated.
    #[test]
    fn summaries_read_back_as_set_and_only_dated_keys_are_dated() {
        let mut index = KeyIndex::default();
        let deleting = summary(KeyState::PendingDeletion, [100, NEVER, NEVER]);
        let rotating = summary(KeyState::Enabled, [NEVER, 200, NEVER]);
        let plain = summary(KeyState::Enabled, UNDATED);
        assert_eq!(index.insert(id(3), deleting), None);
        assert_eq!(index.insert(id(1), plain), None);
        assert_eq!(index.insert(id(2), rotating), None);
        assert_eq!(index.insert(id(4), plain), None);
        assert_eq!(index.get(id(3)), Some(deleting));
        assert_eq!(index.get(id(2)), Some(rotating));
        assert_eq!(index.get(id(1)), Some(plain));
        let all: Vec<_> = index.iter().collect();
        assert_eq!(
            all,
            vec![
                (id(1), plain),
                (id(2), rotating),
                (id(3), deleting),
                (id(4), plain)
            ]
        );
        let dated: Vec<_> = index.dated().map(|(id, _)| id).collect();
        assert_eq!(dated, vec![id(2), id(3)]);
        // Rotation turned off: its date goes with it.
        assert_eq!(index.insert(id(2), plain), Some(rotating));
        assert_eq!(index.dated().count(), 1);
        assert_eq!(index.remove(id(3)), Some(deleting));
        assert_eq!(index.dated().count(), 0);
        assert_eq!(index.len(), 3);
        assert!(!index.contains(id(3)));
        let states: Vec<_> = index.states(Bound::Excluded(id(1))).collect();
        assert_eq!(
            states,
            vec![(id(2), KeyState::Enabled), (id(4), KeyState::Enabled)]
        );
    }

    /// Encoded and decoded, the index is the same, dates and all; bytes that are not an index
    /// are refused.
    #[test]
    fn the_index_survives_its_encoding() {
        let mut index = KeyIndex::default();
        for n in 0..50u128 {
            let due = if n % 7 == 0 {
                [n as i64, NEVER, NEVER]
            } else {
                UNDATED
            };
            let state = STATES[n as usize % STATES.len()];
            index.insert(id(n * 31 % 97), summary(state, due));
        }
        let bytes = index.encode();
        assert_eq!(KeyIndex::decode(&bytes), Some(index.clone()));
        assert_eq!(KeyIndex::decode(&bytes[1..]), None);
        let mut bad_state = bytes.clone();
        bad_state[16] = 9;
        assert_eq!(KeyIndex::decode(&bad_state), None);
    }

    /// Parked counts go to their keys' summaries, are taken once, and leave the dates alone.
    #[test]
    fn unused_counts_are_parked_and_taken_once() {
        let mut index = KeyIndex::default();
        let deleting = summary(KeyState::PendingDeletion, [100, NEVER, NEVER]);
        for n in 0..4 {
            index.insert(id(n), deleting);
        }
        assert_eq!(
            index.give_unused([(id(1), 2, 30), (id(3), 4, 50), (id(9), 1, 1)]),
            2
        );
        index.park_unused(id(0), 7, 70);
        assert_eq!(index.take_unused(id(0)), Some((7, 70)));
        assert_eq!(index.take_unused(id(0)), None);
        assert_eq!(index.take_unused(id(1)), Some((2, 30)));
        assert_eq!(index.take_unused(id(2)), None);
        assert_eq!(
            index.get(id(3)).map(|s| (s.unused_version, s.unused)),
            Some((4, 50))
        );
        assert!(index.get(id(3)).unwrap().deletion_due(100));
    }
}
