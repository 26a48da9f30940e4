//! Generates the gRPC code from `proto/` with a vendored `protoc`, so no system install is needed.

use std::{env, error::Error, path::PathBuf};

/// Messages that carry plaintext, key material, secrets or encryption-context values: their
/// `Debug` is written by hand, redacted.
const REDACTED_DEBUG: &[&str] = &[
    "keyhaven.v1.EncryptRequest",
    "keyhaven.v1.DecryptRequest",
    "keyhaven.v1.ReEncryptRequest",
    "keyhaven.v1.GenerateDataKeyRequest",
    "keyhaven.v1.GenerateDataKeyWithoutPlaintextRequest",
    "keyhaven.v1.GenerateMacRequest",
    "keyhaven.v1.VerifyMacRequest",
    "keyhaven.v1.SignRequest",
    "keyhaven.v1.VerifyRequest",
    "keyhaven.v1.GenerateDataKeyPairRequest",
    "keyhaven.v1.GenerateDataKeyPairWithoutPlaintextRequest",
    "keyhaven.v1.GenerateDataKeyPairResponse",
    "keyhaven.v1.DeriveSharedSecretResponse",
    "keyhaven.v1.DecryptResponse",
    "keyhaven.v1.GenerateDataKeyResponse",
    "keyhaven.v1.GenerateRandomResponse",
    "keyhaven.v1.CreateAccessKeyResponse",
    "keyhaven.v1.CreateAccountResponse",
    "keyhaven.v1.Credentials",
    "keyhaven.v1.CreateGrantRequest",
    "keyhaven.v1.CreateGrantResponse",
    "keyhaven.v1.RetireGrantRequest",
    "keyhaven.v1.GetParametersForImportResponse",
    "keyhaven.v1.ImportKeyMaterialRequest",
    "keyhaven.v1.CreateVirtualMFADeviceResponse",
    "keyhaven.v1.EnableMFADeviceRequest",
    "keyhaven.v1.GetSessionTokenRequest",
    "keyhaven.v1.AssumeRoleRequest",
    "keyhaven.v1.AssumeRoleWithWebIdentityRequest",
    "keyhaven.v1.CreateLoginProfileRequest",
    "keyhaven.v1.UpdateLoginProfileRequest",
    "keyhaven.v1.ChangePasswordRequest",
    "keyhaven.v1.SignInRequest",
];

/// Response fields that carry plaintext: `bytes::Bytes`, so that the daemon can hand them a
/// buffer that is wiped once the answer has been encoded and dropped.
const WIPED_BYTES: &[&str] = &[
    ".keyhaven.v1.DecryptResponse.plaintext",
    ".keyhaven.v1.GenerateDataKeyResponse.plaintext",
    ".keyhaven.v1.GenerateRandomResponse.plaintext",
    ".keyhaven.v1.GenerateDataKeyPairResponse.private_key_plaintext",
    ".keyhaven.v1.DeriveSharedSecretResponse.shared_secret",
];

/// The KMS messages are also the AWS door's JSON shapes (their members are AWS's, in
/// PascalCase): every message of `kms.proto` gets serde, its `bytes` members base64, its
/// `optional` members left out when absent, and its key states AWS's names.
fn aws_json_shapes(
    mut builder: tonic_prost_build::Builder,
    proto: &str,
) -> Result<tonic_prost_build::Builder, Box<dyn Error>> {
    let text = std::fs::read_to_string(proto)?;
    let mut message = None;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or_default().trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["message", name, ..] = words[..] {
            message = Some(name.to_owned());
            builder = builder.type_attribute(
                format!(".keyhaven.v1.{name}"),
                "#[derive(serde::Serialize, serde::Deserialize)] \
                 #[serde(rename_all = \"PascalCase\", default)]",
            );
        }
        let Some(owner) = &message else { continue };
        let field = |name: &str| format!(".keyhaven.v1.{owner}.{name}");
        // A one-line message has its member after the brace.
        let member = match words.iter().position(|w| *w == "{") {
            Some(brace) => &words[brace + 1..],
            None => &words[..],
        };
        match member {
            ["bytes", name, ..] => {
                builder = builder
                    .field_attribute(field(name), "#[serde(with = \"crate::api::aws::blob\")]");
            }
            ["optional", _, name, ..] => {
                builder = builder.field_attribute(
                    field(name),
                    "#[serde(skip_serializing_if = \"Option::is_none\")]",
                );
            }
            ["KeyState", name, ..] => {
                builder = builder.field_attribute(
                    field(name),
                    "#[serde(with = \"crate::api::aws::key_state\")]",
                );
            }
            _ => {}
        }
        if line.ends_with('}') {
            message = None;
        }
    }
    // A grant's constraint names one of its two maps; the other is left out.
    for map in ["encryption_context_subset", "encryption_context_equals"] {
        builder = builder.field_attribute(
            format!(".keyhaven.v1.GrantConstraints.{map}"),
            "#[serde(skip_serializing_if = \"std::collections::HashMap::is_empty\")]",
        );
    }
    Ok(builder
        .field_attribute(
            ".keyhaven.v1.KeyMetadata.aws_account_id",
            "#[serde(rename = \"AWSAccountId\")]",
        )
        // SDKs send timestamps as seconds with a fraction.
        .field_attribute(
            ".keyhaven.v1.ImportKeyMaterialRequest.valid_to",
            "#[serde(deserialize_with = \"crate::api::aws::timestamp::optional\")]",
        ))
}

fn main() -> Result<(), Box<dyn Error>> {
    // SAFETY: a build script is single-threaded; prost-build reads PROTOC below.
    unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut builder = tonic_prost_build::configure();
    for path in WIPED_BYTES {
        builder = builder.bytes(path);
    }
    builder = aws_json_shapes(builder, "proto/keyhaven/v1/kms.proto")?;
    builder
        .file_descriptor_set_path(out_dir.join("keyhaven_descriptor.bin"))
        .skip_debug(REDACTED_DEBUG.iter().copied())
        .compile_protos(
            &[
                "proto/keyhaven/v1/kms.proto",
                "proto/keyhaven/v1/iam.proto",
                "proto/keyhaven/v1/audit.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
