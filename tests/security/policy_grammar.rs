//! Policy grammar and evaluation against a real daemon: `aws:PrincipalArn` for role sessions,
//! AWS's action grammar and typo-proof condition keys, case-insensitive encryption-context
//! keys, unreadable stored key policies failing closed, and policy variables.

use super::common::{Backend, TestDaemon, assert_refused};
use keyhaven::api::reason_of;
use keyhaven::audit::{AuditRecord, chain_files};
use keyhaven::client::{Client, ClientCredentials};
use keyhaven::keys::KeyRecord;
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use keyhaven::store::WriteBatch;
use tonic::Code;

/// Refused with `AccessDeniedException` naming the action.
#[track_caller]
fn assert_access_denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>, action: &str) {
    let status = result.expect_err("expected AccessDeniedException");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("AccessDeniedException"),
        "{status:?}"
    );
    assert!(status.message().contains(action), "{status:?}");
}

/// Refused with `MalformedPolicyDocumentException` whose message contains `where_`.
#[track_caller]
fn assert_malformed<T: std::fmt::Debug>(result: Result<T, tonic::Status>, where_: &str) {
    let status = result.expect_err("expected MalformedPolicyDocumentException");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("MalformedPolicyDocumentException"),
        "{status:?}"
    );
    assert!(status.message().contains(where_), "{status:?}");
}

async fn put_entity_policy(
    d: &TestDaemon,
    kind: v1::EntityType,
    name: &str,
    document: &str,
) -> Result<(), tonic::Status> {
    let request = v1::PutEntityPolicyRequest {
        entity_type: kind as i32,
        entity_name: name.into(),
        policy_name: "inline".into(),
        policy_document: document.into(),
    };
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam("PutEntityPolicy", request))
        .await
        .map(|_| ())
}

async fn put_key_policy(d: &TestDaemon, key: &str, policy: &str) -> Result<(), tonic::Status> {
    let request = v1::PutKeyPolicyRequest {
        key_id: key.into(),
        policy_name: "default".into(),
        policy: policy.into(),
        bypass_policy_lockout_safety_check: false,
    };
    d.client
        .kms()
        .put_key_policy(d.client.signed("PutKeyPolicy", request))
        .await
        .map(|_| ())
}

async fn get_key_policy(d: &TestDaemon, key: &str) -> String {
    let request = v1::GetKeyPolicyRequest {
        key_id: key.into(),
        policy_name: "default".into(),
    };
    d.client
        .kms()
        .get_key_policy(d.client.signed("GetKeyPolicy", request))
        .await
        .expect("GetKeyPolicy")
        .into_inner()
        .policy
}

async fn encrypt_as(
    client: &Client,
    key: &str,
    context: &[(&str, &str)],
) -> Result<Vec<u8>, tonic::Status> {
    let request = v1::EncryptRequest {
        key_id: key.into(),
        plaintext: b"policy grammar".to_vec(),
        encryption_context: super::common::pairs(context),
        ..Default::default()
    };
    Ok(client
        .kms()
        .encrypt(client.signed("Encrypt", request))
        .await?
        .into_inner()
        .ciphertext_blob)
}

async fn describe_as(client: &Client, key: &str) -> Result<v1::KeyMetadata, tonic::Status> {
    let request = v1::DescribeKeyRequest { key_id: key.into() };
    Ok(client
        .kms()
        .describe_key(client.signed("DescribeKey", request))
        .await?
        .into_inner()
        .key_metadata
        .expect("metadata"))
}

async fn rotation_status_as(client: &Client, key: &str) -> Result<(), tonic::Status> {
    let request = v1::GetKeyRotationStatusRequest { key_id: key.into() };
    client
        .kms()
        .get_key_rotation_status(client.signed("GetKeyRotationStatus", request))
        .await
        .map(|_| ())
}

/// A key policy: the account root's delegation plus `statements`.
fn key_policy(d: &TestDaemon, statements: &[String]) -> String {
    let mut all = vec![format!(
        r#"{{"Sid":"Root","Effect":"Allow","Principal":{{"AWS":"arn:keyhaven:iam::{}:root"}},"Action":"kms:*","Resource":"*"}}"#,
        d.account_id
    )];
    all.extend_from_slice(statements);
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        all.join(",")
    )
}

const KMS_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#;

/// Creates role `name`, trusted by the account, allowed kms:*; returns (ARN, unique id) and a
/// client for the root's session `session`.
async fn role_session(d: &TestDaemon, name: &str, session: &str) -> (String, String, Client) {
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"sts:AssumeRole"}}]}}"#,
        d.account_id
    );
    let request = v1::CreateRoleRequest {
        role_name: name.into(),
        assume_role_policy_document: trust,
    };
    let role = d
        .client
        .iam()
        .create_role(d.client.signed_iam("CreateRole", request))
        .await
        .expect("CreateRole")
        .into_inner()
        .role
        .expect("role");
    put_entity_policy(d, v1::EntityType::Role, name, KMS_ALL)
        .await
        .expect("role policy");
    let request = v1::AssumeRoleRequest {
        role_arn: role.arn.clone(),
        role_session_name: session.into(),
        duration_seconds: None,
        ..Default::default()
    };
    let credentials = d
        .client
        .iam()
        .assume_role(d.client.signed_iam("AssumeRole", request))
        .await
        .expect("AssumeRole")
        .into_inner()
        .credentials
        .expect("credentials");
    let client = d
        .client_with(ClientCredentials {
            access_key_id: credentials.access_key_id,
            secret_access_key: SecretString::new(credentials.secret_access_key),
            session_token: Some(SecretString::new(credentials.session_token)),
            region: d.config.region.clone(),
        })
        .await;
    (role.arn, role.role_id, client)
}

/// Item 10: a Deny conditioned on `aws:PrincipalArn` naming a role refuses the role's
/// sessions (AWS gives the role ARN, not the session ARN); `aws:userid` is
/// `<role id>:<session name>`; a Principal naming the role covers its sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_on_the_role_arn_refuses_the_roles_sessions() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("role guarded").await.key_id;
    let (role_arn, role_id, session) = role_session(&d, "app", "batch").await;
    let policy = key_policy(
        &d,
        &[
            format!(
                r#"{{"Sid":"NoAppEncrypt","Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalArn":"{role_arn}"}}}}}}"#
            ),
            format!(
                r#"{{"Sid":"NoBatchDescribe","Effect":"Deny","Principal":"*","Action":"kms:DescribeKey","Resource":"*","Condition":{{"StringEquals":{{"aws:userid":"{role_id}:batch"}}}}}}"#
            ),
        ],
    );
    put_key_policy(&d, &key, &policy).await.expect("put");
    assert_access_denied(encrypt_as(&session, &key, &[]).await, "kms:Encrypt");
    assert_access_denied(describe_as(&session, &key).await, "kms:DescribeKey");
    // The session may do what the Denies do not name; the root is untouched by them.
    rotation_status_as(&session, &key)
        .await
        .expect("not denied");
    encrypt_as(&d.client, &key, &[]).await.expect("root");
    describe_as(&d.client, &key).await.expect("root");

    // A Principal naming the role covers its sessions.
    let policy = key_policy(
        &d,
        &[format!(
            r#"{{"Sid":"NoApp","Effect":"Deny","Principal":{{"AWS":"{role_arn}"}},"Action":"kms:GetKeyRotationStatus","Resource":"*"}}"#
        )],
    );
    put_key_policy(&d, &key, &policy).await.expect("put");
    assert_access_denied(
        rotation_status_as(&session, &key).await,
        "kms:GetKeyRotationStatus",
    );
    encrypt_as(&session, &key, &[])
        .await
        .expect("no longer denied");
}

/// Item 11: policies written for AWS (with s3:, ec2: statements and other services' condition
/// keys) are accepted; Keyhaven's audit: actions are grantable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_written_for_aws_are_accepted_and_audit_actions_are_grantable() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let auditor = d.create_user("auditor", None).await;
    let tail = |client: &Client| {
        let mut audit = client.audit();
        let request = client.signed_audit(
            "TailAuditLog",
            v1::TailAuditLogRequest {
                lines: 5,
                follow: false,
            },
        );
        async move {
            let mut stream = audit.tail_audit_log(request).await?.into_inner();
            let mut lines = 0;
            while stream.message().await?.is_some() {
                lines += 1;
            }
            Ok::<_, tonic::Status>(lines)
        }
    };
    assert_access_denied(tail(&auditor).await, "audit:ReadAudit");
    let aws_style = r#"{"Version":"2012-10-17","Statement":[
        {"Sid":"Bucket","Effect":"Allow","Action":["s3:ListBucket"],"Resource":"arn:aws:s3:::logs","Condition":{"StringLike":{"s3:prefix":"audit/*"}}},
        {"Sid":"Ec2","Effect":"Deny","Action":"ec2:*","Resource":"*"},
        {"Sid":"ReadAudit","Effect":"Allow","Action":"audit:ReadAudit","Resource":"*"}]}"#;
    put_entity_policy(&d, v1::EntityType::User, "auditor", aws_style)
        .await
        .expect("a policy written for AWS is accepted");
    assert_eq!(tail(&auditor).await.expect("audit:ReadAudit granted"), 5);
    // `audit:*` too.
    put_entity_policy(
        &d,
        v1::EntityType::User,
        "auditor",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"audit:*","Resource":"*"}]}"#,
    )
    .await
    .expect("audit:* is accepted");
    assert_eq!(tail(&auditor).await.expect("audit:* granted"), 5);
    // Not an action at all: still refused, saying where.
    assert_malformed(
        put_entity_policy(
            &d,
            v1::EntityType::User,
            "auditor",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3 ListBucket","Resource":"*"}]}"#,
        )
        .await,
        "Statement[0].Action[0]",
    );
}

/// Item 11: a condition key of a namespace Keyhaven owns that does not exist is refused when
/// the policy is put, saying where, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_condition_key_of_our_namespaces_is_refused_where() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("typo").await.key_id;
    let before = get_key_policy(&d, &key).await;
    let typo = key_policy(
        &d,
        &[
            r#"{"Sid":"TenantOnly","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"StringNotEquals":{"kms:EncryptionContex:tenant":"a"}}}"#.into(),
        ],
    );
    assert_malformed(
        put_key_policy(&d, &key, &typo).await,
        "Statement[1].Condition.StringNotEquals.kms:EncryptionContex:tenant",
    );
    assert_eq!(get_key_policy(&d, &key).await, before);
    // In a variable too, and in identity policies.
    d.create_user("carol", None).await;
    assert_malformed(
        put_entity_policy(
            &d,
            v1::EntityType::User,
            "carol",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:ListAccessKeys","Resource":"arn:keyhaven:iam::*:user/${aws:usrname}"}]}"#,
        )
        .await,
        "Statement[0].Resource[0]",
    );
    assert_malformed(
        put_entity_policy(
            &d,
            v1::EntityType::User,
            "carol",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransprot":"false"}}}]}"#,
        )
        .await,
        "Statement[0].Condition.Bool.aws:SecureTransprot",
    );
    let request = v1::ListEntityPoliciesRequest {
        entity_type: v1::EntityType::User as i32,
        entity_name: "carol".into(),
    };
    let stored = d
        .client
        .iam()
        .list_entity_policies(d.client.signed_iam("ListEntityPolicies", request))
        .await
        .expect("ListEntityPolicies")
        .into_inner();
    assert_eq!(
        format!("{stored:?}").matches("inline").count(),
        0,
        "{stored:?}"
    );
    // Real keys of our namespaces, and other services' keys, are accepted.
    let good = key_policy(
        &d,
        &[
            r#"{"Sid":"TenantOnly","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"StringNotEquals":{"kms:EncryptionContext:tenant":"a"},"Bool":{"aws:MultiFactorAuthPresent":"false"},"StringLike":{"s3:prefix":"x/*"}}}"#.into(),
        ],
    );
    put_key_policy(&d, &key, &good).await.expect("accepted");
}

/// Item 11a: a Deny on `kms:EncryptionContext:tenant` applies to a request whose pair is
/// spelt `TENANT`; two spellings in one request can only refuse more, in a Deny and in an
/// Allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encryption_context_key_in_another_case_cannot_slip_past_a_deny() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("tenants").await.key_id;
    let alice = d.create_user("alice", Some(KMS_ALL)).await;
    let policy = key_policy(
        &d,
        &[
            r#"{"Sid":"NotBlocked","Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"blocked"}}}"#.into(),
            r#"{"Sid":"NoSecretPairs","Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"Null":{"kms:EncryptionContext:secret":"false"}}}"#.into(),
        ],
    );
    put_key_policy(&d, &key, &policy).await.expect("put");
    for context in [
        &[("TENANT", "blocked")][..],
        &[("Tenant", "blocked")][..],
        &[("SECRET", "x")][..],
        &[("Secret", "")][..],
        // Two spellings: one candidate is blocked; the Deny applies.
        &[("tenant", "fine"), ("TENANT", "blocked")][..],
    ] {
        let result = encrypt_as(&alice, &key, context).await;
        assert!(result.is_err(), "{context:?} slipped past the Deny");
        assert_access_denied(result, "kms:Encrypt");
    }
    encrypt_as(&alice, &key, &[("TENANT", "fine")])
        .await
        .expect("not blocked");

    // An Allow conditioned on the pair: any spelling of the key, but every candidate must
    // satisfy it.
    let bob = d
        .create_user(
            "bob",
            Some(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"a"}}}]}"#,
            ),
        )
        .await;
    encrypt_as(&bob, &key, &[("tenant", "a")])
        .await
        .expect("tenant a");
    encrypt_as(&bob, &key, &[("TENANT", "a")])
        .await
        .expect("tenant a, spelt TENANT");
    assert_access_denied(
        encrypt_as(&bob, &key, &[("tenant", "a"), ("TENANT", "b")]).await,
        "kms:Encrypt",
    );
}

/// Item 12: a stored key policy that no longer parses denies everyone, the root too, and
/// never falls back to identity policies; each refusal is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_stored_key_policy_denies_everyone_and_is_audited() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("unreadable").await;
    let alice = d.create_user("alice", Some(KMS_ALL)).await;
    let alice_key = {
        let request = v1::CreateAccessKeyRequest {
            user_name: "alice".into(),
        };
        d.client
            .iam()
            .create_access_key(d.client.signed_iam("CreateAccessKey", request))
            .await
            .expect("second access key")
            .into_inner()
    };
    encrypt_as(&alice, &key.key_id, &[]).await.expect("allowed");
    drop(alice);

    // As an older or newer release might have left it: a principal type this one refuses.
    d.stop().await;
    {
        // Written as that release would have: through the store's barrier.
        let store = d.open_store();
        let name = format!("key/{}", key.key_id);
        let mut record =
            KeyRecord::from_stored(&store.get(name.as_bytes()).unwrap().expect("record")).unwrap();
        record.policy = Some(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"backup.example"},"Action":"kms:*","Resource":"*"}]}"#.into(),
        );
        let mut batch = WriteBatch::new();
        batch.put(name, record.to_stored().unwrap());
        store.commit_blocking(batch).unwrap();
    }
    d.start_again().await;
    let alice = d
        .client_with(ClientCredentials {
            access_key_id: alice_key.access_key.expect("key").access_key_id,
            secret_access_key: SecretString::new(alice_key.secret_access_key),
            session_token: None,
            region: d.config.region.clone(),
        })
        .await;
    assert_access_denied(encrypt_as(&alice, &key.key_id, &[]).await, "kms:Encrypt");
    assert_access_denied(encrypt_as(&d.client, &key.key_id, &[]).await, "kms:Encrypt");
    assert_access_denied(describe_as(&d.client, &key.key_id).await, "kms:DescribeKey");
    assert_access_denied(describe_as(&alice, &key.key_id).await, "kms:DescribeKey");
    // Other keys are untouched.
    let other = d.create_key("readable").await.key_id;
    encrypt_as(&alice, &other, &[]).await.expect("other key");
    d.stop().await;
    let denied: Vec<AuditRecord> = chain_files(&d.config.audit_log)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<AuditRecord>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|r| {
            r.keys.contains(&key.arn)
                && r.outcome
                    .as_ref()
                    .is_some_and(|o| o.reason.as_deref() == Some("AccessDeniedException"))
        })
        .collect();
    let operations: Vec<&str> = denied.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(
        operations,
        [
            "kms:Encrypt",
            "kms:Encrypt",
            "kms:DescribeKey",
            "kms:DescribeKey"
        ],
        "{denied:?}"
    );
}

/// Item 12a: AWS's standard self-service policy (`user/${aws:username}`): a user rotates
/// their own access keys and cannot touch another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_manages_their_own_access_keys_through_a_policy_variable() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let self_service = r#"{"Version":"2012-10-17","Statement":[{"Sid":"ManageOwnAccessKeys","Effect":"Allow","Action":["iam:CreateAccessKey","iam:DeleteAccessKey","iam:ListAccessKeys","iam:UpdateAccessKey"],"Resource":"arn:keyhaven:iam::*:user/${aws:username}"}]}"#;
    let alice = d.create_user("alice", Some(self_service)).await;
    d.create_user("bob", None).await;
    let list = |client: &Client, user: &str| {
        let mut iam = client.iam();
        let request = client.signed_iam(
            "ListAccessKeys",
            v1::ListAccessKeysRequest {
                user_name: user.into(),
            },
        );
        async move {
            iam.list_access_keys(request).await.map(|r| {
                r.into_inner()
                    .access_key_metadata
                    .into_iter()
                    .map(|k| (k.access_key_id, k.status))
                    .collect::<Vec<_>>()
            })
        }
    };
    let create = |client: &Client, user: &str| {
        let mut iam = client.iam();
        let request = client.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: user.into(),
            },
        );
        async move { iam.create_access_key(request).await.map(|r| r.into_inner()) }
    };
    let update = |client: &Client, user: &str, id: &str| {
        let mut iam = client.iam();
        let request = client.signed_iam(
            "UpdateAccessKey",
            v1::UpdateAccessKeyRequest {
                user_name: user.into(),
                access_key_id: id.into(),
                status: "Inactive".into(),
            },
        );
        async move { iam.update_access_key(request).await.map(|_| ()) }
    };
    let delete = |client: &Client, user: &str, id: &str| {
        let mut iam = client.iam();
        let request = client.signed_iam(
            "DeleteAccessKey",
            v1::DeleteAccessKeyRequest {
                user_name: user.into(),
                access_key_id: id.into(),
            },
        );
        async move { iam.delete_access_key(request).await.map(|_| ()) }
    };

    // Her own: list, create a new key, and with it deactivate and delete the old one.
    let old = list(&alice, "alice").await.expect("own keys");
    assert_eq!(old.len(), 1);
    let new = create(&alice, "alice").await.expect("own new key");
    let new_id = new.access_key.expect("metadata").access_key_id;
    let alice = d
        .client_with(ClientCredentials {
            access_key_id: new_id.clone(),
            secret_access_key: SecretString::new(new.secret_access_key),
            session_token: None,
            region: d.config.region.clone(),
        })
        .await;
    update(&alice, "alice", &old[0].0)
        .await
        .expect("own update");
    delete(&alice, "alice", &old[0].0)
        .await
        .expect("own delete");
    assert_eq!(
        list(&alice, "alice").await.expect("own keys"),
        [(new_id, "Active".to_string())]
    );

    // Bob's: every call refused, nothing changed.
    let bobs = list(&d.client, "bob").await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_access_denied(list(&alice, "bob").await, "iam:ListAccessKeys");
    assert_access_denied(create(&alice, "bob").await, "iam:CreateAccessKey");
    assert_access_denied(
        update(&alice, "bob", &bobs[0].0).await,
        "iam:UpdateAccessKey",
    );
    assert_access_denied(
        delete(&alice, "bob", &bobs[0].0).await,
        "iam:DeleteAccessKey",
    );
    assert_eq!(list(&d.client, "bob").await.unwrap(), bobs);
    // A user whose name merely starts like hers is another user.
    d.create_user("alice2", None).await;
    assert_access_denied(create(&alice, "alice2").await, "iam:CreateAccessKey");
    assert_refused(
        create(&alice, "alice2").await.map(|_| ()),
        Code::PermissionDenied,
        "AccessDeniedException",
    );
}

/// Item 11: `keyhaven policy validate` judges a document offline and reports findings the
/// way IAM Access Analyzer does; an ERROR (what a put would refuse) exits 1.
#[test]
fn policy_validate_reports_findings_offline() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let run = |text: &str, kind: &str| {
        let file = dir.path().join("policy.json");
        std::fs::write(&file, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"))
            .args([
                "--output",
                "json",
                "policy",
                "validate",
                "--policy-type",
                kind,
            ])
            .arg("--policy-file")
            .arg(&file)
            // No daemon: an endpoint nothing listens on.
            .env("KEYHAVEN_ENDPOINT", "http://127.0.0.1:9")
            .output()
            .expect("run keyhaven");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
        let findings: Vec<(String, String, String)> = json["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| {
                (
                    f["findingType"].as_str().unwrap().to_owned(),
                    f["issueCode"].as_str().unwrap().to_owned(),
                    f["location"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (output.status.code(), findings)
    };
    let finding = |t: &str, code: &str, at: &str| (t.to_owned(), code.to_owned(), at.to_owned());

    let (status, findings) = run(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","kms:Encrypt","kms:Encrpyt"],"Resource":["arn:aws:s3:::b/*","*"]}]}"#,
        "identity",
    );
    assert_eq!(status, Some(0));
    assert_eq!(
        findings,
        [
            finding("WARNING", "UNSUPPORTED_SERVICE", "Statement[0].Action[0]"),
            finding("WARNING", "UNKNOWN_ACTION", "Statement[0].Action[2]"),
            finding(
                "WARNING",
                "UNSUPPORTED_RESOURCE",
                "Statement[0].Resource[0]"
            ),
        ]
    );
    let (status, findings) = run(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Condition":{"StringNotEquals":{"kms:EncryptionContex:tenant":"a"}}}]}"#,
        "resource",
    );
    assert_eq!(status, Some(1));
    assert_eq!(
        findings,
        [finding(
            "ERROR",
            "MALFORMED_POLICY_DOCUMENT",
            "Statement[0].Condition.StringNotEquals.kms:EncryptionContex:tenant"
        )]
    );
    let (status, findings) = run(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
        "identity",
    );
    assert_eq!((status, findings), (Some(0), vec![]));
}

/// Item 12, for identity policies: a stored inline policy that no longer parses denies its
/// principal everything instead of being skipped (its Deny may be what kept them out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_stored_identity_policy_denies_its_principal() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("guarded by identity").await.key_id;
    let mallory = d.create_user("mallory", Some(KMS_ALL)).await;
    let request = v1::PutEntityPolicyRequest {
        entity_type: v1::EntityType::User as i32,
        entity_name: "mallory".into(),
        policy_name: "guard".into(),
        policy_document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Encrypt","Resource":"*"}]}"#.into(),
    };
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam("PutEntityPolicy", request))
        .await
        .expect("guard");
    assert_access_denied(encrypt_as(&mallory, &key, &[]).await, "kms:Encrypt");
    describe_as(&mallory, &key).await.expect("allowed");
    drop(mallory);

    d.stop().await;
    {
        // Written as that release would have: through the store's barrier.
        let store = d.open_store();
        let name = "iam/user/mallory";
        let mut record: serde_json::Value =
            serde_json::from_slice(&store.get(name.as_bytes()).unwrap().expect("record")).unwrap();
        record["policies"]["guard"] = serde_json::Value::String(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Encrypt","Resource":"*","Condition":{"BinaryEquals":{"aws:MultiFactorAuthAge":"MzYwMA=="}}}]}"#.into(),
        );
        let mut batch = WriteBatch::new();
        batch.put(name, serde_json::to_vec(&record).unwrap());
        store.commit_blocking(batch).unwrap();
    }
    d.start_again().await;
    // Mallory's access key is the one create_user made; sign as root to make a new one.
    let request = v1::CreateAccessKeyRequest {
        user_name: "mallory".into(),
    };
    let created = d
        .client
        .iam()
        .create_access_key(d.client.signed_iam("CreateAccessKey", request))
        .await
        .expect("access key")
        .into_inner();
    let mallory = d
        .client_with(ClientCredentials {
            access_key_id: created.access_key.expect("key").access_key_id,
            secret_access_key: SecretString::new(created.secret_access_key),
            session_token: None,
            region: d.config.region.clone(),
        })
        .await;
    assert_access_denied(encrypt_as(&mallory, &key, &[]).await, "kms:Encrypt");
    assert_access_denied(describe_as(&mallory, &key).await, "kms:DescribeKey");
    // Others are untouched.
    encrypt_as(&d.client, &key, &[]).await.expect("root");
}

/// Item 12, for trust policies: a role whose stored trust policy no longer parses can be
/// assumed by nobody, the root included (AccessDeniedException, not "no such role").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_stored_trust_policy_lets_nobody_assume_the_role() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let (role_arn, _, _) = role_session(&d, "ops", "first").await;
    d.stop().await;
    {
        // Written as that release would have: through the store's barrier.
        let store = d.open_store();
        let name = "iam/role/ops";
        let mut record: serde_json::Value =
            serde_json::from_slice(&store.get(name.as_bytes()).unwrap().expect("record")).unwrap();
        record["trust_policy"] = serde_json::Value::String(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Federated":"idp.example"},"Action":"sts:AssumeRoleWithWebIdentity"}]}"#.into(),
        );
        let mut batch = WriteBatch::new();
        batch.put(name, serde_json::to_vec(&record).unwrap());
        store.commit_blocking(batch).unwrap();
    }
    d.start_again().await;
    let request = v1::AssumeRoleRequest {
        role_arn: role_arn.clone(),
        role_session_name: "second".into(),
        duration_seconds: None,
        ..Default::default()
    };
    assert_access_denied(
        d.client
            .iam()
            .assume_role(d.client.signed_iam("AssumeRole", request))
            .await,
        "sts:AssumeRole",
    );
}

/// A Deny whose condition names an encryption-context key through a policy variable stays in
/// force when the request spells that key two ways: each spelling's value is a candidate, and
/// the Deny applies if any candidate makes it apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_on_a_key_spelt_two_ways_cannot_switch_a_deny_off() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("owned").await.key_id;
    let mallory = d.create_user("mallory", Some(KMS_ALL)).await;
    let policy = key_policy(
        &d,
        &[r#"{"Sid":"OwnerOnly","Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"StringNotEquals":{"aws:username":"${kms:EncryptionContext:owner}"}}}"#.into()],
    );
    put_key_policy(&d, &key, &policy).await.expect("put");
    for context in [
        &[("owner", "alice")][..],
        &[("owner", "alice"), ("OWNER", "alice")][..],
        &[("owner", "mallory"), ("OWNER", "alice")][..],
    ] {
        let result = encrypt_as(&mallory, &key, context).await;
        assert!(result.is_err(), "{context:?} slipped past the Deny");
        assert_access_denied(result, "kms:Encrypt");
    }
    // The Deny is not a blanket one: mallory's own context passes, spelt either way or both.
    for context in [
        &[("owner", "mallory")][..],
        &[("owner", "mallory"), ("OWNER", "mallory")][..],
    ] {
        encrypt_as(&mallory, &key, context)
            .await
            .unwrap_or_else(|e| panic!("{context:?}: {e}"));
    }
}
