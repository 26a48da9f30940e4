//! Identity subcommands, mirroring `aws iam` / `aws sts`: users, groups, roles, their inline
//! policies, access keys, `assume-role`, `whoami`; and key policies and the simulator.

use super::certificates::{self, CertificateArgs};
use super::commands::{CliError, Context, parse_pairs};
use super::output::Output;
use crate::clock::rfc3339;
use crate::proto::v1;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

type CliResult = Result<(), CliError>;

pub(super) fn read_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Local(format!("cannot read {}: {e}", path.display())))
}

fn done(out: Output, what: String) {
    out.print(json!({}), || what);
}

/// `--policy-name P --policy-file F`.
#[derive(Debug, Args)]
pub struct PutPolicyArgs {
    name: String,
    #[arg(long)]
    policy_name: String,
    #[arg(long)]
    policy_file: PathBuf,
}

/// `--policy-name P`.
#[derive(Debug, Args)]
pub struct NamedPolicyArgs {
    name: String,
    #[arg(long)]
    policy_name: String,
}

/// Inline-policy subcommands shared by users, groups and roles.
#[derive(Debug, Subcommand)]
pub enum EntityCommand {
    /// Create it (roles: `role create NAME --trust-policy-file F`).
    Create {
        name: String,
        /// Roles only: who may assume the role.
        #[arg(long)]
        trust_policy_file: Option<PathBuf>,
    },
    Delete {
        name: String,
    },
    List,
    /// Add or replace an inline policy.
    PutPolicy(PutPolicyArgs),
    GetPolicy(NamedPolicyArgs),
    DeletePolicy(NamedPolicyArgs),
    ListPolicies {
        name: String,
    },
    /// Groups only: add a user.
    AddUser {
        group: String,
        user: String,
    },
    /// Groups only: remove a user.
    RemoveUser {
        group: String,
        user: String,
    },
    /// Users and roles: calls over mutual TLS with a client certificate of this identity
    /// and no signature act as NAME (`--subject CN` or `--uri URI`).
    BindCertificate(CertificateArgs),
    /// Users and roles: certificates of this identity are refused from now on.
    UnbindCertificate(CertificateArgs),
    /// Users and roles: the certificate identities bound.
    ListCertificates {
        name: String,
    },
}

fn entity_json(kind: v1::EntityType, name: &str, id: &str, arn: &str, created: i64) -> Value {
    let (label, id_label) = match kind {
        v1::EntityType::Group => ("Group", "GroupId"),
        v1::EntityType::Role => ("Role", "RoleId"),
        _ => ("User", "UserId"),
    };
    json!({ label: {
        format!("{label}Name"): name,
        id_label: id,
        "Arn": arn,
        "CreateDate": rfc3339(created),
    }})
}

pub async fn entity(ctx: Context, kind: v1::EntityType, command: EntityCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut iam = client.iam();
    let label = match kind {
        v1::EntityType::Group => "group",
        v1::EntityType::Role => "role",
        _ => "user",
    };
    match command {
        EntityCommand::Create {
            name,
            trust_policy_file,
        } => match kind {
            v1::EntityType::User => {
                let r = iam
                    .create_user(
                        client.signed_iam("CreateUser", v1::CreateUserRequest { user_name: name }),
                    )
                    .await?
                    .into_inner();
                let u = r.user.unwrap_or_default();
                out.print(
                    entity_json(kind, &u.user_name, &u.user_id, &u.arn, u.create_date),
                    || format!("Created user {} ({})", u.user_name, u.arn),
                );
            }
            v1::EntityType::Group => {
                let r = iam
                    .create_group(
                        client
                            .signed_iam("CreateGroup", v1::CreateGroupRequest { group_name: name }),
                    )
                    .await?
                    .into_inner();
                let g = r.group.unwrap_or_default();
                out.print(
                    entity_json(kind, &g.group_name, &g.group_id, &g.arn, g.create_date),
                    || format!("Created group {} ({})", g.group_name, g.arn),
                );
            }
            _ => {
                let file = trust_policy_file
                    .ok_or_else(|| CliError::Local("a role needs --trust-policy-file".into()))?;
                let request = v1::CreateRoleRequest {
                    role_name: name,
                    assume_role_policy_document: read_file(&file)?,
                };
                let r = iam
                    .create_role(client.signed_iam("CreateRole", request))
                    .await?
                    .into_inner();
                let role = r.role.unwrap_or_default();
                out.print(
                    entity_json(
                        kind,
                        &role.role_name,
                        &role.role_id,
                        &role.arn,
                        role.create_date,
                    ),
                    || format!("Created role {} ({})", role.role_name, role.arn),
                );
            }
        },
        EntityCommand::Delete { name } => {
            match kind {
                v1::EntityType::User => {
                    iam.delete_user(client.signed_iam(
                        "DeleteUser",
                        v1::DeleteUserRequest {
                            user_name: name.clone(),
                        },
                    ))
                    .await?;
                }
                v1::EntityType::Group => {
                    iam.delete_group(client.signed_iam(
                        "DeleteGroup",
                        v1::DeleteGroupRequest {
                            group_name: name.clone(),
                        },
                    ))
                    .await?;
                }
                _ => {
                    iam.delete_role(client.signed_iam(
                        "DeleteRole",
                        v1::DeleteRoleRequest {
                            role_name: name.clone(),
                        },
                    ))
                    .await?;
                }
            }
            done(out, format!("Deleted {label} {name}"));
        }
        EntityCommand::List => {
            let (key, rows): (&str, Vec<(Value, String)>) = match kind {
                v1::EntityType::User => {
                    let r = iam
                        .list_users(client.signed_iam("ListUsers", v1::ListUsersRequest {}))
                        .await?
                        .into_inner();
                    (
                        "Users",
                        r.users
                            .iter()
                            .map(|u| {
                                (
                                    entity_json(
                                        kind,
                                        &u.user_name,
                                        &u.user_id,
                                        &u.arn,
                                        u.create_date,
                                    )["User"]
                                        .clone(),
                                    u.arn.clone(),
                                )
                            })
                            .collect(),
                    )
                }
                v1::EntityType::Group => {
                    let r = iam
                        .list_groups(
                            client.signed_iam("ListGroups", v1::ListGroupsRequest::default()),
                        )
                        .await?
                        .into_inner();
                    (
                        "Groups",
                        r.groups
                            .iter()
                            .map(|g| {
                                let mut value = entity_json(
                                    kind,
                                    &g.group_name,
                                    &g.group_id,
                                    &g.arn,
                                    g.create_date,
                                )["Group"]
                                    .clone();
                                value["Users"] = json!(g.user_names);
                                (
                                    value,
                                    format!("{}  users: {}", g.arn, g.user_names.join(", ")),
                                )
                            })
                            .collect(),
                    )
                }
                _ => {
                    let r = iam
                        .list_roles(client.signed_iam("ListRoles", v1::ListRolesRequest {}))
                        .await?
                        .into_inner();
                    (
                        "Roles",
                        r.roles
                            .iter()
                            .map(|role| {
                                (
                                    entity_json(
                                        kind,
                                        &role.role_name,
                                        &role.role_id,
                                        &role.arn,
                                        role.create_date,
                                    )["Role"]
                                        .clone(),
                                    role.arn.clone(),
                                )
                            })
                            .collect(),
                    )
                }
            };
            out.print(
                json!({ key: rows.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>() }),
                || {
                    rows.iter()
                        .map(|(_, line)| line.clone())
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        EntityCommand::PutPolicy(args) => {
            let request = v1::PutEntityPolicyRequest {
                entity_type: kind as i32,
                entity_name: args.name.clone(),
                policy_name: args.policy_name.clone(),
                policy_document: read_file(&args.policy_file)?,
            };
            iam.put_entity_policy(client.signed_iam("PutEntityPolicy", request))
                .await?;
            done(
                out,
                format!("Policy {} put on {label} {}", args.policy_name, args.name),
            );
        }
        EntityCommand::GetPolicy(args) => {
            let request = v1::GetEntityPolicyRequest {
                entity_type: kind as i32,
                entity_name: args.name,
                policy_name: args.policy_name,
            };
            let r = iam
                .get_entity_policy(client.signed_iam("GetEntityPolicy", request))
                .await?
                .into_inner();
            let document: Value = serde_json::from_str(&r.policy_document)
                .unwrap_or(Value::String(r.policy_document.clone()));
            out.print(
                json!({
                    format!("{}Name", capitalised(label)): r.entity_name,
                    "PolicyName": r.policy_name,
                    "PolicyDocument": document,
                }),
                || r.policy_document.clone(),
            );
        }
        EntityCommand::DeletePolicy(args) => {
            let request = v1::DeleteEntityPolicyRequest {
                entity_type: kind as i32,
                entity_name: args.name.clone(),
                policy_name: args.policy_name.clone(),
            };
            iam.delete_entity_policy(client.signed_iam("DeleteEntityPolicy", request))
                .await?;
            done(
                out,
                format!(
                    "Policy {} deleted from {label} {}",
                    args.policy_name, args.name
                ),
            );
        }
        EntityCommand::ListPolicies { name } => {
            let request = v1::ListEntityPoliciesRequest {
                entity_type: kind as i32,
                entity_name: name,
            };
            let r = iam
                .list_entity_policies(client.signed_iam("ListEntityPolicies", request))
                .await?
                .into_inner();
            out.print(json!({ "PolicyNames": r.policy_names }), || {
                r.policy_names.join("\n")
            });
        }
        EntityCommand::AddUser { group, user } => {
            if kind != v1::EntityType::Group {
                return Err(CliError::Local("add-user is for groups".into()));
            }
            let request = v1::AddUserToGroupRequest {
                group_name: group.clone(),
                user_name: user.clone(),
            };
            iam.add_user_to_group(client.signed_iam("AddUserToGroup", request))
                .await?;
            done(out, format!("Added {user} to {group}"));
        }
        EntityCommand::RemoveUser { group, user } => {
            if kind != v1::EntityType::Group {
                return Err(CliError::Local("remove-user is for groups".into()));
            }
            let request = v1::RemoveUserFromGroupRequest {
                group_name: group.clone(),
                user_name: user.clone(),
            };
            iam.remove_user_from_group(client.signed_iam("RemoveUserFromGroup", request))
                .await?;
            done(out, format!("Removed {user} from {group}"));
        }
        EntityCommand::BindCertificate(args) => {
            return certificates::bind(Context { client, out }, kind, args).await;
        }
        EntityCommand::UnbindCertificate(args) => {
            return certificates::unbind(Context { client, out }, kind, args).await;
        }
        EntityCommand::ListCertificates { name } => {
            return certificates::list(Context { client, out }, kind, name).await;
        }
    }
    Ok(())
}

fn capitalised(label: &str) -> String {
    let mut chars = label.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[derive(Debug, Subcommand)]
pub enum AccessKeyCommand {
    /// A new access key for a user; its secret is shown only now.
    Create {
        #[arg(long)]
        user: String,
    },
    List {
        #[arg(long)]
        user: String,
    },
    /// Make a key Active or Inactive.
    Update {
        access_key_id: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        status: String,
    },
    Delete {
        access_key_id: String,
        #[arg(long)]
        user: String,
    },
}

pub async fn access_key(ctx: Context, command: AccessKeyCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut iam = client.iam();
    match command {
        AccessKeyCommand::Create { user } => {
            let r = iam
                .create_access_key(client.signed_iam(
                    "CreateAccessKey",
                    v1::CreateAccessKeyRequest { user_name: user },
                ))
                .await?
                .into_inner();
            let key = r.access_key.unwrap_or_default();
            out.print(
                json!({ "AccessKey": {
                    "UserName": key.user_name,
                    "AccessKeyId": key.access_key_id,
                    "Status": key.status,
                    "SecretAccessKey": r.secret_access_key,
                    "CreateDate": rfc3339(key.create_date),
                }}),
                || {
                    format!(
                        "# Access key for {}; the secret is shown only now:\nexport KEYHAVEN_ACCESS_KEY_ID={}\nexport KEYHAVEN_SECRET_ACCESS_KEY={}",
                        key.user_name, key.access_key_id, r.secret_access_key
                    )
                },
            );
        }
        AccessKeyCommand::List { user } => {
            let r = iam
                .list_access_keys(client.signed_iam(
                    "ListAccessKeys",
                    v1::ListAccessKeysRequest { user_name: user },
                ))
                .await?
                .into_inner();
            let keys: Vec<Value> = r
                .access_key_metadata
                .iter()
                .map(|k| {
                    json!({
                        "UserName": k.user_name,
                        "AccessKeyId": k.access_key_id,
                        "Status": k.status,
                        "CreateDate": rfc3339(k.create_date),
                    })
                })
                .collect();
            out.print(json!({ "AccessKeyMetadata": keys }), || {
                r.access_key_metadata
                    .iter()
                    .map(|k| format!("{}  {}", k.access_key_id, k.status))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AccessKeyCommand::Update {
            access_key_id,
            user,
            status,
        } => {
            let request = v1::UpdateAccessKeyRequest {
                user_name: user,
                access_key_id: access_key_id.clone(),
                status: status.clone(),
            };
            iam.update_access_key(client.signed_iam("UpdateAccessKey", request))
                .await?;
            done(out, format!("Access key {access_key_id} is {status}"));
        }
        AccessKeyCommand::Delete {
            access_key_id,
            user,
        } => {
            let request = v1::DeleteAccessKeyRequest {
                user_name: user,
                access_key_id: access_key_id.clone(),
            };
            iam.delete_access_key(client.signed_iam("DeleteAccessKey", request))
                .await?;
            done(out, format!("Access key {access_key_id} deleted"));
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct AssumeRoleArgs {
    role_arn: String,
    #[arg(long)]
    session_name: String,
    /// 900-43200 (default 3600).
    #[arg(long)]
    duration_seconds: Option<u32>,
    /// The caller's MFA device (its serial number, `arn:…:mfa/NAME`), with --code.
    #[arg(long, requires = "code")]
    mfa_serial: Option<String>,
    /// The device's current six-digit code.
    #[arg(long, requires = "mfa_serial")]
    code: Option<String>,
}

pub async fn assume_role(ctx: Context, args: AssumeRoleArgs) -> CliResult {
    let Context { client, out } = ctx;
    let request = v1::AssumeRoleRequest {
        role_arn: args.role_arn,
        role_session_name: args.session_name,
        duration_seconds: args.duration_seconds,
        serial_number: args.mfa_serial.unwrap_or_default(),
        token_code: args.code.unwrap_or_default(),
    };
    let r = client
        .iam()
        .assume_role(client.signed_iam("AssumeRole", request))
        .await?
        .into_inner();
    let c = r.credentials.unwrap_or_default();
    let more = json!({
        "AssumedRoleUser": {
            "AssumedRoleId": r.assumed_role_id,
            "Arn": r.assumed_role_arn,
        },
    });
    out.print_session(
        &c,
        &r.assumed_role_arn,
        more.as_object().cloned().unwrap_or_default(),
    );
    Ok(())
}

pub async fn whoami(ctx: Context) -> CliResult {
    let Context { client, out } = ctx;
    let r = client
        .iam()
        .get_caller_identity(
            client.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
        )
        .await?
        .into_inner();
    out.print(
        json!({ "UserId": r.user_id, "Account": r.account, "Arn": r.arn }),
        || r.arn.clone(),
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show a key's policy.
    Get { key: String },
    /// Replace a key's policy.
    Put {
        key: String,
        #[arg(long)]
        policy_file: PathBuf,
        /// Set the policy even if it would lock you out of changing it again.
        #[arg(long)]
        bypass_policy_lockout_safety_check: bool,
    },
    /// Check a policy document offline (no daemon): findings as IAM Access Analyzer gives
    /// them (ERROR where it would be refused, WARNING for parts that never take effect in
    /// Keyhaven, SUGGESTION for parts that change nothing). Exits 1 when there is an ERROR.
    Validate {
        #[arg(long)]
        policy_file: PathBuf,
        /// What the document is attached to: a user, group or role (identity), or a key or a
        /// role's trust (resource).
        #[arg(long, value_enum, default_value_t = PolicyType::Identity)]
        policy_type: PolicyType,
    },
    /// Would PRINCIPAL be allowed ACTION on RESOURCE (with the context given)?
    Simulate {
        #[arg(long)]
        principal: String,
        #[arg(long)]
        action: String,
        #[arg(long)]
        resource: String,
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
    },
}

/// `policy validate --policy-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyType {
    Identity,
    Resource,
}

/// `policy validate`: prints the findings (JSON: `{"findings": [...]}`); the exit code.
pub fn validate_policy(policy_file: &Path, policy_type: PolicyType, out: Output) -> i32 {
    let text = match read_file(policy_file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("keyhaven: {error}");
            return 2;
        }
    };
    let kind = match policy_type {
        PolicyType::Identity => crate::policy::PolicyKind::Identity,
        PolicyType::Resource => crate::policy::PolicyKind::Resource,
    };
    let findings = crate::policy::validate(&text, kind);
    out.print(json!({ "findings": findings }), || {
        if findings.is_empty() {
            return "no findings".into();
        }
        findings
            .iter()
            .map(|f| {
                let kind = serde_json::to_value(f.finding_type)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let at = if f.location.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", f.location)
                };
                format!("{kind} {}{at}: {}", f.issue_code, f.finding_details)
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let refused = findings
        .iter()
        .any(|f| f.finding_type == crate::policy::FindingType::Error);
    i32::from(refused)
}

pub async fn policy(ctx: Context, command: PolicyCommand) -> CliResult {
    let Context { client, out } = ctx;
    match command {
        PolicyCommand::Get { key } => {
            let request = v1::GetKeyPolicyRequest {
                key_id: key,
                policy_name: "default".into(),
            };
            let r = client
                .kms()
                .get_key_policy(client.signed("GetKeyPolicy", request))
                .await?
                .into_inner();
            out.print(
                json!({ "Policy": r.policy, "PolicyName": r.policy_name }),
                || {
                    serde_json::from_str::<Value>(&r.policy)
                        .ok()
                        .and_then(|v| serde_json::to_string_pretty(&v).ok())
                        .unwrap_or_else(|| r.policy.clone())
                },
            );
        }
        PolicyCommand::Put {
            key,
            policy_file,
            bypass_policy_lockout_safety_check,
        } => {
            let request = v1::PutKeyPolicyRequest {
                key_id: key.clone(),
                policy_name: "default".into(),
                policy: read_file(&policy_file)?,
                bypass_policy_lockout_safety_check,
            };
            client
                .kms()
                .put_key_policy(client.signed("PutKeyPolicy", request))
                .await?;
            done(out, format!("Policy of {key} replaced"));
        }
        PolicyCommand::Validate { .. } => {
            // Dispatched offline before any connection is made.
            return Err(CliError::Local(
                "policy validate needs no daemon; it is run on its own".into(),
            ));
        }
        PolicyCommand::Simulate {
            principal,
            action,
            resource,
            context,
        } => {
            let mut entries: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for pair in &context {
                let single = parse_pairs(std::slice::from_ref(pair), "context")?;
                for (k, v) in single {
                    entries.entry(k).or_default().push(v);
                }
            }
            let request = v1::SimulatePrincipalPolicyRequest {
                policy_source_arn: principal,
                action_name: action.clone(),
                resource_arn: resource.clone(),
                context_entries: entries
                    .into_iter()
                    .map(|(key, values)| v1::ContextEntry { key, values })
                    .collect(),
            };
            let r = client
                .iam()
                .simulate_principal_policy(client.signed_iam("SimulatePrincipalPolicy", request))
                .await?
                .into_inner();
            let matched: Vec<Value> = r
                .matched_statements
                .iter()
                .map(|m| json!({ "SourcePolicyId": m.source_policy_id, "Sid": m.sid }))
                .collect();
            let mut answer = json!({
                "EvalActionName": action,
                "EvalResourceName": resource,
                "EvalDecision": r.eval_decision,
                "MatchedStatements": matched,
            });
            // Only when a grant, not a policy, allowed the action.
            if !r.deciding_grant_id.is_empty() {
                answer["DecidingGrantId"] = json!(r.deciding_grant_id);
            }
            // Only when a guardrail refused the action.
            if !r.deciding_guardrail.is_empty() {
                answer["DecidingGuardrail"] = json!(r.deciding_guardrail);
            }
            out.print(answer, || {
                let decided_by = r
                    .matched_statements
                    .first()
                    .map(|m| {
                        if m.sid.is_empty() {
                            format!(" (by {})", m.source_policy_id)
                        } else {
                            format!(" (by {}, statement {})", m.source_policy_id, m.sid)
                        }
                    })
                    .unwrap_or_default();
                if !r.deciding_guardrail.is_empty() && decided_by.is_empty() {
                    format!(
                        "{} (by the guardrails of the {}: none allows it)",
                        r.eval_decision, r.deciding_guardrail
                    )
                } else if r.deciding_grant_id.is_empty() {
                    format!("{}{decided_by}", r.eval_decision)
                } else {
                    format!("{} (by grant {})", r.eval_decision, r.deciding_grant_id)
                }
            });
        }
    }
    Ok(())
}
