//! The identity service's side of virtual MFA devices: which user a device may be enabled
//! for, and the temporary credentials a user gets for themselves (STS `GetSessionToken`).
//! The devices and their seeds are [`crate::auth::mfa`]'s.

use super::{EntityType, IamError, IamService, validate_name};
use crate::auth::mfa::{MfaDeviceInfo, MfaError, NewMfaDevice};
use crate::auth::{NewAccessKey, Principal, PrincipalKind};
use crate::clock::UnixSeconds;

/// `GetSessionToken` lasts 15 minutes to 36 hours for a user, at most 1 hour for the root;
/// 12 hours unless asked otherwise (AWS's bounds).
pub const MIN_USER_SESSION_SECONDS: u32 = 900;
pub const MAX_USER_SESSION_SECONDS: u32 = 129_600;
pub const MAX_ROOT_SESSION_SECONDS: u32 = 3_600;
pub const DEFAULT_USER_SESSION_SECONDS: u32 = 43_200;

impl From<MfaError> for IamError {
    fn from(error: MfaError) -> Self {
        match error {
            MfaError::NotFound(m) => IamError::NotFound(m),
            MfaError::AlreadyExists(m) => IamError::AlreadyExists(m),
            MfaError::LimitExceeded(m) => IamError::LimitExceeded(m),
            MfaError::InvalidCode(m) => IamError::InvalidAuthenticationCode(m),
            MfaError::InUse(m) => IamError::DeleteConflict(m),
            MfaError::Validation(m) => IamError::Validation(m),
            MfaError::Store(e) => IamError::Internal(e.to_string()),
        }
    }
}

impl IamService {
    /// A new virtual MFA device named `name`; its seed is in the answer and nowhere else.
    pub async fn create_virtual_mfa_device(&self, name: &str) -> Result<NewMfaDevice, IamError> {
        validate_name("MFA device", name)?;
        Ok(self.credentials.mfa().create(name).await?)
    }

    /// Enables a device for `user` with two consecutive codes.
    pub async fn enable_mfa_device(
        &self,
        user: &str,
        serial: &str,
        code1: &str,
        code2: &str,
    ) -> Result<(), IamError> {
        // Under the gate: the user cannot be deleted between the check and the enabling.
        let _gate = self.gate.lock().await;
        let entity = self.require(EntityType::User, user)?;
        Ok(self
            .credentials
            .mfa()
            .enable(user, &entity.id, serial, code1, code2)
            .await?)
    }

    pub async fn deactivate_mfa_device(&self, user: &str, serial: &str) -> Result<(), IamError> {
        self.require(EntityType::User, user)?;
        Ok(self.credentials.mfa().deactivate(user, serial).await?)
    }

    pub async fn delete_virtual_mfa_device(&self, serial: &str) -> Result<(), IamError> {
        Ok(self.credentials.mfa().delete(serial).await?)
    }

    /// The devices enabled for `user`.
    pub fn list_mfa_devices(&self, user: &str) -> Result<Vec<MfaDeviceInfo>, IamError> {
        self.require(EntityType::User, user)?;
        Ok(self.credentials.mfa().list(Some(user)))
    }

    /// Every virtual device of the account.
    pub fn list_virtual_mfa_devices(&self) -> Vec<MfaDeviceInfo> {
        self.credentials.mfa().list(None)
    }

    /// Checks an MFA code of `principal`'s device `serial`: only a user has devices. Answers
    /// when the code was accepted; each code is accepted once.
    pub async fn verify_mfa_code(
        &self,
        principal: &Principal,
        serial: &str,
        code: &str,
    ) -> Result<UnixSeconds, IamError> {
        let PrincipalKind::User { name } = &principal.kind else {
            return Err(IamError::InvalidAuthenticationCode(
                "only a user's MFA devices can authenticate".into(),
            ));
        };
        let id = self.unique_id(EntityType::User, name).ok_or_else(|| {
            IamError::InvalidAuthenticationCode(
                "the MFA device is not enabled for the caller".into(),
            )
        })?;
        Ok(self
            .credentials
            .mfa()
            .verify(name, &id, serial, code)
            .await?)
    }

    /// Temporary credentials of `principal` itself (a user, or the root), issued against an
    /// MFA code accepted at `mfa_authenticated` when given.
    pub async fn get_session_token(
        &self,
        principal: &Principal,
        duration_seconds: Option<u32>,
        mfa_authenticated: Option<UnixSeconds>,
    ) -> Result<NewAccessKey, IamError> {
        self.user_session(principal, duration_seconds, mfa_authenticated, false)
            .await
    }

    /// The session of a user's sign-in with a password (and MFA code, when
    /// `mfa_authenticated`): as [`get_session_token`](Self::get_session_token)'s, and also
    /// allowed the IAM calls the user's policies allow, as the AWS console's session is.
    pub async fn sign_in_session(
        &self,
        principal: &Principal,
        duration_seconds: u32,
        mfa_authenticated: Option<UnixSeconds>,
    ) -> Result<NewAccessKey, IamError> {
        self.user_session(principal, Some(duration_seconds), mfa_authenticated, true)
            .await
    }

    async fn user_session(
        &self,
        principal: &Principal,
        duration_seconds: Option<u32>,
        mfa_authenticated: Option<UnixSeconds>,
        signed_in: bool,
    ) -> Result<NewAccessKey, IamError> {
        let max = match principal.kind {
            PrincipalKind::Root => MAX_ROOT_SESSION_SECONDS,
            _ => MAX_USER_SESSION_SECONDS,
        };
        // The root's sessions are cut to an hour rather than refused, as in AWS.
        let duration = duration_seconds
            .unwrap_or(DEFAULT_USER_SESSION_SECONDS)
            .min(if principal.kind == PrincipalKind::Root {
                max
            } else {
                u32::MAX
            });
        if !(MIN_USER_SESSION_SECONDS..=max).contains(&duration) {
            return Err(IamError::Validation(format!(
                "DurationSeconds must be between {MIN_USER_SESSION_SECONDS} and {max}; got {duration}"
            )));
        }
        let _gate = self.gate.lock().await;
        let user = match &principal.kind {
            PrincipalKind::Root => None,
            PrincipalKind::User { name } => {
                let entity = self.require(EntityType::User, name)?;
                Some((name.clone(), entity.id))
            }
            PrincipalKind::AssumedRole { .. } => {
                return Err(IamError::Validation(
                    "GetSessionToken takes long-term credentials of a user or the root".into(),
                ));
            }
        };
        Ok(self
            .credentials
            .create_user_session(
                user.as_ref().map(|(n, id)| (n.as_str(), id.as_str())),
                i64::from(duration),
                mfa_authenticated,
                signed_in,
                self.quotas.sessions_per_role,
            )
            .await?)
    }
}
