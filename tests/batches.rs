//! Batches end to end: EncryptBatch, DecryptBatch and GenerateDataKeyBatch against a real
//! daemon. Each item is judged as its single call would be (the same error, code and message
//! as that call gives the same caller), one bad item fails only itself, a batch outside 1 to
//! 1,000 items is refused whole, and each call leaves one audit record listing every item
//! (what the records say: `batch_audit.rs`).

mod common;

use common::batches::{
    audit_records, decrypt_batch, decrypt_item, encrypt_batch, encrypt_item, records_of,
    single_decrypt, single_encrypt,
};
use common::{Backend, TestDaemon, pairs};
use keyhaven::api::reason_of;
use keyhaven::client::Client;
use keyhaven::proto::v1;
use tonic::Code;

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
