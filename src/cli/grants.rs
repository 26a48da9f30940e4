//! `keyhaven grant create|list|retire|revoke`: grants on a key, with the AWS CLI's JSON
//! shapes (`GrantId`, `GrantToken`, `Grants[]`).

use super::commands::{CliResult, Context, parse_pairs};
use crate::clock::rfc3339;
use crate::proto::v1;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Give a principal the use of a key for some operations.
    Create {
        /// The key (any key form).
        #[arg(long)]
        key: String,
        /// The grantee principal's ARN.
        #[arg(long)]
        grantee: String,
        /// The operations granted (Decrypt, Encrypt, GenerateDataKey, …); repeat for more.
        #[arg(long = "operation", required = true)]
        operations: Vec<String>,
        /// A principal that may retire the grant.
        #[arg(long)]
        retiring_principal: Option<String>,
        /// Encryption-context pair the request's context must be exactly (repeat for more).
        #[arg(
            long = "context-equals",
            value_name = "KEY=VALUE",
            conflicts_with = "context_subset"
        )]
        context_equals: Vec<String>,
        /// Encryption-context pair the request's context must include (repeat for more).
        #[arg(long = "context-subset", value_name = "KEY=VALUE")]
        context_subset: Vec<String>,
        /// A name that makes retries of this command answer the same grant.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List a key's grants (one grantee's with --grantee).
    List {
        #[arg(long)]
        key: String,
        #[arg(long)]
        grantee: Option<String>,
    },
    /// Retire a grant: by its token (--token), or its key and id.
    Retire {
        #[arg(long, required_unless_present = "token")]
        key: Option<String>,
        #[arg(long = "grant-id", required_unless_present = "token")]
        grant_id: Option<String>,
        /// A grant token is URL-safe base64, which may begin with `-`.
        #[arg(long, allow_hyphen_values = true)]
        token: Option<String>,
    },
    /// Revoke a grant (allowed by kms:RevokeGrant on the key).
    Revoke {
        #[arg(long)]
        key: String,
        #[arg(long = "grant-id")]
        grant_id: String,
    },
}

fn constraints_json(c: &Option<v1::GrantConstraints>) -> Value {
    match c {
        None => Value::Null,
        Some(c) if !c.encryption_context_equals.is_empty() => {
            json!({ "EncryptionContextEquals": c.encryption_context_equals })
        }
        Some(c) => json!({ "EncryptionContextSubset": c.encryption_context_subset }),
    }
}

pub async fn grant(ctx: Context, command: GrantCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut kms = client.kms();
    match command {
        GrantCommand::Create {
            key,
            grantee,
            operations,
            retiring_principal,
            context_equals,
            context_subset,
            name,
        } => {
            let equals = parse_pairs(&context_equals, "context-equals")?;
            let subset = parse_pairs(&context_subset, "context-subset")?;
            let constraints =
                (!equals.is_empty() || !subset.is_empty()).then_some(v1::GrantConstraints {
                    encryption_context_equals: equals,
                    encryption_context_subset: subset,
                });
            let request = v1::CreateGrantRequest {
                key_id: key,
                grantee_principal: grantee,
                retiring_principal,
                operations,
                constraints,
                grant_tokens: Vec::new(),
                name,
            };
            let r = kms
                .create_grant(client.signed("CreateGrant", request))
                .await?
                .into_inner();
            out.print(
                json!({ "GrantId": r.grant_id, "GrantToken": r.grant_token }),
                || format!("grant {}\ntoken {}", r.grant_id, r.grant_token),
            );
        }
        GrantCommand::List { key, grantee } => {
            let mut grants = Vec::new();
            let mut marker = String::new();
            loop {
                let request = v1::ListGrantsRequest {
                    key_id: key.clone(),
                    limit: 0,
                    marker: marker.clone(),
                    grant_id: String::new(),
                    grantee_principal: grantee.clone().unwrap_or_default(),
                };
                let page = kms
                    .list_grants(client.signed("ListGrants", request))
                    .await?
                    .into_inner();
                grants.extend(page.grants);
                if !page.truncated {
                    break;
                }
                marker = page.next_marker;
            }
            let value: Vec<Value> = grants
                .iter()
                .map(|g| {
                    json!({
                        "KeyId": g.key_id,
                        "GrantId": g.grant_id,
                        "Name": g.name,
                        "CreationDate": rfc3339(g.creation_date),
                        "GranteePrincipal": g.grantee_principal,
                        "RetiringPrincipal": g.retiring_principal,
                        "IssuingAccount": g.issuing_account,
                        "Operations": g.operations,
                        "Constraints": constraints_json(&g.constraints),
                    })
                })
                .collect();
            out.print(json!({ "Grants": value, "Truncated": false }), || {
                grants
                    .iter()
                    .map(|g| {
                        format!(
                            "{}  {}  {}",
                            g.grant_id,
                            g.grantee_principal,
                            g.operations.join(",")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        GrantCommand::Retire {
            key,
            grant_id,
            token,
        } => {
            let request = v1::RetireGrantRequest {
                grant_token: token.unwrap_or_default(),
                key_id: key.unwrap_or_default(),
                grant_id: grant_id.clone().unwrap_or_default(),
            };
            kms.retire_grant(client.signed("RetireGrant", request))
                .await?;
            out.print(json!({}), || "grant retired".into());
        }
        GrantCommand::Revoke { key, grant_id } => {
            let request = v1::RevokeGrantRequest {
                key_id: key,
                grant_id: grant_id.clone(),
            };
            kms.revoke_grant(client.signed("RevokeGrant", request))
                .await?;
            out.print(json!({}), || format!("grant {grant_id} revoked"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    use super::GrantCommand;

    #[test]
    fn a_grant_token_may_begin_with_a_hyphen() {
        let cli = Cli::try_parse_from(["keyhaven", "grant", "retire", "--token", "-2xY_a"])
            .expect("a token beginning with '-' is a value");
        let Command::Grant(GrantCommand::Retire { token, .. }) = cli.command else {
            panic!("not grant retire: {:?}", cli.command);
        };
        assert_eq!(token.as_deref(), Some("-2xY_a"));
    }
}
