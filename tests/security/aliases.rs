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
