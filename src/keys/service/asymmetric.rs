//! Asymmetric encryption and key agreement: Encrypt/Decrypt with RSA keys of usage
//! `ENCRYPT_DECRYPT` (RSAES-OAEP), DeriveSharedSecret with ECC keys of usage `KEY_AGREEMENT`
//! (ECDH), and data key pairs (GenerateDataKeyPair), whose private key is encrypted under a
//! symmetric key exactly as GenerateDataKey's data key is.

use super::*;
use crate::keystore::{EncryptionAlgorithm, generate_key_pair, is_public_key_of, rsa_oaep_encrypt};

/// Largest RSA ciphertext Decrypt accepts (AWS KMS: 6144 bytes).
const MAX_CIPHERTEXT: usize = 6144;
/// Largest peer public key DeriveSharedSecret accepts (AWS KMS: 8192 bytes).
const MAX_PEER_KEY: usize = 8192;

/// The encryption algorithm a request names (empty: `SYMMETRIC_DEFAULT`, AWS KMS's default):
/// an unknown name is a `ValidationException`, a name AWS KMS knows but Keyhaven has no key
/// for (`SM2PKE`) is left for the key to refuse.
pub fn encryption_algorithm(name: &str) -> Result<Result<EncryptionAlgorithm, String>, KeyError> {
    if name.is_empty() {
        return Ok(Ok(EncryptionAlgorithm::SymmetricDefault));
    }
    if let Some(algorithm) = EncryptionAlgorithm::parse(name) {
        return Ok(Ok(algorithm));
    }
    if EncryptionAlgorithm::AWS_NAMES.contains(&name) {
        return Ok(Err(name.to_owned()));
    }
    Err(KeyError::Validation(format!(
        "EncryptionAlgorithm '{}' is not one of {}",
        printable(name),
        EncryptionAlgorithm::AWS_NAMES.join(", ")
    )))
}

/// The key agreement algorithm a request names: AWS KMS has one, `ECDH`.
pub fn key_agreement_algorithm(name: &str) -> Result<&'static str, KeyError> {
    match name {
        "ECDH" => Ok("ECDH"),
        other => Err(KeyError::Validation(format!(
            "KeyAgreementAlgorithm '{}' is not one of ECDH",
            printable(other)
        ))),
    }
}

/// The spec of a data key pair, from GenerateDataKeyPair's `KeyPairSpec`.
pub fn key_pair_spec(name: &str) -> Result<KeySpec, KeyError> {
    match KeySpec::parse(name) {
        Some(spec) if spec.is_asymmetric() => Ok(spec),
        _ => Err(KeyError::Validation(format!(
            "KeyPairSpec '{}' is not one of {}",
            printable(name),
            KeySpec::ALL
                .iter()
                .filter(|s| s.is_asymmetric())
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The encryption algorithms of a key: AES-256-GCM for symmetric keys, RSAES-OAEP for RSA
/// keys of usage `ENCRYPT_DECRYPT`, none for others.
pub fn encryption_algorithms(spec: KeySpec, usage: KeyUsage) -> &'static [EncryptionAlgorithm] {
    match (spec, usage) {
        (KeySpec::SymmetricDefault, _) => &[EncryptionAlgorithm::SymmetricDefault],
        (spec, KeyUsage::EncryptDecrypt) if spec.is_rsa() => &[
            EncryptionAlgorithm::RsaesOaepSha1,
            EncryptionAlgorithm::RsaesOaepSha256,
        ],
        _ => &[],
    }
}

/// A data key pair and the key its private key is encrypted under.
pub struct DataKeyPair {
    pub key_id: Uuid,
    /// PKCS#8 DER.
    pub private_key: SecretBytes,
    /// The private key encrypted under the symmetric key (a ciphertext blob, as Decrypt takes).
    pub private_key_blob: Vec<u8>,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
}

impl std::fmt::Debug for DataKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeyPair")
            .field("key_id", &self.key_id)
            .field("private_key", &"<redacted>")
            .field("private_key_blob_len", &self.private_key_blob.len())
            .finish()
    }
}

impl KeyService {
    /// Refuses unless the key is an RSA key of usage `ENCRYPT_DECRYPT` that takes `algorithm`.
    fn rsa_encryption_key(
        &self,
        record: &KeyRecord,
        algorithm: &Result<EncryptionAlgorithm, String>,
        operation: &str,
    ) -> Result<EncryptionAlgorithm, KeyError> {
        self.require_usable(record, operation)?;
        record.require_usage(KeyUsage::EncryptDecrypt, operation)?;
        match algorithm {
            Ok(a) if encryption_algorithms(record.spec, record.usage).contains(a) => Ok(*a),
            other => Err(KeyError::InvalidKeyUsage(format!(
                "EncryptionAlgorithm {} is not compatible with key {} of KeySpec {}",
                printable(match other {
                    Ok(a) => a.as_str(),
                    Err(name) => name,
                }),
                record.id,
                record.spec.as_str()
            ))),
        }
    }

    fn current_material(record: &KeyRecord) -> MaterialRef {
        MaterialRef {
            key_id: record.id,
            version: record.current_version(),
        }
    }

    /// Encrypt with an RSA key: RSAES-OAEP with its public key. AWS KMS's ciphertext is the
    /// bare RSA ciphertext (no blob header), as any holder of the public key would make it.
    pub async fn encrypt_asymmetric(
        &self,
        key: &str,
        plaintext: &[u8],
        algorithm: Result<EncryptionAlgorithm, String>,
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, Uuid, EncryptionAlgorithm), KeyError> {
        if !context.pairs().is_empty() {
            return Err(KeyError::Validation(
                "EncryptionContext is not supported with asymmetric encryption".into(),
            ));
        }
        let entry = self.resolve(key, false)?;
        let record = entry.record();
        let algorithm = self.rsa_encryption_key(&record, &algorithm, "Encrypt")?;
        let bits = record.spec.rsa_bits().unwrap_or(0);
        let most = algorithm.max_plaintext(bits);
        if plaintext.is_empty() || plaintext.len() > most {
            return Err(KeyError::Validation(format!(
                "Plaintext for {} with a {} key must be 1 to {most} bytes; got {}",
                algorithm.as_str(),
                record.spec.as_str(),
                plaintext.len()
            )));
        }
        self.note_use(&entry, "Encrypt");
        let keystore = self.keystore(&record.keystore)?;
        let (material, spec) = (Self::current_material(&record), record.spec);
        let public = self
            .on_keystore_heavy(&keystore, "public_key", None, true, move |k| {
                k.public_key(material, spec)
            })
            .await?;
        let ciphertext = rsa_oaep_encrypt(&public, algorithm, plaintext)
            .map_err(|e| KeyError::Internal(format!("RSA encryption: {e}")))?;
        Ok((ciphertext, record.id, algorithm))
    }

    /// Decrypt with an RSA key: the key must be named (the ciphertext does not say which it
    /// is). Every ciphertext that does not open is the same [`KeyError::InvalidCiphertext`].
    pub async fn decrypt_asymmetric(
        &self,
        key: &str,
        ciphertext: &[u8],
        algorithm: Result<EncryptionAlgorithm, String>,
        context: &EncryptionContext,
    ) -> Result<(Decrypted, EncryptionAlgorithm), KeyError> {
        if !context.pairs().is_empty() {
            return Err(KeyError::Validation(
                "EncryptionContext is not supported with asymmetric encryption".into(),
            ));
        }
        if ciphertext.is_empty() || ciphertext.len() > MAX_CIPHERTEXT {
            return Err(KeyError::Validation(format!(
                "CiphertextBlob must be 1 to {MAX_CIPHERTEXT} bytes; got {}",
                ciphertext.len()
            )));
        }
        let entry = self.resolve(key, false)?;
        let record = entry.record();
        let algorithm = self.rsa_encryption_key(&record, &algorithm, "Decrypt")?;
        self.note_use(&entry, "Decrypt");
        let keystore = self.keystore(&record.keystore)?;
        let (material, spec) = (Self::current_material(&record), record.spec);
        let ciphertext = ciphertext.to_vec();
        let plaintext = self
            .on_keystore_heavy(&keystore, "decrypt_asymmetric", None, true, move |k| {
                k.decrypt_asymmetric(material, spec, algorithm, &ciphertext)
            })
            .await?;
        Ok((
            Decrypted {
                key_id: record.id,
                plaintext,
            },
            algorithm,
        ))
    }

    /// DeriveSharedSecret: ECDH of the key's private key with the peer's public key (DER
    /// SubjectPublicKeyInfo on the key's curve); returns the raw shared secret, as AWS KMS.
    pub async fn derive_shared_secret(
        &self,
        key: &str,
        peer: &[u8],
    ) -> Result<(SecretBytes, Uuid, String), KeyError> {
        if peer.is_empty() || peer.len() > MAX_PEER_KEY {
            return Err(KeyError::Validation(format!(
                "PublicKey must be 1 to {MAX_PEER_KEY} bytes; got {}",
                peer.len()
            )));
        }
        let entry = self.resolve(key, false)?;
        let record = entry.record();
        self.require_usable(&record, "DeriveSharedSecret")?;
        record.require_usage(KeyUsage::KeyAgreement, "DeriveSharedSecret")?;
        if !is_public_key_of(record.spec, peer) {
            return Err(KeyError::Validation(format!(
                "PublicKey must be a DER SubjectPublicKeyInfo of a point on the curve of key {} \
                 ({})",
                record.id,
                record.spec.as_str()
            )));
        }
        self.note_use(&entry, "DeriveSharedSecret");
        let keystore = self.keystore(&record.keystore)?;
        let (material, spec) = (Self::current_material(&record), record.spec);
        let peer = peer.to_vec();
        let secret = self
            .on_keystore_heavy(&keystore, "derive_shared_secret", None, false, move |k| {
                k.derive_shared_secret(material, spec, &peer)
            })
            .await?;
        Ok((secret, record.id, record.origin.clone()))
    }

    /// GenerateDataKeyPair (and its WithoutPlaintext form, `operation`): a fresh key pair of
    /// `spec`, its private key encrypted under the symmetric key `key` as GenerateDataKey's
    /// data key is (so Decrypt opens it).
    pub async fn generate_data_key_pair(
        &self,
        key: &str,
        spec: KeySpec,
        context: &EncryptionContext,
        operation: &'static str,
    ) -> Result<DataKeyPair, KeyError> {
        let entry = self.resolve(key, false)?;
        {
            let record = entry.record();
            self.require_usable(&record, operation)?;
            record.require_usage(KeyUsage::EncryptDecrypt, operation)?;
            require_symmetric(&record, operation)?;
        }
        // RSA generation takes up to seconds: never on the threads serving requests.
        let (private_key, public_key) =
            tokio::task::spawn_blocking(move || generate_key_pair(spec))
                .await
                .map_err(|e| KeyError::Internal(format!("key pair generation: {e}")))?
                .map_err(|e| KeyError::Internal(format!("key pair generation: {e}")))?;
        let private_key_blob = self
            .encrypt_with(&entry, private_key.expose(), context, operation)
            .await?;
        Ok(DataKeyPair {
            key_id: entry.record().id,
            private_key,
            private_key_blob,
            public_key,
        })
    }
}

/// Refuses a symmetric operation (AES-256-GCM blobs, data keys) on an asymmetric key.
pub(super) fn require_symmetric(record: &KeyRecord, operation: &str) -> Result<(), KeyError> {
    if record.spec == KeySpec::SymmetricDefault {
        return Ok(());
    }
    Err(KeyError::InvalidKeyUsage(format!(
        "{operation} with EncryptionAlgorithm SYMMETRIC_DEFAULT is not compatible with key {} \
         of KeySpec {}",
        record.id,
        record.spec.as_str()
    )))
}
