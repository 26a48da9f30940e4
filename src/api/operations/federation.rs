//! Federation: OpenID Connect identity providers (IAM's `CreateOpenIDConnectProvider`, …)
//! and STS `AssumeRoleWithWebIdentity`, which turns a provider's token into a role's session
//! with no stored secret.
//!
//! `AssumeRoleWithWebIdentity` is the one call admitted without a signature (as in AWS): the
//! token is its credential. It is run by the role's account: the token is checked against
//! that account's provider for the token's issuer (see [`crate::iam::oidc`]), and the role's
//! trust policy is judged with the provider as the principal (`"Principal": {"Federated":
//! "arn:…:oidc-provider/<issuer>"}`) and the token's claims as the condition keys
//! `<issuer>:sub` and `<issuer>:aud` (and `<issuer>:amr`, multi-valued, and `<issuer>:azp`
//! when the token has them), with `aws:FederatedProvider`, as AWS does.

use super::iam::IamOperations;
use super::kms::Outcome;
use super::sts::{credentials, role_name};
use crate::api::accounts::Accounts;
use crate::api::authorize::CallContext;
use crate::api::gateway::AuditSlot;
use crate::api::status::ApiError;
use crate::clock::rfc3339;
use crate::iam::oidc::{OidcError, provider_name};
use crate::policy::{
    FEDERATED_PREFIX, Identity, Request as PolicyRequest, RequestContext, evaluate,
};
use crate::proto::v1;
use std::net::IpAddr;
use tonic::Code;

impl From<OidcError> for ApiError {
    fn from(error: OidcError) -> Self {
        let (code, reason, message) = match error {
            OidcError::NotFound(m) => (Code::NotFound, "NoSuchEntityException", m),
            OidcError::AlreadyExists(m) => (Code::AlreadyExists, "EntityAlreadyExistsException", m),
            OidcError::Validation(m) => (Code::InvalidArgument, "InvalidInputException", m),
            OidcError::LimitExceeded(m) => (Code::ResourceExhausted, "LimitExceededException", m),
            OidcError::InvalidToken(m) | OidcError::UnknownKey(m) => {
                (Code::Unauthenticated, "InvalidIdentityToken", m)
            }
            // STS names it IDPCommunicationError; IAM's registration, OpenIdIdpCommunicationError.
            OidcError::Fetch(m) => (Code::FailedPrecondition, "IDPCommunicationError", m),
            OidcError::Expired(m) => (Code::Unauthenticated, "ExpiredTokenException", m),
            OidcError::RejectedClaim(m) => (Code::PermissionDenied, "IDPRejectedClaim", m),
            OidcError::Store(m) => (Code::Unavailable, "ServiceFailure", m),
        };
        ApiError::new(code, reason, message)
    }
}

fn not_authorized(role_arn: &str) -> ApiError {
    ApiError::new(
        Code::PermissionDenied,
        "AccessDeniedException",
        format!(
            "Not authorized to perform sts:AssumeRoleWithWebIdentity on resource {}",
            crate::keys::printable_input(role_arn)
        ),
    )
}

/// `AssumeRoleWithWebIdentity`, for the accounts a daemon serves.
pub struct WebIdentityOperations<'a> {
    accounts: &'a Accounts,
}

impl<'a> WebIdentityOperations<'a> {
    pub fn new(accounts: &'a Accounts) -> Self {
        Self { accounts }
    }

    pub async fn assume_role_with_web_identity(
        &self,
        source_ip: Option<IpAddr>,
        audit: &AuditSlot,
        r: v1::AssumeRoleWithWebIdentityRequest,
    ) -> Outcome<v1::AssumeRoleWithWebIdentityResponse> {
        audit.add_key(r.role_arn.clone());
        // The role's account runs the call; a role ARN of no account here is refused as a
        // role the token may not assume.
        let account = r
            .role_arn
            .strip_prefix("arn:")
            .and_then(|_| r.role_arn.split(':').nth(4))
            .ok_or_else(|| not_authorized(&r.role_arn))?;
        let account = self
            .accounts
            .account(account)
            .ok_or_else(|| not_authorized(&r.role_arn))?;
        let iam = account.identities();
        let role = role_name(iam, &r.role_arn)?;
        let now = iam.now();
        let identity = iam
            .oidc()
            .verify_fetching(&r.web_identity_token, now)
            .await?;
        let provider_arn = iam.oidc_provider_arn(&identity.provider);
        audit.set_principal(format!("{provider_arn}:{}", identity.subject));
        let Some((role_id, trust)) = iam.role_trust(role) else {
            return Err(not_authorized(&r.role_arn));
        };
        let mut context = RequestContext::new();
        context
            .set("aws:FederatedProvider", provider_arn.clone())
            .set("aws:CurrentTime", rfc3339(now))
            .set("aws:EpochTime", now.to_string())
            .set(
                &format!("{}:sub", identity.provider),
                identity.subject.clone(),
            )
            .set(
                &format!("{}:aud", identity.provider),
                identity.audience.clone(),
            );
        if !identity.authentication_methods.is_empty() {
            context.set_all(
                &format!("{}:amr", identity.provider),
                identity.authentication_methods.clone(),
            );
        }
        if let Some(azp) = &identity.authorized_party {
            context.set(&format!("{}:azp", identity.provider), azp.clone());
        }
        if let Some(ip) = source_ip {
            context.set("aws:SourceIp", ip.to_string());
        }
        let principals = [format!("{FEDERATED_PREFIX}{provider_arn}")];
        let root = format!("arn:{}:iam::{}:root", iam.partition(), iam.account_id());
        let request = PolicyRequest {
            principals: &principals,
            account_root: &root,
            action: "sts:AssumeRoleWithWebIdentity",
            resource: &r.role_arn,
            context: &context,
        };
        if !evaluate(&request, Some(&trust), &Identity::Policies(&[])).allowed() {
            tracing::info!(role = %r.role_arn, provider = %identity.provider, "web identity refused by the trust policy");
            return Err(not_authorized(&r.role_arn));
        }
        let session = iam
            .assume_role_with_mfa(
                role,
                &role_id,
                &r.role_session_name,
                r.duration_seconds,
                None,
            )
            .await?;
        audit.add_key(session.principal_arn.clone());
        Ok(v1::AssumeRoleWithWebIdentityResponse {
            credentials: Some(credentials(&session)),
            assumed_role_arn: session.principal_arn,
            assumed_role_id: format!("{role_id}:{}", r.role_session_name),
            subject_from_web_identity_token: identity.subject,
            provider: identity.provider,
            audience: identity.audience,
        })
    }
}

/// The provider name an OIDC provider ARN of this account names.
fn provider_of<'a>(iam: &IamOperations, arn: &'a str) -> Result<&'a str, ApiError> {
    let prefix = iam.iam.oidc_provider_arn("");
    arn.strip_prefix(&prefix)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            OidcError::Validation(format!(
                "OpenIDConnectProviderArn must be {prefix}<issuer>; got '{}'",
                crate::keys::printable_input(arn)
            ))
            .into()
        })
}

impl IamOperations {
    pub async fn create_open_id_connect_provider(
        &self,
        call: &CallContext,
        r: v1::CreateOpenIdConnectProviderRequest,
    ) -> Outcome<v1::CreateOpenIdConnectProviderResponse> {
        let arn = self.iam.oidc_provider_arn(provider_name(&r.url));
        self.allow(call, "iam:CreateOpenIDConnectProvider", &arn)?;
        let provider = self
            .iam
            .oidc()
            .create(&r.url, r.client_id_list, &r.jwks, self.iam.now())
            .await
            .map_err(|error| match error {
                OidcError::Fetch(m) => ApiError::new(
                    Code::FailedPrecondition,
                    "OpenIdIdpCommunicationErrorException",
                    m,
                ),
                other => other.into(),
            })?;
        Ok(v1::CreateOpenIdConnectProviderResponse {
            open_id_connect_provider_arn: self.iam.oidc_provider_arn(provider.name()),
        })
    }

    pub async fn get_open_id_connect_provider(
        &self,
        call: &CallContext,
        r: v1::GetOpenIdConnectProviderRequest,
    ) -> Outcome<v1::GetOpenIdConnectProviderResponse> {
        let name = provider_of(self, &r.open_id_connect_provider_arn)?;
        self.allow(
            call,
            "iam:GetOpenIDConnectProvider",
            &r.open_id_connect_provider_arn,
        )?;
        let provider = self.iam.oidc().get(name).ok_or_else(|| {
            OidcError::NotFound(format!(
                "no OIDC provider named {}",
                crate::keys::printable_input(name)
            ))
        })?;
        Ok(v1::GetOpenIdConnectProviderResponse {
            url: provider.url,
            client_id_list: provider.client_ids,
            create_date: provider.created,
            jwks: provider.jwks,
        })
    }

    pub async fn list_open_id_connect_providers(
        &self,
        call: &CallContext,
        _r: v1::ListOpenIdConnectProvidersRequest,
    ) -> Outcome<v1::ListOpenIdConnectProvidersResponse> {
        self.allow(call, "iam:ListOpenIDConnectProviders", "*")?;
        Ok(v1::ListOpenIdConnectProvidersResponse {
            open_id_connect_provider_arns: self
                .iam
                .oidc()
                .list()
                .iter()
                .map(|p| self.iam.oidc_provider_arn(p.name()))
                .collect(),
        })
    }

    pub async fn delete_open_id_connect_provider(
        &self,
        call: &CallContext,
        r: v1::DeleteOpenIdConnectProviderRequest,
    ) -> Outcome<v1::DeleteOpenIdConnectProviderResponse> {
        let name = provider_of(self, &r.open_id_connect_provider_arn)?;
        self.allow(
            call,
            "iam:DeleteOpenIDConnectProvider",
            &r.open_id_connect_provider_arn,
        )?;
        self.iam.oidc().delete(name).await?;
        Ok(v1::DeleteOpenIdConnectProviderResponse {})
    }
}
