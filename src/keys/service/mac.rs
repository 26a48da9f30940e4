//! HMAC operations: GenerateMac and VerifyMac, with keys of usage `GENERATE_VERIFY_MAC`.

use super::*;

/// Largest message GenerateMac and VerifyMac accept (AWS KMS: 4096 bytes).
pub const MAX_MAC_MESSAGE: usize = 4096;

/// A computed MAC and the key that made it.
#[derive(Debug)]
pub struct MacAnswer {
    pub key_id: Uuid,
    pub mac: Vec<u8>,
}

impl KeyService {
    /// Refuses a message outside 1..=[`MAX_MAC_MESSAGE`] bytes, and a MAC algorithm the key
    /// does not take; returns the version to use (HMAC keys have one).
    fn mac_key(
        &self,
        record: &KeyRecord,
        algorithm: MacAlgorithm,
        operation: &str,
    ) -> Result<MaterialRef, KeyError> {
        self.require_usable(record, operation)?;
        record.require_usage(KeyUsage::GenerateVerifyMac, operation)?;
        if record.spec.mac_algorithm() != Some(algorithm) {
            return Err(KeyError::InvalidKeyUsage(format!(
                "MacAlgorithm {} is not compatible with key {} of KeySpec {}",
                algorithm.as_str(),
                record.id,
                record.spec.as_str()
            )));
        }
        Ok(MaterialRef {
            key_id: record.id,
            version: record.current_version(),
        })
    }

    /// GenerateMac: the HMAC of `message` under the key.
    pub async fn generate_mac(
        &self,
        key: &str,
        message: &[u8],
        algorithm: MacAlgorithm,
    ) -> Result<MacAnswer, KeyError> {
        validate_mac_message(message)?;
        let entry = self.resolve(key, false)?;
        let record = entry.record();
        let material = self.mac_key(&record, algorithm, "GenerateMac")?;
        self.note_use(&entry, "GenerateMac");
        let keystore = self.keystore(&record.keystore)?;
        let message = SecretBytes::new(message.to_vec());
        let mac = self
            .on_keystore(&keystore, "mac", None, move |k| {
                k.mac(material, algorithm, message.expose())
            })
            .await?;
        Ok(MacAnswer {
            key_id: record.id,
            mac,
        })
    }

    /// VerifyMac: the key's id when `mac` is the HMAC of `message`; otherwise
    /// [`KeyError::InvalidMac`] (AWS KMS never answers "not valid").
    pub async fn verify_mac(
        &self,
        key: &str,
        message: &[u8],
        algorithm: MacAlgorithm,
        mac: &[u8],
    ) -> Result<Uuid, KeyError> {
        validate_mac_message(message)?;
        if mac.is_empty() || mac.len() > 6144 {
            return Err(KeyError::Validation(format!(
                "Mac must be 1 to 6144 bytes; got {}",
                mac.len()
            )));
        }
        let entry = self.resolve(key, false)?;
        let record = entry.record();
        let material = self.mac_key(&record, algorithm, "VerifyMac")?;
        self.note_use(&entry, "VerifyMac");
        let keystore = self.keystore(&record.keystore)?;
        let message = SecretBytes::new(message.to_vec());
        let mac = mac.to_vec();
        let valid = self
            .on_keystore(&keystore, "verify_mac", None, move |k| {
                k.verify_mac(material, algorithm, message.expose(), &mac)
            })
            .await?;
        if valid {
            Ok(record.id)
        } else {
            Err(KeyError::InvalidMac)
        }
    }
}

fn validate_mac_message(message: &[u8]) -> Result<(), KeyError> {
    if message.is_empty() || message.len() > MAX_MAC_MESSAGE {
        return Err(KeyError::Validation(format!(
            "Message must be 1 to {MAX_MAC_MESSAGE} bytes; got {}",
            message.len()
        )));
    }
    Ok(())
}

/// The MAC algorithm a request names, refused as AWS KMS refuses an unknown enum value.
pub fn mac_algorithm(name: &str) -> Result<MacAlgorithm, KeyError> {
    MacAlgorithm::parse(name).ok_or_else(|| {
        KeyError::Validation(format!(
            "MacAlgorithm '{}' is not one of HMAC_SHA_224, HMAC_SHA_256, HMAC_SHA_384, \
             HMAC_SHA_512",
            printable(name)
        ))
    })
}
