//! The sealed local keystore: key material generated from the OS's CSPRNG, wrapped under the
//! current epoch key (AES-256-GCM, bound to the record name `material/<key id>/<version>`) and
//! kept in the metadata store. Unwrapped ciphers are cached in memory after first use, at most
//! [`CIPHER_CACHE`] of them (an arbitrary one makes room); their key schedules live in pages of
//! their own, out of core dumps and swap ([`Locked`]), and are zeroized when dropped.
//!
//! Destroying material retires the epoch key it was wrapped under (see `keyring`): the
//! scheduler calls [`KeyStore::finish_destruction`] after destroying, which re-wraps every live
//! record under a new epoch and then forgets the old one. Two kinds of write may be in flight
//! meanwhile, and both are waited for through guards their batches hold: records wrapped under
//! an old epoch by a `generate` whose batch is not applied yet, and deletions by a `destroy`
//! whose tombstone is not applied yet (new destructions wait while records are re-wrapped, or
//! a re-wrapped copy could bring a deleted record back).

mod keyring;

pub use keyring::KEYRING_FILE;

use super::{GeneratedMaterial, KeyStore, KeyStoreError, MaterialRef, SEALED};
use crate::seal::{MasterKey, unwrap_with, wrap_with};
use crate::secret::{Locked, Secret, SecretBytes};
use crate::store::{Store, WriteBatch};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use keyring::Keyring;
use rand::RngCore;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Most unwrapped ciphers kept in memory (about 1 KB each); others are unwrapped on use.
pub const CIPHER_CACHE: usize = 10_000;
/// A material record: this byte, the epoch number (u32), then the wrap.
const EPOCH_WRAPPED: u8 = 0xE1;
/// Material records from before epochs: the wrap alone, under the master key.
const MASTER_WRAPPED_LEN: usize = 12 + 32 + 16;
/// Records re-wrapped per batch when an epoch is retired (fewer if the store's batches are
/// bounded: etcd's transactions are).
const REWRAP_PAGE: usize = 512;
/// How long retirement waits for writes in flight before trying again on the next pass.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

pub struct SealedKeyStore {
    master: Arc<MasterKey>,
    store: Arc<Store>,
    keyring: RwLock<Keyring>,
    ciphers: RwLock<HashMap<MaterialRef, Arc<Locked<Aes256Gcm>>>>,
    cache_limit: usize,
    /// Material was destroyed since the last retirement.
    retirement_due: AtomicBool,
    destructions: Mutex<Destructions>,
    /// One retirement at a time.
    retiring: Mutex<()>,
}

/// Destructions whose tombstones may not be applied yet, and whether new ones must wait.
struct Destructions {
    in_flight: Arc<()>,
    rewrapping: bool,
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
    /// The sealed keystore of the data directory `dir`: its keyring is read (or started) there.
    pub fn open(
        master: Arc<MasterKey>,
        store: Arc<Store>,
        dir: &Path,
    ) -> Result<Self, KeyStoreError> {
        let keyring = Keyring::open_or_create(dir, &master)
            .map_err(|e| KeyStoreError::Internal(e.to_string()))?;
        // A retirement cut short is finished on the first pass.
        let retirement_due = keyring.has_retiring();
        Ok(Self {
            master,
            store,
            keyring: RwLock::new(keyring),
            ciphers: RwLock::new(HashMap::new()),
            cache_limit: CIPHER_CACHE,
            retirement_due: AtomicBool::new(retirement_due),
            destructions: Mutex::new(Destructions {
                in_flight: Arc::new(()),
                rewrapping: false,
            }),
            retiring: Mutex::new(()),
        })
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
        let stored = self
            .store
            .get(&record)
            .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?
            .ok_or(KeyStoreError::MaterialNotFound(material))?;
        // A record that does not unwrap (damaged, moved from another record's place, or under
        // an epoch that is gone) is as good as missing: the key is unavailable, never served
        // with other material.
        let key = self.unwrap_stored(&record, &stored).ok_or_else(|| {
            tracing::error!(
                ?material,
                "sealed key material failed to unwrap: damaged or moved"
            );
            KeyStoreError::MaterialNotFound(material)
        })?;
        Aes256Gcm::new_from_slice(key.expose())
            .map_err(|_| KeyStoreError::Internal(format!("{material:?} has a bad length")))
    }

    /// The epoch a stored material record is wrapped under (`None`: the master key, before
    /// epochs).
    fn epoch_of(stored: &[u8]) -> Option<u32> {
        match stored {
            [EPOCH_WRAPPED, a, b, c, d, ..] if stored.len() > MASTER_WRAPPED_LEN => {
                Some(u32::from_be_bytes([*a, *b, *c, *d]))
            }
            _ => None,
        }
    }

    fn unwrap_stored(&self, record: &[u8], stored: &[u8]) -> Option<SecretBytes> {
        match Self::epoch_of(stored) {
            Some(id) => {
                let keyring = self.keyring.read().ok()?;
                let epoch = keyring.epochs.get(&id)?;
                unwrap_with(&epoch.cipher, record, &stored[5..]).ok()
            }
            None if stored.len() == MASTER_WRAPPED_LEN => self.master.unwrap(record, stored).ok(),
            None => None,
        }
    }

    /// Wraps `key` for `record` under the current epoch; the guard goes with the batch.
    fn wrap_current(&self, record: &[u8], key: &[u8]) -> Result<(Vec<u8>, Arc<()>), KeyStoreError> {
        let keyring = self.keyring.read().map_err(|_| poisoned())?;
        let epoch = keyring
            .current()
            .ok_or_else(|| KeyStoreError::Internal("the keyring has no current epoch".into()))?;
        let mut stored = Vec::with_capacity(5 + MASTER_WRAPPED_LEN);
        stored.push(EPOCH_WRAPPED);
        stored.extend_from_slice(&epoch.id.to_be_bytes());
        stored.extend_from_slice(&wrap_with(&epoch.cipher, record, key));
        Ok((stored, epoch.uses.clone()))
    }

    /// Retires every epoch but a new current one: re-wraps the live records, then forgets
    /// the old epoch keys. Returns how many records were re-wrapped.
    fn retire_epochs(&self) -> Result<usize, KeyStoreError> {
        let _one = self.retiring.lock().map_err(|_| poisoned())?;
        let started_now = self.retirement_due.swap(false, Ordering::AcqRel);
        let result = self.retire_epochs_locked(started_now);
        if result.is_err() {
            self.retirement_due.store(true, Ordering::Release);
        }
        self.set_rewrapping(false);
        result
    }

    fn set_rewrapping(&self, on: bool) {
        if let Ok(mut destructions) = self.destructions.lock() {
            destructions.rewrapping = on;
        }
    }

    fn retire_epochs_locked(&self, new_epoch: bool) -> Result<usize, KeyStoreError> {
        // No destruction may be in flight while records are re-wrapped.
        self.set_rewrapping(true);
        let destroying = self
            .destructions
            .lock()
            .map_err(|_| poisoned())?
            .in_flight
            .clone();
        wait_for_writes(&destroying)?;
        let retiring: Vec<Arc<()>> = {
            let mut keyring = self.keyring.write().map_err(|_| poisoned())?;
            if new_epoch || !keyring.has_retiring() {
                keyring.start_epoch(&self.master);
                keyring.retire_others();
                keyring
                    .write()
                    .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?;
            }
            keyring
                .epochs
                .values()
                .filter(|e| e.retiring())
                .map(|e| e.uses.clone())
                .collect()
        };
        // Records wrapped under a retiring epoch by a generate whose batch is still on its way.
        for uses in &retiring {
            wait_for_writes(uses)?;
        }
        drop(retiring);
        let current = self.keyring.read().map_err(|_| poisoned())?.current;
        let mut rewrapped = 0;
        let mut after: Option<Vec<u8>> = None;
        let page_size = REWRAP_PAGE.min(self.store.max_batch_ops());
        loop {
            let page = self
                .store
                .scan(MATERIAL_PREFIX, after.as_deref(), page_size)
                .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?;
            let last_page = page.len() < page_size;
            after = page.last().map(|(name, _)| name.clone());
            let mut batch = WriteBatch::new();
            for (record, stored) in page {
                if Self::epoch_of(&stored) == Some(current) {
                    continue;
                }
                let Some(key) = self.unwrap_stored(&record, &stored) else {
                    tracing::error!(
                        record = %String::from_utf8_lossy(&record),
                        "sealed key material does not unwrap; it cannot be re-wrapped"
                    );
                    continue;
                };
                let (wrapped, _) = self.wrap_current(&record, key.expose())?;
                batch.put(record, wrapped);
                rewrapped += 1;
            }
            if !batch.is_empty() {
                self.store
                    .commit_blocking(batch)
                    .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?;
            }
            if last_page {
                break;
            }
        }
        let mut keyring = self.keyring.write().map_err(|_| poisoned())?;
        let gone = keyring.drop_retiring();
        keyring
            .write()
            .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?;
        tracing::info!(
            retired = ?gone,
            current,
            rewrapped,
            "wrapping epochs retired: destroyed material can no longer be unwrapped"
        );
        Ok(rewrapped)
    }

    fn forget(&self, material: MaterialRef) {
        if let Ok(mut ciphers) = self.ciphers.write() {
            ciphers.remove(&material);
        }
    }
}

const MATERIAL_PREFIX: &[u8] = b"material/";

/// Waits until no batch holds `token` any more (each is applied or dropped): only its owner
/// and this clone of it are left.
fn wait_for_writes(token: &Arc<()>) -> Result<(), KeyStoreError> {
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    while Arc::strong_count(token) > 2 {
        if Instant::now() > deadline {
            return Err(KeyStoreError::Unavailable(
                "writes in flight did not finish; epoch retirement retried later".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
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
        let (wrapped, epoch_in_use) = self.wrap_current(&record, key.expose())?;
        let mut records = WriteBatch::new();
        records.put(record, wrapped);
        records.hold(epoch_in_use);
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
        let destructions = self.destructions.lock().map_err(|_| poisoned())?;
        if destructions.rewrapping {
            return Err(KeyStoreError::Unavailable(
                "material is being re-wrapped after a destruction; retried on the next pass".into(),
            ));
        }
        self.forget(material);
        let mut records = WriteBatch::new();
        // Removed in the tombstone's batch; the copy sled keeps in its log is made useless
        // when `finish_destruction` retires its epoch.
        records.delete(material_record(material));
        records.hold(destructions.in_flight.clone());
        self.retirement_due.store(true, Ordering::Release);
        Ok(records)
    }

    fn finish_destruction(&self) -> Result<usize, KeyStoreError> {
        if !self.retirement_due.load(Ordering::Acquire) {
            return Ok(0);
        }
        self.retire_epochs()
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
        let barrier = crate::store::Barrier::new(master.record_integrity_key());
        let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
        let keystore = SealedKeyStore::open(Arc::new(master), store.clone(), dir.path())
            .unwrap()
            .with_cache_limit(3);
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
