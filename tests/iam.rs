//! Access control end to end: users, groups, roles, access keys, temporary credentials and key
//! policies, over gRPC against a real daemon.

mod common;

use common::{Backend, TestDaemon, assert_refused, pairs};
use keyhaven::api::reason_of;
use keyhaven::client::{Client, ClientCredentials};
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use tonic::Code;

const ALLOW_ENCRYPT_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"EncryptOnly","Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#;

async fn put_policy(
    d: &TestDaemon,
    kind: v1::EntityType,
    name: &str,
    policy_name: &str,
    document: &str,
) -> Result<(), tonic::Status> {
    let request = v1::PutEntityPolicyRequest {
        entity_type: kind as i32,
        entity_name: name.into(),
        policy_name: policy_name.into(),
        policy_document: document.into(),
    };
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam("PutEntityPolicy", request))
        .await
        .map(|_| ())
}

async fn encrypt_as(
    client: &Client,
    key: &str,
    context: &[(&str, &str)],
) -> Result<Vec<u8>, tonic::Status> {
    let request = v1::EncryptRequest {
        key_id: key.into(),
        plaintext: b"data".to_vec(),
        encryption_context: pairs(context),
        ..Default::default()
    };
    Ok(client
        .kms()
        .encrypt(client.signed("Encrypt", request))
        .await?
        .into_inner()
        .ciphertext_blob)
}

async fn decrypt_as(client: &Client, blob: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let request = v1::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        ..Default::default()
    };
    Ok(client
        .kms()
        .decrypt(client.signed("Decrypt", request))
        .await?
        .into_inner()
        .plaintext
        .to_vec())
}

async fn describe_as(client: &Client, key: &str) -> Result<v1::KeyMetadata, tonic::Status> {
    let request = v1::DescribeKeyRequest { key_id: key.into() };
    Ok(client
        .kms()
        .describe_key(client.signed("DescribeKey", request))
        .await?
        .into_inner()
        .key_metadata
        .unwrap())
}

#[track_caller]
fn assert_denied<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    action: &str,
    resource: &str,
) {
    let status = result.expect_err("expected AccessDeniedException");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("AccessDeniedException"),
        "{status:?}"
    );
    assert!(status.message().contains(action), "{status:?}");
    assert!(status.message().contains(resource), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_can_do_nothing_and_learns_nothing() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("root's").await;
    let blob = d.encrypt(&key.key_id, b"secret", &[]).await.unwrap();
    let alice = d.create_user("alice", None).await;
    let who = alice
        .iam()
        .get_caller_identity(alice.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        who.arn,
        format!("arn:keyhaven:iam::{}:user/alice", d.account_id)
    );
    assert!(who.user_id.starts_with("AIDA"));
    let list = alice
        .kms()
        .list_keys(alice.signed("ListKeys", v1::ListKeysRequest::default()))
        .await;
    assert_denied(list, "kms:ListKeys", "*");
    assert_denied(
        encrypt_as(&alice, &key.key_id, &[]).await,
        "kms:Encrypt",
        &key.arn,
    );
    assert_denied(decrypt_as(&alice, &blob).await, "kms:Decrypt", &key.key_id);
    let create = alice
        .kms()
        .create_key(alice.signed("CreateKey", v1::CreateKeyRequest::default()))
        .await;
    assert_denied(create, "kms:CreateKey", "*");
    let users = alice
        .iam()
        .list_users(alice.signed_iam("ListUsers", v1::ListUsersRequest {}))
        .await;
    assert_denied(users, "iam:ListUsers", "user/*");
    // An existing key and a missing one answer alike, naming the resource as asked.
    let missing = "00000000-1111-2222-3333-444444444444";
    let existing = describe_as(&alice, &key.key_id).await.unwrap_err();
    let absent = describe_as(&alice, missing).await.unwrap_err();
    assert_eq!(
        (existing.code(), absent.code()),
        (Code::PermissionDenied, Code::PermissionDenied)
    );
    assert_eq!(
        existing.message().replace(&key.key_id, "ID"),
        absent.message().replace(missing, "ID"),
    );
    // A forged blob naming a missing key answers like one naming a forbidden key.
    let mut forged = blob.clone();
    forged[1..17].copy_from_slice(uuid::Uuid::parse_str(missing).unwrap().as_bytes());
    assert_denied(decrypt_as(&alice, &forged).await, "kms:Decrypt", missing);
    // The root, who may list keys, is told plainly.
    assert_refused(
        d.describe(missing).await,
        Code::NotFound,
        "NotFoundException",
    );
    assert_refused(
        d.decrypt(&forged, &[]).await,
        Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    // Nothing changed.
    assert_eq!(d.list_all_keys().await, vec![key.key_id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_but_not_decrypt() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("shared").await;
    let alice = d.create_user("alice", None).await;
    put_policy(
        &d,
        v1::EntityType::User,
        "alice",
        "encrypt-only",
        ALLOW_ENCRYPT_ONLY,
    )
    .await
    .unwrap();
    let blob = encrypt_as(&alice, &key.key_id, &[]).await.unwrap();
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"data");
    assert_denied(decrypt_as(&alice, &blob).await, "kms:Decrypt", &key.key_id);
    let request = v1::GenerateDataKeyRequest {
        key_id: key.key_id.clone(),
        key_spec: "AES_256".into(),
        ..Default::default()
    };
    assert_denied(
        alice
            .kms()
            .generate_data_key(alice.signed("GenerateDataKey", request))
            .await,
        "kms:GenerateDataKey",
        &key.key_id,
    );
    // A key whose policy does not delegate to the account: the identity policy is not enough.
    let own_policy = format!(
        r#"{{"Statement":[{{"Sid":"RootOnly","Effect":"Allow","Principal":{{"AWS":"arn:keyhaven:iam::{}:root"}},"Action":["kms:PutKeyPolicy","kms:DescribeKey"],"Resource":"*"}}]}}"#,
        d.account_id
    );
    let request = v1::CreateKeyRequest {
        policy: own_policy,
        ..Default::default()
    };
    let private = d
        .client
        .kms()
        .create_key(d.client.signed("CreateKey", request))
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    assert_denied(
        encrypt_as(&alice, &private.key_id, &[]).await,
        "kms:Encrypt",
        &private.key_id,
    );
    // Not even the root may use it: its key policy allows the root only two actions.
    assert_denied(
        d.encrypt(&private.key_id, b"x", &[]).await,
        "kms:Encrypt",
        &private.key_id,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_deny_overrides_a_key_policy_allow() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let alice = d.create_user("alice", None).await;
    let alice_arn = format!("arn:keyhaven:iam::{}:user/alice", d.account_id);
    let policy = format!(
        r#"{{"Statement":[
            {{"Sid":"Root","Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"kms:*","Resource":"*"}},
            {{"Sid":"Alice","Effect":"Allow","Principal":{{"AWS":"{alice_arn}"}},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}}]}}"#,
        d.account_id
    );
    let request = v1::CreateKeyRequest {
        policy,
        ..Default::default()
    };
    let key = d
        .client
        .kms()
        .create_key(d.client.signed("CreateKey", request))
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    let blob = encrypt_as(&alice, &key.key_id, &[]).await.unwrap();
    assert_eq!(decrypt_as(&alice, &blob).await.unwrap(), b"data");
    let iam = d.client.iam();
    iam.clone()
        .create_group(d.client.signed_iam(
            "CreateGroup",
            v1::CreateGroupRequest {
                group_name: "auditors".into(),
            },
        ))
        .await
        .unwrap();
    iam.clone()
        .add_user_to_group(d.client.signed_iam(
            "AddUserToGroup",
            v1::AddUserToGroupRequest {
                group_name: "auditors".into(),
                user_name: "alice".into(),
            },
        ))
        .await
        .unwrap();
    put_policy(
        &d,
        v1::EntityType::Group,
        "auditors",
        "no-decrypt",
        r#"{"Statement":[{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}"#,
    )
    .await
    .unwrap();
    assert_denied(decrypt_as(&alice, &blob).await, "kms:Decrypt", &key.key_id);
    encrypt_as(&alice, &key.key_id, &[]).await.unwrap();
    // Out of the group, the deny no longer applies.
    iam.clone()
        .remove_user_from_group(d.client.signed_iam(
            "RemoveUserFromGroup",
            v1::RemoveUserFromGroupRequest {
                group_name: "auditors".into(),
                user_name: "alice".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(decrypt_as(&alice, &blob).await.unwrap(), b"data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encryption_context_condition_is_enforced() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("tenants").await;
    let alice = d.create_user("alice", None).await;
    put_policy(
        &d,
        v1::EntityType::User,
        "alice",
        "acme-only",
        r#"{"Statement":[{"Sid":"Acme","Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"acme"}}}]}"#,
    )
    .await
    .unwrap();
    encrypt_as(&alice, &key.key_id, &[("tenant", "acme")])
        .await
        .unwrap();
    assert_denied(
        encrypt_as(&alice, &key.key_id, &[("tenant", "globex")]).await,
        "kms:Encrypt",
        &key.key_id,
    );
    assert_denied(
        encrypt_as(&alice, &key.key_id, &[]).await,
        "kms:Encrypt",
        &key.key_id,
    );
    // Condition keys are case-insensitive, the context key's name too (as AWS documents);
    // a key spelt two ways must satisfy an Allow with every value.
    encrypt_as(&alice, &key.key_id, &[("Tenant", "acme")])
        .await
        .unwrap();
    assert_denied(
        encrypt_as(
            &alice,
            &key.key_id,
            &[("tenant", "acme"), ("Tenant", "globex")],
        )
        .await,
        "kms:Encrypt",
        &key.key_id,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_keys_inactive_deleted_and_limited() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let alice = d.create_user("alice", None).await;
    let whoami = |c: &Client| {
        let mut iam = c.iam();
        let request = c.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {});
        async move { iam.get_caller_identity(request).await }
    };
    whoami(&alice).await.unwrap();
    let iam = d.client.iam();
    let keys = iam
        .clone()
        .list_access_keys(d.client.signed_iam(
            "ListAccessKeys",
            v1::ListAccessKeysRequest {
                user_name: "alice".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .access_key_metadata;
    assert_eq!(keys.len(), 1);
    let id = keys[0].access_key_id.clone();
    let update = |status: &str| v1::UpdateAccessKeyRequest {
        user_name: "alice".into(),
        access_key_id: id.clone(),
        status: status.into(),
    };
    iam.clone()
        .update_access_key(d.client.signed_iam("UpdateAccessKey", update("Inactive")))
        .await
        .unwrap();
    assert_refused(
        whoami(&alice).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert_refused(
        iam.clone()
            .update_access_key(d.client.signed_iam("UpdateAccessKey", update("Sleeping")))
            .await,
        Code::InvalidArgument,
        "ValidationException",
    );
    iam.clone()
        .update_access_key(d.client.signed_iam("UpdateAccessKey", update("Active")))
        .await
        .unwrap();
    whoami(&alice).await.unwrap();
    // A second key is fine; a third is refused and nothing is created.
    let create = || {
        d.client.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: "alice".into(),
            },
        )
    };
    iam.clone().create_access_key(create()).await.unwrap();
    assert_refused(
        iam.clone().create_access_key(create()).await,
        Code::ResourceExhausted,
        "LimitExceededException",
    );
    let listed = iam
        .clone()
        .list_access_keys(d.client.signed_iam(
            "ListAccessKeys",
            v1::ListAccessKeysRequest {
                user_name: "alice".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.access_key_metadata.len(), 2);
    iam.clone()
        .delete_access_key(d.client.signed_iam(
            "DeleteAccessKey",
            v1::DeleteAccessKeyRequest {
                user_name: "alice".into(),
                access_key_id: id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_refused(
        whoami(&alice).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    // Deleting the user takes its keys with it.
    let bob = d.create_user("bob", None).await;
    whoami(&bob).await.unwrap();
    iam.clone()
        .delete_user(d.client.signed_iam(
            "DeleteUser",
            v1::DeleteUserRequest {
                user_name: "bob".into(),
            },
        ))
        .await
        .unwrap();
    assert_refused(
        whoami(&bob).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert_refused(
        iam.clone()
            .create_access_key(d.client.signed_iam(
                "CreateAccessKey",
                v1::CreateAccessKeyRequest {
                    user_name: "bob".into(),
                },
            ))
            .await,
        Code::NotFound,
        "NoSuchEntityException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_trust_sessions_and_expiry() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("app key").await;
    let alice = d.create_user("alice", None).await;
    let bob = d.create_user("bob", None).await;
    let alice_arn = format!("arn:keyhaven:iam::{}:user/alice", d.account_id);
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{alice_arn}"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let request = v1::CreateRoleRequest {
        role_name: "app".into(),
        assume_role_policy_document: trust,
    };
    let role = d
        .client
        .iam()
        .create_role(d.client.signed_iam("CreateRole", request))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    put_policy(
        &d,
        v1::EntityType::Role,
        "app",
        "encrypt",
        ALLOW_ENCRYPT_ONLY,
    )
    .await
    .unwrap();
    let assume = |c: &Client, duration: Option<u32>| {
        let mut iam = c.iam();
        let request = c.signed_iam(
            "AssumeRole",
            v1::AssumeRoleRequest {
                role_arn: role.arn.clone(),
                role_session_name: "batch-1".into(),
                duration_seconds: duration,
                ..Default::default()
            },
        );
        async move { iam.assume_role(request).await.map(|r| r.into_inner()) }
    };
    // Bob is not trusted.
    assert_denied(assume(&bob, None).await, "sts:AssumeRole", &role.arn);
    for bad in [899, 43_201] {
        assert_refused(
            assume(&alice, Some(bad)).await,
            Code::InvalidArgument,
            "ValidationException",
        );
    }
    let session = assume(&alice, Some(900)).await.unwrap();
    let credentials = session.credentials.unwrap();
    assert_eq!(
        session.assumed_role_arn,
        format!(
            "arn:keyhaven:sts::{}:assumed-role/app/batch-1",
            d.account_id
        )
    );
    assert!((credentials.expiration - (d.now() + 900)).abs() < 60);
    let temporary = d
        .client_with(ClientCredentials {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: SecretString::new(credentials.secret_access_key.clone()),
            session_token: Some(SecretString::new(credentials.session_token.clone())),
            region: d.config.region.clone(),
        })
        .await;
    let who = temporary
        .iam()
        .get_caller_identity(
            temporary.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.arn, session.assumed_role_arn);
    encrypt_as(&temporary, &key.key_id, &[]).await.unwrap();
    let blob = d.encrypt(&key.key_id, b"x", &[]).await.unwrap();
    assert_denied(
        decrypt_as(&temporary, &blob).await,
        "kms:Decrypt",
        &key.key_id,
    );
    // Without the session token, or with another one, the credentials do not work.
    let tokenless = d
        .client_with(ClientCredentials {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: SecretString::new(credentials.secret_access_key.clone()),
            session_token: None,
            region: d.config.region.clone(),
        })
        .await;
    assert_refused(
        encrypt_as(&tokenless, &key.key_id, &[]).await,
        Code::Unauthenticated,
        "IncompleteSignatureException",
    );
    let forged = d
        .client_with(ClientCredentials {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: SecretString::new(credentials.secret_access_key.clone()),
            session_token: Some(SecretString::new("forged".into())),
            region: d.config.region.clone(),
        })
        .await;
    assert_refused(
        encrypt_as(&forged, &key.key_id, &[]).await,
        Code::Unauthenticated,
        "InvalidSignatureException",
    );
    // After expiry: refused.
    d.clock.advance(901);
    assert_refused(
        encrypt_as(&temporary, &key.key_id, &[]).await,
        Code::Unauthenticated,
        "ExpiredTokenException",
    );
    // A role whose trust delegates to the account: identity policies decide.
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"sts:AssumeRole"}}]}}"#,
        d.account_id
    );
    let request = v1::CreateRoleRequest {
        role_name: "ops".into(),
        assume_role_policy_document: trust,
    };
    let ops = d
        .client
        .iam()
        .create_role(d.client.signed_iam("CreateRole", request))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    let assume_ops = |c: &Client| {
        let mut iam = c.iam();
        let request = c.signed_iam(
            "AssumeRole",
            v1::AssumeRoleRequest {
                role_arn: ops.arn.clone(),
                role_session_name: "s1".into(),
                duration_seconds: None,
                ..Default::default()
            },
        );
        async move { iam.assume_role(request).await }
    };
    assert_denied(assume_ops(&bob).await, "sts:AssumeRole", &ops.arn);
    put_policy(
        &d,
        v1::EntityType::User,
        "bob",
        "may-assume",
        &format!(
            r#"{{"Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"{}"}}]}}"#,
            ops.arn
        ),
    )
    .await
    .unwrap();
    assume_ops(&bob).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_policies_lockout_check_and_malformed_documents() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("guarded").await;
    let get = || async {
        let request = v1::GetKeyPolicyRequest {
            key_id: key.key_id.clone(),
            policy_name: "default".into(),
        };
        d.client
            .kms()
            .get_key_policy(d.client.signed("GetKeyPolicy", request))
            .await
            .map(|r| r.into_inner().policy)
    };
    let default = get().await.unwrap();
    assert!(
        default.contains(&format!("arn:keyhaven:iam::{}:root", d.account_id)),
        "{default}"
    );
    let put = |policy: &str, bypass: bool| {
        let request = v1::PutKeyPolicyRequest {
            key_id: key.key_id.clone(),
            policy_name: "default".into(),
            policy: policy.into(),
            bypass_policy_lockout_safety_check: bypass,
        };
        let mut kms = d.client.kms();
        let signed = d.client.signed("PutKeyPolicy", request);
        async move { kms.put_key_policy(signed).await }
    };
    // Malformed: refused with where, nothing stored.
    let status = put(
        r#"{"Statement":[{"Effect":"Allow","Action":"kms:*"}]}"#,
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("MalformedPolicyDocumentException")
    );
    assert!(
        status
            .message()
            .contains("Statement[0]: Principal is missing"),
        "{status:?}"
    );
    assert_eq!(get().await.unwrap(), default);
    // A policy that would lock the caller out: refused, unless bypassed.
    let lockout = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}]}"#;
    let status = put(lockout, false).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("MalformedPolicyDocumentException")
    );
    assert!(
        status
            .message()
            .contains("will not allow you to update the key policy"),
        "{status:?}"
    );
    assert_eq!(get().await.unwrap(), default);
    put(lockout, true).await.unwrap();
    // Now even the root cannot change it back, nor read it.
    let status = put(&default, true).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_denied(get().await, "kms:GetKeyPolicy", &key.key_id);
    // And CreateKey runs the same check.
    let request = v1::CreateKeyRequest {
        policy: lockout.into(),
        ..Default::default()
    };
    let status = d
        .client
        .kms()
        .create_key(d.client.signed("CreateKey", request))
        .await
        .unwrap_err();
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("MalformedPolicyDocumentException")
    );
    assert_eq!(d.list_all_keys().await.len(), 1);
    // Identity policies: malformed ones are refused and not stored.
    d.client
        .iam()
        .create_user(d.client.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: "carol".into(),
            },
        ))
        .await
        .unwrap();
    let status = put_policy(
        &d,
        v1::EntityType::User,
        "carol",
        "bad",
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("MalformedPolicyDocumentException")
    );
    assert!(
        status
            .message()
            .contains("Principal is not allowed in an identity policy"),
        "{status:?}"
    );
    let listed = d
        .client
        .iam()
        .list_entity_policies(d.client.signed_iam(
            "ListEntityPolicies",
            v1::ListEntityPoliciesRequest {
                entity_type: v1::EntityType::User as i32,
                entity_name: "carol".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.policy_names.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_names_the_deciding_statement() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("simulated").await;
    let client = d.create_user("alice", None).await;
    put_policy(
        &d,
        v1::EntityType::User,
        "alice",
        "encrypt",
        ALLOW_ENCRYPT_ONLY,
    )
    .await
    .unwrap();
    put_policy(&d, v1::EntityType::User, "alice", "no-random", r#"{"Statement":[{"Sid":"NoRandom","Effect":"Deny","Action":"kms:GenerateRandom","Resource":"*"}]}"#).await.unwrap();
    let alice = format!("arn:keyhaven:iam::{}:user/alice", d.account_id);
    let simulate = |action: &str, resource: &str| {
        let request = v1::SimulatePrincipalPolicyRequest {
            policy_source_arn: alice.clone(),
            action_name: action.into(),
            resource_arn: resource.into(),
            context_entries: vec![],
        };
        let mut iam = d.client.iam();
        let signed = d.client.signed_iam("SimulatePrincipalPolicy", request);
        async move {
            iam.simulate_principal_policy(signed)
                .await
                .unwrap()
                .into_inner()
        }
    };
    let allowed = simulate("kms:Encrypt", &key.arn).await;
    assert_eq!(allowed.eval_decision, "allowed");
    assert_eq!(
        allowed.matched_statements[0].source_policy_id,
        "user/alice/encrypt"
    );
    assert_eq!(allowed.matched_statements[0].sid, "EncryptOnly");
    let implicit = simulate("kms:Decrypt", &key.arn).await;
    assert_eq!(implicit.eval_decision, "implicitDeny");
    assert!(implicit.matched_statements.is_empty());
    let explicit = simulate("kms:GenerateRandom", "*").await;
    assert_eq!(explicit.eval_decision, "explicitDeny");
    assert_eq!(explicit.matched_statements[0].sid, "NoRandom");
    // What the simulator says is what the daemon does.
    let blob = encrypt_as(&client, &key.key_id, &[]).await.unwrap();
    assert_denied(decrypt_as(&client, &blob).await, "kms:Decrypt", &key.key_id);
    let random = client
        .kms()
        .generate_random(client.signed(
            "GenerateRandom",
            v1::GenerateRandomRequest { number_of_bytes: 8 },
        ))
        .await;
    assert_denied(random, "kms:GenerateRandom", "*");
    // The root's simulation: allowed by the default key policy's statement.
    let request = v1::SimulatePrincipalPolicyRequest {
        policy_source_arn: format!("arn:keyhaven:iam::{}:root", d.account_id),
        action_name: "kms:Decrypt".into(),
        resource_arn: key.arn.clone(),
        context_entries: vec![],
    };
    let root = d
        .client
        .iam()
        .simulate_principal_policy(d.client.signed_iam("SimulatePrincipalPolicy", request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(root.eval_decision, "allowed");
    assert_eq!(
        root.matched_statements[0].sid,
        "Enable IAM User Permissions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_stored_only_sealed() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let request = v1::CreateUserRequest {
        user_name: "erin".into(),
    };
    d.client
        .iam()
        .create_user(d.client.signed_iam("CreateUser", request))
        .await
        .unwrap();
    let key = d
        .client
        .iam()
        .create_access_key(d.client.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: "erin".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let secret = key.secret_access_key.clone();
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"sts:AssumeRole"}}]}}"#,
        d.account_id
    );
    let role = d
        .client
        .iam()
        .create_role(d.client.signed_iam(
            "CreateRole",
            v1::CreateRoleRequest {
                role_name: "r".into(),
                assume_role_policy_document: trust,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    let session = d
        .client
        .iam()
        .assume_role(d.client.signed_iam(
            "AssumeRole",
            v1::AssumeRoleRequest {
                role_arn: role.arn,
                role_session_name: "s1".into(),
                duration_seconds: None,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap();
    d.stop().await;
    let mut files = vec![d.dir.path().to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for canary in [
            &secret,
            &session.secret_access_key,
            &session.session_token,
            &d.credentials.secret_access_key.expose().clone(),
        ] {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "a secret appears in clear in {}",
                path.display()
            );
        }
    }
    assert!(scanned > 0);
}
