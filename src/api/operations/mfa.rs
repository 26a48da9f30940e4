//! The IAM operations on virtual MFA devices, transport-neutral: each is authorised as
//! `iam:<Operation>` on the device's ARN (`…:mfa/<name>`) or on the user's, as in AWS.

use super::iam::IamOperations;
use super::kms::Outcome;
use crate::api::authorize::CallContext;
use crate::auth::PrincipalKind;
use crate::auth::mfa::MfaDeviceInfo;
use crate::iam::{EntityType, IamError};
use crate::proto::v1;

impl IamOperations {
    fn mfa_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:iam::{}:mfa/{name}",
            self.iam.partition(),
            self.iam.account_id()
        )
    }

    /// The user a request names, or the calling user when it names none.
    fn user_or_caller(&self, call: &CallContext, named: &str) -> Option<String> {
        if !named.is_empty() {
            return Some(named.to_owned());
        }
        match &call.caller.principal.kind {
            PrincipalKind::User { name } => Some(name.clone()),
            _ => None,
        }
    }

    /// A new virtual MFA device; its seed, URI and QR code are in this answer only.
    pub async fn create_virtual_mfa_device(
        &self,
        call: &CallContext,
        request: v1::CreateVirtualMfaDeviceRequest,
    ) -> Outcome<v1::CreateVirtualMfaDeviceResponse> {
        let name = &request.virtual_mfa_device_name;
        self.allow(call, "iam:CreateVirtualMFADevice", &self.mfa_arn(name))?;
        let device = self.iam.create_virtual_mfa_device(name).await?;
        Ok(v1::CreateVirtualMfaDeviceResponse {
            serial_number: device.serial_number,
            base32_string_seed: device.base32_seed.expose().clone(),
            otpauth_uri: device.otpauth_uri.expose().clone(),
            qr_code_png: device.qr_code_png.expose().clone(),
        })
    }

    pub async fn enable_mfa_device(
        &self,
        call: &CallContext,
        r: v1::EnableMfaDeviceRequest,
    ) -> Outcome<v1::EnableMfaDeviceResponse> {
        self.allow(
            call,
            "iam:EnableMFADevice",
            &self.iam.arn(EntityType::User, &r.user_name),
        )?;
        self.iam
            .enable_mfa_device(
                &r.user_name,
                &r.serial_number,
                &r.authentication_code1,
                &r.authentication_code2,
            )
            .await?;
        Ok(v1::EnableMfaDeviceResponse {})
    }

    pub async fn deactivate_mfa_device(
        &self,
        call: &CallContext,
        r: v1::DeactivateMfaDeviceRequest,
    ) -> Outcome<v1::DeactivateMfaDeviceResponse> {
        let user = self.user_or_caller(call, &r.user_name).ok_or_else(|| {
            IamError::Validation("UserName is required unless a user calls".into())
        })?;
        self.allow(
            call,
            "iam:DeactivateMFADevice",
            &self.iam.arn(EntityType::User, &user),
        )?;
        self.iam
            .deactivate_mfa_device(&user, &r.serial_number)
            .await?;
        Ok(v1::DeactivateMfaDeviceResponse {})
    }

    pub async fn delete_virtual_mfa_device(
        &self,
        call: &CallContext,
        r: v1::DeleteVirtualMfaDeviceRequest,
    ) -> Outcome<v1::DeleteVirtualMfaDeviceResponse> {
        let resource = if r.serial_number.starts_with("arn:") {
            r.serial_number.clone()
        } else {
            self.mfa_arn(&r.serial_number)
        };
        self.allow(call, "iam:DeleteVirtualMFADevice", &resource)?;
        self.iam.delete_virtual_mfa_device(&r.serial_number).await?;
        Ok(v1::DeleteVirtualMfaDeviceResponse {})
    }

    /// The devices enabled for a user (the caller, when no user is named).
    pub async fn list_mfa_devices(
        &self,
        call: &CallContext,
        r: v1::ListMfaDevicesRequest,
    ) -> Outcome<v1::ListMfaDevicesResponse> {
        let Some(user) = self.user_or_caller(call, &r.user_name) else {
            // The root has no devices here.
            self.allow(call, "iam:ListMFADevices", &self.iam.root_arn())?;
            return Ok(v1::ListMfaDevicesResponse::default());
        };
        self.allow(
            call,
            "iam:ListMFADevices",
            &self.iam.arn(EntityType::User, &user),
        )?;
        let devices = self.iam.list_mfa_devices(&user)?;
        Ok(v1::ListMfaDevicesResponse {
            mfa_devices: devices
                .into_iter()
                .map(|d| v1::MfaDevice {
                    user_name: user.clone(),
                    serial_number: d.serial_number,
                    enable_date: d.enabled.unwrap_or_default(),
                })
                .collect(),
        })
    }

    pub async fn list_virtual_mfa_devices(
        &self,
        call: &CallContext,
        r: v1::ListVirtualMfaDevicesRequest,
    ) -> Outcome<v1::ListVirtualMfaDevicesResponse> {
        let wanted: fn(&MfaDeviceInfo) -> bool = match r.assignment_status.as_str() {
            "" | "Any" => |_| true,
            "Assigned" => |d| d.user.is_some(),
            "Unassigned" => |d| d.user.is_none(),
            _ => {
                return Err(IamError::Validation(
                    "AssignmentStatus must be Assigned, Unassigned or Any".into(),
                )
                .into());
            }
        };
        self.allow(call, "iam:ListVirtualMFADevices", &self.mfa_arn("*"))?;
        Ok(v1::ListVirtualMfaDevicesResponse {
            virtual_mfa_devices: self
                .iam
                .list_virtual_mfa_devices()
                .into_iter()
                .filter(wanted)
                .map(virtual_device)
                .collect(),
        })
    }
}

fn virtual_device(d: MfaDeviceInfo) -> v1::VirtualMfaDevice {
    v1::VirtualMfaDevice {
        serial_number: d.serial_number,
        user_name: d.user.unwrap_or_default(),
        enable_date: d.enabled.unwrap_or_default(),
        create_date: d.created,
    }
}

/// A code given without its device, or a device without its code.
pub(super) fn mfa_pair<'a>(
    serial_number: &'a str,
    token_code: &'a str,
) -> Result<Option<(&'a str, &'a str)>, IamError> {
    match (serial_number.is_empty(), token_code.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some((serial_number, token_code))),
        _ => Err(IamError::Validation(
            "SerialNumber and TokenCode are given together or not at all".into(),
        )),
    }
}
