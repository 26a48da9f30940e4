//! `keyhaven approval …`: two-person approval requests (list, show, approve, reject) and the
//! settings of which actions need approval (show, require, release). A call that needs
//! approval fails with `ApprovalRequiredException` naming a request; once another person
//! approved it, the same command with `--approval-id ID` runs it.

use super::commands::{CliError, Context};
use crate::approval::DEFAULT_ACTIONS;
use crate::clock::rfc3339;
use crate::proto::v1;
use clap::Subcommand;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

type CliResult = Result<(), CliError>;

#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// Every approval request, oldest first, with its state.
    List,
    /// One request: its action, key, parameters, requester, approver and state.
    Show { request_id: String },
    /// Approve another person's request.
    Approve { request_id: String },
    /// Reject a request (or withdraw your own).
    Reject { request_id: String },
    /// Which actions need approval, account-wide and per key.
    Settings,
    /// Make ACTIONs (default: ScheduleKeyDeletion, PutKeyPolicy, DisableKey,
    /// DeleteImportedKeyMaterial) need approval on every key, or with --key on that key.
    Require {
        #[arg(long)]
        key: Option<String>,
        actions: Vec<String>,
    },
    /// Stop ACTIONs (default: all) needing approval, account-wide or with --key on that key.
    /// This needs approval itself: run it again with --approval-id once approved.
    Release {
        #[arg(long)]
        key: Option<String>,
        actions: Vec<String>,
    },
}

fn request_json(r: &v1::ApprovalRequest) -> Value {
    let mut value = json!({
        "RequestId": r.request_id,
        "Action": r.action,
        "Resource": r.resource,
        "Parameters": serde_json::from_str::<Value>(&r.parameters).unwrap_or(Value::Null),
        "Requester": r.requester,
        "CreationDate": rfc3339(r.creation_date),
        "ExpirationDate": rfc3339(r.expiration_date),
        "State": r.state,
    });
    if !r.decided_by.is_empty() {
        value["DecidedBy"] = r.decided_by.clone().into();
    }
    if !r.executed_by.is_empty() {
        value["ExecutedBy"] = r.executed_by.clone().into();
    }
    value
}

fn request_line(r: &v1::ApprovalRequest) -> String {
    format!(
        "{}  {:<8}  {}  {}  by {}",
        r.request_id, r.state, r.action, r.resource, r.requester
    )
}

fn actions_or_default(actions: Vec<String>) -> Vec<String> {
    if actions.is_empty() {
        DEFAULT_ACTIONS.iter().map(|a| a.to_string()).collect()
    } else {
        actions
            .into_iter()
            .map(|a| {
                if a.contains(':') {
                    a
                } else {
                    format!("kms:{a}")
                }
            })
            .collect()
    }
}

type Settings = (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>);

async fn current(ctx: &Context) -> Result<Settings, CliError> {
    let client = &ctx.client;
    let r = client
        .kms()
        .get_approval_settings(
            client.signed("GetApprovalSettings", v1::GetApprovalSettingsRequest {}),
        )
        .await?
        .into_inner();
    Ok((
        r.account_actions.into_iter().collect(),
        r.keys
            .into_iter()
            .map(|k| (k.key_id, k.actions.into_iter().collect()))
            .collect(),
    ))
}

fn settings_json((account, keys): &Settings) -> Value {
    json!({
        "AccountActions": account,
        "Keys": keys.iter().map(|(k, a)| json!({"KeyId": k, "Actions": a})).collect::<Vec<_>>(),
    })
}

async fn put(ctx: &Context, (account, keys): Settings) -> CliResult {
    let client = &ctx.client;
    let request = v1::PutApprovalSettingsRequest {
        account_actions: account.into_iter().collect(),
        keys: keys
            .into_iter()
            .map(|(key_id, actions)| v1::KeyApprovalActions {
                key_id,
                actions: actions.into_iter().collect(),
            })
            .collect(),
    };
    client
        .kms()
        .put_approval_settings(client.signed("PutApprovalSettings", request))
        .await?;
    Ok(())
}

pub async fn approval(ctx: Context, command: ApprovalCommand) -> CliResult {
    let client = &ctx.client;
    let mut kms = client.kms();
    let one = |r: Option<v1::ApprovalRequest>| r.unwrap_or_default();
    match command {
        ApprovalCommand::List => {
            let requests = kms
                .list_approval_requests(
                    client.signed("ListApprovalRequests", v1::ListApprovalRequestsRequest {}),
                )
                .await?
                .into_inner()
                .requests;
            ctx.out.print(
                json!({ "Requests": requests.iter().map(request_json).collect::<Vec<_>>() }),
                || {
                    requests
                        .iter()
                        .map(request_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        ApprovalCommand::Show { request_id } => {
            let r = one(kms
                .get_approval_request(client.signed(
                    "GetApprovalRequest",
                    v1::GetApprovalRequestRequest { request_id },
                ))
                .await?
                .into_inner()
                .request);
            let value = request_json(&r);
            ctx.out.print(json!({ "Request": value }), || {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            });
        }
        ApprovalCommand::Approve { request_id } => {
            let r = one(kms
                .approve_request(
                    client.signed("ApproveRequest", v1::ApproveRequestRequest { request_id }),
                )
                .await?
                .into_inner()
                .request);
            ctx.out
                .print(json!({ "Request": request_json(&r) }), || request_line(&r));
        }
        ApprovalCommand::Reject { request_id } => {
            let r = one(kms
                .reject_request(
                    client.signed("RejectRequest", v1::RejectRequestRequest { request_id }),
                )
                .await?
                .into_inner()
                .request);
            ctx.out
                .print(json!({ "Request": request_json(&r) }), || request_line(&r));
        }
        ApprovalCommand::Settings => {
            let settings = current(&ctx).await?;
            let value = settings_json(&settings);
            ctx.out.print(value.clone(), || {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            });
        }
        ApprovalCommand::Require { key, actions } => {
            let (mut account, mut keys) = current(&ctx).await?;
            let actions = actions_or_default(actions);
            match key {
                Some(key) => keys.entry(key).or_default().extend(actions),
                None => account.extend(actions),
            }
            put(&ctx, (account, keys)).await?;
            ctx.out.print(json!({}), String::new);
        }
        ApprovalCommand::Release { key, actions } => {
            let (mut account, mut keys) = current(&ctx).await?;
            let all = actions.is_empty();
            let actions: BTreeSet<String> = actions_or_default(actions).into_iter().collect();
            let release = |set: &mut BTreeSet<String>| {
                if all {
                    set.clear()
                } else {
                    set.retain(|a| !actions.contains(a))
                }
            };
            match key {
                // Keys are stored by ARN: a key id or alias given here is matched by suffix.
                Some(key) => {
                    for (arn, set) in keys.iter_mut() {
                        if *arn == key || arn.ends_with(&format!("/{key}")) {
                            release(set);
                        }
                    }
                }
                None => release(&mut account),
            }
            keys.retain(|_, set| !set.is_empty());
            put(&ctx, (account, keys)).await?;
            ctx.out.print(json!({}), String::new);
        }
    }
    Ok(())
}
