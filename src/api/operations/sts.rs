//! The STS operations (`AssumeRole`, `GetSessionToken`, `GetCallerIdentity`),
//! transport-neutral: the gRPC IdentityService and the AWS door's Query protocol are
//! conversions onto these.
//!
//! `AssumeRole` and `GetSessionToken` take an MFA device's serial number and current code;
//! the credentials they issue then carry when the code was accepted, which
//! `aws:MultiFactorAuthPresent` and `aws:MultiFactorAuthAge` report on every later call. A
//! wrong, stale or reused code is `AccessDenied`, as in AWS STS, and changes nothing.

use super::kms::Outcome;
use crate::api::authorize::{Authorizer, CallContext};
use crate::auth::{CredentialKind, NewAccessKey, PrincipalKind};
use crate::clock::UnixSeconds;
use crate::iam::{EntityType, IamError, IamService};
use crate::keys::{KeyError, KeyService};
use crate::proto::v1;
use std::sync::Arc;

/// The STS operations over the identity service, for every door.
#[derive(Clone)]
pub struct StsOperations {
    iam: Arc<IamService>,
    keys: Arc<KeyService>,
    authorizer: Arc<Authorizer>,
}

impl StsOperations {
    pub fn new(iam: Arc<IamService>, keys: Arc<KeyService>, authorizer: Arc<Authorizer>) -> Self {
        Self {
            iam,
            keys,
            authorizer,
        }
    }

    /// `sts:AssumeRole`, judged by the role's trust policy; an unknown role is told only to a
    /// caller who may read roles.
    pub async fn assume_role(
        &self,
        call: &CallContext,
        r: v1::AssumeRoleRequest,
    ) -> Outcome<v1::AssumeRoleResponse> {
        let role = role_name(&self.iam, &r.role_arn)?;
        let mfa_authenticated = self
            .accept_mfa_code(call, &r.serial_number, &r.token_code)
            .await?;
        // The trust policy sees the MFA the request brings.
        let judged = match mfa_authenticated {
            Some(at) => &with_mfa(call, at),
            None => call,
        };
        let call = judged;
        let context = self.authorizer.base_context(call, self.keys.now());
        let role_id = match self.iam.role_trust(role) {
            Some((role_id, trust)) => {
                self.authorizer.require(
                    call,
                    "sts:AssumeRole",
                    &r.role_arn,
                    Some(&trust),
                    &context,
                )?;
                role_id
            }
            None => {
                // No such role: only a caller who may read roles learns that.
                self.authorizer
                    .require(call, "iam:GetRole", &r.role_arn, None, &context)
                    .map_err(|_| {
                        KeyError::AccessDenied(format!(
                            "{} is not authorized to perform sts:AssumeRole on resource {}",
                            call.caller.principal.arn, r.role_arn
                        ))
                    })?;
                return Err(IamError::NotFound(format!("the role '{role}' does not exist")).into());
            }
        };
        let session = self
            .iam
            .assume_role_with_mfa(
                role,
                &role_id,
                &r.role_session_name,
                r.duration_seconds,
                mfa_authenticated,
            )
            .await?;
        Ok(v1::AssumeRoleResponse {
            credentials: Some(credentials(&session)),
            assumed_role_arn: session.principal_arn,
            assumed_role_id: format!("{role_id}:{}", r.role_session_name),
        })
    }

    /// Temporary credentials of the caller itself, with MFA context when a code is given.
    /// Needs no permission, as in AWS, but only long-term credentials may ask.
    pub async fn get_session_token(
        &self,
        call: &CallContext,
        r: v1::GetSessionTokenRequest,
    ) -> Outcome<v1::GetSessionTokenResponse> {
        if call.caller.credential_kind != CredentialKind::LongTerm {
            return Err(KeyError::AccessDenied(
                "Cannot call GetSessionToken with session credentials".into(),
            )
            .into());
        }
        let mfa_authenticated = self
            .accept_mfa_code(call, &r.serial_number, &r.token_code)
            .await?;
        let session = self
            .iam
            .get_session_token(
                &call.caller.principal,
                r.duration_seconds,
                mfa_authenticated,
            )
            .await?;
        Ok(v1::GetSessionTokenResponse {
            credentials: Some(credentials(&session)),
        })
    }

    /// Accepts the caller's MFA code when the request brings one: when it was accepted, or
    /// `AccessDenied` saying why not.
    async fn accept_mfa_code(
        &self,
        call: &CallContext,
        serial_number: &str,
        token_code: &str,
    ) -> Result<Option<UnixSeconds>, crate::api::status::ApiError> {
        let Some((serial, code)) = super::mfa::mfa_pair(serial_number, token_code)? else {
            return Ok(None);
        };
        match self
            .iam
            .verify_mfa_code(&call.caller.principal, serial, code)
            .await
        {
            Ok(at) => Ok(Some(at)),
            Err(IamError::InvalidAuthenticationCode(why)) => {
                tracing::warn!(principal = %call.caller.principal.arn,
                    serial = %crate::keys::printable_input(serial), %why,
                    "an MFA code was refused");
                Err(
                    KeyError::AccessDenied(format!("MultiFactorAuthentication failed: {why}"))
                        .into(),
                )
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Who the caller is; needs no permission, as in AWS.
    pub async fn get_caller_identity(
        &self,
        call: &CallContext,
        _request: v1::GetCallerIdentityRequest,
    ) -> Outcome<v1::GetCallerIdentityResponse> {
        let principal = &call.caller.principal;
        let user_id = match &principal.kind {
            PrincipalKind::Root => principal.account_id.clone(),
            PrincipalKind::User { name } => self
                .iam
                .get(EntityType::User, name)
                .map(|u| u.id)
                .unwrap_or_default(),
            PrincipalKind::AssumedRole { role, session } => format!(
                "{}:{session}",
                self.iam
                    .get(EntityType::Role, role)
                    .map(|r| r.id)
                    .unwrap_or_default()
            ),
        };
        Ok(v1::GetCallerIdentityResponse {
            user_id,
            account: principal.account_id.clone(),
            arn: principal.arn.clone(),
        })
    }
}

/// The call as judged once its MFA code was accepted at `at`.
fn with_mfa(call: &CallContext, at: UnixSeconds) -> CallContext {
    let mut judged = call.clone();
    judged.caller.credential_kind = match call.caller.credential_kind {
        CredentialKind::Temporary { signed_in, .. } => CredentialKind::Temporary {
            mfa_authenticated: Some(at),
            signed_in,
        },
        CredentialKind::LongTerm => CredentialKind::Temporary {
            mfa_authenticated: Some(at),
            signed_in: false,
        },
    };
    judged
}

pub(super) fn credentials(session: &NewAccessKey) -> v1::Credentials {
    let credentials = &session.credentials;
    v1::Credentials {
        access_key_id: credentials.access_key_id.clone(),
        secret_access_key: credentials.secret_access_key.expose().clone(),
        session_token: credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().clone())
            .unwrap_or_default(),
        expiration: session.expires.unwrap_or_default(),
    }
}

/// The role name an ARN of this account names.
pub(super) fn role_name<'a>(iam: &IamService, arn: &'a str) -> Result<&'a str, IamError> {
    let prefix = format!("arn:{}:iam::{}:role/", iam.partition(), iam.account_id());
    arn.strip_prefix(&prefix)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            IamError::Validation(format!(
                "RoleArn must be {prefix}<name>; got '{}'",
                crate::keys::printable_input(arn)
            ))
        })
}
