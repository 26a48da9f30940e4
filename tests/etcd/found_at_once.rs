//! What one daemon made is found at once through another: a daemon that has not heard of what
//! a call names catches up with the store (one quorum read a call) before it judges it.

use super::*;

/// How late daemon b hears what etcd sends it (its change feed among it): every call made to
/// it right after a change made through a finds its view behind, so only catching up with
/// the store finds the change at once.
const LAG: std::time::Duration = std::time::Duration::from_millis(100);

/// A ciphertext one daemon answers decrypts on another at once, even under a key or a
/// version the other has not heard of yet: it catches up with the store rather than refuse
/// a genuine ciphertext as invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_ciphertext_decrypts_on_another_daemon_at_once() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join_lagging(LAG).await;
    for round in 0..15u32 {
        // A key B may not have heard of, and a version B may not have heard of.
        let key = a.create_key("fresh").await.key_id;
        let blob = a.encrypt(&key, b"new key", &[]).await.expect("Encrypt");
        assert_eq!(
            b.decrypt(&blob, &[]).await.expect("a new key's ciphertext"),
            b"new key",
            "round {round}"
        );
        a.rotate(&key).await.expect("RotateKeyOnDemand");
        let blob = a.encrypt(&key, b"new version", &[]).await.expect("Encrypt");
        assert_eq!(
            b.decrypt(&blob, &[])
                .await
                .expect("a new version's ciphertext"),
            b"new version",
            "round {round}"
        );
    }
    // A version that was never made is still refused, after looking.
    let key = a.create_key("bounded").await.key_id;
    let mut blob = a.encrypt(&key, b"x", &[]).await.expect("Encrypt");
    blob[17..21].copy_from_slice(&9u32.to_be_bytes());
    assert_refused(
        b.decrypt(&blob, &[]).await,
        tonic::Code::InvalidArgument,
        "InvalidCiphertextException",
    );
}

/// A key, an alias and a grant one daemon has just made are found at once through another,
/// as a caller behind a load balancer expects: a daemon that has not heard of what a call
/// names catches up with the store before it judges it missing. What was never made is still
/// refused, after looking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_daemon_just_made_is_found_at_once_through_another() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join_lagging(LAG).await;
    let root = format!("arn:aws:iam::{}:root", a.account_id);
    for round in 0..15u32 {
        let key = a.create_key("fresh").await.key_id;
        b.describe(&key)
            .await
            .unwrap_or_else(|s| panic!("round {round}: DescribeKey of a new key: {s:?}"));
        let alias = format!("alias/fresh-{round}");
        a.create_alias(&alias, &key).await.expect("CreateAlias");
        b.encrypt(&alias, b"x", &[])
            .await
            .unwrap_or_else(|s| panic!("round {round}: Encrypt under a new alias: {s:?}"));
        let made = grant_on(&a, &key, &root, "Encrypt").await;
        let mut with_token = b.client.signed(
            "Encrypt",
            v1::EncryptRequest {
                key_id: key.clone(),
                plaintext: b"x".to_vec(),
                ..Default::default()
            },
        );
        with_token.metadata_mut().append(
            keyhaven::api::GRANT_TOKEN_METADATA,
            made.grant_token.parse().expect("ascii"),
        );
        b.client
            .kms()
            .encrypt(with_token)
            .await
            .unwrap_or_else(|s| panic!("round {round}: a new grant's token: {s:?}"));
        let revoked = grant_on(&a, &key, &root, "Decrypt").await;
        b.client
            .kms()
            .revoke_grant(b.client.signed(
                "RevokeGrant",
                v1::RevokeGrantRequest {
                    key_id: key.clone(),
                    grant_id: revoked.grant_id,
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("round {round}: RevokeGrant of a new grant: {s:?}"));
    }
    // Never made: refused as before, and nothing was made by asking.
    let keys_before = b.list_all_keys().await.len();
    assert_refused(
        b.describe("11111111-2222-3333-4444-555555555555").await,
        tonic::Code::NotFound,
        "NotFoundException",
    );
    assert_refused(
        b.encrypt("alias/never-made", b"x", &[]).await,
        tonic::Code::NotFound,
        "NotFoundException",
    );
    assert_eq!(b.list_all_keys().await.len(), keys_before);
}

/// A grant of `operation` on `key` to `grantee`, made through `d`.
async fn grant_on(
    d: &TestDaemon,
    key: &str,
    grantee: &str,
    operation: &str,
) -> v1::CreateGrantResponse {
    let request = v1::CreateGrantRequest {
        key_id: key.into(),
        grantee_principal: grantee.into(),
        operations: vec![operation.into()],
        ..Default::default()
    };
    d.client
        .kms()
        .create_grant(d.client.signed("CreateGrant", request))
        .await
        .expect("CreateGrant")
        .into_inner()
}

/// A user, a grant and another account's key one daemon has just made are found at once
/// through another: SimulatePrincipalPolicy of the new user, CreateGrant to it, ListGrants by
/// the new grant's id, and a member account's Decrypt of a ciphertext just made under the
/// management account's key (which account holds the key is looked for after catching up).
/// Who was never made is still refused, after looking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_grants_and_shared_keys_one_daemon_just_made_are_found_at_once_through_another()
{
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join_lagging(LAG).await;
    let (account, credentials) = a.create_account("partner").await;
    let member_id = account.id;
    let partner = b.client_with(credentials).await;
    until_served("daemon b serves the partner account", &partner).await;
    let key = a.create_key("shared").await;
    let partition = key.arn.split(':').nth(1).expect("partition").to_owned();
    let user_arn = |name: &str| format!("arn:{partition}:iam::{}:user/{name}", a.account_id);
    let simulate = |name: String| {
        let client = b.client.clone();
        let request = v1::SimulatePrincipalPolicyRequest {
            policy_source_arn: user_arn(&name),
            action_name: "kms:Encrypt".into(),
            resource_arn: key.arn.clone(),
            ..Default::default()
        };
        async move {
            client
                .iam()
                .simulate_principal_policy(client.signed_iam("SimulatePrincipalPolicy", request))
                .await
        }
    };
    let shared_policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Sid":"Owner","Effect":"Allow","Principal":{{"AWS":"arn:{partition}:iam::{own}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Sid":"Partner","Effect":"Allow","Principal":{{"AWS":"arn:{partition}:iam::{member_id}:root"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#,
        own = a.account_id
    );
    for round in 0..10u32 {
        let grantee = format!("grantee-{round}");
        create_user_on(&a, &grantee).await;
        let request = v1::CreateGrantRequest {
            key_id: key.key_id.clone(),
            grantee_principal: user_arn(&grantee),
            operations: vec!["Encrypt".into()],
            ..Default::default()
        };
        b.client
            .kms()
            .create_grant(b.client.signed("CreateGrant", request))
            .await
            .unwrap_or_else(|s| panic!("round {round}: CreateGrant to a new user: {s:?}"));

        let simulated = format!("simulated-{round}");
        create_user_on(&a, &simulated).await;
        let decision = simulate(simulated)
            .await
            .unwrap_or_else(|s| {
                panic!("round {round}: SimulatePrincipalPolicy of a new user: {s:?}")
            })
            .into_inner();
        assert_eq!(decision.eval_decision, "implicitDeny", "round {round}");

        let grant = grant_on(&a, &key.key_id, &user_arn(&grantee), "Decrypt").await;
        let listed = grants_listed_on(&b, &key.key_id, &grant.grant_id).await;
        assert_eq!(listed.len(), 1, "round {round}: ListGrants of a new grant");
        assert_eq!(listed[0].grant_id, grant.grant_id, "round {round}");

        let shared = a
            .client
            .kms()
            .create_key(a.client.signed(
                "CreateKey",
                v1::CreateKeyRequest {
                    policy: shared_policy.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("CreateKey")
            .into_inner()
            .key_metadata
            .expect("metadata");
        let blob = a
            .encrypt(&shared.key_id, b"for the partner", &[])
            .await
            .expect("Encrypt");
        let decrypted = partner
            .kms()
            .decrypt(partner.signed(
                "Decrypt",
                v1::DecryptRequest {
                    ciphertext_blob: blob,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("round {round}: the partner's Decrypt on b: {s:?}"))
            .into_inner();
        assert_eq!(
            decrypted.plaintext.to_vec(),
            b"for the partner".to_vec(),
            "round {round}"
        );
    }
    // Never made: refused as before, and no grant was made to it.
    assert_refused(
        simulate("never-made".into()).await,
        tonic::Code::NotFound,
        "NoSuchEntityException",
    );
    let request = v1::CreateGrantRequest {
        key_id: key.key_id.clone(),
        grantee_principal: user_arn("never-made"),
        operations: vec!["Encrypt".into()],
        ..Default::default()
    };
    assert_refused(
        b.client
            .kms()
            .create_grant(b.client.signed("CreateGrant", request))
            .await,
        tonic::Code::InvalidArgument,
        "ValidationException",
    );
    assert_eq!(
        grants_listed_on(&b, &key.key_id, "").await.len(),
        20,
        "ten grants made on b, ten on a, none to never-made"
    );
}

/// The grants of `key` listed through `d` (the one `grant_id` names, unless it is empty).
async fn grants_listed_on(d: &TestDaemon, key: &str, grant_id: &str) -> Vec<v1::GrantListEntry> {
    let request = v1::ListGrantsRequest {
        key_id: key.into(),
        grant_id: grant_id.into(),
        ..Default::default()
    };
    d.client
        .kms()
        .list_grants(d.client.signed("ListGrants", request))
        .await
        .expect("ListGrants")
        .into_inner()
        .grants
}

/// A user of `name` made through `d`, with nothing else (the next call follows it at once).
async fn create_user_on(d: &TestDaemon, name: &str) {
    d.client
        .iam()
        .create_user(d.client.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateUser");
}

/// An access key one daemon has just made is accepted at once by another: a daemon that has
/// not heard of the key a signature names catches up with the store before it refuses the
/// call. A key never made is still refused as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_key_one_daemon_just_made_signs_at_once_for_another() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join_lagging(LAG).await;
    let authority = b.endpoint().trim_start_matches("http://").to_owned();
    for round in 0..10u32 {
        // Connected first, so that the call follows the access key at once.
        let channel = tonic::transport::Endpoint::from_shared(b.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to B");
        let name = format!("fresh-{round}");
        let credentials = a.create_user_credentials(&name, None).await;
        let through_b = keyhaven::client::Client::from_channel(channel, &authority, credentials)
            .with_clock(std::sync::Arc::new(b.clock.clone()));
        let identity = through_b
            .iam()
            .get_caller_identity(
                through_b.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
            )
            .await
            .unwrap_or_else(|s| panic!("round {round}: a new access key on B: {s:?}"));
        assert!(
            identity
                .into_inner()
                .arn
                .ends_with(&format!(":user/fresh-{round}")),
            "round {round}"
        );
    }
    let never = b
        .client_with(keyhaven::client::ClientCredentials::long_term(
            "KHAKNEVERMADE0000000".into(),
            keyhaven::secret::SecretString::new("x".repeat(40)),
            &b.config.region,
        ))
        .await;
    assert_refused(
        never
            .iam()
            .get_caller_identity(
                never.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
            )
            .await,
        tonic::Code::Unauthenticated,
        "UnrecognizedClientException",
    );
}

/// Waits until `client`'s account answers a call.
async fn until_served(what: &str, client: &keyhaven::client::Client) {
    within(what, || {
        let client = client.clone();
        async move {
            client
                .kms()
                .list_keys(client.signed("ListKeys", v1::ListKeysRequest::default()))
                .await
                .is_ok()
        }
    })
    .await;
}

/// All the catch-ups of one call are served by its first quorum read: a member account's
/// Decrypt of a ciphertext naming a key never made misses twice (which account holds the
/// key, then the key itself) and costs one read, as does a batch of such ciphertexts each
/// naming another key, and ciphertexts naming a real key at versions never made, alone or
/// in a batch. What could never have been made (an unreadable ciphertext, a grant id of
/// another form, listed or retired) costs none. Each call is answered as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_naming_what_was_never_made_costs_at_most_one_read_of_the_store() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    let (_, credentials) = a.create_account("partner").await;
    let partner = b.client_with(credentials).await;
    until_served("daemon b serves the partner account", &partner).await;
    let key = a.create_key("real").await.key_id;
    let blob = a.encrypt(&key, b"x", &[]).await.expect("Encrypt");
    // The real blob under another (never made) key id.
    let forged = |n: u128| {
        let mut forged = blob.clone();
        forged[1..17].copy_from_slice(&n.to_be_bytes());
        forged
    };
    let decrypt = |client: &keyhaven::client::Client, blob: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .kms()
                .decrypt(client.signed("Decrypt", common::batches::decrypt_item(&blob, &[])))
                .await
        }
    };
    let reads = || b.catch_up_reads();

    let before = reads();
    assert_refused(
        decrypt(&partner, forged(1)).await,
        tonic::Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    assert_eq!(
        reads() - before,
        1,
        "a member's Decrypt of a forged ciphertext"
    );

    let before = reads();
    let items = (2..6)
        .map(|n| common::batches::decrypt_item(&forged(n), &[]))
        .collect();
    let results = common::batches::decrypt_batch(&b.client, items)
        .await
        .expect("DecryptBatch");
    assert_eq!(results.len(), 4);
    for result in &results {
        let error = result.error.as_ref().expect("a forged item is refused");
        assert_eq!(error.reason, "InvalidCiphertextException");
    }
    assert_eq!(reads() - before, 1, "a batch of four forged ciphertexts");

    // The real key, at versions never made, asked by a caller allowed to use it: the key is
    // known, its version is not.
    let unmade = |version: u32| {
        let mut unmade = blob.clone();
        unmade[17..21].copy_from_slice(&version.to_be_bytes());
        unmade
    };
    let before = reads();
    assert_refused(
        decrypt(&b.client, unmade(9)).await,
        tonic::Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    assert_eq!(reads() - before, 1, "a Decrypt of a version never made");
    let before = reads();
    let items = (10..14)
        .map(|version| common::batches::decrypt_item(&unmade(version), &[]))
        .collect();
    let results = common::batches::decrypt_batch(&b.client, items)
        .await
        .expect("DecryptBatch");
    assert!(results.iter().all(|r| {
        r.error
            .as_ref()
            .is_some_and(|e| e.reason == "InvalidCiphertextException")
    }));
    assert_eq!(reads() - before, 1, "a batch of four versions never made");

    let before = reads();
    assert_refused(
        decrypt(&partner, b"not a ciphertext".to_vec()).await,
        tonic::Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    assert!(
        grants_listed_on(&b, &key, "not-a-grant-id")
            .await
            .is_empty()
    );
    let retire = v1::RetireGrantRequest {
        key_id: key.clone(),
        grant_id: "not-a-grant-id".into(),
        ..Default::default()
    };
    assert_refused(
        b.client
            .kms()
            .retire_grant(b.client.signed("RetireGrant", retire))
            .await,
        tonic::Code::NotFound,
        "NotFoundException",
    );
    assert_eq!(reads() - before, 0, "names no daemon could have made");

    // The real ciphertext still decrypts, through b, for its account.
    let opened = decrypt(&b.client, blob)
        .await
        .expect("Decrypt")
        .into_inner();
    assert_eq!(opened.plaintext.to_vec(), b"x".to_vec());
}

/// The same through the AWS door, driven by boto3: a user made through daemon a's door is
/// at once a grantee of CreateGrant and the principal of SimulatePrincipalPolicy through
/// b's. The door keeps no record of signatures, so such a call writes nothing before it
/// judges (a call of the gRPC door that may change state remembers its signature in the
/// store first, and the write brings the daemon's view up to date with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_one_daemon_just_made_is_found_at_once_through_anothers_aws_door() {
    let a = TestDaemon::start_with(Backend::SealedOnEtcd, |config| {
        config.set_aws_listen("127.0.0.1:0").expect("aws_listen");
    })
    .await;
    let b = a.join_lagging(LAG).await;
    let key = a.create_key("granted").await;
    let endpoint = |d: &TestDaemon| format!("http://{}", d.aws_addr().expect("the AWS door"));
    let mut environment = a.aws_root_environment();
    environment.extend([
        ("A_ENDPOINT".into(), endpoint(&a)),
        ("B_ENDPOINT".into(), endpoint(&b)),
        ("KEY_ID".into(), key.key_id.clone()),
        ("KEY_ARN".into(), key.arn.clone()),
    ]);
    common::run_aws_script("aws_found_at_once.py", environment, "found at once").await;
}

/// An account one daemon has just made is served at once by another: its root's first call
/// through b, right after CreateAccount answered through a, is authenticated and answered.
/// Daemon b catches up with the store (it has not heard of the root's access key), hears of
/// the account, and waits for it to be opened before judging the credentials again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_one_daemon_just_made_is_served_at_once_by_another() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    // Opening an account reads the store some fifteen times in turn: a shorter lag than the
    // other tests', so that it stays well within the 5 s a call waits for it.
    let b = a.join_lagging(std::time::Duration::from_millis(20)).await;
    for round in 0..3u32 {
        let (account, credentials) = a.create_account(&format!("partner-{round}")).await;
        let partner = b.client_with(credentials).await;
        let whoami = partner
            .iam()
            .get_caller_identity(
                partner.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
            )
            .await
            .unwrap_or_else(|s| panic!("round {round}: the new account's root on b: {s:?}"))
            .into_inner();
        assert_eq!(whoami.account, account.id, "round {round}");
    }
}

/// A key in an account one daemon has just made is used at once through another, by its ARN,
/// by a caller of another account its key policy lets in. Daemon b catches up with the store,
/// hears of the account, and waits for it to be opened, rather than judge the ARN in the
/// caller's own account (where no such key is: NotFoundException).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_an_account_one_daemon_just_made_is_used_at_once_through_another() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    // Opening an account reads the store some fifteen times in turn (see above).
    let b = a.join_lagging(std::time::Duration::from_millis(20)).await;
    for round in 0..3u32 {
        let (account, credentials) = a.create_account(&format!("lender-{round}")).await;
        let lender = a.client_with(credentials).await;
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[
                {{"Sid":"Owner","Effect":"Allow","Principal":{{"AWS":"arn:{partition}:iam::{lender}:root"}},"Action":"kms:*","Resource":"*"}},
                {{"Sid":"Borrower","Effect":"Allow","Principal":{{"AWS":"arn:{partition}:iam::{borrower}:root"}},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}}]}}"#,
            partition = a.config.partition,
            lender = account.id,
            borrower = a.account_id
        );
        let key = lender
            .kms()
            .create_key(lender.signed(
                "CreateKey",
                v1::CreateKeyRequest {
                    description: "lent".into(),
                    policy,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("round {round}: CreateKey in the new account: {s:?}"))
            .into_inner()
            .key_metadata
            .expect("key metadata");
        let blob = b
            .encrypt(&key.arn, b"borrowed", &[])
            .await
            .unwrap_or_else(|s| panic!("round {round}: the new account's key through b: {s:?}"));
        assert_eq!(
            a.decrypt(&blob, &[]).await.expect("Decrypt through a"),
            b"borrowed",
            "round {round}"
        );
    }
    // An ARN naming an account the organisation has never listed is still judged in the
    // caller's account, after looking once.
    let never = format!(
        "arn:{}:kms:{}:999999999999:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        a.config.partition, a.config.region
    );
    let before = b.catch_up_reads();
    assert_refused(
        b.encrypt(&never, b"x", &[]).await,
        tonic::Code::NotFound,
        "NotFoundException",
    );
    assert_eq!(b.catch_up_reads() - before, 1, "an account never made");
    // One no account could have: no read.
    let malformed = format!(
        "arn:{}:kms:{}:not-an-account:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        a.config.partition, a.config.region
    );
    let before = b.catch_up_reads();
    assert_refused(
        b.encrypt(&malformed, b"x", &[]).await,
        tonic::Code::NotFound,
        "NotFoundException",
    );
    assert_eq!(
        b.catch_up_reads() - before,
        0,
        "an account id of another form"
    );
}

/// An account another daemon made whose opening failed here (its keyring directory could not
/// be made) is opened again once the failure has passed, without a further change to the
/// organisation: the daemon does not refuse the account for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_whose_opening_failed_is_opened_again_once_it_can_be() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    // Where b keeps its members' keyrings is taken by a file.
    let blocked = b.config.data_dir.join("accounts");
    std::fs::write(&blocked, b"in the way").expect("a file where the directory goes");
    let (account, credentials) = a.create_account("retried").await;
    let partner = b.client_with(credentials).await;
    let whoami = || {
        let partner = partner.clone();
        async move {
            partner
                .iam()
                .get_caller_identity(
                    partner.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
                )
                .await
        }
    };
    // b has heard of the account (its own call catches up) and failed to open it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_refused(
        whoami().await,
        tonic::Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    // A key of the account named by ARN meanwhile: the account is listed but not served here,
    // so the call is refused as such (to be tried again), not judged in the caller's account.
    let lent = format!(
        "arn:{}:kms:{}:{}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        a.config.partition, a.config.region, account.id
    );
    let refused = b.encrypt(&lent, b"x", &[]).await;
    assert_refused(
        refused.clone(),
        tonic::Code::Unavailable,
        "KMSInternalException",
    );
    let message = refused.unwrap_err().message().to_owned();
    assert!(
        message.contains("not served by this daemon yet"),
        "{message}"
    );
    std::fs::remove_file(&blocked).expect("the file out of the way");
    within_secs(
        15,
        "the account served by b once its opening can succeed",
        || {
            let whoami = whoami();
            async move { whoami.await.is_ok() }
        },
    )
    .await;
    assert_eq!(
        whoami().await.expect("served").into_inner().account,
        account.id
    );
}
