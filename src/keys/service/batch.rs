//! Encryption of many items in one call. Each item is checked and given its nonce as a single
//! Encrypt would be (the nonce reservation durable before anything is answered); then each
//! keystore seals all of its items at once: a device keystore in one hand-off to its blocking
//! threads, on one session, under one deadline, instead of one hand-off per item.

use super::crypto::{PreparedSeal, require_plaintext};
use super::*;
use crate::keystore::SealItem;

/// One item of [`KeyService::encrypt_many`]: what a single Encrypt is given.
pub struct EncryptItem<'a> {
    pub key: &'a str,
    pub plaintext: &'a [u8],
    pub context: &'a EncryptionContext,
}

/// An Encrypt's answer: the blob and the key's id.
type Sealed = Result<(Vec<u8>, Uuid), KeyError>;

/// Prepared items of one keystore, each with its position in the batch.
type KeystoreItems = (Arc<dyn KeyStore>, Vec<(usize, PreparedSeal)>);

impl KeyService {
    /// Encrypt of every item, each answered in its position exactly as its single call would
    /// be (blob and key id, or its own error).
    pub async fn encrypt_many(&self, items: &[EncryptItem<'_>]) -> Vec<Sealed> {
        self.seal_many(items, "Encrypt").await
    }

    /// GenerateDataKey of every item (key, size, context), each answered in its position as
    /// its single call would be: the data key, its blob and the key's id, or its own error.
    pub async fn generate_data_keys(
        &self,
        items: &[(&str, DataKeySize, &EncryptionContext)],
    ) -> Vec<Result<(SecretBytes, Vec<u8>, Uuid), KeyError>> {
        let data_keys: Vec<SecretBytes> = items
            .iter()
            .map(|(_, size, _)| random_bytes(size.len()))
            .collect();
        let sealing = items
            .iter()
            .zip(&data_keys)
            .map(|((key, _, context), data_key)| EncryptItem {
                key,
                plaintext: data_key.expose(),
                context,
            })
            .collect::<Vec<_>>();
        let sealed = self.seal_many(&sealing, "GenerateDataKey").await;
        drop(sealing);
        data_keys
            .into_iter()
            .zip(sealed)
            .map(|(data_key, sealed)| sealed.map(|(blob, id)| (data_key, blob, id)))
            .collect()
    }

    /// Seals every item under its key for `operation` (the name the key's checks give).
    async fn seal_many(&self, items: &[EncryptItem<'_>], operation: &'static str) -> Vec<Sealed> {
        let mut answers: Vec<Option<Sealed>> = items.iter().map(|_| None).collect();
        let mut by_keystore: Vec<KeystoreItems> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let prepared = async {
                require_plaintext(item.plaintext)?;
                let entry = self.resolve(item.key, false)?;
                self.prepare_seal(&entry, item.context, operation).await
            }
            .await;
            match prepared {
                Ok(seal) => {
                    match by_keystore
                        .iter_mut()
                        .find(|(keystore, _)| Arc::ptr_eq(keystore, &seal.keystore))
                    {
                        Some((_, seals)) => seals.push((index, seal)),
                        None => by_keystore.push((seal.keystore.clone(), vec![(index, seal)])),
                    }
                }
                Err(error) => answers[index] = Some(Err(error)),
            }
        }
        for (keystore, seals) in by_keystore {
            let sealed = self.seal_all(&keystore, &seals, items).await;
            for ((index, seal), sealed) in seals.into_iter().zip(sealed) {
                answers[index] = Some(sealed.map(|sealed| {
                    let key_id = seal.material.key_id;
                    let blob = CiphertextBlob::assemble(
                        key_id,
                        seal.material.version,
                        &seal.nonce,
                        &sealed,
                    );
                    (blob, key_id)
                }));
            }
        }
        answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| Err(KeyError::Internal("batch item not sealed".into())))
            })
            .collect()
    }

    /// Seals `seals` (indexes into `items`) on `keystore`: in place when it does not block,
    /// else in one call to [`KeyStore::encrypt_many`] on its blocking threads.
    async fn seal_all(
        &self,
        keystore: &Arc<dyn KeyStore>,
        seals: &[(usize, PreparedSeal)],
        items: &[EncryptItem<'_>],
    ) -> Vec<Result<Vec<u8>, KeyError>> {
        if !keystore.blocks() {
            return seals
                .iter()
                .map(|(index, seal)| {
                    in_place(&**keystore, "encrypt", |k| {
                        k.encrypt(
                            seal.material,
                            &seal.nonce,
                            &seal.aad,
                            items[*index].plaintext,
                        )
                    })
                })
                .collect();
        }
        let batch = seals
            .iter()
            .map(|(index, seal)| SealItem {
                material: seal.material,
                nonce: seal.nonce,
                aad: seal.aad.clone(),
                plaintext: SecretBytes::new(items[*index].plaintext.to_vec()),
            })
            .collect::<Vec<_>>();
        let name = keystore.name().to_owned();
        match self
            .on_keystore(keystore, "encrypt_batch", None, move |k| {
                k.encrypt_many(batch)
            })
            .await
        {
            Ok(sealed) => sealed
                .into_iter()
                .map(|one| one.map_err(|e| keystore_error(&name, e)))
                .collect(),
            Err(error) => seals.iter().map(|_| Err(every_item(&error))).collect(),
        }
    }
}

/// The error of a keystore call that failed as a whole, for each of its items.
fn every_item(error: &KeyError) -> KeyError {
    match error {
        KeyError::KeyStoreUnavailable(message) => KeyError::KeyStoreUnavailable(message.clone()),
        other => KeyError::Internal(other.to_string()),
    }
}
