//! Imported key material (bring your own key) for keystores that unwrap it in memory: the
//! transport wraps AWS KMS defines, the lengths each key spec takes, and the commitment that
//! later imports are checked against.

use super::{COMMITMENT_NONCE, KeySpec, KeyStoreError, MaterialRef, WrappingAlgorithm, hmac};
use crate::secret::SecretBytes;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

/// Bytes of imported material a key of `spec` takes (AWS KMS's ranges for HMAC keys).
pub fn material_lengths(spec: KeySpec) -> Option<std::ops::RangeInclusive<usize>> {
    match spec {
        KeySpec::SymmetricDefault => Some(32..=32),
        KeySpec::Hmac224 => Some(28..=64),
        KeySpec::Hmac256 => Some(32..=64),
        KeySpec::Hmac384 => Some(48..=128),
        KeySpec::Hmac512 => Some(64..=128),
        _ => None,
    }
}

/// Refuses material whose length its key's spec does not take.
pub fn check_length(spec: KeySpec, len: usize) -> Result<(), KeyStoreError> {
    match material_lengths(spec) {
        Some(range) if range.contains(&len) => Ok(()),
        Some(range) => Err(KeyStoreError::IncorrectMaterial(format!(
            "imported material for a {} key must be {} to {} bytes; this is {len}",
            spec.as_str(),
            range.start(),
            range.end()
        ))),
        None => Err(KeyStoreError::Unsupported(format!(
            "material of {} keys cannot be imported",
            spec.as_str()
        ))),
    }
}

/// Opens `encrypted` with the wrapping key's private half, in memory; the result zeroizes
/// itself. Anything that does not open is [`KeyStoreError::DecryptFailed`], whatever failed.
pub fn unwrap(
    private: &rsa::RsaPrivateKey,
    algorithm: WrappingAlgorithm,
    encrypted: &[u8],
) -> Result<SecretBytes, KeyStoreError> {
    use rsa::traits::PublicKeyParts;
    let oaep = || rsa::Oaep::new::<sha2::Sha256>();
    match algorithm {
        WrappingAlgorithm::RsaesOaepSha256 => private
            .decrypt(oaep(), encrypted)
            .map(SecretBytes::new)
            .map_err(|_| KeyStoreError::DecryptFailed),
        WrappingAlgorithm::RsaAesKeyWrapSha256 => {
            let split = private.size();
            if encrypted.len() <= split {
                return Err(KeyStoreError::DecryptFailed);
            }
            let (wrapped_key, wrapped_material) = encrypted.split_at(split);
            let aes_key = private
                .decrypt(oaep(), wrapped_key)
                .map(SecretBytes::new)
                .map_err(|_| KeyStoreError::DecryptFailed)?;
            key_unwrap_with_padding(aes_key.expose(), wrapped_material)
        }
    }
}

/// AES key unwrap with padding (RFC 5649) under a 256-bit key.
pub fn key_unwrap_with_padding(key: &[u8], wrapped: &[u8]) -> Result<SecretBytes, KeyStoreError> {
    let kek = aes_kw::KekAes256::try_from(key).map_err(|_| KeyStoreError::DecryptFailed)?;
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(KeyStoreError::DecryptFailed);
    }
    let mut out = SecretBytes::new(vec![0u8; wrapped.len() - 8]);
    let len = kek
        .unwrap_with_padding(wrapped, out.expose_mut())
        .map_err(|_| KeyStoreError::DecryptFailed)?
        .len();
    let mut material = SecretBytes::new(vec![0u8; len]);
    material.expose_mut().copy_from_slice(&out.expose()[..len]);
    Ok(material)
}

/// The commitment to `key` as the material of `material` (see
/// [`super::COMMITMENT_NONCE`]): the AES-GCM tag of no plaintext for AES keys, the HMAC of
/// the same AAD for HMAC keys.
pub fn commitment(
    material: MaterialRef,
    spec: KeySpec,
    key: &[u8],
) -> Result<Vec<u8>, KeyStoreError> {
    let aad = super::commitment_aad(material.key_id);
    if let Some(algorithm) = spec.mac_algorithm() {
        return Ok(hmac(algorithm, key, &aad));
    }
    let cipher = Aes256Gcm::new_from_slice(key)
        .map_err(|_| KeyStoreError::IncorrectMaterial("not a 256-bit AES key".into()))?;
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&COMMITMENT_NONCE), &aad, &mut [])
        .map_err(|_| KeyStoreError::Internal("AES-GCM failed".into()))?;
    Ok(tag.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 256-bit round trip through RustCrypto's wrap, a tampered wrap refused, and a KEK of
    /// another size (RFC 5649's 192-bit example) refused.
    #[test]
    fn key_unwrap_with_padding_round_trips_and_refuses_tampering() {
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let kek = hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
        let wrapped = hex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a");
        assert!(key_unwrap_with_padding(&kek, &wrapped).is_err());
        let kek = [7u8; 32];
        let material = [9u8; 20];
        let mut wrapped = vec![0u8; 32];
        aes_kw::KekAes256::from(kek)
            .wrap_with_padding(&material, &mut wrapped)
            .unwrap();
        let opened = key_unwrap_with_padding(&kek, &wrapped).unwrap();
        assert_eq!(opened.expose(), &material);
        wrapped[3] ^= 1;
        assert!(key_unwrap_with_padding(&kek, &wrapped).is_err());
    }

    #[test]
    fn lengths_are_aws_s() {
        assert!(check_length(KeySpec::SymmetricDefault, 32).is_ok());
        assert!(matches!(
            check_length(KeySpec::SymmetricDefault, 16),
            Err(KeyStoreError::IncorrectMaterial(_))
        ));
        assert!(check_length(KeySpec::Hmac256, 64).is_ok());
        assert!(check_length(KeySpec::Hmac256, 65).is_err());
        assert!(matches!(
            check_length(KeySpec::EccNistP256, 32),
            Err(KeyStoreError::Unsupported(_))
        ));
    }
}
