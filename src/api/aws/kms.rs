//! The KMS JSON 1.1 targets: `TrentService.<Operation>` onto the operation of that name, the
//! body read into the operation's request shape and its answer written back.

use crate::api::accounts::Accounts;
use crate::api::authorize::CallContext;
use crate::api::operations::Outcome;
use crate::api::status::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use tonic::Code;

const TARGET_PREFIX: &str = "TrentService.";

/// Reads the body into `Request`, runs the operation, writes its answer.
async fn run<Request, Response, Operation, Answer>(
    body: &[u8],
    operation: Operation,
) -> Result<Vec<u8>, ApiError>
where
    Request: DeserializeOwned,
    Response: Serialize,
    Operation: FnOnce(Request) -> Answer,
    Answer: Future<Output = Outcome<Response>>,
{
    // Some clients send no body at all for an operation without members.
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    let request: Request = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            Code::InvalidArgument,
            "SerializationException",
            format!("the request body is not this operation's JSON: {error}"),
        )
    })?;
    let response = operation(request).await?;
    serde_json::to_vec(&response).map_err(|error| {
        tracing::error!(%error, "answer not serialisable");
        ApiError::new(Code::Internal, "KMSInternalException", "internal error")
    })
}

/// The `GrantTokens` any KMS request may carry (checked for every operation, as AWS KMS
/// does); none when the body is not JSON, which the operation then refuses.
fn grant_tokens(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Tokens {
        #[serde(rename = "GrantTokens", default)]
        grant_tokens: Vec<String>,
    }
    serde_json::from_slice::<Tokens>(body)
        .map(|t| t.grant_tokens)
        .unwrap_or_default()
}

fn unknown_operation() -> ApiError {
    ApiError::new(
        Code::Unimplemented,
        "UnknownOperationException",
        "the X-Amz-Target names no operation this service has",
    )
}

macro_rules! targets {
    ($($target:literal => $operation:ident,)*) => {
        /// `kms:<Operation>` for a served target; `unknown` otherwise (a closed set of names
        /// for metrics and records).
        pub fn operation_name(target: &str) -> String {
            match target.strip_prefix(TARGET_PREFIX) {
                $(Some($target))|* => format!("kms:{}", &target[TARGET_PREFIX.len()..]),
                _ => super::super::auth_layer::UNKNOWN_OPERATION.to_owned(),
            }
        }

        /// Runs the operation `target` names on `body`.
        pub async fn dispatch(
            accounts: &Accounts,
            call: &CallContext,
            target: &str,
            body: &[u8],
        ) -> Result<Vec<u8>, ApiError> {
            match target.strip_prefix(TARGET_PREFIX) {
                $(Some($target) => {
                    run(body, |r| async move {
                        let account = accounts.for_request(call, &r).await?;
                        account.kms.accept_grant_tokens(call, &grant_tokens(body)).await?;
                        account.kms.$operation(call, r).await
                    })
                    .await
                })*
                _ => Err(unknown_operation()),
            }
        }
    };
}

targets! {
    "CreateKey" => create_key,
    "DescribeKey" => describe_key,
    "ListKeys" => list_keys,
    "UpdateKeyDescription" => update_key_description,
    "EnableKey" => enable_key,
    "DisableKey" => disable_key,
    "ScheduleKeyDeletion" => schedule_key_deletion,
    "CancelKeyDeletion" => cancel_key_deletion,
    "CreateAlias" => create_alias,
    "UpdateAlias" => update_alias,
    "DeleteAlias" => delete_alias,
    "ListAliases" => list_aliases,
    "TagResource" => tag_resource,
    "UntagResource" => untag_resource,
    "ListResourceTags" => list_resource_tags,
    "RotateKeyOnDemand" => rotate_key_on_demand,
    "EnableKeyRotation" => enable_key_rotation,
    "DisableKeyRotation" => disable_key_rotation,
    "GetKeyRotationStatus" => get_key_rotation_status,
    "ListKeyRotations" => list_key_rotations,
    "GetKeyPolicy" => get_key_policy,
    "PutKeyPolicy" => put_key_policy,
    "Encrypt" => encrypt,
    "Decrypt" => decrypt,
    "ReEncrypt" => re_encrypt,
    "GenerateDataKey" => generate_data_key,
    "GenerateDataKeyWithoutPlaintext" => generate_data_key_without_plaintext,
    "GenerateRandom" => generate_random,
    "CreateGrant" => create_grant,
    "ListGrants" => list_grants,
    "ListRetirableGrants" => list_retirable_grants,
    "RetireGrant" => retire_grant,
    "RevokeGrant" => revoke_grant,
    "GenerateMac" => generate_mac,
    "VerifyMac" => verify_mac,
    "Sign" => sign,
    "Verify" => verify,
    "GetPublicKey" => get_public_key,
    "DeriveSharedSecret" => derive_shared_secret,
    "GenerateDataKeyPair" => generate_data_key_pair,
    "GenerateDataKeyPairWithoutPlaintext" => generate_data_key_pair_without_plaintext,
    "GetParametersForImport" => get_parameters_for_import,
    "ImportKeyMaterial" => import_key_material,
    "DeleteImportedKeyMaterial" => delete_imported_key_material,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_like_policy_actions() {
        assert_eq!(operation_name("TrentService.Encrypt"), "kms:Encrypt");
        assert_eq!(operation_name("TrentService.CreateKey"), "kms:CreateKey");
        for unserved in [
            "TrentService.Nothing",
            "Encrypt",
            "",
            "TrentService.Encrypt\u{1b}",
        ] {
            assert_eq!(operation_name(unserved), "unknown", "{unserved:?}");
        }
    }

    #[test]
    fn shapes_carry_aws_member_names() {
        let request: crate::proto::v1::EncryptRequest = serde_json::from_str(
            r#"{"KeyId":"alias/a","Plaintext":"aGkh","EncryptionContext":{"k":"v"}}"#,
        )
        .unwrap();
        assert_eq!(request.key_id, "alias/a");
        assert_eq!(request.plaintext, b"hi!");
        let metadata = crate::proto::v1::KeyMetadata {
            aws_account_id: "123".into(),
            key_state: crate::proto::v1::KeyState::PendingDeletion as i32,
            ..Default::default()
        };
        let text = serde_json::to_value(&metadata).unwrap();
        assert_eq!(text["AWSAccountId"], "123");
        assert_eq!(text["KeyState"], "PendingDeletion");
        assert!(text.get("DeletionDate").is_none(), "{text}");
    }
}
