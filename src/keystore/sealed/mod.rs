//! The sealed local keystore: key material generated from the OS's CSPRNG, wrapped under the
//! master key (AES-256-GCM, bound to the record name `material/<key id>/<version>`) and kept in
//! the metadata store. Unwrapped ciphers are cached in memory after first use, at most
//! [`CIPHER_CACHE`] of them (an arbitrary one makes room); their key schedules live in pages of
//! their own, out of core dumps and swap ([`Locked`]), and are zeroized when dropped.

use super::{GeneratedMaterial, KeyStore, KeyStoreError, MaterialRef, SEALED};
use crate::seal::MasterKey;
use crate::secret::{Locked, Secret, SecretBytes};
use crate::store::{Store, WriteBatch};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Most unwrapped ciphers kept in memory (about 1 KB each); others are unwrapped on use.
pub const CIPHER_CACHE: usize = 10_000;

pub struct SealedKeyStore {
    master: Arc<MasterKey>,
    store: Arc<Store>,
    ciphers: RwLock<HashMap<MaterialRef, Arc<Locked<Aes256Gcm>>>>,
    cache_limit: usize,
}

/// The store key of a version's wrapped material; also the AAD that binds the wrap to it.
pub fn material_record(material: MaterialRef) -> Vec<u8> {
    let mut key = b"material/".to_vec();
    key.extend_from_slice(material.key_id.as_hyphenated().to_string().as_bytes());
    key.push(b'/');
    key.extend_from_slice(&material.version.to_be_bytes());
    key
}

impl SealedKeyStore {
    pub fn new(master: Arc<MasterKey>, store: Arc<Store>) -> Self {
        Self {
            master,
            store,
            ciphers: RwLock::new(HashMap::new()),
            cache_limit: CIPHER_CACHE,
        }
    }

    /// The same, keeping at most `limit` unwrapped ciphers (at least one).
    pub fn with_cache_limit(mut self, limit: usize) -> Self {
        self.cache_limit = limit.max(1);
        self
    }

    /// How many unwrapped ciphers are in memory.
    pub fn cached(&self) -> usize {
        self.ciphers.read().map(|c| c.len()).unwrap_or(0)
    }

    fn cipher(&self, material: MaterialRef) -> Result<Arc<Locked<Aes256Gcm>>, KeyStoreError> {
        if let Some(cipher) = self.ciphers.read().map_err(|_| poisoned())?.get(&material) {
            return Ok(cipher.clone());
        }
        let cipher = Arc::new(Locked::new(self.unwrap(material)?));
        let mut ciphers = self.ciphers.write().map_err(|_| poisoned())?;
        if ciphers.len() >= self.cache_limit
            && let Some(evicted) = ciphers.keys().next().copied()
        {
            ciphers.remove(&evicted);
        }
        ciphers.insert(material, cipher.clone());
        Ok(cipher)
    }

    /// Reads and unwraps a version's material.
    fn unwrap(&self, material: MaterialRef) -> Result<Aes256Gcm, KeyStoreError> {
        let record = material_record(material);
        let wrapped = self
            .store
            .get(&record)
            .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?
            .ok_or(KeyStoreError::MaterialNotFound(material))?;
        // A record that does not unwrap (damaged, or moved from another record's place) is as
        // good as missing: the key is unavailable, never served with other material.
        let key = self.master.unwrap(&record, &wrapped).map_err(|_| {
            tracing::error!(
                ?material,
                "sealed key material failed to unwrap: damaged or moved"
            );
            KeyStoreError::MaterialNotFound(material)
        })?;
        Aes256Gcm::new_from_slice(key.expose())
            .map_err(|_| KeyStoreError::Internal(format!("{material:?} has a bad length")))
    }

    fn forget(&self, material: MaterialRef) {
        if let Ok(mut ciphers) = self.ciphers.write() {
            ciphers.remove(&material);
        }
    }
}

fn poisoned() -> KeyStoreError {
    KeyStoreError::Internal("cipher cache lock poisoned".into())
}

impl KeyStore for SealedKeyStore {
    fn name(&self) -> &str {
        SEALED
    }

    fn origin(&self) -> &'static str {
        "AWS_KMS"
    }

    fn generate(&self, material: MaterialRef) -> Result<GeneratedMaterial, KeyStoreError> {
        let mut key = Secret::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.expose_mut());
        let record = material_record(material);
        let wrapped = self.master.wrap(&record, key.expose());
        let mut records = WriteBatch::new();
        records.put(record, wrapped);
        Ok(GeneratedMaterial { records })
    }

    fn discard(&self, material: MaterialRef) {
        // The wrapped record was never written; only a cache entry could exist.
        self.forget(material);
    }

    fn encrypt(
        &self,
        material: MaterialRef,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let cipher = self.cipher(material)?;
        let mut buffer = Vec::with_capacity(plaintext.len() + 16);
        buffer.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut buffer)
            .map_err(|_| KeyStoreError::Internal("AES-GCM encryption failed".into()))?;
        buffer.extend_from_slice(&tag);
        Ok(buffer)
    }

    fn decrypt(
        &self,
        material: MaterialRef,
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        let cipher = self.cipher(material)?;
        let Some(split) = sealed.len().checked_sub(16) else {
            return Err(KeyStoreError::DecryptFailed);
        };
        let (ciphertext, tag) = sealed.split_at(split);
        let mut buffer = SecretBytes::new(ciphertext.to_vec());
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad,
                buffer.expose_mut(),
                Tag::from_slice(tag),
            )
            .map_err(|_| KeyStoreError::DecryptFailed)?;
        Ok(buffer)
    }

    fn destroy(&self, material: MaterialRef) -> Result<WriteBatch, KeyStoreError> {
        self.forget(material);
        let mut records = WriteBatch::new();
        // Overwritten, then removed, in the tombstone's batch.
        let record = material_record(material);
        records.put(record.clone(), vec![0u8; 60]);
        records.delete(record);
        Ok(records)
    }

    fn check(&self, material: MaterialRef) -> Result<(), KeyStoreError> {
        // Unwrapped to prove it whole, not kept: a start-up check must not fill the cache.
        self.unwrap(material).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{self, KdfParams};
    use crate::secret::SecretString;
    use crate::store::SledBackend;

    #[test]
    fn the_cipher_cache_is_bounded_and_the_start_up_check_does_not_fill_it() {
        let dir = tempfile::tempdir().unwrap();
        let passphrase = SecretString::new("cache test".into());
        let (_, master) = seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
        let backend = SledBackend::open(&dir.path().join("store")).unwrap();
        let store = Arc::new(Store::new(Arc::new(backend)));
        let keystore = SealedKeyStore::new(Arc::new(master), store.clone()).with_cache_limit(3);
        let materials: Vec<MaterialRef> = (0..5)
            .map(|_| MaterialRef {
                key_id: uuid::Uuid::new_v4(),
                version: 1,
            })
            .collect();
        for material in &materials {
            store
                .commit_blocking(keystore.generate(*material).unwrap().records)
                .unwrap();
        }
        for material in &materials {
            keystore.check(*material).unwrap();
        }
        assert_eq!(keystore.cached(), 0, "checking keeps nothing unwrapped");
        // Every key works, twice over, while at most three are kept unwrapped.
        for _ in 0..2 {
            for material in &materials {
                let sealed = keystore
                    .encrypt(*material, &[9; 12], b"aad", b"data")
                    .unwrap();
                let opened = keystore
                    .decrypt(*material, &[9; 12], b"aad", &sealed)
                    .unwrap();
                assert_eq!(opened.expose(), b"data");
                assert!(keystore.cached() <= 3, "{} cached", keystore.cached());
            }
        }
        assert_eq!(keystore.cached(), 3);
    }
}
