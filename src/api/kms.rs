//! `keyhaven.v1.KeyManagementService`: each handler takes the authenticated caller, turns the
//! request into domain values, calls the [`KeyService`] and turns the answer back.

use super::authorize::{Authorizer, CallContext};
use super::call_context as caller;
use crate::crypto::{CiphertextBlob, EncryptionContext};
use crate::keys::{DataKeySize, KeyError, KeyRecord, KeyService, KeySpec, KeyState};
use crate::policy::{NamedPolicy, Policy, PolicyKind, RequestContext};
use crate::proto::v1::{self, key_management_service_server::KeyManagementService};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use uuid::Uuid;
use zeroize::Zeroize;

const ALGORITHM: &str = "SYMMETRIC_DEFAULT";

/// The gRPC face of the key service.
#[derive(Clone)]
pub struct KmsApi {
    keys: Arc<KeyService>,
    authorizer: Arc<Authorizer>,
}

impl KmsApi {
    pub fn new(keys: Arc<KeyService>, authorizer: Arc<Authorizer>) -> Self {
        Self { keys, authorizer }
    }

    fn context(&self, call: &CallContext) -> RequestContext {
        self.authorizer.base_context(call, self.keys.now())
    }

    /// Authorises `action` on a key; returns its id for the operation to act on (so that an
    /// alias moved in between cannot redirect it).
    fn key(&self, call: &CallContext, action: &str, key: &str) -> Result<String, Status> {
        let context = self.context(call);
        Ok(self
            .authorizer
            .key(call, action, key, false, &context)?
            .id
            .hyphenated()
            .to_string())
    }

    /// Authorises an action that names no key.
    fn anywhere(&self, call: &CallContext, action: &str) -> Result<(), Status> {
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
    ) -> Result<String, Status> {
        let mut context = self.context(call);
        Authorizer::add_encryption_context(&mut context, encryption_context.pairs());
        call.audit.add_context(encryption_context.pairs());
        Ok(self
            .authorizer
            .key(call, action, key, false, &context)?
            .id
            .hyphenated()
            .to_string())
    }

    /// Authorises an action on the key a ciphertext blob names (unparseable blobs are left to
    /// the operation, which refuses them uniformly).
    fn blob_key(
        &self,
        call: &CallContext,
        action: &str,
        blob: &[u8],
        encryption_context: &EncryptionContext,
    ) -> Result<(), Status> {
        call.audit.add_context(encryption_context.pairs());
        let Ok(parsed) = CiphertextBlob::parse(blob) else {
            return Ok(());
        };
        let mut context = self.context(call);
        Authorizer::add_encryption_context(&mut context, encryption_context.pairs());
        Ok(self
            .authorizer
            .ciphertext_key(call, action, parsed.key_id, &context)?)
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
            encryption_algorithms: match record.spec {
                KeySpec::SymmetricDefault => vec![ALGORITHM.into()],
                _ => Vec::new(),
            },
            last_used_date: last_use.as_ref().map(|u| u.time),
            last_used_operation: last_use.map(|u| u.operation).unwrap_or_default(),
            mac_algorithms: record
                .spec
                .mac_algorithm()
                .map(|a| vec![a.as_str().into()])
                .unwrap_or_default(),
            signing_algorithms: signing_algorithms(record.spec),
        }
    }

    fn arn(&self, id: uuid::Uuid) -> String {
        self.keys.key_arn(id)
    }
}

fn context(map: HashMap<String, String>) -> Result<EncryptionContext, Status> {
    EncryptionContext::from_map(map).map_err(|e| KeyError::Validation(e.to_string()).into())
}

fn tags(tags: Vec<v1::Tag>) -> Result<BTreeMap<String, String>, Status> {
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

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl KeyManagementService for KmsApi {
    async fn create_key(
        &self,
        request: Request<v1::CreateKeyRequest>,
    ) -> Answer<v1::CreateKeyResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        let spec = crate::keys::key_spec_and_usage(&r.key_spec, &r.key_usage)?;
        let mut context = self.context(&call);
        context
            .set("kms:KeySpec", spec.0.as_str())
            .set("kms:KeyUsage", spec.1.as_str());
        self.authorizer
            .require(&call, "kms:CreateKey", "*", None, &context)?;
        let policy = non_empty(&r.policy).map(str::to_owned);
        if let Some(text) = &policy {
            crate::keys::validate_key_policy_size(text)?;
            let parsed = Policy::parse(text, PolicyKind::Resource)
                .map_err(|e| KeyError::MalformedPolicy(e.0))?;
            self.lockout_check(&call, "*", parsed, r.bypass_policy_lockout_safety_check)?;
        }
        let record = self
            .keys
            .create_key_of(
                r.description,
                non_empty(&r.keystore),
                tags(r.tags)?,
                policy,
                spec,
            )
            .await?;
        call.audit.add_key(self.arn(record.id));
        Ok(Response::new(v1::CreateKeyResponse {
            key_metadata: Some(self.metadata(&record)),
        }))
    }

    async fn describe_key(
        &self,
        request: Request<v1::DescribeKeyRequest>,
    ) -> Answer<v1::DescribeKeyResponse> {
        let call = caller(&request)?;
        let context = self.context(&call);
        let record = self.authorizer.key(
            &call,
            "kms:DescribeKey",
            &request.get_ref().key_id,
            true,
            &context,
        )?;
        Ok(Response::new(v1::DescribeKeyResponse {
            key_metadata: Some(self.metadata(&record)),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Answer<v1::ListKeysResponse> {
        let call = caller(&request)?;
        self.anywhere(&call, "kms:ListKeys")?;
        let r = request.get_ref();
        let page = self.keys.list_keys(r.limit, &r.marker)?;
        Ok(Response::new(v1::ListKeysResponse {
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
        }))
    }

    async fn update_key_description(
        &self,
        request: Request<v1::UpdateKeyDescriptionRequest>,
    ) -> Answer<v1::UpdateKeyDescriptionResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        let key = self.key(&call, "kms:UpdateKeyDescription", &r.key_id)?;
        self.keys.update_description(&key, r.description).await?;
        Ok(Response::new(v1::UpdateKeyDescriptionResponse {}))
    }

    async fn enable_key(
        &self,
        request: Request<v1::EnableKeyRequest>,
    ) -> Answer<v1::EnableKeyResponse> {
        let call = caller(&request)?;
        let key = self.key(&call, "kms:EnableKey", &request.get_ref().key_id)?;
        self.keys.enable_key(&key).await?;
        Ok(Response::new(v1::EnableKeyResponse {}))
    }

    async fn disable_key(
        &self,
        request: Request<v1::DisableKeyRequest>,
    ) -> Answer<v1::DisableKeyResponse> {
        let call = caller(&request)?;
        let key = self.key(&call, "kms:DisableKey", &request.get_ref().key_id)?;
        self.keys.disable_key(&key).await?;
        Ok(Response::new(v1::DisableKeyResponse {}))
    }

    async fn schedule_key_deletion(
        &self,
        request: Request<v1::ScheduleKeyDeletionRequest>,
    ) -> Answer<v1::ScheduleKeyDeletionResponse> {
        let call = caller(&request)?;
        let r = request.get_ref();
        let key = self.key(&call, "kms:ScheduleKeyDeletion", &r.key_id)?;
        let record = self
            .keys
            .schedule_deletion(&key, r.pending_window_in_days)
            .await?;
        Ok(Response::new(v1::ScheduleKeyDeletionResponse {
            key_id: self.arn(record.id),
            deletion_date: record.deletion_date.unwrap_or_default(),
            key_state: v1::KeyState::PendingDeletion as i32,
            pending_window_in_days: record.pending_window_days.unwrap_or_default(),
        }))
    }

    async fn cancel_key_deletion(
        &self,
        request: Request<v1::CancelKeyDeletionRequest>,
    ) -> Answer<v1::CancelKeyDeletionResponse> {
        let call = caller(&request)?;
        let key = self.key(&call, "kms:CancelKeyDeletion", &request.get_ref().key_id)?;
        let record = self.keys.cancel_deletion(&key).await?;
        Ok(Response::new(v1::CancelKeyDeletionResponse {
            key_id: self.arn(record.id),
        }))
    }

    async fn create_alias(
        &self,
        request: Request<v1::CreateAliasRequest>,
    ) -> Answer<v1::CreateAliasResponse> {
        let call = caller(&request)?;
        let r = request.get_ref();
        // The alias by the caller's identity policies, the key by its key policy (as AWS).
        self.alias(&call, "kms:CreateAlias", &r.alias_name)?;
        let key = self.alias_target(&call, "kms:CreateAlias", &r.target_key_id)?;
        self.keys.create_alias(&r.alias_name, &key).await?;
        Ok(Response::new(v1::CreateAliasResponse {}))
    }

    async fn update_alias(
        &self,
        request: Request<v1::UpdateAliasRequest>,
    ) -> Answer<v1::UpdateAliasResponse> {
        let call = caller(&request)?;
        let r = request.get_ref();
        // The alias itself, then both the key it leaves and the key it joins must allow it.
        self.alias(&call, "kms:UpdateAlias", &r.alias_name)?;
        let mut from = self.alias_key(&call, "kms:UpdateAlias", &r.alias_name)?;
        let key = self.alias_target(&call, "kms:UpdateAlias", &r.target_key_id)?;
        for _ in 0..ALIAS_ATTEMPTS {
            if self.keys.update_alias(&r.alias_name, &key, from).await? {
                return Ok(Response::new(v1::UpdateAliasResponse {}));
            }
            from = self.alias_key(&call, "kms:UpdateAlias", &r.alias_name)?;
        }
        Err(alias_kept_moving(&r.alias_name))
    }

    async fn delete_alias(
        &self,
        request: Request<v1::DeleteAliasRequest>,
    ) -> Answer<v1::DeleteAliasResponse> {
        let call = caller(&request)?;
        let alias = &request.get_ref().alias_name;
        self.alias(&call, "kms:DeleteAlias", alias)?;
        for _ in 0..ALIAS_ATTEMPTS {
            let from = self.alias_key(&call, "kms:DeleteAlias", alias)?;
            if self.keys.delete_alias(alias, from).await? {
                return Ok(Response::new(v1::DeleteAliasResponse {}));
            }
        }
        Err(alias_kept_moving(alias))
    }

    async fn list_aliases(
        &self,
        request: Request<v1::ListAliasesRequest>,
    ) -> Answer<v1::ListAliasesResponse> {
        let call = caller(&request)?;
        self.anywhere(&call, "kms:ListAliases")?;
        let r = request.get_ref();
        // A key named here is authorised as any key is, before it is looked up: whether it
        // exists is told only to callers allowed on it.
        let key = match non_empty(&r.key_id) {
            Some(key) => Some(self.key(&call, "kms:ListAliases", key)?),
            None => None,
        };
        let page = self.keys.list_aliases(key.as_deref(), r.limit, &r.marker)?;
        Ok(Response::new(v1::ListAliasesResponse {
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
        }))
    }

    async fn tag_resource(
        &self,
        request: Request<v1::TagResourceRequest>,
    ) -> Answer<v1::TagResourceResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        let key = self.key(&call, "kms:TagResource", &r.key_id)?;
        self.keys.tag_key(&key, tags(r.tags)?).await?;
        Ok(Response::new(v1::TagResourceResponse {}))
    }

    async fn untag_resource(
        &self,
        request: Request<v1::UntagResourceRequest>,
    ) -> Answer<v1::UntagResourceResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        let key = self.key(&call, "kms:UntagResource", &r.key_id)?;
        self.keys.untag_key(&key, r.tag_keys).await?;
        Ok(Response::new(v1::UntagResourceResponse {}))
    }

    async fn list_resource_tags(
        &self,
        request: Request<v1::ListResourceTagsRequest>,
    ) -> Answer<v1::ListResourceTagsResponse> {
        let call = caller(&request)?;
        let key = self.key(&call, "kms:ListResourceTags", &request.get_ref().key_id)?;
        let tags = self.keys.list_tags(&key)?;
        Ok(Response::new(v1::ListResourceTagsResponse {
            tags: tags
                .into_iter()
                .map(|(tag_key, tag_value)| v1::Tag { tag_key, tag_value })
                .collect(),
        }))
    }

    async fn rotate_key_on_demand(
        &self,
        request: Request<v1::RotateKeyOnDemandRequest>,
    ) -> Answer<v1::RotateKeyOnDemandResponse> {
        let call = caller(&request)?;
        let key = self.key(&call, "kms:RotateKeyOnDemand", &request.get_ref().key_id)?;
        let record = self.keys.rotate_key(&key).await?;
        Ok(Response::new(v1::RotateKeyOnDemandResponse {
            key_id: self.arn(record.id),
            key_version: record.current_version(),
        }))
    }

    async fn enable_key_rotation(
        &self,
        request: Request<v1::EnableKeyRotationRequest>,
    ) -> Answer<v1::EnableKeyRotationResponse> {
        let call = caller(&request)?;
        let r = request.get_ref();
        let key = self.key(&call, "kms:EnableKeyRotation", &r.key_id)?;
        self.keys
            .enable_rotation(&key, r.rotation_period_in_days)
            .await?;
        Ok(Response::new(v1::EnableKeyRotationResponse {}))
    }

    async fn disable_key_rotation(
        &self,
        request: Request<v1::DisableKeyRotationRequest>,
    ) -> Answer<v1::DisableKeyRotationResponse> {
        let call = caller(&request)?;
        let key = self.key(&call, "kms:DisableKeyRotation", &request.get_ref().key_id)?;
        self.keys.disable_rotation(&key).await?;
        Ok(Response::new(v1::DisableKeyRotationResponse {}))
    }

    async fn get_key_rotation_status(
        &self,
        request: Request<v1::GetKeyRotationStatusRequest>,
    ) -> Answer<v1::GetKeyRotationStatusResponse> {
        let call = caller(&request)?;
        let key = self.key(&call, "kms:GetKeyRotationStatus", &request.get_ref().key_id)?;
        let record = self.keys.rotation_status(&key)?;
        Ok(Response::new(v1::GetKeyRotationStatusResponse {
            key_id: self.arn(record.id),
            key_rotation_enabled: record.rotation.enabled,
            rotation_period_in_days: record.rotation.period_days,
            next_rotation_date: record.rotation.next_rotation,
        }))
    }

    async fn list_key_rotations(
        &self,
        request: Request<v1::ListKeyRotationsRequest>,
    ) -> Answer<v1::ListKeyRotationsResponse> {
        let call = caller(&request)?;
        let key = self.key(&call, "kms:ListKeyRotations", &request.get_ref().key_id)?;
        let record = self.keys.rotation_status(&key)?;
        Ok(Response::new(v1::ListKeyRotationsResponse {
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
        }))
    }

    async fn get_key_policy(
        &self,
        request: Request<v1::GetKeyPolicyRequest>,
    ) -> Answer<v1::GetKeyPolicyResponse> {
        let call = caller(&request)?;
        let r = request.get_ref();
        policy_name(&r.policy_name)?;
        let key = self.key(&call, "kms:GetKeyPolicy", &r.key_id)?;
        Ok(Response::new(v1::GetKeyPolicyResponse {
            policy: self.keys.get_key_policy(&key)?,
            policy_name: "default".into(),
        }))
    }

    async fn put_key_policy(
        &self,
        request: Request<v1::PutKeyPolicyRequest>,
    ) -> Answer<v1::PutKeyPolicyResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        policy_name(&r.policy_name)?;
        let key = self.key(&call, "kms:PutKeyPolicy", &r.key_id)?;
        crate::keys::validate_key_policy_size(&r.policy)?;
        let parsed = Policy::parse(&r.policy, PolicyKind::Resource)
            .map_err(|e| KeyError::MalformedPolicy(e.0))?;
        let arn = self.keys.key_arn(self.keys.resolve_id(&key)?);
        self.lockout_check(&call, &arn, parsed, r.bypass_policy_lockout_safety_check)?;
        self.keys.put_key_policy(&key, r.policy).await?;
        Ok(Response::new(v1::PutKeyPolicyResponse {}))
    }

    async fn encrypt(&self, request: Request<v1::EncryptRequest>) -> Answer<v1::EncryptResponse> {
        let call = caller(&request)?;
        let mut r = request.into_inner();
        let result = async {
            let context = context(std::mem::take(&mut r.encryption_context))?;
            let key = self.crypto_key(&call, "kms:Encrypt", &r.key_id, &context)?;
            Ok::<_, Status>(self.keys.encrypt(&key, &r.plaintext, &context).await?)
        }
        .await;
        r.plaintext.zeroize();
        let (blob, id) = result?;
        Ok(Response::new(v1::EncryptResponse {
            ciphertext_blob: blob,
            key_id: self.arn(id),
            encryption_algorithm: ALGORITHM.into(),
        }))
    }

    async fn decrypt(&self, request: Request<v1::DecryptRequest>) -> Answer<v1::DecryptResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        let context = context(r.encryption_context)?;
        self.blob_key(&call, "kms:Decrypt", &r.ciphertext_blob, &context)?;
        let expected = self.expected_key(&call, "kms:Decrypt", &r.key_id, &context)?;
        let decrypted = self
            .keys
            .decrypt(&r.ciphertext_blob, &context, expected.as_deref())
            .await?;
        Ok(Response::new(v1::DecryptResponse {
            key_id: self.arn(decrypted.key_id),
            plaintext: decrypted.plaintext.into_bytes(),
            encryption_algorithm: ALGORITHM.into(),
        }))
    }

    async fn re_encrypt(
        &self,
        request: Request<v1::ReEncryptRequest>,
    ) -> Answer<v1::ReEncryptResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        let source_context = context(r.source_encryption_context)?;
        let destination_context = context(r.destination_encryption_context)?;
        self.blob_key(
            &call,
            "kms:ReEncryptFrom",
            &r.ciphertext_blob,
            &source_context,
        )?;
        let source = self.expected_key(
            &call,
            "kms:ReEncryptFrom",
            &r.source_key_id,
            &source_context,
        )?;
        let destination = self.crypto_key(
            &call,
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
        Ok(Response::new(v1::ReEncryptResponse {
            ciphertext_blob: blob,
            source_key_id: self.arn(source),
            key_id: self.arn(destination),
        }))
    }

    async fn generate_data_key(
        &self,
        request: Request<v1::GenerateDataKeyRequest>,
    ) -> Answer<v1::GenerateDataKeyResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        let context = context(r.encryption_context)?;
        let key = self.crypto_key(&call, "kms:GenerateDataKey", &r.key_id, &context)?;
        let size = DataKeySize::from_request(&r.key_spec, r.number_of_bytes)?;
        let (plaintext, blob, id) = self.keys.generate_data_key(&key, size, &context).await?;
        Ok(Response::new(v1::GenerateDataKeyResponse {
            ciphertext_blob: blob,
            plaintext: plaintext.into_bytes(),
            key_id: self.arn(id),
        }))
    }

    async fn generate_data_key_without_plaintext(
        &self,
        request: Request<v1::GenerateDataKeyWithoutPlaintextRequest>,
    ) -> Answer<v1::GenerateDataKeyWithoutPlaintextResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        let context = context(r.encryption_context)?;
        let key = self.crypto_key(
            &call,
            "kms:GenerateDataKeyWithoutPlaintext",
            &r.key_id,
            &context,
        )?;
        let size = DataKeySize::from_request(&r.key_spec, r.number_of_bytes)?;
        let (_plaintext, blob, id) = self.keys.generate_data_key(&key, size, &context).await?;
        Ok(Response::new(v1::GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: blob,
            key_id: self.arn(id),
        }))
    }

    async fn generate_random(
        &self,
        request: Request<v1::GenerateRandomRequest>,
    ) -> Answer<v1::GenerateRandomResponse> {
        let call = caller(&request)?;
        self.anywhere(&call, "kms:GenerateRandom")?;
        let bytes = self
            .keys
            .generate_random(request.get_ref().number_of_bytes)?;
        Ok(Response::new(v1::GenerateRandomResponse {
            plaintext: bytes.into_bytes(),
        }))
    }

    async fn list_orphaned_key_material(
        &self,
        request: Request<v1::ListOrphanedKeyMaterialRequest>,
    ) -> Answer<v1::ListOrphanedKeyMaterialResponse> {
        let call = caller(&request)?;
        self.anywhere(&call, "kms:ListOrphanedKeyMaterial")?;
        let orphans = self.keys.orphans().await?;
        Ok(Response::new(v1::ListOrphanedKeyMaterialResponse {
            orphans: orphans.iter().map(orphan).collect(),
        }))
    }

    async fn destroy_orphaned_key_material(
        &self,
        request: Request<v1::DestroyOrphanedKeyMaterialRequest>,
    ) -> Answer<v1::DestroyOrphanedKeyMaterialResponse> {
        let call = caller(&request)?;
        let r = request.into_inner();
        let key_id = uuid::Uuid::try_parse(&r.key_id).map_err(|_| {
            KeyError::Validation(format!(
                "KeyId must be a key id (a UUID); got '{}'",
                crate::keys::printable_input(&r.key_id)
            ))
        })?;
        // The material's key is named in the audit record whether or not the call is allowed.
        call.audit.add_key(self.arn(key_id));
        self.anywhere(&call, "kms:DestroyOrphanedKeyMaterial")?;
        let destroyed = self
            .keys
            .destroy_orphan(&r.keystore, key_id, r.key_version)
            .await?;
        Ok(Response::new(v1::DestroyOrphanedKeyMaterialResponse {
            destroyed: Some(orphan(&destroyed)),
        }))
    }

    async fn generate_mac(
        &self,
        request: Request<v1::GenerateMacRequest>,
    ) -> Answer<v1::GenerateMacResponse> {
        let call = caller(&request)?;
        let mut r = request.into_inner();
        let result = async {
            let (key, algorithm) =
                mac_key(self, &call, "kms:GenerateMac", &r.key_id, &r.mac_algorithm)?;
            let answer = self.keys.generate_mac(&key, &r.message, algorithm).await?;
            Ok::<_, Status>((answer, algorithm))
        }
        .await;
        r.message.zeroize();
        let (answer, algorithm) = result?;
        Ok(Response::new(v1::GenerateMacResponse {
            mac: answer.mac,
            mac_algorithm: algorithm.as_str().into(),
            key_id: self.arn(answer.key_id),
        }))
    }

    async fn verify_mac(
        &self,
        request: Request<v1::VerifyMacRequest>,
    ) -> Answer<v1::VerifyMacResponse> {
        let call = caller(&request)?;
        let mut r = request.into_inner();
        let result = async {
            let (key, algorithm) =
                mac_key(self, &call, "kms:VerifyMac", &r.key_id, &r.mac_algorithm)?;
            let id = self
                .keys
                .verify_mac(&key, &r.message, algorithm, &r.mac)
                .await?;
            Ok::<_, Status>((id, algorithm))
        }
        .await;
        r.message.zeroize();
        let (id, algorithm) = result?;
        Ok(Response::new(v1::VerifyMacResponse {
            key_id: self.arn(id),
            mac_valid: true,
            mac_algorithm: algorithm.as_str().into(),
        }))
    }

    async fn sign(&self, request: Request<v1::SignRequest>) -> Answer<v1::SignResponse> {
        let call = caller(&request)?;
        let mut r = request.into_inner();
        let result = async {
            let s = signing_key(
                self,
                &call,
                "kms:Sign",
                &r.key_id,
                &r.signing_algorithm,
                &r.message_type,
            )?;
            Ok::<_, Status>(
                self.keys
                    .sign(&s.key, &r.message, s.message_type, s.algorithm)
                    .await?,
            )
        }
        .await;
        r.message.zeroize();
        let signed = result?;
        Ok(Response::new(v1::SignResponse {
            key_id: self.arn(signed.key_id),
            signature: signed.signature,
            signing_algorithm: r.signing_algorithm,
        }))
    }

    async fn verify(&self, request: Request<v1::VerifyRequest>) -> Answer<v1::VerifyResponse> {
        let call = caller(&request)?;
        let mut r = request.into_inner();
        let result = async {
            let s = signing_key(
                self,
                &call,
                "kms:Verify",
                &r.key_id,
                &r.signing_algorithm,
                &r.message_type,
            )?;
            Ok::<_, Status>(
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
        Ok(Response::new(v1::VerifyResponse {
            key_id: self.arn(id),
            signature_valid: true,
            signing_algorithm: r.signing_algorithm,
        }))
    }

    async fn get_public_key(
        &self,
        request: Request<v1::GetPublicKeyRequest>,
    ) -> Answer<v1::GetPublicKeyResponse> {
        let call = caller(&request)?;
        let key = self.key(&call, "kms:GetPublicKey", &request.get_ref().key_id)?;
        let public = self.keys.get_public_key(&key).await?;
        Ok(Response::new(v1::GetPublicKeyResponse {
            key_id: self.arn(public.key_id),
            public_key: public.der,
            key_spec: public.spec.as_str().into(),
            key_usage: public.usage.as_str().into(),
            signing_algorithms: signing_algorithms(public.spec),
            encryption_algorithms: Vec::new(),
        }))
    }
}

fn signing_algorithms(spec: KeySpec) -> Vec<String> {
    spec.signing_algorithms()
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect()
}

/// Authorises a Sign or Verify on a key, with the `kms:SigningAlgorithm` and
/// `kms:MessageType` condition keys.
fn signing_key(
    api: &KmsApi,
    call: &CallContext,
    action: &str,
    key: &str,
    algorithm: &str,
    message_type: &str,
) -> Result<SigningRequest, Status> {
    let algorithm_name = algorithm;
    let algorithm = crate::keys::signing_algorithm(algorithm)?;
    let message_type = crate::keys::MessageType::parse(message_type)?;
    let mut context = api.context(call);
    context
        .set("kms:SigningAlgorithm", algorithm_name)
        .set("kms:MessageType", message_type.as_str());
    let record = api.authorizer.key(call, action, key, false, &context)?;
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
    api: &KmsApi,
    call: &CallContext,
    action: &str,
    key: &str,
    algorithm: &str,
) -> Result<(String, crate::keys::MacAlgorithm), Status> {
    let algorithm = crate::keys::mac_algorithm(algorithm)?;
    let mut context = api.context(call);
    context.set("kms:MacAlgorithm", algorithm.as_str());
    let record = api.authorizer.key(call, action, key, false, &context)?;
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

fn alias_kept_moving(alias: &str) -> Status {
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

impl KmsApi {
    /// Authorises an alias action on the alias name (after checking the name, which tells
    /// nothing of what exists).
    fn alias(&self, call: &CallContext, action: &str, alias: &str) -> Result<(), Status> {
        crate::keys::validate_alias_name(alias)?;
        let context = self.context(call);
        Ok(self.authorizer.alias(call, action, alias, &context)?)
    }

    /// The key an alias points at now, authorised for `action`: the change is then made only
    /// if the alias still points at it.
    fn alias_key(&self, call: &CallContext, action: &str, alias: &str) -> Result<Uuid, Status> {
        let context = self.context(call);
        Ok(self
            .authorizer
            .key(call, action, alias, false, &context)?
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
    ) -> Result<Option<String>, Status> {
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
    ) -> Result<String, Status> {
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
    ) -> Result<(), Status> {
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
