//! Key lifecycle: create, describe, list, enable, disable, deletion and destruction.

use super::*;

impl KeyService {
    /// CreateKey of a symmetric encryption key: generates version 1 in the chosen keystore and
    /// records the key.
    pub async fn create_key(
        &self,
        description: String,
        keystore: Option<&str>,
        tags: BTreeMap<String, String>,
        policy: Option<String>,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        self.create_key_of(
            description,
            keystore,
            tags,
            policy,
            (KeySpec::SymmetricDefault, KeyUsage::EncryptDecrypt),
        )
        .await
    }

    /// CreateKey of any spec and usage (checked together by [`crate::keys::key_spec_and_usage`]).
    pub async fn create_key_of(
        &self,
        description: String,
        keystore: Option<&str>,
        tags: BTreeMap<String, String>,
        policy: Option<String>,
        (spec, usage): (KeySpec, KeyUsage),
    ) -> Result<Arc<KeyRecord>, KeyError> {
        validate_description(&description)?;
        validate_tags(&tags)?;
        let policy = match policy {
            Some(text) => {
                validate_key_policy_size(&text)?;
                Policy::parse(&text, PolicyKind::Resource)
                    .map_err(|e| KeyError::MalformedPolicy(e.0))?;
                text
            }
            None => default_key_policy(&self.config.partition, &self.config.account_id),
        };
        let policy = Some(policy);
        let keystore_name = match keystore {
            // `pkcs11` names the PKCS#11 keystore when there is exactly one.
            Some("pkcs11") => {
                let mut hsms = self.keystores.keys().filter(|k| k.starts_with("pkcs11:"));
                match (hsms.next(), hsms.next()) {
                    (Some(only), None) => only.as_str(),
                    _ => "pkcs11",
                }
            }
            Some(name) => name,
            None => &self.config.default_keystore,
        };
        let keystore = self.keystores.get(keystore_name).cloned().ok_or_else(|| {
            let mut known: Vec<_> = self.keystores.keys().cloned().collect();
            known.sort();
            KeyError::KeyStoreNotFound(format!(
                "keystore '{}' is not configured; configured: {}",
                printable(keystore_name),
                known.join(", ")
            ))
        })?;
        if self.live_keys.fetch_add(1, Ordering::SeqCst) >= self.config.key_quota {
            self.live_keys.fetch_sub(1, Ordering::SeqCst);
            return Err(KeyError::LimitExceeded(format!(
                "the account already has the most keys it may hold ({})",
                self.config.key_quota
            )));
        }
        let result = self
            .create_key_counted(description, keystore, tags, policy, (spec, usage))
            .await;
        if result.is_err() {
            self.live_keys.fetch_sub(1, Ordering::SeqCst);
        }
        result
    }

    pub(super) async fn create_key_counted(
        &self,
        description: String,
        keystore: Arc<dyn KeyStore>,
        tags: BTreeMap<String, String>,
        policy: Option<String>,
        (spec, usage): (KeySpec, KeyUsage),
    ) -> Result<Arc<KeyRecord>, KeyError> {
        let now = self.now();
        let id = Uuid::new_v4();
        let material = MaterialRef {
            key_id: id,
            version: 1,
        };
        // A spec the keystore cannot make is refused before anything is journalled or made.
        keystore
            .supports(spec)
            .map_err(|e| keystore_error(keystore.name(), e))?;
        let journalled = self.journal_generation(&keystore, material).await?;
        let heavy = spec.rsa_bits().is_some();
        let generated = self
            .on_keystore_heavy(&keystore, "generate", Some(material), heavy, move |k| {
                // AES keys take the path they always took.
                match spec {
                    KeySpec::SymmetricDefault => k.generate(material),
                    other => k.generate_spec(material, other),
                }
            })
            .await?;
        let record = KeyRecord {
            id,
            description,
            state: KeyState::Enabled,
            created: now,
            deletion_date: None,
            pending_window_days: None,
            keystore: keystore.name().to_owned(),
            origin: keystore.origin().to_owned(),
            versions: vec![KeyVersion {
                number: 1,
                created: now,
                rotation_type: RotationType::Initial,
                nonces_reserved: self.config.nonce_reservation_block,
            }],
            tags,
            policy,
            rotation: RotationSchedule::default(),
            last_used: None,
            spec,
            usage,
        };
        let mut batch = generated.records;
        Self::clear_generation(&mut batch, journalled, material);
        let committed = async {
            batch.put(key_record_name(id), encode(&record)?);
            self.store.commit(batch).await?;
            Ok::<_, KeyError>(())
        }
        .await;
        if let Err(error) = committed {
            let undo = keystore.clone();
            let _ = self
                .on_keystore(&undo, "discard", None, move |k| {
                    k.discard(material);
                    Ok(())
                })
                .await;
            return Err(error);
        }
        let entry = Arc::new(KeyEntry::new(record, true));
        let record = entry.record();
        self.keys
            .write()
            .map_err(|_| KeyError::Internal("key map lock poisoned".into()))?
            .insert(id, entry);
        Ok(record)
    }

    /// DescribeKey: also answers for Deleted keys (their tombstone).
    pub fn describe_key(&self, key: &str) -> Result<Arc<KeyRecord>, KeyError> {
        Ok(self.resolve(key, true)?.record())
    }

    /// ListKeys: a page of keys in id order (Deleted keys are not listed).
    pub fn list_keys(&self, limit: u32, marker: &str) -> Result<ListPage<Uuid>, KeyError> {
        let limit = page_limit(limit)?;
        let start = if marker.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(
                Uuid::try_parse(marker)
                    .map_err(|_| KeyError::Validation("Marker is not valid".into()))?,
            )
        };
        let keys = self
            .keys
            .read()
            .map_err(|_| KeyError::Internal("key map lock poisoned".into()))?;
        let mut items = Vec::with_capacity(limit);
        let mut more = false;
        for (id, entry) in keys.range((start, Bound::Unbounded)) {
            if entry.record().state == KeyState::Deleted {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(*id);
        }
        let next_marker = if more {
            items.last().map(|id| id.hyphenated().to_string())
        } else {
            None
        };
        Ok(ListPage { items, next_marker })
    }

    pub async fn update_description(&self, key: &str, description: String) -> Result<(), KeyError> {
        validate_description(&description)?;
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_active("UpdateKeyDescription")?;
            record.description = description;
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    pub async fn enable_key(&self, key: &str) -> Result<(), KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| record.enable().map(|_| WriteBatch::new()))
            .await
            .map(|_| ())
    }

    pub async fn disable_key(&self, key: &str) -> Result<(), KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| record.disable().map(|_| WriteBatch::new()))
            .await
            .map(|_| ())
    }

    /// ScheduleKeyDeletion: returns the key as now recorded (with its deletion date).
    pub async fn schedule_deletion(
        &self,
        key: &str,
        pending_days: Option<u32>,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        let entry = self.resolve(key, false)?;
        let now = self.now();
        self.change_key(&entry, |record| {
            record
                .schedule_deletion(now, pending_days.or(Some(DEFAULT_PENDING_DAYS)))
                .map(|_| WriteBatch::new())
        })
        .await
    }

    pub async fn cancel_deletion(&self, key: &str) -> Result<Arc<KeyRecord>, KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.cancel_deletion().map(|_| WriteBatch::new())
        })
        .await
    }

    /// Destroys a key whose deletion date has passed: material first, then the tombstone.
    /// Returns whether it was destroyed now.
    pub(crate) async fn destroy_if_due(&self, id: Uuid) -> Result<bool, KeyError> {
        let Some(entry) = self.entry_by_id(id) else {
            return Ok(false);
        };
        let _gate = entry.gate.lock().await;
        let now = self.now();
        let record = entry.record();
        if !record.deletion_due(now) {
            return Ok(false);
        }
        let keystore = self.keystore(&record.keystore)?;
        let mut batch = WriteBatch::new();
        for version in &record.versions {
            let material = MaterialRef {
                key_id: id,
                version: version.number,
            };
            let records = self
                .on_keystore(&keystore, "destroy", None, move |k| {
                    match k.destroy(material) {
                        Err(KeyStoreError::MaterialNotFound(_)) => Ok(WriteBatch::new()),
                        other => other,
                    }
                })
                .await?;
            batch.extend(records);
        }
        let _aliases = self.alias_gate.lock().await;
        let doomed: Vec<String> = self
            .aliases
            .read()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
            .values()
            .filter(|a| a.target == id)
            .map(|a| a.name.clone())
            .collect();
        for alias in &doomed {
            batch.delete(alias_record_name(alias));
        }
        self.change_key_locked(&entry, move |record| {
            record.mark_deleted(now)?;
            Ok(batch)
        })
        .await?;
        if let Ok(mut aliases) = self.aliases.write() {
            for alias in &doomed {
                aliases.remove(alias);
            }
        }
        entry.set_nonces(None);
        self.live_keys.fetch_sub(1, Ordering::SeqCst);
        tracing::info!(key = %id, "key material destroyed; tombstone kept");
        Ok(true)
    }

    /// Lets every keystore make the destructions so far final (the sealed store retires the
    /// epoch their wraps were made under). Runs on a blocking thread: it may rewrite every
    /// material record.
    pub(crate) async fn finish_destructions(&self) {
        for keystore in self.keystores.values() {
            let keystore = keystore.clone();
            let name = keystore.name().to_owned();
            let finished = tokio::task::spawn_blocking(move || keystore.finish_destruction()).await;
            match finished {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::error!(keystore = %name, %error, "could not make destruction final; will retry")
                }
                Err(error) => tracing::error!(keystore = %name, %error, "destruction task failed"),
            }
        }
    }

    /// Ids of keys whose deletion date has passed, or whose automatic rotation is due.
    pub(crate) fn due_keys(&self, now: UnixSeconds) -> (Vec<Uuid>, Vec<Uuid>) {
        let mut deletions = Vec::new();
        let mut rotations = Vec::new();
        for entry in self.entries() {
            let record = entry.record();
            if record.deletion_due(now) {
                deletions.push(record.id);
            } else if record.rotation_due(now) {
                rotations.push(record.id);
            }
        }
        (deletions, rotations)
    }
}
