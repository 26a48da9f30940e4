//! `keyhaven.v1.KeyManagementService`: each gRPC method is a conversion onto the
//! transport-neutral [`KmsOperations`]: the authenticated call's context from the request's
//! extensions, the message in, the answer or the mapped error out.
//!
//! Grant tokens travel beside the message, as `x-keyhaven-grant-token` metadata (one entry per
//! token; the messages, shared with the AWS door, carry them only on CreateGrant): every one is
//! checked before the operation, as the AWS door checks `GrantTokens`.

use super::accounts::Accounts;
use super::call_context as caller;
use crate::proto::v1::{self, key_management_service_server::KeyManagementService};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The gRPC face of the key service.
#[derive(Clone)]
pub struct KmsApi {
    accounts: Arc<Accounts>,
}

impl KmsApi {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Self { accounts }
    }
}

/// The metadata entry a grant token travels in, on any KMS call.
pub const GRANT_TOKEN_METADATA: &str = "x-keyhaven-grant-token";

/// The grant tokens a call's metadata carries (an entry that is not text is kept as a token
/// that no grant has, so that it is refused rather than ignored).
fn grant_tokens(metadata: &tonic::metadata::MetadataMap) -> Vec<String> {
    metadata
        .get_all(GRANT_TOKEN_METADATA)
        .iter()
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .collect()
}

/// The trait's methods, each the same steps onto the operation of its name.
macro_rules! grpc_methods {
    ($($name:ident: $request:ident => $response:ident,)*) => {
        #[tonic::async_trait]
        impl KeyManagementService for KmsApi {
            $(
                async fn $name(
                    &self,
                    request: Request<v1::$request>,
                ) -> Result<Response<v1::$response>, Status> {
                    let call = caller(&request)?;
                    let tokens = grant_tokens(request.metadata());
                    let request = request.into_inner();
                    let account = self.accounts.for_request(&call, &request).await?;
                    account.kms.accept_grant_tokens(&call, &tokens).await?;
                    let answer = account.kms.$name(&call, request).await?;
                    Ok(Response::new(answer))
                }
            )*
        }
    };
}

grpc_methods! {
    create_key: CreateKeyRequest => CreateKeyResponse,
    describe_key: DescribeKeyRequest => DescribeKeyResponse,
    list_keys: ListKeysRequest => ListKeysResponse,
    update_key_description: UpdateKeyDescriptionRequest => UpdateKeyDescriptionResponse,
    enable_key: EnableKeyRequest => EnableKeyResponse,
    disable_key: DisableKeyRequest => DisableKeyResponse,
    schedule_key_deletion: ScheduleKeyDeletionRequest => ScheduleKeyDeletionResponse,
    cancel_key_deletion: CancelKeyDeletionRequest => CancelKeyDeletionResponse,
    create_alias: CreateAliasRequest => CreateAliasResponse,
    update_alias: UpdateAliasRequest => UpdateAliasResponse,
    delete_alias: DeleteAliasRequest => DeleteAliasResponse,
    list_aliases: ListAliasesRequest => ListAliasesResponse,
    tag_resource: TagResourceRequest => TagResourceResponse,
    untag_resource: UntagResourceRequest => UntagResourceResponse,
    list_resource_tags: ListResourceTagsRequest => ListResourceTagsResponse,
    rotate_key_on_demand: RotateKeyOnDemandRequest => RotateKeyOnDemandResponse,
    enable_key_rotation: EnableKeyRotationRequest => EnableKeyRotationResponse,
    disable_key_rotation: DisableKeyRotationRequest => DisableKeyRotationResponse,
    get_key_rotation_status: GetKeyRotationStatusRequest => GetKeyRotationStatusResponse,
    list_key_rotations: ListKeyRotationsRequest => ListKeyRotationsResponse,
    get_key_policy: GetKeyPolicyRequest => GetKeyPolicyResponse,
    put_key_policy: PutKeyPolicyRequest => PutKeyPolicyResponse,
    encrypt: EncryptRequest => EncryptResponse,
    decrypt: DecryptRequest => DecryptResponse,
    re_encrypt: ReEncryptRequest => ReEncryptResponse,
    generate_data_key: GenerateDataKeyRequest => GenerateDataKeyResponse,
    generate_data_key_without_plaintext: GenerateDataKeyWithoutPlaintextRequest => GenerateDataKeyWithoutPlaintextResponse,
    generate_random: GenerateRandomRequest => GenerateRandomResponse,
    list_orphaned_key_material: ListOrphanedKeyMaterialRequest => ListOrphanedKeyMaterialResponse,
    destroy_orphaned_key_material: DestroyOrphanedKeyMaterialRequest => DestroyOrphanedKeyMaterialResponse,
    generate_mac: GenerateMacRequest => GenerateMacResponse,
    verify_mac: VerifyMacRequest => VerifyMacResponse,
    sign: SignRequest => SignResponse,
    verify: VerifyRequest => VerifyResponse,
    get_public_key: GetPublicKeyRequest => GetPublicKeyResponse,
    create_grant: CreateGrantRequest => CreateGrantResponse,
    list_grants: ListGrantsRequest => ListGrantsResponse,
    list_retirable_grants: ListRetirableGrantsRequest => ListGrantsResponse,
    retire_grant: RetireGrantRequest => RetireGrantResponse,
    revoke_grant: RevokeGrantRequest => RevokeGrantResponse,
    derive_shared_secret: DeriveSharedSecretRequest => DeriveSharedSecretResponse,
    generate_data_key_pair: GenerateDataKeyPairRequest => GenerateDataKeyPairResponse,
    generate_data_key_pair_without_plaintext: GenerateDataKeyPairWithoutPlaintextRequest => GenerateDataKeyPairWithoutPlaintextResponse,
    get_parameters_for_import: GetParametersForImportRequest => GetParametersForImportResponse,
    import_key_material: ImportKeyMaterialRequest => ImportKeyMaterialResponse,
    delete_imported_key_material: DeleteImportedKeyMaterialRequest => DeleteImportedKeyMaterialResponse,
    encrypt_batch: EncryptBatchRequest => EncryptBatchResponse,
    decrypt_batch: DecryptBatchRequest => DecryptBatchResponse,
    generate_data_key_batch: GenerateDataKeyBatchRequest => GenerateDataKeyBatchResponse,
    list_approval_requests: ListApprovalRequestsRequest => ListApprovalRequestsResponse,
    get_approval_request: GetApprovalRequestRequest => GetApprovalRequestResponse,
    approve_request: ApproveRequestRequest => ApproveRequestResponse,
    reject_request: RejectRequestRequest => RejectRequestResponse,
    get_approval_settings: GetApprovalSettingsRequest => GetApprovalSettingsResponse,
    put_approval_settings: PutApprovalSettingsRequest => PutApprovalSettingsResponse,
}
