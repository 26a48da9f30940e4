//! Ciphertext blob, version 1 (all integers big-endian):
//!
//! | bytes | field                                   |
//! |-------|-----------------------------------------|
//! | 0     | format version = 1                      |
//! | 1–16  | key id (UUID, 16 bytes)                 |
//! | 17–20 | key version (u32)                       |
//! | 21–32 | nonce (12 random bytes)                 |
//! | 33–   | AES-256-GCM ciphertext ‖ 16-byte tag    |
//!
//! The AAD is bytes 0–32 followed by the canonical encryption context, so the header cannot be
//! changed without the tag failing.

use super::EncryptionContext;
use uuid::Uuid;

pub const BLOB_VERSION: u8 = 1;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const BLOB_HEADER_LEN: usize = 1 + 16 + 4 + NONCE_LEN;

/// Why a byte string is not a ciphertext blob. Callers report every variant the same way
/// (`InvalidCiphertextException`); the detail is for logs and tests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBlob {
    #[error("blob shorter than header and tag")]
    TooShort,
    #[error("unknown blob format version {0}")]
    UnknownVersion(u8),
}

/// A parsed ciphertext blob, borrowing the sealed bytes (ciphertext ‖ tag) from its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiphertextBlob<'a> {
    pub key_id: Uuid,
    pub key_version: u32,
    pub nonce: [u8; NONCE_LEN],
    pub sealed: &'a [u8],
}

impl<'a> CiphertextBlob<'a> {
    /// Parses a blob without allocating.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, InvalidBlob> {
        if bytes.len() < BLOB_HEADER_LEN + TAG_LEN {
            return Err(InvalidBlob::TooShort);
        }
        if bytes[0] != BLOB_VERSION {
            return Err(InvalidBlob::UnknownVersion(bytes[0]));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[1..17]);
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[17..21]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[21..BLOB_HEADER_LEN]);
        Ok(Self {
            key_id: Uuid::from_bytes(id),
            key_version: u32::from_be_bytes(version),
            nonce,
            sealed: &bytes[BLOB_HEADER_LEN..],
        })
    }

    /// The 33 header bytes.
    pub fn header(
        key_id: Uuid,
        key_version: u32,
        nonce: &[u8; NONCE_LEN],
    ) -> [u8; BLOB_HEADER_LEN] {
        let mut header = [0u8; BLOB_HEADER_LEN];
        header[0] = BLOB_VERSION;
        header[1..17].copy_from_slice(key_id.as_bytes());
        header[17..21].copy_from_slice(&key_version.to_be_bytes());
        header[21..].copy_from_slice(nonce);
        header
    }

    /// The additional authenticated data: header ‖ canonical context.
    pub fn aad(
        key_id: Uuid,
        key_version: u32,
        nonce: &[u8; NONCE_LEN],
        context: &EncryptionContext,
    ) -> Vec<u8> {
        let mut aad = Vec::with_capacity(BLOB_HEADER_LEN + context.canonical_len());
        aad.extend_from_slice(&Self::header(key_id, key_version, nonce));
        context.write_canonical(&mut aad);
        aad
    }

    /// This blob's AAD under `context`.
    pub fn aad_for(&self, context: &EncryptionContext) -> Vec<u8> {
        Self::aad(self.key_id, self.key_version, &self.nonce, context)
    }

    /// Assembles a blob from its header fields and the sealed bytes.
    pub fn assemble(
        key_id: Uuid,
        key_version: u32,
        nonce: &[u8; NONCE_LEN],
        sealed: &[u8],
    ) -> Vec<u8> {
        let mut blob = Vec::with_capacity(BLOB_HEADER_LEN + sealed.len());
        blob.extend_from_slice(&Self::header(key_id, key_version, nonce));
        blob.extend_from_slice(sealed);
        blob
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_byte_for_byte_the_spec() {
        let id = Uuid::from_bytes([0xab; 16]);
        let nonce = [7u8; NONCE_LEN];
        let blob = CiphertextBlob::assemble(id, 0x0102_0304, &nonce, &[9u8; 20]);
        assert_eq!(blob[0], 1);
        assert_eq!(&blob[1..17], &[0xab; 16]);
        assert_eq!(&blob[17..21], &[1, 2, 3, 4]);
        assert_eq!(&blob[21..33], &[7; 12]);
        assert_eq!(&blob[33..], &[9; 20]);
        let parsed = CiphertextBlob::parse(&blob).unwrap();
        assert_eq!(parsed.key_id, id);
        assert_eq!(parsed.key_version, 0x0102_0304);
        assert_eq!(parsed.nonce, nonce);
        assert_eq!(parsed.sealed, &[9u8; 20]);
    }

    #[test]
    fn short_and_unknown_version_are_refused() {
        let id = Uuid::nil();
        let blob = CiphertextBlob::assemble(id, 1, &[0; 12], &[0; 16]);
        assert!(CiphertextBlob::parse(&blob).is_ok());
        assert_eq!(
            CiphertextBlob::parse(&blob[..blob.len() - 1]),
            Err(InvalidBlob::TooShort)
        );
        assert_eq!(CiphertextBlob::parse(&[]), Err(InvalidBlob::TooShort));
        let mut other = blob.clone();
        other[0] = 2;
        assert_eq!(
            CiphertextBlob::parse(&other),
            Err(InvalidBlob::UnknownVersion(2))
        );
    }

    #[test]
    fn aad_is_header_then_canonical_context() {
        let context = EncryptionContext::from_pairs([("b", "2"), ("a", "1")]).unwrap();
        let aad = CiphertextBlob::aad(Uuid::nil(), 3, &[1; 12], &context);
        let mut expected = CiphertextBlob::header(Uuid::nil(), 3, &[1; 12]).to_vec();
        for part in ["a", "1", "b", "2"] {
            expected.extend_from_slice(&(part.len() as u32).to_be_bytes());
            expected.extend_from_slice(part.as_bytes());
        }
        assert_eq!(aad, expected);
    }
}
