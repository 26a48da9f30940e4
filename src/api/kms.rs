//! `keyhaven.v1.KeyManagementService`: each handler takes the authenticated caller, turns the
//! request into domain values, calls the [`KeyService`] and turns the answer back.

use crate::auth::Caller;
use crate::crypto::EncryptionContext;
use crate::keys::{DataKeySize, KeyError, KeyRecord, KeyService, KeyState};
use crate::proto::v1::{self, key_management_service_server::KeyManagementService};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use zeroize::Zeroize;

const ALGORITHM: &str = "SYMMETRIC_DEFAULT";

/// The gRPC face of the key service.
#[derive(Clone)]
pub struct KmsApi {
    keys: Arc<KeyService>,
}

impl KmsApi {
    pub fn new(keys: Arc<KeyService>) -> Self {
        Self { keys }
    }

    fn metadata(&self, record: &KeyRecord) -> v1::KeyMetadata {
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
            key_usage: "ENCRYPT_DECRYPT".into(),
            key_spec: ALGORITHM.into(),
            origin: record.origin.clone(),
            key_manager: "CUSTOMER".into(),
            keystore: record.keystore.clone(),
            current_key_version: record.current_version(),
            encryption_algorithms: vec![ALGORITHM.into()],
        }
    }

    fn arn(&self, id: uuid::Uuid) -> String {
        self.keys.key_arn(id)
    }
}

/// The authenticated caller the auth layer attached.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("request was not authenticated"))
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

fn validate_spec(key_spec: &str, key_usage: &str) -> Result<(), KeyError> {
    if !matches!(key_spec, "" | "SYMMETRIC_DEFAULT") {
        return Err(KeyError::Validation(format!(
            "KeySpec '{key_spec}' is not supported; only SYMMETRIC_DEFAULT"
        )));
    }
    if !matches!(key_usage, "" | "ENCRYPT_DECRYPT") {
        return Err(KeyError::Validation(format!(
            "KeyUsage '{key_usage}' is not supported; only ENCRYPT_DECRYPT"
        )));
    }
    Ok(())
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl KeyManagementService for KmsApi {
    async fn create_key(
        &self,
        request: Request<v1::CreateKeyRequest>,
    ) -> Answer<v1::CreateKeyResponse> {
        let _caller = caller(&request)?;
        let r = request.into_inner();
        validate_spec(&r.key_spec, &r.key_usage)?;
        let record = self
            .keys
            .create_key(
                r.description,
                non_empty(&r.keystore),
                tags(r.tags)?,
                non_empty(&r.policy).map(str::to_owned),
            )
            .await?;
        Ok(Response::new(v1::CreateKeyResponse {
            key_metadata: Some(self.metadata(&record)),
        }))
    }

    async fn describe_key(
        &self,
        request: Request<v1::DescribeKeyRequest>,
    ) -> Answer<v1::DescribeKeyResponse> {
        let _caller = caller(&request)?;
        let record = self.keys.describe_key(&request.get_ref().key_id)?;
        Ok(Response::new(v1::DescribeKeyResponse {
            key_metadata: Some(self.metadata(&record)),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Answer<v1::ListKeysResponse> {
        let _caller = caller(&request)?;
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
        let _caller = caller(&request)?;
        let r = request.into_inner();
        self.keys
            .update_description(&r.key_id, r.description)
            .await?;
        Ok(Response::new(v1::UpdateKeyDescriptionResponse {}))
    }

    async fn enable_key(
        &self,
        request: Request<v1::EnableKeyRequest>,
    ) -> Answer<v1::EnableKeyResponse> {
        let _caller = caller(&request)?;
        self.keys.enable_key(&request.get_ref().key_id).await?;
        Ok(Response::new(v1::EnableKeyResponse {}))
    }

    async fn disable_key(
        &self,
        request: Request<v1::DisableKeyRequest>,
    ) -> Answer<v1::DisableKeyResponse> {
        let _caller = caller(&request)?;
        self.keys.disable_key(&request.get_ref().key_id).await?;
        Ok(Response::new(v1::DisableKeyResponse {}))
    }

    async fn schedule_key_deletion(
        &self,
        request: Request<v1::ScheduleKeyDeletionRequest>,
    ) -> Answer<v1::ScheduleKeyDeletionResponse> {
        let _caller = caller(&request)?;
        let r = request.get_ref();
        let record = self
            .keys
            .schedule_deletion(&r.key_id, r.pending_window_in_days)
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
        let _caller = caller(&request)?;
        let record = self.keys.cancel_deletion(&request.get_ref().key_id).await?;
        Ok(Response::new(v1::CancelKeyDeletionResponse {
            key_id: self.arn(record.id),
        }))
    }

    async fn create_alias(
        &self,
        request: Request<v1::CreateAliasRequest>,
    ) -> Answer<v1::CreateAliasResponse> {
        let _caller = caller(&request)?;
        let r = request.get_ref();
        self.keys
            .create_alias(&r.alias_name, &r.target_key_id)
            .await?;
        Ok(Response::new(v1::CreateAliasResponse {}))
    }

    async fn update_alias(
        &self,
        request: Request<v1::UpdateAliasRequest>,
    ) -> Answer<v1::UpdateAliasResponse> {
        let _caller = caller(&request)?;
        let r = request.get_ref();
        self.keys
            .update_alias(&r.alias_name, &r.target_key_id)
            .await?;
        Ok(Response::new(v1::UpdateAliasResponse {}))
    }

    async fn delete_alias(
        &self,
        request: Request<v1::DeleteAliasRequest>,
    ) -> Answer<v1::DeleteAliasResponse> {
        let _caller = caller(&request)?;
        self.keys
            .delete_alias(&request.get_ref().alias_name)
            .await?;
        Ok(Response::new(v1::DeleteAliasResponse {}))
    }

    async fn list_aliases(
        &self,
        request: Request<v1::ListAliasesRequest>,
    ) -> Answer<v1::ListAliasesResponse> {
        let _caller = caller(&request)?;
        let r = request.get_ref();
        let page = self
            .keys
            .list_aliases(non_empty(&r.key_id), r.limit, &r.marker)?;
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
        let _caller = caller(&request)?;
        let r = request.into_inner();
        self.keys.tag_key(&r.key_id, tags(r.tags)?).await?;
        Ok(Response::new(v1::TagResourceResponse {}))
    }

    async fn untag_resource(
        &self,
        request: Request<v1::UntagResourceRequest>,
    ) -> Answer<v1::UntagResourceResponse> {
        let _caller = caller(&request)?;
        let r = request.into_inner();
        self.keys.untag_key(&r.key_id, r.tag_keys).await?;
        Ok(Response::new(v1::UntagResourceResponse {}))
    }

    async fn list_resource_tags(
        &self,
        request: Request<v1::ListResourceTagsRequest>,
    ) -> Answer<v1::ListResourceTagsResponse> {
        let _caller = caller(&request)?;
        let tags = self.keys.list_tags(&request.get_ref().key_id)?;
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
        let _caller = caller(&request)?;
        let record = self.keys.rotate_key(&request.get_ref().key_id).await?;
        Ok(Response::new(v1::RotateKeyOnDemandResponse {
            key_id: self.arn(record.id),
            key_version: record.current_version(),
        }))
    }

    async fn enable_key_rotation(
        &self,
        request: Request<v1::EnableKeyRotationRequest>,
    ) -> Answer<v1::EnableKeyRotationResponse> {
        let _caller = caller(&request)?;
        let r = request.get_ref();
        self.keys
            .enable_rotation(&r.key_id, r.rotation_period_in_days)
            .await?;
        Ok(Response::new(v1::EnableKeyRotationResponse {}))
    }

    async fn disable_key_rotation(
        &self,
        request: Request<v1::DisableKeyRotationRequest>,
    ) -> Answer<v1::DisableKeyRotationResponse> {
        let _caller = caller(&request)?;
        self.keys
            .disable_rotation(&request.get_ref().key_id)
            .await?;
        Ok(Response::new(v1::DisableKeyRotationResponse {}))
    }

    async fn get_key_rotation_status(
        &self,
        request: Request<v1::GetKeyRotationStatusRequest>,
    ) -> Answer<v1::GetKeyRotationStatusResponse> {
        let _caller = caller(&request)?;
        let record = self.keys.rotation_status(&request.get_ref().key_id)?;
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
        let _caller = caller(&request)?;
        let record = self.keys.rotation_status(&request.get_ref().key_id)?;
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

    async fn encrypt(&self, request: Request<v1::EncryptRequest>) -> Answer<v1::EncryptResponse> {
        let _caller = caller(&request)?;
        let mut r = request.into_inner();
        let result = async {
            let context = context(std::mem::take(&mut r.encryption_context))?;
            Ok::<_, Status>(self.keys.encrypt(&r.key_id, &r.plaintext, &context).await?)
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
        let _caller = caller(&request)?;
        let r = request.into_inner();
        let context = context(r.encryption_context)?;
        let decrypted = self
            .keys
            .decrypt(&r.ciphertext_blob, &context, non_empty(&r.key_id))
            .await?;
        Ok(Response::new(v1::DecryptResponse {
            key_id: self.arn(decrypted.key_id),
            plaintext: decrypted.plaintext.expose().clone(),
            encryption_algorithm: ALGORITHM.into(),
        }))
    }

    async fn re_encrypt(
        &self,
        request: Request<v1::ReEncryptRequest>,
    ) -> Answer<v1::ReEncryptResponse> {
        let _caller = caller(&request)?;
        let r = request.into_inner();
        let source_context = context(r.source_encryption_context)?;
        let destination_context = context(r.destination_encryption_context)?;
        let (blob, source, destination) = self
            .keys
            .re_encrypt(
                &r.ciphertext_blob,
                &source_context,
                non_empty(&r.source_key_id),
                &r.destination_key_id,
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
        let _caller = caller(&request)?;
        let r = request.into_inner();
        let size = DataKeySize::from_request(&r.key_spec, r.number_of_bytes)?;
        let context = context(r.encryption_context)?;
        let (plaintext, blob, id) = self
            .keys
            .generate_data_key(&r.key_id, size, &context)
            .await?;
        Ok(Response::new(v1::GenerateDataKeyResponse {
            ciphertext_blob: blob,
            plaintext: plaintext.expose().clone(),
            key_id: self.arn(id),
        }))
    }

    async fn generate_data_key_without_plaintext(
        &self,
        request: Request<v1::GenerateDataKeyWithoutPlaintextRequest>,
    ) -> Answer<v1::GenerateDataKeyWithoutPlaintextResponse> {
        let _caller = caller(&request)?;
        let r = request.into_inner();
        let size = DataKeySize::from_request(&r.key_spec, r.number_of_bytes)?;
        let context = context(r.encryption_context)?;
        let (_plaintext, blob, id) = self
            .keys
            .generate_data_key(&r.key_id, size, &context)
            .await?;
        Ok(Response::new(v1::GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: blob,
            key_id: self.arn(id),
        }))
    }

    async fn generate_random(
        &self,
        request: Request<v1::GenerateRandomRequest>,
    ) -> Answer<v1::GenerateRandomResponse> {
        let _caller = caller(&request)?;
        let bytes = self
            .keys
            .generate_random(request.get_ref().number_of_bytes)?;
        Ok(Response::new(v1::GenerateRandomResponse {
            plaintext: bytes.expose().clone(),
        }))
    }
}
