//! The STS operations (`AssumeRole`, `GetCallerIdentity`), transport-neutral: the gRPC
//! IdentityService and the AWS door's Query protocol are conversions onto these.

use super::kms::Outcome;
use crate::api::authorize::{Authorizer, CallContext};
use crate::auth::PrincipalKind;
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
            .assume_role(role, &role_id, &r.role_session_name, r.duration_seconds)
            .await?;
        let credentials = session.credentials;
        Ok(v1::AssumeRoleResponse {
            credentials: Some(v1::Credentials {
                access_key_id: credentials.access_key_id,
                secret_access_key: credentials.secret_access_key.expose().clone(),
                session_token: credentials
                    .session_token
                    .map(|t| t.expose().clone())
                    .unwrap_or_default(),
                expiration: session.expires.unwrap_or_default(),
            }),
            assumed_role_arn: session.principal_arn,
            assumed_role_id: format!("{role_id}:{}", r.role_session_name),
        })
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
