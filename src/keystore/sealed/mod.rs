//! The sealed local keystore: key material generated from the OS's CSPRNG, wrapped under the
//! current epoch key (AES-256-GCM, bound to the record name `material/<key id>/<version>`) and
//! kept in the metadata store. Unwrapped ciphers are cached in memory after first use, at most
//! [`CIPHER_CACHE`] of them by default (`cipher_cache` in the config; the least recently used
//! makes room); their key schedules live in locked pages the cache shares, out of core dumps
//! and swap ([`LockedSlab`]: about sixty schedules a 64 KiB chunk), and are zeroized when
//! dropped.
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
use crate::secret::{InSlab, LockedSlab, Secret, SecretBytes};
use crate::store::{Store, WriteBatch};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use keyring::Keyring;
use lru::LruCache;
use prometheus::IntCounter;
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
    ciphers: Mutex<LruCache<MaterialRef, Arc<InSlab<Aes256Gcm>>>>,
    /// The locked pages the cached ciphers live in.
    slab: LockedSlab<Aes256Gcm>,
    /// The cache's hit and miss counters, looked up once (not per call).
    counted: Option<(IntCounter, IntCounter)>,
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
            slab: LockedSlab::default(),
            counted: crate::metrics::metrics().map(|m| {
                (
                    m.cipher_cache.with_label_values(&["hit"]),
                    m.cipher_cache.with_label_values(&["miss"]),
                )
            }),
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

    fn cipher(&self, material: MaterialRef) -> Result<Arc<InSlab<Aes256Gcm>>, KeyStoreError> {
        if let Some(cipher) = self.ciphers.lock().map_err(|_| poisoned())?.get(&material) {
            if let Some((hits, _)) = &self.counted {
                hits.inc();
            }
            return Ok(cipher.clone());
        }
        if let Some((_, misses)) = &self.counted {
            misses.inc();
        }
        // Unwrapped outside the lock: a miss does not hold up the hits.
        let cipher = Arc::new(self.slab.put(self.unwrap(material)?));
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
mod tests;
