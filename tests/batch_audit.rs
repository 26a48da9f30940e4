//! Batches in the audit log: one record per call listing every item's keys, encryption-context
//! HMACs and outcome, and the grants that allowed them; items that repeat an earlier item of
//! the call, and items that do not, each recorded as their own.

mod common;

use common::batches::{
    audit_records, decrypt_batch, decrypt_item, encrypt_batch, encrypt_item, records_of,
    single_decrypt,
};
use common::{Backend, TestDaemon, pairs};
use keyhaven::proto::v1;

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
        let hmac = &item["encryption_context"]["item"];
        assert!(hmac.is_string(), "item {index}: {item}");
        // The repeats carry the first item's context HMAC; the forty before them each their own.
        let first_hmac = &items[0]["encryption_context"]["item"];
        match index {
            0 => {}
            1..40 => assert_ne!(hmac, first_hmac, "item {index}"),
            _ => assert_eq!(hmac, first_hmac, "item {index}"),
        }
    }
}
