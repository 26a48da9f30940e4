//! Changes other daemons make to a shared store, taken into this daemon's caches (see
//! `store::shared`): a key record, an alias or a grant changed elsewhere is read again, so
//! that this daemon answers as the one that made the change does.

use super::index::Summary;
use super::{
    ALIAS_PREFIX, AliasEntry, KEY_PREFIX, KeyService, NonceCounter, grants, key_record_name,
};
use crate::keys::{KeyError, KeyRecord, KeyState};
use crate::store::Changed;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use uuid::Uuid;

impl KeyService {
    /// Takes in what another daemon changed. Runs before this daemon's view of the store moves
    /// past the change, so a call that reads the view afterwards sees it.
    pub fn heard(&self, changed: Changed<'_>) {
        let result = match changed {
            Changed::All(revision) => self.reload_everything(revision),
            Changed::Records(names, revision) => self.reload_records(names, revision),
        };
        if let Err(error) = result {
            tracing::error!(?error, "a change another daemon made could not be read");
        }
    }

    fn reload_records(&self, names: &[Vec<u8>], revision: i64) -> Result<(), KeyError> {
        let mut grants_changed = false;
        for name in names {
            if let Some(id) = name.strip_prefix(KEY_PREFIX) {
                if let Some(id) = std::str::from_utf8(id)
                    .ok()
                    .and_then(|id| Uuid::try_parse(id).ok())
                {
                    self.reload_key(id, revision)?;
                }
            } else if let Some(alias) = name.strip_prefix(ALIAS_PREFIX) {
                self.reload_alias(&String::from_utf8_lossy(alias))?;
            } else if name.starts_with(grants::GRANT_PREFIX) {
                grants_changed = true;
            } else if name.starts_with(crate::keystore::sealed::MATERIAL_PREFIX)
                || name.starts_with(b"keystore/")
            {
                // Material destroyed or re-wrapped elsewhere, a keyring changed: the keystores
                // drop or read again what they keep of it.
                for keystore in self.keystores.values() {
                    keystore.heard(name, revision);
                }
            }
        }
        if grants_changed {
            self.reload_grants()?;
        }
        Ok(())
    }

    fn reload_everything(&self, revision: i64) -> Result<(), KeyError> {
        for (name, _) in self.store.scan(KEY_PREFIX, None, usize::MAX)? {
            self.reload_records(&[name], revision)?;
        }
        let known: Vec<Uuid> = self.held.index().ids().collect();
        for id in known {
            self.reload_key(id, revision)?;
        }
        let aliases: Vec<String> = self
            .aliases
            .read()
            .map_err(|_| poisoned())?
            .keys()
            .cloned()
            .collect();
        for (name, _) in self.store.scan(ALIAS_PREFIX, None, usize::MAX)? {
            self.reload_records(&[name], revision)?;
        }
        for alias in aliases {
            self.reload_alias(&alias)?;
        }
        for keystore in self.keystores.values() {
            keystore.heard(crate::keystore::sealed::MATERIAL_PREFIX, revision);
            keystore.heard(crate::keystore::sealed::KEYRING_RECORD, revision);
        }
        self.reload_grants()
    }

    /// Reads a key's record again, as stored now.
    /// `revision`: the change heard (what is read is at least as new).
    fn reload_key(&self, id: Uuid, revision: i64) -> Result<(), KeyError> {
        let name = key_record_name(id);
        let record = self
            .store
            .get(&name)?
            .map(|bytes| super::records::parse_record(&name, &bytes))
            .transpose()?;
        let live = |record: &KeyRecord| record.state != KeyState::Deleted;
        let summary = record.as_ref().map(Summary::of);
        // Counted before the entry is looked for: a read of the record that started before
        // the change either finds the count moved, or installed its entry before the look,
        // which then finds it and brings it up to date.
        self.held.changed(id);
        let before = match (self.held.peek(id), record) {
            (Some(entry), Some(record)) => {
                // A new current version (rotated elsewhere) starts its count as after a
                // restart: whatever is reserved is taken as used.
                let current = record.versions.last();
                let counted = entry.nonces().map(|c| c.version);
                if current.map(|v| v.number) != counted {
                    entry.set_nonces(current.map(|v| NonceCounter::new(v, v.nonces_reserved)));
                }
                let before = live(&entry.record());
                // Newer wins, as for any entry (one made here meanwhile included).
                if !entry.set_record(Arc::new(record), revision) {
                    return Ok(());
                }
                self.held.set_summary(id, summary);
                Some(before)
            }
            // Not held: its entry is read from the store when asked for.
            (None, Some(_)) => self.held.set_summary(id, summary).map(|s| s.live()),
            (_, None) => self.held.remove(id).map(|s| s.live()),
        };
        let after = summary.is_some_and(|s| s.live());
        match (before.unwrap_or(false), after) {
            (false, true) => {
                self.live_keys.fetch_add(1, Ordering::AcqRel);
            }
            (true, false) => {
                self.live_keys.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        Ok(())
    }

    fn reload_alias(&self, alias: &str) -> Result<(), KeyError> {
        let mut name = ALIAS_PREFIX.to_vec();
        name.extend_from_slice(alias.as_bytes());
        let stored = self
            .store
            .get(&name)?
            .map(|bytes| {
                serde_json::from_slice::<AliasEntry>(&bytes).map_err(|e| {
                    KeyError::Internal(format!("alias record {alias} is damaged: {e}"))
                })
            })
            .transpose()?;
        let mut aliases = self.aliases.write().map_err(|_| poisoned())?;
        match stored {
            Some(entry) => {
                aliases.insert(alias.to_owned(), entry);
            }
            None => {
                aliases.remove(alias);
            }
        }
        Ok(())
    }

    fn reload_grants(&self) -> Result<(), KeyError> {
        let table = grants::GrantTable::load(&self.store)?;
        *self.grants.write().map_err(|_| poisoned())? = table;
        Ok(())
    }
}

fn poisoned() -> KeyError {
    KeyError::Internal("key service lock poisoned".into())
}
