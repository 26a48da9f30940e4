//! The key service's operations, one per KMS action, transport-neutral: each takes the
//! authenticated call's [`CallContext`] and the request as its typed message, authorises
//! (resolving a key once, then acting on its id, so that an alias moved in between cannot
//! redirect the call), calls the [`KeyService`] and returns the typed answer or an
//! [`ApiError`]. The gRPC handlers and the AWS door's targets are conversions onto these.
//!
//! The request and response types are the wire contract's messages (`proto/`): plain data,
//! shared by both doors, with the members AWS KMS names the same way.

use crate::api::authorize::{Authorizer, CallContext};
use crate::api::status::ApiError;
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
    fn key(&self, call: &CallContext, action: &str, key: &str) -> Result<String, ApiError> {
        let context = self.context(call);
        Ok(self
            .authorizer
            .key(call, action, key, false, &context, &GrantAsk::Plain)?
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
    fn crypto_key(
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
            .key(call, action, key, false, &context, &ask)?
            .id
            .hyphenated()
            .to_string())
    }

    /// Authorises an RSA encryption or decryption on a key, with `kms:EncryptionAlgorithm`
    /// the request's.
    fn asymmetric_key(
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
            .key(call, action, key, false, &context, &GrantAsk::Plain)?
            .id
            .hyphenated()
            .to_string())
    }

    /// Authorises an action on the key a ciphertext blob names (unparseable blobs are left to
    /// the operation, which refuses them uniformly).
    async fn blob_key(
        &self,
        call: &CallContext,
        action: &str,
        blob: &[u8],
        encryption_context: &EncryptionContext,
    ) -> Result<(), ApiError> {
        call.audit.add_context(encryption_context.pairs());
        let Ok(parsed) = CiphertextBlob::parse(blob) else {
            return Ok(());
        };
        // A key or version another daemon has just made is heard of before it is judged.
        self.keys
            .hear_of_key_version(parsed.key_id, parsed.key_version)
            .await?;
        let mut context = self.context(call);
        Authorizer::add_encryption_context(&mut context, encryption_context.pairs());
        let ask = GrantAsk::Context(encryption_context.pairs());
        context.set("kms:EncryptionAlgorithm", ALGORITHM);
        Ok(self
            .authorizer
            .ciphertext_key(call, action, parsed.key_id, &context, &ask)?)
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

impl KmsOperations {
    pub async fn create_key(
        &self,
        call: &CallContext,
        request: v1::CreateKeyRequest,
    ) -> Outcome<v1::CreateKeyResponse> {
        let r = request;
        let spec = crate::keys::key_spec_and_usage(&r.key_spec, &r.key_usage)?;
        let origin = MaterialOrigin::parse(&r.origin)?;
        let mut context = self.context(call);
        context
            .set("kms:KeySpec", spec.0.as_str())
            .set("kms:KeyUsage", spec.1.as_str())
            .set(
                "kms:KeyOrigin",
                match origin {
                    MaterialOrigin::External => "EXTERNAL",
                    MaterialOrigin::Generated => "AWS_KMS",
                },
            );
        // The keystore the key would be made in, named as in `keyhaven keystore list`.
        context.set(
            "keyhaven:KeyStore",
            self.keys.keystore_named(non_empty(&r.keystore)),
        );
        self.authorizer
            .require(call, "kms:CreateKey", "*", None, &context)?;
        let policy = non_empty(&r.policy).map(str::to_owned);
        if let Some(text) = &policy {
            crate::keys::validate_key_policy_size(text)?;
            let parsed = Policy::parse(text, PolicyKind::Resource)
                .map_err(|e| KeyError::MalformedPolicy(e.0))?;
            self.lockout_check(call, "*", parsed, r.bypass_policy_lockout_safety_check)?;
        }
        let record = self
            .keys
            .create_key_from(
                r.description,
                non_empty(&r.keystore),
                tags(r.tags)?,
                policy,
                spec,
                origin,
            )
            .await?;
        call.audit.add_key(self.arn(record.id));
        Ok(v1::CreateKeyResponse {
            key_metadata: Some(self.metadata(&record)),
        })
    }

    pub async fn describe_key(
        &self,
        call: &CallContext,
        request: v1::DescribeKeyRequest,
    ) -> Outcome<v1::DescribeKeyResponse> {
        let context = self.context(call);
        let record = self.authorizer.key(
            call,
            "kms:DescribeKey",
            &request.key_id,
            true,
            &context,
            &GrantAsk::Plain,
        )?;
        Ok(v1::DescribeKeyResponse {
            key_metadata: Some(self.metadata(&record)),
        })
    }

    pub async fn list_keys(
        &self,
        call: &CallContext,
        request: v1::ListKeysRequest,
    ) -> Outcome<v1::ListKeysResponse> {
        self.anywhere(call, "kms:ListKeys")?;
        let r = &request;
        let page = self.keys.list_keys(r.limit, &r.marker)?;
        Ok(v1::ListKeysResponse {
            keys: page
                .items
                .into_iter()
                .map(|id| v1::KeyListEntry {
                    key_id: id.hyphenated().to_string(),
                    key_arn: self.arn(id),
                })
                .collect(),
            truncated: page.next_marker.is_some(),
            next_marker: page.next_marker.unwrap_or_default(),
        })
    }

    pub async fn update_key_description(
        &self,
        call: &CallContext,
        request: v1::UpdateKeyDescriptionRequest,
    ) -> Outcome<v1::UpdateKeyDescriptionResponse> {
        let r = request;
        let key = self.key(call, "kms:UpdateKeyDescription", &r.key_id)?;
        self.keys.update_description(&key, r.description).await?;
        Ok(v1::UpdateKeyDescriptionResponse {})
    }

    pub async fn enable_key(
        &self,
        call: &CallContext,
        request: v1::EnableKeyRequest,
    ) -> Outcome<v1::EnableKeyResponse> {
        let key = self.key(call, "kms:EnableKey", &request.key_id)?;
        self.keys.enable_key(&key).await?;
        Ok(v1::EnableKeyResponse {})
    }

    pub async fn disable_key(
        &self,
        call: &CallContext,
        request: v1::DisableKeyRequest,
    ) -> Outcome<v1::DisableKeyResponse> {
        let key = self.key(call, "kms:DisableKey", &request.key_id)?;
        // A call the key's state refuses is refused now, not made an approval request.
        (*self.keys.lookup(&key, false)?).clone().disable()?;
        let parameters = serde_json::json!({ "KeyId": self.key_arn(&key)? });
        self.approval_gate(call, "kms:DisableKey", &key, parameters)
            .await?;
        self.keys.disable_key(&key).await?;
        Ok(v1::DisableKeyResponse {})
    }

    pub async fn schedule_key_deletion(
        &self,
        call: &CallContext,
        request: v1::ScheduleKeyDeletionRequest,
    ) -> Outcome<v1::ScheduleKeyDeletionResponse> {
        let r = &request;
        let mut context = self.context(call);
        context.set(
            "kms:ScheduleKeyDeletionPendingWindowInDays",
            r.pending_window_in_days
                .unwrap_or(crate::keys::DEFAULT_PENDING_DAYS)
                .to_string(),
        );
        let key = self
            .authorizer
            .key(
                call,
                "kms:ScheduleKeyDeletion",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )?
            .id
            .hyphenated()
            .to_string();
        // A call the key's state or the window refuses is refused now, not made an approval
        // request (this changes a copy only).
        (*self.keys.lookup(&key, false)?)
            .clone()
            .schedule_deletion(self.keys.now(), r.pending_window_in_days)?;
        let parameters = serde_json::json!({
            "KeyId": self.key_arn(&key)?,
            "PendingWindowInDays": r.pending_window_in_days,
        });
        self.approval_gate(call, "kms:ScheduleKeyDeletion", &key, parameters)
            .await?;
        let record = self
            .keys
            .schedule_deletion(&key, r.pending_window_in_days)
            .await?;
        Ok(v1::ScheduleKeyDeletionResponse {
            key_id: self.arn(record.id),
            deletion_date: record.deletion_date.unwrap_or_default(),
            key_state: v1::KeyState::PendingDeletion as i32,
            pending_window_in_days: record.pending_window_days.unwrap_or_default(),
        })
    }

    pub async fn cancel_key_deletion(
        &self,
        call: &CallContext,
        request: v1::CancelKeyDeletionRequest,
    ) -> Outcome<v1::CancelKeyDeletionResponse> {
        let key = self.key(call, "kms:CancelKeyDeletion", &request.key_id)?;
        let record = self.keys.cancel_deletion(&key).await?;
        Ok(v1::CancelKeyDeletionResponse {
            key_id: self.arn(record.id),
        })
    }

    pub async fn create_alias(
        &self,
        call: &CallContext,
        request: v1::CreateAliasRequest,
    ) -> Outcome<v1::CreateAliasResponse> {
        let r = &request;
        // The alias by the caller's identity policies, the key by its key policy (as AWS).
        self.alias(call, "kms:CreateAlias", &r.alias_name)?;
        let key = self.alias_target(call, "kms:CreateAlias", &r.target_key_id)?;
        self.keys.create_alias(&r.alias_name, &key).await?;
        Ok(v1::CreateAliasResponse {})
    }

    pub async fn update_alias(
        &self,
        call: &CallContext,
        request: v1::UpdateAliasRequest,
    ) -> Outcome<v1::UpdateAliasResponse> {
        let r = &request;
        // The alias itself, then both the key it leaves and the key it joins must allow it.
        self.alias(call, "kms:UpdateAlias", &r.alias_name)?;
        let mut from = self.alias_key(call, "kms:UpdateAlias", &r.alias_name)?;
        let key = self.alias_target(call, "kms:UpdateAlias", &r.target_key_id)?;
        for _ in 0..ALIAS_ATTEMPTS {
            if self.keys.update_alias(&r.alias_name, &key, from).await? {
                return Ok(v1::UpdateAliasResponse {});
            }
            from = self.alias_key(call, "kms:UpdateAlias", &r.alias_name)?;
        }
        Err(alias_kept_moving(&r.alias_name))
    }

    pub async fn delete_alias(
        &self,
        call: &CallContext,
        request: v1::DeleteAliasRequest,
    ) -> Outcome<v1::DeleteAliasResponse> {
        let alias = &request.alias_name;
        self.alias(call, "kms:DeleteAlias", alias)?;
        for _ in 0..ALIAS_ATTEMPTS {
            let from = self.alias_key(call, "kms:DeleteAlias", alias)?;
            if self.keys.delete_alias(alias, from).await? {
                return Ok(v1::DeleteAliasResponse {});
            }
        }
        Err(alias_kept_moving(alias))
    }

    pub async fn list_aliases(
        &self,
        call: &CallContext,
        request: v1::ListAliasesRequest,
    ) -> Outcome<v1::ListAliasesResponse> {
        self.anywhere(call, "kms:ListAliases")?;
        let r = &request;
        // A key named here is authorised as any key is, before it is looked up: whether it
        // exists is told only to callers allowed on it.
        let key = match non_empty(&r.key_id) {
            Some(key) => Some(self.key(call, "kms:ListAliases", key)?),
            None => None,
        };
        let page = self.keys.list_aliases(key.as_deref(), r.limit, &r.marker)?;
        Ok(v1::ListAliasesResponse {
            aliases: page
                .items
                .into_iter()
                .map(|a| v1::AliasListEntry {
                    alias_arn: self.keys.alias_arn(&a.name),
                    alias_name: a.name,
                    target_key_id: a.target.hyphenated().to_string(),
                    creation_date: a.created,
                    last_updated_date: a.updated,
                })
                .collect(),
            truncated: page.next_marker.is_some(),
            next_marker: page.next_marker.unwrap_or_default(),
        })
    }

    pub async fn tag_resource(
        &self,
        call: &CallContext,
        request: v1::TagResourceRequest,
    ) -> Outcome<v1::TagResourceResponse> {
        let r = request;
        let key = self.key(call, "kms:TagResource", &r.key_id)?;
        self.keys.tag_key(&key, tags(r.tags)?).await?;
        Ok(v1::TagResourceResponse {})
    }

    pub async fn untag_resource(
        &self,
        call: &CallContext,
        request: v1::UntagResourceRequest,
    ) -> Outcome<v1::UntagResourceResponse> {
        let r = request;
        let key = self.key(call, "kms:UntagResource", &r.key_id)?;
        self.keys.untag_key(&key, r.tag_keys).await?;
        Ok(v1::UntagResourceResponse {})
    }

    pub async fn list_resource_tags(
        &self,
        call: &CallContext,
        request: v1::ListResourceTagsRequest,
    ) -> Outcome<v1::ListResourceTagsResponse> {
        let key = self.key(call, "kms:ListResourceTags", &request.key_id)?;
        let tags = self.keys.list_tags(&key)?;
        Ok(v1::ListResourceTagsResponse {
            tags: tags
                .into_iter()
                .map(|(tag_key, tag_value)| v1::Tag { tag_key, tag_value })
                .collect(),
        })
    }

    pub async fn rotate_key_on_demand(
        &self,
        call: &CallContext,
        request: v1::RotateKeyOnDemandRequest,
    ) -> Outcome<v1::RotateKeyOnDemandResponse> {
        let key = self.key(call, "kms:RotateKeyOnDemand", &request.key_id)?;
        let record = self.keys.rotate_key(&key).await?;
        Ok(v1::RotateKeyOnDemandResponse {
            key_id: self.arn(record.id),
            key_version: record.current_version(),
        })
    }

    pub async fn enable_key_rotation(
        &self,
        call: &CallContext,
        request: v1::EnableKeyRotationRequest,
    ) -> Outcome<v1::EnableKeyRotationResponse> {
        let r = &request;
        let key = self.key(call, "kms:EnableKeyRotation", &r.key_id)?;
        self.keys
            .enable_rotation(&key, r.rotation_period_in_days)
            .await?;
        Ok(v1::EnableKeyRotationResponse {})
    }

    pub async fn disable_key_rotation(
        &self,
        call: &CallContext,
        request: v1::DisableKeyRotationRequest,
    ) -> Outcome<v1::DisableKeyRotationResponse> {
        let key = self.key(call, "kms:DisableKeyRotation", &request.key_id)?;
        self.keys.disable_rotation(&key).await?;
        Ok(v1::DisableKeyRotationResponse {})
    }

    pub async fn get_key_rotation_status(
        &self,
        call: &CallContext,
        request: v1::GetKeyRotationStatusRequest,
    ) -> Outcome<v1::GetKeyRotationStatusResponse> {
        let key = self.key(call, "kms:GetKeyRotationStatus", &request.key_id)?;
        let record = self.keys.rotation_status(&key)?;
        Ok(v1::GetKeyRotationStatusResponse {
            key_id: self.arn(record.id),
            key_rotation_enabled: record.rotation.enabled,
            rotation_period_in_days: record.rotation.period_days,
            next_rotation_date: record.rotation.next_rotation,
        })
    }

    pub async fn list_key_rotations(
        &self,
        call: &CallContext,
        request: v1::ListKeyRotationsRequest,
    ) -> Outcome<v1::ListKeyRotationsResponse> {
        let key = self.key(call, "kms:ListKeyRotations", &request.key_id)?;
        let record = self.keys.rotation_status(&key)?;
        Ok(v1::ListKeyRotationsResponse {
            key_id: self.arn(record.id),
            rotations: record
                .versions
                .iter()
                .map(|v| v1::KeyRotation {
                    key_version: v.number,
                    rotation_date: v.created,
                    rotation_type: v.rotation_type.as_str().into(),
                })
                .collect(),
        })
    }

    pub async fn get_key_policy(
        &self,
        call: &CallContext,
        request: v1::GetKeyPolicyRequest,
    ) -> Outcome<v1::GetKeyPolicyResponse> {
        let r = &request;
        policy_name(&r.policy_name)?;
        let key = self.key(call, "kms:GetKeyPolicy", &r.key_id)?;
        Ok(v1::GetKeyPolicyResponse {
            policy: self.keys.get_key_policy(&key)?,
            policy_name: "default".into(),
        })
    }

    pub async fn put_key_policy(
        &self,
        call: &CallContext,
        request: v1::PutKeyPolicyRequest,
    ) -> Outcome<v1::PutKeyPolicyResponse> {
        let r = request;
        policy_name(&r.policy_name)?;
        let key = self.key(call, "kms:PutKeyPolicy", &r.key_id)?;
        crate::keys::validate_key_policy_size(&r.policy)?;
        let parsed = Policy::parse(&r.policy, PolicyKind::Resource)
            .map_err(|e| KeyError::MalformedPolicy(e.0))?;
        let arn = self.keys.key_arn(self.keys.resolve_id(&key)?);
        self.lockout_check(call, &arn, parsed, r.bypass_policy_lockout_safety_check)?;
        let parameters = serde_json::json!({
            "KeyId": arn,
            "Policy": r.policy,
            "BypassPolicyLockoutSafetyCheck": r.bypass_policy_lockout_safety_check,
        });
        self.approval_gate(call, "kms:PutKeyPolicy", &key, parameters)
            .await?;
        self.keys.put_key_policy(&key, r.policy).await?;
        Ok(v1::PutKeyPolicyResponse {})
    }

    pub async fn encrypt(
        &self,
        call: &CallContext,
        request: v1::EncryptRequest,
    ) -> Outcome<v1::EncryptResponse> {
        let mut r = request;
        let result = async {
            match self.plan_encrypt(call, &mut r)? {
                Sealing::Symmetric { key, context } => {
                    let (blob, id) = self.keys.encrypt(&key, &r.plaintext, &context).await?;
                    Ok((blob, id, EncryptionAlgorithm::SymmetricDefault))
                }
                Sealing::Other { context, algorithm } => {
                    self.encrypt_other(call, &r, context, algorithm).await
                }
            }
        }
        .await;
        r.plaintext.zeroize();
        let (blob, id, algorithm) = result?;
        Ok(self.encrypted(blob, id, algorithm))
    }

    /// Reads an Encrypt request's context and algorithm (taking the context out of it) and,
    /// for the symmetric default, authorises it: what is left is to seal.
    pub(super) fn plan_encrypt(
        &self,
        call: &CallContext,
        r: &mut v1::EncryptRequest,
    ) -> Result<Sealing, ApiError> {
        let context = context(std::mem::take(&mut r.encryption_context))?;
        let algorithm = crate::keys::encryption_algorithm(&r.encryption_algorithm)?;
        if algorithm == Ok(EncryptionAlgorithm::SymmetricDefault) {
            let key = self.crypto_key(call, "kms:Encrypt", &r.key_id, &context)?;
            return Ok(Sealing::Symmetric { key, context });
        }
        Ok(Sealing::Other { context, algorithm })
    }

    /// Encrypt with an algorithm other than the symmetric default (RSA): authorised and done.
    pub(super) async fn encrypt_other(
        &self,
        call: &CallContext,
        r: &v1::EncryptRequest,
        context: EncryptionContext,
        algorithm: Result<EncryptionAlgorithm, String>,
    ) -> Result<(Vec<u8>, Uuid, EncryptionAlgorithm), ApiError> {
        call.audit.add_context(context.pairs());
        let key = self.asymmetric_key(call, "kms:Encrypt", &r.key_id, &algorithm)?;
        Ok(self
            .keys
            .encrypt_asymmetric(&key, &r.plaintext, algorithm, &context)
            .await?)
    }

    /// Encrypt's answer.
    pub(super) fn encrypted(
        &self,
        blob: Vec<u8>,
        id: Uuid,
        algorithm: EncryptionAlgorithm,
    ) -> v1::EncryptResponse {
        v1::EncryptResponse {
            ciphertext_blob: blob,
            key_id: self.arn(id),
            encryption_algorithm: algorithm.as_str().into(),
        }
    }

    pub async fn decrypt(
        &self,
        call: &CallContext,
        request: v1::DecryptRequest,
    ) -> Outcome<v1::DecryptResponse> {
        let r = request;
        let context = context(r.encryption_context)?;
        let algorithm = crate::keys::encryption_algorithm(&r.encryption_algorithm)?;
        if algorithm != Ok(EncryptionAlgorithm::SymmetricDefault) {
            // An RSA ciphertext does not name its key: the request must.
            if r.key_id.is_empty() {
                return Err(KeyError::Validation(format!(
                    "KeyId is required to decrypt with EncryptionAlgorithm {}",
                    crate::keys::printable_input(&r.encryption_algorithm)
                ))
                .into());
            }
            call.audit.add_context(context.pairs());
            let key = self.asymmetric_key(call, "kms:Decrypt", &r.key_id, &algorithm)?;
            let (decrypted, algorithm) = self
                .keys
                .decrypt_asymmetric(&key, &r.ciphertext_blob, algorithm, &context)
                .await?;
            return Ok(v1::DecryptResponse {
                key_id: self.arn(decrypted.key_id),
                plaintext: decrypted.plaintext.into_bytes(),
                encryption_algorithm: algorithm.as_str().into(),
            });
        }
        self.blob_key(call, "kms:Decrypt", &r.ciphertext_blob, &context)
            .await?;
        let expected = self.expected_key(call, "kms:Decrypt", &r.key_id, &context)?;
        let decrypted = self
            .keys
            .decrypt(&r.ciphertext_blob, &context, expected.as_deref())
            .await?;
        Ok(v1::DecryptResponse {
            key_id: self.arn(decrypted.key_id),
            plaintext: decrypted.plaintext.into_bytes(),
            encryption_algorithm: ALGORITHM.into(),
        })
    }

    pub async fn re_encrypt(
        &self,
        call: &CallContext,
        request: v1::ReEncryptRequest,
    ) -> Outcome<v1::ReEncryptResponse> {
        let r = request;
        let source_context = context(r.source_encryption_context)?;
        let destination_context = context(r.destination_encryption_context)?;
        self.blob_key(
            call,
            "kms:ReEncryptFrom",
            &r.ciphertext_blob,
            &source_context,
        )
        .await?;
        let source =
            self.expected_key(call, "kms:ReEncryptFrom", &r.source_key_id, &source_context)?;
        let destination = self.crypto_key(
            call,
            "kms:ReEncryptTo",
            &r.destination_key_id,
            &destination_context,
        )?;
        let (blob, source, destination) = self
            .keys
            .re_encrypt(
                &r.ciphertext_blob,
                &source_context,
                source.as_deref(),
                &destination,
                &destination_context,
            )
            .await?;
        Ok(v1::ReEncryptResponse {
            ciphertext_blob: blob,
            source_key_id: self.arn(source),
            key_id: self.arn(destination),
        })
    }

    pub async fn generate_data_key(
        &self,
        call: &CallContext,
        request: v1::GenerateDataKeyRequest,
    ) -> Outcome<v1::GenerateDataKeyResponse> {
        let (key, size, context) = self.plan_generate_data_key(call, request)?;
        let (plaintext, blob, id) = self.keys.generate_data_key(&key, size, &context).await?;
        Ok(v1::GenerateDataKeyResponse {
            ciphertext_blob: blob,
            plaintext: plaintext.into_bytes(),
            key_id: self.arn(id),
        })
    }

    /// Reads and authorises a GenerateDataKey request: the key id, the data key's size and
    /// the context to seal it with.
    pub(super) fn plan_generate_data_key(
        &self,
        call: &CallContext,
        r: v1::GenerateDataKeyRequest,
    ) -> Result<(String, DataKeySize, EncryptionContext), ApiError> {
        let context = context(r.encryption_context)?;
        let key = self.crypto_key(call, "kms:GenerateDataKey", &r.key_id, &context)?;
        let size = DataKeySize::from_request(&r.key_spec, r.number_of_bytes)?;
        Ok((key, size, context))
    }

    pub async fn generate_data_key_without_plaintext(
        &self,
        call: &CallContext,
        request: v1::GenerateDataKeyWithoutPlaintextRequest,
    ) -> Outcome<v1::GenerateDataKeyWithoutPlaintextResponse> {
        let r = request;
        let context = context(r.encryption_context)?;
        let key = self.crypto_key(
            call,
            "kms:GenerateDataKeyWithoutPlaintext",
            &r.key_id,
            &context,
        )?;
        let size = DataKeySize::from_request(&r.key_spec, r.number_of_bytes)?;
        let (_plaintext, blob, id) = self.keys.generate_data_key(&key, size, &context).await?;
        Ok(v1::GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: blob,
            key_id: self.arn(id),
        })
    }

    pub async fn generate_random(
        &self,
        call: &CallContext,
        request: v1::GenerateRandomRequest,
    ) -> Outcome<v1::GenerateRandomResponse> {
        self.anywhere(call, "kms:GenerateRandom")?;
        let bytes = self.keys.generate_random(request.number_of_bytes)?;
        Ok(v1::GenerateRandomResponse {
            plaintext: bytes.into_bytes(),
        })
    }

    pub async fn list_orphaned_key_material(
        &self,
        call: &CallContext,
        _request: v1::ListOrphanedKeyMaterialRequest,
    ) -> Outcome<v1::ListOrphanedKeyMaterialResponse> {
        self.anywhere(call, "kms:ListOrphanedKeyMaterial")?;
        let orphans = self.keys.orphans().await?;
        Ok(v1::ListOrphanedKeyMaterialResponse {
            orphans: orphans.iter().map(orphan).collect(),
        })
    }

    pub async fn destroy_orphaned_key_material(
        &self,
        call: &CallContext,
        request: v1::DestroyOrphanedKeyMaterialRequest,
    ) -> Outcome<v1::DestroyOrphanedKeyMaterialResponse> {
        let r = request;
        let key_id = uuid::Uuid::try_parse(&r.key_id).map_err(|_| {
            KeyError::Validation(format!(
                "KeyId must be a key id (a UUID); got '{}'",
                crate::keys::printable_input(&r.key_id)
            ))
        })?;
        // The material's key is named in the audit record whether or not the call is allowed.
        call.audit.add_key(self.arn(key_id));
        self.anywhere(call, "kms:DestroyOrphanedKeyMaterial")?;
        let destroyed = self
            .keys
            .destroy_orphan(&r.keystore, key_id, r.key_version)
            .await?;
        Ok(v1::DestroyOrphanedKeyMaterialResponse {
            destroyed: Some(orphan(&destroyed)),
        })
    }

    pub async fn generate_mac(
        &self,
        call: &CallContext,
        request: v1::GenerateMacRequest,
    ) -> Outcome<v1::GenerateMacResponse> {
        let mut r = request;
        let result = async {
            let (key, algorithm) =
                mac_key(self, call, "kms:GenerateMac", &r.key_id, &r.mac_algorithm)?;
            let answer = self.keys.generate_mac(&key, &r.message, algorithm).await?;
            Ok::<_, ApiError>((answer, algorithm))
        }
        .await;
        r.message.zeroize();
        let (answer, algorithm) = result?;
        Ok(v1::GenerateMacResponse {
            mac: answer.mac,
            mac_algorithm: algorithm.as_str().into(),
            key_id: self.arn(answer.key_id),
        })
    }

    pub async fn verify_mac(
        &self,
        call: &CallContext,
        request: v1::VerifyMacRequest,
    ) -> Outcome<v1::VerifyMacResponse> {
        let mut r = request;
        let result = async {
            let (key, algorithm) =
                mac_key(self, call, "kms:VerifyMac", &r.key_id, &r.mac_algorithm)?;
            let id = self
                .keys
                .verify_mac(&key, &r.message, algorithm, &r.mac)
                .await?;
            Ok::<_, ApiError>((id, algorithm))
        }
        .await;
        r.message.zeroize();
        let (id, algorithm) = result?;
        Ok(v1::VerifyMacResponse {
            key_id: self.arn(id),
            mac_valid: true,
            mac_algorithm: algorithm.as_str().into(),
        })
    }

    pub async fn sign(
        &self,
        call: &CallContext,
        request: v1::SignRequest,
    ) -> Outcome<v1::SignResponse> {
        let mut r = request;
        let result = async {
            let s = signing_key(
                self,
                call,
                "kms:Sign",
                &r.key_id,
                &r.signing_algorithm,
                &r.message_type,
            )?;
            Ok::<_, ApiError>(
                self.keys
                    .sign(&s.key, &r.message, s.message_type, s.algorithm)
                    .await?,
            )
        }
        .await;
        r.message.zeroize();
        let signed = result?;
        Ok(v1::SignResponse {
            key_id: self.arn(signed.key_id),
            signature: signed.signature,
            signing_algorithm: r.signing_algorithm,
        })
    }

    pub async fn verify(
        &self,
        call: &CallContext,
        request: v1::VerifyRequest,
    ) -> Outcome<v1::VerifyResponse> {
        let mut r = request;
        let result = async {
            let s = signing_key(
                self,
                call,
                "kms:Verify",
                &r.key_id,
                &r.signing_algorithm,
                &r.message_type,
            )?;
            Ok::<_, ApiError>(
                self.keys
                    .verify(
                        &s.key,
                        &r.message,
                        s.message_type,
                        s.algorithm,
                        &r.signature,
                    )
                    .await?,
            )
        }
        .await;
        r.message.zeroize();
        let id = result?;
        Ok(v1::VerifyResponse {
            key_id: self.arn(id),
            signature_valid: true,
            signing_algorithm: r.signing_algorithm,
        })
    }

    pub async fn get_public_key(
        &self,
        call: &CallContext,
        request: v1::GetPublicKeyRequest,
    ) -> Outcome<v1::GetPublicKeyResponse> {
        let key = self.key(call, "kms:GetPublicKey", &request.key_id)?;
        let public = self.keys.get_public_key(&key).await?;
        Ok(v1::GetPublicKeyResponse {
            key_id: self.arn(public.key_id),
            public_key: public.der,
            key_spec: public.spec.as_str().into(),
            key_usage: public.usage.as_str().into(),
            signing_algorithms: signing_algorithms(public.spec, public.usage),
            encryption_algorithms: encryption_algorithms(public.spec, public.usage),
            key_agreement_algorithms: key_agreement_algorithms(public.usage),
        })
    }

    pub async fn derive_shared_secret(
        &self,
        call: &CallContext,
        request: v1::DeriveSharedSecretRequest,
    ) -> Outcome<v1::DeriveSharedSecretResponse> {
        let r = request;
        let algorithm = crate::keys::key_agreement_algorithm(&r.key_agreement_algorithm)?;
        let mut context = self.context(call);
        context.set("kms:KeyAgreementAlgorithm", algorithm);
        let key = self
            .authorizer
            .key(
                call,
                "kms:DeriveSharedSecret",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )?
            .id
            .hyphenated()
            .to_string();
        let (secret, id, origin) = self.keys.derive_shared_secret(&key, &r.public_key).await?;
        Ok(v1::DeriveSharedSecretResponse {
            key_id: self.arn(id),
            shared_secret: secret.into_bytes(),
            key_agreement_algorithm: algorithm.into(),
            key_origin: origin,
        })
    }

    /// Authorises a GenerateDataKeyPair(WithoutPlaintext) with the request's encryption
    /// context and `kms:DataKeyPairSpec`; returns the key and the pair's spec.
    fn data_key_pair_key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        spec: &str,
        encryption_context: &EncryptionContext,
    ) -> Result<(String, KeySpec), ApiError> {
        let spec = crate::keys::key_pair_spec(spec)?;
        let mut context = self.context(call);
        Authorizer::add_encryption_context(&mut context, encryption_context.pairs());
        context
            .set("kms:EncryptionAlgorithm", ALGORITHM)
            .set("kms:DataKeyPairSpec", spec.as_str());
        call.audit.add_context(encryption_context.pairs());
        let ask = GrantAsk::Context(encryption_context.pairs());
        let record = self
            .authorizer
            .key(call, action, key, false, &context, &ask)?;
        Ok((record.id.hyphenated().to_string(), spec))
    }

    pub async fn generate_data_key_pair(
        &self,
        call: &CallContext,
        request: v1::GenerateDataKeyPairRequest,
    ) -> Outcome<v1::GenerateDataKeyPairResponse> {
        let r = request;
        let context = context(r.encryption_context)?;
        let (key, spec) = self.data_key_pair_key(
            call,
            "kms:GenerateDataKeyPair",
            &r.key_id,
            &r.key_pair_spec,
            &context,
        )?;
        let pair = self
            .keys
            .generate_data_key_pair(&key, spec, &context, "GenerateDataKeyPair")
            .await?;
        Ok(v1::GenerateDataKeyPairResponse {
            private_key_ciphertext_blob: pair.private_key_blob,
            private_key_plaintext: pair.private_key.into_bytes(),
            public_key: pair.public_key,
            key_id: self.arn(pair.key_id),
            key_pair_spec: spec.as_str().into(),
        })
    }

    pub async fn generate_data_key_pair_without_plaintext(
        &self,
        call: &CallContext,
        request: v1::GenerateDataKeyPairWithoutPlaintextRequest,
    ) -> Outcome<v1::GenerateDataKeyPairWithoutPlaintextResponse> {
        let r = request;
        let context = context(r.encryption_context)?;
        let (key, spec) = self.data_key_pair_key(
            call,
            "kms:GenerateDataKeyPairWithoutPlaintext",
            &r.key_id,
            &r.key_pair_spec,
            &context,
        )?;
        // The private key is made and wiped here; only its ciphertext leaves.
        let pair = self
            .keys
            .generate_data_key_pair(&key, spec, &context, "GenerateDataKeyPairWithoutPlaintext")
            .await?;
        Ok(v1::GenerateDataKeyPairWithoutPlaintextResponse {
            private_key_ciphertext_blob: pair.private_key_blob,
            public_key: pair.public_key,
            key_id: self.arn(pair.key_id),
            key_pair_spec: spec.as_str().into(),
        })
    }
}

impl KmsOperations {
    pub async fn get_parameters_for_import(
        &self,
        call: &CallContext,
        request: v1::GetParametersForImportRequest,
    ) -> Outcome<v1::GetParametersForImportResponse> {
        let r = request;
        let mut context = self.context(call);
        context
            .set("kms:WrappingAlgorithm", r.wrapping_algorithm.clone())
            .set("kms:WrappingKeySpec", r.wrapping_key_spec.clone());
        let key = self
            .authorizer
            .key(
                call,
                "kms:GetParametersForImport",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )?
            .id
            .hyphenated()
            .to_string();
        let parameters = self
            .keys
            .get_parameters_for_import(&key, &r.wrapping_algorithm, &r.wrapping_key_spec)
            .await?;
        Ok(v1::GetParametersForImportResponse {
            key_id: self.arn(parameters.key_id),
            import_token: parameters.import_token,
            public_key: parameters.public_key,
            parameters_valid_to: parameters.valid_to,
        })
    }

    pub async fn import_key_material(
        &self,
        call: &CallContext,
        request: v1::ImportKeyMaterialRequest,
    ) -> Outcome<v1::ImportKeyMaterialResponse> {
        let r = request;
        let mut context = self.context(call);
        let model = match (r.expiration_model.as_str(), r.valid_to) {
            ("", Some(_)) => "KEY_MATERIAL_EXPIRES",
            ("", None) => "KEY_MATERIAL_DOES_NOT_EXPIRE",
            (model, _) => model,
        };
        context.set("kms:ExpirationModel", model.to_owned());
        if let Some(valid_to) = r.valid_to {
            context.set("kms:ValidTo", valid_to.to_string());
        }
        let key = self
            .authorizer
            .key(
                call,
                "kms:ImportKeyMaterial",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )?
            .id
            .hyphenated()
            .to_string();
        let record = self
            .keys
            .import_key_material(
                &key,
                &r.import_token,
                &r.encrypted_key_material,
                &r.expiration_model,
                r.valid_to,
            )
            .await?;
        Ok(v1::ImportKeyMaterialResponse {
            key_id: self.arn(record.id),
        })
    }

    pub async fn delete_imported_key_material(
        &self,
        call: &CallContext,
        request: v1::DeleteImportedKeyMaterialRequest,
    ) -> Outcome<v1::DeleteImportedKeyMaterialResponse> {
        let key = self.key(call, "kms:DeleteImportedKeyMaterial", &request.key_id)?;
        let parameters = serde_json::json!({ "KeyId": self.key_arn(&key)? });
        self.approval_gate(call, "kms:DeleteImportedKeyMaterial", &key, parameters)
            .await?;
        let record = self.keys.delete_imported_key_material(&key).await?;
        Ok(v1::DeleteImportedKeyMaterialResponse {
            key_id: self.arn(record.id),
        })
    }
}

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
fn signing_key(
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
        .key(call, action, key, false, &context, &GrantAsk::Plain)?;
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
fn mac_key(
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
        .key(call, action, key, false, &context, &GrantAsk::Plain)?;
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
    fn alias_key(&self, call: &CallContext, action: &str, alias: &str) -> Result<Uuid, ApiError> {
        let context = self.context(call);
        Ok(self
            .authorizer
            .key(call, action, alias, false, &context, &GrantAsk::Plain)?
            .id)
    }

    /// The key a Decrypt or ReEncrypt names beside its ciphertext, authorised before it is
    /// looked up (so a name the caller may not use answers `AccessDeniedException` whether or
    /// not it exists); its id, for the operation to compare with the ciphertext's key.
    fn expected_key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        encryption_context: &EncryptionContext,
    ) -> Result<Option<String>, ApiError> {
        match non_empty(key) {
            Some(key) => Ok(Some(self.crypto_key(
                call,
                action,
                key,
                encryption_context,
            )?)),
            None => Ok(None),
        }
    }

    /// Aliases point at keys by id or key ARN; the target key must allow the alias action.
    fn alias_target(
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
        self.key(call, action, target)
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
