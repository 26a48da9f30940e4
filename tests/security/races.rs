//! Races between IAM changes and the credentials they govern.
//!
//! Credentials are bound to the principal they were issued to, not to its name: an access key
//! made while its user is deleted, or a session issued while its role is deleted, never
//! authenticates, not even as a new principal of the same name. A policy taken away is
//! enforced from the next call, whatever was being read at the time. A followed audit tail
//! ends, with the status a new call would get, once its caller may no longer read the log.

use crate::common::{Backend, TestDaemon, assert_refused};
use keyhaven::api::reason_of;
use keyhaven::client::{Client, ClientCredentials};
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use std::time::{Duration, Instant};
use tonic::Code;

/// Everything, including `audit:ReadAudit`.
const ALLOW_ALL: &str = r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
const ALLOW_ENCRYPT: &str =
    r#"{"Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#;

/// Rounds of each race: the fault was seen in 2 of 30 runs of one race each, so every round
/// races several principals at once.
const ROUNDS: usize = 30;
const RACERS: usize = 6;

async fn create_user(root: &Client, name: &str) -> Result<(), tonic::Status> {
    root.iam()
        .create_user(root.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: name.into(),
            },
        ))
        .await
        .map(|_| ())
}

async fn delete_user(root: &Client, name: &str) -> Result<(), tonic::Status> {
    root.iam()
        .delete_user(root.signed_iam(
            "DeleteUser",
            v1::DeleteUserRequest {
                user_name: name.into(),
            },
        ))
        .await
        .map(|_| ())
}

async fn create_access_key(
    root: &Client,
    region: &str,
    user: &str,
) -> Result<ClientCredentials, tonic::Status> {
    let created = root
        .iam()
        .create_access_key(root.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: user.into(),
            },
        ))
        .await?
        .into_inner();
    Ok(ClientCredentials {
        access_key_id: created.access_key.expect("metadata").access_key_id,
        secret_access_key: SecretString::new(created.secret_access_key),
        session_token: None,
        region: region.into(),
    })
}

async fn list_access_keys(d: &TestDaemon, user: &str) -> Vec<String> {
    d.client
        .iam()
        .list_access_keys(d.client.signed_iam(
            "ListAccessKeys",
            v1::ListAccessKeysRequest {
                user_name: user.into(),
            },
        ))
        .await
        .expect("ListAccessKeys")
        .into_inner()
        .access_key_metadata
        .into_iter()
        .map(|k| k.access_key_id)
        .collect()
}

async fn put_policy(
    d: &TestDaemon,
    kind: v1::EntityType,
    name: &str,
    policy_name: &str,
    document: &str,
) {
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: kind as i32,
                entity_name: name.into(),
                policy_name: policy_name.into(),
                policy_document: document.into(),
            },
        ))
        .await
        .expect("PutEntityPolicy");
}

async fn delete_policy(d: &TestDaemon, kind: v1::EntityType, name: &str, policy_name: &str) {
    d.client
        .iam()
        .delete_entity_policy(d.client.signed_iam(
            "DeleteEntityPolicy",
            v1::DeleteEntityPolicyRequest {
                entity_type: kind as i32,
                entity_name: name.into(),
                policy_name: policy_name.into(),
            },
        ))
        .await
        .expect("DeleteEntityPolicy");
}

fn role_trusting_root(account_id: &str, name: &str) -> v1::CreateRoleRequest {
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:keyhaven:iam::{account_id}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    v1::CreateRoleRequest {
        role_name: name.into(),
        assume_role_policy_document: trust,
    }
}

async fn create_role(
    root: &Client,
    account_id: &str,
    name: &str,
) -> Result<v1::Role, tonic::Status> {
    Ok(root
        .iam()
        .create_role(root.signed_iam("CreateRole", role_trusting_root(account_id, name)))
        .await?
        .into_inner()
        .role
        .expect("role"))
}

async fn delete_role(root: &Client, name: &str) -> Result<(), tonic::Status> {
    root.iam()
        .delete_role(root.signed_iam(
            "DeleteRole",
            v1::DeleteRoleRequest {
                role_name: name.into(),
            },
        ))
        .await
        .map(|_| ())
}

/// Credentials for a session of `role` (in `account_id`), assumed by `caller`.
async fn assume_role(
    caller: &Client,
    account_id: &str,
    region: &str,
    role: &str,
    session: &str,
) -> Result<ClientCredentials, tonic::Status> {
    let answer = caller
        .iam()
        .assume_role(caller.signed_iam(
            "AssumeRole",
            v1::AssumeRoleRequest {
                role_arn: format!("arn:keyhaven:iam::{account_id}:role/{role}"),
                role_session_name: session.into(),
                duration_seconds: None,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let credentials = answer.credentials.expect("credentials");
    Ok(ClientCredentials {
        access_key_id: credentials.access_key_id,
        secret_access_key: SecretString::new(credentials.secret_access_key),
        session_token: Some(SecretString::new(credentials.session_token)),
        region: region.into(),
    })
}

async fn who(client: &Client) -> Result<v1::GetCallerIdentityResponse, tonic::Status> {
    client
        .iam()
        .get_caller_identity(
            client.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
        )
        .await
        .map(|r| r.into_inner())
}

async fn encrypt(client: &Client, key: &str) -> Result<Vec<u8>, tonic::Status> {
    client
        .kms()
        .encrypt(client.signed(
            "Encrypt",
            v1::EncryptRequest {
                key_id: key.into(),
                plaintext: b"revocation".to_vec(),
                encryption_context: Default::default(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().ciphertext_blob)
}

/// Refused as a credential the daemon does not know.
#[track_caller]
fn assert_unrecognised<T: std::fmt::Debug>(answer: Result<T, tonic::Status>) {
    assert_refused(answer, Code::Unauthenticated, "UnrecognizedClientException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_key_made_while_its_user_is_deleted_never_authenticates() {
    let d = TestDaemon::start_with(Backend::Sealed, refusals_unthrottled).await;
    let region = d.config.region.clone();
    let started = Instant::now();
    let names: Vec<String> = (0..RACERS).map(|i| format!("racer-{i}")).collect();
    let mut issued = 0;
    for round in 0..ROUNDS {
        for name in &names {
            create_user(&d.client, name).await.expect("CreateUser");
        }
        // Each user deleted while two of its access keys are being made.
        let races: Vec<_> = names
            .iter()
            .map(|name| {
                let (root, region, name) = (d.client.clone(), region.clone(), name.clone());
                tokio::spawn(async move {
                    let (deleted, first, second) = tokio::join!(
                        delete_user(&root, &name),
                        create_access_key(&root, &region, &name),
                        create_access_key(&root, &region, &name)
                    );
                    (deleted, [first, second])
                })
            })
            .collect();
        for (name, race) in names.iter().zip(races) {
            let (deleted, made) = race.await.expect("race");
            deleted.expect("DeleteUser");
            // A new user of the same name: none of the racing keys is its, or works at all.
            create_user(&d.client, name)
                .await
                .expect("CreateUser again");
            assert_eq!(
                list_access_keys(&d, name).await,
                Vec::<String>::new(),
                "round {round}: the new user {name} has keys made for the one deleted"
            );
            for key in made {
                let key = match key {
                    Ok(key) => key,
                    Err(status) => {
                        assert_eq!(status.code(), Code::NotFound, "{status:?}");
                        assert_eq!(reason_of(&status).as_deref(), Some("NoSuchEntityException"));
                        continue;
                    }
                };
                issued += 1;
                let id = key.access_key_id.clone();
                let answer = who(&d.client_with(key).await).await;
                assert!(
                    answer.is_err(),
                    "round {round}: key {id}, made while {name} was deleted, authenticates as {:?}",
                    answer.map(|w| w.arn)
                );
                assert_unrecognised(answer);
            }
            delete_user(&d.client, name)
                .await
                .expect("DeleteUser again");
        }
    }
    eprintln!(
        "{ROUNDS} rounds of {RACERS} races, {issued} racing keys issued, in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_issued_while_its_role_is_deleted_never_authenticates() {
    let d = TestDaemon::start_with(Backend::Sealed, refusals_unthrottled).await;
    let (account, region) = (d.account_id.clone(), d.config.region.clone());
    let started = Instant::now();
    let names: Vec<String> = (0..RACERS).map(|i| format!("racing-role-{i}")).collect();
    let mut issued = 0;
    for round in 0..ROUNDS {
        for name in &names {
            create_role(&d.client, &account, name)
                .await
                .expect("CreateRole");
        }
        // Each role deleted while two sessions of it are being issued.
        let races: Vec<_> = names
            .iter()
            .map(|name| {
                let root = d.client.clone();
                let (account, region, name) = (account.clone(), region.clone(), name.clone());
                tokio::spawn(async move {
                    let (deleted, first, second) = tokio::join!(
                        delete_role(&root, &name),
                        assume_role(&root, &account, &region, &name, "first"),
                        assume_role(&root, &account, &region, &name, "second")
                    );
                    (deleted, [first, second])
                })
            })
            .collect();
        for (name, race) in names.iter().zip(races) {
            let (deleted, issued_now) = race.await.expect("race");
            deleted.expect("DeleteRole");
            // A new role of the same name: the racing sessions are not its, and do not work.
            create_role(&d.client, &account, name)
                .await
                .expect("CreateRole again");
            for session in issued_now {
                let session = match session {
                    Ok(session) => session,
                    Err(status) => {
                        assert_eq!(status.code(), Code::NotFound, "{status:?}");
                        assert_eq!(reason_of(&status).as_deref(), Some("NoSuchEntityException"));
                        continue;
                    }
                };
                issued += 1;
                let id = session.access_key_id.clone();
                let answer = who(&d.client_with(session).await).await;
                assert!(
                    answer.is_err(),
                    "round {round}: session {id}, issued while {name} was deleted, authenticates as {:?}",
                    answer.map(|w| w.arn)
                );
                assert_unrecognised(answer);
            }
            delete_role(&d.client, name)
                .await
                .expect("DeleteRole again");
        }
    }
    eprintln!(
        "{ROUNDS} rounds of {RACERS} races, {issued} racing sessions issued, in {:?}",
        started.elapsed()
    );
}

/// Encrypts until told to stop; IAM changes meanwhile make these calls miss the policy cache.
fn keep_encrypting(
    client: Client,
    key: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = encrypt(&client, &key).await;
        }
    })
}

/// Changes IAM (a user created and deleted, again and again) until told to stop: each change
/// empties the policy cache, so the readers above miss it all the time.
fn keep_changing_iam(
    root: Client,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = create_user(&root, "churn").await;
            let _ = delete_user(&root, "churn").await;
        }
    })
}

async fn remove_user_from_group(d: &TestDaemon, group: &str, user: &str) {
    d.client
        .iam()
        .remove_user_from_group(d.client.signed_iam(
            "RemoveUserFromGroup",
            v1::RemoveUserFromGroupRequest {
                group_name: group.into(),
                user_name: user.into(),
            },
        ))
        .await
        .expect("RemoveUserFromGroup");
}

async fn add_user_to_group(d: &TestDaemon, group: &str, user: &str) {
    d.client
        .iam()
        .add_user_to_group(d.client.signed_iam(
            "AddUserToGroup",
            v1::AddUserToGroupRequest {
                group_name: group.into(),
                user_name: user.into(),
            },
        ))
        .await
        .expect("AddUserToGroup");
}

#[track_caller]
fn assert_denied_encrypt<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, context: &str) {
    match &answer {
        Err(status) if status.code() == Code::PermissionDenied => {
            assert_eq!(
                reason_of(status).as_deref(),
                Some("AccessDeniedException"),
                "{context}"
            );
            assert!(status.message().contains("kms:Encrypt"), "{status:?}");
        }
        other => panic!("{context}: expected AccessDeniedException, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_taken_away_is_enforced_from_the_next_call() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("revocation").await.key_id;
    let reader = d.create_user("reader", None).await;
    d.client
        .iam()
        .create_group(d.client.signed_iam(
            "CreateGroup",
            v1::CreateGroupRequest {
                group_name: "encrypters".into(),
            },
        ))
        .await
        .expect("CreateGroup");
    put_policy(
        &d,
        v1::EntityType::Group,
        "encrypters",
        "encrypt",
        ALLOW_ENCRYPT,
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut busy = vec![keep_changing_iam(d.client.clone(), stop.clone())];
    for _ in 0..3 {
        busy.push(keep_encrypting(reader.clone(), key.clone(), stop.clone()));
    }
    for round in 0..10 {
        // The user's own policy deleted.
        put_policy(&d, v1::EntityType::User, "reader", "encrypt", ALLOW_ENCRYPT).await;
        encrypt(&reader, &key)
            .await
            .expect("allowed by its own policy");
        delete_policy(&d, v1::EntityType::User, "reader", "encrypt").await;
        assert_denied_encrypt(
            encrypt(&reader, &key).await,
            &format!("round {round}: after DeleteEntityPolicy"),
        );
        // The user taken out of a group whose policy allowed it.
        add_user_to_group(&d, "encrypters", "reader").await;
        encrypt(&reader, &key).await.expect("allowed by its group");
        remove_user_from_group(&d, "encrypters", "reader").await;
        assert_denied_encrypt(
            encrypt(&reader, &key).await,
            &format!("round {round}: after RemoveUserFromGroup"),
        );
        // The group's policy deleted while the user is in it.
        add_user_to_group(&d, "encrypters", "reader").await;
        encrypt(&reader, &key).await.expect("allowed by its group");
        delete_policy(&d, v1::EntityType::Group, "encrypters", "encrypt").await;
        assert_denied_encrypt(
            encrypt(&reader, &key).await,
            &format!("round {round}: after deleting the group's policy"),
        );
        put_policy(
            &d,
            v1::EntityType::Group,
            "encrypters",
            "encrypt",
            ALLOW_ENCRYPT,
        )
        .await;
        remove_user_from_group(&d, "encrypters", "reader").await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in busy {
        task.await.expect("background calls");
    }
    // Nothing a reader put back while the changes ran lets the user in afterwards.
    assert_denied_encrypt(encrypt(&reader, &key).await, "after the churn");
}

/// How long a followed tail may outlive its caller's right to read the log.
const TAIL_ENDS_WITHIN: Duration = Duration::from_secs(5);

/// A followed tail as seen by its reader: each line as it arrives, and how the stream ended.
struct FollowedTail {
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    ended: tokio::task::JoinHandle<Result<(), tonic::Status>>,
}

async fn follow(client: &Client) -> FollowedTail {
    let request = client.signed_audit(
        "TailAuditLog",
        v1::TailAuditLogRequest {
            lines: 0,
            follow: true,
        },
    );
    let mut stream = client
        .audit()
        .tail_audit_log(request)
        .await
        .expect("TailAuditLog")
        .into_inner();
    let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
    let ended = tokio::spawn(async move {
        while let Some(line) = stream.message().await? {
            let _ = sender.send(line.line);
        }
        Ok(())
    });
    FollowedTail { lines, ended }
}

fn operation_and_phase(line: &str) -> (String, String) {
    let record: serde_json::Value = serde_json::from_str(line).expect("an audit record");
    (
        record["operation"].as_str().unwrap_or_default().to_owned(),
        record["phase"].as_str().unwrap_or_default().to_owned(),
    )
}

impl FollowedTail {
    /// Waits for the record of `operation` in `phase`.
    async fn sees(&mut self, operation: &str, phase: &str) {
        let wanted = (operation.to_owned(), phase.to_owned());
        tokio::time::timeout(TAIL_ENDS_WITHIN, async {
            loop {
                let line = self.lines.recv().await.expect("the tail is still open");
                if operation_and_phase(&line) == wanted {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the tail never showed {operation} {phase}"));
    }

    /// Waits (bounded) for the stream to end; returns its final status and the lines it
    /// delivered after the ones already read.
    async fn ends(mut self, revoked_at: Instant) -> (tonic::Status, Vec<String>) {
        let ended = tokio::time::timeout(TAIL_ENDS_WITHIN, self.ended)
            .await
            .unwrap_or_else(|_| {
                panic!("the tail outlived its credentials by more than {TAIL_ENDS_WITHIN:?}")
            })
            .expect("tail reader");
        let status = ended.expect_err("the tail ended with an error status");
        eprintln!(
            "the tail ended {:?} after the revocation",
            revoked_at.elapsed()
        );
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            rest.push(line);
        }
        (status, rest)
    }
}

/// Lines no longer authorised: the revoking call's own response and anything after it.
#[track_caller]
fn assert_nothing_after(lines: &[String], revoking: &str, later: &str) {
    for line in lines {
        let (operation, phase) = operation_and_phase(line);
        assert!(
            !(operation == revoking && phase == "response") && operation != later,
            "delivered after the revocation: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_tail_ends_when_its_permission_is_taken_away() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let auditor = d.create_user("auditor", Some(ALLOW_ALL)).await;
    let mut tail = follow(&auditor).await;
    d.create_key("seen by the auditor").await;
    tail.sees("kms:CreateKey", "response").await;
    delete_policy(&d, v1::EntityType::User, "auditor", "inline").await;
    let revoked_at = Instant::now();
    d.create_key("not seen by the auditor").await;
    let (status, rest) = tail.ends(revoked_at).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("AccessDeniedException"));
    assert!(status.message().contains("audit:ReadAudit"), "{status:?}");
    assert_nothing_after(&rest, "iam:DeleteEntityPolicy", "kms:CreateKey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_tail_ends_when_its_access_key_or_user_goes() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let region = d.config.region.clone();
    create_user(&d.client, "auditor").await.expect("CreateUser");
    put_policy(&d, v1::EntityType::User, "auditor", "read", ALLOW_ALL).await;
    for revocation in ["UpdateAccessKey", "DeleteAccessKey", "DeleteUser"] {
        if revocation == "DeleteUser" {
            create_user(&d.client, "auditor").await.ok();
            put_policy(&d, v1::EntityType::User, "auditor", "read", ALLOW_ALL).await;
        }
        let key = create_access_key(&d.client, &region, "auditor")
            .await
            .expect("CreateAccessKey");
        let key_id = key.access_key_id.clone();
        let auditor = d.client_with(key).await;
        let mut tail = follow(&auditor).await;
        d.create_key("seen by the auditor").await;
        tail.sees("kms:CreateKey", "response").await;
        let iam = d.client.iam();
        match revocation {
            "UpdateAccessKey" => {
                let request = v1::UpdateAccessKeyRequest {
                    user_name: "auditor".into(),
                    access_key_id: key_id.clone(),
                    status: "Inactive".into(),
                };
                iam.clone()
                    .update_access_key(d.client.signed_iam(revocation, request))
                    .await
                    .expect("UpdateAccessKey");
            }
            "DeleteAccessKey" => {
                let request = v1::DeleteAccessKeyRequest {
                    user_name: "auditor".into(),
                    access_key_id: key_id.clone(),
                };
                iam.clone()
                    .delete_access_key(d.client.signed_iam(revocation, request))
                    .await
                    .expect("DeleteAccessKey");
            }
            _ => delete_user(&d.client, "auditor").await.expect("DeleteUser"),
        }
        let revoked_at = Instant::now();
        d.create_key("not seen by the auditor").await;
        let (status, rest) = tail.ends(revoked_at).await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{revocation}: {status:?}"
        );
        assert_eq!(
            reason_of(&status).as_deref(),
            Some("UnrecognizedClientException"),
            "{revocation}"
        );
        assert!(status.message().contains(&key_id), "{status:?}");
        assert_nothing_after(&rest, &format!("iam:{revocation}"), "kms:CreateKey");
        // A deactivated key is deleted before the next one is made (two at most).
        if revocation == "UpdateAccessKey" {
            let request = v1::DeleteAccessKeyRequest {
                user_name: "auditor".into(),
                access_key_id: key_id,
            };
            iam.clone()
                .delete_access_key(d.client.signed_iam("DeleteAccessKey", request))
                .await
                .expect("DeleteAccessKey");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_tail_ends_when_its_session_expires_or_its_role_goes() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let (account, region) = (d.account_id.clone(), d.config.region.clone());
    create_role(&d.client, &account, "auditors")
        .await
        .expect("CreateRole");
    put_policy(&d, v1::EntityType::Role, "auditors", "read", ALLOW_ALL).await;
    // Expiry: nothing is written to the log meanwhile, so only the periodic check sees it.
    let session = assume_role(&d.client, &account, &region, "auditors", "expiring")
        .await
        .expect("AssumeRole");
    let mut tail = follow(&d.client_with(session).await).await;
    d.create_key("seen by the session").await;
    tail.sees("kms:CreateKey", "response").await;
    d.clock.advance(3_601);
    let (status, rest) = tail.ends(Instant::now()).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("ExpiredTokenException"));
    assert_eq!(rest, Vec::<String>::new());
    // The role deleted.
    let session = assume_role(&d.client, &account, &region, "auditors", "ended")
        .await
        .expect("AssumeRole");
    let mut tail = follow(&d.client_with(session).await).await;
    d.create_key("seen by the session").await;
    tail.sees("kms:CreateKey", "response").await;
    delete_role(&d.client, "auditors")
        .await
        .expect("DeleteRole");
    let revoked_at = Instant::now();
    d.create_key("not seen by the session").await;
    let (status, rest) = tail.ends(revoked_at).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("UnrecognizedClientException")
    );
    assert_nothing_after(&rest, "iam:DeleteRole", "kms:CreateKey");
}

/// These races refuse credentials on purpose, far more often than the per-source limit on
/// failed authentication allows from one address.
fn refusals_unthrottled(config: &mut keyhaven::server::DaemonConfig) {
    config.unauthenticated_rate_per_second = 1_000_000;
    config.unauthenticated_burst = 1_000_000;
}
