//! Customer master keys: metadata, the state machine, rotation, aliases, tags, the deletion
//! scheduler, and the cryptographic operations done with them.
//!
//! [`KeyService`] is the domain API the gRPC handlers call; it knows nothing of gRPC.

mod error;
mod model;
mod reference;
mod scheduler;
mod service;

pub use crate::keystore::{EncryptionAlgorithm, KeySpec, MacAlgorithm, SigningAlgorithm};
pub use error::KeyError;
pub use model::{
    DEFAULT_PENDING_DAYS, EXTERNAL_ORIGIN, ImportedMaterial, KeyRecord, KeyState, KeyUsage, KeyUse,
    KeyVersion, MAX_PENDING_DAYS, MIN_PENDING_DAYS, RECORD_FORM_BINARY, RotationSchedule,
    RotationType, key_spec_and_usage,
};
pub use reference::{KeyReference, printable as printable_input};
pub use scheduler::{DueReport, spawn_scheduler};
pub use service::{
    AliasEntry, DataKeyPair, DataKeySize, Decrypted, EncryptItem, Grant,
    IMPORT_PARAMETERS_VALIDITY, ImportParameters, KEY_CACHE, KeyService, KeyServiceConfig,
    ListPage, MAX_GRANT_RECORD, MAX_KEY_POLICY, MAX_MAC_MESSAGE, MAX_PLAINTEXT, MAX_SIGN_MESSAGE,
    MacAnswer, MaterialOrigin, MessageType, NewGrant, Orphan, PendingGeneration, PublicKey,
    Reconciliation, Signed, encryption_algorithm, encryption_algorithms, key_agreement_algorithm,
    key_pair_spec, mac_algorithm, material_expiry, signing_algorithm, validate_alias_name,
    validate_key_policy_size, validate_new_grant,
};
