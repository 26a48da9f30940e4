//! The generation journal and orphaned material.
//!
//! Before a device generates a version, a pending generation naming it is made durable in the
//! metadata store; the key record's batch removes it. So the metadata always knows which
//! device objects a crash may have left half-made, and start-up destroys exactly those.
//! Material that neither a key record nor the journal names is an orphan: reported, never
//! destroyed on a guess (a restored metadata backup makes every newer key look like one), and
//! destroyed only on an operator's explicit request. See `keystore/mod.rs` for the order.

use super::*;

const JOURNAL_PREFIX: &[u8] = b"generation/";

/// A generation started in a keystore whose key record was not yet written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingGeneration {
    pub keystore: String,
    pub key_id: Uuid,
    pub version: u32,
    pub started: UnixSeconds,
}

impl PendingGeneration {
    fn material(&self) -> MaterialRef {
        MaterialRef {
            key_id: self.key_id,
            version: self.version,
        }
    }
}

/// Material a keystore holds that no key record and no pending generation names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Orphan {
    pub keystore: String,
    pub material: MaterialRef,
}

/// What start-up did with the journal and found in the keystores.
#[derive(Debug, Default)]
pub struct Reconciliation {
    /// Versions whose generation was cut short, destroyed (or found absent) and cleared.
    pub cleared: Vec<PendingGeneration>,
    /// Journal entries left for the next start-up, with why.
    pub kept: Vec<(PendingGeneration, String)>,
    pub orphans: Vec<Orphan>,
    /// Keystores that could not be listed, with why.
    pub unlisted: Vec<(String, String)>,
}

pub(super) fn journal_name(material: MaterialRef) -> Vec<u8> {
    let mut name = JOURNAL_PREFIX.to_vec();
    name.extend_from_slice(
        format!("{}:{}", material.key_id.hyphenated(), material.version).as_bytes(),
    );
    name
}

impl KeyService {
    /// Journals the generation of `material` in `keystore` (durably) if the keystore keeps
    /// material outside the metadata store. Returns whether it did: the key record's batch
    /// must then clear the entry ([`KeyService::clear_generation`]).
    ///
    /// A version that a device already holds without a journal entry (an orphan, e.g. made
    /// before a metadata backup was restored) is refused: generating it again would give one
    /// label two objects. One a previous attempt journalled is destroyed first.
    pub(super) async fn journal_generation(
        &self,
        keystore: &Arc<dyn KeyStore>,
        material: MaterialRef,
    ) -> Result<bool, KeyError> {
        if !keystore.material_outside_store() {
            return Ok(false);
        }
        let name = journal_name(material);
        if self.store.get(&name)?.is_some() {
            self.on_keystore(keystore, "destroy", None, move |k| {
                match k.destroy(material) {
                    Err(KeyStoreError::MaterialNotFound(_)) => Ok(WriteBatch::new()),
                    other => other,
                }
            })
            .await?;
        } else if material.version > 1 {
            // A fresh key id cannot be on the device; a next version of a known key can.
            let held = self
                .on_keystore(keystore, "check", None, move |k| match k.check(material) {
                    Ok(()) => Ok(true),
                    Err(KeyStoreError::MaterialNotFound(_)) => Ok(false),
                    Err(other) => Err(other),
                })
                .await?;
            if held {
                tracing::error!(
                    keystore = keystore.name(),
                    ?material,
                    "the keystore already holds an object for this new version; refusing to generate it again"
                );
                return Err(KeyError::InvalidState(format!(
                    "keystore {} already holds orphaned material for version {} of key {}; \
                     see `keyhaven keystore orphans`",
                    keystore.name(),
                    material.version,
                    material.key_id
                )));
            }
        }
        let pending = PendingGeneration {
            keystore: keystore.name().to_owned(),
            key_id: material.key_id,
            version: material.version,
            started: self.now(),
        };
        let mut batch = WriteBatch::new();
        batch.put(name, encode(&pending)?);
        self.store.commit(batch).await?;
        Ok(true)
    }

    /// Undoes the generation of `material` whose key record's batch failed: discards the
    /// material if the batch was not applied. If it was (only its flush failed), the record
    /// naming the material, and the journal entry's removal with it, may still reach disk,
    /// so the material is kept, and the journal left as the batch left it: a key that later
    /// appears without its material would be lost for good, while kept material that no
    /// record ends up naming is only an orphan for the operator to review.
    pub(super) async fn undo_generation(
        &self,
        keystore: &Arc<dyn KeyStore>,
        material: MaterialRef,
        applied: bool,
    ) {
        if applied {
            tracing::error!(
                keystore = keystore.name(),
                ?material,
                "the key record naming new material was written but not flushed; the material is kept"
            );
            return;
        }
        let _ = self
            .on_keystore(keystore, "discard", None, move |k| {
                k.discard(material);
                Ok(())
            })
            .await;
    }

    /// Adds the removal of `material`'s journal entry to the key record's batch.
    pub(super) fn clear_generation(
        batch: &mut WriteBatch,
        journalled: bool,
        material: MaterialRef,
    ) {
        if journalled {
            batch.delete(journal_name(material));
        }
    }

    fn pending_generations(&self) -> Result<Vec<PendingGeneration>, KeyError> {
        self.store
            .scan(JOURNAL_PREFIX, None, usize::MAX)?
            .into_iter()
            .map(|(name, value)| {
                serde_json::from_slice(&value).map_err(|e| {
                    KeyError::Internal(format!(
                        "journal entry {} is damaged: {e}",
                        String::from_utf8_lossy(&name)
                    ))
                })
            })
            .collect()
    }

    /// Whether the metadata names `material`: a key record (not a tombstone) with that
    /// version, or a pending generation. Read from the store, journal first: a key record's
    /// batch removes the entry and adds the version at once, so one of the two is seen.
    fn named_by_metadata(&self, material: MaterialRef) -> Result<bool, KeyError> {
        if self.store.get(&journal_name(material))?.is_some() {
            return Ok(true);
        }
        let name = key_record_name(material.key_id);
        let Some(value) = self.store.get(&name)? else {
            return Ok(false);
        };
        let record = records::parse_record(&name, &value)?;
        Ok(record.holds_version(material.version))
    }

    /// At start-up, before serving: destroys the versions whose generation was cut short
    /// (journalled, and no key record has them), clears their entries, and lists the orphans.
    pub fn reconcile_keystores(&self) -> Result<Reconciliation, KeyError> {
        let mut report = Reconciliation::default();
        for pending in self.pending_generations()? {
            let material = pending.material();
            let recorded = self
                .record_by_id(pending.key_id)?
                .is_some_and(|record| record.holds_version(pending.version));
            if !recorded {
                let Some(keystore) = self.keystores.get(&pending.keystore) else {
                    report.kept.push((
                        pending.clone(),
                        format!("keystore {} is not configured", pending.keystore),
                    ));
                    continue;
                };
                match keystore.destroy(material) {
                    Ok(_) | Err(KeyStoreError::MaterialNotFound(_)) => {}
                    Err(error) => {
                        report.kept.push((pending.clone(), error.to_string()));
                        continue;
                    }
                }
            }
            let mut batch = WriteBatch::new();
            batch.delete(journal_name(material));
            self.store.commit_blocking(batch)?;
            report.cleared.push(pending);
        }
        let (orphans, unlisted) = self.find_orphans();
        report.orphans = orphans;
        report.unlisted = unlisted;
        Ok(report)
    }

    /// Versions of every key that is not a tombstone, as stored (a read of every key record:
    /// from async code, on a blocking thread).
    fn recorded_versions(store: &Store) -> Result<HashSet<MaterialRef>, KeyError> {
        let mut versions = HashSet::new();
        records::for_every_record(store, |records| {
            versions.extend(Self::versions_held(records));
            Ok(())
        })?;
        Ok(versions)
    }

    fn versions_held(records: &[KeyRecord]) -> impl Iterator<Item = MaterialRef> + '_ {
        records
            .iter()
            .filter(|record| record.state != KeyState::Deleted)
            .flat_map(|record| {
                record
                    .versions
                    .iter()
                    .filter(|v| record.holds_version(v.number))
                    .map(|v| MaterialRef {
                        key_id: record.id,
                        version: v.number,
                    })
                    .collect::<Vec<_>>()
            })
    }

    /// The keystores that can hold orphans, by name.
    fn device_keystores(&self) -> Vec<(String, Arc<dyn KeyStore>)> {
        let mut found: Vec<_> = self
            .keystores
            .iter()
            .filter(|(_, k)| k.material_outside_store())
            .map(|(name, k)| (name.clone(), k.clone()))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Of what `keystore` holds, what the metadata does not name.
    fn orphans_among(
        &self,
        keystore: &str,
        held: Vec<MaterialRef>,
        known: &HashSet<MaterialRef>,
    ) -> Result<Vec<Orphan>, KeyError> {
        let mut orphans = Vec::new();
        for material in held.into_iter().filter(|m| !known.contains(m)) {
            // Not in memory: ask the store, which also knows pending generations and keys
            // whose record was written after the memory was read.
            if !self.named_by_metadata(material)? {
                orphans.push(Orphan {
                    keystore: keystore.to_owned(),
                    material,
                });
            }
        }
        Ok(orphans)
    }

    fn remember_orphans(&self, orphans: &[Orphan], listed: &[String]) {
        if let Ok(mut counts) = self.orphan_counts.write() {
            for name in listed {
                let count = orphans.iter().filter(|o| &o.keystore == name).count();
                counts.insert(name.clone(), count as i64);
            }
        }
    }

    /// Material the keystores hold that the metadata does not name (blocking: start-up).
    fn find_orphans(&self) -> (Vec<Orphan>, Vec<(String, String)>) {
        let devices = self.device_keystores();
        if devices.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let known = match Self::recorded_versions(&self.store) {
            Ok(known) => known,
            Err(error) => {
                let unlisted = devices
                    .into_iter()
                    .map(|(name, _)| (name, format!("{error:?}")));
                return (Vec::new(), unlisted.collect());
            }
        };
        let mut orphans = Vec::new();
        let mut unlisted = Vec::new();
        let mut listed = Vec::new();
        for (name, keystore) in devices {
            match keystore.list().map_err(|e| e.to_string()).and_then(|held| {
                self.orphans_among(&name, held, &known)
                    .map_err(|e| format!("{e:?}"))
            }) {
                Ok(found) => {
                    orphans.extend(found);
                    listed.push(name);
                }
                Err(error) => unlisted.push((name, error)),
            }
        }
        orphans.sort();
        self.remember_orphans(&orphans, &listed);
        (orphans, unlisted)
    }

    /// ListOrphanedKeyMaterial: material the keystores hold that neither a key record nor a
    /// pending generation names.
    pub async fn orphans(&self) -> Result<Vec<Orphan>, KeyError> {
        let devices = self.device_keystores();
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        // Every key record is read: not on the runtime's threads, which serve the other calls.
        let store = self.store.clone();
        let known = tokio::task::spawn_blocking(move || Self::recorded_versions(&store))
            .await
            .map_err(|e| KeyError::Internal(format!("the key records' reader failed: {e}")))??;
        let mut orphans = Vec::new();
        let mut listed = Vec::new();
        for (name, keystore) in devices {
            let held = self
                .on_keystore(&keystore, "list", None, |k| k.list())
                .await?;
            orphans.extend(self.orphans_among(&name, held, &known)?);
            listed.push(name);
        }
        orphans.sort();
        self.remember_orphans(&orphans, &listed);
        Ok(orphans)
    }

    /// Orphans per keystore, as last counted (for the `keystore_orphans` gauge).
    pub fn orphan_counts(&self) -> BTreeMap<String, i64> {
        self.orphan_counts
            .read()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// DestroyOrphanedKeyMaterial: destroys one orphan, after checking that it is one (the
    /// keystore holds it, and neither a key record nor a pending generation names it).
    pub async fn destroy_orphan(
        &self,
        keystore: &str,
        key_id: Uuid,
        version: u32,
    ) -> Result<Orphan, KeyError> {
        let store = self.keystores.get(keystore).cloned().ok_or_else(|| {
            KeyError::KeyStoreNotFound(format!(
                "keystore '{}' is not configured",
                printable(keystore)
            ))
        })?;
        if !store.material_outside_store() {
            return Err(KeyError::Validation(format!(
                "keystore {keystore} keeps its material in the key records: it has no orphans"
            )));
        }
        let material = MaterialRef { key_id, version };
        // A key's rotations take its gate: none can start meanwhile.
        let entry = self.entry_by_id(key_id)?;
        let _gate = match &entry {
            Some(entry) => Some(entry.gate.lock().await),
            None => None,
        };
        if self.named_by_metadata(material)? {
            return Err(KeyError::InvalidState(format!(
                "version {version} of key {key_id} is named by its key record or a pending \
                 generation: it is not an orphan"
            )));
        }
        let held = self
            .on_keystore(&store, "check", None, move |k| match k.check(material) {
                Ok(()) => Ok(true),
                Err(KeyStoreError::MaterialNotFound(_)) => Ok(false),
                Err(other) => Err(other),
            })
            .await?;
        if !held {
            return Err(KeyError::NotFound(format!(
                "keystore {keystore} holds no material for version {version} of key {key_id}"
            )));
        }
        self.on_keystore(&store, "destroy", None, move |k| k.destroy(material))
            .await?;
        tracing::warn!(
            keystore,
            key = %key_id,
            version,
            "orphaned key material destroyed on request"
        );
        if let Ok(mut counts) = self.orphan_counts.write()
            && let Some(count) = counts.get_mut(keystore)
        {
            *count = (*count - 1).max(0);
        }
        Ok(Orphan {
            keystore: store.name().to_owned(),
            material,
        })
    }
}
