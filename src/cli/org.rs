//! `keyhaven org`: the organisation, as the management account's principals see it (AWS
//! Organizations' `create-account`, `list-accounts`, `create-policy`, `attach-policy`, …).

use super::commands::{CliError, Context};
use crate::clock::rfc3339;
use crate::proto::v1;
use crate::proto::v1::identity_service_client::IdentityServiceClient;
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;
use tonic::transport::Channel;

type CliResult = Result<(), CliError>;

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Make a member account; its root access key is shown only now.
    CreateAccount { name: String },
    /// The member accounts, and the guardrails attached to the root.
    ListAccounts,
    /// Guardrail policies (service control policies): create, show, list, delete, attach,
    /// detach.
    #[command(subcommand)]
    Guardrail(GuardrailCommand),
}

#[derive(Debug, Subcommand)]
pub enum GuardrailCommand {
    /// Create a guardrail policy from a JSON document in a file.
    Create {
        name: String,
        document: PathBuf,
        #[arg(long, default_value = "")]
        description: String,
    },
    Show {
        name: String,
    },
    List,
    /// Delete a guardrail policy attached to nothing.
    Delete {
        name: String,
    },
    /// Attach to `root` or to a member account id.
    Attach {
        name: String,
        target: String,
    },
    Detach {
        name: String,
        target: String,
    },
}

fn account(a: &v1::Account) -> Value {
    json!({
        "Id": a.id,
        "Arn": a.arn,
        "Name": a.name,
        "JoinedTimestamp": rfc3339(a.joined_timestamp),
        "GuardrailPolicies": a.guardrail_policies,
    })
}

fn policy(p: &v1::GuardrailPolicy) -> Value {
    let document: Value =
        serde_json::from_str(&p.document).unwrap_or_else(|_| Value::from(p.document.clone()));
    json!({
        "PolicyName": p.policy_name,
        "Description": p.description,
        "Document": document,
        "CreateDate": rfc3339(p.create_date),
        "Targets": p.targets,
    })
}

pub async fn org(ctx: Context, command: OrgCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut iam = client.iam();
    match command {
        OrgCommand::CreateAccount { name } => {
            let r = iam
                .create_account(client.signed_iam(
                    "CreateAccount",
                    v1::CreateAccountRequest { account_name: name },
                ))
                .await?
                .into_inner();
            let made = r.account.unwrap_or_default();
            out.print(
                json!({
                    "Account": account(&made),
                    "RootAccessKey": {
                        "AccessKeyId": r.root_access_key_id,
                        "SecretAccessKey": r.root_secret_access_key,
                    },
                }),
                || {
                    format!(
                        "# account {} ({}); its root secret is shown only now.\n\
                         export KEYHAVEN_ACCESS_KEY_ID={}\nexport KEYHAVEN_SECRET_ACCESS_KEY={}",
                        made.id, made.name, r.root_access_key_id, r.root_secret_access_key
                    )
                },
            );
        }
        OrgCommand::ListAccounts => {
            let r = iam
                .list_accounts(client.signed_iam("ListAccounts", v1::ListAccountsRequest {}))
                .await?
                .into_inner();
            out.print(
                json!({
                    "ManagementAccountId": r.management_account_id,
                    "RootGuardrailPolicies": r.root_guardrail_policies,
                    "Accounts": r.accounts.iter().map(account).collect::<Vec<_>>(),
                }),
                || {
                    let mut lines = vec![format!(
                        "management {} (root guardrails: {})",
                        r.management_account_id,
                        r.root_guardrail_policies.join(", ")
                    )];
                    lines.extend(r.accounts.iter().map(|a| {
                        format!(
                            "{}  {}  ({})",
                            a.id,
                            a.name,
                            a.guardrail_policies.join(", ")
                        )
                    }));
                    lines.join("\n")
                },
            );
        }
        OrgCommand::Guardrail(command) => guardrail(&client, &mut iam, &out, command).await?,
    }
    Ok(())
}

async fn guardrail(
    client: &crate::client::Client,
    iam: &mut IdentityServiceClient<Channel>,
    out: &super::output::Output,
    command: GuardrailCommand,
) -> CliResult {
    let show = |r: v1::GuardrailPolicyResponse| {
        let p = r.policy.unwrap_or_default();
        out.print(json!({ "Policy": policy(&p) }), || {
            format!(
                "{} (attached to: {})\n{}",
                p.policy_name,
                p.targets.join(", "),
                p.document
            )
        });
    };
    match command {
        GuardrailCommand::Create {
            name,
            document,
            description,
        } => {
            let document = super::identity::read_file(&document)?;
            let r = iam
                .create_guardrail_policy(client.signed_iam(
                    "CreateGuardrailPolicy",
                    v1::CreateGuardrailPolicyRequest {
                        policy_name: name,
                        description,
                        document,
                    },
                ))
                .await?
                .into_inner();
            show(r);
        }
        GuardrailCommand::Show { name } => {
            let r = iam
                .get_guardrail_policy(client.signed_iam(
                    "GetGuardrailPolicy",
                    v1::GetGuardrailPolicyRequest { policy_name: name },
                ))
                .await?
                .into_inner();
            show(r);
        }
        GuardrailCommand::List => {
            let r = iam
                .list_guardrail_policies(
                    client.signed_iam("ListGuardrailPolicies", v1::ListGuardrailPoliciesRequest {}),
                )
                .await?
                .into_inner();
            out.print(
                json!({ "Policies": r.policies.iter().map(policy).collect::<Vec<_>>() }),
                || {
                    r.policies
                        .iter()
                        .map(|p| format!("{}  ({})", p.policy_name, p.targets.join(", ")))
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        GuardrailCommand::Delete { name } => {
            iam.delete_guardrail_policy(client.signed_iam(
                "DeleteGuardrailPolicy",
                v1::DeleteGuardrailPolicyRequest { policy_name: name },
            ))
            .await?;
        }
        GuardrailCommand::Attach { name, target } => {
            iam.attach_guardrail_policy(client.signed_iam(
                "AttachGuardrailPolicy",
                v1::AttachGuardrailPolicyRequest {
                    policy_name: name,
                    target_id: target,
                },
            ))
            .await?;
        }
        GuardrailCommand::Detach { name, target } => {
            iam.detach_guardrail_policy(client.signed_iam(
                "DetachGuardrailPolicy",
                v1::DetachGuardrailPolicyRequest {
                    policy_name: name,
                    target_id: target,
                },
            ))
            .await?;
        }
    }
    Ok(())
}
