//! The ciphertext blob format and encryption-context canonicalisation.
//!
//! Nothing here holds a key: the blob says which key and version made it and carries the nonce;
//! the keystore does the AES-256-GCM work with the AAD built here.

mod blob;
mod context;

pub use blob::{BLOB_HEADER_LEN, BLOB_VERSION, CiphertextBlob, InvalidBlob, NONCE_LEN, TAG_LEN};
pub use context::{EncryptionContext, InvalidContext};
