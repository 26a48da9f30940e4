//! Cryptographic operations: Encrypt, Decrypt, ReEncrypt, data keys, random bytes.

use super::*;

impl KeyService {
    /// Refuses unless the key may be used now; a key pending deletion is logged and counted.
    pub(super) fn require_usable(
        &self,
        record: &KeyRecord,
        operation: &str,
    ) -> Result<(), KeyError> {
        let result = record.require_enabled(operation);
        if result.is_err() && record.state == KeyState::PendingDeletion {
            self.pending_deletion_uses.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = crate::metrics::metrics() {
                m.pending_deletion_uses.inc();
            }
            tracing::warn!(key = %record.id, operation, deletion_date = ?record.deletion_date,
                "attempt to use a key pending deletion: something still depends on it");
        }
        result
    }

    /// Takes one encryption count from the key's current version, reserving more on disk or
    /// rotating when needed. Returns the version to encrypt with.
    pub(super) async fn take_nonce(
        &self,
        entry: &KeyEntry,
        operation: &str,
    ) -> Result<u32, KeyError> {
        loop {
            self.require_usable(&entry.record(), operation)?;
            let counter = entry
                .nonces()
                .ok_or_else(|| KeyError::Internal("key has no versions".into()))?;
            let count = counter.used.fetch_add(1, Ordering::Relaxed);
            if count >= self.config.nonce_limit {
                let _gate = entry.gate.lock().await;
                if entry.nonces().is_some_and(|c| c.version == counter.version) {
                    entry.record().require_enabled(operation)?;
                    self.rotate_locked(entry, RotationType::NonceLimit).await?;
                }
                continue;
            }
            if count < counter.reserved.load(Ordering::Acquire)
                && count >= counter.floor.load(Ordering::Acquire)
            {
                return Ok(counter.version);
            }
            let _gate = entry.gate.lock().await;
            if !entry.nonces().is_some_and(|c| Arc::ptr_eq(&c, &counter)) {
                continue;
            }
            if count < counter.floor.load(Ordering::Acquire) {
                // Taken before the count jumped past another daemon's reservation.
                continue;
            }
            if count >= counter.reserved.load(Ordering::Acquire) {
                let version = counter.version;
                let (block, limit) = (self.config.nonce_reservation_block, self.config.nonce_limit);
                let mut granted = (count, count);
                self.change_key_locked(entry, |record| {
                    let stored = record.version_mut(version).ok_or_else(|| {
                        KeyError::Internal("current version missing from record".into())
                    })?;
                    // Counts reserved on the record are taken (by this daemon, or another
                    // sharing the store): this block starts past them.
                    let from = stored.nonces_reserved.max(count);
                    let until = from.saturating_add(1).saturating_add(block).min(limit);
                    stored.nonces_reserved = stored.nonces_reserved.max(until);
                    granted = (from, until);
                    Ok(WriteBatch::new())
                })
                .await?;
                let (from, until) = granted;
                counter.reserved.fetch_max(until, Ordering::AcqRel);
                if from > count {
                    // Another daemon holds the counts up to `from`: every count below it is
                    // void here, this one's included.
                    counter.used.fetch_max(from, Ordering::AcqRel);
                    counter.floor.fetch_max(from, Ordering::AcqRel);
                    continue;
                }
            }
            return Ok(counter.version);
        }
    }

    /// Everything an encryption under the key's current version needs before its keystore
    /// seals: the key's checks, one nonce taken (its reservation durable), the AAD.
    pub(super) async fn prepare_seal(
        &self,
        entry: &KeyEntry,
        context: &EncryptionContext,
        operation: &'static str,
    ) -> Result<PreparedSeal, KeyError> {
        let current = entry.record();
        self.require_usable(&current, operation)?;
        current.require_usage(KeyUsage::EncryptDecrypt, operation)?;
        super::asymmetric::require_symmetric(&current, operation)?;
        let version = self.take_nonce(entry, operation).await?;
        self.note_use(entry, operation);
        let record = entry.record();
        let keystore = self.keystore(&record.keystore)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = CiphertextBlob::aad(record.id, version, &nonce, context);
        Ok(PreparedSeal {
            keystore,
            material: MaterialRef {
                key_id: record.id,
                version,
            },
            nonce,
            aad,
        })
    }

    /// Encrypts under the key's current version; returns the blob.
    pub(super) async fn encrypt_with(
        &self,
        entry: &KeyEntry,
        plaintext: &[u8],
        context: &EncryptionContext,
        operation: &'static str,
    ) -> Result<Vec<u8>, KeyError> {
        let PreparedSeal {
            keystore,
            material,
            nonce,
            aad,
        } = self.prepare_seal(entry, context, operation).await?;
        let sealed = if keystore.blocks() {
            let plaintext = SecretBytes::new(plaintext.to_vec());
            self.on_keystore(&keystore, "encrypt", None, move |k| {
                k.encrypt(material, &nonce, &aad, plaintext.expose())
            })
            .await?
        } else {
            in_place(&*keystore, "encrypt", |k| {
                k.encrypt(material, &nonce, &aad, plaintext)
            })?
        };
        Ok(CiphertextBlob::assemble(
            material.key_id,
            material.version,
            &nonce,
            &sealed,
        ))
    }

    /// Encrypt: returns the ciphertext blob and the key's id.
    pub async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, Uuid), KeyError> {
        require_plaintext(plaintext)?;
        let entry = self.resolve(key, false)?;
        let blob = self
            .encrypt_with(&entry, plaintext, context, "Encrypt")
            .await?;
        Ok((blob, entry.record().id))
    }

    /// Decrypt. Every failure to open the blob is the same [`KeyError::InvalidCiphertext`].
    pub async fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        expected_key: Option<&str>,
    ) -> Result<Decrypted, KeyError> {
        self.decrypt_as(blob, context, expected_key, "Decrypt")
            .await
    }

    pub(super) async fn decrypt_as(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        expected_key: Option<&str>,
        operation: &'static str,
    ) -> Result<Decrypted, KeyError> {
        let parsed = CiphertextBlob::parse(blob).map_err(|_| KeyError::InvalidCiphertext)?;
        if let Some(expected) = expected_key {
            let expected = self.resolve_id(expected)?;
            if expected != parsed.key_id {
                return Err(KeyError::IncorrectKey(
                    "the ciphertext was not made under the key given".into(),
                ));
            }
        }
        // On what this daemon has heard of: on a store other daemons write, the call has
        // heard of the ciphertext's key and version before it was authorised
        // (`hear_of_key_version`).
        let entry = self
            .entry_by_id(parsed.key_id)?
            .ok_or(KeyError::InvalidCiphertext)?;
        let record = entry.record();
        if record.state == KeyState::Deleted {
            return Err(KeyError::InvalidCiphertext);
        }
        self.require_usable(&record, operation)?;
        record.require_usage(KeyUsage::EncryptDecrypt, operation)?;
        super::asymmetric::require_symmetric(&record, operation)?;
        self.note_use(&entry, operation);
        if record.version(parsed.key_version).is_none() {
            return Err(KeyError::InvalidCiphertext);
        }
        let keystore = self.keystore(&record.keystore)?;
        let material = MaterialRef {
            key_id: record.id,
            version: parsed.key_version,
        };
        let aad = parsed.aad_for(context);
        let nonce = parsed.nonce;
        let plaintext = if keystore.blocks() {
            let sealed = parsed.sealed.to_vec();
            self.on_keystore(&keystore, "decrypt", None, move |k| {
                k.decrypt(material, &nonce, &aad, &sealed)
            })
            .await?
        } else {
            in_place(&*keystore, "decrypt", |k| {
                k.decrypt(material, &nonce, &aad, parsed.sealed)
            })?
        };
        Ok(Decrypted {
            key_id: record.id,
            plaintext,
        })
    }

    /// Waits, on a store other daemons write, until this daemon's view has caught up with the
    /// store, when it has not heard of key `id` or of its `version` (a ciphertext names them):
    /// a ciphertext another daemon has just answered (under a key it just made, or a version it
    /// just rotated to) then decrypts here too. Called before a ciphertext's key is authorised
    /// ([`Self::decrypt`] judges on what this daemon has heard of); a key or version still
    /// unknown after is left to the call to refuse. `asked`: when the call came (see
    /// [`Self::hear_of`]).
    pub async fn hear_of_key_version(&self, asked: Instant, id: Uuid, version: u32) {
        self.hear_of(asked, |keys| match keys.entry_by_id(id) {
            // A version older than the key's current one that it lacks was never made.
            Ok(Some(entry)) => version <= entry.record().current_version(),
            Ok(None) => false,
            // Nothing to wait for: the call meets the same failure when it is judged.
            Err(_) => true,
        })
        .await;
    }

    /// ReEncrypt: decrypts and encrypts again inside the daemon; returns the new blob, the
    /// source key id and the destination key id.
    pub async fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        source_key: Option<&str>,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<(Vec<u8>, Uuid, Uuid), KeyError> {
        let destination = self.resolve(destination_key, false)?;
        let decrypted = self
            .decrypt_as(blob, source_context, source_key, "ReEncrypt")
            .await?;
        let blob = self
            .encrypt_with(
                &destination,
                decrypted.plaintext.expose(),
                destination_context,
                "ReEncrypt",
            )
            .await?;
        Ok((blob, decrypted.key_id, destination.record().id))
    }

    /// GenerateDataKey: a random data key, returned in plaintext and encrypted under the key.
    pub async fn generate_data_key(
        &self,
        key: &str,
        size: DataKeySize,
        context: &EncryptionContext,
    ) -> Result<(SecretBytes, Vec<u8>, Uuid), KeyError> {
        let entry = self.resolve(key, false)?;
        let data_key = random_bytes(size.len());
        let blob = self
            .encrypt_with(&entry, data_key.expose(), context, "GenerateDataKey")
            .await?;
        Ok((data_key, blob, entry.record().id))
    }

    /// GenerateRandom: 1–1024 bytes from the OS's CSPRNG.
    pub fn generate_random(&self, number_of_bytes: u32) -> Result<SecretBytes, KeyError> {
        if !(1..=MAX_RANDOM).contains(&number_of_bytes) {
            return Err(KeyError::Validation(format!(
                "NumberOfBytes must be between 1 and {MAX_RANDOM}; got {number_of_bytes}"
            )));
        }
        Ok(random_bytes(number_of_bytes as usize))
    }
}

/// An encryption prepared by [`KeyService::prepare_seal`], waiting for its keystore.
pub(super) struct PreparedSeal {
    pub(super) keystore: Arc<dyn KeyStore>,
    pub(super) material: MaterialRef,
    pub(super) nonce: [u8; NONCE_LEN],
    pub(super) aad: Vec<u8>,
}

/// Refuses a plaintext Encrypt does not take.
pub(super) fn require_plaintext(plaintext: &[u8]) -> Result<(), KeyError> {
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
        return Err(KeyError::Validation(format!(
            "Plaintext must be 1 to {MAX_PLAINTEXT} bytes; got {}",
            plaintext.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_key_sizes() {
        assert_eq!(
            DataKeySize::from_request("AES_256", None).unwrap().len(),
            32
        );
        assert_eq!(
            DataKeySize::from_request("AES_128", None).unwrap().len(),
            16
        );
        assert_eq!(DataKeySize::from_request("", Some(1)).unwrap().len(), 1);
        assert_eq!(
            DataKeySize::from_request("", Some(1024)).unwrap().len(),
            1024
        );
        for (spec, bytes) in [
            ("", None),
            ("", Some(0)),
            ("", Some(1025)),
            ("AES_256", Some(32)),
            ("AES_512", None),
        ] {
            assert!(
                matches!(
                    DataKeySize::from_request(spec, bytes),
                    Err(KeyError::Validation(_))
                ),
                "{spec} {bytes:?}"
            );
        }
    }
}
