//! Accounts and guardrails (issue 18): one daemon hosts an organisation; the management
//! account makes member accounts, each with its own root credentials, identities, keys and
//! aliases, out of every other account's sight; a key policy can share a key with another
//! account, whose own policies must agree; guardrail policies cap every principal of a member
//! account, its root included, and never the management account's.
//!
//! Everything through a real daemon over gRPC, with the stock client.

mod common;

use common::{Backend, TestDaemon, assert_refused};
use keyhaven::client::{Client, ClientCredentials};
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use tonic::Code;

/// A member account made by `d`'s root: its id and a client signed as its root.
async fn member(d: &TestDaemon, name: &str) -> (String, Client) {
    let (account, credentials) = d.create_account(name).await;
    assert_eq!(account.id.len(), 12, "{account:?}");
    assert_ne!(account.id, d.account_id);
    assert_eq!(account.guardrail_policies, vec!["FullAccess".to_string()]);
    (account.id, d.client_with(credentials).await)
}

async fn create_key(client: &Client, keystore: &str) -> Result<v1::KeyMetadata, tonic::Status> {
    Ok(client
        .kms()
        .create_key(client.signed(
            "CreateKey",
            v1::CreateKeyRequest {
                keystore: keystore.into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .key_metadata
        .expect("metadata"))
}

async fn list_keys(client: &Client) -> Result<Vec<String>, tonic::Status> {
    Ok(client
        .kms()
        .list_keys(client.signed("ListKeys", v1::ListKeysRequest::default()))
        .await?
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.key_arn)
        .collect())
}

async fn describe(client: &Client, key: &str) -> Result<v1::KeyMetadata, tonic::Status> {
    Ok(client
        .kms()
        .describe_key(client.signed("DescribeKey", v1::DescribeKeyRequest { key_id: key.into() }))
        .await?
        .into_inner()
        .key_metadata
        .expect("metadata"))
}

async fn encrypt(client: &Client, key: &str) -> Result<Vec<u8>, tonic::Status> {
    Ok(client
        .kms()
        .encrypt(client.signed(
            "Encrypt",
            v1::EncryptRequest {
                key_id: key.into(),
                plaintext: b"shared secret".to_vec(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .ciphertext_blob)
}

async fn decrypt(client: &Client, blob: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    Ok(client
        .kms()
        .decrypt(client.signed(
            "Decrypt",
            v1::DecryptRequest {
                ciphertext_blob: blob.to_vec(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .plaintext
        .to_vec())
}

async fn schedule_deletion(client: &Client, key: &str, days: u32) -> Result<(), tonic::Status> {
    client
        .kms()
        .schedule_key_deletion(client.signed(
            "ScheduleKeyDeletion",
            v1::ScheduleKeyDeletionRequest {
                key_id: key.into(),
                pending_window_in_days: Some(days),
            },
        ))
        .await
        .map(|_| ())
}

/// Makes user `name` in `root`'s account with the inline `policy`; a client signed as it.
async fn user(d: &TestDaemon, root: &Client, name: &str, policy: Option<&str>) -> Client {
    let iam = root.iam();
    iam.clone()
        .create_user(root.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateUser");
    if let Some(document) = policy {
        iam.clone()
            .put_entity_policy(root.signed_iam(
                "PutEntityPolicy",
                v1::PutEntityPolicyRequest {
                    entity_type: v1::EntityType::User as i32,
                    entity_name: name.into(),
                    policy_name: "inline".into(),
                    policy_document: document.into(),
                },
            ))
            .await
            .expect("PutEntityPolicy");
    }
    let key = iam
        .clone()
        .create_access_key(root.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateAccessKey")
        .into_inner();
    d.client_with(ClientCredentials {
        access_key_id: key.access_key.expect("key").access_key_id,
        secret_access_key: SecretString::new(key.secret_access_key),
        session_token: None,
        region: d.config.region.clone(),
    })
    .await
}

async fn caller_arn(client: &Client) -> String {
    client
        .iam()
        .get_caller_identity(
            client.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
        )
        .await
        .expect("GetCallerIdentity")
        .into_inner()
        .arn
}

async fn guardrail(d: &TestDaemon, name: &str, document: &str) -> Result<(), tonic::Status> {
    d.client
        .iam()
        .create_guardrail_policy(d.client.signed_iam(
            "CreateGuardrailPolicy",
            v1::CreateGuardrailPolicyRequest {
                policy_name: name.into(),
                description: String::new(),
                document: document.into(),
            },
        ))
        .await
        .map(|_| ())
}

async fn attach(d: &TestDaemon, name: &str, target: &str) -> Result<(), tonic::Status> {
    d.client
        .iam()
        .attach_guardrail_policy(d.client.signed_iam(
            "AttachGuardrailPolicy",
            v1::AttachGuardrailPolicyRequest {
                policy_name: name.into(),
                target_id: target.into(),
            },
        ))
        .await
        .map(|_| ())
}

async fn detach(d: &TestDaemon, name: &str, target: &str) -> Result<(), tonic::Status> {
    d.client
        .iam()
        .detach_guardrail_policy(d.client.signed_iam(
            "DetachGuardrailPolicy",
            v1::DetachGuardrailPolicyRequest {
                policy_name: name.into(),
                target_id: target.into(),
            },
        ))
        .await
        .map(|_| ())
}

async fn list_policies(d: &TestDaemon) -> Vec<v1::GuardrailPolicy> {
    d.client
        .iam()
        .list_guardrail_policies(
            d.client
                .signed_iam("ListGuardrailPolicies", v1::ListGuardrailPoliciesRequest {}),
        )
        .await
        .expect("ListGuardrailPolicies")
        .into_inner()
        .policies
}

const MIN_WINDOW: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"MinimumWindow","Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*","Condition":{"NumericLessThan":{"kms:ScheduleKeyDeletionPendingWindowInDays":"30"}}}]}"#;
const HSM_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"HsmOnly","Effect":"Deny","Action":"kms:CreateKey","Resource":"*","Condition":{"StringNotLike":{"keyhaven:KeyStore":"pkcs11:*"}}}]}"#;

#[tokio::test]
async fn a_member_account_is_a_world_of_its_own() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let own_key = d.create_key("management's").await;
    let (member_id, member_root) = member(&d, "payments").await;
    assert_eq!(
        caller_arn(&member_root).await,
        format!("arn:keyhaven:iam::{member_id}:root")
    );

    // Its keys carry its account id, and each account lists only its own.
    let key = create_key(&member_root, "").await.expect("CreateKey");
    assert!(
        key.arn.contains(&format!(":{member_id}:key/")),
        "{}",
        key.arn
    );
    assert_eq!(key.aws_account_id, member_id);
    assert_eq!(
        list_keys(&member_root).await.unwrap(),
        vec![key.arn.clone()]
    );
    let managed = list_keys(&d.client).await.unwrap();
    assert_eq!(managed, vec![own_key.arn.clone()]);

    // Neither sees the other's key: by id it does not exist in the caller's account, by
    // ARN the key's own policy keeps the other account out.
    assert_refused(
        describe(&d.client, &key.key_id).await,
        Code::NotFound,
        "NotFoundException",
    );
    assert_refused(
        describe(&d.client, &key.arn).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_refused(
        describe(&member_root, &own_key.key_id).await,
        Code::NotFound,
        "NotFoundException",
    );
    assert_refused(
        describe(&member_root, &own_key.arn).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    let blob = encrypt(&d.client, &own_key.key_id).await.unwrap();
    assert_refused(
        decrypt(&member_root, &blob).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );

    // Names are the account's: the same user and alias in both accounts are two.
    let member_alice = user(&d, &member_root, "alice", None).await;
    let own_alice = user(&d, &d.client, "alice", None).await;
    assert_eq!(
        caller_arn(&member_alice).await,
        format!("arn:keyhaven:iam::{member_id}:user/alice")
    );
    assert_eq!(
        caller_arn(&own_alice).await,
        format!("arn:keyhaven:iam::{}:user/alice", d.account_id)
    );
    for (client, target) in [(&member_root, &key.key_id), (&d.client, &own_key.key_id)] {
        client
            .kms()
            .create_alias(client.signed(
                "CreateAlias",
                v1::CreateAliasRequest {
                    alias_name: "alias/app".into(),
                    target_key_id: target.clone(),
                },
            ))
            .await
            .expect("the same alias in each account");
    }
    let by_alias = describe(&member_root, "alias/app").await.unwrap();
    assert_eq!(by_alias.key_id, key.key_id);

    // A member cannot manage the organisation, nor read the organisation's audit log.
    assert_refused(
        member_root
            .iam()
            .create_account(member_root.signed_iam(
                "CreateAccount",
                v1::CreateAccountRequest {
                    account_name: "rogue".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    let accounts = d
        .client
        .iam()
        .list_accounts(
            d.client
                .signed_iam("ListAccounts", v1::ListAccountsRequest {}),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accounts.accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts.management_account_id, d.account_id);
    // The member reads its own account's records of the organisation's log, and no other's.
    let read_log = |client: Client| async move {
        let mut stream = client
            .audit()
            .tail_audit_log(client.signed_audit(
                "TailAuditLog",
                v1::TailAuditLogRequest {
                    lines: 10_000,
                    follow: false,
                },
            ))
            .await?
            .into_inner();
        let mut lines = Vec::new();
        while let Some(line) = stream.message().await? {
            lines.push(serde_json::from_str::<serde_json::Value>(&line.line).unwrap());
        }
        Ok::<_, tonic::Status>(lines)
    };
    let own = read_log(member_root.clone())
        .await
        .expect("the member reads its records");
    let of_member = |v: &serde_json::Value| {
        v.as_str()
            .is_some_and(|arn| arn.split(':').nth(4) == Some(member_id.as_str()))
    };
    assert!(
        own.iter().any(|r| r["operation"] == "kms:CreateKey"
            && r["principal"]
                .as_str()
                .is_some_and(|p| p.contains(&member_id))),
        "the member's own CreateKey is there"
    );
    for record in &own {
        let keys = record["keys"].as_array().cloned().unwrap_or_default();
        assert!(
            of_member(&record["principal"]) || keys.iter().any(of_member),
            "a record of another account was shown: {record}"
        );
    }
    let whole = read_log(d.client.clone()).await.expect("the whole log");
    assert!(
        whole.len() > own.len(),
        "the management account reads every account's records"
    );
    // A member user without audit:ReadAudit reads nothing.
    assert_refused(
        read_log(member_alice.clone()).await.map(|_| ()),
        Code::PermissionDenied,
        "AccessDeniedException",
    );

    // A second account of the same name is refused, and nothing is made.
    assert_refused(
        d.client
            .iam()
            .create_account(d.client.signed_iam(
                "CreateAccount",
                v1::CreateAccountRequest {
                    account_name: "payments".into(),
                },
            ))
            .await,
        Code::AlreadyExists,
        "DuplicateAccountException",
    );

    // After a restart the member's root key, key and ciphertexts are all still its own.
    let member_blob = encrypt(&member_root, &key.key_id).await.unwrap();
    d.restart().await;
    let member_root = d.client_with(member_root.credentials().clone()).await;
    assert_eq!(
        decrypt(&member_root, &member_blob).await.unwrap(),
        b"shared secret"
    );
    assert_eq!(list_keys(&member_root).await.unwrap(), vec![key.arn]);
    assert_eq!(list_keys(&d.client).await.unwrap(), vec![own_key.arn]);
}

#[tokio::test]
async fn another_accounts_key_is_used_only_when_both_accounts_agree() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let (member_id, member_root) = member(&d, "analytics").await;
    let shared = d.create_key("shared").await;
    let private = d.create_key("private").await;
    // The key policy shares Encrypt and Decrypt with the member account.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Sid":"Owner","Effect":"Allow","Principal":{{"AWS":"arn:keyhaven:iam::{own}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Sid":"Partner","Effect":"Allow","Principal":{{"AWS":"arn:keyhaven:iam::{member_id}:root"}},"Action":["kms:Encrypt","kms:Decrypt","kms:DescribeKey"],"Resource":"*"}}]}}"#,
        own = d.account_id
    );
    d.client
        .kms()
        .put_key_policy(d.client.signed(
            "PutKeyPolicy",
            v1::PutKeyPolicyRequest {
                key_id: shared.key_id.clone(),
                policy,
                ..Default::default()
            },
        ))
        .await
        .expect("PutKeyPolicy");
    let allow = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:DescribeKey"],"Resource":["{}","{}"]}}]}}"#,
        shared.arn, private.arn
    );
    let dave = user(&d, &member_root, "dave", Some(&allow)).await;
    let eve = user(&d, &member_root, "eve", None).await;

    // Both agree: dave uses the key by its ARN, and decrypts what it made.
    let described = describe(&dave, &shared.arn).await.expect("DescribeKey");
    assert_eq!(described.aws_account_id, d.account_id);
    let blob = encrypt(&dave, &shared.arn)
        .await
        .expect("Encrypt across accounts");
    assert_eq!(decrypt(&dave, &blob).await.unwrap(), b"shared secret");
    assert_eq!(decrypt(&d.client, &blob).await.unwrap(), b"shared secret");
    // The member's root uses what the key policy shares with its account.
    encrypt(&member_root, &shared.arn)
        .await
        .expect("root of the member");

    // Only the key policy agrees: eve's own policies are silent.
    assert_refused(
        encrypt(&eve, &shared.arn).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_refused(
        decrypt(&eve, &blob).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // Only dave's policy agrees: the private key's policy names its own account alone.
    assert_refused(
        encrypt(&dave, &private.arn).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // What the key policy does not share is refused, and the key is unchanged.
    assert_refused(
        schedule_deletion(&member_root, &shared.arn, 30).await,
        Code::NotFound,
        "NotFoundException",
    );
    assert_eq!(d.state(&shared.key_id).await, v1::KeyState::Enabled);
    // A key id or alias is always the caller's own account's.
    assert_refused(
        describe(&dave, &shared.key_id).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
}

#[tokio::test]
async fn guardrails_cap_member_accounts_and_never_the_management_account() {
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let (member_id, member_root) = member(&d, "retail").await;
    let own_key = d.create_key("management's").await;
    let member_key = create_key(&member_root, "").await.expect("CreateKey");

    guardrail(&d, "MinimumWindow", MIN_WINDOW)
        .await
        .expect("create");
    guardrail(&d, "HsmOnly", HSM_ONLY).await.expect("create");
    attach(&d, "MinimumWindow", "root").await.expect("attach");
    attach(&d, "HsmOnly", &member_id).await.expect("attach");

    // No one in the member account, its root included, schedules a deletion under 30 days.
    let refused = schedule_deletion(&member_root, &member_key.key_id, 7).await;
    let status = refused.as_ref().err().cloned();
    assert_refused(refused, Code::PermissionDenied, "AccessDeniedException");
    assert!(
        status
            .unwrap()
            .message()
            .contains("kms:ScheduleKeyDeletion"),
        "the refusal names the action"
    );
    let member_state = describe(&member_root, &member_key.key_id).await.unwrap();
    assert_eq!(
        member_state.key_state(),
        v1::KeyState::Enabled,
        "nothing changed"
    );
    schedule_deletion(&member_root, &member_key.key_id, 30)
        .await
        .expect("30 days goes through");
    // The management account is exempt.
    schedule_deletion(&d.client, &own_key.key_id, 7)
        .await
        .expect("the management account is not capped");

    // Keys of the member account are made only in the HSM keystore.
    assert_refused(
        create_key(&member_root, "sealed").await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    let hsm = create_key(&member_root, "pkcs11:default")
        .await
        .expect("in the HSM");
    assert_eq!(hsm.keystore, "pkcs11:default");
    // `pkcs11` names the one PKCS#11 keystore: the guardrail sees the name it resolves to.
    let short = create_key(&member_root, "pkcs11")
        .await
        .expect("in the HSM, by its short name");
    assert_eq!(short.keystore, "pkcs11:default");
    assert_eq!(
        list_keys(&member_root).await.unwrap().len(),
        3,
        "the refused key was not made"
    );

    // The simulator names the guardrail that decides.
    let simulated = member_root
        .iam()
        .simulate_principal_policy(member_root.signed_iam(
            "SimulatePrincipalPolicy",
            v1::SimulatePrincipalPolicyRequest {
                policy_source_arn: format!("arn:keyhaven:iam::{member_id}:root"),
                action_name: "kms:ScheduleKeyDeletion".into(),
                resource_arn: hsm.arn.clone(),
                context_entries: vec![v1::ContextEntry {
                    key: "kms:ScheduleKeyDeletionPendingWindowInDays".into(),
                    values: vec!["7".into()],
                }],
            },
        ))
        .await
        .expect("SimulatePrincipalPolicy")
        .into_inner();
    assert_eq!(simulated.eval_decision, "explicitDeny");
    assert_eq!(simulated.deciding_guardrail, "organisation root");
    assert_eq!(
        simulated.matched_statements[0].source_policy_id,
        "guardrail/MinimumWindow"
    );
    assert_eq!(simulated.matched_statements[0].sid, "MinimumWindow");

    // A level from which every policy is detached refuses everything.
    detach(&d, "FullAccess", &member_id).await.expect("detach");
    assert_refused(
        list_keys(&member_root).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_refused(
        describe(&member_root, &hsm.key_id).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    attach(&d, "FullAccess", &member_id)
        .await
        .expect("attach again");
    assert_eq!(list_keys(&member_root).await.unwrap().len(), 3);
    assert!(!list_keys(&d.client).await.unwrap().is_empty());
}

#[tokio::test]
async fn guardrail_policies_refuse_what_breaks_their_rules_and_change_nothing() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let (member_id, _) = member(&d, "ops").await;
    guardrail(&d, "MinimumWindow", MIN_WINDOW).await.unwrap();
    attach(&d, "MinimumWindow", "root").await.unwrap();
    let before = list_policies(&d).await;

    assert_refused(
        guardrail(&d, "Broken", r#"{"Statement":[{"Effect":"Allow"}]}"#).await,
        Code::InvalidArgument,
        "MalformedPolicyDocumentException",
    );
    assert_refused(
        guardrail(&d, "MinimumWindow", MIN_WINDOW).await,
        Code::AlreadyExists,
        "DuplicatePolicyException",
    );
    assert_refused(
        guardrail(&d, "bad name!", MIN_WINDOW).await,
        Code::InvalidArgument,
        "InvalidInputException",
    );
    assert_refused(
        attach(&d, "Missing", "root").await,
        Code::NotFound,
        "PolicyNotFoundException",
    );
    assert_refused(
        attach(&d, "MinimumWindow", "999999999999").await,
        Code::NotFound,
        "TargetNotFoundException",
    );
    assert_refused(
        attach(&d, "MinimumWindow", &d.account_id).await,
        Code::FailedPrecondition,
        "ConstraintViolationException",
    );
    assert_refused(
        attach(&d, "MinimumWindow", "root").await,
        Code::AlreadyExists,
        "DuplicatePolicyAttachmentException",
    );
    assert_refused(
        detach(&d, "MinimumWindow", &member_id).await,
        Code::NotFound,
        "PolicyNotAttachedException",
    );
    let in_use = d
        .client
        .iam()
        .delete_guardrail_policy(d.client.signed_iam(
            "DeleteGuardrailPolicy",
            v1::DeleteGuardrailPolicyRequest {
                policy_name: "MinimumWindow".into(),
            },
        ))
        .await;
    assert_refused(in_use, Code::FailedPrecondition, "PolicyInUseException");

    let after = list_policies(&d).await;
    assert_eq!(
        format!("{before:?}"),
        format!("{after:?}"),
        "nothing changed"
    );
    assert_eq!(
        after
            .iter()
            .find(|p| p.policy_name == "MinimumWindow")
            .map(|p| p.targets.clone()),
        Some(vec!["root".to_string()])
    );
}

#[tokio::test]
async fn a_certificate_identity_names_one_principal_of_the_whole_organisation() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let (_, member_root) = member(&d, "workloads").await;
    let bind = |client: Client| async move {
        client
            .iam()
            .bind_certificate(client.signed_iam(
                "BindCertificate",
                v1::BindCertificateRequest {
                    entity_type: v1::EntityType::User as i32,
                    entity_name: "app".into(),
                    identity: Some(v1::CertificateIdentity {
                        uri: "spiffe://example.org/payments".into(),
                        subject: String::new(),
                    }),
                },
            ))
            .await
            .map(|_| ())
    };
    user(&d, &d.client, "app", None).await;
    user(&d, &member_root, "app", None).await;
    bind(d.client.clone())
        .await
        .expect("bound in the management account");
    // The member may not bind the identity the management account binds (else the
    // management account's workload would sign in as the member's user, or be refused).
    assert_refused(
        bind(member_root.clone()).await,
        Code::AlreadyExists,
        "EntityAlreadyExistsException",
    );
    let listed = member_root
        .iam()
        .list_certificates(member_root.signed_iam(
            "ListCertificates",
            v1::ListCertificatesRequest {
                entity_type: v1::EntityType::User as i32,
                entity_name: "app".into(),
            },
        ))
        .await
        .expect("ListCertificates")
        .into_inner();
    assert!(
        !format!("{listed:?}").contains("spiffe://"),
        "nothing bound: {listed:?}"
    );
}

#[tokio::test]
async fn a_session_made_without_mfa_may_not_manage_the_organisation() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let session = d
        .client
        .iam()
        .get_session_token(d.client.signed_iam(
            "GetSessionToken",
            v1::GetSessionTokenRequest {
                duration_seconds: Some(900),
                ..Default::default()
            },
        ))
        .await
        .expect("GetSessionToken")
        .into_inner()
        .credentials
        .expect("credentials");
    let temporary = d.session_client(session).await;
    assert_refused(
        temporary
            .iam()
            .create_account(temporary.signed_iam(
                "CreateAccount",
                v1::CreateAccountRequest {
                    account_name: "from a session".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // A sign-in's session (a password alone) may call IAM, but not the organisation's calls.
    d.create_user(
        "ops",
        Some(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["organizations:*","iam:ListUsers"],"Resource":"*"}]}"#),
    )
    .await;
    d.create_login_profile("ops", "Ops-password-7-long").await;
    let signed_in = d
        .client
        .iam()
        .sign_in(tonic::Request::new(v1::SignInRequest {
            account_id: d.account_id.clone(),
            user_name: "ops".into(),
            password: "Ops-password-7-long".into(),
            ..Default::default()
        }))
        .await
        .expect("SignIn")
        .into_inner()
        .credentials
        .expect("credentials");
    let ops = d.session_client(signed_in).await;
    ops.iam()
        .list_users(ops.signed_iam("ListUsers", v1::ListUsersRequest {}))
        .await
        .expect("a sign-in's session calls IAM");
    assert_refused(
        ops.iam()
            .create_account(ops.signed_iam(
                "CreateAccount",
                v1::CreateAccountRequest {
                    account_name: "from a password".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    let accounts = d
        .client
        .iam()
        .list_accounts(
            d.client
                .signed_iam("ListAccounts", v1::ListAccountsRequest {}),
        )
        .await
        .unwrap()
        .into_inner();
    assert!(accounts.accounts.is_empty(), "nothing was made");
}
