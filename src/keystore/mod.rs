//! Where key material lives and is used: the [`KeyStore`] trait and its backends.
//!
//! The key service never touches material itself. It asks a keystore to generate a version,
//! to encrypt or decrypt with it (AES-256-GCM, with the nonce and AAD the service supplies, so
//! blobs look the same whichever keystore made them), and to destroy it. Keys of other specs
//! (HMAC) are generated with [`KeyStore::generate_spec`] and used with [`KeyStore::mac`]; what
//! a version is for is the key record's business, and the service checks it before every call.
//!
//! ## Partial failure
//! Creating a key (or a version of one) touches two places: the keystore (material) and the
//! metadata store (the key record). For a keystore whose material lives outside the metadata
//! store (a device: [`KeyStore::material_outside_store`]), the order is:
//! 1. a *pending generation* naming the keystore, key and version is committed to the
//!    metadata store (the generation journal);
//! 2. [`KeyStore::generate`];
//! 3. the key record is written, together with the records `generate` returned and the removal
//!    of the journal entry, in one atomic batch; if that write fails the service calls
//!    [`KeyStore::discard`].
//!
//! A crash (or a device that answered too late) between 1 and 3 leaves a journal entry and
//! maybe an object: at start-up the service destroys exactly the versions the journal names
//! and no key record has, then clears their entries. Nothing else in a device is ever
//! destroyed on a guess: material that neither a key record nor the journal names (a metadata
//! backup restored, a data directory copied to a second daemon on the same token) is an
//! *orphan*, reported (log, the `keystore_orphans` gauge, `ListOrphanedKeyMaterial`) and
//! destroyed only by an operator's explicit, authorised and audited
//! `DestroyOrphanedKeyMaterial`. A keystore that writes its material in the key record's own
//! batch (sealed) needs no journal.
//!
//! Destruction runs the other way round: [`KeyStore::destroy`] first (an HSM object that
//! cannot be destroyed keeps the key pending deletion, to be retried), then the tombstone is
//! written.

mod algorithms;
pub mod deadline;
pub mod import;
mod lanes;
pub mod pkcs11;
pub mod sealed;

use crate::secret::SecretBytes;
use crate::store::WriteBatch;
pub use algorithms::*;
use uuid::Uuid;

/// The name of the built-in sealed keystore.
pub const SEALED: &str = "sealed";

/// One version of one key's material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MaterialRef {
    pub key_id: Uuid,
    pub version: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The material is not (or no longer) in the keystore.
    #[error("key material {0:?} not found")]
    MaterialNotFound(MaterialRef),
    /// Authentication of the ciphertext failed (tampered, wrong AAD, wrong key).
    #[error("ciphertext failed authentication")]
    DecryptFailed,
    /// The keystore cannot be reached now; the call may succeed later.
    #[error("keystore unavailable: {0}")]
    Unavailable(String),
    /// The keystore cannot do this (a key spec or mechanism it lacks); the message names it.
    #[error("{0}")]
    Unsupported(String),
    /// Imported material that unwrapped but cannot be material of its key's spec (its length).
    #[error("{0}")]
    IncorrectMaterial(String),
    #[error("keystore failure: {0}")]
    Internal(String),
}

/// The fixed message imported material commits to: an AES-GCM tag of no plaintext under the
/// material, with an all-zero nonce and this AAD naming the key. Computed where the material
/// lives (in the device for a PKCS#11 keystore), so the daemon can tell a later import of
/// other material without keeping any.
pub const COMMITMENT_NONCE: [u8; 12] = [0; 12];

pub fn commitment_aad(key_id: Uuid) -> Vec<u8> {
    let mut aad = b"keyhaven imported material commitment v1 ".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// A wrapping key pair made for an import: its public half, and records to write with the
/// import token (the sealed store's wrapped private half; none for a device).
#[derive(Debug, Default)]
pub struct WrappingKey {
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    pub records: WriteBatch,
}

/// What [`KeyStore::import_material`] made: records for the key record's batch, and the
/// material's commitment (see [`COMMITMENT_NONCE`]).
#[derive(Debug, Default)]
pub struct ImportedMaterial {
    pub records: WriteBatch,
    pub commitment: Vec<u8>,
}

/// What a key's material is made for, where a keystore makes it accordingly (a device gives a
/// key-agreement private key `CKA_DERIVE` and not `CKA_SIGN`, so that the device itself keeps
/// it to its use). The keystore knows nothing of the key service's usages: the service says
/// which of these a key's usage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaterialUse {
    /// What keys of the spec do: AES keys encrypt, HMAC keys MAC, key pairs sign (RSA pairs
    /// also decrypt).
    Default,
    /// ECDH only: the private key derives shared secrets and does nothing else.
    KeyAgreement,
}

/// What [`KeyStore::generate`] made: records to write in the same batch as the key record.
#[derive(Debug, Default)]
pub struct GeneratedMaterial {
    pub records: WriteBatch,
}

/// One AES-256-GCM encryption of a batch handed to [`KeyStore::encrypt_many`]: the item's
/// nonce was taken (and its reservation made durable) before it is handed over.
#[derive(Debug)]
pub struct SealItem {
    pub material: MaterialRef,
    pub nonce: [u8; 12],
    pub aad: Vec<u8>,
    pub plaintext: SecretBytes,
}

/// A backend that holds key material and does AES-256-GCM with it.
pub trait KeyStore: Send + Sync + 'static {
    /// `sealed` or `pkcs11:<name>`, as DescribeKey reports it.
    fn name(&self) -> &str;

    /// The AWS-style origin of keys made here (`AWS_KMS`, `AWS_CLOUDHSM`).
    fn origin(&self) -> &'static str;

    /// Whether calls may block (device I/O): the service then runs them on blocking threads.
    fn blocks(&self) -> bool {
        false
    }

    /// This keystore as a [`deadline::DeadlineKeyStore`], if it is one: the key service then
    /// waits for its calls without holding a thread.
    fn deadline(&self) -> Option<&deadline::DeadlineKeyStore> {
        None
    }

    /// Generates a fresh 256-bit key for `material`.
    fn generate(&self, material: MaterialRef) -> Result<GeneratedMaterial, KeyStoreError>;

    /// Whether this keystore can make ECC keys of `spec` for key agreement (ECDH) and derive
    /// with them (checked before a key is made); by default, as for any key of the spec.
    fn supports_key_agreement(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        self.supports(spec)
    }

    /// Whether this keystore can make and use keys of `spec` (checked before a key is made);
    /// the refusal names what is missing.
    fn supports(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        match spec {
            KeySpec::SymmetricDefault => Ok(()),
            other => Err(KeyStoreError::Unsupported(format!(
                "keystore {} cannot make {} keys",
                self.name(),
                other.as_str()
            ))),
        }
    }

    /// Generates material of `spec` for `material`. AES keys go through [`KeyStore::generate`]
    /// unchanged; a keystore that makes other specs overrides this.
    fn generate_spec(
        &self,
        material: MaterialRef,
        spec: KeySpec,
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        match spec {
            KeySpec::SymmetricDefault => self.generate(material),
            other => Err(KeyStoreError::Unsupported(format!(
                "keystore {} cannot make {} keys",
                self.name(),
                other.as_str()
            ))),
        }
    }

    /// Generates material of `spec` made for `purpose`. By default as
    /// [`KeyStore::generate_spec`]: material the keystore uses in the daemon serves any use
    /// (the service keeps each key to its own); a device that gives its objects only their use
    /// overrides this.
    fn generate_for(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        purpose: MaterialUse,
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        let _ = purpose;
        self.generate_spec(material, spec)
    }

    /// The MAC of `message` under an HMAC version. The service has checked that the key's
    /// spec goes with `algorithm`.
    fn mac(
        &self,
        material: MaterialRef,
        algorithm: MacAlgorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let _ = (material, message);
        Err(KeyStoreError::Unsupported(format!(
            "keystore {} cannot compute {}",
            self.name(),
            algorithm.as_str()
        )))
    }

    /// The DER signature (as AWS KMS makes them) of `digest` with an asymmetric version of
    /// `spec`. The service has checked that the key's spec goes with `algorithm`, and the
    /// digest's length.
    fn sign(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        algorithm: SigningAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let _ = (material, digest);
        Err(KeyStoreError::Unsupported(format!(
            "keystore {} cannot sign with {} keys ({})",
            self.name(),
            spec.as_str(),
            algorithm.as_str()
        )))
    }

    /// The DER SubjectPublicKeyInfo of an asymmetric version of `spec`.
    fn public_key(&self, material: MaterialRef, spec: KeySpec) -> Result<Vec<u8>, KeyStoreError> {
        let _ = material;
        Err(KeyStoreError::Unsupported(format!(
            "keystore {} has no {} keys",
            self.name(),
            spec.as_str()
        )))
    }

    /// RSAES-OAEP decryption with an RSA version of usage `ENCRYPT_DECRYPT`;
    /// [`KeyStoreError::DecryptFailed`] for any ciphertext that does not open (one answer
    /// for every failure, so that the refusal says nothing about the padding).
    fn decrypt_asymmetric(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        algorithm: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        let _ = (material, ciphertext);
        Err(KeyStoreError::Unsupported(format!(
            "keystore {} cannot decrypt with {} keys ({})",
            self.name(),
            spec.as_str(),
            algorithm.as_str()
        )))
    }

    /// ECDH of an ECC version of usage `KEY_AGREEMENT` with the peer's public key (DER
    /// SubjectPublicKeyInfo, checked by the service to be on the key's curve): the shared
    /// secret's x-coordinate, as AWS KMS answers it.
    fn derive_shared_secret(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        peer: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        let _ = (material, peer);
        Err(KeyStoreError::Unsupported(format!(
            "keystore {} cannot derive shared secrets with {} keys",
            self.name(),
            spec.as_str()
        )))
    }

    /// Whether `mac` is the MAC of `message`, compared in constant time.
    fn verify_mac(
        &self,
        material: MaterialRef,
        algorithm: MacAlgorithm,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool, KeyStoreError> {
        let expected = self.mac(material, algorithm, message)?;
        Ok(subtle::ConstantTimeEq::ct_eq(expected.as_slice(), mac).into())
    }

    /// Whether keys of `spec` may have their material imported here (checked when the key is
    /// made, so that no key waits for an import its keystore would refuse).
    fn supports_import(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        Err(KeyStoreError::Unsupported(format!(
            "keystore {} cannot import {} key material",
            self.name(),
            spec.as_str()
        )))
    }

    /// Makes an RSA key pair of `bits` to unwrap material imported with the import token
    /// `wrapping` names.
    fn make_wrapping_key(&self, wrapping: Uuid, bits: usize) -> Result<WrappingKey, KeyStoreError> {
        let _ = (wrapping, bits);
        Err(KeyStoreError::Unsupported(format!(
            "keystore {} cannot import key material",
            self.name()
        )))
    }

    /// Unwraps `encrypted` with the wrapping key `wrapping` as the material of `material`
    /// (of `spec`). A wrap that does not open is [`KeyStoreError::DecryptFailed`].
    fn import_material(
        &self,
        material: MaterialRef,
        wrapping: Uuid,
        algorithm: WrappingAlgorithm,
        spec: KeySpec,
        encrypted: &[u8],
    ) -> Result<ImportedMaterial, KeyStoreError> {
        let _ = (material, wrapping, algorithm, spec, encrypted);
        Err(KeyStoreError::Unsupported(format!(
            "keystore {} cannot import key material",
            self.name()
        )))
    }

    /// Destroys a wrapping key pair (its token expired); returns records to delete with it.
    fn destroy_wrapping_key(&self, wrapping: Uuid) -> Result<WriteBatch, KeyStoreError> {
        let _ = wrapping;
        Ok(WriteBatch::new())
    }

    /// Undoes a `generate` whose key record could not be written. Best effort.
    fn discard(&self, material: MaterialRef);

    /// Another daemon sharing the store changed or removed the record `name` (the view moves
    /// to `revision` once this returns): the keystore drops or reads again what it keeps of
    /// it; `name` a prefix of record names stands for all of them.
    fn heard(&self, name: &[u8], revision: i64) {
        let _ = (name, revision);
    }

    /// AES-256-GCM: returns ciphertext ‖ 16-byte tag.
    fn encrypt(
        &self,
        material: MaterialRef,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError>;

    /// [`KeyStore::encrypt`] of every item, each answered in its position: one item's failure
    /// is its own answer. The whole call fails only when the keystore could not be asked at all
    /// (a deadline passed). A device keystore does the items in one hand-off, on one session.
    fn encrypt_many(
        &self,
        items: Vec<SealItem>,
    ) -> Result<Vec<Result<Vec<u8>, KeyStoreError>>, KeyStoreError> {
        Ok(items
            .iter()
            .map(|item| {
                self.encrypt(
                    item.material,
                    &item.nonce,
                    &item.aad,
                    item.plaintext.expose(),
                )
            })
            .collect())
    }

    /// AES-256-GCM open of ciphertext ‖ tag; [`KeyStoreError::DecryptFailed`] when the tag fails.
    fn decrypt(
        &self,
        material: MaterialRef,
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes, KeyStoreError>;

    /// Destroys the material; returns records to delete in the tombstone's batch.
    fn destroy(&self, material: MaterialRef) -> Result<WriteBatch, KeyStoreError>;

    /// Makes the destructions since the last call final where removing a record is not enough
    /// (the sealed store retires the wrapping epoch: its copies in the store's log no longer
    /// unwrap). Called by the scheduler after its destructions, on a blocking thread; returns how
    /// many records it rewrote. A failure is retried on the next pass.
    fn finish_destruction(&self) -> Result<usize, KeyStoreError> {
        Ok(0)
    }

    /// Checks that the material is present (start-up check).
    fn check(&self, material: MaterialRef) -> Result<(), KeyStoreError>;

    /// Whether generated material lives outside the metadata store (a device), so that a
    /// generation cut short can leave material behind: the service then journals each
    /// generation before it starts (see the module docs).
    fn material_outside_store(&self) -> bool {
        false
    }

    /// Every version this daemon holds in the keystore, to find orphans (material that
    /// neither a key record nor the generation journal names). Keystores that write material
    /// in the metadata batch itself have none to find.
    fn list(&self) -> Result<Vec<MaterialRef>, KeyStoreError> {
        Ok(Vec::new())
    }
}
