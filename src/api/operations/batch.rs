//! Batches: many Encrypt, Decrypt or GenerateDataKey items in one call, so that the cost of
//! the transport, the signature and the audit record is paid once per call rather than once
//! per item. Each item runs through the single operation of its kind (its own authorisation
//! with its own key and encryption context, its own checks), with an audit slot of its own;
//! what the slot gathered and the item's outcome become one entry of the call's record. An
//! item's refusal is its answer, in its position: it never fails the batch. An item asking what
//! an earlier allowed item of the call asked is allowed as that one was (see [`Judgements`]).

use super::kms::{Judgements, KmsOperations, Outcome, Sealing};
use crate::api::authorize::CallContext;
use crate::api::gateway::AuditSlot;
use crate::api::status::ApiError;
use crate::keys::{EncryptItem, EncryptionAlgorithm, KeyError};
use crate::proto::v1;
use zeroize::{Zeroize, Zeroizing};

/// Most items one batch call may carry.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// Whether `operation` is a batch call (its requests may be larger).
pub fn is_batch(operation: &str) -> bool {
    matches!(
        operation,
        "kms:EncryptBatch" | "kms:DecryptBatch" | "kms:GenerateDataKeyBatch"
    )
}

fn item_error(error: ApiError) -> v1::BatchItemError {
    v1::BatchItemError {
        code: format!("{:?}", error.code),
        reason: error.reason.to_owned(),
        message: error.message,
    }
}

impl KmsOperations {
    /// DecryptBatch: each item decrypted as its single Decrypt would be, in order, with the
    /// call's judgements.
    pub async fn decrypt_batch(
        &self,
        call: &CallContext,
        request: v1::DecryptBatchRequest,
    ) -> Outcome<v1::DecryptBatchResponse> {
        require_batch_size(request.items.len())?;
        let mut judgements = Judgements::default();
        let mut results = Vec::with_capacity(request.items.len());
        for item in request.items {
            let slot = AuditSlot::default();
            let answer = self
                .judged_decrypt(&item_call(call, &slot), item, Some(&mut judgements))
                .await;
            results.push(BatchResult::of(note_item(call, &slot, answer)));
        }
        Ok(v1::DecryptBatchResponse { results })
    }

    /// EncryptBatch: every item authorised and given its nonce first, as its single Encrypt
    /// would be; then the items' keystores seal them together (a device keystore in one
    /// hand-off, on one session) through [`crate::keys::KeyService::encrypt_many`]. Items of
    /// other algorithms (RSA) run as their single call.
    pub async fn encrypt_batch(
        &self,
        call: &CallContext,
        request: v1::EncryptBatchRequest,
    ) -> Outcome<v1::EncryptBatchResponse> {
        require_batch_size(request.items.len())?;
        let mut slots = Vec::with_capacity(request.items.len());
        let mut answers: Vec<Option<Outcome<v1::EncryptResponse>>> =
            Vec::with_capacity(request.items.len());
        let mut sealing = Vec::new();
        let mut judgements = Judgements::default();
        for (index, mut r) in request.items.into_iter().enumerate() {
            let slot = AuditSlot::default();
            let item_call = item_call(call, &slot);
            let answer = match self
                .plan_encrypt(&item_call, &mut r, Some(&mut judgements))
                .await
            {
                Ok(Sealing::Symmetric { key, context }) => {
                    let plaintext = Zeroizing::new(std::mem::take(&mut r.plaintext));
                    sealing.push((index, key, context, plaintext));
                    None
                }
                Ok(Sealing::Other { context, algorithm }) => Some(
                    self.encrypt_other(&item_call, &r, context, algorithm)
                        .await
                        .map(|(blob, id, algorithm)| self.encrypted(blob, id, algorithm)),
                ),
                Err(error) => Some(Err(error)),
            };
            r.plaintext.zeroize();
            answers.push(answer);
            slots.push(slot);
        }
        let items = sealing
            .iter()
            .map(|(_, key, context, plaintext)| EncryptItem {
                key,
                plaintext,
                context,
            })
            .collect::<Vec<_>>();
        let sealed = self.keys.encrypt_many(&items).await;
        let mut arns = Arns::default();
        for ((index, ..), sealed) in sealing.iter().zip(sealed) {
            answers[*index] = Some(
                sealed
                    .map(|(blob, id)| v1::EncryptResponse {
                        ciphertext_blob: blob,
                        key_id: arns.of(self, id),
                        encryption_algorithm: EncryptionAlgorithm::SymmetricDefault.as_str().into(),
                    })
                    .map_err(ApiError::from),
            );
        }
        Ok(v1::EncryptBatchResponse {
            results: noted(call, answers, slots),
        })
    }
}

impl KmsOperations {
    /// GenerateDataKeyBatch: every item authorised as its single GenerateDataKey would be,
    /// then all data keys sealed together through
    /// [`crate::keys::KeyService::generate_data_keys`] (a device keystore in one hand-off).
    pub async fn generate_data_key_batch(
        &self,
        call: &CallContext,
        request: v1::GenerateDataKeyBatchRequest,
    ) -> Outcome<v1::GenerateDataKeyBatchResponse> {
        require_batch_size(request.items.len())?;
        let mut slots = Vec::with_capacity(request.items.len());
        let mut answers: Vec<Option<Outcome<v1::GenerateDataKeyResponse>>> =
            Vec::with_capacity(request.items.len());
        let mut sealing = Vec::new();
        let mut judgements = Judgements::default();
        for (index, r) in request.items.into_iter().enumerate() {
            let slot = AuditSlot::default();
            let item_call = item_call(call, &slot);
            match self
                .plan_generate_data_key(&item_call, r, Some(&mut judgements))
                .await
            {
                Ok((key, size, context)) => {
                    sealing.push((index, key, size, context));
                    answers.push(None);
                }
                Err(error) => answers.push(Some(Err(error))),
            }
            slots.push(slot);
        }
        let items = sealing
            .iter()
            .map(|(_, key, size, context)| (key.as_str(), *size, context))
            .collect::<Vec<_>>();
        let sealed = self.keys.generate_data_keys(&items).await;
        let mut arns = Arns::default();
        for ((index, ..), sealed) in sealing.iter().zip(sealed) {
            answers[*index] = Some(
                sealed
                    .map(|(plaintext, blob, id)| v1::GenerateDataKeyResponse {
                        ciphertext_blob: blob,
                        plaintext: plaintext.into_bytes(),
                        key_id: arns.of(self, id),
                    })
                    .map_err(ApiError::from),
            );
        }
        Ok(v1::GenerateDataKeyBatchResponse {
            results: noted(call, answers, slots),
        })
    }
}

/// A batch's result for one item: its answer or its error.
trait BatchResult<Answer> {
    fn of(answer: Result<Answer, v1::BatchItemError>) -> Self;
}

macro_rules! batch_results {
    ($($result:ident of $answer:ident,)*) => {
        $(
            impl BatchResult<v1::$answer> for v1::$result {
                fn of(answer: Result<v1::$answer, v1::BatchItemError>) -> Self {
                    match answer {
                        Ok(result) => Self {
                            result: Some(result),
                            error: None,
                        },
                        Err(error) => Self {
                            result: None,
                            error: Some(error),
                        },
                    }
                }
            }
        )*
    };
}

batch_results! {
    EncryptBatchResult of EncryptResponse,
    DecryptBatchResult of DecryptResponse,
    GenerateDataKeyBatchResult of GenerateDataKeyResponse,
}

/// Each item's answer (one not answered is an internal error) noted in the call's record
/// with what its slot gathered, as the batch's results in order.
fn noted<Answer, ItemResult: BatchResult<Answer>>(
    call: &CallContext,
    answers: Vec<Option<Outcome<Answer>>>,
    slots: Vec<AuditSlot>,
) -> Vec<ItemResult> {
    answers
        .into_iter()
        .zip(slots)
        .map(|(answer, slot)| {
            let answer = answer.unwrap_or_else(|| {
                Err(KeyError::Internal("batch item not answered".into()).into())
            });
            ItemResult::of(note_item(call, &slot, answer))
        })
        .collect()
}

/// The ARN of the key the item before was answered with, formatted once for a run of items
/// under one key.
#[derive(Default)]
struct Arns(Option<(uuid::Uuid, String)>);

impl Arns {
    fn of(&mut self, operations: &KmsOperations, id: uuid::Uuid) -> String {
        match &self.0 {
            Some((last, arn)) if *last == id => arn.clone(),
            _ => {
                let arn = operations.arn(id);
                self.0 = Some((id, arn.clone()));
                arn
            }
        }
    }
}

/// Refuses an empty or oversized batch, before any item runs.
fn require_batch_size(items: usize) -> Result<(), ApiError> {
    if items == 0 || items > MAX_BATCH_ITEMS {
        return Err(KeyError::Validation(format!(
            "a batch carries 1 to {MAX_BATCH_ITEMS} items; got {items}"
        ))
        .into());
    }
    Ok(())
}

/// An item's own call: the batch's caller, source and transport, with its own audit slot.
fn item_call(call: &CallContext, slot: &AuditSlot) -> CallContext {
    CallContext {
        caller: call.caller.clone(),
        source_ip: call.source_ip,
        secure_transport: call.secure_transport,
        audit: slot.clone(),
        // An approval covers one call, not the items of a batch.
        approval_id: None,
        asked: call.asked,
    }
}

/// Notes an item's slot and outcome in the call's record; its answer or error.
fn note_item<Answer>(
    call: &CallContext,
    slot: &AuditSlot,
    answer: Outcome<Answer>,
) -> Result<Answer, v1::BatchItemError> {
    let outcome = match &answer {
        Ok(_) => crate::audit::Outcome {
            code: "Ok".into(),
            reason: None,
        },
        Err(error) => error.outcome(),
    };
    call.audit.add_item(slot, outcome);
    answer.map_err(item_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_batch_calls_are_batches() {
        for batch in [
            "kms:EncryptBatch",
            "kms:DecryptBatch",
            "kms:GenerateDataKeyBatch",
        ] {
            assert!(is_batch(batch), "{batch}");
        }
        for single in ["kms:Encrypt", "kms:Decrypt", "unknown", "kms:EncryptBatch2"] {
            assert!(!is_batch(single), "{single}");
        }
    }

    #[test]
    fn an_item_error_keeps_code_reason_and_message() {
        let error = item_error(ApiError::from(KeyError::NotFound(
            "key 'x' not found".into(),
        )));
        assert_eq!(error.code, "NotFound");
        assert_eq!(error.reason, "NotFoundException");
        assert!(
            error.message.contains("key 'x' not found"),
            "{}",
            error.message
        );
    }
}
