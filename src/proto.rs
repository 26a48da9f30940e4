//! The generated wire types and gRPC stubs (`proto/keyhaven/v1`).
//!
//! Messages that carry plaintext are generated without `Debug`; their `Debug` below shows the
//! shape of the message with the secret fields redacted.

#![allow(clippy::all, missing_docs)]

use std::fmt;

pub mod v1 {
    tonic::include_proto!("keyhaven.v1");
}

/// The encoded descriptor set, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keyhaven_descriptor");

const REDACTED: &str = "[redacted]";

/// The import token is what lets its holder import material into the key.
impl fmt::Debug for v1::ImportKeyMaterialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportKeyMaterialRequest")
            .field("key_id", &self.key_id)
            .field("import_token", &REDACTED)
            .field(
                "encrypted_key_material_len",
                &self.encrypted_key_material.len(),
            )
            .field("valid_to", &self.valid_to)
            .field("expiration_model", &self.expiration_model)
            .finish()
    }
}

impl fmt::Debug for v1::GetParametersForImportResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetParametersForImportResponse")
            .field("key_id", &self.key_id)
            .field("import_token", &REDACTED)
            .field("public_key_len", &self.public_key.len())
            .field("parameters_valid_to", &self.parameters_valid_to)
            .finish()
    }
}

impl fmt::Debug for v1::EncryptRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("key_id", &self.key_id)
            .field("plaintext", &REDACTED)
            .field("encryption_context_keys", &self.encryption_context.keys())
            .finish()
    }
}

/// Encryption-context values stay out of `Debug` as they stay out of the audit log.
impl fmt::Debug for v1::DecryptRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptRequest")
            .field("ciphertext_blob_len", &self.ciphertext_blob.len())
            .field("encryption_context_keys", &self.encryption_context.keys())
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl fmt::Debug for v1::ReEncryptRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReEncryptRequest")
            .field("ciphertext_blob_len", &self.ciphertext_blob.len())
            .field(
                "source_encryption_context_keys",
                &self.source_encryption_context.keys(),
            )
            .field("source_key_id", &self.source_key_id)
            .field("destination_key_id", &self.destination_key_id)
            .field(
                "destination_encryption_context_keys",
                &self.destination_encryption_context.keys(),
            )
            .finish()
    }
}

impl fmt::Debug for v1::GenerateDataKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateDataKeyRequest")
            .field("key_id", &self.key_id)
            .field("encryption_context_keys", &self.encryption_context.keys())
            .field("key_spec", &self.key_spec)
            .field("number_of_bytes", &self.number_of_bytes)
            .finish()
    }
}

impl fmt::Debug for v1::GenerateDataKeyWithoutPlaintextRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateDataKeyWithoutPlaintextRequest")
            .field("key_id", &self.key_id)
            .field("encryption_context_keys", &self.encryption_context.keys())
            .field("key_spec", &self.key_spec)
            .field("number_of_bytes", &self.number_of_bytes)
            .finish()
    }
}

impl fmt::Debug for v1::GenerateDataKeyPairRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateDataKeyPairRequest")
            .field("key_id", &self.key_id)
            .field("encryption_context_keys", &self.encryption_context.keys())
            .field("key_pair_spec", &self.key_pair_spec)
            .finish()
    }
}

impl fmt::Debug for v1::GenerateDataKeyPairWithoutPlaintextRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateDataKeyPairWithoutPlaintextRequest")
            .field("key_id", &self.key_id)
            .field("encryption_context_keys", &self.encryption_context.keys())
            .field("key_pair_spec", &self.key_pair_spec)
            .finish()
    }
}

/// The private key of a data key pair is the caller's secret.
impl fmt::Debug for v1::GenerateDataKeyPairResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateDataKeyPairResponse")
            .field("key_id", &self.key_id)
            .field("key_pair_spec", &self.key_pair_spec)
            .field(
                "private_key_ciphertext_blob_len",
                &self.private_key_ciphertext_blob.len(),
            )
            .field("private_key_plaintext", &REDACTED)
            .field("public_key_len", &self.public_key.len())
            .finish()
    }
}

/// A shared secret is as secret as a data key.
impl fmt::Debug for v1::DeriveSharedSecretResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeriveSharedSecretResponse")
            .field("key_id", &self.key_id)
            .field("shared_secret", &REDACTED)
            .field("key_agreement_algorithm", &self.key_agreement_algorithm)
            .field("key_origin", &self.key_origin)
            .finish()
    }
}

/// The message a MAC is made of may be secret; the MAC itself is not.
impl fmt::Debug for v1::GenerateMacRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateMacRequest")
            .field("key_id", &self.key_id)
            .field("message", &REDACTED)
            .field("mac_algorithm", &self.mac_algorithm)
            .finish()
    }
}

impl fmt::Debug for v1::VerifyMacRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyMacRequest")
            .field("key_id", &self.key_id)
            .field("message", &REDACTED)
            .field("mac_algorithm", &self.mac_algorithm)
            .field("mac_len", &self.mac.len())
            .finish()
    }
}

/// A message to sign may be secret; its signature is not.
impl fmt::Debug for v1::SignRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignRequest")
            .field("key_id", &self.key_id)
            .field("message", &REDACTED)
            .field("message_type", &self.message_type)
            .field("signing_algorithm", &self.signing_algorithm)
            .finish()
    }
}

impl fmt::Debug for v1::VerifyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("key_id", &self.key_id)
            .field("message", &REDACTED)
            .field("message_type", &self.message_type)
            .field("signature_len", &self.signature.len())
            .field("signing_algorithm", &self.signing_algorithm)
            .finish()
    }
}

impl fmt::Debug for v1::DecryptResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptResponse")
            .field("key_id", &self.key_id)
            .field("plaintext", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for v1::GenerateDataKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateDataKeyResponse")
            .field("key_id", &self.key_id)
            .field("ciphertext_blob_len", &self.ciphertext_blob.len())
            .field("plaintext", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for v1::GenerateRandomResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateRandomResponse")
            .field("plaintext", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for v1::CreateAccessKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateAccessKeyResponse")
            .field("access_key", &self.access_key)
            .field("secret_access_key", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for v1::CreateAccountResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateAccountResponse")
            .field("account", &self.account)
            .field("root_access_key_id", &self.root_access_key_id)
            .field("root_secret_access_key", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for v1::Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &REDACTED)
            .field("session_token", &REDACTED)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Grant tokens let whoever holds one retire its grant: never logged.
impl fmt::Debug for v1::CreateGrantRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateGrantRequest")
            .field("key_id", &self.key_id)
            .field("grantee_principal", &self.grantee_principal)
            .field("retiring_principal", &self.retiring_principal)
            .field("operations", &self.operations)
            .field("constraints", &self.constraints.as_ref().map(|_| REDACTED))
            .field("grant_tokens", &REDACTED)
            .field("name", &self.name)
            .finish()
    }
}

impl fmt::Debug for v1::CreateGrantResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateGrantResponse")
            .field("grant_token", &REDACTED)
            .field("grant_id", &self.grant_id)
            .finish()
    }
}

impl fmt::Debug for v1::RetireGrantRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetireGrantRequest")
            .field("grant_token", &REDACTED)
            .field("key_id", &self.key_id)
            .field("grant_id", &self.grant_id)
            .finish()
    }
}

impl fmt::Debug for v1::CreateVirtualMfaDeviceResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateVirtualMfaDeviceResponse")
            .field("serial_number", &self.serial_number)
            .field("base32_string_seed", &REDACTED)
            .field("otpauth_uri", &REDACTED)
            .field("qr_code_png", &REDACTED)
            .finish()
    }
}

/// MFA codes are accepted once, but a logged code is still one an onlooker could try first.
impl fmt::Debug for v1::EnableMfaDeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnableMfaDeviceRequest")
            .field("user_name", &self.user_name)
            .field("serial_number", &self.serial_number)
            .field("authentication_code1", &REDACTED)
            .field("authentication_code2", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for v1::GetSessionTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetSessionTokenRequest")
            .field("duration_seconds", &self.duration_seconds)
            .field("serial_number", &self.serial_number)
            .field("token_code", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for v1::AssumeRoleRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRoleRequest")
            .field("role_arn", &self.role_arn)
            .field("role_session_name", &self.role_session_name)
            .field("duration_seconds", &self.duration_seconds)
            .field("serial_number", &self.serial_number)
            .field("token_code", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for v1::AssumeRoleWithWebIdentityRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRoleWithWebIdentityRequest")
            .field("role_arn", &self.role_arn)
            .field("role_session_name", &self.role_session_name)
            .field("web_identity_token", &REDACTED)
            .field("duration_seconds", &self.duration_seconds)
            .finish()
    }
}

impl fmt::Debug for v1::CreateLoginProfileRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateLoginProfileRequest")
            .field("user_name", &self.user_name)
            .field("password", &REDACTED)
            .field("password_reset_required", &self.password_reset_required)
            .finish()
    }
}

impl fmt::Debug for v1::UpdateLoginProfileRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateLoginProfileRequest")
            .field("user_name", &self.user_name)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("password_reset_required", &self.password_reset_required)
            .finish()
    }
}

impl fmt::Debug for v1::ChangePasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangePasswordRequest")
            .field("old_password", &REDACTED)
            .field("new_password", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for v1::SignInRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignInRequest")
            .field("account_id", &self.account_id)
            .field("user_name", &self.user_name)
            .field("password", &REDACTED)
            .field("mfa_code", &REDACTED)
            .field("new_password", &REDACTED)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn plaintext_never_reaches_debug_output() {
        let canary = b"canary-plaintext-4242".to_vec();
        let printed = [
            format!(
                "{:?}",
                v1::EncryptRequest {
                    key_id: "k".into(),
                    plaintext: canary.clone(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::DecryptResponse {
                    plaintext: canary.clone().into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::GenerateDataKeyResponse {
                    plaintext: canary.clone().into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::GenerateRandomResponse {
                    plaintext: canary.clone().into()
                }
            ),
            format!(
                "{:?}",
                v1::GenerateDataKeyPairResponse {
                    private_key_plaintext: canary.clone().into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::DeriveSharedSecretResponse {
                    shared_secret: canary.clone().into(),
                    ..Default::default()
                }
            ),
        ];
        let secret = String::from_utf8(canary.clone()).unwrap();
        let printed = printed.into_iter().chain([
            format!(
                "{:?}",
                v1::CreateAccessKeyResponse {
                    secret_access_key: secret.clone(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::Credentials {
                    secret_access_key: secret.clone(),
                    session_token: secret.clone(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::CreateVirtualMfaDeviceResponse {
                    base32_string_seed: secret.clone(),
                    otpauth_uri: secret.clone(),
                    qr_code_png: canary.clone(),
                    ..Default::default()
                }
            ),
        ]);
        for text in printed {
            assert!(!text.contains("canary"), "{text}");
            assert!(!text.contains("99, 97, 110"), "{text}"); // the bytes of "can"
            assert!(text.contains("[redacted]"), "{text}");
        }
    }
}
