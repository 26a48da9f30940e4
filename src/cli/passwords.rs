//! Passwords from the command line: login profiles (`keyhaven login-profile …`), the
//! account's password policy (`keyhaven password-policy …`), a user's own change of password
//! and `keyhaven sign-in` (no credentials needed: the password is one), which prints a
//! session's `export` lines. Passwords are read from a file's first line, from
//! `KEYHAVEN_PASSWORD` (`KEYHAVEN_NEW_PASSWORD` for a new one), or from a prompt; never from
//! the command line, where other users of the machine could read them.

use super::commands::{CliError, Context};
use crate::clock::rfc3339;
use crate::proto::v1;
use crate::secret::SecretString;
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

type CliResult = Result<(), CliError>;

pub const PASSWORD_ENV: &str = "KEYHAVEN_PASSWORD";
pub const NEW_PASSWORD_ENV: &str = "KEYHAVEN_NEW_PASSWORD";

/// A password: from `file`'s first line, else the environment variable `env`, else a prompt.
fn read_password(file: Option<&Path>, env: &str, prompt: &str) -> Result<SecretString, CliError> {
    if let Some(path) = file {
        let text = SecretString::new(std::fs::read_to_string(path).map_err(|e| {
            CliError::Local(format!("cannot read password file {}: {e}", path.display()))
        })?);
        let first = text.expose().lines().next().unwrap_or_default();
        return Ok(SecretString::new(first.to_owned()));
    }
    if let Ok(value) = std::env::var(env) {
        return Ok(SecretString::new(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Local(format!(
            "no password: give a password file or set {env} (no terminal to prompt on)"
        )));
    }
    rpassword::prompt_password(prompt)
        .map(SecretString::new)
        .map_err(|e| CliError::Local(e.to_string()))
}

#[derive(Debug, Subcommand)]
pub enum LoginProfileCommand {
    /// Give a user a password.
    Create {
        user: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The user must set a new password at the next sign-in.
        #[arg(long)]
        reset_required: bool,
    },
    Show {
        user: String,
    },
    /// Set a new password for a user (an administrator's reset).
    Update {
        user: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        reset_required: bool,
    },
    Delete {
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PasswordPolicyCommand {
    /// Set the account's password policy (AWS's members and defaults).
    Set(PolicyArgs),
    Show,
    Delete,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[arg(long, default_value_t = 8)]
    minimum_length: u32,
    #[arg(long)]
    require_symbols: bool,
    #[arg(long)]
    require_numbers: bool,
    #[arg(long)]
    require_uppercase: bool,
    #[arg(long)]
    require_lowercase: bool,
    /// Users may not change their own passwords (unless a policy allows iam:ChangePassword).
    #[arg(long)]
    no_user_change: bool,
    /// Days a password is good for (0: for ever).
    #[arg(long, default_value_t = 0)]
    max_age_days: u32,
    /// How many earlier passwords may not be used again (0: none).
    #[arg(long, default_value_t = 0)]
    reuse_prevention: u32,
    /// An expired password is reset by an administrator only.
    #[arg(long)]
    hard_expiry: bool,
}

/// `keyhaven sign-in`.
#[derive(Debug, Args)]
pub struct SignInArgs {
    /// The account id.
    #[arg(long)]
    account: String,
    #[arg(long)]
    user: String,
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// The current code of the user's MFA device, when it has one.
    #[arg(long)]
    mfa_code: Option<String>,
    /// A new password (file), when the old one has expired or must be reset.
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

/// `keyhaven change-password`: the caller's own.
#[derive(Debug, Args)]
pub struct ChangePasswordArgs {
    #[arg(long)]
    old_password_file: Option<PathBuf>,
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

pub async fn login_profile(ctx: Context, command: LoginProfileCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut iam = client.iam();
    let show = |p: v1::LoginProfile| {
        out.print(
            json!({ "LoginProfile": {
                "UserName": p.user_name,
                "CreateDate": rfc3339(p.create_date),
                "PasswordResetRequired": p.password_reset_required,
            }}),
            || {
                format!(
                    "{} (reset required: {})",
                    p.user_name, p.password_reset_required
                )
            },
        )
    };
    match command {
        LoginProfileCommand::Create {
            user,
            password_file,
            reset_required,
        } => {
            let password = read_password(password_file.as_deref(), PASSWORD_ENV, "Password: ")?;
            let r = iam
                .create_login_profile(client.signed_iam(
                    "CreateLoginProfile",
                    v1::CreateLoginProfileRequest {
                        user_name: user,
                        password: password.expose().clone(),
                        password_reset_required: reset_required,
                    },
                ))
                .await?
                .into_inner();
            show(r.login_profile.unwrap_or_default());
        }
        LoginProfileCommand::Show { user } => {
            let r = iam
                .get_login_profile(client.signed_iam(
                    "GetLoginProfile",
                    v1::GetLoginProfileRequest { user_name: user },
                ))
                .await?
                .into_inner();
            show(r.login_profile.unwrap_or_default());
        }
        LoginProfileCommand::Update {
            user,
            password_file,
            reset_required,
        } => {
            let password = read_password(password_file.as_deref(), PASSWORD_ENV, "New password: ")?;
            iam.update_login_profile(client.signed_iam(
                "UpdateLoginProfile",
                v1::UpdateLoginProfileRequest {
                    user_name: user,
                    password: Some(password.expose().clone()),
                    password_reset_required: Some(reset_required),
                },
            ))
            .await?;
        }
        LoginProfileCommand::Delete { user } => {
            iam.delete_login_profile(client.signed_iam(
                "DeleteLoginProfile",
                v1::DeleteLoginProfileRequest { user_name: user },
            ))
            .await?;
        }
    }
    Ok(())
}

pub async fn password_policy(ctx: Context, command: PasswordPolicyCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut iam = client.iam();
    match command {
        PasswordPolicyCommand::Set(a) => {
            iam.update_account_password_policy(client.signed_iam(
                "UpdateAccountPasswordPolicy",
                v1::PasswordPolicy {
                    minimum_password_length: a.minimum_length,
                    require_symbols: a.require_symbols,
                    require_numbers: a.require_numbers,
                    require_uppercase_characters: a.require_uppercase,
                    require_lowercase_characters: a.require_lowercase,
                    allow_users_to_change_password: !a.no_user_change,
                    max_password_age: a.max_age_days,
                    password_reuse_prevention: a.reuse_prevention,
                    hard_expiry: a.hard_expiry,
                },
            ))
            .await?;
        }
        PasswordPolicyCommand::Show => {
            let p = iam
                .get_account_password_policy(client.signed_iam(
                    "GetAccountPasswordPolicy",
                    v1::GetAccountPasswordPolicyRequest {},
                ))
                .await?
                .into_inner()
                .password_policy
                .unwrap_or_default();
            let value = json!({ "PasswordPolicy": {
                "MinimumPasswordLength": p.minimum_password_length,
                "RequireSymbols": p.require_symbols,
                "RequireNumbers": p.require_numbers,
                "RequireUppercaseCharacters": p.require_uppercase_characters,
                "RequireLowercaseCharacters": p.require_lowercase_characters,
                "AllowUsersToChangePassword": p.allow_users_to_change_password,
                "MaxPasswordAge": p.max_password_age,
                "PasswordReusePrevention": p.password_reuse_prevention,
                "HardExpiry": p.hard_expiry,
            }});
            let text = value.to_string();
            out.print(value, || text);
        }
        PasswordPolicyCommand::Delete => {
            iam.delete_account_password_policy(client.signed_iam(
                "DeleteAccountPasswordPolicy",
                v1::DeleteAccountPasswordPolicyRequest {},
            ))
            .await?;
        }
    }
    Ok(())
}

pub async fn change_password(ctx: Context, args: ChangePasswordArgs) -> CliResult {
    let Context { client, .. } = ctx;
    let old = read_password(
        args.old_password_file.as_deref(),
        PASSWORD_ENV,
        "Old password: ",
    )?;
    let new = read_password(
        args.new_password_file.as_deref(),
        NEW_PASSWORD_ENV,
        "New password: ",
    )?;
    client
        .iam()
        .change_password(client.signed_iam(
            "ChangePassword",
            v1::ChangePasswordRequest {
                old_password: old.expose().clone(),
                new_password: new.expose().clone(),
            },
        ))
        .await?;
    Ok(())
}

pub async fn sign_in(ctx: Context, args: SignInArgs) -> CliResult {
    let Context { client, out } = ctx;
    let password = read_password(args.password_file.as_deref(), PASSWORD_ENV, "Password: ")?;
    let new_password = match &args.new_password_file {
        Some(path) => Some(read_password(Some(path), NEW_PASSWORD_ENV, "")?),
        None => std::env::var(NEW_PASSWORD_ENV).ok().map(SecretString::new),
    };
    let r = client
        .iam()
        .sign_in(tonic::Request::new(v1::SignInRequest {
            account_id: args.account,
            user_name: args.user,
            password: password.expose().clone(),
            mfa_code: args.mfa_code.unwrap_or_default(),
            new_password: new_password.map(|p| p.expose().clone()).unwrap_or_default(),
        }))
        .await?
        .into_inner();
    let c = r.credentials.unwrap_or_default();
    let more = json!({ "UserArn": r.user_arn });
    out.print_session(
        &c,
        &r.user_arn,
        more.as_object().cloned().unwrap_or_default(),
    );
    Ok(())
}
