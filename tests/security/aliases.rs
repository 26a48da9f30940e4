//! Alias names are authorised, and names the caller may not see answer alike; quotas on what callers can grow.

use crate::common::{Backend, TestDaemon, assert_refused};
use keyhaven::client::Client;
use keyhaven::proto::v1;
use tonic::Code;

// ---------------------------------------------------------------------------------- helpers

fn kms_arn(d: &TestDaemon, resource: &str) -> String {
    format!("arn:keyhaven:kms:local:{}:{resource}", d.account_id)
}

fn user_arn(d: &TestDaemon, user: &str) -> String {
    format!("arn:keyhaven:iam::{}:user/{user}", d.account_id)
}

/// An identity policy of one Allow statement.
fn allow(actions: &[&str], resources: &[String]) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]
    })
    .to_string()
}

/// Asserts `AccessDeniedException` with exactly AWS's message for `user`, `action`, `resource`.
#[track_caller]
fn assert_denied<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    d: &TestDaemon,
    user: &str,
    action: &str,
    resource: &str,
) {
    let expected = format!(
        "AccessDeniedException: {} is not authorized to perform {action} on resource {resource}",
        user_arn(d, user)
    );
    match result {
        Ok(value) => panic!("expected {expected}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.message(), expected, "{status:?}");
            assert_refused::<()>(Err(status), Code::PermissionDenied, "AccessDeniedException");
        }
    }
}

async fn create_alias_as(client: &Client, alias: &str, key: &str) -> Result<(), tonic::Status> {
    let request = v1::CreateAliasRequest {
        alias_name: alias.into(),
        target_key_id: key.into(),
    };
    client
        .kms()
        .create_alias(client.signed("CreateAlias", request))
        .await
        .map(|_| ())
}

async fn update_alias_as(client: &Client, alias: &str, key: &str) -> Result<(), tonic::Status> {
    let request = v1::UpdateAliasRequest {
        alias_name: alias.into(),
        target_key_id: key.into(),
    };
    client
        .kms()
        .update_alias(client.signed("UpdateAlias", request))
        .await
        .map(|_| ())
}

async fn delete_alias_as(client: &Client, alias: &str) -> Result<(), tonic::Status> {
    let request = v1::DeleteAliasRequest {
        alias_name: alias.into(),
    };
    client
        .kms()
        .delete_alias(client.signed("DeleteAlias", request))
        .await
        .map(|_| ())
}

async fn describe_as(client: &Client, key: &str) -> Result<String, tonic::Status> {
    let request = v1::DescribeKeyRequest { key_id: key.into() };
    Ok(client
        .kms()
        .describe_key(client.signed("DescribeKey", request))
        .await?
        .into_inner()
        .key_metadata
        .map(|m| m.key_id)
        .unwrap_or_default())
}

async fn encrypt_as(client: &Client, key: &str) -> Vec<u8> {
    let request = v1::EncryptRequest {
        key_id: key.into(),
        plaintext: b"secret".to_vec(),
        ..Default::default()
    };
    client
        .kms()
        .encrypt(client.signed("Encrypt", request))
        .await
        .expect("Encrypt")
        .into_inner()
        .ciphertext_blob
}

async fn decrypt_naming(client: &Client, blob: &[u8], key: &str) -> Result<Vec<u8>, tonic::Status> {
    let request = v1::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        key_id: key.into(),
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

async fn re_encrypt_naming(
    client: &Client,
    blob: &[u8],
    source: &str,
    destination: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let request = v1::ReEncryptRequest {
        ciphertext_blob: blob.to_vec(),
        source_key_id: source.into(),
        destination_key_id: destination.into(),
        ..Default::default()
    };
    Ok(client
        .kms()
        .re_encrypt(client.signed("ReEncrypt", request))
        .await?
        .into_inner()
        .ciphertext_blob)
}

async fn list_aliases_of(client: &Client, key: &str) -> Result<Vec<String>, tonic::Status> {
    let request = v1::ListAliasesRequest {
        key_id: key.into(),
        ..Default::default()
    };
    Ok(client
        .kms()
        .list_aliases(client.signed("ListAliases", request))
        .await?
        .into_inner()
        .aliases
        .into_iter()
        .map(|a| a.alias_name)
        .collect())
}

/// Every alias of the account with its key, as the root sees them.
async fn all_aliases(d: &TestDaemon) -> Vec<(String, String)> {
    d.list_aliases("")
        .await
        .into_iter()
        .map(|a| (a.alias_name, a.target_key_id))
        .collect()
}

// ------------------------------------------------------------- 7: alias names are authorised

/// A user allowed the alias actions on every key, and on aliases named `alias/mallory-*` only,
/// can neither take, move nor delete another team's alias; on her own names she can.
#[tokio::test]
async fn alias_actions_need_the_alias_name_allowed() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let payments = d.create_key("payments").await.key_id;
    d.create_alias("alias/payments", &payments).await.unwrap();
    let own = d.create_key("mallory's").await.key_id;
    let mallory = d
        .create_user(
            "mallory",
            Some(&allow(
                &["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"],
                &[kms_arn(&d, "key/*"), kms_arn(&d, "alias/mallory-*")],
            )),
        )
        .await;
    let before = all_aliases(&d).await;

    assert_denied(
        create_alias_as(&mallory, "alias/payroll", &own).await,
        &d,
        "mallory",
        "kms:CreateAlias",
        &kms_arn(&d, "alias/payroll"),
    );
    assert_denied(
        update_alias_as(&mallory, "alias/payments", &own).await,
        &d,
        "mallory",
        "kms:UpdateAlias",
        &kms_arn(&d, "alias/payments"),
    );
    assert_denied(
        delete_alias_as(&mallory, "alias/payments").await,
        &d,
        "mallory",
        "kms:DeleteAlias",
        &kms_arn(&d, "alias/payments"),
    );
    assert_eq!(all_aliases(&d).await, before);
    assert_eq!(d.describe("alias/payments").await.unwrap().key_id, payments);

    // Her own names: allowed on the alias and on the key.
    create_alias_as(&mallory, "alias/mallory-app", &own)
        .await
        .unwrap();
    update_alias_as(&mallory, "alias/mallory-app", &payments)
        .await
        .unwrap();
    delete_alias_as(&mallory, "alias/mallory-app")
        .await
        .unwrap();
    assert_eq!(all_aliases(&d).await, before);
}

/// The key policy still counts as well: a user allowed on the alias name but not on the key
/// moves nothing, and the root (whose identity is unrestricted) may name any alias.
#[tokio::test]
async fn alias_actions_still_need_the_keys_allowed() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("k").await.key_id;
    let other = d.create_key("other").await.key_id;
    d.create_alias("alias/team-a", &key).await.unwrap();
    let alice = d
        .create_user(
            "alice",
            Some(&allow(
                &["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"],
                &[kms_arn(&d, "alias/*"), kms_arn(&d, &format!("key/{key}"))],
            )),
        )
        .await;
    assert_denied(
        create_alias_as(&alice, "alias/team-b", &other).await,
        &d,
        "alice",
        "kms:CreateAlias",
        &kms_arn(&d, &format!("key/{other}")),
    );
    assert_denied(
        update_alias_as(&alice, "alias/team-a", &other).await,
        &d,
        "alice",
        "kms:UpdateAlias",
        &kms_arn(&d, &format!("key/{other}")),
    );
    assert_eq!(all_aliases(&d).await, vec![("alias/team-a".into(), key)]);
}

// ------------------------------------------ 8: existing and missing aliases are judged alike

/// A policy written for `alias/app-*` tells nothing of which such aliases exist: DescribeKey,
/// UpdateAlias and DeleteAlias answer the same refusal for an alias that exists and one that
/// does not.
#[tokio::test]
async fn missing_and_existing_aliases_are_refused_alike() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("live").await.key_id;
    d.create_alias("alias/app-live", &key).await.unwrap();
    let eve = d
        .create_user(
            "eve",
            Some(&allow(
                &["kms:DescribeKey", "kms:UpdateAlias", "kms:DeleteAlias"],
                &[kms_arn(&d, "alias/app-*")],
            )),
        )
        .await;
    for alias in ["alias/app-live", "alias/app-ghost"] {
        let arn = kms_arn(&d, alias);
        assert_denied(
            describe_as(&eve, alias).await,
            &d,
            "eve",
            "kms:DescribeKey",
            &arn,
        );
        assert_denied(
            describe_as(&eve, &arn).await,
            &d,
            "eve",
            "kms:DescribeKey",
            &arn,
        );
        assert_denied(
            update_alias_as(&eve, alias, &key).await,
            &d,
            "eve",
            "kms:UpdateAlias",
            &arn,
        );
        assert_denied(
            delete_alias_as(&eve, alias).await,
            &d,
            "eve",
            "kms:DeleteAlias",
            &arn,
        );
    }
    assert_eq!(all_aliases(&d).await, vec![("alias/app-live".into(), key)]);
    // A caller allowed on every key learns that a missing alias is missing, as in AWS.
    assert_refused(
        d.describe("alias/app-ghost").await,
        Code::NotFound,
        "NotFoundException",
    );
}

// ------------------- 9: a key named beside a ciphertext, or to ListAliases, is authorised first

/// Decrypt and ReEncrypt with a `KeyId` the caller may not use answer `AccessDeniedException`
/// naming it as given, whether it exists (where `IncorrectKeyException` told so) or not (where
/// `NotFoundException` did).
#[tokio::test]
async fn naming_a_key_beside_a_ciphertext_tells_nothing_of_it() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let own = d.create_key("dora's").await.key_id;
    let secret = d.create_key("secret").await.key_id;
    d.create_alias("alias/secret", &secret).await.unwrap();
    let own_arn = kms_arn(&d, &format!("key/{own}"));
    let dora = d
        .create_user(
            "dora",
            Some(&allow(
                &[
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:ReEncryptFrom",
                    "kms:ReEncryptTo",
                ],
                std::slice::from_ref(&own_arn),
            )),
        )
        .await;
    let blob = encrypt_as(&dora, &own).await;
    assert_eq!(decrypt_naming(&dora, &blob, &own).await.unwrap(), b"secret");
    let missing_id = "00000000-1111-2222-3333-444444444444";
    for (named, resource) in [
        ("alias/secret".to_owned(), kms_arn(&d, "alias/secret")),
        ("alias/ghost".to_owned(), kms_arn(&d, "alias/ghost")),
        (kms_arn(&d, "alias/secret"), kms_arn(&d, "alias/secret")),
        (secret.clone(), kms_arn(&d, &format!("key/{secret}"))),
        (
            missing_id.to_owned(),
            kms_arn(&d, &format!("key/{missing_id}")),
        ),
    ] {
        assert_denied(
            decrypt_naming(&dora, &blob, &named).await,
            &d,
            "dora",
            "kms:Decrypt",
            &resource,
        );
        assert_denied(
            re_encrypt_naming(&dora, &blob, &named, &own).await,
            &d,
            "dora",
            "kms:ReEncryptFrom",
            &resource,
        );
    }
    // A caller allowed on the keys is told what AWS tells: the wrong key, or no such key.
    let root_blob = d.encrypt(&own, b"x", &[]).await.unwrap();
    assert_refused(
        decrypt_naming(&d.client, &root_blob, "alias/secret").await,
        Code::InvalidArgument,
        "IncorrectKeyException",
    );
    assert_refused(
        decrypt_naming(&d.client, &root_blob, "alias/ghost").await,
        Code::NotFound,
        "NotFoundException",
    );
    assert_refused(
        re_encrypt_naming(&d.client, &root_blob, "alias/secret", &own).await,
        Code::InvalidArgument,
        "IncorrectKeyException",
    );
    assert_eq!(
        decrypt_naming(&d.client, &root_blob, &own).await.unwrap(),
        b"x"
    );
}

/// ListAliases with a `KeyId` looks the key up only for callers allowed on it: a caller who may
/// list aliases but may ask about no key gets the same refusal for a name that exists and one
/// that does not.
#[tokio::test]
async fn list_aliases_by_key_tells_nothing_of_keys_the_caller_may_not_ask_about() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let secret = d.create_key("secret").await.key_id;
    d.create_alias("alias/secret", &secret).await.unwrap();
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "kms:ListAliases", "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:ListAliases", "Resource": kms_arn(&d, "key/*")}
        ]
    })
    .to_string();
    let lisa = d.create_user("lisa", Some(&policy)).await;
    assert_eq!(
        list_aliases_of(&lisa, "").await.unwrap(),
        vec!["alias/secret".to_owned()]
    );
    for (named, resource) in [
        ("alias/secret".to_owned(), kms_arn(&d, "alias/secret")),
        ("alias/ghost".to_owned(), kms_arn(&d, "alias/ghost")),
        (secret.clone(), kms_arn(&d, &format!("key/{secret}"))),
        (
            "00000000-1111-2222-3333-444444444444".to_owned(),
            kms_arn(&d, "key/00000000-1111-2222-3333-444444444444"),
        ),
    ] {
        assert_denied(
            list_aliases_of(&lisa, &named).await,
            &d,
            "lisa",
            "kms:ListAliases",
            &resource,
        );
    }
    // Allowed callers: the aliases of the key, or no such key.
    assert_eq!(
        list_aliases_of(&d.client, "alias/secret").await.unwrap(),
        vec!["alias/secret".to_owned()]
    );
    assert_refused(
        list_aliases_of(&d.client, "alias/ghost").await,
        Code::NotFound,
        "NotFoundException",
    );
}

// --------------------------------------------------- 6: bounds on what callers can make us keep

/// Asserts `RESOURCE_EXHAUSTED` / `LimitExceededException` with exactly `message`.
#[track_caller]
fn assert_limit<T: std::fmt::Debug>(result: Result<T, tonic::Status>, message: &str) {
    match result {
        Ok(value) => panic!("expected LimitExceededException: {message}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(
                status.message(),
                format!("LimitExceededException: {message}"),
                "{status:?}"
            );
            assert_refused::<()>(
                Err(status),
                Code::ResourceExhausted,
                "LimitExceededException",
            );
        }
    }
}

/// A policy document of exactly `chars` characters (padded with white space, which counts).
fn policy_of_size(document: &str, chars: usize) -> String {
    assert!(document.len() <= chars);
    format!("{document}{}", " ".repeat(chars - document.len()))
}

const SMALL_IDENTITY_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#;

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

async fn policy_names(d: &TestDaemon, kind: v1::EntityType, name: &str) -> Vec<String> {
    let request = v1::ListEntityPoliciesRequest {
        entity_type: kind as i32,
        entity_name: name.into(),
    };
    d.client
        .iam()
        .list_entity_policies(d.client.signed_iam("ListEntityPolicies", request))
        .await
        .expect("ListEntityPolicies")
        .into_inner()
        .policy_names
}

async fn create_user(d: &TestDaemon, name: &str) -> Result<(), tonic::Status> {
    let request = v1::CreateUserRequest {
        user_name: name.into(),
    };
    d.client
        .iam()
        .create_user(d.client.signed_iam("CreateUser", request))
        .await
        .map(|_| ())
}

async fn create_group(d: &TestDaemon, name: &str) -> Result<(), tonic::Status> {
    let request = v1::CreateGroupRequest {
        group_name: name.into(),
    };
    d.client
        .iam()
        .create_group(d.client.signed_iam("CreateGroup", request))
        .await
        .map(|_| ())
}

fn root_trust(d: &TestDaemon) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:keyhaven:iam::{}:root", d.account_id)},
            "Action": "sts:AssumeRole"
        }]
    })
    .to_string()
}

async fn create_role(d: &TestDaemon, name: &str, trust: &str) -> Result<String, tonic::Status> {
    let request = v1::CreateRoleRequest {
        role_name: name.into(),
        assume_role_policy_document: trust.into(),
    };
    Ok(d.client
        .iam()
        .create_role(d.client.signed_iam("CreateRole", request))
        .await?
        .into_inner()
        .role
        .map(|r| r.arn)
        .unwrap_or_default())
}

async fn names_of(d: &TestDaemon) -> (Vec<String>, Vec<String>, Vec<String>) {
    let iam = d.client.iam();
    let users = iam
        .clone()
        .list_users(
            d.client
                .signed_iam("ListUsers", v1::ListUsersRequest::default()),
        )
        .await
        .expect("ListUsers")
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.user_name)
        .collect();
    let groups = iam
        .clone()
        .list_groups(
            d.client
                .signed_iam("ListGroups", v1::ListGroupsRequest::default()),
        )
        .await
        .expect("ListGroups")
        .into_inner()
        .groups
        .into_iter()
        .map(|g| g.group_name)
        .collect();
    let roles = iam
        .clone()
        .list_roles(
            d.client
                .signed_iam("ListRoles", v1::ListRolesRequest::default()),
        )
        .await
        .expect("ListRoles")
        .into_inner()
        .roles
        .into_iter()
        .map(|r| r.role_name)
        .collect();
    (users, groups, roles)
}

#[tokio::test]
async fn aliases_past_the_quota_are_refused() {
    let d = TestDaemon::start_with(Backend::Sealed, |c| c.alias_quota = 2).await;
    let key = d.create_key("k").await.key_id;
    d.create_alias("alias/one", &key).await.unwrap();
    d.create_alias("alias/two", &key).await.unwrap();
    assert_limit(
        d.create_alias("alias/three", &key).await,
        "the account already has the most aliases it may hold (2)",
    );
    let held = vec![
        ("alias/one".to_owned(), key.clone()),
        ("alias/two".to_owned(), key.clone()),
    ];
    assert_eq!(all_aliases(&d).await, held);
    // Moving an alias adds none; deleting one makes room.
    update_alias_as(&d.client, "alias/two", &key).await.unwrap();
    delete_alias_as(&d.client, "alias/two").await.unwrap();
    d.create_alias("alias/three", &key).await.unwrap();
}

#[tokio::test]
async fn users_groups_and_roles_past_their_quotas_are_refused() {
    let d = TestDaemon::start_with(Backend::Sealed, |c| {
        c.iam_quotas.users = 2;
        c.iam_quotas.groups = 1;
        c.iam_quotas.roles = 1;
    })
    .await;
    create_user(&d, "u1").await.unwrap();
    create_user(&d, "u2").await.unwrap();
    assert_limit(
        create_user(&d, "u3").await,
        "the account already has the most users it may hold (2)",
    );
    create_group(&d, "g1").await.unwrap();
    assert_limit(
        create_group(&d, "g2").await,
        "the account already has the most groups it may hold (1)",
    );
    let trust = root_trust(&d);
    create_role(&d, "r1", &trust).await.unwrap();
    assert_limit(
        create_role(&d, "r2", &trust).await,
        "the account already has the most roles it may hold (1)",
    );
    let (users, groups, roles) = names_of(&d).await;
    assert_eq!(users, ["u1", "u2"]);
    assert_eq!(groups, ["g1"]);
    assert_eq!(roles, ["r1"]);
}

#[tokio::test]
async fn a_user_joins_at_most_ten_groups() {
    let d = TestDaemon::start(Backend::Sealed).await;
    create_user(&d, "joiner").await.unwrap();
    let add = |group: String| {
        let request = v1::AddUserToGroupRequest {
            group_name: group,
            user_name: "joiner".into(),
        };
        let mut iam = d.client.iam();
        let signed = d.client.signed_iam("AddUserToGroup", request);
        async move { iam.add_user_to_group(signed).await.map(|_| ()) }
    };
    for i in 0..11 {
        create_group(&d, &format!("g{i:02}")).await.unwrap();
    }
    for i in 0..10 {
        add(format!("g{i:02}")).await.unwrap();
    }
    // Joining a group again changes nothing and is no new membership.
    add("g00".into()).await.unwrap();
    assert_limit(
        add("g10".into()).await,
        "user 'joiner' is already in 10 groups, the most a user may join",
    );
    let request = v1::ListGroupsRequest {
        user_name: "joiner".into(),
    };
    let groups: Vec<String> = d
        .client
        .iam()
        .list_groups(d.client.signed_iam("ListGroups", request))
        .await
        .unwrap()
        .into_inner()
        .groups
        .into_iter()
        .map(|g| g.group_name)
        .collect();
    assert_eq!(
        groups,
        (0..10).map(|i| format!("g{i:02}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn inline_policies_are_bounded_in_number_and_size() {
    let d = TestDaemon::start(Backend::Sealed).await;
    use v1::EntityType::{Group, Role, User};
    create_user(&d, "u").await.unwrap();
    create_group(&d, "g").await.unwrap();
    create_role(&d, "r", &root_trust(&d)).await.unwrap();

    // Size of one document, per kind of entity.
    for (kind, name, limit, word) in [
        (User, "u", 6_144, "user"),
        (Group, "g", 5_120, "group"),
        (Role, "r", 10_240, "role"),
    ] {
        let at_limit = policy_of_size(SMALL_IDENTITY_POLICY, limit);
        let over = policy_of_size(SMALL_IDENTITY_POLICY, limit + 1);
        assert_limit(
            put_policy(&d, kind, name, "big", &over).await,
            &format!(
                "the inline policies of a {word} total at most {limit} characters; this one has {}",
                limit + 1
            ),
        );
        assert!(policy_names(&d, kind, name).await.is_empty());
        put_policy(&d, kind, name, "big", &at_limit).await.unwrap();
        // Together with what the entity has: any more is refused; replacing is measured alone.
        assert_limit(
            put_policy(&d, kind, name, "more", SMALL_IDENTITY_POLICY).await,
            &format!(
                "the inline policies of a {word} total at most {limit} characters; with this one \
                 they would have {}",
                limit + SMALL_IDENTITY_POLICY.len()
            ),
        );
        assert_eq!(policy_names(&d, kind, name).await, ["big"]);
        put_policy(&d, kind, name, "big", SMALL_IDENTITY_POLICY)
            .await
            .unwrap();
    }

    // Number: ten per entity.
    for i in 1..10 {
        put_policy(&d, User, "u", &format!("p{i}"), SMALL_IDENTITY_POLICY)
            .await
            .unwrap();
    }
    assert_limit(
        put_policy(&d, User, "u", "p10", SMALL_IDENTITY_POLICY).await,
        "a user has at most 10 inline policies",
    );
    assert_eq!(policy_names(&d, User, "u").await.len(), 10);
}

#[tokio::test]
async fn trust_and_key_policies_are_bounded_in_size() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let trust = policy_of_size(&root_trust(&d), 2_049);
    assert_limit(
        create_role(&d, "wide", &trust).await,
        "a role's trust policy is at most 2048 characters",
    );
    assert!(names_of(&d).await.2.is_empty());
    create_role(&d, "wide", &policy_of_size(&root_trust(&d), 2_048))
        .await
        .unwrap();

    let key_policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:keyhaven:iam::{}:root", d.account_id)},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string();
    let over = policy_of_size(&key_policy, 32 * 1024 + 1);
    let message = format!(
        "a key policy is at most 32768 bytes; this one is {}",
        32 * 1024 + 1
    );
    let request = v1::CreateKeyRequest {
        policy: over.clone(),
        ..Default::default()
    };
    assert_limit(
        d.client
            .kms()
            .create_key(d.client.signed("CreateKey", request))
            .await,
        &message,
    );
    assert!(d.list_all_keys().await.is_empty());
    let key = d.create_key("policy").await.key_id;
    let get = || {
        let request = v1::GetKeyPolicyRequest {
            key_id: key.clone(),
            policy_name: "default".into(),
        };
        let mut kms = d.client.kms();
        let signed = d.client.signed("GetKeyPolicy", request);
        async move {
            kms.get_key_policy(signed)
                .await
                .unwrap()
                .into_inner()
                .policy
        }
    };
    let before = get().await;
    let put = |policy: String| {
        let request = v1::PutKeyPolicyRequest {
            key_id: key.clone(),
            policy_name: "default".into(),
            policy,
            bypass_policy_lockout_safety_check: false,
        };
        let mut kms = d.client.kms();
        let signed = d.client.signed("PutKeyPolicy", request);
        async move { kms.put_key_policy(signed).await.map(|_| ()) }
    };
    assert_limit(put(over).await, &message);
    assert_eq!(get().await, before);
    put(policy_of_size(&key_policy, 32 * 1024)).await.unwrap();
}

#[tokio::test]
async fn live_sessions_per_role_are_bounded() {
    let d = TestDaemon::start_with(Backend::Sealed, |c| c.iam_quotas.sessions_per_role = 2).await;
    let role = create_role(&d, "batch", &root_trust(&d)).await.unwrap();
    let assume = |session: &str, duration: u32| {
        let request = v1::AssumeRoleRequest {
            role_arn: role.clone(),
            role_session_name: session.into(),
            duration_seconds: Some(duration),
            ..Default::default()
        };
        let mut iam = d.client.iam();
        let signed = d.client.signed_iam("AssumeRole", request);
        async move { iam.assume_role(signed).await.map(|r| r.into_inner()) }
    };
    assume("s1", 900).await.unwrap();
    assume("s2", 900).await.unwrap();
    let refused = "role batch already has 2 sessions that have not expired; try again when one has";
    assert_limit(assume("s3", 43_200).await, refused);
    // Expired sessions no longer count. Had the refused 12-hour session been stored, only one
    // more would fit now.
    d.clock.advance(901);
    assume("s4", 900).await.unwrap();
    assume("s5", 900).await.unwrap();
    assert_limit(assume("s6", 900).await, refused);
}

/// The simulator answers for an alias action on an alias ARN as the call decides it: by
/// identity policies, not by the key policy of the key the alias happens to point at.
#[tokio::test]
async fn the_simulator_judges_alias_actions_on_the_alias_name() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("payments").await.key_id;
    d.create_alias("alias/payments", &key).await.unwrap();
    let mallory = d
        .create_user(
            "mallory",
            Some(&allow(&["kms:UpdateAlias"], &[kms_arn(&d, "key/*")])),
        )
        .await;
    let simulate = |resource: String| {
        let request = v1::SimulatePrincipalPolicyRequest {
            policy_source_arn: user_arn(&d, "mallory"),
            action_name: "kms:UpdateAlias".into(),
            resource_arn: resource,
            context_entries: vec![],
        };
        let mut iam = d.client.iam();
        let signed = d.client.signed_iam("SimulatePrincipalPolicy", request);
        async move {
            iam.simulate_principal_policy(signed)
                .await
                .unwrap()
                .into_inner()
                .eval_decision
        }
    };
    assert_eq!(
        simulate(kms_arn(&d, "alias/payments")).await,
        "implicitDeny"
    );
    assert_eq!(simulate(kms_arn(&d, "alias/ghost")).await, "implicitDeny");
    assert_eq!(
        simulate(kms_arn(&d, &format!("key/{key}"))).await,
        "allowed"
    );
    // The call agrees with the simulator.
    assert_denied(
        update_alias_as(&mallory, "alias/payments", &key).await,
        &d,
        "mallory",
        "kms:UpdateAlias",
        &kms_arn(&d, "alias/payments"),
    );
}

#[tokio::test]
async fn tags_past_fifty_per_key_are_refused() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let tag = |i: usize| v1::Tag {
        tag_key: format!("k{i:02}"),
        tag_value: "v".into(),
    };
    let request = v1::CreateKeyRequest {
        tags: (0..51).map(tag).collect(),
        ..Default::default()
    };
    assert_limit(
        d.client
            .kms()
            .create_key(d.client.signed("CreateKey", request))
            .await,
        "a key has at most 50 tags",
    );
    assert!(d.list_all_keys().await.is_empty());
    let key = d.create_key("tags").await.key_id;
    let tag_resource = |tags: Vec<v1::Tag>| {
        let request = v1::TagResourceRequest {
            key_id: key.clone(),
            tags,
        };
        let mut kms = d.client.kms();
        let signed = d.client.signed("TagResource", request);
        async move { kms.tag_resource(signed).await.map(|_| ()) }
    };
    tag_resource((0..50).map(tag).collect()).await.unwrap();
    // Retagging an existing key adds nothing; one more key is refused.
    tag_resource(vec![tag(0)]).await.unwrap();
    assert_limit(
        tag_resource(vec![tag(50)]).await,
        "a key has at most 50 tags",
    );
    let request = v1::ListResourceTagsRequest {
        key_id: key.clone(),
    };
    let listed = d
        .client
        .kms()
        .list_resource_tags(d.client.signed("ListResourceTags", request))
        .await
        .unwrap()
        .into_inner()
        .tags;
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|t| t.tag_key != "k50"));
}

/// UpdateAlias and DeleteAlias are authorised on the key the alias points at; if another call
/// moves the alias before the change is made, the change is not made on the strength of that
/// authorisation (the handler authorises again on the key it points at now).
#[tokio::test]
async fn an_alias_moved_after_authorisation_is_not_changed() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let authorised = d.create_key("authorised").await.key_id;
    let moved_to = d.create_key("moved to").await.key_id;
    d.create_alias("alias/app", &moved_to).await.unwrap();
    let keys = d.key_service();
    let authorised_id = uuid::Uuid::parse_str(&authorised).unwrap();
    assert!(
        !keys
            .update_alias("alias/app", &authorised, authorised_id)
            .await
            .unwrap()
    );
    assert!(!keys.delete_alias("alias/app", authorised_id).await.unwrap());
    assert_eq!(
        all_aliases(&d).await,
        vec![("alias/app".to_owned(), moved_to.clone())]
    );
    let moved_id = uuid::Uuid::parse_str(&moved_to).unwrap();
    assert!(keys.delete_alias("alias/app", moved_id).await.unwrap());
    assert!(all_aliases(&d).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_rotations_past_the_quota_are_refused() {
    let d = TestDaemon::start_with(Backend::Sealed, |config| {
        config.on_demand_rotation_quota = 2;
    })
    .await;
    let key = d.create_key("rotated often").await.key_id;
    assert_eq!(d.rotate(&key).await.unwrap(), 2);
    assert_eq!(d.rotate(&key).await.unwrap(), 3);
    let refused = d.rotate(&key).await;
    let status = refused.as_ref().expect_err("a third on-demand rotation");
    assert!(
        status
            .message()
            .contains("rotated on demand the most times it may be (2)"),
        "{status:?}"
    );
    assert_refused(refused, Code::ResourceExhausted, "LimitExceededException");
    // Nothing was added: still version 3, and the key works.
    let described = d.describe(&key).await.unwrap();
    assert_eq!(described.current_key_version, 3);
    let blob = d.encrypt(&key, b"still usable", &[]).await.unwrap();
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"still usable");
}
