//! The organisation's operations (AWS Organizations' names and errors): member accounts and
//! guardrail policies. Only the management account's principals may call them, and only as
//! their identity policies allow (`organizations:CreateAccount`, …, on `*`); a member
//! account's principals are refused whatever their policies say.

use super::kms::Outcome;
use crate::api::accounts::{AccountOperations, Accounts};
use crate::api::authorize::CallContext;
use crate::api::status::ApiError;
use crate::auth::{CredentialKind, PrincipalKind};
use crate::org::{GuardrailPolicy, MemberAccount, OrgError, Organisation, ROOT_TARGET};
use crate::proto::v1;
use std::sync::Arc;
use tonic::Code;

impl From<OrgError> for ApiError {
    fn from(error: OrgError) -> Self {
        let (code, reason) = match &error {
            OrgError::NotFound(reason, _) => (Code::NotFound, *reason),
            OrgError::Duplicate(reason, _) => (Code::AlreadyExists, *reason),
            OrgError::Constraint("InvalidInputException", _) => {
                (Code::InvalidArgument, "InvalidInputException")
            }
            OrgError::Constraint(reason, _) => (Code::FailedPrecondition, *reason),
            OrgError::MalformedPolicy(_) => {
                (Code::InvalidArgument, "MalformedPolicyDocumentException")
            }
            OrgError::Store(_) => (Code::Unavailable, "ServiceException"),
        };
        ApiError::new(code, reason, error)
    }
}

/// The organisation's operations, for the caller of one call.
pub struct OrgOperations<'a> {
    accounts: &'a Accounts,
}

impl<'a> OrgOperations<'a> {
    pub fn new(accounts: &'a Accounts) -> Self {
        Self { accounts }
    }

    /// Refuses callers of member accounts, then authorises `action` by the management
    /// account's policies; returns the organisation and the management account.
    fn allow(
        &self,
        call: &CallContext,
        action: &str,
    ) -> Result<(&'a Arc<Organisation>, Arc<AccountOperations>), ApiError> {
        let principal = &call.caller.principal;
        let org = self.accounts.organisation().ok_or_else(|| {
            ApiError::new(
                Code::FailedPrecondition,
                "AWSOrganizationsNotInUseException",
                "this daemon hosts no organisation",
            )
        })?;
        if principal.account_id != self.accounts.management_id() {
            return Err(ApiError::new(
                Code::PermissionDenied,
                "AccessDeniedException",
                format!(
                    "{} is not authorized to perform {action}: only the management account's \
                     principals manage the organisation",
                    principal.arn
                ),
            ));
        }
        // Long-term credentials, a role's session or a session made with MFA: a user's or the
        // root's own session made without MFA may not, a sign-in's included (unlike IAM's
        // calls, which a sign-in's session may make).
        if let CredentialKind::Temporary {
            mfa_authenticated: None,
            ..
        } = call.caller.credential_kind
            && !matches!(principal.kind, PrincipalKind::AssumedRole { .. })
        {
            return Err(ApiError::new(
                Code::PermissionDenied,
                "AccessDeniedException",
                format!(
                    "{} cannot call {action} with session credentials issued without MFA",
                    principal.arn
                ),
            ));
        }
        let management = self.accounts.management()?;
        management.iam.allow(call, action, "*")?;
        Ok((org, management))
    }

    fn account(&self, org: &Organisation, account: &MemberAccount, partition: &str) -> v1::Account {
        v1::Account {
            arn: format!(
                "arn:{partition}:organizations::{}:account/{}",
                self.accounts.management_id(),
                account.id
            ),
            id: account.id.clone(),
            name: account.name.clone(),
            joined_timestamp: account.joined,
            guardrail_policies: org.attached(&account.id),
        }
    }

    pub async fn create_account(
        &self,
        call: &CallContext,
        request: v1::CreateAccountRequest,
    ) -> Outcome<v1::CreateAccountResponse> {
        let (org, management) = self.allow(call, "organizations:CreateAccount")?;
        let account = org.new_account(&request.account_name)?;
        let opener = self.accounts.opener().ok_or_else(|| {
            ApiError::new(
                Code::FailedPrecondition,
                "AWSOrganizationsNotInUseException",
                "this daemon cannot make accounts",
            )
        })?;
        let made = opener.open_new(account).await.map_err(|e| {
            tracing::error!(error = %e, "a member account could not be made");
            ApiError::new(
                Code::Unavailable,
                "ServiceException",
                format!("the account could not be made: {e}"),
            )
        })?;
        call.audit.add_key(format!(
            "arn:{}:iam::{}:root",
            management.authorizer.iam().partition(),
            made.account.id
        ));
        let partition = management.authorizer.iam().partition().to_owned();
        Ok(v1::CreateAccountResponse {
            account: Some(self.account(org, &made.account, &partition)),
            root_access_key_id: made.root.credentials.access_key_id.clone(),
            root_secret_access_key: made.root.credentials.secret_access_key.expose().clone(),
        })
    }

    pub async fn list_accounts(
        &self,
        call: &CallContext,
        _request: v1::ListAccountsRequest,
    ) -> Outcome<v1::ListAccountsResponse> {
        let (org, management) = self.allow(call, "organizations:ListAccounts")?;
        let partition = management.authorizer.iam().partition().to_owned();
        Ok(v1::ListAccountsResponse {
            accounts: org
                .accounts()
                .iter()
                .map(|a| self.account(org, a, &partition))
                .collect(),
            root_guardrail_policies: org.attached(ROOT_TARGET),
            management_account_id: org.management_account().to_owned(),
        })
    }

    pub async fn create_guardrail_policy(
        &self,
        call: &CallContext,
        request: v1::CreateGuardrailPolicyRequest,
    ) -> Outcome<v1::GuardrailPolicyResponse> {
        let (org, _) = self.allow(call, "organizations:CreatePolicy")?;
        let r = request;
        let policy = org
            .create_policy(&r.policy_name, &r.description, &r.document)
            .await?;
        Ok(policy_response(org, policy))
    }

    pub async fn get_guardrail_policy(
        &self,
        call: &CallContext,
        request: v1::GetGuardrailPolicyRequest,
    ) -> Outcome<v1::GuardrailPolicyResponse> {
        let (org, _) = self.allow(call, "organizations:DescribePolicy")?;
        Ok(policy_response(org, org.policy(&request.policy_name)?))
    }

    pub async fn delete_guardrail_policy(
        &self,
        call: &CallContext,
        request: v1::DeleteGuardrailPolicyRequest,
    ) -> Outcome<v1::DeleteGuardrailPolicyResponse> {
        let (org, _) = self.allow(call, "organizations:DeletePolicy")?;
        org.delete_policy(&request.policy_name).await?;
        Ok(v1::DeleteGuardrailPolicyResponse {})
    }

    pub async fn list_guardrail_policies(
        &self,
        call: &CallContext,
        _request: v1::ListGuardrailPoliciesRequest,
    ) -> Outcome<v1::ListGuardrailPoliciesResponse> {
        let (org, _) = self.allow(call, "organizations:ListPolicies")?;
        Ok(v1::ListGuardrailPoliciesResponse {
            policies: org
                .policies()
                .into_iter()
                .filter_map(|p| policy_response(org, p).policy)
                .collect(),
        })
    }

    pub async fn attach_guardrail_policy(
        &self,
        call: &CallContext,
        request: v1::AttachGuardrailPolicyRequest,
    ) -> Outcome<v1::AttachGuardrailPolicyResponse> {
        let (org, _) = self.allow(call, "organizations:AttachPolicy")?;
        org.attach(&request.policy_name, &request.target_id).await?;
        Ok(v1::AttachGuardrailPolicyResponse {})
    }

    pub async fn detach_guardrail_policy(
        &self,
        call: &CallContext,
        request: v1::DetachGuardrailPolicyRequest,
    ) -> Outcome<v1::DetachGuardrailPolicyResponse> {
        let (org, _) = self.allow(call, "organizations:DetachPolicy")?;
        org.detach(&request.policy_name, &request.target_id).await?;
        Ok(v1::DetachGuardrailPolicyResponse {})
    }
}

fn policy_response(org: &Organisation, policy: GuardrailPolicy) -> v1::GuardrailPolicyResponse {
    let mut targets: Vec<String> = Vec::new();
    if org.attached(ROOT_TARGET).contains(&policy.name) {
        targets.push(ROOT_TARGET.to_owned());
    }
    for account in org.accounts() {
        if org.attached(&account.id).contains(&policy.name) {
            targets.push(account.id);
        }
    }
    v1::GuardrailPolicyResponse {
        policy: Some(v1::GuardrailPolicy {
            policy_name: policy.name,
            description: policy.description,
            document: policy.document,
            create_date: policy.created,
            targets,
        }),
    }
}
