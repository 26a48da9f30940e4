//! Batches end to end: EncryptBatch, DecryptBatch and GenerateDataKeyBatch against a real
//! daemon. Each item is judged as its single call would be (the same error, code and message
//! as that call gives the same caller), one bad item fails only itself, a batch outside 1 to
//! 1,000 items is refused whole, and each call leaves one audit record listing every item.

mod common;

use common::{Backend, TestDaemon, pairs};
use keyhaven::api::reason_of;
use keyhaven::client::Client;
use keyhaven::proto::v1;
use tonic::Code;

fn encrypt_item(key: &str, plaintext: &[u8], context: &[(&str, &str)]) -> v1::EncryptRequest {
    v1::EncryptRequest {
        key_id: key.into(),
        plaintext: plaintext.to_vec(),
        encryption_context: pairs(context),
        ..Default::default()
    }
}

fn decrypt_item(blob: &[u8], context: &[(&str, &str)]) -> v1::DecryptRequest {
    v1::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        encryption_context: pairs(context),
        key_id: String::new(),
        ..Default::default()
    }
}

/// What a single call answers, as a batch item's error would say it.
fn as_item_error(status: tonic::Status) -> v1::BatchItemError {
    let reason = reason_of(&status).expect("a reason");
    let message = status
        .message()
        .strip_prefix(&format!("{reason}: "))
        .expect("the message leads with its reason")
        .to_owned();
    v1::BatchItemError {
        code: format!("{:?}", status.code()),
        reason,
        message,
    }
}

async fn single_encrypt(
    client: &Client,
    item: v1::EncryptRequest,
) -> Result<Vec<u8>, tonic::Status> {
    Ok(client
        .kms()
        .encrypt(client.signed("Encrypt", item))
        .await?
        .into_inner()
        .ciphertext_blob)
}

async fn single_decrypt(
    client: &Client,
    item: v1::DecryptRequest,
) -> Result<Vec<u8>, tonic::Status> {
    Ok(client
        .kms()
        .decrypt(client.signed("Decrypt", item))
        .await?
        .into_inner()
        .plaintext
        .to_vec())
}

async fn encrypt_batch(
    client: &Client,
    items: Vec<v1::EncryptRequest>,
) -> Result<Vec<v1::EncryptBatchResult>, tonic::Status> {
    let request = v1::EncryptBatchRequest { items };
    Ok(client
        .kms()
        .encrypt_batch(client.signed("EncryptBatch", request))
        .await?
        .into_inner()
        .results)
}

async fn decrypt_batch(
    client: &Client,
    items: Vec<v1::DecryptRequest>,
) -> Result<Vec<v1::DecryptBatchResult>, tonic::Status> {
    let request = v1::DecryptBatchRequest { items };
    Ok(client
        .kms()
        .decrypt_batch(client.signed("DecryptBatch", request))
        .await?
        .into_inner()
        .results)
}

fn audit_records(daemon: &TestDaemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&daemon.config.audit_log)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit record"))
        .collect()
}

fn records_of<'a>(records: &'a [serde_json::Value], operation: &str) -> Vec<&'a serde_json::Value> {
    records
        .iter()
        .filter(|r| r["operation"] == operation)
        .collect()
}

/// A user allowed the three cryptographic actions on `allowed` keys only.
async fn user_allowed_on(daemon: &TestDaemon, name: &str, allowed: &[&str]) -> Client {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": allowed,
        }]
    });
    daemon.create_user(name, Some(&policy.to_string())).await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_item_is_answered_as_its_single_call_would_be() {
    each_item_as_its_single_call(Backend::Sealed).await;
}

/// The same on a PKCS#11 token (SoftHSM2): batches are keystore-neutral.
#[tokio::test(flavor = "multi_thread")]
async fn each_item_is_answered_as_its_single_call_would_be_on_pkcs11() {
    each_item_as_its_single_call(Backend::Pkcs11).await;
}

async fn each_item_as_its_single_call(backend: Backend) {
    let daemon = TestDaemon::start(backend).await;
    let good = daemon.create_key("batch good").await;
    let off = daemon.create_key("batch disabled").await;
    let forbidden = daemon.create_key("batch forbidden").await;
    daemon.disable(&off.key_id).await.expect("DisableKey");
    let unknown = "0b6c3f2e-1d4a-4b8e-9f00-000000000001";
    // Allowed on the unknown key's ARN too, so that it is told the key does not exist.
    let unknown_arn = good.arn.replace(&good.key_id, unknown);
    let user = user_allowed_on(&daemon, "batcher", &[&good.arn, &off.arn, &unknown_arn]).await;

    // Encrypt: a good item, an unknown key, a disabled key, a key the policy denies, an
    // empty plaintext; the good item again last, so that the bad ones do not stop the rest.
    let items = vec![
        encrypt_item(&good.key_id, b"first", &[("tenant", "7")]),
        encrypt_item(unknown, b"x", &[]),
        encrypt_item(&off.key_id, b"x", &[]),
        encrypt_item(&forbidden.key_id, b"x", &[]),
        encrypt_item(&good.key_id, b"", &[]),
        encrypt_item(&good.arn, b"last", &[]),
    ];
    let results = encrypt_batch(&user, items.clone())
        .await
        .expect("EncryptBatch");
    assert_eq!(results.len(), items.len());
    let expected_reasons = [
        None,
        Some(("NotFound", "NotFoundException")),
        Some(("FailedPrecondition", "KMSInvalidStateException")),
        Some(("PermissionDenied", "AccessDeniedException")),
        Some(("InvalidArgument", "ValidationException")),
        None,
    ];
    for ((result, item), expected) in results.iter().zip(&items).zip(expected_reasons) {
        let single = single_encrypt(&user, item.clone()).await;
        match expected {
            None => {
                assert!(result.error.is_none(), "{result:?}");
                let answer = result.result.as_ref().expect("a result");
                assert_eq!(answer.key_id, good.arn);
                assert!(single.is_ok(), "{single:?}");
            }
            Some((code, reason)) => {
                assert!(result.result.is_none(), "{result:?}");
                let error = result.error.clone().expect("an error");
                assert_eq!((error.code.as_str(), error.reason.as_str()), (code, reason));
                // Exactly what the single call answers the same caller.
                assert_eq!(error, as_item_error(single.expect_err("refused")));
            }
        }
    }
    let first = results[0].result.clone().expect("first").ciphertext_blob;
    let last = results[5].result.clone().expect("last").ciphertext_blob;
    assert_eq!(
        single_decrypt(&user, decrypt_item(&first, &[("tenant", "7")]))
            .await
            .unwrap(),
        b"first"
    );
    assert_eq!(
        single_decrypt(&user, decrypt_item(&last, &[]))
            .await
            .unwrap(),
        b"last"
    );

    // Decrypt: the right context, a wrong context, a missing context, a blob that is not
    // one, and a ciphertext under a key the user may not use.
    let forbidden_blob = daemon
        .encrypt(&forbidden.key_id, b"not yours", &[])
        .await
        .expect("Encrypt");
    let items = vec![
        decrypt_item(&first, &[("tenant", "7")]),
        decrypt_item(&first, &[("tenant", "8")]),
        decrypt_item(&first, &[]),
        decrypt_item(b"not a ciphertext blob", &[]),
        decrypt_item(&forbidden_blob, &[]),
        decrypt_item(&last, &[]),
    ];
    let results = decrypt_batch(&user, items.clone())
        .await
        .expect("DecryptBatch");
    let expected_reasons = [
        None,
        Some(("InvalidArgument", "InvalidCiphertextException")),
        Some(("InvalidArgument", "InvalidCiphertextException")),
        Some(("InvalidArgument", "InvalidCiphertextException")),
        Some(("PermissionDenied", "AccessDeniedException")),
        None,
    ];
    for ((result, item), expected) in results.iter().zip(&items).zip(expected_reasons) {
        let single = single_decrypt(&user, item.clone()).await;
        match expected {
            None => {
                let answer = result.result.as_ref().expect("a result");
                assert_eq!(answer.plaintext.to_vec(), single.expect("single Decrypt"));
                assert_eq!(answer.key_id, good.arn);
            }
            Some((code, reason)) => {
                assert!(result.result.is_none(), "{result:?}");
                let error = result.error.clone().expect("an error");
                assert_eq!((error.code.as_str(), error.reason.as_str()), (code, reason));
                assert_eq!(error, as_item_error(single.expect_err("refused")));
            }
        }
    }
    assert_eq!(
        results[0].result.as_ref().unwrap().plaintext.to_vec(),
        b"first"
    );
    assert_eq!(
        results[5].result.as_ref().unwrap().plaintext.to_vec(),
        b"last"
    );

    // Data keys: each one's blob decrypts to its own plaintext; a disabled key and a bad
    // size fail alone.
    let items = vec![
        v1::GenerateDataKeyRequest {
            key_id: good.key_id.clone(),
            key_spec: "AES_256".into(),
            encryption_context: pairs(&[("file", "a")]),
            ..Default::default()
        },
        v1::GenerateDataKeyRequest {
            key_id: off.key_id.clone(),
            key_spec: "AES_256".into(),
            ..Default::default()
        },
        v1::GenerateDataKeyRequest {
            key_id: good.key_id.clone(),
            number_of_bytes: Some(2000),
            ..Default::default()
        },
        v1::GenerateDataKeyRequest {
            key_id: good.key_id.clone(),
            number_of_bytes: Some(16),
            ..Default::default()
        },
    ];
    let results = user
        .kms()
        .generate_data_key_batch(user.signed(
            "GenerateDataKeyBatch",
            v1::GenerateDataKeyBatchRequest { items },
        ))
        .await
        .expect("GenerateDataKeyBatch")
        .into_inner()
        .results;
    let key_a = results[0].result.clone().expect("first data key");
    assert_eq!(key_a.plaintext.len(), 32);
    let opened = single_decrypt(
        &user,
        decrypt_item(&key_a.ciphertext_blob, &[("file", "a")]),
    );
    assert_eq!(opened.await.unwrap(), key_a.plaintext.to_vec());
    let error = results[1].error.clone().expect("disabled");
    assert_eq!(error.reason, "KMSInvalidStateException");
    let error = results[2].error.clone().expect("too many bytes");
    assert_eq!(
        (error.code.as_str(), error.reason.as_str()),
        ("InvalidArgument", "ValidationException")
    );
    let key_d = results[3].result.clone().expect("16-byte data key");
    assert_eq!(key_d.plaintext.len(), 16);
    assert_ne!(key_d.plaintext, key_a.plaintext);

    // The refusals changed nothing: the disabled key is still disabled, and no item made a
    // key or an alias.
    assert_eq!(daemon.state(&off.key_id).await, v1::KeyState::Disabled);
    assert_eq!(daemon.list_all_keys().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_outside_1_to_1000_items_is_refused_whole() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("batch limits").await;
    let items = |n: usize| vec![encrypt_item(&key.key_id, &[7u8; 32], &[]); n];

    let full = encrypt_batch(&daemon.client, items(1000))
        .await
        .expect("1,000 items");
    assert_eq!(full.len(), 1000);
    assert!(full.iter().all(|r| r.result.is_some() && r.error.is_none()));

    for (count, got) in [(1001usize, "1001"), (0, "0")] {
        let refused = encrypt_batch(&daemon.client, items(count))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(reason_of(&refused).as_deref(), Some("ValidationException"));
        assert_eq!(
            refused.message(),
            format!("ValidationException: a batch carries 1 to 1000 items; got {got}")
        );
    }
    let refused = decrypt_batch(&daemon.client, vec![decrypt_item(b"x", &[]); 1001])
        .await
        .expect_err("refused");
    assert_eq!(reason_of(&refused).as_deref(), Some("ValidationException"));

    // The refused calls ran no item: their records list none.
    let records = audit_records(&daemon);
    let batches = records_of(&records, "kms:EncryptBatch");
    assert_eq!(batches.len(), 3, "one record per call");
    let items = batches[0]["items"].as_array().expect("items");
    assert_eq!(items.len(), 1000);
    // Each item recorded as its own, though all asked the same.
    for item in items {
        assert_eq!(item["keys"], serde_json::json!([key.arn]), "{item}");
        assert_eq!(item["outcome"]["code"], "Ok", "{item}");
    }
    for refused in &batches[1..] {
        assert_eq!(refused["outcome"]["reason"], "ValidationException");
        assert!(refused.get("items").is_none(), "{refused}");
        assert!(refused.get("keys").is_none(), "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_audit_record_per_batch_lists_every_items_key_context_hmac_and_outcome() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("batch audit").await;
    let other = daemon.create_key("batch audit other").await;
    let unknown = "0b6c3f2e-1d4a-4b8e-9f00-000000000002";
    // A single Encrypt with the same context, for the HMAC its record carries.
    daemon
        .encrypt(&key.key_id, b"single", &[("tenant", "secret-tenant-7")])
        .await
        .expect("Encrypt");
    let results = encrypt_batch(
        &daemon.client,
        vec![
            encrypt_item(
                &key.key_id,
                b"batch plaintext one",
                &[("tenant", "secret-tenant-7")],
            ),
            encrypt_item(
                unknown,
                b"batch plaintext two",
                &[("tenant", "tenant-beta")],
            ),
            encrypt_item(&other.key_id, b"batch plaintext three", &[]),
        ],
    )
    .await
    .expect("EncryptBatch");
    assert!(results[1].error.is_some());

    let records = audit_records(&daemon);
    let single = records_of(&records, "kms:Encrypt");
    let batch = records_of(&records, "kms:EncryptBatch");
    assert_eq!(batch.len(), 1, "exactly one record for the batch call");
    let record = batch[0];
    assert_eq!(record["phase"], "call");
    assert_eq!(record["outcome"]["code"], "Ok");
    let items = record["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    let hmac = single[0]["encryption_context"]["tenant"]
        .as_str()
        .expect("HMAC");
    assert_eq!(hmac.len(), 64, "HMAC-SHA256 in hex: {hmac}");

    assert_eq!(items[0]["keys"], serde_json::json!([key.arn]));
    assert_eq!(items[0]["encryption_context"]["tenant"], hmac);
    assert_eq!(items[0]["outcome"]["code"], "Ok");

    let unknown_arn = key.arn.replace(&key.key_id, unknown);
    assert_eq!(items[1]["keys"], serde_json::json!([unknown_arn]));
    assert_ne!(items[1]["encryption_context"]["tenant"], hmac);
    assert_eq!(items[1]["outcome"]["code"], "NotFound");
    assert_eq!(items[1]["outcome"]["reason"], "NotFoundException");

    assert_eq!(items[2]["keys"], serde_json::json!([other.arn]));
    assert!(items[2].get("encryption_context").is_none());
    assert_eq!(items[2]["outcome"]["code"], "Ok");
    // The call's keys are every item's; values and plaintexts never reach the log.
    assert_eq!(
        record["keys"],
        serde_json::json!([key.arn, unknown_arn, other.arn])
    );
    let log = std::fs::read_to_string(&daemon.config.audit_log).expect("audit log");
    for secret in ["secret-tenant-7", "batch plaintext", "tenant-beta"] {
        assert!(!log.contains(secret), "{secret} in the audit log");
    }
}

/// Items that ask what an earlier item of the call asked (the same key and context) are each
/// answered, sealed or opened, and recorded as their own, in all three batch calls; the grant
/// that allowed a batch's items is named in the call's record; an item the grant's constraint
/// does not cover is refused each time it appears.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_items_are_each_recorded_and_the_grant_that_allowed_them_is_named() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("batch repeated").await;
    let bob = daemon.create_user("bob", None).await;
    let grant = daemon
        .client
        .kms()
        .create_grant(daemon.client.signed(
            "CreateGrant",
            v1::CreateGrantRequest {
                key_id: key.key_id.clone(),
                grantee_principal: format!("arn:keyhaven:iam::{}:user/bob", daemon.account_id),
                operations: vec!["Encrypt".into(), "Decrypt".into(), "GenerateDataKey".into()],
                constraints: Some(v1::GrantConstraints {
                    encryption_context_equals: pairs(&[("tenant", "a")]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("CreateGrant")
        .into_inner()
        .grant_id;
    let a = [("tenant", "a")];
    let b = [("tenant", "b")];
    let plaintexts: [&[u8]; 6] = [b"one", b"two", b"three", b"four", b"five", b"six"];
    let contexts = [&a, &a, &b, &a, &b, &a];
    let items: Vec<_> = plaintexts
        .iter()
        .zip(contexts)
        .map(|(plaintext, context)| encrypt_item(&key.key_id, plaintext, context))
        .collect();
    let results = encrypt_batch(&bob, items).await.expect("EncryptBatch");
    let mut blobs = Vec::new();
    for (index, result) in results.iter().enumerate() {
        if contexts[index] == &b {
            let error = result
                .error
                .clone()
                .expect("outside the grant's constraint");
            assert_eq!(error.reason, "AccessDeniedException", "item {index}");
            assert!(result.result.is_none());
        } else {
            let answer = result.result.clone().expect("allowed by the grant");
            assert_eq!(answer.key_id, key.arn);
            blobs.push((index, answer.ciphertext_blob));
        }
    }
    assert_eq!(blobs.len(), 4);
    // DecryptBatch: each blob with its context, the first again with a context the grant does
    // not cover, and again with its own.
    let mut items: Vec<_> = blobs
        .iter()
        .map(|(_, blob)| decrypt_item(blob, &a))
        .collect();
    items.push(decrypt_item(&blobs[0].1, &b));
    items.push(decrypt_item(&blobs[0].1, &a));
    let opened = decrypt_batch(&bob, items).await.expect("DecryptBatch");
    assert_eq!(opened.len(), 6);
    for (position, (index, _)) in blobs.iter().enumerate() {
        let answer = opened[position].result.clone().expect("decrypted");
        assert_eq!(
            answer.plaintext.to_vec(),
            plaintexts[*index],
            "item {index}"
        );
        assert_eq!(answer.key_id, key.arn);
    }
    let error = opened[4]
        .error
        .clone()
        .expect("outside the grant's constraint");
    assert_eq!(error.reason, "AccessDeniedException");
    let again = opened[5].result.clone().expect("decrypted again");
    assert_eq!(again.plaintext.to_vec(), plaintexts[blobs[0].0]);
    // Each item sealed on its own: no two ciphertexts alike.
    for (i, (_, one)) in blobs.iter().enumerate() {
        assert!(blobs[i + 1..].iter().all(|(_, other)| other != one));
    }

    let data_keys = bob
        .kms()
        .generate_data_key_batch(bob.signed(
            "GenerateDataKeyBatch",
            v1::GenerateDataKeyBatchRequest {
                items: vec![
                    v1::GenerateDataKeyRequest {
                        key_id: key.key_id.clone(),
                        key_spec: "AES_256".into(),
                        encryption_context: pairs(&a),
                        ..Default::default()
                    };
                    2
                ],
            },
        ))
        .await
        .expect("GenerateDataKeyBatch")
        .into_inner()
        .results;
    let data_keys: Vec<_> = data_keys
        .into_iter()
        .map(|r| r.result.expect("a data key"))
        .collect();
    assert_ne!(data_keys[0].plaintext, data_keys[1].plaintext);
    for data_key in &data_keys {
        let opened = single_decrypt(&daemon.client, decrypt_item(&data_key.ciphertext_blob, &a));
        assert_eq!(opened.await.expect("Decrypt"), data_key.plaintext.to_vec());
    }

    let records = audit_records(&daemon);
    let batch = records_of(&records, "kms:EncryptBatch");
    assert_eq!(batch.len(), 1);
    let record = batch[0];
    assert_eq!(record["grants"], serde_json::json!([grant]));
    let items = record["items"].as_array().expect("items");
    assert_eq!(items.len(), 6);
    let hmac_of = |index: usize| items[index]["encryption_context"]["tenant"].clone();
    assert!(hmac_of(0).is_string(), "{}", items[0]);
    assert_ne!(hmac_of(0), hmac_of(2));
    for (index, item) in items.iter().enumerate() {
        assert_eq!(item["keys"], serde_json::json!([key.arn]), "item {index}");
        let (hmac, code) = if contexts[index] == &a {
            (hmac_of(0), "Ok")
        } else {
            (hmac_of(2), "PermissionDenied")
        };
        assert_eq!(item["encryption_context"]["tenant"], hmac, "item {index}");
        assert_eq!(item["outcome"]["code"], code, "item {index}");
    }
    let batch = records_of(&records, "kms:DecryptBatch");
    assert_eq!(batch[0]["grants"], serde_json::json!([grant]));
    let items = batch[0]["items"].as_array().expect("items");
    let codes: Vec<_> = items.iter().map(|i| i["outcome"]["code"].clone()).collect();
    assert_eq!(
        codes,
        ["Ok", "Ok", "Ok", "Ok", "PermissionDenied", "Ok"].map(serde_json::Value::from)
    );
    for (index, item) in items.iter().enumerate() {
        assert_eq!(item["keys"], serde_json::json!([key.arn]), "item {index}");
        let hmac = if index == 4 { hmac_of(2) } else { hmac_of(0) };
        assert_eq!(item["encryption_context"]["tenant"], hmac, "item {index}");
    }
    let batch = records_of(&records, "kms:GenerateDataKeyBatch");
    assert_eq!(batch[0]["grants"], serde_json::json!([grant]));
    let generated = batch[0]["items"].as_array().expect("items");
    assert_eq!(generated.len(), 2);
    for item in generated {
        assert_eq!(item["keys"], serde_json::json!([key.arn]));
        assert_eq!(item["encryption_context"]["tenant"], hmac_of(0));
        assert_eq!(item["outcome"]["code"], "Ok");
    }
}

/// A Decrypt item naming a key beside its ciphertext is recorded with both keys, and a later
/// item under the named key with that key alone; a batch whose items stop repeating and then
/// repeat again answers and records every item as its own.
#[tokio::test(flavor = "multi_thread")]
async fn items_record_only_their_own_keys_however_the_batch_repeats() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let first = daemon.create_key("batch first").await;
    let second = daemon.create_key("batch second").await;
    let a = [("tenant", "a")];
    let under_first = daemon
        .encrypt(&first.key_id, b"one", &a)
        .await
        .expect("Encrypt");
    let under_second = daemon
        .encrypt(&second.key_id, b"two", &a)
        .await
        .expect("Encrypt");
    let named = |blob: &[u8], key: &str| v1::DecryptRequest {
        key_id: key.into(),
        ..decrypt_item(blob, &a)
    };
    let results = decrypt_batch(
        &daemon.client,
        vec![
            named(&under_first, &second.key_id),
            named(&under_second, ""),
            named(&under_second, &second.key_id),
        ],
    )
    .await
    .expect("DecryptBatch");
    let error = results[0].error.clone().expect("the wrong key named");
    assert_eq!(error.reason, "IncorrectKeyException");
    for result in &results[1..] {
        let answer = result.result.clone().expect("decrypted");
        assert_eq!(answer.plaintext.to_vec(), b"two");
        assert_eq!(answer.key_id, second.arn);
    }
    let records = audit_records(&daemon);
    let record = records_of(&records, "kms:DecryptBatch")[0];
    let keys: Vec<_> = record["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["keys"].clone())
        .collect();
    assert_eq!(
        keys,
        [
            serde_json::json!([first.arn, second.arn]),
            serde_json::json!([second.arn]),
            serde_json::json!([second.arn]),
        ]
    );

    // Forty items each with a context of its own, then the first item's context again.
    let contexts: Vec<String> = (0..40).chain([0; 5]).map(|i| i.to_string()).collect();
    let items = contexts
        .iter()
        .map(|n| encrypt_item(&first.key_id, n.as_bytes(), &[("item", n)]))
        .collect();
    let results = encrypt_batch(&daemon.client, items)
        .await
        .expect("EncryptBatch");
    for (result, n) in results.iter().zip(&contexts) {
        let blob = result.result.clone().expect("encrypted").ciphertext_blob;
        let opened = single_decrypt(&daemon.client, decrypt_item(&blob, &[("item", n)]));
        assert_eq!(opened.await.expect("Decrypt"), n.as_bytes());
    }
    let records = audit_records(&daemon);
    let items = records_of(&records, "kms:EncryptBatch")[0]["items"]
        .as_array()
        .expect("items")
        .clone();
    assert_eq!(items.len(), 45);
    for (index, item) in items.iter().enumerate() {
        assert_eq!(item["keys"], serde_json::json!([first.arn]), "item {index}");
        let same = if index >= 40 { 0 } else { index };
        assert_eq!(
            item["encryption_context"]["item"], items[same]["encryption_context"]["item"],
            "item {index}"
        );
        if index > 0 && index < 40 {
            assert_ne!(
                item["encryption_context"]["item"],
                items[0]["encryption_context"]["item"]
            );
        }
    }
}

/// `keyhaven encrypt-batch` and `decrypt-batch`: JSON lines in the AWS shapes in, one answer
/// line per item out, in order; a failed item is printed as its error and fails the command.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reads_json_lines_and_prints_one_answer_per_item() {
    let daemon = TestDaemon::start(Backend::Sealed).await;
    let key = daemon.create_key("batch cli").await;
    let unknown = "0b6c3f2e-1d4a-4b8e-9f00-000000000003";
    let input = format!(
        "{{\"KeyId\":\"{}\",\"Plaintext\":\"aGVsbG8=\",\"EncryptionContext\":{{\"k\":\"v\"}}}}\n\
         {{\"KeyId\":\"{unknown}\",\"Plaintext\":\"eA==\"}}\n\
         {{\"KeyId\":\"{}\",\"Plaintext\":\"d29ybGQ=\"}}\n",
        key.key_id, key.arn
    );
    let d = &daemon;
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        run_cli(d, &["encrypt-batch", "--batch-size", "2"], input.as_bytes())
    });
    assert!(!ok, "one item failed, so the command fails: {stdout}");
    assert!(stderr.contains("1 of 3 items failed"), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["KeyId"], key.arn);
    assert_eq!(lines[1]["Error"]["Reason"], "NotFoundException");
    assert_eq!(lines[1]["Error"]["Code"], "NotFound");
    assert_eq!(lines[2]["KeyId"], key.arn);

    let decrypt_input = format!(
        "{{\"CiphertextBlob\":{},\"EncryptionContext\":{{\"k\":\"v\"}}}}\n{{\"CiphertextBlob\":{}}}\n",
        lines[0]["CiphertextBlob"], lines[2]["CiphertextBlob"]
    );
    let (ok, stdout, stderr) =
        tokio::task::block_in_place(|| run_cli(d, &["decrypt-batch"], decrypt_input.as_bytes()));
    assert!(ok, "{stderr}");
    let plaintexts: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON")["Plaintext"]
                .as_str()
                .expect("Plaintext")
                .to_owned()
        })
        .collect();
    assert_eq!(plaintexts, ["aGVsbG8=", "d29ybGQ="]);

    // A line that does not parse sends nothing.
    let (ok, stdout, stderr) =
        tokio::task::block_in_place(|| run_cli(d, &["encrypt-batch"], b"{\"KeyId\": 7}\n"));
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("line 1"), "{stderr}");
    let batches = records_of(&audit_records(&daemon), "kms:EncryptBatch").len();
    assert_eq!(
        batches, 2,
        "the --batch-size 2 run made two calls; the bad input none"
    );
}

/// Runs the `keyhaven` binary as the daemon's root with `stdin`: success, stdout, stderr.
fn run_cli(d: &TestDaemon, args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyhaven"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYHAVEN_") {
            command.env_remove(&name);
        }
    }
    let mut child = command
        .args(args)
        .env("KEYHAVEN_ENDPOINT", d.endpoint())
        .env("KEYHAVEN_ACCESS_KEY_ID", &d.credentials.access_key_id)
        .env(
            "KEYHAVEN_SECRET_ACCESS_KEY",
            d.credentials.secret_access_key.expose(),
        )
        .env("KEYHAVEN_REGION", &d.credentials.region)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyhaven");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let output = child.wait_with_output().expect("keyhaven finishes");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The version and nonce a blob names (its header, as `CiphertextBlob::parse` reads it).
fn version_and_nonce(blob: &[u8]) -> (u32, [u8; 12]) {
    let parsed = keyhaven::crypto::CiphertextBlob::parse(blob).expect("a ciphertext blob");
    (parsed.key_version, parsed.nonce)
}

/// A PKCS#11 batch is sealed by the device in one pass, yet each item takes its own count of
/// its version's nonce limit (reserved on disk before the answer, so a restart does not hand
/// the counts out again): with a limit of 5, the versions rotate inside the batch, no version
/// seals more than 5 items across batches, single calls and a restart, no nonce repeats, and
/// every ciphertext opens with a single Decrypt.
#[tokio::test(flavor = "multi_thread")]
async fn a_pkcs11_batch_opens_with_single_decrypts_and_never_reuses_a_nonce() {
    let mut daemon = TestDaemon::start_with(Backend::Pkcs11, |c| {
        c.nonce_limit = 5;
        c.nonce_reservation_block = 2;
    })
    .await;
    let key = daemon.create_key("pkcs11 batch nonces").await;
    let context = [("tenant", "7")];
    let mut sealed: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..2u8 {
        let plaintext = vec![b's', i];
        let blob = daemon
            .encrypt(&key.key_id, &plaintext, &context)
            .await
            .expect("Encrypt");
        sealed.push((blob, plaintext));
    }
    let batch = |first: u8, count: u8| {
        (first..first + count)
            .map(|i| encrypt_item(&key.key_id, &[b'b', i], &context))
            .collect::<Vec<_>>()
    };
    let take = |sealed: &mut Vec<(Vec<u8>, Vec<u8>)>,
                results: Vec<v1::EncryptBatchResult>,
                items: Vec<v1::EncryptRequest>| {
        for (result, item) in results.into_iter().zip(items) {
            let answer = result.result.expect("every item sealed");
            assert_eq!(answer.key_id, key.arn);
            sealed.push((answer.ciphertext_blob, item.plaintext));
        }
    };
    let items = batch(0, 12);
    take(
        &mut sealed,
        encrypt_batch(&daemon.client, items.clone())
            .await
            .expect("EncryptBatch"),
        items,
    );
    for i in 2..4u8 {
        let plaintext = vec![b's', i];
        let blob = daemon
            .encrypt(&key.key_id, &plaintext, &context)
            .await
            .expect("Encrypt");
        sealed.push((blob, plaintext));
    }
    daemon.restart().await;
    let items = batch(12, 9);
    take(
        &mut sealed,
        encrypt_batch(&daemon.client, items.clone())
            .await
            .expect("EncryptBatch after a restart"),
        items,
    );

    let versions: Vec<u32> = sealed.iter().map(|(b, _)| version_and_nonce(b).0).collect();
    // Two singles and three batch items on version 1; then five items a version, the batch
    // rotating twice inside itself.
    assert_eq!(
        &versions[..16],
        &[1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4]
    );
    assert!(
        versions.windows(2).all(|w| w[0] <= w[1]),
        "versions only move forward: {versions:?}"
    );
    for version in 1..=*versions.last().expect("versions") {
        let uses = versions.iter().filter(|v| **v == version).count();
        assert!(
            uses <= 5,
            "version {version} sealed {uses} items: {versions:?}"
        );
    }
    let nonces: std::collections::HashSet<[u8; 12]> =
        sealed.iter().map(|(b, _)| version_and_nonce(b).1).collect();
    assert_eq!(nonces.len(), sealed.len(), "a nonce was used twice");
    for (blob, plaintext) in &sealed {
        assert_eq!(
            &daemon
                .decrypt(blob, &context)
                .await
                .expect("single Decrypt"),
            plaintext
        );
        // The context is bound: without it the blob does not open.
        assert_eq!(
            daemon
                .decrypt(blob, &[])
                .await
                .expect_err("no context")
                .code(),
            Code::InvalidArgument
        );
    }
}

/// A batch mixing keys of the PKCS#11 keystore and of the sealed store: each keystore seals
/// its own items, every item is answered in its position under its own key, a bad item in
/// between fails only itself, one audit record lists them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_mixing_keys_of_both_keystores_answers_every_item_in_place() {
    let daemon = TestDaemon::start(Backend::Pkcs11).await;
    let device = daemon.create_key("batch on the device").await;
    let request = v1::CreateKeyRequest {
        description: "batch on the sealed store".into(),
        keystore: "sealed".into(),
        ..Default::default()
    };
    let sealed = daemon
        .client
        .kms()
        .create_key(daemon.client.signed("CreateKey", request))
        .await
        .expect("CreateKey on the sealed store")
        .into_inner()
        .key_metadata
        .expect("metadata");
    assert_eq!(device.keystore, "pkcs11:default");
    assert_eq!(sealed.keystore, "sealed");
    let unknown = "0b6c3f2e-1d4a-4b8e-9f00-000000000003";
    let items = vec![
        encrypt_item(&device.key_id, b"device one", &[("k", "1")]),
        encrypt_item(&sealed.key_id, b"sealed one", &[("k", "2")]),
        encrypt_item(unknown, b"nowhere", &[]),
        encrypt_item(&device.arn, b"device two", &[]),
        encrypt_item(&sealed.arn, b"sealed two", &[("k", "3")]),
        encrypt_item(&device.key_id, b"", &[]),
    ];
    let contexts: [&[(&str, &str)]; 6] =
        [&[("k", "1")], &[("k", "2")], &[], &[], &[("k", "3")], &[]];
    let results = encrypt_batch(&daemon.client, items.clone())
        .await
        .expect("EncryptBatch");
    assert_eq!(results.len(), items.len());
    let owners = [
        Some(&device),
        Some(&sealed),
        None,
        Some(&device),
        Some(&sealed),
        None,
    ];
    for (((result, item), owner), context) in results.iter().zip(&items).zip(owners).zip(contexts) {
        match owner {
            Some(owner) => {
                let answer = result.result.as_ref().expect("sealed");
                assert_eq!(answer.key_id, owner.arn);
                let blob = &answer.ciphertext_blob;
                assert_eq!(
                    keyhaven::crypto::CiphertextBlob::parse(blob)
                        .unwrap()
                        .key_id
                        .to_string(),
                    owner.key_id
                );
                assert_eq!(
                    daemon.decrypt(blob, context).await.expect("single Decrypt"),
                    item.plaintext
                );
            }
            None => {
                let error = result.error.clone().expect("refused");
                let single = single_encrypt(&daemon.client, item.clone()).await;
                assert_eq!(error, as_item_error(single.expect_err("refused")));
            }
        }
    }
    assert_eq!(
        results[2].error.as_ref().map(|e| e.reason.as_str()),
        Some("NotFoundException")
    );
    assert_eq!(
        results[5].error.as_ref().map(|e| e.reason.as_str()),
        Some("ValidationException")
    );

    // GenerateDataKeyBatch over both keystores: each data key opens from its blob with a
    // single Decrypt under the key that sealed it.
    let items = [
        (&device, "AES_256"),
        (&sealed, "AES_128"),
        (&device, "AES_512"),
    ]
    .into_iter()
    .map(|(key, spec)| v1::GenerateDataKeyRequest {
        key_id: key.key_id.clone(),
        key_spec: spec.into(),
        ..Default::default()
    })
    .collect();
    let data_keys = daemon
        .client
        .kms()
        .generate_data_key_batch(daemon.client.signed(
            "GenerateDataKeyBatch",
            v1::GenerateDataKeyBatchRequest { items },
        ))
        .await
        .expect("GenerateDataKeyBatch")
        .into_inner()
        .results;
    for (result, (owner, len)) in data_keys.iter().take(2).zip([(&device, 32), (&sealed, 16)]) {
        let answer = result.result.as_ref().expect("a data key");
        assert_eq!(answer.key_id, owner.arn);
        assert_eq!(answer.plaintext.len(), len);
        assert_eq!(
            daemon
                .decrypt(&answer.ciphertext_blob, &[])
                .await
                .expect("single Decrypt"),
            answer.plaintext
        );
    }
    assert_eq!(
        data_keys[2].error.as_ref().map(|e| e.reason.as_str()),
        Some("ValidationException")
    );

    let records = audit_records(&daemon);
    let batch = records_of(&records, "kms:EncryptBatch");
    assert_eq!(batch.len(), 1);
    let outcomes: Vec<&str> = batch[0]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["outcome"]["code"].as_str().expect("code"))
        .collect();
    assert_eq!(
        outcomes,
        ["Ok", "Ok", "NotFound", "Ok", "Ok", "InvalidArgument"]
    );
    let log = std::fs::read_to_string(&daemon.config.audit_log).expect("audit log");
    assert!(!log.contains("device one") && !log.contains("sealed two"));
}
