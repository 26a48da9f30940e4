//! The key service's operations, one per KMS action, transport-neutral: each takes the
//! authenticated call's [`CallContext`] and the request as its typed message, authorises
//! (resolving a key once, then acting on its id, so that an alias moved in between cannot
//! redirect the call), calls the [`KeyService`] and returns the typed answer or an
//! [`ApiError`]. The gRPC handlers and the AWS door's targets are conversions onto these.
//!
//! The request and response types are the wire contract's messages (`proto/`): plain data,
//! shared by both doors, with the members AWS KMS names the same way.
//!
//! By concern: [`lifecycle`] (keys, aliases, tags, rotation, policies), [`crypto`] (the
//! cryptographic operations) and [`import`] (imported material); the authorisation helpers
//! and conversions they share are here.

use crate::api::authorize::{Authorizer, CallContext};
use crate::api::gateway::AuditSlot;
use crate::api::status::ApiError;
use crate::audit::AuditNote;
use crate::crypto::{CiphertextBlob, EncryptionContext};
use crate::keys::{
    DataKeySize, EncryptionAlgorithm, KeyError, KeyRecord, KeyService, KeySpec, KeyState, KeyUsage,
    MaterialOrigin,
};
use crate::policy::{GrantAsk, NamedPolicy, Policy, PolicyKind, RequestContext};
use crate::proto::v1;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use uuid::Uuid;
use zeroize::Zeroize;

mod crypto;
mod import;
mod lifecycle;

const ALGORITHM: &str = "SYMMETRIC_DEFAULT";

/// The KMS operations over the key service, for every door.
#[derive(Clone)]
pub struct KmsOperations {
    pub(super) keys: Arc<KeyService>,
    pub(super) authorizer: Arc<Authorizer>,
    /// Two-person approval of chosen actions; none: no action needs approval.
    pub(super) approvals: Option<Arc<crate::approval::Approvals>>,
}

impl KmsOperations {
    pub fn new(keys: Arc<KeyService>, authorizer: Arc<Authorizer>) -> Self {
        Self {
            keys,
            authorizer,
            approvals: None,
        }
    }

    /// The operations with two-person approval of the actions `approvals` names.
    pub fn with_approvals(mut self, approvals: Arc<crate::approval::Approvals>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    pub fn keys(&self) -> &Arc<KeyService> {
        &self.keys
    }

    pub(super) fn context(&self, call: &CallContext) -> RequestContext {
        self.authorizer.base_context(call, self.keys.now())
    }

    /// Authorises `action` on a key; returns its id for the operation to act on (so that an
    /// alias moved in between cannot redirect it).
    async fn key(&self, call: &CallContext, action: &str, key: &str) -> Result<String, ApiError> {
        let context = self.context(call);
        Ok(self
            .authorizer
            .key(call, action, key, false, &context, &GrantAsk::Plain)
            .await?
            .id
            .hyphenated()
            .to_string())
    }

    /// Authorises an action that names no key.
    fn anywhere(&self, call: &CallContext, action: &str) -> Result<(), ApiError> {
        let context = self.context(call);
        Ok(self.authorizer.require(call, action, "*", None, &context)?)
    }

    /// Authorises a cryptographic action on a key with the request's encryption context.
    async fn crypto_key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        encryption_context: &EncryptionContext,
    ) -> Result<String, ApiError> {
        self.judged_crypto_key(call, action, key, encryption_context, None)
            .await
    }

    /// [`Self::crypto_key`] on what this daemon has heard of now.
    fn known_crypto_key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        encryption_context: &EncryptionContext,
    ) -> Result<String, ApiError> {
        let mut context = self.context(call);
        Authorizer::add_encryption_context(&mut context, encryption_context.pairs());
        context.set("kms:EncryptionAlgorithm", ALGORITHM);
        call.audit.add_context(encryption_context.pairs());
        let ask = GrantAsk::Context(encryption_context.pairs());
        Ok(self
            .authorizer
            .known_key(call, action, key, false, &context, &ask)?
            .id
            .hyphenated()
            .to_string())
    }

    /// [`Self::crypto_key`] for an item of a batch: an item asking what an earlier allowed item
    /// of the call asked is allowed as that one was, without judging it again.
    async fn judged_crypto_key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        encryption_context: &EncryptionContext,
        judgements: Option<&mut Judgements>,
    ) -> Result<String, ApiError> {
        // A batch's items after the call's first catch-up are served by its read.
        self.keys.hear_of_key(call.asked, key).await;
        Judgements::judge(judgements, call, key, encryption_context, |call| {
            self.known_crypto_key(call, action, key, encryption_context)
        })
    }

    /// Authorises an RSA encryption or decryption on a key, with `kms:EncryptionAlgorithm`
    /// the request's.
    async fn asymmetric_key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        algorithm: &Result<EncryptionAlgorithm, String>,
    ) -> Result<String, ApiError> {
        let mut context = self.context(call);
        context.set(
            "kms:EncryptionAlgorithm",
            match algorithm {
                Ok(a) => a.as_str(),
                Err(name) => name.as_str(),
            },
        );
        Ok(self
            .authorizer
            .key(call, action, key, false, &context, &GrantAsk::Plain)
            .await?
            .id
            .hyphenated()
            .to_string())
    }

    /// Authorises an action on the key a ciphertext blob names (unparseable blobs are left to
    /// the operation, which refuses them uniformly), with the batch's `judgements` for a
    /// batch's item.
    async fn blob_key(
        &self,
        call: &CallContext,
        action: &str,
        blob: &[u8],
        encryption_context: &EncryptionContext,
        judgements: Option<&mut Judgements>,
    ) -> Result<(), ApiError> {
        call.audit.add_context(encryption_context.pairs());
        let Ok(parsed) = CiphertextBlob::parse(blob) else {
            return Ok(());
        };
        // A key or version another daemon has just made is heard of before it is judged.
        self.keys
            .hear_of_key_version(call.asked, parsed.key_id, parsed.key_version)
            .await;
        let id = parsed.key_id.hyphenated().to_string();
        Judgements::judge(judgements, call, &id, encryption_context, |call| {
            let mut context = self.context(call);
            Authorizer::add_encryption_context(&mut context, encryption_context.pairs());
            let ask = GrantAsk::Context(encryption_context.pairs());
            context.set("kms:EncryptionAlgorithm", ALGORITHM);
            self.authorizer
                .ciphertext_key(call, action, parsed.key_id, &context, &ask)?;
            Ok(id.clone())
        })?;
        Ok(())
    }

    fn metadata(&self, record: &KeyRecord) -> v1::KeyMetadata {
        let last_use = self.keys.last_use(record);
        let state = match record.state {
            KeyState::Enabled | KeyState::Disabled | KeyState::PendingDeletion
                if self.keys.is_unavailable(record.id) =>
            {
                v1::KeyState::Unavailable
            }
            KeyState::Enabled => v1::KeyState::Enabled,
            KeyState::Disabled => v1::KeyState::Disabled,
            KeyState::PendingDeletion => v1::KeyState::PendingDeletion,
            KeyState::Deleted => v1::KeyState::Deleted,
            KeyState::PendingImport => v1::KeyState::PendingImport,
        };
        v1::KeyMetadata {
            key_id: record.id.hyphenated().to_string(),
            arn: self.keys.key_arn(record.id),
            aws_account_id: self.keys.config().account_id.clone(),
            description: record.description.clone(),
            key_state: state as i32,
            enabled: record.state == KeyState::Enabled,
            creation_date: record.created,
            deletion_date: record.deletion_date,
            pending_deletion_window_in_days: record.pending_window_days,
            key_usage: record.usage.as_str().into(),
            key_spec: record.spec.as_str().into(),
            origin: record.origin.clone(),
            key_manager: "CUSTOMER".into(),
            keystore: record.keystore.clone(),
            current_key_version: record.current_version(),
            encryption_algorithms: encryption_algorithms(record.spec, record.usage),
            last_used_date: last_use.as_ref().map(|u| u.time),
            last_used_operation: last_use.map(|u| u.operation).unwrap_or_default(),
            mac_algorithms: record
                .spec
                .mac_algorithm()
                .map(|a| vec![a.as_str().into()])
                .unwrap_or_default(),
            signing_algorithms: signing_algorithms(record.spec, record.usage),
            key_agreement_algorithms: key_agreement_algorithms(record.usage),
            valid_to: record.imported.as_ref().and_then(|i| i.valid_to),
            expiration_model: record.imported.as_ref().map(|i| {
                if i.valid_to.is_some() {
                    "KEY_MATERIAL_EXPIRES".into()
                } else {
                    "KEY_MATERIAL_DOES_NOT_EXPIRE".into()
                }
            }),
        }
    }

    pub(super) fn arn(&self, id: uuid::Uuid) -> String {
        self.keys.key_arn(id)
    }
}

/// The judgements already made in one batch call of one action, for the items after them: an
/// item naming the same key reference with the same encryption context as an earlier allowed
/// item is allowed as that one was (the key's id, and what its audit slot noted: the key's ARN,
/// the grant that allowed it, the context), without looking the key up and evaluating its
/// policies, grants and the caller's again. Refusals are not kept: each refused item is judged,
/// logged and answered on its own. A change to a policy or grant made while a batch runs reaches
/// the items that repeat an earlier one from the next call, as it reaches any call under way
/// (EncryptBatch and GenerateDataKeyBatch judge all their symmetric items before they seal any;
/// DecryptBatch judges each item as it opens it).
///
/// Keeping a judgement costs a copy of its context and notes; a call whose items do not repeat
/// (each with a context of its own) stops keeping and consulting them once it has asked
/// [`UNREPEATED_ITEMS`] more new questions than repeated ones.
#[derive(Default)]
pub(in crate::api::operations) struct Judgements {
    allowed: HashMap<String, HashMap<EncryptionContext, (String, AuditNote)>>,
    /// Items that asked what no earlier item had.
    new: usize,
    /// Items answered from an earlier item's judgement.
    repeated: usize,
}

/// How many more new questions than repeated ones a batch's judgements are kept for.
const UNREPEATED_ITEMS: usize = 32;

impl Judgements {
    /// Whether keeping and consulting judgements still pays in this call.
    fn pays(&self) -> bool {
        self.new < self.repeated + UNREPEATED_ITEMS
    }

    /// The key id `judge` allows an item asking of `key` with `encryption_context`, or (for a
    /// batch's item, with the call's `judgements`) the one an earlier item asking the same was
    /// allowed, its notes noted again in the item's audit slot. A judgement kept is judged with
    /// an audit slot of its own, so that it keeps only what it noted itself (not what the item
    /// noted before it, such as a Decrypt's ciphertext key before the key its request names).
    fn judge(
        judgements: Option<&mut Judgements>,
        call: &CallContext,
        key: &str,
        encryption_context: &EncryptionContext,
        judge: impl FnOnce(&CallContext) -> Result<String, ApiError>,
    ) -> Result<String, ApiError> {
        let Some(judgements) = judgements.filter(|j| j.pays()) else {
            return judge(call);
        };
        if let Some((id, note)) = judgements
            .allowed
            .get(key)
            .and_then(|contexts| contexts.get(encryption_context))
        {
            judgements.repeated += 1;
            call.audit.note_again(note);
            return Ok(id.clone());
        }
        judgements.new += 1;
        let own = CallContext {
            audit: AuditSlot::default(),
            ..call.clone()
        };
        let judged = judge(&own);
        let note = own.audit.gathered();
        call.audit.note_again(&note);
        let id = judged?;
        judgements
            .allowed
            .entry(key.to_owned())
            .or_default()
            .insert(encryption_context.clone(), (id.clone(), note));
        Ok(id)
    }
}

/// What an Encrypt request asks once read: a symmetric encryption already authorised (the key
/// id to seal with), or another algorithm still to authorise.
pub(super) enum Sealing {
    Symmetric {
        key: String,
        context: EncryptionContext,
    },
    Other {
        context: EncryptionContext,
        algorithm: Result<EncryptionAlgorithm, String>,
    },
}

fn context(map: HashMap<String, String>) -> Result<EncryptionContext, ApiError> {
    EncryptionContext::from_map(map).map_err(|e| KeyError::Validation(e.to_string()).into())
}

fn tags(tags: Vec<v1::Tag>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut map = BTreeMap::new();
    for tag in tags {
        if map.insert(tag.tag_key.clone(), tag.tag_value).is_some() {
            return Err(
                KeyError::Validation(format!("tag key '{}' is repeated", tag.tag_key)).into(),
            );
        }
    }
    Ok(map)
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// What an operation answers: its typed result, or the refusal every door reports.
pub type Outcome<T> = Result<T, ApiError>;

/// A signing key's algorithms (none for RSA keys of usage `ENCRYPT_DECRYPT` or ECC keys of
/// usage `KEY_AGREEMENT`).
fn signing_algorithms(spec: KeySpec, usage: KeyUsage) -> Vec<String> {
    if usage != KeyUsage::SignVerify {
        return Vec::new();
    }
    spec.signing_algorithms()
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect()
}

fn encryption_algorithms(spec: KeySpec, usage: KeyUsage) -> Vec<String> {
    crate::keys::encryption_algorithms(spec, usage)
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect()
}

fn key_agreement_algorithms(usage: KeyUsage) -> Vec<String> {
    match usage {
        KeyUsage::KeyAgreement => vec!["ECDH".into()],
        _ => Vec::new(),
    }
}

/// Authorises a Sign or Verify on a key, with the `kms:SigningAlgorithm` and
/// `kms:MessageType` condition keys.
async fn signing_key(
    api: &KmsOperations,
    call: &CallContext,
    action: &str,
    key: &str,
    algorithm: &str,
    message_type: &str,
) -> Result<SigningRequest, ApiError> {
    let algorithm_name = algorithm;
    let algorithm = crate::keys::signing_algorithm(algorithm)?;
    let message_type = crate::keys::MessageType::parse(message_type)?;
    let mut context = api.context(call);
    context
        .set("kms:SigningAlgorithm", algorithm_name)
        .set("kms:MessageType", message_type.as_str());
    let record = api
        .authorizer
        .key(call, action, key, false, &context, &GrantAsk::Plain)
        .await?;
    Ok(SigningRequest {
        key: record.id.hyphenated().to_string(),
        algorithm,
        message_type,
    })
}

struct SigningRequest {
    key: String,
    algorithm: Result<crate::keys::SigningAlgorithm, String>,
    message_type: crate::keys::MessageType,
}

/// Authorises a MAC action on a key, with the `kms:MacAlgorithm` condition key.
async fn mac_key(
    api: &KmsOperations,
    call: &CallContext,
    action: &str,
    key: &str,
    algorithm: &str,
) -> Result<(String, crate::keys::MacAlgorithm), ApiError> {
    let algorithm = crate::keys::mac_algorithm(algorithm)?;
    let mut context = api.context(call);
    context.set("kms:MacAlgorithm", algorithm.as_str());
    let record = api
        .authorizer
        .key(call, action, key, false, &context, &GrantAsk::Plain)
        .await?;
    Ok((record.id.hyphenated().to_string(), algorithm))
}

fn orphan(orphan: &crate::keys::Orphan) -> v1::OrphanedKeyMaterial {
    v1::OrphanedKeyMaterial {
        keystore: orphan.keystore.clone(),
        key_id: orphan.material.key_id.hyphenated().to_string(),
        key_version: orphan.material.version,
    }
}

/// How often UpdateAlias and DeleteAlias authorise again when the alias moved between their
/// authorisation and their change (another caller's UpdateAlias in between).
const ALIAS_ATTEMPTS: usize = 3;

fn alias_kept_moving(alias: &str) -> ApiError {
    KeyError::InvalidState(format!(
        "alias '{}' kept moving to other keys while the call was authorised; try again",
        crate::keys::printable_input(alias)
    ))
    .into()
}

/// Key policies have one name, as in AWS KMS.
fn policy_name(name: &str) -> Result<(), KeyError> {
    if matches!(name, "" | "default") {
        Ok(())
    } else {
        Err(KeyError::Validation(format!(
            "PolicyName must be 'default'; got '{}'",
            crate::keys::printable_input(name)
        )))
    }
}

impl KmsOperations {
    /// Authorises an alias action on the alias name (after checking the name, which tells
    /// nothing of what exists).
    fn alias(&self, call: &CallContext, action: &str, alias: &str) -> Result<(), ApiError> {
        crate::keys::validate_alias_name(alias)?;
        let context = self.context(call);
        Ok(self.authorizer.alias(call, action, alias, &context)?)
    }

    /// The key an alias points at now, authorised for `action`: the change is then made only
    /// if the alias still points at it.
    async fn alias_key(
        &self,
        call: &CallContext,
        action: &str,
        alias: &str,
    ) -> Result<Uuid, ApiError> {
        let context = self.context(call);
        Ok(self
            .authorizer
            .key(call, action, alias, false, &context, &GrantAsk::Plain)
            .await?
            .id)
    }

    /// The key a Decrypt or ReEncrypt names beside its ciphertext, authorised before it is
    /// looked up (so a name the caller may not use answers `AccessDeniedException` whether or
    /// not it exists); its id, for the operation to compare with the ciphertext's key.
    async fn expected_key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        encryption_context: &EncryptionContext,
        judgements: Option<&mut Judgements>,
    ) -> Result<Option<String>, ApiError> {
        match non_empty(key) {
            Some(key) => Ok(Some(
                self.judged_crypto_key(call, action, key, encryption_context, judgements)
                    .await?,
            )),
            None => Ok(None),
        }
    }

    /// Aliases point at keys by id or key ARN; the target key must allow the alias action.
    async fn alias_target(
        &self,
        call: &CallContext,
        action: &str,
        target: &str,
    ) -> Result<String, ApiError> {
        if target.starts_with("alias/") || target.contains(":alias/") {
            return Err(KeyError::Validation(
                "TargetKeyId must be a key id or key ARN, not an alias".into(),
            )
            .into());
        }
        self.key(call, action, target).await
    }

    /// Refuses a key policy that would leave the caller unable to change it again, unless the
    /// request asks to bypass the check.
    fn lockout_check(
        &self,
        call: &CallContext,
        key_arn: &str,
        policy: Policy,
        bypass: bool,
    ) -> Result<(), ApiError> {
        if bypass {
            return Ok(());
        }
        let policy = NamedPolicy {
            name: "key policy".into(),
            policy: Arc::new(policy),
        };
        let context = self.context(call);
        if self
            .authorizer
            .keeps_control(call, key_arn, &policy, &context)
        {
            Ok(())
        } else {
            Err(KeyError::MalformedPolicy(
                "the new key policy will not allow you to update the key policy in the future \
                 (use BypassPolicyLockoutSafetyCheck to set it anyway)"
                    .into(),
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judgements_are_kept_while_items_repeat_and_given_up_when_they_do_not() {
        let mut judgements = Judgements::default();
        for _ in 1..UNREPEATED_ITEMS {
            judgements.new += 1;
            assert!(judgements.pays());
        }
        judgements.new += 1;
        assert!(
            !judgements.pays(),
            "{UNREPEATED_ITEMS} new questions, none repeated"
        );
        // Items that repeat as often as not keep them paying.
        let alternating = Judgements {
            new: 500,
            repeated: 500,
            ..Judgements::default()
        };
        assert!(alternating.pays());
    }
}
