//! The cryptographic subcommands: `encrypt`, `decrypt`, `re-encrypt`, `data-key`,
//! `data-key-pair`, `derive-shared-secret`, `random`, `mac`, `sign`, `verify` and
//! `get-public-key`, one signed gRPC call each.

use super::commands::{
    CliError, CliResult, Context, parse_pairs, read_blob_from_stdin, read_stdin, write_stdout,
};
use crate::proto::v1;
use crate::secret::SecretBytes;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Debug, Args)]
pub struct EncryptArgs {
    #[arg(long)]
    key: String,
    /// Encryption context pair; repeat for more.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// SYMMETRIC_DEFAULT (default), or RSAES_OAEP_SHA_1 / RSAES_OAEP_SHA_256 for RSA keys of
    /// usage ENCRYPT_DECRYPT (no context then).
    #[arg(long)]
    encryption_algorithm: Option<String>,
}

pub async fn encrypt(ctx: Context, args: EncryptArgs) -> CliResult {
    let Context { client, out } = ctx;
    let plaintext = read_stdin()?;
    let request = v1::EncryptRequest {
        key_id: args.key,
        plaintext: plaintext.expose().clone(),
        encryption_context: parse_pairs(&args.context, "context")?,
        encryption_algorithm: args.encryption_algorithm.unwrap_or_default(),
    };
    let r = client
        .kms()
        .encrypt(client.signed("Encrypt", request))
        .await?
        .into_inner();
    let blob = B64.encode(&r.ciphertext_blob);
    out.print(
        json!({
            "CiphertextBlob": blob,
            "KeyId": r.key_id,
            "EncryptionAlgorithm": r.encryption_algorithm,
        }),
        || blob.clone(),
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum MacCommand {
    /// The HMAC of stdin (1-4096 bytes) under an HMAC key; prints it in base64.
    Generate {
        #[arg(long)]
        key: String,
        /// HMAC_SHA_224, HMAC_SHA_256, HMAC_SHA_384 or HMAC_SHA_512 (the key's).
        #[arg(long)]
        algorithm: String,
    },
    /// Verifies a base64 MAC of stdin; exits non-zero with KMSInvalidMacException if it does
    /// not verify.
    Verify {
        #[arg(long)]
        key: String,
        #[arg(long)]
        algorithm: String,
        /// The MAC, base64.
        #[arg(long)]
        mac: String,
    },
}

pub async fn mac(ctx: Context, command: MacCommand) -> CliResult {
    let Context { client, out } = ctx;
    let message = read_stdin()?;
    match command {
        MacCommand::Generate { key, algorithm } => {
            let request = v1::GenerateMacRequest {
                key_id: key,
                message: message.expose().clone(),
                mac_algorithm: algorithm,
            };
            let r = client
                .kms()
                .generate_mac(client.signed("GenerateMac", request))
                .await?
                .into_inner();
            let mac = B64.encode(&r.mac);
            out.print(
                json!({"Mac": mac, "MacAlgorithm": r.mac_algorithm, "KeyId": r.key_id}),
                || mac.clone(),
            );
        }
        MacCommand::Verify {
            key,
            algorithm,
            mac,
        } => {
            let mac = B64
                .decode(mac.trim())
                .map_err(|_| CliError::Local("--mac is not base64".into()))?;
            let request = v1::VerifyMacRequest {
                key_id: key,
                message: message.expose().clone(),
                mac_algorithm: algorithm,
                mac,
            };
            let r = client
                .kms()
                .verify_mac(client.signed("VerifyMac", request))
                .await?
                .into_inner();
            out.print(
                json!({"KeyId": r.key_id, "MacValid": r.mac_valid, "MacAlgorithm": r.mac_algorithm}),
                || format!("MacValid: {}", r.mac_valid),
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SignArgs {
    #[arg(long)]
    key: String,
    /// ECDSA_SHA_256 (for ECC_NIST_P256 keys).
    #[arg(long)]
    algorithm: String,
    /// RAW (stdin is the message, at most 4096 bytes) or DIGEST (stdin is its digest).
    #[arg(long, default_value = "RAW")]
    message_type: String,
}

/// `sign`: a DER signature of stdin, base64.
pub async fn sign(ctx: Context, args: SignArgs) -> CliResult {
    let Context { client, out } = ctx;
    let message = read_stdin()?;
    let request = v1::SignRequest {
        key_id: args.key,
        message: message.expose().clone(),
        message_type: args.message_type,
        signing_algorithm: args.algorithm,
    };
    let r = client
        .kms()
        .sign(client.signed("Sign", request))
        .await?
        .into_inner();
    let signature = B64.encode(&r.signature);
    out.print(
        json!({"KeyId": r.key_id, "Signature": signature, "SigningAlgorithm": r.signing_algorithm}),
        || signature.clone(),
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(long)]
    key: String,
    #[arg(long)]
    algorithm: String,
    #[arg(long, default_value = "RAW")]
    message_type: String,
    /// The signature, base64.
    #[arg(long)]
    signature: String,
}

/// `verify`: exits non-zero with KMSInvalidSignatureException when the signature is bad.
pub async fn verify(ctx: Context, args: VerifyArgs) -> CliResult {
    let Context { client, out } = ctx;
    let message = read_stdin()?;
    let signature = B64
        .decode(args.signature.trim())
        .map_err(|_| CliError::Local("--signature is not base64".into()))?;
    let request = v1::VerifyRequest {
        key_id: args.key,
        message: message.expose().clone(),
        message_type: args.message_type,
        signature,
        signing_algorithm: args.algorithm,
    };
    let r = client
        .kms()
        .verify(client.signed("Verify", request))
        .await?
        .into_inner();
    out.print(
        json!({"KeyId": r.key_id, "SignatureValid": r.signature_valid, "SigningAlgorithm": r.signing_algorithm}),
        || format!("SignatureValid: {}", r.signature_valid),
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PublicKeyFormat {
    Pem,
    Der,
}

#[derive(Debug, Args)]
pub struct GetPublicKeyArgs {
    #[arg(long)]
    key: String,
    /// PEM (`-----BEGIN PUBLIC KEY-----`) or the raw DER SubjectPublicKeyInfo.
    #[arg(long, value_enum, default_value_t = PublicKeyFormat::Pem)]
    format: PublicKeyFormat,
}

/// `get-public-key`: PEM or DER on stdout; with `--output json`, the AWS CLI's shape.
pub async fn get_public_key(ctx: Context, args: GetPublicKeyArgs) -> CliResult {
    let Context { client, out } = ctx;
    let request = v1::GetPublicKeyRequest { key_id: args.key };
    let r = client
        .kms()
        .get_public_key(client.signed("GetPublicKey", request))
        .await?
        .into_inner();
    if out.json() {
        out.print(
            json!({
                "KeyId": r.key_id,
                "PublicKey": B64.encode(&r.public_key),
                "KeySpec": r.key_spec,
                "KeyUsage": r.key_usage,
                "SigningAlgorithms": r.signing_algorithms,
                "EncryptionAlgorithms": r.encryption_algorithms,
                "KeyAgreementAlgorithms": r.key_agreement_algorithms,
            }),
            String::new,
        );
        return Ok(());
    }
    match args.format {
        PublicKeyFormat::Der => write_stdout(&r.public_key),
        PublicKeyFormat::Pem => {
            let encoded = B64.encode(&r.public_key);
            let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
            for line in encoded.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END PUBLIC KEY-----\n");
            write_stdout(pem.as_bytes())
        }
    }
}

#[derive(Debug, Args)]
pub struct DataKeyPairArgs {
    /// The symmetric key the private key is encrypted under.
    #[arg(long)]
    key: String,
    /// RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521 or
    /// ECC_SECG_P256K1.
    #[arg(long)]
    key_pair_spec: String,
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// Only the public key and the private key's ciphertext
    /// (GenerateDataKeyPairWithoutPlaintext).
    #[arg(long)]
    without_plaintext: bool,
}

/// `data-key-pair`: the AWS CLI's JSON of GenerateDataKeyPair (or its WithoutPlaintext form);
/// in text, one `Name: base64` line per member.
pub async fn data_key_pair(ctx: Context, args: DataKeyPairArgs) -> CliResult {
    let Context { client, out } = ctx;
    let context = parse_pairs(&args.context, "context")?;
    let (key_id, spec, blob, public, private) = if args.without_plaintext {
        let request = v1::GenerateDataKeyPairWithoutPlaintextRequest {
            key_id: args.key,
            encryption_context: context,
            key_pair_spec: args.key_pair_spec,
        };
        let r = client
            .kms()
            .generate_data_key_pair_without_plaintext(
                client.signed("GenerateDataKeyPairWithoutPlaintext", request),
            )
            .await?
            .into_inner();
        (
            r.key_id,
            r.key_pair_spec,
            r.private_key_ciphertext_blob,
            r.public_key,
            None,
        )
    } else {
        let request = v1::GenerateDataKeyPairRequest {
            key_id: args.key,
            encryption_context: context,
            key_pair_spec: args.key_pair_spec,
        };
        let r = client
            .kms()
            .generate_data_key_pair(client.signed("GenerateDataKeyPair", request))
            .await?
            .into_inner();
        (
            r.key_id,
            r.key_pair_spec,
            r.private_key_ciphertext_blob,
            r.public_key,
            Some(SecretBytes::new(r.private_key_plaintext.to_vec())),
        )
    };
    let mut object = serde_json::Map::new();
    object.insert("PrivateKeyCiphertextBlob".into(), json!(B64.encode(&blob)));
    if let Some(private) = &private {
        object.insert(
            "PrivateKeyPlaintext".into(),
            json!(B64.encode(private.expose())),
        );
    }
    object.insert("PublicKey".into(), json!(B64.encode(&public)));
    object.insert("KeyId".into(), json!(key_id));
    object.insert("KeyPairSpec".into(), json!(spec));
    let text = object
        .iter()
        .map(|(name, value)| format!("{name}: {}", value.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n");
    out.print(serde_json::Value::Object(object), || text.clone());
    Ok(())
}

#[derive(Debug, Args)]
pub struct DeriveSharedSecretArgs {
    /// A KEY_AGREEMENT key.
    #[arg(long)]
    key: String,
    /// ECDH (the only one).
    #[arg(long, default_value = "ECDH")]
    key_agreement_algorithm: String,
}

/// `derive-shared-secret`: the peer's public key (DER SubjectPublicKeyInfo, or PEM) on stdin;
/// the shared secret in base64 (`--output json`: the AWS CLI's shape).
pub async fn derive_shared_secret(ctx: Context, args: DeriveSharedSecretArgs) -> CliResult {
    let Context { client, out } = ctx;
    let input = read_stdin()?;
    let public_key = match std::str::from_utf8(input.expose()) {
        Ok(text) if text.contains("-----BEGIN PUBLIC KEY-----") => {
            let body: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .flat_map(|l| l.trim().chars())
                .collect();
            B64.decode(body.as_bytes())
                .map_err(|_| CliError::Local("the PEM public key on stdin is not base64".into()))?
        }
        _ => input.expose().clone(),
    };
    let request = v1::DeriveSharedSecretRequest {
        key_id: args.key,
        key_agreement_algorithm: args.key_agreement_algorithm,
        public_key,
    };
    let r = client
        .kms()
        .derive_shared_secret(client.signed("DeriveSharedSecret", request))
        .await?
        .into_inner();
    let secret = SecretBytes::new(r.shared_secret.to_vec());
    let encoded = B64.encode(secret.expose());
    out.print(
        json!({
            "KeyId": r.key_id,
            "SharedSecret": encoded,
            "KeyAgreementAlgorithm": r.key_agreement_algorithm,
            "KeyOrigin": r.key_origin,
        }),
        || encoded.clone(),
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Refuse unless the ciphertext was made under this key (required with an RSA algorithm).
    #[arg(long)]
    key: Option<String>,
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// SYMMETRIC_DEFAULT (default), or RSAES_OAEP_SHA_1 / RSAES_OAEP_SHA_256 for RSA keys.
    #[arg(long)]
    encryption_algorithm: Option<String>,
}

pub async fn decrypt(ctx: Context, args: DecryptArgs) -> CliResult {
    let Context { client, out } = ctx;
    let request = v1::DecryptRequest {
        ciphertext_blob: read_blob_from_stdin()?,
        encryption_context: parse_pairs(&args.context, "context")?,
        key_id: args.key.unwrap_or_default(),
        encryption_algorithm: args.encryption_algorithm.unwrap_or_default(),
    };
    let r = client
        .kms()
        .decrypt(client.signed("Decrypt", request))
        .await?
        .into_inner();
    let plaintext = SecretBytes::new(r.plaintext.to_vec());
    if out.json() {
        out.print(
            json!({
                "KeyId": r.key_id,
                "Plaintext": B64.encode(plaintext.expose()),
                "EncryptionAlgorithm": r.encryption_algorithm,
            }),
            String::new,
        );
        Ok(())
    } else {
        write_stdout(plaintext.expose())
    }
}

#[derive(Debug, Args)]
pub struct ReEncryptArgs {
    /// The key to encrypt under now.
    #[arg(long)]
    key: String,
    /// Refuse unless the ciphertext was made under this key.
    #[arg(long)]
    source_key: Option<String>,
    /// The ciphertext's encryption context.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// The new ciphertext's encryption context.
    #[arg(long = "new-context", value_name = "KEY=VALUE")]
    new_context: Vec<String>,
}

pub async fn re_encrypt(ctx: Context, args: ReEncryptArgs) -> CliResult {
    let Context { client, out } = ctx;
    let request = v1::ReEncryptRequest {
        ciphertext_blob: read_blob_from_stdin()?,
        source_encryption_context: parse_pairs(&args.context, "context")?,
        source_key_id: args.source_key.unwrap_or_default(),
        destination_key_id: args.key,
        destination_encryption_context: parse_pairs(&args.new_context, "new-context")?,
    };
    let r = client
        .kms()
        .re_encrypt(client.signed("ReEncrypt", request))
        .await?
        .into_inner();
    let blob = B64.encode(&r.ciphertext_blob);
    out.print(
        json!({
            "CiphertextBlob": blob,
            "SourceKeyId": r.source_key_id,
            "KeyId": r.key_id,
        }),
        || blob.clone(),
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct DataKeyArgs {
    #[arg(long)]
    key: String,
    /// Data key length in bytes (1-1024).
    #[arg(long, conflicts_with = "spec")]
    bytes: Option<u32>,
    /// AES_256 or AES_128 (default AES_256).
    #[arg(long)]
    spec: Option<String>,
    /// Only the encrypted data key.
    #[arg(long)]
    without_plaintext: bool,
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
}

pub async fn data_key(ctx: Context, args: DataKeyArgs) -> CliResult {
    let Context { client, out } = ctx;
    let key_spec = match (&args.spec, args.bytes) {
        (None, None) => "AES_256".to_owned(),
        (spec, _) => spec.clone().unwrap_or_default(),
    };
    let context = parse_pairs(&args.context, "context")?;
    let mut kms = client.kms();
    if args.without_plaintext {
        let request = v1::GenerateDataKeyWithoutPlaintextRequest {
            key_id: args.key,
            encryption_context: context,
            key_spec,
            number_of_bytes: args.bytes,
        };
        let r = kms
            .generate_data_key_without_plaintext(
                client.signed("GenerateDataKeyWithoutPlaintext", request),
            )
            .await?
            .into_inner();
        let blob = B64.encode(&r.ciphertext_blob);
        out.print(json!({ "CiphertextBlob": blob, "KeyId": r.key_id }), || {
            format!("CiphertextBlob: {blob}")
        });
    } else {
        let request = v1::GenerateDataKeyRequest {
            key_id: args.key,
            encryption_context: context,
            key_spec,
            number_of_bytes: args.bytes,
        };
        let r = kms
            .generate_data_key(client.signed("GenerateDataKey", request))
            .await?
            .into_inner();
        let plaintext = SecretBytes::new(r.plaintext.to_vec());
        let blob = B64.encode(&r.ciphertext_blob);
        let shown = B64.encode(plaintext.expose());
        out.print(
            json!({ "CiphertextBlob": blob, "Plaintext": shown, "KeyId": r.key_id }),
            || format!("Plaintext:      {shown}\nCiphertextBlob: {blob}"),
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RandomArgs {
    /// How many bytes (1-1024).
    number_of_bytes: u32,
}

pub async fn random(ctx: Context, args: RandomArgs) -> CliResult {
    let Context { client, out } = ctx;
    let request = v1::GenerateRandomRequest {
        number_of_bytes: args.number_of_bytes,
    };
    let r = client
        .kms()
        .generate_random(client.signed("GenerateRandom", request))
        .await?
        .into_inner();
    let bytes = SecretBytes::new(r.plaintext.to_vec());
    let shown = B64.encode(bytes.expose());
    out.print(json!({ "Plaintext": shown }), || shown.clone());
    Ok(())
}
