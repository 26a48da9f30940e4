//! Grants end to end, against a real daemon with a sealed store (and the constraint checks
//! again on the SoftHSM2 token): each constraint type allowing and refusing, retirement and
//! revocation taking effect on the next call, an explicit Deny overriding a grant, grant
//! tokens, idempotent names, pagination, quotas, delegation, the grant condition keys, the
//! audit record naming the grant, the simulator, and grants surviving a restart.

mod common;

use common::{Backend, TestDaemon, assert_refused, pairs};
use keyhaven::client::Client;
use keyhaven::proto::v1;
use std::collections::HashMap;
use tonic::Code;

const NO_POLICY: Option<&str> = None;

fn arn(daemon: &TestDaemon, user: &str) -> String {
    format!("arn:keyhaven:iam::{}:user/{user}", daemon.account_id)
}

fn ops(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn equals(context: &[(&str, &str)]) -> Option<v1::GrantConstraints> {
    Some(v1::GrantConstraints {
        encryption_context_equals: pairs(context),
        ..Default::default()
    })
}

fn subset(context: &[(&str, &str)]) -> Option<v1::GrantConstraints> {
    Some(v1::GrantConstraints {
        encryption_context_subset: pairs(context),
        ..Default::default()
    })
}

fn request(key: &str, grantee: &str, operations: &[&str]) -> v1::CreateGrantRequest {
    v1::CreateGrantRequest {
        key_id: key.into(),
        grantee_principal: grantee.into(),
        operations: ops(operations),
        ..Default::default()
    }
}

async fn create_grant(
    client: &Client,
    request: v1::CreateGrantRequest,
) -> Result<v1::CreateGrantResponse, tonic::Status> {
    Ok(client
        .kms()
        .create_grant(client.signed("CreateGrant", request))
        .await?
        .into_inner())
}

async fn encrypt(
    client: &Client,
    key: &str,
    context: &[(&str, &str)],
) -> Result<Vec<u8>, tonic::Status> {
    let request = v1::EncryptRequest {
        key_id: key.into(),
        plaintext: b"granted".to_vec(),
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

async fn decrypt(
    client: &Client,
    blob: &[u8],
    context: &[(&str, &str)],
) -> Result<Vec<u8>, tonic::Status> {
    let request = v1::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        encryption_context: pairs(context),
        key_id: String::new(),
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

async fn list(
    client: &Client,
    key: &str,
    limit: u32,
    marker: &str,
) -> Result<v1::ListGrantsResponse, tonic::Status> {
    let request = v1::ListGrantsRequest {
        key_id: key.into(),
        limit,
        marker: marker.into(),
        ..Default::default()
    };
    Ok(client
        .kms()
        .list_grants(client.signed("ListGrants", request))
        .await?
        .into_inner())
}

/// The ids of every grant of `key`, as the root lists them.
async fn grant_ids(daemon: &TestDaemon, key: &str) -> Vec<String> {
    list(&daemon.client, key, 0, "")
        .await
        .expect("ListGrants")
        .grants
        .into_iter()
        .map(|g| g.grant_id)
        .collect()
}

async fn retire(client: &Client, request: v1::RetireGrantRequest) -> Result<(), tonic::Status> {
    client
        .kms()
        .retire_grant(client.signed("RetireGrant", request))
        .await
        .map(|_| ())
}

async fn revoke(client: &Client, key: &str, grant_id: &str) -> Result<(), tonic::Status> {
    let request = v1::RevokeGrantRequest {
        key_id: key.into(),
        grant_id: grant_id.into(),
    };
    client
        .kms()
        .revoke_grant(client.signed("RevokeGrant", request))
        .await
        .map(|_| ())
}

fn audit_lines(daemon: &TestDaemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&daemon.config.audit_log)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit record"))
        .collect()
}

/// Both constraint types, on `backend`: what each admits and what it refuses, with the
/// refused calls changing nothing (no ciphertext, no plaintext, the grants as they were).
async fn constraints_allow_and_refuse(backend: Backend) {
    let daemon = TestDaemon::start(backend).await;
    let key = daemon.create_key("constrained").await;
    let bob = daemon.create_user("bob", NO_POLICY).await;
    // No grant yet: bob may do nothing with the key.
    assert_refused(
        encrypt(&bob, &key.key_id, &[("tenant", "a")]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    let mut equal = request(&key.key_id, &arn(&daemon, "bob"), &["Encrypt", "Decrypt"]);
    equal.constraints = equals(&[("tenant", "a")]);
    let equal = create_grant(&daemon.client, equal)
        .await
        .expect("CreateGrant");
    assert_eq!(equal.grant_id.len(), 64, "{}", equal.grant_id);

    // EncryptionContextEquals: the whole context, keys in any case, values exact.
    let blob = encrypt(&bob, &key.key_id, &[("tenant", "a")])
        .await
        .expect("allowed by the grant");
    encrypt(&bob, &key.key_id, &[("TENANT", "a")])
        .await
        .expect("constraint keys match without regard to case");
    assert_eq!(
        decrypt(&bob, &blob, &[("tenant", "a")]).await.unwrap(),
        b"granted"
    );
    for refused in [
        vec![("tenant", "A")],
        vec![("tenant", "a"), ("extra", "x")],
        vec![],
    ] {
        assert_refused(
            encrypt(&bob, &key.key_id, &refused).await,
            Code::PermissionDenied,
            "AccessDeniedException",
        );
    }
    // Decrypt with a context the grant does not admit: refused before the key is used.
    let other = daemon
        .encrypt(&key.key_id, b"root's", &[("tenant", "b")])
        .await
        .unwrap();
    assert_refused(
        decrypt(&bob, &other, &[("tenant", "b")]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // Operations the grant does not hold.
    assert_refused(
        daemon_describe_as(&bob, &key.key_id).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );

    // EncryptionContextSubset: its pairs among the request's.
    let carol = daemon.create_user("carol", NO_POLICY).await;
    let mut sub = request(&key.key_id, &arn(&daemon, "carol"), &["Encrypt"]);
    sub.constraints = subset(&[("tenant", "a")]);
    let sub = create_grant(&daemon.client, sub)
        .await
        .expect("CreateGrant");
    encrypt(&carol, &key.key_id, &[("Tenant", "a"), ("file", "x")])
        .await
        .expect("a wider context includes the pairs");
    for refused in [vec![("tenant", "b"), ("file", "x")], vec![("file", "x")]] {
        assert_refused(
            encrypt(&carol, &key.key_id, &refused).await,
            Code::PermissionDenied,
            "AccessDeniedException",
        );
    }
    // Carol's grant is carol's: bob's request with her context is judged by his own.
    assert_refused(
        encrypt(&bob, &key.key_id, &[("tenant", "a"), ("file", "x")]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    let mut ids = grant_ids(&daemon, &key.key_id).await;
    ids.sort();
    let mut expected = vec![equal.grant_id, sub.grant_id];
    expected.sort();
    assert_eq!(ids, expected, "refusals changed no grant");
}

async fn daemon_describe_as(client: &Client, key: &str) -> Result<v1::KeyMetadata, tonic::Status> {
    let request = v1::DescribeKeyRequest { key_id: key.into() };
    Ok(client
        .kms()
        .describe_key(client.signed("DescribeKey", request))
        .await?
        .into_inner()
        .key_metadata
        .expect("metadata"))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_constraint_type_allows_and_refuses_on_the_sealed_store() {
    constraints_allow_and_refuse(Backend::Sealed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_constraint_type_allows_and_refuses_on_pkcs11() {
    constraints_allow_and_refuse(Backend::Pkcs11).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_constraint_type_allows_and_refuses_on_the_second_pkcs11_token() {
    constraints_allow_and_refuse(Backend::Pkcs11Second).await;
}

/// Grants are records like any other: on etcd they are durable and judged the same.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread")]
async fn each_constraint_type_allows_and_refuses_on_etcd() {
    constraints_allow_and_refuse(Backend::SealedOnEtcd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retiring_and_revoking_end_a_grant_on_the_next_call() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("retire").await;
    let bob = daemon.create_user("bob", NO_POLICY).await;
    let carol = daemon.create_user("carol", NO_POLICY).await;
    let mallory = daemon.create_user("mallory", NO_POLICY).await;

    // Retired by its retiring principal.
    let mut first = request(&key.key_id, &arn(&daemon, "bob"), &["Encrypt"]);
    first.retiring_principal = Some(arn(&daemon, "carol"));
    let first = create_grant(&daemon.client, first).await.unwrap();
    encrypt(&bob, &key.key_id, &[]).await.expect("granted");
    let by_id = |grant_id: &str| v1::RetireGrantRequest {
        key_id: key.key_id.clone(),
        grant_id: grant_id.into(),
        ..Default::default()
    };
    // Neither the grantee (the grant does not hold RetireGrant) nor a stranger may retire it.
    for other in [&bob, &mallory] {
        assert_refused(
            retire(other, by_id(&first.grant_id)).await,
            Code::PermissionDenied,
            "AccessDeniedException",
        );
    }
    encrypt(&bob, &key.key_id, &[])
        .await
        .expect("the refused retirements changed nothing");
    retire(&carol, by_id(&first.grant_id))
        .await
        .expect("RetireGrant");
    assert_refused(
        encrypt(&bob, &key.key_id, &[]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_refused(
        retire(&carol, by_id(&first.grant_id)).await,
        Code::NotFound,
        "NotFoundException",
    );

    // Retired by its grantee, when it holds RetireGrant.
    let second = create_grant(
        &daemon.client,
        request(
            &key.key_id,
            &arn(&daemon, "bob"),
            &["Encrypt", "RetireGrant"],
        ),
    )
    .await
    .unwrap();
    encrypt(&bob, &key.key_id, &[]).await.expect("granted");
    retire(&bob, by_id(&second.grant_id))
        .await
        .expect("RetireGrant");
    assert_refused(
        encrypt(&bob, &key.key_id, &[]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );

    // Revoked by one allowed kms:RevokeGrant on the key (the root); refused to others.
    let third = create_grant(
        &daemon.client,
        request(&key.key_id, &arn(&daemon, "bob"), &["Encrypt"]),
    )
    .await
    .unwrap();
    assert_refused(
        revoke(&mallory, &key.key_id, &third.grant_id).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    encrypt(&bob, &key.key_id, &[])
        .await
        .expect("the refused revocation changed nothing");
    revoke(&daemon.client, &key.key_id, &third.grant_id)
        .await
        .expect("RevokeGrant");
    assert_refused(
        encrypt(&bob, &key.key_id, &[]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert!(grant_ids(&daemon, &key.key_id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_deny_overrides_a_grant() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("deny").await;
    let bob = daemon
        .create_user(
            "bob",
            Some(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}"#,
            ),
        )
        .await;
    create_grant(
        &daemon.client,
        request(&key.key_id, &arn(&daemon, "bob"), &["Encrypt", "Decrypt"]),
    )
    .await
    .unwrap();
    let blob = encrypt(&bob, &key.key_id, &[])
        .await
        .expect("Encrypt granted");
    assert_refused(
        decrypt(&bob, &blob, &[]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // A Deny in the key policy wins over the grant too.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"arn:keyhaven:iam::{account}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Effect":"Deny","Principal":{{"AWS":"{bob}"}},"Action":"kms:Encrypt","Resource":"*"}}]}}"#,
        account = daemon.account_id,
        bob = arn(&daemon, "bob")
    );
    daemon
        .client
        .kms()
        .put_key_policy(daemon.client.signed(
            "PutKeyPolicy",
            v1::PutKeyPolicyRequest {
                key_id: key.key_id.clone(),
                policy,
                ..Default::default()
            },
        ))
        .await
        .expect("PutKeyPolicy");
    assert_refused(
        encrypt(&bob, &key.key_id, &[]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_tokens_are_checked_and_retire_their_grant() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("tokens").await;
    let bob = daemon.create_user("bob", NO_POLICY).await;
    let stranger = daemon.create_user("stranger", NO_POLICY).await;
    let made = create_grant(
        &daemon.client,
        request(
            &key.key_id,
            &arn(&daemon, "bob"),
            &["Encrypt", "CreateGrant"],
        ),
    )
    .await
    .unwrap();
    // The grant is usable on the call carrying its token, and on the next without.
    let mut with_token = request(&key.key_id, &arn(&daemon, "stranger"), &["Encrypt"]);
    with_token.grant_tokens = vec![made.grant_token.clone()];
    let delegated = create_grant(&bob, with_token.clone())
        .await
        .expect("CreateGrant under bob's grant, token carried");
    encrypt(&bob, &key.key_id, &[]).await.expect("granted");
    // A forged token is refused, and nothing is made.
    let mut forged = made.grant_token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [forged, "not a token".to_string(), String::new()] {
        let mut request = with_token.clone();
        request.grant_tokens = vec![bad];
        assert_refused(
            create_grant(&bob, request).await,
            Code::InvalidArgument,
            "InvalidGrantTokenException",
        );
    }
    assert_eq!(grant_ids(&daemon, &key.key_id).await.len(), 2);
    // A token names its grant: another key or grant id beside it is refused, changing nothing.
    let other_key = daemon.create_key("another").await;
    for (key_id, grant_id) in [
        (other_key.key_id.clone(), String::new()),
        (String::new(), delegated.grant_id.clone()),
    ] {
        assert_refused(
            retire(
                &stranger,
                v1::RetireGrantRequest {
                    grant_token: made.grant_token.clone(),
                    key_id,
                    grant_id,
                },
            )
            .await,
            Code::InvalidArgument,
            "ValidationException",
        );
    }
    assert_eq!(grant_ids(&daemon, &key.key_id).await.len(), 2);
    // Whoever holds the token may retire the grant.
    retire(
        &stranger,
        v1::RetireGrantRequest {
            grant_token: made.grant_token.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("RetireGrant by token");
    assert_refused(
        encrypt(&bob, &key.key_id, &[]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_eq!(
        grant_ids(&daemon, &key.key_id).await,
        vec![delegated.grant_id]
    );
    // The token of a grant that has ended is refused.
    assert_refused(
        create_grant(&bob, with_token).await,
        Code::InvalidArgument,
        "InvalidGrantTokenException",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_makes_create_grant_idempotent() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("names").await;
    // A grantee in another account: no principal of ours to check.
    let mut named = request(
        &key.key_id,
        "arn:keyhaven:iam::111122223333:role/app",
        &["Decrypt"],
    );
    named.name = "app-decrypt".into();
    let first = create_grant(&daemon.client, named.clone()).await.unwrap();
    let retry = create_grant(&daemon.client, named.clone()).await.unwrap();
    assert_eq!(first.grant_id, retry.grant_id);
    assert_ne!(
        first.grant_token, retry.grant_token,
        "each answer has its own token"
    );
    // The same name with other terms is another grant, as in AWS KMS.
    let mut changed = named.clone();
    changed.operations = ops(&["Decrypt", "Encrypt"]);
    let other = create_grant(&daemon.client, changed).await.unwrap();
    assert_ne!(other.grant_id, first.grant_id);
    assert_eq!(grant_ids(&daemon, &key.key_id).await.len(), 2);
    let mut bad = named;
    bad.name = "no spaces allowed".into();
    assert_refused(
        create_grant(&daemon.client, bad).await,
        Code::InvalidArgument,
        "ValidationException",
    );
    assert_eq!(grant_ids(&daemon, &key.key_id).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_grants_pages_and_filters() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("pages").await;
    daemon.create_user("bob", NO_POLICY).await;
    daemon.create_user("dave", NO_POLICY).await;
    let carol = arn(&daemon, "carol");
    let mut made = Vec::new();
    for n in 0..5 {
        let grantee = arn(&daemon, if n < 3 { "bob" } else { "dave" });
        let mut r = request(&key.key_id, &grantee, &["Encrypt"]);
        r.retiring_principal = Some(carol.clone());
        made.push(create_grant(&daemon.client, r).await.unwrap().grant_id);
    }
    made.sort();
    let mut seen = Vec::new();
    let mut marker = String::new();
    let mut pages = Vec::new();
    loop {
        let page = list(&daemon.client, &key.key_id, 2, &marker).await.unwrap();
        pages.push((page.grants.len(), page.truncated));
        seen.extend(page.grants.iter().map(|g| g.grant_id.clone()));
        if !page.truncated {
            assert!(page.next_marker.is_empty());
            break;
        }
        marker = page.next_marker;
    }
    assert_eq!(pages, vec![(2, true), (2, true), (1, false)]);
    assert_eq!(seen, made, "every grant once, in grant-id order");
    // By grantee and by grant id.
    let by_grantee = daemon
        .client
        .kms()
        .list_grants(daemon.client.signed(
            "ListGrants",
            v1::ListGrantsRequest {
                key_id: key.key_id.clone(),
                grantee_principal: arn(&daemon, "dave"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_grantee.grants.len(), 2);
    assert!(
        by_grantee
            .grants
            .iter()
            .all(|g| g.grantee_principal == arn(&daemon, "dave"))
    );
    let one = daemon
        .client
        .kms()
        .list_grants(daemon.client.signed(
            "ListGrants",
            v1::ListGrantsRequest {
                key_id: key.key_id.clone(),
                grant_id: made[3].clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.grants.len(), 1);
    let entry = &one.grants[0];
    assert_eq!(entry.grant_id, made[3]);
    assert_eq!(entry.key_id, key.arn);
    assert_eq!(entry.retiring_principal.as_deref(), Some(carol.as_str()));
    assert_eq!(entry.operations, ops(&["Encrypt"]));
    // ListRetirableGrants: the five, for carol, paged.
    let retirable = daemon
        .client
        .kms()
        .list_retirable_grants(daemon.client.signed(
            "ListRetirableGrants",
            v1::ListRetirableGrantsRequest {
                retiring_principal: carol.clone(),
                limit: 4,
                marker: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retirable.grants.len(), 4);
    assert!(retirable.truncated);
    // A caller without kms:ListGrants learns nothing.
    let mallory = daemon.create_user("mallory", NO_POLICY).await;
    assert_refused(
        list(&mallory, &key.key_id, 0, "").await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_bound_grants_per_key_and_in_bytes() {
    let daemon = TestDaemon::start_with(Backend::Sealed, |config| {
        config.grants_per_key = 3;
        config.grant_bytes = 3000;
    })
    .await;
    let key = daemon.create_key("quota").await;
    daemon.create_user("bob", NO_POLICY).await;
    let grantee = arn(&daemon, "bob");
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(
            create_grant(&daemon.client, request(&key.key_id, &grantee, &["Encrypt"]))
                .await
                .unwrap()
                .grant_id,
        );
    }
    assert_refused(
        create_grant(&daemon.client, request(&key.key_id, &grantee, &["Encrypt"])).await,
        Code::ResourceExhausted,
        "LimitExceededException",
    );
    assert_eq!(grant_ids(&daemon, &key.key_id).await.len(), 3);
    // Another key: the count is per key, but the bytes are the account's.
    let other = daemon.create_key("quota 2").await;
    let mut big = request(&other.key_id, &grantee, &["Encrypt"]);
    let wide: Vec<(String, String)> = (0..20)
        .map(|n| (format!("key-{n:02}"), "v".repeat(60)))
        .collect();
    big.constraints = Some(v1::GrantConstraints {
        encryption_context_subset: wide.iter().cloned().collect::<HashMap<_, _>>(),
        ..Default::default()
    });
    assert_refused(
        create_grant(&daemon.client, big.clone()).await,
        Code::ResourceExhausted,
        "LimitExceededException",
    );
    assert!(grant_ids(&daemon, &other.key_id).await.is_empty());
    // A revoked grant frees its room.
    revoke(&daemon.client, &key.key_id, &made[0]).await.unwrap();
    create_grant(&daemon.client, request(&key.key_id, &grantee, &["Encrypt"]))
        .await
        .expect("room again after RevokeGrant");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grantee_delegates_only_a_subset_under_a_narrower_constraint() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("delegation").await;
    let bob = daemon.create_user("bob", NO_POLICY).await;
    let carol = daemon.create_user("carol", NO_POLICY).await;
    let mut holds = request(
        &key.key_id,
        &arn(&daemon, "bob"),
        &["Encrypt", "CreateGrant"],
    );
    holds.constraints = subset(&[("tenant", "a")]);
    create_grant(&daemon.client, holds).await.unwrap();
    let before = grant_ids(&daemon, &key.key_id).await;
    let to_carol = |operations: &[&str], constraints| {
        let mut r = request(&key.key_id, &arn(&daemon, "carol"), operations);
        r.constraints = constraints;
        r
    };
    for (operations, constraints) in [
        (vec!["Decrypt"], subset(&[("tenant", "a")])),
        (vec!["Encrypt"], None),
        (vec!["Encrypt"], subset(&[("tenant", "b")])),
    ] {
        assert_refused(
            create_grant(&bob, to_carol(&operations, constraints)).await,
            Code::PermissionDenied,
            "AccessDeniedException",
        );
    }
    assert_eq!(grant_ids(&daemon, &key.key_id).await, before);
    create_grant(
        &bob,
        to_carol(&["Encrypt"], equals(&[("tenant", "a"), ("file", "x")])),
    )
    .await
    .expect("a subset under a narrower constraint");
    encrypt(&carol, &key.key_id, &[("tenant", "a"), ("file", "x")])
        .await
        .expect("carol's delegated grant");
    assert_refused(
        encrypt(&carol, &key.key_id, &[("tenant", "a")]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_condition_keys_work_in_policies() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("conditions").await;
    daemon.create_user("bob", NO_POLICY).await;
    daemon.create_user("carol", NO_POLICY).await;
    let bob = arn(&daemon, "bob");
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"kms:CreateGrant","Resource":"*",
            "Condition":{{"StringEquals":{{"kms:GranteePrincipal":"{bob}","kms:GrantConstraintType":"EncryptionContextSubset"}},
                         "ForAllValues:StringEquals":{{"kms:GrantOperations":["Decrypt","Encrypt"]}},
                         "Bool":{{"kms:GrantIsForAWSResource":"false"}}}}}}]}}"#
    );
    let alice = daemon.create_user("alice", Some(&policy)).await;
    let make = |grantee: &str, operations: &[&str], constraints| {
        let mut r = request(&key.key_id, grantee, operations);
        r.constraints = constraints;
        r
    };
    create_grant(&alice, make(&bob, &["Decrypt"], subset(&[("tenant", "a")])))
        .await
        .expect("within the conditions");
    for refused in [
        make(&arn(&daemon, "carol"), &["Decrypt"], subset(&[("t", "a")])),
        make(&bob, &["Decrypt", "CreateGrant"], subset(&[("t", "a")])),
        make(&bob, &["Decrypt"], equals(&[("t", "a")])),
        make(&bob, &["Decrypt"], None),
    ] {
        assert_refused(
            create_grant(&alice, refused).await,
            Code::PermissionDenied,
            "AccessDeniedException",
        );
    }
    assert_eq!(grant_ids(&daemon, &key.key_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_record_and_the_simulator_name_the_grant() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("audited").await;
    let bob = daemon.create_user("bob", NO_POLICY).await;
    let mut r = request(&key.key_id, &arn(&daemon, "bob"), &["Encrypt"]);
    r.constraints = equals(&[("tenant", "a")]);
    let grant = create_grant(&daemon.client, r).await.unwrap();
    encrypt(&bob, &key.key_id, &[("tenant", "a")])
        .await
        .unwrap();
    daemon
        .encrypt(&key.key_id, b"by policy", &[("tenant", "a")])
        .await
        .unwrap();
    let records = audit_lines(&daemon);
    let encrypts: Vec<_> = records
        .iter()
        .filter(|r| r["operation"] == "kms:Encrypt" && r["outcome"]["code"] == "Ok")
        .collect();
    assert_eq!(encrypts.len(), 2, "{encrypts:?}");
    let by_bob = encrypts
        .iter()
        .find(|r| r["principal"] == arn(&daemon, "bob"))
        .expect("bob's Encrypt");
    assert_eq!(by_bob["grants"], serde_json::json!([grant.grant_id]));
    let by_root = encrypts
        .iter()
        .find(|r| r["principal"] != arn(&daemon, "bob"))
        .expect("the root's Encrypt");
    assert!(by_root.get("grants").is_none(), "{by_root}");
    assert!(
        records.iter().any(|r| r["operation"] == "kms:CreateGrant"
            && r["grants"] == serde_json::json!([grant.grant_id])),
        "CreateGrant names the grant it made"
    );
    // The simulator: allowed by the grant with the context, not without.
    let simulate = |context: Vec<v1::ContextEntry>| v1::SimulatePrincipalPolicyRequest {
        policy_source_arn: arn(&daemon, "bob"),
        action_name: "kms:Encrypt".into(),
        resource_arn: key.arn.clone(),
        context_entries: context,
    };
    let iam = daemon.client.iam();
    let allowed = iam
        .clone()
        .simulate_principal_policy(daemon.client.signed_iam(
            "SimulatePrincipalPolicy",
            simulate(vec![v1::ContextEntry {
                key: "kms:EncryptionContext:tenant".into(),
                values: vec!["a".into()],
            }]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.eval_decision, "allowed");
    assert_eq!(allowed.deciding_grant_id, grant.grant_id);
    let refused = iam
        .clone()
        .simulate_principal_policy(
            daemon
                .client
                .signed_iam("SimulatePrincipalPolicy", simulate(Vec::new())),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.eval_decision, "implicitDeny");
    assert!(refused.deciding_grant_id.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_survive_a_restart_and_end_with_their_grantee_or_key() {
    let mut daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("durable").await;
    daemon.create_user("bob", NO_POLICY).await;
    let grant = create_grant(
        &daemon.client,
        request(&key.key_id, &arn(&daemon, "bob"), &["Encrypt"]),
    )
    .await
    .unwrap();
    daemon.restart().await;
    assert_eq!(
        grant_ids(&daemon, &key.key_id).await,
        vec![grant.grant_id.clone()]
    );
    // A grantee of this account must exist: a grant binds to the principal, not its name.
    assert_refused(
        create_grant(
            &daemon.client,
            request(&key.key_id, &arn(&daemon, "nobody"), &["Encrypt"]),
        )
        .await,
        Code::InvalidArgument,
        "ValidationException",
    );
    assert_eq!(grant_ids(&daemon, &key.key_id).await.len(), 1);
    // Bob deleted (his access keys first) and made again: the new bob is not the grantee.
    let iam = daemon.client.iam();
    let keys = iam
        .clone()
        .list_access_keys(daemon.client.signed_iam(
            "ListAccessKeys",
            v1::ListAccessKeysRequest {
                user_name: "bob".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    for access_key in keys.access_key_metadata {
        iam.clone()
            .delete_access_key(daemon.client.signed_iam(
                "DeleteAccessKey",
                v1::DeleteAccessKeyRequest {
                    user_name: "bob".into(),
                    access_key_id: access_key.access_key_id,
                },
            ))
            .await
            .unwrap();
    }
    iam.clone()
        .delete_user(daemon.client.signed_iam(
            "DeleteUser",
            v1::DeleteUserRequest {
                user_name: "bob".into(),
            },
        ))
        .await
        .expect("DeleteUser");
    let new_bob = daemon.create_user("bob", NO_POLICY).await;
    assert_refused(
        encrypt(&new_bob, &key.key_id, &[]).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // Destroying the key ends its grants and removes their records.
    daemon
        .schedule_deletion(&key.key_id, Some(7))
        .await
        .unwrap();
    daemon.clock.advance(8 * common::DAY);
    daemon.run_due_tasks().await;
    assert_refused(
        list(&daemon.client, &key.key_id, 0, "").await,
        Code::NotFound,
        "NotFoundException",
    );
    daemon.stop().await;
    let store = daemon.open_store();
    let left = store.scan(b"grant/", None, usize::MAX).expect("scan");
    assert!(left.is_empty(), "{} grant records left", left.len());
}

/// `keyhaven grant create|list|retire|revoke` against the daemon, as a user runs them, with
/// the AWS CLI's JSON shapes; a refusal exits non-zero naming its reason.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_creates_lists_retires_and_revokes_grants() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("cli").await;
    daemon.create_user("bob", NO_POLICY).await;
    let bob = arn(&daemon, "bob");
    let endpoint = daemon.endpoint();
    let access_key_id = daemon.credentials.access_key_id.clone();
    let secret = daemon.credentials.secret_access_key.expose().clone();
    let region = daemon.config.region.clone();
    let run = move |args: Vec<String>| {
        let (endpoint, access_key_id, secret, region) = (
            endpoint.clone(),
            access_key_id.clone(),
            secret.clone(),
            region.clone(),
        );
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"))
                    .args(&args)
                    .args(["--output", "json"])
                    .env_clear()
                    .env("KEYHAVEN_ENDPOINT", endpoint)
                    .env("KEYHAVEN_ACCESS_KEY_ID", access_key_id)
                    .env("KEYHAVEN_SECRET_ACCESS_KEY", secret)
                    .env("KEYHAVEN_REGION", region)
                    .output()
                    .expect("keyhaven runs")
            })
            .await
            .expect("join")
        }
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let json = |output: &std::process::Output| -> serde_json::Value {
        assert!(
            output.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("one JSON object")
    };
    let made = json(
        &run(args(&[
            "grant",
            "create",
            "--key",
            &key.key_id,
            "--grantee",
            &bob,
            "--operation",
            "Encrypt",
            "--context-subset",
            "tenant=a",
            "--name",
            "cli-grant",
        ]))
        .await,
    );
    let grant_id = made["GrantId"].as_str().expect("GrantId").to_owned();
    let token = made["GrantToken"].as_str().expect("GrantToken").to_owned();
    let listed = json(&run(args(&["grant", "list", "--key", &key.key_id])).await);
    assert_eq!(listed["Grants"][0]["GrantId"], grant_id.as_str());
    assert_eq!(listed["Grants"][0]["GranteePrincipal"], bob.as_str());
    assert_eq!(
        listed["Grants"][0]["Constraints"]["EncryptionContextSubset"]["tenant"],
        "a"
    );
    json(&run(args(&["grant", "retire", "--token", &token])).await);
    assert!(grant_ids(&daemon, &key.key_id).await.is_empty());
    let again = json(
        &run(args(&[
            "grant",
            "create",
            "--key",
            &key.key_id,
            "--grantee",
            &bob,
            "--operation",
            "Decrypt",
        ]))
        .await,
    );
    let again = again["GrantId"].as_str().expect("GrantId").to_owned();
    let revoke = args(&[
        "grant",
        "revoke",
        "--key",
        &key.key_id,
        "--grant-id",
        &again,
    ]);
    json(&run(revoke.clone()).await);
    assert!(grant_ids(&daemon, &key.key_id).await.is_empty());
    let refused = run(revoke).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("NotFoundException"), "{stderr}");
}

/// On gRPC a grant token travels as `x-keyhaven-grant-token` metadata on any KMS call: a
/// valid one is accepted, a forged one refused before the operation runs.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_calls_carry_grant_tokens_in_metadata() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("metadata").await;
    let bob = daemon.create_user("bob", NO_POLICY).await;
    let made = create_grant(
        &daemon.client,
        request(&key.key_id, &arn(&daemon, "bob"), &["Encrypt"]),
    )
    .await
    .unwrap();
    let with_token = |token: &str| {
        let mut signed = bob.signed(
            "Encrypt",
            v1::EncryptRequest {
                key_id: key.key_id.clone(),
                plaintext: b"granted".to_vec(),
                encryption_context: HashMap::new(),
                ..Default::default()
            },
        );
        signed.metadata_mut().append(
            keyhaven::api::GRANT_TOKEN_METADATA,
            token.parse().expect("ascii"),
        );
        signed
    };
    bob.kms()
        .encrypt(with_token(&made.grant_token))
        .await
        .expect("Encrypt with the grant's token");
    let mut forged = made.grant_token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_refused(
        bob.kms().encrypt(with_token(&forged)).await,
        Code::InvalidArgument,
        "InvalidGrantTokenException",
    );
    let records = audit_lines(&daemon);
    let encrypts: Vec<_> = records
        .iter()
        .filter(|r| r["operation"] == "kms:Encrypt")
        .collect();
    assert_eq!(encrypts.len(), 2);
    assert_eq!(
        encrypts[1]["outcome"]["reason"], "InvalidGrantTokenException",
        "the refused call is recorded with its reason"
    );
}
