//! Asymmetric signing: Sign, Verify and GetPublicKey, with keys of usage `SIGN_VERIFY`.

use super::*;
use crate::keystore::{SigningAlgorithm, verify_signature};

/// Largest `RAW` message Sign and Verify accept (AWS KMS: 4096 bytes).
pub const MAX_SIGN_MESSAGE: usize = 4096;
/// Largest signature Verify accepts (AWS KMS: 6144 bytes).
const MAX_SIGNATURE: usize = 6144;

/// How a Sign or Verify message is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// The message itself, hashed with the algorithm's digest inside the service.
    Raw,
    /// The digest, computed by the caller.
    Digest,
}

impl MessageType {
    /// From the request's `MessageType` (empty: `RAW`, AWS KMS's default).
    pub fn parse(name: &str) -> Result<Self, KeyError> {
        match name {
            "" | "RAW" => Ok(MessageType::Raw),
            "DIGEST" => Ok(MessageType::Digest),
            other => Err(KeyError::Validation(format!(
                "MessageType '{}' is not one of RAW, DIGEST",
                printable(other)
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Raw => "RAW",
            MessageType::Digest => "DIGEST",
        }
    }
}

/// The signing algorithm a request names: an unknown name is a `ValidationException`, a
/// name AWS KMS knows but no key here signs with is left for the key to refuse.
pub fn signing_algorithm(name: &str) -> Result<Result<SigningAlgorithm, String>, KeyError> {
    if let Some(algorithm) = SigningAlgorithm::parse(name) {
        return Ok(Ok(algorithm));
    }
    if SigningAlgorithm::AWS_NAMES.contains(&name) {
        return Ok(Err(name.to_owned()));
    }
    Err(KeyError::Validation(format!(
        "SigningAlgorithm '{}' is not one of {}",
        printable(name),
        SigningAlgorithm::AWS_NAMES.join(", ")
    )))
}

/// A signature and the key that made it.
#[derive(Debug)]
pub struct Signed {
    pub key_id: Uuid,
    pub signature: Vec<u8>,
}

/// A public key with what its key is for.
#[derive(Debug)]
pub struct PublicKey {
    pub key_id: Uuid,
    /// DER SubjectPublicKeyInfo.
    pub der: Vec<u8>,
    pub spec: KeySpec,
    pub usage: KeyUsage,
}

impl KeyService {
    /// Refuses unless the key signs with `algorithm`; returns its version and the digest to
    /// sign (`RAW` messages are hashed here).
    fn signing_key(
        &self,
        record: &KeyRecord,
        algorithm: Result<SigningAlgorithm, String>,
        message_type: MessageType,
        message: &[u8],
        operation: &str,
    ) -> Result<(MaterialRef, SigningAlgorithm, Vec<u8>), KeyError> {
        self.require_usable(record, operation)?;
        record.require_usage(KeyUsage::SignVerify, operation)?;
        let algorithm = match algorithm {
            Ok(a) if record.spec.signing_algorithms().contains(&a) => a,
            other => {
                let name = match &other {
                    Ok(a) => a.as_str().to_owned(),
                    Err(name) => name.clone(),
                };
                return Err(KeyError::InvalidKeyUsage(format!(
                    "SigningAlgorithm {} is not compatible with key {} of KeySpec {}",
                    printable(&name),
                    record.id,
                    record.spec.as_str()
                )));
            }
        };
        let digest = match message_type {
            MessageType::Raw => algorithm.digest(message),
            MessageType::Digest if message.len() == algorithm.digest_len() => message.to_vec(),
            MessageType::Digest => {
                return Err(KeyError::Validation(format!(
                    "a DIGEST message for {} must be {} bytes; got {}",
                    algorithm.as_str(),
                    algorithm.digest_len(),
                    message.len()
                )));
            }
        };
        Ok((
            MaterialRef {
                key_id: record.id,
                version: record.current_version(),
            },
            algorithm,
            digest,
        ))
    }

    /// Sign: a DER signature of the message (or digest) with the key's private key.
    pub async fn sign(
        &self,
        key: &str,
        message: &[u8],
        message_type: MessageType,
        algorithm: Result<SigningAlgorithm, String>,
    ) -> Result<Signed, KeyError> {
        validate_sign_message(message)?;
        let entry = self.resolve(key, false)?;
        let record = entry.record();
        let (material, algorithm, digest) =
            self.signing_key(&record, algorithm, message_type, message, "Sign")?;
        self.note_use(&entry, "Sign");
        let keystore = self.keystore(&record.keystore)?;
        let spec = record.spec;
        let signature = self
            .on_keystore_heavy(
                &keystore,
                "sign",
                None,
                spec.rsa_bits().is_some(),
                move |k| k.sign(material, spec, algorithm, &digest),
            )
            .await?;
        Ok(Signed {
            key_id: record.id,
            signature,
        })
    }

    /// Verify: the key's id when the signature is good; otherwise
    /// [`KeyError::InvalidSignature`] (AWS KMS never answers "not valid").
    pub async fn verify(
        &self,
        key: &str,
        message: &[u8],
        message_type: MessageType,
        algorithm: Result<SigningAlgorithm, String>,
        signature: &[u8],
    ) -> Result<Uuid, KeyError> {
        validate_sign_message(message)?;
        if signature.is_empty() || signature.len() > MAX_SIGNATURE {
            return Err(KeyError::Validation(format!(
                "Signature must be 1 to {MAX_SIGNATURE} bytes; got {}",
                signature.len()
            )));
        }
        let entry = self.resolve(key, false)?;
        let record = entry.record();
        let (material, algorithm, digest) =
            self.signing_key(&record, algorithm, message_type, message, "Verify")?;
        self.note_use(&entry, "Verify");
        let keystore = self.keystore(&record.keystore)?;
        let spec = record.spec;
        let public = self
            .on_keystore_heavy(
                &keystore,
                "public_key",
                None,
                spec.rsa_bits().is_some(),
                move |k| k.public_key(material, spec),
            )
            .await?;
        if verify_signature(spec, algorithm, &public, &digest, signature) {
            Ok(record.id)
        } else {
            Err(KeyError::InvalidSignature)
        }
    }

    /// GetPublicKey: the DER SubjectPublicKeyInfo of an asymmetric key.
    pub async fn get_public_key(&self, key: &str) -> Result<PublicKey, KeyError> {
        let entry = self.resolve(key, false)?;
        let record = entry.record();
        self.require_usable(&record, "GetPublicKey")?;
        if !record.spec.is_asymmetric() {
            return Err(KeyError::UnsupportedOperation(format!(
                "GetPublicKey is not supported for key {}: {} keys have no public key",
                record.id,
                record.spec.as_str()
            )));
        }
        let keystore = self.keystore(&record.keystore)?;
        let material = MaterialRef {
            key_id: record.id,
            version: record.current_version(),
        };
        let spec = record.spec;
        let der = self
            .on_keystore_heavy(
                &keystore,
                "public_key",
                None,
                spec.rsa_bits().is_some(),
                move |k| k.public_key(material, spec),
            )
            .await?;
        Ok(PublicKey {
            key_id: record.id,
            der,
            spec,
            usage: record.usage,
        })
    }
}

fn validate_sign_message(message: &[u8]) -> Result<(), KeyError> {
    if message.is_empty() || message.len() > MAX_SIGN_MESSAGE {
        return Err(KeyError::Validation(format!(
            "Message must be 1 to {MAX_SIGN_MESSAGE} bytes; got {}",
            message.len()
        )));
    }
    Ok(())
}
