//! Where key material lives and is used: the [`KeyStore`] trait and its backends.
//!
//! The key service never touches material itself. It asks a keystore to generate a version,
//! to encrypt or decrypt with it (AES-256-GCM, with the nonce and AAD the service supplies, so
//! blobs look the same whichever keystore made them), and to destroy it.
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

pub mod deadline;
pub mod pkcs11;
pub mod sealed;

use crate::secret::SecretBytes;
use crate::store::WriteBatch;
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
    #[error("keystore failure: {0}")]
    Internal(String),
}

/// What [`KeyStore::generate`] made: records to write in the same batch as the key record.
#[derive(Debug, Default)]
pub struct GeneratedMaterial {
    pub records: WriteBatch,
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

    /// Undoes a `generate` whose key record could not be written. Best effort.
    fn discard(&self, material: MaterialRef);

    /// AES-256-GCM: returns ciphertext ‖ 16-byte tag.
    fn encrypt(
        &self,
        material: MaterialRef,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError>;

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
