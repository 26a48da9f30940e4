//! The key service's errors. The API layer maps each to a gRPC status and AWS reason name.

/// A refusal or failure of a key operation. Messages are safe to show the caller: they never
/// contain key material, plaintext or secrets. [`KeyError::Internal`]'s detail is for the log.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidState(String),
    /// A cryptographic operation on a Disabled key (AWS: `DisabledException`).
    #[error("{0}")]
    Disabled(String),
    #[error(
        "the ciphertext is invalid, was altered, or does not match the key or encryption context"
    )]
    InvalidCiphertext,
    #[error("{0}")]
    IncorrectKey(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    KeyStoreNotFound(String),
    #[error("{0}")]
    MalformedPolicy(String),
    /// The caller may not do this (the message names the action and the resource).
    #[error("{0}")]
    AccessDenied(String),
    /// The keystore cannot serve the key now (device down, material missing).
    #[error("{0}")]
    KeyStoreUnavailable(String),
    /// The key's usage (or spec) does not allow the operation or algorithm.
    #[error("{0}")]
    InvalidKeyUsage(String),
    /// The operation is not supported for this key (an HMAC key's rotation, a spec the
    /// keystore cannot make).
    #[error("{0}")]
    UnsupportedOperation(String),
    /// VerifyMac: the MAC does not verify.
    #[error("the MAC is not valid for the message, key and MAC algorithm given")]
    InvalidMac,
    /// Verify: the signature does not verify.
    #[error("the signature is not valid for the message, key and signing algorithm given")]
    InvalidSignature,
    /// A grant token this service did not make, or for a grant that has ended.
    #[error("{0}")]
    InvalidGrantToken(String),
    /// ImportKeyMaterial: the token is not one this daemon gave for this key.
    #[error("{0}")]
    InvalidImportToken(String),
    /// ImportKeyMaterial: the token's 24 hours have passed.
    #[error("{0}")]
    ExpiredImportToken(String),
    /// ImportKeyMaterial: the material differs from what the key had before.
    #[error("{0}")]
    IncorrectKeyMaterial(String),
    /// Another daemon sharing the store changed what this call read, and the call gave up
    /// trying again (retryable).
    #[error("{0}")]
    Contended(String),
    /// The metadata store did not take the change, after trying again (a cluster electing
    /// its leader): nothing was changed, and the call may be made again (retryable).
    #[error("the metadata store cannot take changes now (nothing was changed); try again")]
    StoreUnavailable,
    #[error("internal error")]
    Internal(String),
}

impl From<crate::store::StoreError> for KeyError {
    fn from(error: crate::store::StoreError) -> Self {
        KeyError::Internal(error.to_string())
    }
}
