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

/// MGF1 with SHA-256 (RFC 8017, B.2.1), XORed into `out`.
fn mgf1_sha256_xor(seed: &[u8], out: &mut [u8]) {
    use sha2::Digest;
    for (counter, chunk) in out.chunks_mut(32).enumerate() {
        let mut hash = sha2::Sha256::new();
        hash.update(seed);
        hash.update((counter as u32).to_be_bytes());
        for (byte, mask) in chunk.iter_mut().zip(hash.finalize()) {
            *byte ^= mask;
        }
    }
}

/// EME-OAEP decoding with SHA-256, MGF1-SHA-256 and an empty label (RFC 8017, 7.1.2 step 3)
/// of `block`, the raw RSA result of a `modulus_len`-byte key. For a device whose OAEP takes
/// only SHA-1 (SoftHSM2 2.6): the device does the private-key operation, this the padding.
/// The checks are combined without early exit so that a bad block is not told apart by when
/// it failed.
pub fn oaep_sha256_decode(block: &[u8], modulus_len: usize) -> Result<SecretBytes, KeyStoreError> {
    use sha2::Digest;
    use subtle::{ConditionallySelectable, ConstantTimeEq};
    const H: usize = 32;
    if modulus_len < 2 * H + 2 || block.len() > modulus_len {
        return Err(KeyStoreError::DecryptFailed);
    }
    let mut em = SecretBytes::new(vec![0u8; modulus_len]);
    em.expose_mut()[modulus_len - block.len()..].copy_from_slice(block);
    let em = em.expose_mut();
    let (y, rest) = em.split_at_mut(1);
    let (seed, db) = rest.split_at_mut(H);
    mgf1_sha256_xor(db, seed);
    mgf1_sha256_xor(seed, db);
    let label_hash = sha2::Sha256::digest(b"");
    let mut good = y[0].ct_eq(&0) & db[..H].ct_eq(label_hash.as_slice());
    // After the label hash: zeros, then 0x01, then the message.
    let mut found = subtle::Choice::from(0);
    let mut start = 0u32;
    for (i, byte) in db.iter().enumerate().skip(H) {
        let is_one = byte.ct_eq(&1);
        let is_zero = byte.ct_eq(&0);
        let first_one = !found & is_one;
        start = u32::conditional_select(&start, &((i + 1) as u32), first_one);
        good &= found | is_zero | is_one;
        found |= is_one;
    }
    good &= found;
    if !bool::from(good) {
        return Err(KeyStoreError::DecryptFailed);
    }
    Ok(SecretBytes::new(db[start as usize..].to_vec()))
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

    /// Round trips through the `rsa` crate's OAEP-SHA-256 encryption and its raw private-key
    /// operation; a damaged block, a wrong label hash and other paddings are refused.
    #[test]
    fn oaep_sha256_decoding_opens_what_rsa_oaep_wraps() {
        use rsa::traits::PublicKeyParts;
        let mut rng = rand::rngs::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let public = private.to_public_key();
        let k = public.size();
        let raw = |ciphertext: &[u8]| {
            use rsa::traits::PrivateKeyParts;
            rsa::BigUint::from_bytes_be(ciphertext)
                .modpow(private.d(), private.n())
                .to_bytes_be()
        };
        for message in [&[][..], &[0u8; 1], &[0x42; 32], &[1u8; 190]] {
            let sealed = public
                .encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), message)
                .unwrap();
            let opened = oaep_sha256_decode(&raw(&sealed), k).unwrap();
            assert_eq!(opened.expose(), message);
        }
        let sealed = public
            .encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), &[7u8; 32])
            .unwrap();
        let mut block = raw(&sealed);
        let last = block.len() - 1;
        block[last] ^= 1;
        assert!(oaep_sha256_decode(&block, k).is_err());
        let sha384 = public
            .encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha384>(), &[7u8; 32])
            .unwrap();
        assert!(oaep_sha256_decode(&raw(&sha384), k).is_err());
        let labelled = public
            .encrypt(
                &mut rng,
                rsa::Oaep::new_with_label::<sha2::Sha256, _>("label"),
                &[7u8; 32],
            )
            .unwrap();
        assert!(oaep_sha256_decode(&raw(&labelled), k).is_err());
        let pkcs1 = public
            .encrypt(&mut rng, rsa::Pkcs1v15Encrypt, &[7u8; 32])
            .unwrap();
        assert!(oaep_sha256_decode(&raw(&pkcs1), k).is_err());
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
