//! Rotation: new versions on demand, on schedule, and at the nonce limit.

use super::*;

impl KeyService {
    /// Adds a version; the caller holds the key's gate.
    pub(super) async fn rotate_locked(
        &self,
        entry: &KeyEntry,
        kind: RotationType,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        let record = entry.record();
        let keystore = self.keystore(&record.keystore)?;
        let now = self.now();
        let number = record.current_version().checked_add(1).ok_or_else(|| {
            KeyError::LimitExceeded("the key has reached its last version".into())
        })?;
        let material = MaterialRef {
            key_id: record.id,
            version: number,
        };
        let journalled = self.journal_generation(&keystore, material).await?;
        let generated = self
            .on_keystore(&keystore, "generate", Some(material), move |k| {
                k.generate(material)
            })
            .await?;
        let block = self.config.nonce_reservation_block;
        let result = self
            .try_change_key_locked(entry, move |record| {
                if record.current_version().checked_add(1) != Some(number) {
                    // Rotated on another daemon meanwhile: this version's material is not
                    // the key's, and is undone below.
                    return Err(KeyError::InvalidState(format!(
                        "key {} was rotated elsewhere at the same time; rotate it again if a \
                         new version is still wanted",
                        record.id
                    )));
                }
                record.versions.push(KeyVersion {
                    number,
                    created: now,
                    rotation_type: kind,
                    nonces_reserved: block,
                });
                // On-demand rotation leaves the automatic schedule as it was (as AWS KMS does).
                if let (RotationType::Automatic, Some(days)) = (kind, record.rotation.period_days) {
                    record.rotation.next_rotation = Some(now + i64::from(days) * DAY);
                }
                let mut batch = generated.records.clone();
                Self::clear_generation(&mut batch, journalled, material);
                Ok(batch)
            })
            .await;
        match result {
            Ok(record) => {
                if let Some(version) = record.versions.last() {
                    entry.set_nonces(Some(NonceCounter::new(version, 0)));
                }
                tracing::info!(key = %record.id, version = number, kind = kind.as_str(), "key rotated");
                Ok(record)
            }
            Err(failed) => {
                self.undo_generation(&keystore, material, failed.applied)
                    .await;
                Err(failed.error)
            }
        }
    }

    /// RotateKeyOnDemand.
    pub async fn rotate_key(&self, key: &str) -> Result<Arc<KeyRecord>, KeyError> {
        let entry = self.resolve(key, false)?;
        let _gate = entry.gate.lock().await;
        let record = entry.record();
        record.require_rotatable("RotateKeyOnDemand")?;
        record.require_enabled("RotateKeyOnDemand")?;
        // Each rotation adds a version to the record and material to the keystore for good.
        let on_demand = record
            .versions
            .iter()
            .filter(|v| v.rotation_type == RotationType::OnDemand)
            .count();
        if on_demand >= self.config.on_demand_rotation_quota as usize {
            return Err(KeyError::LimitExceeded(format!(
                "the key has been rotated on demand the most times it may be ({})",
                self.config.on_demand_rotation_quota
            )));
        }
        self.rotate_locked(&entry, RotationType::OnDemand).await
    }

    /// Automatic rotation, when its date has come (scheduler).
    pub(crate) async fn rotate_if_due(&self, id: Uuid) -> Result<bool, KeyError> {
        let Some(entry) = self.entry_by_id(id)? else {
            return Ok(false);
        };
        let _gate = entry.gate.lock().await;
        let record = entry.record();
        if !record.rotation_due(self.now()) {
            return Ok(false);
        }
        self.rotate_locked(&entry, RotationType::Automatic).await?;
        Ok(true)
    }

    pub async fn enable_rotation(
        &self,
        key: &str,
        period_days: Option<u32>,
    ) -> Result<(), KeyError> {
        let days = period_days.unwrap_or(self.config.default_rotation_period_days);
        if !(MIN_ROTATION_DAYS..=MAX_ROTATION_DAYS).contains(&days) {
            return Err(KeyError::Validation(format!(
                "RotationPeriodInDays must be between {MIN_ROTATION_DAYS} and {MAX_ROTATION_DAYS}; got {days}"
            )));
        }
        let entry = self.resolve(key, false)?;
        let now = self.now();
        self.change_key(&entry, |record| {
            record.require_rotatable("EnableKeyRotation")?;
            record.require_enabled("EnableKeyRotation")?;
            record.rotation = RotationSchedule {
                enabled: true,
                period_days: Some(days),
                next_rotation: Some(now + i64::from(days) * DAY),
            };
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    pub async fn disable_rotation(&self, key: &str) -> Result<(), KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_rotatable("DisableKeyRotation")?;
            record.require_active("DisableKeyRotation")?;
            record.rotation.enabled = false;
            record.rotation.next_rotation = None;
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    /// The key, for GetKeyRotationStatus and ListKeyRotations (`operation`): refused for keys
    /// that do not rotate.
    pub fn rotation_status(&self, key: &str) -> Result<Arc<KeyRecord>, KeyError> {
        let record = self.resolve(key, false)?.record();
        record.require_rotatable("Key rotation")?;
        Ok(record)
    }
}
