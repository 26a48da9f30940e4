//! `keyhaven.v1.KeyManagementService`: each gRPC method is a conversion onto the
//! transport-neutral [`KmsOperations`]: the authenticated call's context from the request's
//! extensions, the message in, the answer or the mapped error out.

use super::call_context as caller;
use super::operations::KmsOperations;
use crate::proto::v1::{self, key_management_service_server::KeyManagementService};
use tonic::{Request, Response, Status};

/// The gRPC face of the key service.
#[derive(Clone)]
pub struct KmsApi {
    operations: KmsOperations,
}

impl KmsApi {
    pub fn new(operations: KmsOperations) -> Self {
        Self { operations }
    }
}

/// The trait's methods, each the same three steps onto the operation of its name.
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
                    let answer = self.operations.$name(&call, request.into_inner()).await?;
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
    encrypt_batch: EncryptBatchRequest => EncryptBatchResponse,
    decrypt_batch: DecryptBatchRequest => DecryptBatchResponse,
    generate_data_key_batch: GenerateDataKeyBatchRequest => GenerateDataKeyBatchResponse,
}
