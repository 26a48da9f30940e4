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
    "keyhaven.v1.DecryptResponse",
    "keyhaven.v1.GenerateDataKeyResponse",
    "keyhaven.v1.GenerateRandomResponse",
    "keyhaven.v1.CreateAccessKeyResponse",
    "keyhaven.v1.Credentials",
];

/// Response fields that carry plaintext: `bytes::Bytes`, so that the daemon can hand them a
/// buffer that is wiped once the answer has been encoded and dropped.
const WIPED_BYTES: &[&str] = &[
    ".keyhaven.v1.DecryptResponse.plaintext",
    ".keyhaven.v1.GenerateDataKeyResponse.plaintext",
    ".keyhaven.v1.GenerateRandomResponse.plaintext",
];

fn main() -> Result<(), Box<dyn Error>> {
    // SAFETY: a build script is single-threaded; prost-build reads PROTOC below.
    unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut builder = tonic_prost_build::configure();
    for path in WIPED_BYTES {
        builder = builder.bytes(path);
    }
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
