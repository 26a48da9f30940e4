//! MFA subcommands, mirroring `aws iam …-mfa-device` and `aws sts get-session-token`: virtual
//! devices (create, enable, list, deactivate, delete) and temporary credentials with an MFA
//! code, printed as `export` lines.

use super::commands::{CliError, Context};
use crate::clock::rfc3339;
use crate::proto::v1;
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

type CliResult = Result<(), CliError>;

#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// A new virtual MFA device; its seed (Base32, an otpauth:// URI and a QR code) is shown
    /// only now.
    Create {
        name: String,
        /// Write the QR code (PNG) to this file, readable by its owner only.
        #[arg(long)]
        qr_png: Option<PathBuf>,
    },
    /// Enable a device for a user with two consecutive codes from it.
    Enable {
        serial_number: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        code1: String,
        #[arg(long)]
        code2: String,
    },
    /// The devices enabled for a user (yours without --user), or with --virtual every
    /// virtual device of the account.
    List {
        #[arg(long, conflicts_with = "virtual_devices")]
        user: Option<String>,
        #[arg(long = "virtual")]
        virtual_devices: bool,
    },
    /// Detach a device from its user (yours without --user); it stays until deleted.
    Deactivate {
        serial_number: String,
        #[arg(long)]
        user: Option<String>,
    },
    /// Delete a device that is enabled for no one.
    Delete { serial_number: String },
}

/// `keyhaven session-token`: temporary credentials of the caller, with MFA when given.
#[derive(Debug, Args)]
pub struct SessionTokenArgs {
    /// The caller's MFA device (`arn:…:mfa/NAME`), with --code.
    #[arg(long, requires = "code")]
    mfa_serial: Option<String>,
    /// The device's current six-digit code.
    #[arg(long, requires = "mfa_serial")]
    code: Option<String>,
    /// 900-129600 (default 43200; the root: at most 3600).
    #[arg(long)]
    duration_seconds: Option<u32>,
}

/// Writes `bytes` to a new file only its owner may read: the QR code holds the seed.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .map_err(|e| CliError::Local(format!("cannot write {}: {e}", path.display())))
}

pub async fn mfa(ctx: Context, command: MfaCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut iam = client.iam();
    match command {
        MfaCommand::Create { name, qr_png } => {
            let r = iam
                .create_virtual_mfa_device(client.signed_iam(
                    "CreateVirtualMFADevice",
                    v1::CreateVirtualMfaDeviceRequest {
                        virtual_mfa_device_name: name,
                    },
                ))
                .await?
                .into_inner();
            if let Some(path) = &qr_png {
                write_private(path, &r.qr_code_png)?;
            }
            let mut device = json!({
                "SerialNumber": r.serial_number,
                "Base32StringSeed": r.base32_string_seed,
            });
            if qr_png.is_none() {
                device["QRCodePNG"] =
                    Value::from(base64::engine::general_purpose::STANDARD.encode(&r.qr_code_png));
            }
            out.print(json!({ "VirtualMFADevice": device }), || {
                let written = qr_png
                    .as_ref()
                    .map(|p| format!("\n# QR code written to {}", p.display()))
                    .unwrap_or_default();
                format!(
                    "# MFA device {}; the seed is shown only now.\nSeed (Base32): {}\nURI: {}{written}",
                    r.serial_number, r.base32_string_seed, r.otpauth_uri
                )
            });
        }
        MfaCommand::Enable {
            serial_number,
            user,
            code1,
            code2,
        } => {
            let request = v1::EnableMfaDeviceRequest {
                user_name: user.clone(),
                serial_number: serial_number.clone(),
                authentication_code1: code1,
                authentication_code2: code2,
            };
            iam.enable_mfa_device(client.signed_iam("EnableMFADevice", request))
                .await?;
            out.print(json!({}), || {
                format!("MFA device {serial_number} is enabled for {user}")
            });
        }
        MfaCommand::List {
            virtual_devices: true,
            ..
        } => {
            let r = iam
                .list_virtual_mfa_devices(client.signed_iam(
                    "ListVirtualMFADevices",
                    v1::ListVirtualMfaDevicesRequest::default(),
                ))
                .await?
                .into_inner();
            let devices: Vec<Value> = r
                .virtual_mfa_devices
                .iter()
                .map(|d| {
                    let mut device = json!({ "SerialNumber": d.serial_number });
                    if !d.user_name.is_empty() {
                        device["User"] = json!({ "UserName": d.user_name });
                        device["EnableDate"] = Value::from(rfc3339(d.enable_date));
                    }
                    device
                })
                .collect();
            out.print(json!({ "VirtualMFADevices": devices }), || {
                r.virtual_mfa_devices
                    .iter()
                    .map(|d| {
                        let user = if d.user_name.is_empty() {
                            "(unassigned)"
                        } else {
                            &d.user_name
                        };
                        format!("{}  {user}", d.serial_number)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        MfaCommand::List { user, .. } => {
            let r = iam
                .list_mfa_devices(client.signed_iam(
                    "ListMFADevices",
                    v1::ListMfaDevicesRequest {
                        user_name: user.unwrap_or_default(),
                    },
                ))
                .await?
                .into_inner();
            let devices: Vec<Value> = r
                .mfa_devices
                .iter()
                .map(|d| {
                    json!({
                        "UserName": d.user_name,
                        "SerialNumber": d.serial_number,
                        "EnableDate": rfc3339(d.enable_date),
                    })
                })
                .collect();
            out.print(json!({ "MFADevices": devices }), || {
                r.mfa_devices
                    .iter()
                    .map(|d| format!("{}  {}", d.serial_number, d.user_name))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        MfaCommand::Deactivate {
            serial_number,
            user,
        } => {
            let request = v1::DeactivateMfaDeviceRequest {
                user_name: user.unwrap_or_default(),
                serial_number: serial_number.clone(),
            };
            iam.deactivate_mfa_device(client.signed_iam("DeactivateMFADevice", request))
                .await?;
            out.print(json!({}), || {
                format!("MFA device {serial_number} is deactivated")
            });
        }
        MfaCommand::Delete { serial_number } => {
            let request = v1::DeleteVirtualMfaDeviceRequest {
                serial_number: serial_number.clone(),
            };
            iam.delete_virtual_mfa_device(client.signed_iam("DeleteVirtualMFADevice", request))
                .await?;
            out.print(json!({}), || format!("MFA device {serial_number} deleted"));
        }
    }
    Ok(())
}

pub async fn session_token(ctx: Context, args: SessionTokenArgs) -> CliResult {
    let Context { client, out } = ctx;
    let request = v1::GetSessionTokenRequest {
        duration_seconds: args.duration_seconds,
        serial_number: args.mfa_serial.unwrap_or_default(),
        token_code: args.code.unwrap_or_default(),
    };
    let c = client
        .iam()
        .get_session_token(client.signed_iam("GetSessionToken", request))
        .await?
        .into_inner()
        .credentials
        .unwrap_or_default();
    out.print_session(&c, "Session", serde_json::Map::new());
    Ok(())
}
