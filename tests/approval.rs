//! Two-person approval end to end, against a real daemon: an action that needs approval
//! answers `ApprovalRequiredException` and changes nothing; another person approves; the
//! same call naming the approval runs once; the requester, and another session of the same
//! role, cannot approve; rejected, expired and mismatched executions are refused; the audit
//! log names both people; turning approval off needs approval itself.

mod common;

use common::{Backend, DAY, TestDaemon, assert_refused};
use keyhaven::api::APPROVAL_ID_HEADER;
use keyhaven::client::{Client, ClientCredentials};
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use tonic::Code;

const EVERYTHING: &str =
    r#"{"Statement":[{"Effect":"Allow","Action":["kms:*","keyhaven:*"],"Resource":"*"}]}"#;
const KMS_ONLY: &str = r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#;

fn user_arn(d: &TestDaemon, user: &str) -> String {
    format!("arn:keyhaven:iam::{}:user/{user}", d.account_id)
}

fn with_approval<T>(mut request: tonic::Request<T>, id: Option<&str>) -> tonic::Request<T> {
    if let Some(id) = id {
        request
            .metadata_mut()
            .insert(APPROVAL_ID_HEADER, id.parse().expect("metadata value"));
    }
    request
}

async fn schedule(
    client: &Client,
    key: &str,
    days: u32,
    approval: Option<&str>,
) -> Result<v1::ScheduleKeyDeletionResponse, tonic::Status> {
    let request = v1::ScheduleKeyDeletionRequest {
        key_id: key.into(),
        pending_window_in_days: Some(days),
    };
    client
        .kms()
        .schedule_key_deletion(with_approval(
            client.signed("ScheduleKeyDeletion", request),
            approval,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn disable(client: &Client, key: &str, approval: Option<&str>) -> Result<(), tonic::Status> {
    let request = v1::DisableKeyRequest { key_id: key.into() };
    client
        .kms()
        .disable_key(with_approval(
            client.signed("DisableKey", request),
            approval,
        ))
        .await
        .map(|_| ())
}

async fn approve(client: &Client, id: &str) -> Result<v1::ApprovalRequest, tonic::Status> {
    let request = v1::ApproveRequestRequest {
        request_id: id.into(),
    };
    client
        .kms()
        .approve_request(client.signed("ApproveRequest", request))
        .await
        .map(|r| r.into_inner().request.expect("request"))
}

async fn reject(client: &Client, id: &str) -> Result<v1::ApprovalRequest, tonic::Status> {
    let request = v1::RejectRequestRequest {
        request_id: id.into(),
    };
    client
        .kms()
        .reject_request(client.signed("RejectRequest", request))
        .await
        .map(|r| r.into_inner().request.expect("request"))
}

async fn show(client: &Client, id: &str) -> v1::ApprovalRequest {
    let request = v1::GetApprovalRequestRequest {
        request_id: id.into(),
    };
    client
        .kms()
        .get_approval_request(client.signed("GetApprovalRequest", request))
        .await
        .expect("GetApprovalRequest")
        .into_inner()
        .request
        .expect("request")
}

async fn list(client: &Client) -> Vec<v1::ApprovalRequest> {
    client
        .kms()
        .list_approval_requests(
            client.signed("ListApprovalRequests", v1::ListApprovalRequestsRequest {}),
        )
        .await
        .expect("ListApprovalRequests")
        .into_inner()
        .requests
}

async fn put_settings(
    client: &Client,
    account: &[&str],
    keys: &[(&str, &[&str])],
    approval: Option<&str>,
) -> Result<(), tonic::Status> {
    let request = v1::PutApprovalSettingsRequest {
        account_actions: account.iter().map(|a| a.to_string()).collect(),
        keys: keys
            .iter()
            .map(|(key, actions)| v1::KeyApprovalActions {
                key_id: key.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
            })
            .collect(),
    };
    client
        .kms()
        .put_approval_settings(with_approval(
            client.signed("PutApprovalSettings", request),
            approval,
        ))
        .await
        .map(|_| ())
}

async fn settings(client: &Client) -> v1::GetApprovalSettingsResponse {
    client
        .kms()
        .get_approval_settings(
            client.signed("GetApprovalSettings", v1::GetApprovalSettingsRequest {}),
        )
        .await
        .expect("GetApprovalSettings")
        .into_inner()
}

const DEFAULT_SET: &[&str] = &[
    "kms:ScheduleKeyDeletion",
    "kms:PutKeyPolicy",
    "kms:DisableKey",
    "kms:DeleteImportedKeyMaterial",
];

/// Asserts `result` is `ApprovalRequiredException` (FAILED_PRECONDITION) and returns the id
/// of the request its message names.
#[track_caller]
fn approval_required<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> String {
    let status = result.expect_err("expected ApprovalRequiredException");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        keyhaven::api::reason_of(&status).as_deref(),
        Some("ApprovalRequiredException"),
        "{status:?}"
    );
    let message = status.message();
    let id = message
        .split("approval request ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no request id in {message}"));
    assert!(message.contains(APPROVAL_ID_HEADER), "{message}");
    id.to_owned()
}

fn audit_lines(d: &TestDaemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&d.config.audit_log)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit record"))
        .collect()
}

/// A daemon with the default set needing approval account-wide, and users alice and bob who
/// may do every key action and every approval action, and carol who may do key actions only.
async fn daemon_with_people() -> (TestDaemon, Client, Client, Client) {
    let d = TestDaemon::start(Backend::Sealed).await;
    put_settings(&d.client, DEFAULT_SET, &[], None)
        .await
        .expect("turning approval on needs no approval");
    let alice = d.create_user("alice", Some(EVERYTHING)).await;
    let bob = d.create_user("bob", Some(EVERYTHING)).await;
    let carol = d.create_user("carol", Some(KMS_ONLY)).await;
    (d, alice, bob, carol)
}

#[tokio::test]
async fn a_deletion_waits_for_another_persons_approval_and_runs_once() {
    let (d, alice, bob, carol) = daemon_with_people().await;
    let key = d.create_key("guarded").await.key_id;
    let other = d.create_key("other").await.key_id;

    // A call that would be refused anyway is refused, and makes no request.
    assert_refused(
        schedule(&alice, &key, 3, None).await,
        Code::InvalidArgument,
        "ValidationException",
    );
    assert!(list(&d.client).await.is_empty());

    // Alice's call is allowed but needs approval: nothing changes.
    let id = approval_required(schedule(&alice, &key, 7, None).await);
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    let pending = show(&bob, &id).await;
    assert_eq!(pending.state, "Pending");
    assert_eq!(pending.action, "kms:ScheduleKeyDeletion");
    assert_eq!(pending.requester, user_arn(&d, "alice"));
    assert_eq!(pending.expiration_date - pending.creation_date, DAY);

    // Not approved yet: the call naming it is refused.
    assert_refused(
        schedule(&alice, &key, 7, Some(&id)).await,
        Code::FailedPrecondition,
        "ApprovalStateException",
    );
    // Alice cannot approve her own request; carol may not approve at all.
    assert_refused(
        approve(&alice, &id).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_refused(
        approve(&carol, &id).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_eq!(show(&bob, &id).await.state, "Pending");
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);

    let approved = approve(&bob, &id).await.expect("bob approves");
    assert_eq!(approved.state, "Approved");
    assert_eq!(approved.decided_by, user_arn(&d, "bob"));

    // Another window, or another key, is not what bob approved: refused, nothing changes.
    assert_refused(
        schedule(&alice, &key, 30, Some(&id)).await,
        Code::PermissionDenied,
        "ApprovalMismatchException",
    );
    assert_refused(
        schedule(&alice, &other, 7, Some(&id)).await,
        Code::PermissionDenied,
        "ApprovalMismatchException",
    );
    assert_refused(
        disable(&alice, &key, Some(&id)).await,
        Code::PermissionDenied,
        "ApprovalMismatchException",
    );
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    assert_eq!(d.state(&other).await, v1::KeyState::Enabled);
    assert_eq!(show(&bob, &id).await.state, "Approved");

    // Exactly the approved call runs, once.
    let done = schedule(&alice, &key, 7, Some(&id))
        .await
        .expect("the approved call runs");
    assert_eq!(done.pending_window_in_days, 7);
    assert_eq!(d.state(&key).await, v1::KeyState::PendingDeletion);
    let executed = show(&bob, &id).await;
    assert_eq!(executed.state, "Executed");
    assert_eq!(executed.executed_by, user_arn(&d, "alice"));
    assert_eq!(executed.decided_by, user_arn(&d, "bob"));
    d.cancel_deletion(&key).await.expect("cancel");
    assert_refused(
        schedule(&alice, &key, 7, Some(&id)).await,
        Code::FailedPrecondition,
        "ApprovalStateException",
    );
    assert_eq!(d.state(&key).await, v1::KeyState::Disabled);

    // The list shows it; the audit log names both people on the approval and the execution.
    let listed = list(&d.client).await;
    assert!(
        listed
            .iter()
            .any(|r| r.request_id == id && r.state == "Executed")
    );
    let records = audit_lines(&d);
    let names_both = |operation: &str, principal: &str| {
        records.iter().any(|r| {
            r["operation"] == operation
                && r["phase"] == "response"
                && r["outcome"]["code"] == "Ok"
                && r["principal"] == user_arn(&d, principal)
                && r["approval"]["request_id"] == id.as_str()
                && r["approval"]["requester"] == user_arn(&d, "alice")
                && r["approval"]["approver"] == user_arn(&d, "bob")
        })
    };
    assert!(names_both("keyhaven:ApproveRequest", "bob"), "{records:#?}");
    assert!(
        names_both("kms:ScheduleKeyDeletion", "alice"),
        "{records:#?}"
    );
    // The first call's record names the request it made, with its requester.
    assert!(records.iter().any(|r| {
        r["operation"] == "kms:ScheduleKeyDeletion"
            && r["outcome"]["reason"] == "ApprovalRequiredException"
            && r["approval"]["request_id"] == id.as_str()
            && r["approval"]["requester"] == user_arn(&d, "alice")
    }));
}

#[tokio::test]
async fn another_session_of_the_requesters_role_cannot_approve() {
    let (d, alice, bob, _carol) = daemon_with_people().await;
    let key = d.create_key("guarded").await.key_id;
    let alice_arn = user_arn(&d, "alice");
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{alice_arn}"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let role = d
        .client
        .iam()
        .create_role(d.client.signed_iam(
            "CreateRole",
            v1::CreateRoleRequest {
                role_name: "ops".into(),
                assume_role_policy_document: trust,
            },
        ))
        .await
        .expect("CreateRole")
        .into_inner()
        .role
        .expect("role");
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::Role as i32,
                entity_name: "ops".into(),
                policy_name: "everything".into(),
                policy_document: EVERYTHING.into(),
            },
        ))
        .await
        .expect("PutEntityPolicy");
    let mut sessions = Vec::new();
    for name in ["one", "two"] {
        let credentials = alice
            .iam()
            .assume_role(alice.signed_iam(
                "AssumeRole",
                v1::AssumeRoleRequest {
                    role_arn: role.arn.clone(),
                    role_session_name: name.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("AssumeRole")
            .into_inner()
            .credentials
            .expect("credentials");
        sessions.push(
            d.client_with(ClientCredentials {
                access_key_id: credentials.access_key_id,
                secret_access_key: SecretString::new(credentials.secret_access_key),
                session_token: Some(SecretString::new(credentials.session_token)),
                region: d.config.region.clone(),
            })
            .await,
        );
    }
    let id = approval_required(disable(&sessions[0], &key, None).await);
    assert_eq!(
        show(&bob, &id).await.requester,
        format!("arn:keyhaven:sts::{}:assumed-role/ops/one", d.account_id)
    );
    assert_refused(
        approve(&sessions[1], &id).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_eq!(show(&bob, &id).await.state, "Pending");
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    // Another person approves; any allowed principal (here the other session) executes.
    approve(&bob, &id).await.expect("bob approves");
    disable(&sessions[1], &key, Some(&id))
        .await
        .expect("the approved call runs");
    assert_eq!(d.state(&key).await, v1::KeyState::Disabled);
}

#[tokio::test]
async fn rejected_and_expired_requests_cannot_execute() {
    let (d, alice, bob, _carol) = daemon_with_people().await;
    let key = d.create_key("guarded").await.key_id;

    let rejected = approval_required(disable(&alice, &key, None).await);
    let expiring = approval_required(disable(&alice, &key, None).await);
    let unused = approval_required(disable(&alice, &key, None).await);
    assert_eq!(reject(&bob, &rejected).await.unwrap().state, "Rejected");
    assert_refused(
        approve(&bob, &rejected).await,
        Code::FailedPrecondition,
        "ApprovalStateException",
    );
    assert_refused(
        disable(&alice, &key, Some(&rejected)).await,
        Code::FailedPrecondition,
        "ApprovalStateException",
    );
    approve(&bob, &unused).await.expect("approve");

    // A day later both the pending and the approved request have expired.
    d.clock.advance(DAY);
    assert_eq!(show(&bob, &expiring).await.state, "Expired");
    assert_eq!(show(&bob, &unused).await.state, "Expired");
    assert_refused(
        approve(&bob, &expiring).await,
        Code::FailedPrecondition,
        "ApprovalStateException",
    );
    assert_refused(
        disable(&alice, &key, Some(&unused)).await,
        Code::FailedPrecondition,
        "ApprovalStateException",
    );
    assert_refused(
        disable(&alice, &key, Some("no-such-request")).await,
        Code::NotFound,
        "NotFoundException",
    );
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);

    // The requester may withdraw their own request without keyhaven:RejectRequest.
    let withdrawn = approval_required(disable(&alice, &key, None).await);
    assert_eq!(reject(&alice, &withdrawn).await.unwrap().state, "Rejected");
}

#[tokio::test]
async fn turning_approval_off_needs_approval() {
    let (d, alice, bob, _carol) = daemon_with_people().await;
    let key = d.create_key("guarded").await.key_id;
    let other = d.create_key("other").await.key_id;
    let before = settings(&d.client).await;
    assert_eq!(before.account_actions.len(), DEFAULT_SET.len());

    // Off, or narrower, is refused without an approval, and nothing changes.
    let id = approval_required(put_settings(&alice, &[], &[], None).await);
    approval_required(put_settings(&alice, &["kms:DisableKey"], &[], None).await);
    assert_eq!(settings(&d.client).await, before);
    approval_required(disable(&alice, &key, None).await);
    // Adding is free; naming an action no operation consults is refused.
    put_settings(
        &alice,
        DEFAULT_SET,
        &[(key.as_str(), &["kms:DisableKey"])],
        None,
    )
    .await
    .expect("adding needs no approval");
    assert_refused(
        put_settings(&alice, &["kms:Encrypt"], &[], None).await,
        Code::InvalidArgument,
        "ValidationException",
    );

    // Approved for "nothing at all": other settings with that id are refused.
    approve(&bob, &id).await.expect("approve");
    assert_refused(
        put_settings(&alice, &["kms:DisableKey"], &[], Some(&id)).await,
        Code::PermissionDenied,
        "ApprovalMismatchException",
    );
    assert_eq!(settings(&d.client).await.account_actions.len(), 4);
    put_settings(&alice, &[], &[], Some(&id))
        .await
        .expect("the approved change runs");
    let now = settings(&d.client).await;
    assert!(
        now.account_actions.is_empty() && now.keys.is_empty(),
        "{now:?}"
    );
    disable(&alice, &other, None)
        .await
        .expect("no approval needed any more");
    assert_eq!(d.state(&other).await, v1::KeyState::Disabled);

    // Per key: only that key's action needs approval, and turning it off needs approval too.
    put_settings(&alice, &[], &[(key.as_str(), &["kms:DisableKey"])], None)
        .await
        .unwrap();
    d.enable(&other).await.unwrap();
    disable(&alice, &other, None).await.expect("other key");
    approval_required(disable(&alice, &key, None).await);
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    approval_required(put_settings(&alice, &[], &[], None).await);
    assert_eq!(settings(&d.client).await.keys.len(), 1);
}

#[tokio::test]
async fn approval_requests_and_settings_survive_a_restart() {
    let (mut d, _alice, bob, _carol) = daemon_with_people().await;
    let key = d.create_key("guarded").await.key_id;
    let id = approval_required(disable(&d.client, &key, None).await);
    approve(&bob, &id)
        .await
        .expect("bob approves the root's request");
    d.restart().await;
    assert_eq!(settings(&d.client).await.account_actions.len(), 4);
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    disable(&d.client, &key, Some(&id))
        .await
        .expect("the approval outlives a restart");
    assert_eq!(d.state(&key).await, v1::KeyState::Disabled);
}

// ------------------------------------------------------------------ the CLI

/// Creates user `name` with `policy` and returns its access key.
async fn user_credentials(d: &TestDaemon, name: &str, policy: &str) -> ClientCredentials {
    let iam = d.client.iam();
    iam.clone()
        .create_user(d.client.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateUser");
    iam.clone()
        .put_entity_policy(d.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::User as i32,
                entity_name: name.into(),
                policy_name: "inline".into(),
                policy_document: policy.into(),
            },
        ))
        .await
        .expect("PutEntityPolicy");
    let key = iam
        .clone()
        .create_access_key(d.client.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateAccessKey")
        .into_inner();
    ClientCredentials {
        access_key_id: key.access_key.expect("access key").access_key_id,
        secret_access_key: SecretString::new(key.secret_access_key),
        session_token: None,
        region: d.config.region.clone(),
    }
}

/// Runs the `keyhaven` binary against `d` signed with `credentials`; its exit status, stdout
/// and stderr. Run off the runtime's threads: the daemon answers on them meanwhile.
async fn cli(
    d: &TestDaemon,
    credentials: &ClientCredentials,
    args: &[&str],
) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYHAVEN_") {
            command.env_remove(&name);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env("KEYHAVEN_ENDPOINT", d.endpoint())
        .env("KEYHAVEN_REGION", &d.config.region)
        .env("KEYHAVEN_ACCESS_KEY_ID", &credentials.access_key_id)
        .env(
            "KEYHAVEN_SECRET_ACCESS_KEY",
            credentials.secret_access_key.expose(),
        )
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run keyhaven");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The request id an `ApprovalRequiredException` on stderr names.
#[track_caller]
fn required_id((ok, out, err): (bool, String, String)) -> String {
    assert!(!ok, "expected ApprovalRequiredException; got {out}");
    assert!(err.contains("ApprovalRequiredException"), "{err}");
    err.split("approval request ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no request id in {err}"))
        .to_owned()
}

#[tokio::test]
async fn the_cli_requires_lists_approves_rejects_and_releases() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let root = d.credentials.clone();
    let alice = user_credentials(&d, "alice", EVERYTHING).await;
    let bob = user_credentials(&d, "bob", EVERYTHING).await;
    let key = d.create_key("guarded").await.key_id;

    let (ok, _, err) = cli(&d, &root, &["approval", "require"]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&d, &root, &["--output", "json", "approval", "settings"]).await;
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown["AccountActions"].as_array().unwrap().len(),
        4,
        "{out}"
    );

    let schedule = [
        "key",
        "schedule-deletion",
        key.as_str(),
        "--pending-days",
        "7",
    ];
    let id = required_id(cli(&d, &alice, &schedule).await);
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    let (ok, out, err) = cli(&d, &bob, &["--output", "json", "approval", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&id) && out.contains("Pending"), "{out}");
    let (ok, _, err) = cli(&d, &alice, &["approval", "approve", &id]).await;
    assert!(!ok && err.contains("AccessDeniedException"), "{err}");
    let (ok, out, err) = cli(&d, &bob, &["approval", "approve", &id]).await;
    assert!(ok && out.contains("Approved"), "{out}{err}");
    let with_id: Vec<&str> = ["--approval-id", id.as_str()]
        .into_iter()
        .chain(schedule)
        .collect();
    let (ok, _, err) = cli(&d, &alice, &with_id).await;
    assert!(ok, "{err}");
    assert_eq!(d.state(&key).await, v1::KeyState::PendingDeletion);
    d.cancel_deletion(&key).await.expect("cancel");
    let (ok, _, err) = cli(&d, &alice, &with_id).await;
    assert!(!ok && err.contains("ApprovalStateException"), "{err}");
    assert_eq!(d.state(&key).await, v1::KeyState::Disabled);
    let (ok, out, err) = cli(&d, &bob, &["--output", "json", "approval", "show", &id]).await;
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["Request"]["State"], "Executed");
    assert_eq!(shown["Request"]["DecidedBy"], user_arn(&d, "bob"));
    assert_eq!(shown["Request"]["ExecutedBy"], user_arn(&d, "alice"));

    // Reject: the request cannot run.
    let other = d.create_key("other").await.key_id;
    let rejected = required_id(cli(&d, &alice, &["key", "disable", &other]).await);
    let (ok, out, err) = cli(&d, &bob, &["approval", "reject", &rejected]).await;
    assert!(ok && out.contains("Rejected"), "{out}{err}");
    let (ok, _, err) = cli(
        &d,
        &alice,
        &["--approval-id", &rejected, "key", "disable", &other],
    )
    .await;
    assert!(!ok && err.contains("ApprovalStateException"), "{err}");
    assert_eq!(d.state(&other).await, v1::KeyState::Enabled);

    // Release needs approval; once approved, the same command with the id runs.
    let release = required_id(cli(&d, &root, &["approval", "release"]).await);
    let (ok, _, err) = cli(&d, &alice, &["approval", "approve", &release]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        &d,
        &root,
        &["--approval-id", &release, "approval", "release"],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&d, &alice, &["key", "disable", &other]).await;
    assert!(ok, "{err}");
    assert_eq!(d.state(&other).await, v1::KeyState::Disabled);
}

// ------------------------------------------------------------------ the AWS door

async fn run_approval_script(env: Vec<(String, String)>) -> String {
    common::run_aws_script("aws_approval.py", env, "approval complete").await
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_meets_approval_required_and_executes_with_the_header() {
    let d = TestDaemon::start_with(Backend::Sealed, |config| {
        config.set_aws_listen("127.0.0.1:0").expect("aws_listen");
    })
    .await;
    put_settings(&d.client, DEFAULT_SET, &[], None)
        .await
        .expect("settings");
    let alice = user_credentials(&d, "alice", EVERYTHING).await;
    let bob = d.create_user("bob", Some(EVERYTHING)).await;
    let key = d.create_key("guarded").await.key_id;
    let aws = d.aws_addr().expect("the AWS door listens");
    let env = |phase: &str, id: &str| {
        vec![
            ("AWS_ENDPOINT_URL".to_owned(), format!("http://{aws}")),
            ("AWS_ACCESS_KEY_ID".into(), alice.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                alice.secret_access_key.expose().clone(),
            ),
            ("AWS_REGION".into(), d.config.region.clone()),
            ("AWS_DEFAULT_REGION".into(), d.config.region.clone()),
            ("KEY_ID".into(), key.clone()),
            ("PHASE".into(), phase.into()),
            ("APPROVAL_ID".into(), id.into()),
        ]
    };
    let out = run_approval_script(env("request", "")).await;
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("REQUEST "))
        .expect("the request id")
        .to_owned();
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    assert_eq!(show(&bob, &id).await.requester, user_arn(&d, "alice"));
    approve(&bob, &id).await.expect("bob approves");
    run_approval_script(env("execute", &id)).await;
    // Scheduled once by the approved call, then cancelled by the script.
    assert_eq!(d.state(&key).await, v1::KeyState::Disabled);
    assert!(audit_lines(&d).iter().any(|r| r["door"] == "aws"
        && r["operation"] == "kms:ScheduleKeyDeletion"
        && r["outcome"]["code"] == "Ok"
        && r["approval"]["approver"] == user_arn(&d, "bob")));
}

#[tokio::test]
async fn a_key_policy_change_runs_only_as_approved() {
    let (d, alice, bob, _carol) = daemon_with_people().await;
    let key = d.create_key("guarded").await.key_id;
    let policy = |sid: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"{sid}","Effect":"Allow","Principal":{{"AWS":"arn:keyhaven:iam::{}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#,
            d.account_id
        )
    };
    let put = |text: String, approval: Option<String>| {
        let request = v1::PutKeyPolicyRequest {
            key_id: key.clone(),
            policy_name: "default".into(),
            policy: text,
            ..Default::default()
        };
        let signed = with_approval(alice.signed("PutKeyPolicy", request), approval.as_deref());
        let mut kms = alice.kms();
        async move { kms.put_key_policy(signed).await.map(|_| ()) }
    };
    let get = || async {
        d.client
            .kms()
            .get_key_policy(d.client.signed(
                "GetKeyPolicy",
                v1::GetKeyPolicyRequest {
                    key_id: key.clone(),
                    policy_name: "default".into(),
                },
            ))
            .await
            .expect("GetKeyPolicy")
            .into_inner()
            .policy
    };
    let before = get().await;
    let id = approval_required(put(policy("approved"), None).await);
    assert_eq!(get().await, before);
    approve(&bob, &id).await.expect("approve");
    assert_refused(
        put(policy("other"), Some(id.clone())).await,
        Code::PermissionDenied,
        "ApprovalMismatchException",
    );
    assert_eq!(get().await, before);
    put(policy("approved"), Some(id.clone()))
        .await
        .expect("the approved policy is put");
    assert!(get().await.contains("\"approved\""));
}
