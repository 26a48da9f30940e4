//! The client subcommands for keys and aliases, one signed gRPC call each (two for `key
//! create --alias`), and what every client subcommand shares: its context, its errors,
//! standard input and output (the cryptographic ones are in `crypto`).

use super::ClientArgs;
use super::output::{Output, key_metadata_human, key_metadata_json};
use crate::api::reason_of;
use crate::client::{Client, ClientCredentials, ClientTls};
use crate::clock::rfc3339;
use crate::proto::v1;
use crate::secret::SecretBytes;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Subcommand;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::path::PathBuf;

/// A failed command: a refusal from the daemon, or a local problem.
#[derive(Debug)]
pub enum CliError {
    Status(tonic::Status),
    Local(String),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Status(status)
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Local(message)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Local(message) => f.write_str(message),
            CliError::Status(status) => match reason_of(status) {
                Some(reason) if !status.message().starts_with(&reason) => {
                    write!(f, "{reason}: {}", status.message())
                }
                Some(_) => f.write_str(status.message()),
                None => write!(f, "{:?}: {}", status.code(), status.message()),
            },
        }
    }
}

pub(crate) type CliResult = Result<(), CliError>;

/// What every client command gets.
pub struct Context {
    pub client: Client,
    pub out: Output,
}

/// Connects, runs `command`, prints any error; returns the exit code.
pub fn run_client<F, Fut>(args: ClientArgs, command: F) -> i32
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = CliResult>,
{
    run(args, false, command)
}

/// As [`run_client`], for a command whose call carries its own credential and is not signed
/// (the credentials of the environment, if any, are not needed).
pub fn run_unsigned<F, Fut>(args: ClientArgs, command: F) -> i32
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = CliResult>,
{
    run(args, true, command)
}

fn run<F, Fut>(args: ClientArgs, unsigned: bool, command: F) -> i32
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = CliResult>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keyhaven: cannot start: {e}");
            return 1;
        }
    };
    let out = Output {
        format: args.output,
    };
    let result = runtime.block_on(async {
        let credentials = match ClientCredentials::from_env() {
            Ok(credentials) => credentials,
            Err(_) if unsigned => ClientCredentials::long_term(
                String::new(),
                crate::secret::SecretString::new(String::new()),
                "local",
            ),
            Err(missing) => return Err(missing.into()),
        };
        let tls = ClientTls::from_env(args.ca_cert.as_deref())?;
        let client = Client::connect_with_tls(&args.endpoint, credentials, &tls)
            .await?
            .with_approval_id(args.approval_id.clone());
        command(Context { client, out }).await
    });
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("keyhaven: {error}");
            1
        }
    }
}

pub(crate) fn parse_pairs(
    pairs: &[String],
    what: &str,
) -> Result<HashMap<String, String>, CliError> {
    let mut map = HashMap::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Local(format!("{what} '{pair}' must be KEY=VALUE")))?;
        map.insert(k.to_owned(), v.to_owned());
    }
    Ok(map)
}

pub(super) fn read_stdin() -> Result<SecretBytes, CliError> {
    let mut buffer = SecretBytes::new(Vec::new());
    std::io::stdin()
        .read_to_end(buffer.expose_mut())
        .map_err(|e| CliError::Local(format!("cannot read stdin: {e}")))?;
    Ok(buffer)
}

pub(super) fn read_blob_from_stdin() -> Result<Vec<u8>, CliError> {
    let input = read_stdin()?;
    let text: String = String::from_utf8_lossy(input.expose())
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    B64.decode(text)
        .map_err(|_| CliError::Local("stdin is not a base64 ciphertext blob".into()))
}

pub(super) fn write_stdout(bytes: &[u8]) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|_| stdout.flush())
        .map_err(|e| CliError::Local(format!("cannot write stdout: {e}")))
}

// ------------------------------------------------------------------------------------ keys

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key (by default AES-256-GCM, ENCRYPT_DECRYPT).
    Create {
        #[arg(long, default_value = "")]
        description: String,
        /// SYMMETRIC_DEFAULT (the default), HMAC_224, HMAC_256, HMAC_384, HMAC_512 or
        /// ECC_NIST_P256.
        #[arg(long, default_value = "")]
        key_spec: String,
        /// ENCRYPT_DECRYPT (the default for SYMMETRIC_DEFAULT), GENERATE_VERIFY_MAC (HMAC) or
        /// SIGN_VERIFY (ECC_NIST_P256).
        #[arg(long, default_value = "")]
        key_usage: String,
        /// Also create this alias (alias/NAME) for the new key.
        #[arg(long)]
        alias: Option<String>,
        /// `sealed` or `pkcs11:<name>`; default: the daemon's.
        #[arg(long)]
        keystore: Option<String>,
        /// Key policy (JSON).
        #[arg(long)]
        policy_file: Option<PathBuf>,
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// AWS_KMS (the default: generated by the keystore) or EXTERNAL (made in
        /// PendingImport; see `key import-parameters` and `key import`).
        #[arg(long, default_value = "")]
        origin: String,
    },
    /// Get a wrapping public key and an import token (valid 24 hours) for a key of Origin
    /// EXTERNAL. Wrap the material against the public key (for RSAES_OAEP_SHA_256:
    /// `openssl pkeyutl -encrypt -pubin -keyform DER -inkey PUBLIC_KEY_FILE -pkeyopt
    /// rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256`).
    ImportParameters {
        key: String,
        /// RSAES_OAEP_SHA_256 or RSA_AES_KEY_WRAP_SHA_256.
        #[arg(long, default_value = "RSAES_OAEP_SHA_256")]
        wrapping_algorithm: String,
        /// RSA_2048, RSA_3072 or RSA_4096.
        #[arg(long, default_value = "RSA_2048")]
        wrapping_key_spec: String,
        /// Write the public key here (DER SubjectPublicKeyInfo).
        #[arg(long)]
        public_key_file: Option<PathBuf>,
        /// Write the import token here (raw bytes, for `key import --token-file`).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Import wrapped key material into a key of Origin EXTERNAL.
    Import {
        key: String,
        /// The wrapped material (raw bytes).
        #[arg(long)]
        material_file: PathBuf,
        /// The import token (raw bytes, as `key import-parameters --token-file` wrote it).
        #[arg(long)]
        token_file: PathBuf,
        /// When the material expires (RFC 3339 or seconds since the epoch; at most 365 days
        /// away); without it the material does not expire.
        #[arg(long)]
        valid_to: Option<String>,
    },
    /// Delete a key's imported material; the key returns to PendingImport.
    DeleteImportedMaterial {
        key: String,
    },
    /// Show a key's metadata (also of a deleted key's tombstone).
    Describe {
        key: String,
    },
    /// List keys (every page, unless --limit is given).
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long, default_value = "")]
        marker: String,
    },
    Enable {
        key: String,
    },
    Disable {
        key: String,
    },
    /// Schedule deletion after a waiting period of 7-30 days (default 30).
    ScheduleDeletion {
        key: String,
        #[arg(long)]
        pending_days: Option<u32>,
    },
    /// Cancel a scheduled deletion; the key becomes Disabled.
    CancelDeletion {
        key: String,
    },
    /// Rotate now: new encryptions use a new version; old ones still decrypt.
    Rotate {
        key: String,
    },
    UpdateDescription {
        key: String,
        description: String,
    },
    /// Turn on automatic rotation (every 90-2560 days; default: the daemon's).
    EnableRotation {
        key: String,
        #[arg(long)]
        period_days: Option<u32>,
    },
    DisableRotation {
        key: String,
    },
    RotationStatus {
        key: String,
    },
    /// List a key's versions.
    Rotations {
        key: String,
    },
    Tag {
        key: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        tags: Vec<String>,
    },
    Untag {
        key: String,
        #[arg(required = true)]
        tag_keys: Vec<String>,
    },
    Tags {
        key: String,
    },
}

fn done(out: Output, what: String) {
    out.print(json!({}), || what);
}

pub async fn key(ctx: Context, command: KeyCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut kms = client.kms();
    match command {
        KeyCommand::Create {
            description,
            key_spec,
            key_usage,
            alias,
            keystore,
            policy_file,
            tags,
            origin,
        } => {
            let policy = match policy_file {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                None => String::new(),
            };
            let tags = parse_pairs(&tags, "tag")?
                .into_iter()
                .map(|(tag_key, tag_value)| v1::Tag { tag_key, tag_value })
                .collect();
            let request = v1::CreateKeyRequest {
                description,
                keystore: keystore.unwrap_or_default(),
                tags,
                policy,
                key_spec,
                key_usage,
                origin,
                ..Default::default()
            };
            let metadata = kms
                .create_key(client.signed("CreateKey", request))
                .await?
                .into_inner()
                .key_metadata
                .unwrap_or_default();
            if let Some(alias) = alias {
                let request = v1::CreateAliasRequest {
                    alias_name: alias.clone(),
                    target_key_id: metadata.key_id.clone(),
                };
                if let Err(status) = kms
                    .create_alias(client.signed("CreateAlias", request))
                    .await
                {
                    return Err(CliError::Local(format!(
                        "key {} was created, but alias {alias} was not: {}",
                        metadata.key_id,
                        CliError::Status(status)
                    )));
                }
            }
            out.print(
                json!({ "KeyMetadata": key_metadata_json(&metadata) }),
                || key_metadata_human(&metadata),
            );
        }
        KeyCommand::Describe { key } => {
            let request = v1::DescribeKeyRequest { key_id: key };
            let metadata = kms
                .describe_key(client.signed("DescribeKey", request))
                .await?
                .into_inner()
                .key_metadata
                .unwrap_or_default();
            out.print(
                json!({ "KeyMetadata": key_metadata_json(&metadata) }),
                || key_metadata_human(&metadata),
            );
        }
        KeyCommand::List { limit, marker } => {
            let mut keys = Vec::new();
            let mut marker = marker;
            let next = loop {
                let request = v1::ListKeysRequest {
                    limit: limit.unwrap_or(0),
                    marker: marker.clone(),
                };
                let page = kms
                    .list_keys(client.signed("ListKeys", request))
                    .await?
                    .into_inner();
                keys.extend(page.keys);
                if !page.truncated || limit.is_some() {
                    break page.truncated.then_some(page.next_marker);
                }
                marker = page.next_marker;
            };
            let mut value = json!({
                "Keys": keys.iter().map(|k| json!({"KeyId": k.key_id, "KeyArn": k.key_arn})).collect::<Vec<_>>(),
                "Truncated": next.is_some(),
            });
            if let Some(next) = &next {
                value["NextMarker"] = json!(next);
            }
            out.print(value, || {
                let mut lines: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
                if let Some(next) = &next {
                    lines.push(format!("(more: --marker {next})"));
                }
                lines.join("\n")
            });
        }
        KeyCommand::Enable { key } => {
            let request = v1::EnableKeyRequest {
                key_id: key.clone(),
            };
            kms.enable_key(client.signed("EnableKey", request)).await?;
            done(out, format!("Key {key} enabled"));
        }
        KeyCommand::Disable { key } => {
            let request = v1::DisableKeyRequest {
                key_id: key.clone(),
            };
            kms.disable_key(client.signed("DisableKey", request))
                .await?;
            done(out, format!("Key {key} disabled"));
        }
        KeyCommand::ScheduleDeletion { key, pending_days } => {
            let request = v1::ScheduleKeyDeletionRequest {
                key_id: key,
                pending_window_in_days: pending_days,
            };
            let r = kms
                .schedule_key_deletion(client.signed("ScheduleKeyDeletion", request))
                .await?
                .into_inner();
            out.print(
                json!({
                    "KeyId": r.key_id,
                    "DeletionDate": rfc3339(r.deletion_date),
                    "KeyState": "PendingDeletion",
                    "PendingWindowInDays": r.pending_window_in_days,
                }),
                || {
                    format!(
                        "Key {} will be deleted on {} (PendingDeletion; cancel with `keyhaven key cancel-deletion`)",
                        r.key_id,
                        rfc3339(r.deletion_date)
                    )
                },
            );
        }
        KeyCommand::CancelDeletion { key } => {
            let request = v1::CancelKeyDeletionRequest { key_id: key };
            let r = kms
                .cancel_key_deletion(client.signed("CancelKeyDeletion", request))
                .await?
                .into_inner();
            out.print(json!({ "KeyId": r.key_id }), || {
                format!("Deletion of {} cancelled; the key is Disabled", r.key_id)
            });
        }
        KeyCommand::ImportParameters {
            key,
            wrapping_algorithm,
            wrapping_key_spec,
            public_key_file,
            token_file,
        } => {
            let request = v1::GetParametersForImportRequest {
                key_id: key,
                wrapping_algorithm,
                wrapping_key_spec,
            };
            let r = kms
                .get_parameters_for_import(client.signed("GetParametersForImport", request))
                .await?
                .into_inner();
            let mut written = Vec::new();
            for (path, bytes, what) in [
                (&public_key_file, &r.public_key, "public key (DER)"),
                (&token_file, &r.import_token, "import token"),
            ] {
                if let Some(path) = path {
                    std::fs::write(path, bytes)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    written.push(format!("{what} written to {}", path.display()));
                }
            }
            let valid_to = crate::clock::rfc3339(r.parameters_valid_to);
            out.print(
                json!({
                    "KeyId": r.key_id,
                    "PublicKey": B64.encode(&r.public_key),
                    "ImportToken": B64.encode(&r.import_token),
                    "ParametersValidTo": valid_to,
                }),
                || {
                    let mut lines = vec![format!(
                        "Key {}: parameters valid until {valid_to}",
                        r.key_id
                    )];
                    if written.is_empty() {
                        lines.push(format!("PublicKey: {}", B64.encode(&r.public_key)));
                        lines.push(format!("ImportToken: {}", B64.encode(&r.import_token)));
                    }
                    lines.extend(written.iter().cloned());
                    lines.join("\n")
                },
            );
        }
        KeyCommand::Import {
            key,
            material_file,
            token_file,
            valid_to,
        } => {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            };
            let valid_to = match valid_to {
                Some(text) => Some(
                    crate::policy::parse_date(&text)
                        .map(|nanos| (nanos / 1_000_000_000) as i64)
                        .ok_or_else(|| {
                            format!(
                                "--valid-to '{text}' is not RFC 3339 nor seconds since the epoch"
                            )
                        })?,
                ),
                None => None,
            };
            let request = v1::ImportKeyMaterialRequest {
                key_id: key,
                import_token: read(&token_file)?,
                encrypted_key_material: read(&material_file)?,
                valid_to,
                expiration_model: if valid_to.is_some() {
                    "KEY_MATERIAL_EXPIRES".into()
                } else {
                    "KEY_MATERIAL_DOES_NOT_EXPIRE".into()
                },
            };
            let r = kms
                .import_key_material(client.signed("ImportKeyMaterial", request))
                .await?
                .into_inner();
            out.print(json!({ "KeyId": r.key_id }), || {
                format!("Key material imported into {}", r.key_id)
            });
        }
        KeyCommand::DeleteImportedMaterial { key } => {
            let request = v1::DeleteImportedKeyMaterialRequest { key_id: key };
            let r = kms
                .delete_imported_key_material(client.signed("DeleteImportedKeyMaterial", request))
                .await?
                .into_inner();
            out.print(json!({ "KeyId": r.key_id }), || {
                format!(
                    "Imported key material of {} deleted; the key is PendingImport",
                    r.key_id
                )
            });
        }
        KeyCommand::Rotate { key } => {
            let request = v1::RotateKeyOnDemandRequest { key_id: key };
            let r = kms
                .rotate_key_on_demand(client.signed("RotateKeyOnDemand", request))
                .await?
                .into_inner();
            out.print(
                json!({ "KeyId": r.key_id, "KeyVersion": r.key_version }),
                || format!("Key {} rotated; now at version {}", r.key_id, r.key_version),
            );
        }
        KeyCommand::UpdateDescription { key, description } => {
            let request = v1::UpdateKeyDescriptionRequest {
                key_id: key.clone(),
                description,
            };
            kms.update_key_description(client.signed("UpdateKeyDescription", request))
                .await?;
            done(out, format!("Description of {key} updated"));
        }
        KeyCommand::EnableRotation { key, period_days } => {
            let request = v1::EnableKeyRotationRequest {
                key_id: key.clone(),
                rotation_period_in_days: period_days,
            };
            kms.enable_key_rotation(client.signed("EnableKeyRotation", request))
                .await?;
            done(out, format!("Automatic rotation of {key} enabled"));
        }
        KeyCommand::DisableRotation { key } => {
            let request = v1::DisableKeyRotationRequest {
                key_id: key.clone(),
            };
            kms.disable_key_rotation(client.signed("DisableKeyRotation", request))
                .await?;
            done(out, format!("Automatic rotation of {key} disabled"));
        }
        KeyCommand::RotationStatus { key } => {
            let request = v1::GetKeyRotationStatusRequest { key_id: key };
            let r = kms
                .get_key_rotation_status(client.signed("GetKeyRotationStatus", request))
                .await?
                .into_inner();
            let mut value = json!({
                "KeyId": r.key_id,
                "KeyRotationEnabled": r.key_rotation_enabled,
            });
            if let Some(days) = r.rotation_period_in_days {
                value["RotationPeriodInDays"] = json!(days);
            }
            if let Some(date) = r.next_rotation_date {
                value["NextRotationDate"] = json!(rfc3339(date));
            }
            out.print(value, || match r.next_rotation_date {
                Some(date) if r.key_rotation_enabled => {
                    format!("Automatic rotation enabled; next on {}", rfc3339(date))
                }
                _ => "Automatic rotation disabled".into(),
            });
        }
        KeyCommand::Rotations { key } => {
            let request = v1::ListKeyRotationsRequest { key_id: key };
            let r = kms
                .list_key_rotations(client.signed("ListKeyRotations", request))
                .await?
                .into_inner();
            let rotations: Vec<Value> = r
                .rotations
                .iter()
                .map(|v| {
                    json!({
                        "KeyId": r.key_id,
                        "KeyVersion": v.key_version,
                        "RotationDate": rfc3339(v.rotation_date),
                        "RotationType": v.rotation_type,
                    })
                })
                .collect();
            out.print(
                json!({ "Rotations": rotations, "Truncated": false }),
                || {
                    r.rotations
                        .iter()
                        .map(|v| {
                            format!(
                                "version {:>4}  {}  {}",
                                v.key_version,
                                rfc3339(v.rotation_date),
                                v.rotation_type
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        KeyCommand::Tag { key, tags } => {
            let tags = parse_pairs(&tags, "tag")?
                .into_iter()
                .map(|(tag_key, tag_value)| v1::Tag { tag_key, tag_value })
                .collect();
            let request = v1::TagResourceRequest {
                key_id: key.clone(),
                tags,
            };
            kms.tag_resource(client.signed("TagResource", request))
                .await?;
            done(out, format!("Tagged {key}"));
        }
        KeyCommand::Untag { key, tag_keys } => {
            let request = v1::UntagResourceRequest {
                key_id: key.clone(),
                tag_keys,
            };
            kms.untag_resource(client.signed("UntagResource", request))
                .await?;
            done(out, format!("Untagged {key}"));
        }
        KeyCommand::Tags { key } => {
            let request = v1::ListResourceTagsRequest { key_id: key };
            let r = kms
                .list_resource_tags(client.signed("ListResourceTags", request))
                .await?
                .into_inner();
            let tags: Vec<Value> = r
                .tags
                .iter()
                .map(|t| json!({"TagKey": t.tag_key, "TagValue": t.tag_value}))
                .collect();
            out.print(json!({ "Tags": tags, "Truncated": false }), || {
                r.tags
                    .iter()
                    .map(|t| format!("{}={}", t.tag_key, t.tag_value))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

// --------------------------------------------------------------------------------- aliases

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Create alias/NAME for a key.
    Create {
        alias: String,
        #[arg(long)]
        key: String,
    },
    /// Point alias/NAME at another key.
    Update {
        alias: String,
        #[arg(long)]
        key: String,
    },
    Delete {
        alias: String,
    },
    /// List aliases (of one key with --key).
    List {
        #[arg(long)]
        key: Option<String>,
    },
}

pub async fn alias(ctx: Context, command: AliasCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut kms = client.kms();
    match command {
        AliasCommand::Create { alias, key } => {
            let request = v1::CreateAliasRequest {
                alias_name: alias.clone(),
                target_key_id: key.clone(),
            };
            kms.create_alias(client.signed("CreateAlias", request))
                .await?;
            done(out, format!("{alias} → {key}"));
        }
        AliasCommand::Update { alias, key } => {
            let request = v1::UpdateAliasRequest {
                alias_name: alias.clone(),
                target_key_id: key.clone(),
            };
            kms.update_alias(client.signed("UpdateAlias", request))
                .await?;
            done(out, format!("{alias} → {key}"));
        }
        AliasCommand::Delete { alias } => {
            let request = v1::DeleteAliasRequest {
                alias_name: alias.clone(),
            };
            kms.delete_alias(client.signed("DeleteAlias", request))
                .await?;
            done(out, format!("{alias} deleted"));
        }
        AliasCommand::List { key } => {
            let mut aliases = Vec::new();
            let mut marker = String::new();
            loop {
                let request = v1::ListAliasesRequest {
                    key_id: key.clone().unwrap_or_default(),
                    limit: 0,
                    marker: marker.clone(),
                };
                let page = kms
                    .list_aliases(client.signed("ListAliases", request))
                    .await?
                    .into_inner();
                aliases.extend(page.aliases);
                if !page.truncated {
                    break;
                }
                marker = page.next_marker;
            }
            let value: Vec<Value> = aliases
                .iter()
                .map(|a| {
                    json!({
                        "AliasName": a.alias_name,
                        "AliasArn": a.alias_arn,
                        "TargetKeyId": a.target_key_id,
                        "CreationDate": rfc3339(a.creation_date),
                        "LastUpdatedDate": rfc3339(a.last_updated_date),
                    })
                })
                .collect();
            out.print(json!({ "Aliases": value, "Truncated": false }), || {
                aliases
                    .iter()
                    .map(|a| format!("{}  {}", a.alias_name, a.target_key_id))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}
