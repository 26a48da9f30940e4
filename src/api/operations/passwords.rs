//! Passwords: login profiles and the account's password policy (IAM's names and errors), a
//! user's own change of password, and sign-in: account, user name, password (and the MFA
//! code of the user's device, when it has one) for a one-hour session with the user's
//! permissions, as the user's own `GetSessionToken` session (made with MFA when a code was
//! given). Sign-in is admitted unsigned, as the web identity call is: the password is its
//! credential. Its failures are counted per user and per source and throttled.

use super::iam::IamOperations;
use super::kms::Outcome;
use super::sts::credentials;
use crate::api::accounts::Accounts;
use crate::api::authorize::CallContext;
use crate::api::gateway::AuditSlot;
use crate::api::status::ApiError;
use crate::auth::throttle::SourceKey;
use crate::auth::{Principal, PrincipalKind};
use crate::iam::EntityType;
use crate::iam::passwords::{PasswordError, PasswordPolicy, SignInCheck};
use crate::policy::Decision;
use crate::proto::v1;
use crate::secret::SecretString;
use tonic::Code;

/// The length of a signed-in session.
pub const SIGN_IN_SESSION_SECONDS: u32 = 3_600;

impl From<PasswordError> for ApiError {
    fn from(error: PasswordError) -> Self {
        match error {
            PasswordError::NotFound(m) => ApiError::new(Code::NotFound, "NoSuchEntityException", m),
            PasswordError::AlreadyExists(m) => {
                ApiError::new(Code::AlreadyExists, "EntityAlreadyExistsException", m)
            }
            PasswordError::Validation(m) => {
                ApiError::new(Code::InvalidArgument, "ValidationException", m)
            }
            PasswordError::PolicyViolation(m) => {
                ApiError::new(Code::InvalidArgument, "PasswordPolicyViolationException", m)
            }
            PasswordError::SignInFailed => ApiError::new(
                Code::Unauthenticated,
                "SignInFailedException",
                "the account, user name or password is not right",
            ),
            PasswordError::ResetRequired(m) => ApiError::new(
                Code::FailedPrecondition,
                "PasswordResetRequiredException",
                m,
            ),
            PasswordError::Throttled => ApiError::new(
                Code::ResourceExhausted,
                "ThrottlingException",
                "too many failed sign-ins for this user or from this address; try again later",
            ),
            PasswordError::Internal(m) => {
                tracing::error!(error = %m, "password store failed");
                ApiError::new(Code::Unavailable, "ServiceFailure", "try again later")
            }
        }
    }
}

fn profile_message(user: &str, created: i64, reset: bool) -> v1::LoginProfileResponse {
    v1::LoginProfileResponse {
        login_profile: Some(v1::LoginProfile {
            user_name: user.to_owned(),
            create_date: created,
            password_reset_required: reset,
        }),
    }
}

fn policy_of(m: v1::PasswordPolicy) -> PasswordPolicy {
    PasswordPolicy {
        minimum_password_length: if m.minimum_password_length == 0 {
            PasswordPolicy::default().minimum_password_length
        } else {
            m.minimum_password_length
        },
        require_symbols: m.require_symbols,
        require_numbers: m.require_numbers,
        require_uppercase_characters: m.require_uppercase_characters,
        require_lowercase_characters: m.require_lowercase_characters,
        allow_users_to_change_password: m.allow_users_to_change_password,
        max_password_age: m.max_password_age,
        password_reuse_prevention: m.password_reuse_prevention,
        hard_expiry: m.hard_expiry,
    }
}

impl IamOperations {
    /// The user `name`'s unique id, after `action` on it is authorised.
    fn user_for(&self, call: &CallContext, action: &str, name: &str) -> Result<String, ApiError> {
        self.allow(call, action, &self.iam.arn(EntityType::User, name))?;
        Ok(self.iam.require(EntityType::User, name)?.id)
    }

    pub async fn create_login_profile(
        &self,
        call: &CallContext,
        r: v1::CreateLoginProfileRequest,
    ) -> Outcome<v1::LoginProfileResponse> {
        let id = self.user_for(call, "iam:CreateLoginProfile", &r.user_name)?;
        let password = SecretString::new(r.password);
        let profile = self
            .iam
            .passwords()
            .create(
                &r.user_name,
                &id,
                &password,
                r.password_reset_required,
                self.iam.now(),
            )
            .await?;
        Ok(profile_message(
            &profile.user,
            profile.created,
            profile.password_reset_required,
        ))
    }

    pub async fn get_login_profile(
        &self,
        call: &CallContext,
        r: v1::GetLoginProfileRequest,
    ) -> Outcome<v1::LoginProfileResponse> {
        let id = self.user_for(call, "iam:GetLoginProfile", &r.user_name)?;
        let profile = self
            .iam
            .passwords()
            .profile(&r.user_name, &id)
            .ok_or_else(|| {
                PasswordError::NotFound(format!("the user '{}' has no login profile", r.user_name))
            })?;
        Ok(profile_message(
            &profile.user,
            profile.created,
            profile.password_reset_required,
        ))
    }

    pub async fn update_login_profile(
        &self,
        call: &CallContext,
        r: v1::UpdateLoginProfileRequest,
    ) -> Outcome<v1::UpdateLoginProfileResponse> {
        let id = self.user_for(call, "iam:UpdateLoginProfile", &r.user_name)?;
        let password = r.password.map(SecretString::new);
        self.iam
            .passwords()
            .update(
                &r.user_name,
                &id,
                password.as_ref(),
                r.password_reset_required,
                self.iam.now(),
            )
            .await?;
        // A password an administrator replaced ends the sessions signed in with the old one.
        if password.is_some() {
            self.end_sign_in_sessions(&r.user_name, None).await?;
        }
        Ok(v1::UpdateLoginProfileResponse {})
    }

    pub async fn delete_login_profile(
        &self,
        call: &CallContext,
        r: v1::DeleteLoginProfileRequest,
    ) -> Outcome<v1::DeleteLoginProfileResponse> {
        self.user_for(call, "iam:DeleteLoginProfile", &r.user_name)?;
        self.iam.passwords().delete(&r.user_name).await?;
        self.end_sign_in_sessions(&r.user_name, None).await?;
        Ok(v1::DeleteLoginProfileResponse {})
    }

    /// A user's change of their own password: allowed by the account's policy
    /// (`AllowUsersToChangePassword`), or by the user's own policies (`iam:ChangePassword`).
    pub async fn change_password(
        &self,
        call: &CallContext,
        r: v1::ChangePasswordRequest,
    ) -> Outcome<v1::ChangePasswordResponse> {
        let PrincipalKind::User { name } = &call.caller.principal.kind else {
            return Err(ApiError::new(
                Code::PermissionDenied,
                "AccessDeniedException",
                "only an IAM user changes its own password",
            ));
        };
        // The account's policy stands in for an Allow; a Deny, a guardrail and the rule on
        // sessions made without MFA hold as for any IAM call.
        self.session_may_call(call, "iam:ChangePassword")?;
        let arn = self.iam.arn(EntityType::User, name);
        let context = self.authorizer.base_context(call, self.iam.now());
        let decision = self
            .authorizer
            .decide(call, "iam:ChangePassword", &arn, None, &context);
        let allowed = decision.allowed()
            || (decision.decision == Decision::ImplicitDeny
                && decision.guardrail.is_none()
                && self.iam.passwords().users_may_change());
        if !allowed {
            return Err(ApiError::new(
                Code::PermissionDenied,
                "AccessDeniedException",
                format!(
                    "{} is not authorized to perform iam:ChangePassword on resource {arn}",
                    call.caller.principal.arn
                ),
            ));
        }
        let id = self.iam.require(EntityType::User, name)?.id;
        let (old, new) = (
            SecretString::new(r.old_password),
            SecretString::new(r.new_password),
        );
        self.iam
            .passwords()
            .change(name, &id, &old, &new, self.iam.now())
            .await?;
        // The user's other sign-ins end; the session that changed it goes on.
        self.end_sign_in_sessions(name, Some(&call.caller.access_key_id))
            .await?;
        Ok(v1::ChangePasswordResponse {})
    }

    /// Ends `user`'s sign-in sessions (but `keep`), on every daemon: their credentials go.
    async fn end_sign_in_sessions(&self, user: &str, keep: Option<&str>) -> Result<(), ApiError> {
        let ended = self
            .iam
            .credentials()
            .end_sign_in_sessions(user, keep)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, user, "sign-in sessions not ended");
                ApiError::new(
                    Code::Unavailable,
                    "ServiceFailure",
                    "the password changed, but the sessions signed in with the old one could not be ended; try again",
                )
            })?;
        if ended > 0 {
            tracing::info!(user, ended, "sign-in sessions ended: the password changed");
        }
        Ok(())
    }

    pub async fn update_account_password_policy(
        &self,
        call: &CallContext,
        r: v1::PasswordPolicy,
    ) -> Outcome<v1::UpdateAccountPasswordPolicyResponse> {
        self.allow(call, "iam:UpdateAccountPasswordPolicy", "*")?;
        self.iam.passwords().set_policy(policy_of(r)).await?;
        Ok(v1::UpdateAccountPasswordPolicyResponse {})
    }

    pub async fn get_account_password_policy(
        &self,
        call: &CallContext,
        _r: v1::GetAccountPasswordPolicyRequest,
    ) -> Outcome<v1::GetAccountPasswordPolicyResponse> {
        self.allow(call, "iam:GetAccountPasswordPolicy", "*")?;
        let p =
            self.iam.passwords().policy().ok_or_else(|| {
                PasswordError::NotFound("the account has no password policy".into())
            })?;
        Ok(v1::GetAccountPasswordPolicyResponse {
            password_policy: Some(v1::PasswordPolicy {
                minimum_password_length: p.minimum_password_length,
                require_symbols: p.require_symbols,
                require_numbers: p.require_numbers,
                require_uppercase_characters: p.require_uppercase_characters,
                require_lowercase_characters: p.require_lowercase_characters,
                allow_users_to_change_password: p.allow_users_to_change_password,
                max_password_age: p.max_password_age,
                password_reuse_prevention: p.password_reuse_prevention,
                hard_expiry: p.hard_expiry,
            }),
        })
    }

    pub async fn delete_account_password_policy(
        &self,
        call: &CallContext,
        _r: v1::DeleteAccountPasswordPolicyRequest,
    ) -> Outcome<v1::DeleteAccountPasswordPolicyResponse> {
        self.allow(call, "iam:DeleteAccountPasswordPolicy", "*")?;
        self.iam.passwords().delete_policy().await?;
        Ok(v1::DeleteAccountPasswordPolicyResponse {})
    }
}

/// Sign-in, for the accounts a daemon serves.
pub struct SignInOperations<'a> {
    accounts: &'a Accounts,
}

impl<'a> SignInOperations<'a> {
    pub fn new(accounts: &'a Accounts) -> Self {
        Self { accounts }
    }

    pub async fn sign_in(
        &self,
        source_ip: Option<std::net::IpAddr>,
        audit: &AuditSlot,
        r: v1::SignInRequest,
    ) -> Outcome<v1::SignInResponse> {
        let password = SecretString::new(r.password);
        let new_password = (!r.new_password.is_empty()).then(|| SecretString::new(r.new_password));
        // An account the daemon does not serve is checked against the management account's
        // passwords for no user: the same answer, after the same work.
        // Signed in to by its id or by its name in the organisation.
        let account_id = self.accounts.named(&r.account_id);
        let (account, known) = match self.accounts.account(&account_id) {
            Some(account) => (account, true),
            None => (self.accounts.management()?, false),
        };
        let iam = account.identities();
        let now = iam.now();
        let failures = self.accounts.sign_in_failures();
        let by_user = format!("user:{account_id}:{}", r.user_name);
        let by_source = format!("source:{}", SourceKey::of(source_ip));
        if failures.over(&by_user, now) || failures.over(&by_source, now) {
            return Err(PasswordError::Throttled.into());
        }
        let user_id = if known {
            iam.unique_id(EntityType::User, &r.user_name)
        } else {
            None
        };
        let check = match iam
            .passwords()
            .check(&r.user_name, user_id.as_deref(), &password, now)
            .await
        {
            Ok(check) => check,
            Err(PasswordError::SignInFailed) => {
                failures.note(by_user, now);
                failures.note(by_source, now);
                return Err(PasswordError::SignInFailed.into());
            }
            Err(other) => return Err(other.into()),
        };
        let principal = Principal {
            arn: iam.arn(EntityType::User, &r.user_name),
            account_id: iam.account_id().to_owned(),
            kind: PrincipalKind::User {
                name: r.user_name.clone(),
            },
        };
        audit.set_principal(principal.arn.clone());
        // A user with an MFA device signs in with its code, before anything is changed.
        let devices = iam
            .list_mfa_devices(&r.user_name)?
            .into_iter()
            .filter(|d| d.enabled.is_some())
            .collect::<Vec<_>>();
        let mfa_authenticated = match devices.first() {
            None => None,
            Some(_) if r.mfa_code.is_empty() => {
                return Err(ApiError::new(
                    Code::PermissionDenied,
                    "AccessDeniedException",
                    "this user signs in with the code of its MFA device",
                ));
            }
            Some(device) => Some(
                iam.verify_mfa_code(&principal, &device.serial_number, &r.mfa_code)
                    .await?,
            ),
        };
        if check == SignInCheck::NewPasswordNeeded {
            let Some(new_password) = new_password else {
                return Err(PasswordError::ResetRequired(
                    "the password must be changed: sign in again with a new password".into(),
                )
                .into());
            };
            let id = user_id.ok_or(PasswordError::SignInFailed)?;
            iam.passwords()
                .update(&r.user_name, &id, Some(&new_password), None, now)
                .await?;
        }
        let session = iam
            .sign_in_session(&principal, SIGN_IN_SESSION_SECONDS, mfa_authenticated)
            .await?;
        Ok(v1::SignInResponse {
            credentials: Some(credentials(&session)),
            user_arn: principal.arn,
        })
    }
}
