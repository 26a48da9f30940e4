//! Key lifecycle: create, describe, list, enable, disable, deletion and destruction.

use super::*;

impl KeyService {
    /// The keystore a key asked for in `keystore` would be made in (what `keyhaven:KeyStore`
    /// tells policies): the default when none is named, and for `pkcs11` the PKCS#11
    /// keystore when there is exactly one. A name no keystore has is returned as it is.
    pub fn keystore_named(&self, keystore: Option<&str>) -> String {
        match keystore {
            Some("pkcs11") => {
                let mut hsms = self.keystores.keys().filter(|k| k.starts_with("pkcs11:"));
                match (hsms.next(), hsms.next()) {
                    (Some(only), None) => only.clone(),
                    _ => "pkcs11".to_owned(),
                }
            }
            Some(name) => name.to_owned(),
            None => self.config.default_keystore.clone(),
        }
    }

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
        self.create_key_from(
            description,
            keystore,
            tags,
            policy,
            (spec, usage),
            MaterialOrigin::Generated,
        )
        .await
    }

    /// CreateKey with the material's origin: generated here, or imported later (`EXTERNAL`:
    /// the key is made in `PendingImport`, holding nothing).
    pub async fn create_key_from(
        &self,
        description: String,
        keystore: Option<&str>,
        tags: BTreeMap<String, String>,
        policy: Option<String>,
        (spec, usage): (KeySpec, KeyUsage),
        origin: MaterialOrigin,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        validate_description(&description)?;
        validate_tags(&tags)?;
        // A key made without a policy stores none: its policy is the account's default, whose
        // text (GetKeyPolicy) and parsed form every such key shares. Its record is smaller by
        // the text, and reading it back from the store parses no policy.
        if let Some(text) = &policy {
            validate_key_policy_size(text)?;
            Policy::parse(text, PolicyKind::Resource)
                .map_err(|e| KeyError::MalformedPolicy(e.0))?;
        }
        let keystore_name = &self.keystore_named(keystore);
        let keystore = self
            .keystores
            .get(keystore_name.as_str())
            .cloned()
            .ok_or_else(|| {
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
        let result = match origin {
            MaterialOrigin::Generated => {
                let mut tries = 0;
                loop {
                    // Material wrapped under an epoch another daemon retired meanwhile is
                    // made again under the current one.
                    match self
                        .create_key_counted(
                            description.clone(),
                            keystore.clone(),
                            tags.clone(),
                            policy.clone(),
                            (spec, usage),
                        )
                        .await
                    {
                        Err(KeyError::Contended(_)) if tries < super::MAX_STALE_TRIES => {
                            tries += 1;
                            self.store.catch_up().await?;
                        }
                        other => break other,
                    }
                }
            }
            MaterialOrigin::External => {
                self.create_external_key(description, keystore, tags, policy, (spec, usage))
                    .await
            }
        };
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
        match usage {
            KeyUsage::KeyAgreement => keystore.supports_key_agreement(spec),
            _ => keystore.supports(spec),
        }
        .map_err(|e| keystore_error(keystore.name(), e))?;
        let journalled = self.journal_generation(&keystore, material).await?;
        let heavy = spec.rsa_bits().is_some();
        // A device makes a key-agreement private key that derives and does not sign.
        let purpose = match usage {
            KeyUsage::KeyAgreement => crate::keystore::MaterialUse::KeyAgreement,
            _ => crate::keystore::MaterialUse::Default,
        };
        let generated = self
            .on_keystore_heavy(&keystore, "generate", Some(material), heavy, move |k| {
                // AES keys take the path they always took.
                match spec {
                    KeySpec::SymmetricDefault => k.generate(material),
                    other => k.generate_for(material, other, purpose),
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
            imported: None,
        };
        let mut batch = generated.records;
        Self::clear_generation(&mut batch, journalled, material);
        let change = self.index_change();
        let committed = async {
            batch.put(
                key_record_name(id),
                records::stored_record(&record).map_err(FailedChange::not_applied)?,
            );
            Ok::<_, FailedChange>(self.store.try_commit_at(batch).await?)
        }
        .await;
        let revision = match committed {
            Ok(revision) => revision,
            Err(failed) => {
                if !failed.applied {
                    change.settled();
                }
                self.undo_generation(&keystore, material, failed.applied)
                    .await;
                return Err(failed.error);
            }
        };
        let created = self.insert_created(KeyEntry::new(record, true, revision));
        change.settled();
        created
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
        let index = self.held.index();
        let mut items = Vec::with_capacity(limit);
        let mut more = false;
        for (id, state) in index.states(start) {
            if state == KeyState::Deleted {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(id);
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
            record.description = description.clone();
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
        let Some(entry) = self.entry_by_id(id)? else {
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
        // Destroying the key ends its grants.
        let _grants = self.grant_gate.lock().await;
        for grant in self.grant_record_names(id) {
            batch.delete(grant);
        }
        self.change_key_locked(&entry, move |record| {
            record.mark_deleted(now)?;
            Ok(batch.clone())
        })
        .await?;
        if let Ok(mut aliases) = self.aliases.write() {
            for alias in &doomed {
                aliases.remove(alias);
            }
        }
        self.forget_grants(id);
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
        for (id, summary) in self.held.index().dated() {
            if summary.deletion_due(now) {
                deletions.push(id);
            } else if summary.rotation_due(now) {
                rotations.push(id);
            }
        }
        (deletions, rotations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::keys::service::test_device::Device;
    use crate::secret::Secret;
    use crate::store::{Barrier, Entry, SledBackend, StoreBackend, StoreError};
    use std::sync::atomic::AtomicBool;

    /// Sled, except that once `fail` is set a batch writing a key record fails: in `apply`
    /// (nothing written) or, when `after_apply`, in the `sync` that follows it.
    struct Failing {
        sled: SledBackend,
        fail: AtomicBool,
        after_apply: AtomicBool,
        sync_doomed: AtomicBool,
    }

    impl StoreBackend for Failing {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.sled.get(key)
        }
        fn scan(
            &self,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            self.sled.scan(prefix, after, limit)
        }
        fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
            let writes_key = batch
                .clone()
                .into_ops()
                .iter()
                .any(|(name, _)| name.starts_with(KEY_PREFIX));
            if writes_key && self.fail.load(Ordering::SeqCst) {
                if !self.after_apply.load(Ordering::SeqCst) {
                    return Err(StoreError("apply refused".into()));
                }
                self.sync_doomed.store(true, Ordering::SeqCst);
            }
            self.sled.apply(batch)
        }
        fn sync(&self) -> Result<(), StoreError> {
            if self.sync_doomed.swap(false, Ordering::SeqCst) {
                return Err(StoreError("flush failed".into()));
            }
            self.sled.sync()
        }
    }

    struct Harness {
        _dir: tempfile::TempDir,
        backend: Arc<Failing>,
        store: Arc<Store>,
        device: Arc<Device>,
        service: KeyService,
    }

    fn harness(after_apply: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Failing {
            sled: SledBackend::open(dir.path()).unwrap(),
            fail: AtomicBool::new(false),
            after_apply: AtomicBool::new(after_apply),
            sync_doomed: AtomicBool::new(false),
        });
        let store =
            Arc::new(Store::open(backend.clone(), Barrier::new(Secret::new([7u8; 32]))).unwrap());
        let device = Arc::new(Device::default());
        let service = KeyService::open(
            KeyServiceConfig::new("111122223333"),
            Arc::new(SystemClock),
            store.clone(),
            vec![device.clone() as Arc<dyn KeyStore>],
        )
        .unwrap();
        Harness {
            _dir: dir,
            backend,
            store,
            device,
            service,
        }
    }

    fn stored(store: &Store, prefix: &[u8]) -> usize {
        store.scan(prefix, None, usize::MAX).unwrap().len()
    }

    async fn create(service: &KeyService) -> Result<Arc<KeyRecord>, KeyError> {
        service
            .create_key(String::new(), None, BTreeMap::new(), None)
            .await
    }

    /// A batch the store did not take after its retries (an etcd election outlasting them) is
    /// answered as retryable, with nothing applied: not as an internal error.
    #[test]
    fn a_change_the_store_could_not_take_is_retryable() {
        let failed = FailedChange::from(CommitError::Unavailable(StoreError(
            "etcdserver: no leader".into(),
        )));
        assert!(!failed.applied);
        assert!(
            matches!(failed.error, KeyError::StoreUnavailable),
            "{failed:?}"
        );
        assert!(!failed.error.to_string().contains("etcd"));
        let refused = FailedChange::from(CommitError::NotApplied(StoreError("refused".into())));
        assert!(
            matches!(refused.error, KeyError::Internal(_)),
            "{refused:?}"
        );
    }

    /// The key record was applied, only its flush failed: the record (naming the material)
    /// may reach disk with a later flush, so the material is kept and the call still fails.
    #[tokio::test]
    async fn material_is_kept_when_the_records_flush_fails() {
        let h = harness(true);
        let kept = create(&h.service).await.unwrap();
        h.backend.fail.store(true, Ordering::SeqCst);

        let error = create(&h.service).await.unwrap_err();
        assert!(
            matches!(error, KeyError::Internal(ref m) if m.contains("flush failed")),
            "{error:?}"
        );
        assert_eq!(h.device.generated.load(Ordering::SeqCst), 2);
        assert_eq!(
            h.device.discarded.load(Ordering::SeqCst),
            0,
            "material discarded"
        );
        assert_eq!(h.device.held.lock().unwrap().len(), 2);
        // The applied batch holds the record naming the material and cleared its journal entry.
        assert_eq!(stored(&h.store, KEY_PREFIX), 2);
        assert_eq!(stored(&h.store, b"generation/"), 0);

        let error = h
            .service
            .rotate_key(&kept.id.to_string())
            .await
            .unwrap_err();
        assert!(matches!(error, KeyError::Internal(_)), "{error:?}");
        assert_eq!(h.device.generated.load(Ordering::SeqCst), 3);
        assert_eq!(
            h.device.discarded.load(Ordering::SeqCst),
            0,
            "version discarded"
        );
        assert_eq!(h.device.held.lock().unwrap().len(), 3);
        assert_eq!(stored(&h.store, b"generation/"), 0);
    }

    /// The key record's batch was not applied at all: the material is discarded, and the
    /// journal entry stays for start-up to reconcile.
    #[tokio::test]
    async fn material_is_discarded_when_the_record_is_not_applied() {
        let h = harness(false);
        let kept = create(&h.service).await.unwrap();
        h.backend.fail.store(true, Ordering::SeqCst);

        let error = create(&h.service).await.unwrap_err();
        assert!(
            matches!(error, KeyError::Internal(ref m) if m.contains("apply refused")),
            "{error:?}"
        );
        assert_eq!(h.device.generated.load(Ordering::SeqCst), 2);
        assert_eq!(h.device.discarded.load(Ordering::SeqCst), 1);
        assert_eq!(h.device.held.lock().unwrap().len(), 1);
        assert_eq!(stored(&h.store, KEY_PREFIX), 1);
        assert_eq!(stored(&h.store, b"generation/"), 1);

        let error = h
            .service
            .rotate_key(&kept.id.to_string())
            .await
            .unwrap_err();
        assert!(matches!(error, KeyError::Internal(_)), "{error:?}");
        assert_eq!(h.device.discarded.load(Ordering::SeqCst), 2);
        assert_eq!(h.device.held.lock().unwrap().len(), 1);
        assert_eq!(stored(&h.store, b"generation/"), 2);
        assert_eq!(
            h.service
                .describe_key(&kept.id.to_string())
                .unwrap()
                .versions
                .len(),
            1
        );
    }
}
