//! The behavioural end-to-end suite: a real daemon on 127.0.0.1:0 with a real sled directory
//! (or, for `etcd`, a real etcd of the test's own), driven over gRPC with signed requests. One
//! suite, instantiated once per keystore and once with the metadata on etcd (feature `etcd`).

mod common;

macro_rules! conformance_suite {
    ([$($(#[$attr:meta])* $name:ident => $backend:expr),* $(,)?], $tests:tt) => {
        $(conformance_suite!(@backend $(#[$attr])* $name, $backend, $tests);)*
    };
    (@backend $(#[$attr:meta])* $name:ident, $backend:expr, [$($test:ident),* $(,)?]) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::common::Backend;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::suite::$test($backend).await;
                }
            )*
        }
    };
}

conformance_suite!(
    [
        sealed => Backend::Sealed,
        pkcs11 => Backend::Pkcs11,
        // NSS's softoken: the same behaviour on a second PKCS#11 implementation.
        pkcs11_second => Backend::Pkcs11Second,
        // Built with the `etcd` feature only (its build needs protoc): `make test` has it.
        #[cfg(feature = "etcd")]
        etcd => Backend::SealedOnEtcd,
    ],
    [
        create_describe_and_list,
        every_key_form_names_the_key,
        allowed_transitions_follow_the_state_machine,
        refused_transitions_change_nothing,
        pending_window_must_be_7_to_30_days,
        only_enabled_keys_do_cryptography,
        encrypt_decrypt_round_trip_with_context,
        ciphertext_blob_is_the_spec_format,
        decrypt_failures_are_uniform,
        plaintext_size_limits,
        re_encrypt_moves_between_keys,
        generate_data_key_variants,
        generate_random_bounds,
        aliases_lifecycle,
        tags_lifecycle,
        update_description,
        rotation_on_demand_keeps_old_versions,
        automatic_rotation_when_due,
        nonce_limit_forces_rotation,
        nonce_counts_never_go_back_across_restarts,
        key_quota_is_enforced,
        scheduled_deletion_destroys_and_leaves_a_tombstone,
        deletion_due_while_down_happens_at_start_up,
        restart_keeps_keys_states_and_ciphertexts,
        concurrent_creates_are_all_durable,
        authentication_refusals,
        a_change_replayed_after_a_restart_is_refused,
        a_store_in_the_earlier_digest_format_opens_and_moves_on,
        key_records_written_as_json_are_served_and_move_to_binary,
        oversized_request_is_refused,
        health_and_reflection_are_served,
    ]
);

mod suite {
    use super::common::*;
    use keyhaven::clock::Clock;
    use keyhaven::proto::v1;
    use tonic::Code;
    use v1::KeyState;

    fn kms(
        d: &TestDaemon,
    ) -> v1::key_management_service_client::KeyManagementServiceClient<tonic::transport::Channel>
    {
        d.client.kms()
    }

    pub async fn create_describe_and_list(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let request = v1::CreateKeyRequest {
            description: "payments".into(),
            tags: vec![v1::Tag {
                tag_key: "team".into(),
                tag_value: "infra".into(),
            }],
            ..Default::default()
        };
        let created = kms(&d)
            .create_key(d.client.signed("CreateKey", request))
            .await
            .unwrap()
            .into_inner()
            .key_metadata
            .unwrap();
        assert_eq!(created.key_state(), KeyState::Enabled);
        assert!(created.enabled);
        assert_eq!(created.description, "payments");
        assert_eq!(created.keystore, backend.keystore_name());
        assert_eq!(created.current_key_version, 1);
        assert_eq!(created.aws_account_id, d.account_id);
        assert_eq!(
            created.arn,
            format!(
                "arn:keyhaven:kms:local:{}:key/{}",
                d.account_id, created.key_id
            )
        );
        assert!((created.creation_date - d.now()).abs() < 60);
        let described = d.describe(&created.key_id).await.unwrap();
        assert_eq!(described, created);

        let mut ids = vec![created.key_id.clone()];
        for i in 0..4 {
            ids.push(d.create_key(&format!("k{i}")).await.key_id);
        }
        ids.sort();
        // Pages of two, in id order, with markers.
        let mut listed = Vec::new();
        let mut marker = String::new();
        let mut pages = 0;
        loop {
            let request = v1::ListKeysRequest {
                limit: 2,
                marker: marker.clone(),
            };
            let page = kms(&d)
                .list_keys(d.client.signed("ListKeys", request))
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(page.keys.len() <= 2);
            for key in &page.keys {
                assert_eq!(key.key_arn, d.describe(&key.key_id).await.unwrap().arn);
            }
            listed.extend(page.keys.into_iter().map(|k| k.key_id));
            if !page.truncated {
                assert!(page.next_marker.is_empty());
                break;
            }
            marker = page.next_marker;
        }
        assert_eq!(listed, ids);
        assert_eq!(pages, 3);

        for (limit, marker) in [(1001, ""), (1, "not-a-marker")] {
            let request = v1::ListKeysRequest {
                limit,
                marker: marker.into(),
            };
            assert_refused(
                kms(&d)
                    .list_keys(d.client.signed("ListKeys", request))
                    .await,
                Code::InvalidArgument,
                "ValidationException",
            );
        }
    }

    pub async fn every_key_form_names_the_key(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("forms").await;
        d.create_alias("alias/forms", &key.key_id).await.unwrap();
        let alias_arn = format!("arn:keyhaven:kms:local:{}:alias/forms", d.account_id);
        for form in [
            key.key_id.clone(),
            key.key_id.to_uppercase(),
            key.arn.clone(),
            "alias/forms".into(),
            alias_arn,
        ] {
            assert_eq!(
                d.describe(&form).await.unwrap().key_id,
                key.key_id,
                "{form}"
            );
            let blob = d.encrypt(&form, b"x", &[]).await.unwrap();
            assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"x");
        }
        let foreign_account = key.arn.replace(&d.account_id, "999999999999");
        let foreign_partition = key.arn.replace("arn:keyhaven:", "arn:aws:");
        for form in [
            foreign_account.as_str(),
            &foreign_partition,
            "alias/missing",
            "00000000-0000-0000-0000-000000000000",
            "garbage",
        ] {
            assert_refused(d.describe(form).await, Code::NotFound, "NotFoundException");
        }
        assert_refused(
            d.describe("").await,
            Code::InvalidArgument,
            "ValidationException",
        );
    }

    pub async fn allowed_transitions_follow_the_state_machine(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("machine").await.key_id;
        d.disable(&key).await.unwrap();
        assert_eq!(d.state(&key).await, KeyState::Disabled);
        d.disable(&key).await.unwrap();
        assert_eq!(d.state(&key).await, KeyState::Disabled);
        d.enable(&key).await.unwrap();
        assert_eq!(d.state(&key).await, KeyState::Enabled);
        d.enable(&key).await.unwrap();
        let scheduled = d.schedule_deletion(&key, None).await.unwrap();
        assert_eq!(scheduled.key_state(), KeyState::PendingDeletion);
        assert_eq!(scheduled.pending_window_in_days, 30);
        assert!((scheduled.deletion_date - (d.now() + 30 * DAY)).abs() < 60);
        let described = d.describe(&key).await.unwrap();
        assert_eq!(described.key_state(), KeyState::PendingDeletion);
        assert_eq!(described.deletion_date, Some(scheduled.deletion_date));
        assert!(!described.enabled);
        d.cancel_deletion(&key).await.unwrap();
        let described = d.describe(&key).await.unwrap();
        assert_eq!(described.key_state(), KeyState::Disabled);
        assert_eq!(described.deletion_date, None);
        // Disabled → PendingDeletion is allowed too.
        d.schedule_deletion(&key, Some(7)).await.unwrap();
        assert_eq!(d.state(&key).await, KeyState::PendingDeletion);
    }

    pub async fn refused_transitions_change_nothing(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let enabled = d.create_key("enabled").await.key_id;
        let pending = d.create_key("pending").await.key_id;
        d.schedule_deletion(&pending, Some(10)).await.unwrap();
        let before = d.describe(&pending).await.unwrap();

        assert_refused(
            d.cancel_deletion(&enabled).await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        assert_eq!(d.state(&enabled).await, KeyState::Enabled);
        for result in [
            d.enable(&pending).await,
            d.disable(&pending).await,
            d.schedule_deletion(&pending, Some(7)).await.map(|_| ()),
            d.rotate(&pending).await.map(|_| ()),
        ] {
            assert_refused(result, Code::FailedPrecondition, "KMSInvalidStateException");
        }
        assert_eq!(d.describe(&pending).await.unwrap(), before);
        let missing = "11111111-2222-3333-4444-555555555555";
        assert_refused(d.enable(missing).await, Code::NotFound, "NotFoundException");
        assert_refused(
            d.schedule_deletion(missing, None).await,
            Code::NotFound,
            "NotFoundException",
        );
    }

    pub async fn pending_window_must_be_7_to_30_days(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("window").await.key_id;
        for days in [0, 6, 31, 365] {
            assert_refused(
                d.schedule_deletion(&key, Some(days)).await,
                Code::InvalidArgument,
                "ValidationException",
            );
            let described = d.describe(&key).await.unwrap();
            assert_eq!(described.key_state(), KeyState::Enabled);
            assert_eq!(described.deletion_date, None);
        }
        for days in [7, 30] {
            let r = d.schedule_deletion(&key, Some(days)).await.unwrap();
            assert_eq!(r.pending_window_in_days, days);
            assert!((r.deletion_date - (d.now() + i64::from(days) * DAY)).abs() < 60);
            d.cancel_deletion(&key).await.unwrap();
        }
    }

    pub async fn only_enabled_keys_do_cryptography(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("usable").await.key_id;
        let blob = d.encrypt(&key, b"secret", &[]).await.unwrap();
        for setup in ["disable", "schedule"] {
            match setup {
                "disable" => d.disable(&key).await.unwrap(),
                _ => {
                    d.enable(&key).await.unwrap();
                    d.schedule_deletion(&key, Some(7)).await.unwrap();
                }
            }
            let state = d.state(&key).await;
            assert_refused(
                d.encrypt(&key, b"x", &[]).await,
                Code::FailedPrecondition,
                "KMSInvalidStateException",
            );
            assert_refused(
                d.decrypt(&blob, &[]).await,
                Code::FailedPrecondition,
                "KMSInvalidStateException",
            );
            let request = v1::GenerateDataKeyRequest {
                key_id: key.clone(),
                key_spec: "AES_256".into(),
                ..Default::default()
            };
            assert_refused(
                kms(&d)
                    .generate_data_key(d.client.signed("GenerateDataKey", request))
                    .await,
                Code::FailedPrecondition,
                "KMSInvalidStateException",
            );
            assert_eq!(d.state(&key).await, state);
        }
        d.cancel_deletion(&key).await.unwrap();
        d.enable(&key).await.unwrap();
        assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"secret");
    }

    pub async fn encrypt_decrypt_round_trip_with_context(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("round trip").await;
        let context = [("tenant", "acme"), ("purpose", "backup")];
        let blob = d
            .encrypt(&key.key_id, b"attack at dawn", &context)
            .await
            .unwrap();
        let request = v1::DecryptRequest {
            ciphertext_blob: blob.clone(),
            encryption_context: pairs(&[("purpose", "backup"), ("tenant", "acme")]),
            key_id: String::new(),
            ..Default::default()
        };
        let decrypted = kms(&d)
            .decrypt(d.client.signed("Decrypt", request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(decrypted.plaintext, &b"attack at dawn"[..]);
        assert_eq!(decrypted.key_id, key.arn);
        // The same plaintext twice gives different blobs (fresh nonces).
        let again = d
            .encrypt(&key.key_id, b"attack at dawn", &context)
            .await
            .unwrap();
        assert_ne!(again, blob);
        // Decrypt with the key named: the right one works, another is IncorrectKeyException.
        let other = d.create_key("other").await;
        for (named, expected) in [
            (key.key_id.as_str(), Ok(())),
            (other.key_id.as_str(), Err("IncorrectKeyException")),
        ] {
            let request = v1::DecryptRequest {
                ciphertext_blob: blob.clone(),
                encryption_context: pairs(&context),
                key_id: named.into(),
                ..Default::default()
            };
            let result = kms(&d).decrypt(d.client.signed("Decrypt", request)).await;
            match expected {
                Ok(()) => assert_eq!(
                    result.unwrap().into_inner().plaintext,
                    &b"attack at dawn"[..]
                ),
                Err(reason) => assert_refused(result, Code::InvalidArgument, reason),
            }
        }
    }

    pub async fn ciphertext_blob_is_the_spec_format(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("format").await;
        let id = uuid::Uuid::parse_str(&key.key_id).unwrap();
        let blob = d.encrypt(&key.key_id, b"0123456789", &[]).await.unwrap();
        assert_eq!(blob.len(), 1 + 16 + 4 + 12 + 10 + 16);
        assert_eq!(blob[0], 1);
        assert_eq!(&blob[1..17], id.as_bytes());
        assert_eq!(&blob[17..21], &1u32.to_be_bytes());
        d.rotate(&key.key_id).await.unwrap();
        let rotated = d.encrypt(&key.key_id, b"0123456789", &[]).await.unwrap();
        assert_eq!(&rotated[17..21], &2u32.to_be_bytes());
        assert_ne!(&rotated[21..33], &blob[21..33]);
    }

    pub async fn decrypt_failures_are_uniform(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("tamper").await.key_id;
        let context = [("ab", "c")];
        let blob = d.encrypt(&key, b"payload", &context).await.unwrap();
        let mut messages = std::collections::BTreeSet::new();
        let mut refuse = |result: Result<Vec<u8>, tonic::Status>, what: &str| {
            let status = result.expect_err(what);
            assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
            assert_eq!(
                keyhaven::api::reason_of(&status).as_deref(),
                Some("InvalidCiphertextException"),
                "{what}"
            );
            messages.insert(status.message().to_owned());
        };
        // Wrong, missing, extra and re-split context.
        refuse(d.decrypt(&blob, &[("ab", "d")]).await, "wrong context");
        refuse(d.decrypt(&blob, &[]).await, "missing context");
        refuse(
            d.decrypt(&blob, &[("ab", "c"), ("x", "y")]).await,
            "extra context",
        );
        refuse(d.decrypt(&blob, &[("a", "bc")]).await, "re-split context");
        // One flipped bit in every region: version, key id, key version, nonce, body, tag.
        for index in [
            0,
            1,
            16,
            17,
            20,
            21,
            32,
            33,
            blob.len() - 17,
            blob.len() - 1,
        ] {
            let mut tampered = blob.clone();
            tampered[index] ^= 0x01;
            refuse(
                d.decrypt(&tampered, &context).await,
                &format!("bit flip at {index}"),
            );
        }
        // Truncated and empty.
        for len in [blob.len() - 1, 49, 33, 1, 0] {
            refuse(
                d.decrypt(&blob[..len], &context).await,
                &format!("truncated to {len}"),
            );
        }
        // An unknown key and an unknown version.
        let mut unknown = blob.clone();
        unknown[1..17].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        refuse(d.decrypt(&unknown, &context).await, "unknown key");
        let mut version = blob.clone();
        version[17..21].copy_from_slice(&7u32.to_be_bytes());
        refuse(d.decrypt(&version, &context).await, "unknown version");
        assert_eq!(messages.len(), 1, "messages differ: {messages:?}");
        // The key itself is untouched and still decrypts the original.
        assert_eq!(d.state(&key).await, KeyState::Enabled);
        assert_eq!(d.decrypt(&blob, &context).await.unwrap(), b"payload");
    }

    pub async fn plaintext_size_limits(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("sizes").await.key_id;
        let max = vec![0xa5u8; 4096];
        let blob = d.encrypt(&key, &max, &[]).await.unwrap();
        assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), max);
        for size in [0, 4097] {
            assert_refused(
                d.encrypt(&key, &vec![1u8; size], &[]).await,
                Code::InvalidArgument,
                "ValidationException",
            );
        }
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_refused(
            d.encrypt(&key, b"x", &many).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(d.describe(&key).await.unwrap().current_key_version, 1);
    }

    pub async fn re_encrypt_moves_between_keys(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let source = d.create_key("source").await;
        let destination = d.create_key("destination").await;
        let blob = d
            .encrypt(&source.key_id, b"moving", &[("a", "1")])
            .await
            .unwrap();
        let request = v1::ReEncryptRequest {
            ciphertext_blob: blob.clone(),
            source_encryption_context: pairs(&[("a", "1")]),
            source_key_id: String::new(),
            destination_key_id: destination.key_id.clone(),
            destination_encryption_context: pairs(&[("b", "2")]),
        };
        let r = kms(&d)
            .re_encrypt(d.client.signed("ReEncrypt", request.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.source_key_id, source.arn);
        assert_eq!(r.key_id, destination.arn);
        assert_eq!(
            &r.ciphertext_blob[1..17],
            uuid::Uuid::parse_str(&destination.key_id)
                .unwrap()
                .as_bytes()
        );
        assert_eq!(
            d.decrypt(&r.ciphertext_blob, &[("b", "2")]).await.unwrap(),
            b"moving"
        );
        assert_refused(
            d.decrypt(&r.ciphertext_blob, &[("a", "1")]).await,
            Code::InvalidArgument,
            "InvalidCiphertextException",
        );
        // Wrong source context, or a disabled destination: refused.
        let mut wrong = request.clone();
        wrong.source_encryption_context = pairs(&[("a", "2")]);
        assert_refused(
            kms(&d)
                .re_encrypt(d.client.signed("ReEncrypt", wrong))
                .await,
            Code::InvalidArgument,
            "InvalidCiphertextException",
        );
        d.disable(&destination.key_id).await.unwrap();
        assert_refused(
            kms(&d)
                .re_encrypt(d.client.signed("ReEncrypt", request))
                .await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
    }

    pub async fn generate_data_key_variants(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("data keys").await;
        for (spec, bytes, expected) in [
            ("AES_256", None, 32),
            ("AES_128", None, 16),
            ("", Some(1), 1),
            ("", Some(1024), 1024),
        ] {
            let request = v1::GenerateDataKeyRequest {
                key_id: key.key_id.clone(),
                encryption_context: pairs(&[("file", "x")]),
                key_spec: spec.into(),
                number_of_bytes: bytes,
            };
            let r = kms(&d)
                .generate_data_key(d.client.signed("GenerateDataKey", request))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.plaintext.len(), expected);
            assert_eq!(r.key_id, key.arn);
            assert_eq!(
                d.decrypt(&r.ciphertext_blob, &[("file", "x")])
                    .await
                    .unwrap(),
                r.plaintext
            );
        }
        let request = v1::GenerateDataKeyWithoutPlaintextRequest {
            key_id: key.key_id.clone(),
            key_spec: "AES_256".into(),
            ..Default::default()
        };
        let r = kms(&d)
            .generate_data_key_without_plaintext(
                d.client.signed("GenerateDataKeyWithoutPlaintext", request),
            )
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.decrypt(&r.ciphertext_blob, &[]).await.unwrap().len(), 32);
        for (spec, bytes) in [
            ("", None),
            ("AES_512", None),
            ("AES_256", Some(32)),
            ("", Some(0)),
            ("", Some(1025)),
        ] {
            let request = v1::GenerateDataKeyRequest {
                key_id: key.key_id.clone(),
                key_spec: spec.into(),
                number_of_bytes: bytes,
                ..Default::default()
            };
            assert_refused(
                kms(&d)
                    .generate_data_key(d.client.signed("GenerateDataKey", request))
                    .await,
                Code::InvalidArgument,
                "ValidationException",
            );
        }
    }

    pub async fn generate_random_bounds(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let mut seen = std::collections::HashSet::new();
        for n in [1u32, 32, 1024] {
            let request = v1::GenerateRandomRequest { number_of_bytes: n };
            let bytes = kms(&d)
                .generate_random(d.client.signed("GenerateRandom", request))
                .await
                .unwrap()
                .into_inner()
                .plaintext;
            assert_eq!(bytes.len(), n as usize);
            assert!(seen.insert(bytes));
        }
        for n in [0u32, 1025] {
            let request = v1::GenerateRandomRequest { number_of_bytes: n };
            assert_refused(
                kms(&d)
                    .generate_random(d.client.signed("GenerateRandom", request))
                    .await,
                Code::InvalidArgument,
                "ValidationException",
            );
        }
    }

    pub async fn aliases_lifecycle(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let first = d.create_key("first").await.key_id;
        let second = d.create_key("second").await.key_id;
        d.create_alias("alias/app", &first).await.unwrap();
        assert_eq!(d.describe("alias/app").await.unwrap().key_id, first);
        assert_refused(
            d.create_alias("alias/app", &second).await,
            Code::AlreadyExists,
            "AlreadyExistsException",
        );
        assert_eq!(d.describe("alias/app").await.unwrap().key_id, first);
        for bad in [
            "app",
            "alias/",
            "alias/aws/app",
            "alias/with space",
            "alias/app",
        ] {
            let target = if bad == "alias/app" {
                "alias/app".to_string()
            } else {
                first.clone()
            };
            let result = d.create_alias(bad, &target).await;
            assert_refused(result, Code::InvalidArgument, "ValidationException");
        }
        assert_refused(
            d.create_alias("alias/ghost", "alias/missing").await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_refused(
            d.create_alias("alias/ghost", "11111111-2222-3333-4444-555555555555")
                .await,
            Code::NotFound,
            "NotFoundException",
        );
        let request = v1::UpdateAliasRequest {
            alias_name: "alias/app".into(),
            target_key_id: second.clone(),
        };
        kms(&d)
            .update_alias(d.client.signed("UpdateAlias", request))
            .await
            .unwrap();
        assert_eq!(d.describe("alias/app").await.unwrap().key_id, second);
        let blob = d.encrypt("alias/app", b"via alias", &[]).await.unwrap();
        assert_eq!(
            &blob[1..17],
            uuid::Uuid::parse_str(&second).unwrap().as_bytes()
        );
        assert!(d.list_aliases(&first).await.is_empty());
        let listed = d.list_aliases(&second).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].alias_name, "alias/app");
        assert_eq!(listed[0].target_key_id, second);
        assert_eq!(
            listed[0].alias_arn,
            format!("arn:keyhaven:kms:local:{}:alias/app", d.account_id)
        );
        let request = v1::UpdateAliasRequest {
            alias_name: "alias/none".into(),
            target_key_id: second.clone(),
        };
        assert_refused(
            kms(&d)
                .update_alias(d.client.signed("UpdateAlias", request))
                .await,
            Code::NotFound,
            "NotFoundException",
        );
        let request = v1::DeleteAliasRequest {
            alias_name: "alias/app".into(),
        };
        kms(&d)
            .delete_alias(d.client.signed("DeleteAlias", request.clone()))
            .await
            .unwrap();
        assert_refused(
            d.describe("alias/app").await,
            Code::NotFound,
            "NotFoundException",
        );
        assert_refused(
            kms(&d)
                .delete_alias(d.client.signed("DeleteAlias", request))
                .await,
            Code::NotFound,
            "NotFoundException",
        );
        // A key pending deletion takes no new alias.
        d.schedule_deletion(&first, Some(7)).await.unwrap();
        assert_refused(
            d.create_alias("alias/late", &first).await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        assert!(d.list_aliases("").await.is_empty());
    }

    pub async fn tags_lifecycle(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("tags").await.key_id;
        let tag = |k: &str, v: &str| v1::Tag {
            tag_key: k.into(),
            tag_value: v.into(),
        };
        let list = || async {
            let request = v1::ListResourceTagsRequest {
                key_id: key.clone(),
            };
            kms(&d)
                .list_resource_tags(d.client.signed("ListResourceTags", request))
                .await
                .unwrap()
                .into_inner()
                .tags
        };
        let request = v1::TagResourceRequest {
            key_id: key.clone(),
            tags: vec![tag("env", "prod"), tag("team", "a")],
        };
        kms(&d)
            .tag_resource(d.client.signed("TagResource", request))
            .await
            .unwrap();
        let request = v1::TagResourceRequest {
            key_id: key.clone(),
            tags: vec![tag("team", "b")],
        };
        kms(&d)
            .tag_resource(d.client.signed("TagResource", request))
            .await
            .unwrap();
        assert_eq!(list().await, vec![tag("env", "prod"), tag("team", "b")]);
        for bad in [
            vec![tag("", "x")],
            vec![tag(&"k".repeat(129), "x")],
            vec![tag("a", "1"), tag("a", "2")],
        ] {
            let request = v1::TagResourceRequest {
                key_id: key.clone(),
                tags: bad,
            };
            assert_refused(
                kms(&d)
                    .tag_resource(d.client.signed("TagResource", request))
                    .await,
                Code::InvalidArgument,
                "ValidationException",
            );
        }
        let request = v1::UntagResourceRequest {
            key_id: key.clone(),
            tag_keys: vec!["env".into(), "absent".into()],
        };
        kms(&d)
            .untag_resource(d.client.signed("UntagResource", request))
            .await
            .unwrap();
        assert_eq!(list().await, vec![tag("team", "b")]);
    }

    pub async fn update_description(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("old").await.key_id;
        let request = v1::UpdateKeyDescriptionRequest {
            key_id: key.clone(),
            description: "new".into(),
        };
        kms(&d)
            .update_key_description(d.client.signed("UpdateKeyDescription", request))
            .await
            .unwrap();
        assert_eq!(d.describe(&key).await.unwrap().description, "new");
        let request = v1::UpdateKeyDescriptionRequest {
            key_id: key.clone(),
            description: "x".repeat(8193),
        };
        assert_refused(
            kms(&d)
                .update_key_description(d.client.signed("UpdateKeyDescription", request))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(d.describe(&key).await.unwrap().description, "new");
    }

    pub async fn rotation_on_demand_keeps_old_versions(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("rotating").await.key_id;
        let mut blobs = vec![d.encrypt(&key, b"v1", &[]).await.unwrap()];
        for version in 2..=3u32 {
            assert_eq!(d.rotate(&key).await.unwrap(), version);
            blobs.push(
                d.encrypt(&key, format!("v{version}").as_bytes(), &[])
                    .await
                    .unwrap(),
            );
        }
        for (i, blob) in blobs.iter().enumerate() {
            assert_eq!(&blob[17..21], &(i as u32 + 1).to_be_bytes());
            assert_eq!(
                d.decrypt(blob, &[]).await.unwrap(),
                format!("v{}", i + 1).as_bytes()
            );
        }
        let request = v1::ListKeyRotationsRequest {
            key_id: key.clone(),
        };
        let rotations = kms(&d)
            .list_key_rotations(d.client.signed("ListKeyRotations", request))
            .await
            .unwrap()
            .into_inner()
            .rotations;
        let kinds: Vec<_> = rotations
            .iter()
            .map(|r| (r.key_version, r.rotation_type.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![(1, "INITIAL"), (2, "ON_DEMAND"), (3, "ON_DEMAND")]
        );
        d.disable(&key).await.unwrap();
        assert_refused(
            d.rotate(&key).await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        assert_eq!(d.describe(&key).await.unwrap().current_key_version, 3);
    }

    pub async fn automatic_rotation_when_due(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("auto").await.key_id;
        let blob = d.encrypt(&key, b"before", &[]).await.unwrap();
        for days in [89, 2561] {
            let request = v1::EnableKeyRotationRequest {
                key_id: key.clone(),
                rotation_period_in_days: Some(days),
            };
            assert_refused(
                kms(&d)
                    .enable_key_rotation(d.client.signed("EnableKeyRotation", request))
                    .await,
                Code::InvalidArgument,
                "ValidationException",
            );
        }
        let status = |d: &TestDaemon| {
            let request = v1::GetKeyRotationStatusRequest {
                key_id: key.clone(),
            };
            let mut kms = d.client.kms();
            let signed = d.client.signed("GetKeyRotationStatus", request);
            async move {
                kms.get_key_rotation_status(signed)
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        assert!(!status(&d).await.key_rotation_enabled);
        let request = v1::EnableKeyRotationRequest {
            key_id: key.clone(),
            rotation_period_in_days: Some(90),
        };
        kms(&d)
            .enable_key_rotation(d.client.signed("EnableKeyRotation", request))
            .await
            .unwrap();
        let s = status(&d).await;
        assert!(s.key_rotation_enabled);
        assert_eq!(s.rotation_period_in_days, Some(90));
        let next = s.next_rotation_date.unwrap();
        assert!((next - (d.now() + 90 * DAY)).abs() < 60);
        assert_eq!(d.run_due_tasks().await.rotated, 0);
        d.clock.advance(91 * DAY);
        assert_eq!(d.run_due_tasks().await.rotated, 1);
        let described = d.describe(&key).await.unwrap();
        assert_eq!(described.current_key_version, 2);
        assert!(status(&d).await.next_rotation_date.unwrap() > next);
        assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"before");
        let request = v1::DisableKeyRotationRequest {
            key_id: key.clone(),
        };
        kms(&d)
            .disable_key_rotation(d.client.signed("DisableKeyRotation", request))
            .await
            .unwrap();
        d.clock.advance(200 * DAY);
        assert_eq!(d.run_due_tasks().await.rotated, 0);
        assert_eq!(d.describe(&key).await.unwrap().current_key_version, 2);
    }

    pub async fn nonce_limit_forces_rotation(backend: Backend) {
        let d = TestDaemon::start_with(backend, |c| {
            c.nonce_limit = 5;
            c.nonce_reservation_block = 2;
        })
        .await;
        let key = d.create_key("limited").await.key_id;
        let mut blobs = Vec::new();
        for i in 0..12u32 {
            blobs.push(d.encrypt(&key, &i.to_be_bytes(), &[]).await.unwrap());
        }
        let versions: Vec<u32> = blobs
            .iter()
            .map(|b| u32::from_be_bytes(b[17..21].try_into().unwrap()))
            .collect();
        assert_eq!(versions, vec![1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3]);
        for (i, blob) in blobs.iter().enumerate() {
            assert_eq!(
                d.decrypt(blob, &[]).await.unwrap(),
                (i as u32).to_be_bytes()
            );
        }
        let request = v1::ListKeyRotationsRequest {
            key_id: key.clone(),
        };
        let rotations = kms(&d)
            .list_key_rotations(d.client.signed("ListKeyRotations", request))
            .await
            .unwrap()
            .into_inner()
            .rotations;
        assert_eq!(rotations.last().unwrap().rotation_type, "NONCE_LIMIT");
    }

    /// Counts never go back across restarts. After a clean stop the counts a version had
    /// reserved and not used go on where they stopped: they are kept beside a store on this
    /// machine (on etcd they are not, and are taken as used). After any other stop, found
    /// without them, every reserved count is taken as used.
    pub async fn nonce_counts_never_go_back_across_restarts(backend: Backend) {
        let mut d = TestDaemon::start_with(backend, |c| {
            c.nonce_limit = 5;
            c.nonce_reservation_block = 2;
        })
        .await;
        let key = d.create_key("counted").await.key_id;
        let versions = |blobs: &[Vec<u8>]| -> Vec<u32> {
            blobs
                .iter()
                .map(|b| u32::from_be_bytes(b[17..21].try_into().unwrap()))
                .collect()
        };
        let first = d.encrypt(&key, b"a", &[]).await.unwrap();
        assert_eq!(versions(std::slice::from_ref(&first)), vec![1]);
        d.restart().await;
        let mut after_stop = Vec::new();
        for _ in 0..5 {
            after_stop.push(d.encrypt(&key, b"b", &[]).await.unwrap());
        }
        if backend == Backend::SealedOnEtcd {
            // Version 1 had 2 counts reserved, taken as used: the limit of 5 comes after 3.
            assert_eq!(versions(&after_stop), vec![1, 1, 1, 2, 2]);
        } else {
            // One count used before the stop: the limit of 5 comes after 4 more.
            assert_eq!(versions(&after_stop), vec![1, 1, 1, 1, 2]);
        }
        // A start that finds no kept counts (as after a crash): version 2's 2 reserved counts
        // are taken as used, whatever was used of them.
        d.stop().await;
        let kept = keyhaven::server::store_dir(d.dir.path()).join("aside/key-counts");
        if kept.exists() {
            std::fs::remove_file(&kept).unwrap();
        }
        d.start_again().await;
        let mut after_crash = Vec::new();
        for _ in 0..4 {
            after_crash.push(d.encrypt(&key, b"c", &[]).await.unwrap());
        }
        assert_eq!(versions(&after_crash), vec![2, 2, 2, 3]);
        assert_eq!(d.decrypt(&first, &[]).await.unwrap(), b"a");
    }

    pub async fn key_quota_is_enforced(backend: Backend) {
        let d = TestDaemon::start_with(backend, |c| c.key_quota = 3).await;
        let mut keys = Vec::new();
        for i in 0..3 {
            keys.push(d.create_key(&format!("q{i}")).await.key_id);
        }
        let request = v1::CreateKeyRequest::default();
        assert_refused(
            kms(&d)
                .create_key(d.client.signed("CreateKey", request.clone()))
                .await,
            Code::ResourceExhausted,
            "LimitExceededException",
        );
        assert_eq!(d.list_all_keys().await.len(), 3);
        // Keys pending deletion still count; destroyed ones do not.
        d.schedule_deletion(&keys[0], Some(7)).await.unwrap();
        assert_refused(
            kms(&d)
                .create_key(d.client.signed("CreateKey", request.clone()))
                .await,
            Code::ResourceExhausted,
            "LimitExceededException",
        );
        d.clock.advance(8 * DAY);
        assert_eq!(d.run_due_tasks().await.destroyed, 1);
        kms(&d)
            .create_key(d.client.signed("CreateKey", request))
            .await
            .unwrap();
    }

    pub async fn scheduled_deletion_destroys_and_leaves_a_tombstone(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("doomed").await;
        let keep = d.create_key("kept").await.key_id;
        d.create_alias("alias/doomed", &key.key_id).await.unwrap();
        let blob = d.encrypt(&key.key_id, b"last words", &[]).await.unwrap();
        let scheduled = d.schedule_deletion(&key.key_id, Some(7)).await.unwrap();
        d.clock.advance(7 * DAY - 120);
        assert_eq!(d.run_due_tasks().await.destroyed, 0);
        assert_eq!(d.state(&key.key_id).await, KeyState::PendingDeletion);
        d.clock.advance(240);
        let report = d.run_due_tasks().await;
        assert_eq!((report.destroyed, report.failed), (1, 0));
        let tombstone = d.describe(&key.key_id).await.unwrap();
        assert_eq!(tombstone.key_state(), KeyState::Deleted);
        assert_eq!(tombstone.deletion_date, Some(scheduled.deletion_date));
        assert!(!tombstone.enabled);
        assert_refused(
            d.encrypt(&key.key_id, b"x", &[]).await,
            Code::NotFound,
            "NotFoundException",
        );
        assert_refused(
            d.enable(&key.key_id).await,
            Code::NotFound,
            "NotFoundException",
        );
        assert_refused(
            d.cancel_deletion(&key.key_id).await,
            Code::NotFound,
            "NotFoundException",
        );
        assert_refused(
            d.decrypt(&blob, &[]).await,
            Code::InvalidArgument,
            "InvalidCiphertextException",
        );
        assert_refused(
            d.describe("alias/doomed").await,
            Code::NotFound,
            "NotFoundException",
        );
        assert_eq!(d.list_all_keys().await, vec![keep.clone()]);
        assert_eq!(d.state(&keep).await, KeyState::Enabled);
        assert_eq!(d.run_due_tasks().await.destroyed, 0);
    }

    pub async fn deletion_due_while_down_happens_at_start_up(backend: Backend) {
        let mut d = TestDaemon::start(backend).await;
        let key = d.create_key("while down").await.key_id;
        let later = d.create_key("not yet").await.key_id;
        d.schedule_deletion(&key, Some(7)).await.unwrap();
        d.schedule_deletion(&later, Some(30)).await.unwrap();
        d.stop().await;
        d.clock.advance(8 * DAY);
        d.start_again().await;
        // No scheduler pass was asked for: start-up carried it out.
        assert_eq!(d.state(&key).await, KeyState::Deleted);
        assert_eq!(d.state(&later).await, KeyState::PendingDeletion);
    }

    pub async fn restart_keeps_keys_states_and_ciphertexts(backend: Backend) {
        let mut d = TestDaemon::start(backend).await;
        let enabled = d.create_key("enabled").await;
        let disabled = d.create_key("disabled").await.key_id;
        let pending = d.create_key("pending").await.key_id;
        d.create_alias("alias/kept", &enabled.key_id).await.unwrap();
        let blob = d
            .encrypt(&enabled.key_id, b"durable", &[("k", "v")])
            .await
            .unwrap();
        d.rotate(&enabled.key_id).await.unwrap();
        let rotated_blob = d.encrypt(&enabled.key_id, b"durable 2", &[]).await.unwrap();
        d.disable(&disabled).await.unwrap();
        let deletion = d
            .schedule_deletion(&pending, Some(9))
            .await
            .unwrap()
            .deletion_date;
        let used_at = d.now();
        d.restart().await;
        let described = d.describe(&enabled.key_id).await.unwrap();
        assert_eq!(described, {
            let mut expected = enabled.clone();
            expected.current_key_version = 2;
            // The last use was written to the record at shutdown.
            expected.last_used_operation = "Encrypt".into();
            expected.last_used_date = described.last_used_date;
            expected
        });
        assert!(
            described
                .last_used_date
                .is_some_and(|t| (t - used_at).abs() < 60)
        );
        assert_eq!(d.state(&disabled).await, KeyState::Disabled);
        let p = d.describe(&pending).await.unwrap();
        assert_eq!(
            (p.key_state(), p.deletion_date),
            (KeyState::PendingDeletion, Some(deletion))
        );
        assert_eq!(
            d.describe("alias/kept").await.unwrap().key_id,
            enabled.key_id
        );
        assert_eq!(d.decrypt(&blob, &[("k", "v")]).await.unwrap(), b"durable");
        assert_eq!(d.decrypt(&rotated_blob, &[]).await.unwrap(), b"durable 2");
        let mut all = d.list_all_keys().await;
        all.sort();
        let mut expected = vec![enabled.key_id, disabled, pending];
        expected.sort();
        assert_eq!(all, expected);
    }

    pub async fn concurrent_creates_are_all_durable(backend: Backend) {
        let mut d = TestDaemon::start(backend).await;
        let tasks: Vec<_> = (0..48)
            .map(|i| {
                let client = d.client.clone();
                tokio::spawn(async move {
                    let request = v1::CreateKeyRequest {
                        description: format!("c{i}"),
                        ..Default::default()
                    };
                    let key = client
                        .kms()
                        .create_key(client.signed("CreateKey", request))
                        .await?
                        .into_inner()
                        .key_metadata
                        .unwrap()
                        .key_id;
                    let request = v1::EncryptRequest {
                        key_id: key.clone(),
                        plaintext: vec![i as u8],
                        ..Default::default()
                    };
                    let blob = client
                        .kms()
                        .encrypt(client.signed("Encrypt", request))
                        .await?
                        .into_inner()
                        .ciphertext_blob;
                    Ok::<_, tonic::Status>((key, blob, i as u8))
                })
            })
            .collect();
        let mut created = Vec::new();
        for task in tasks {
            created.push(task.await.unwrap().unwrap());
        }
        d.restart().await;
        let listed: std::collections::HashSet<_> = d.list_all_keys().await.into_iter().collect();
        assert_eq!(listed.len(), 48);
        for (key, blob, byte) in created {
            assert!(listed.contains(&key));
            assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), vec![byte]);
        }
    }

    pub async fn authentication_refusals(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("guarded").await.key_id;
        let describe = v1::DescribeKeyRequest {
            key_id: key.clone(),
        };
        let unauthenticated =
            |result: Result<tonic::Response<v1::DescribeKeyResponse>, tonic::Status>,
             reason: &str,
             message: &str| {
                let status = result.expect_err(reason);
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                assert_eq!(
                    keyhaven::api::reason_of(&status).as_deref(),
                    Some(reason),
                    "{status:?}"
                );
                assert!(status.message().contains(message), "{status:?}");
                assert!(
                    !status
                        .message()
                        .contains(d.credentials.secret_access_key.expose())
                );
            };
        // Unsigned.
        unauthenticated(
            kms(&d)
                .describe_key(tonic::Request::new(describe.clone()))
                .await,
            "MissingAuthenticationTokenException",
            "not signed",
        );
        // Wrong secret, unknown access key.
        let mut wrong = d.credentials.clone();
        wrong.secret_access_key = keyhaven::secret::SecretString::new("not the secret".into());
        let client = d.client_with(wrong).await;
        unauthenticated(
            client
                .kms()
                .describe_key(client.signed("DescribeKey", describe.clone()))
                .await,
            "InvalidSignatureException",
            "does not match",
        );
        let mut unknown = d.credentials.clone();
        unknown.access_key_id = "KHAKAAAAAAAAAAAAAAAA".into();
        let client = d.client_with(unknown).await;
        unauthenticated(
            client
                .kms()
                .describe_key(client.signed("DescribeKey", describe.clone()))
                .await,
            "UnrecognizedClientException",
            "KHAKAAAAAAAAAAAAAAAA",
        );
        // Stale and future timestamps (more than 5 minutes off).
        for offset in [-301, 301] {
            let signed = d
                .client
                .signed_at("DescribeKey", describe.clone(), d.now() + offset);
            unauthenticated(
                kms(&d).describe_key(signed).await,
                "InvalidSignatureException",
                "expired",
            );
        }
        // Four minutes slow is accepted, once the daemon has run that long (signatures dated
        // before its start are refused: tests/security/process.rs).
        d.clock.advance(240);
        let signed = d
            .client
            .signed_at("DescribeKey", describe.clone(), d.now() - 240);
        kms(&d).describe_key(signed).await.unwrap();
        // Replayed: the same signed request twice.
        let first = d.client.signed("DescribeKey", describe.clone());
        let mut second = tonic::Request::new(describe.clone());
        *second.metadata_mut() = first.metadata().clone();
        kms(&d).describe_key(first).await.unwrap();
        unauthenticated(
            kms(&d).describe_key(second).await,
            "InvalidSignatureException",
            "replayed",
        );
        // A signature over another message or another method.
        let signed = d.client.signed(
            "DescribeKey",
            v1::DescribeKeyRequest {
                key_id: "other".into(),
            },
        );
        let mut swapped = tonic::Request::new(describe.clone());
        *swapped.metadata_mut() = signed.metadata().clone();
        unauthenticated(
            kms(&d).describe_key(swapped).await,
            "InvalidSignatureException",
            "does not match",
        );
        let signed = d.client.signed(
            "EnableKey",
            v1::DisableKeyRequest {
                key_id: key.clone(),
            },
        );
        let result = kms(&d).disable_key(signed).await;
        let status = result.expect_err("method swap");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(d.state(&key).await, KeyState::Enabled);
        // Nothing an unauthenticated call asked for happened.
        let create = v1::CreateKeyRequest {
            description: "sneaky".into(),
            ..Default::default()
        };
        assert_eq!(
            kms(&d)
                .create_key(tonic::Request::new(create))
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
        assert_eq!(d.list_all_keys().await, vec![key.clone()]);
        // The server's clock, not the client's, decides staleness.
        d.clock.advance(600);
        let system_time = keyhaven::clock::SystemClock.now();
        let signed = d
            .client
            .signed_at("DescribeKey", describe.clone(), system_time);
        unauthenticated(
            kms(&d).describe_key(signed).await,
            "InvalidSignatureException",
            "expired",
        );
    }

    /// A captured DisableKey cannot be sent again once the daemon has restarted: on a shared
    /// store its signature is stored (until it would be stale anyway) and the refusal names the
    /// replay; on a store one daemon writes, the restarted daemon accepts only signatures dated
    /// after every change the earlier run took, and refuses it on its date.
    pub async fn a_change_replayed_after_a_restart_is_refused(backend: Backend) {
        let shared = backend == Backend::SealedOnEtcd;
        let mut d = TestDaemon::start(backend).await;
        let key = d.create_key("replayed").await.key_id;
        let disable = v1::DisableKeyRequest {
            key_id: key.clone(),
        };
        let first = d.client.signed("DisableKey", disable.clone());
        let first_metadata = first.metadata().clone();
        let mut replayed = tonic::Request::new(disable.clone());
        *replayed.metadata_mut() = first_metadata.clone();
        kms(&d).disable_key(first).await.unwrap();
        // A copy whose signature was altered is refused on its signature, not as a replay.
        let mut forged = tonic::Request::new(disable.clone());
        *forged.metadata_mut() = first_metadata.clone();
        let authorization = forged
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .expect("the request is signed")
            .to_owned();
        // The signature's first hex digit changed (the replay cache keeps a prefix).
        let at = authorization.rfind("Signature=").expect("a signature") + "Signature=".len();
        let flipped = if authorization[at..].starts_with('0') {
            '1'
        } else {
            '0'
        };
        let forged_value = format!(
            "{}{flipped}{}",
            &authorization[..at],
            &authorization[at + 1..]
        );
        forged.metadata_mut().insert(
            "authorization",
            forged_value.parse().expect("an ASCII header value"),
        );
        let result = kms(&d).disable_key(forged).await;
        assert!(
            result
                .as_ref()
                .is_err_and(|s| s.message().contains("the request signature does not match")),
            "{result:?}"
        );
        d.restart().await;
        let enable = v1::EnableKeyRequest {
            key_id: key.clone(),
        };
        kms(&d)
            .enable_key(d.client.signed("EnableKey", enable))
            .await
            .unwrap();
        let result = kms(&d).disable_key(replayed).await;
        let reason = if shared {
            "replayed"
        } else {
            "signature dated before the daemon started"
        };
        assert!(
            result.as_ref().is_err_and(|s| s.message().contains(reason)),
            "{result:?}"
        );
        assert_refused(result, Code::Unauthenticated, "InvalidSignatureException");
        assert_eq!(d.state(&key).await, KeyState::Enabled);

        // Stored while they can still be replayed; swept (every second) once they are stale.
        let open = |d: &TestDaemon| {
            keyhaven::server::open_backend(&d.config.store, &d.config.data_dir)
                .expect("open the store")
        };
        let seen = |d: &TestDaemon| {
            open(d)
                .scan(b"auth/seen/", None, usize::MAX)
                .expect("scan")
                .len()
        };
        d.stop().await;
        if shared {
            // CreateKey, DisableKey and EnableKey.
            assert_eq!(seen(&d), 3);
        } else {
            // One record, however many changes: the second they were taken up to.
            assert_eq!(seen(&d), 0);
            let accepted = open(&d).get(b"auth/accepted-until").expect("read");
            // As stored: the format byte and the record's tag, then 8 bytes of time.
            assert_eq!(accepted.map(|v| v.len()), Some(1 + 32 + 8));
        }
        d.start_again().await;
        d.clock.advance(keyhaven::auth::MAX_SKEW_SECONDS + 1);
        tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
        d.stop().await;
        assert_eq!(seen(&d), 0);
    }

    /// A store whose digest an earlier version wrote (the earlier tree of 4,096 buckets: the
    /// root alone over every record's whole tag, or `0x02 ‖ root` over their first bytes)
    /// opens after its records are checked, stores the root again in this version's format
    /// (`0x03 ‖ root`), and serves what it holds.
    pub async fn a_store_in_the_earlier_digest_format_opens_and_moves_on(backend: Backend) {
        use keyhaven::store::barrier::{self, DIGEST_RECORD};
        let mut d = TestDaemon::start(backend).await;
        let key = d.create_key("from before").await.key_id;
        let blob = d.encrypt(&key, b"kept", &[]).await.unwrap();
        d.stop().await;
        let (_, master) = keyhaven::seal::unseal(
            &d.config.data_dir,
            &keyhaven::secret::SecretString::new(PASSPHRASE.into()),
        )
        .expect("unseal the stopped daemon's data directory");
        let integrity = keyhaven::store::Barrier::new(master.record_integrity_key());
        let digest_value = |d: &TestDaemon| {
            let engine = keyhaven::server::open_backend(&d.config.store, &d.config.data_dir)
                .expect("open the store");
            let stored = engine.get(DIGEST_RECORD).unwrap().expect("a digest");
            integrity.open(DIGEST_RECORD, &stored).unwrap().to_vec()
        };
        assert_eq!(digest_value(&d)[0], 3, "this version's format");
        for whole in [false, true] {
            {
                let engine = keyhaven::server::open_backend(&d.config.store, &d.config.data_dir)
                    .expect("open the store");
                let tags = engine
                    .scan(&[], None, usize::MAX)
                    .unwrap()
                    .into_iter()
                    .filter(|(name, _)| name.as_slice() != DIGEST_RECORD)
                    .map(|(name, stored)| {
                        let tag = barrier::stored_tag(&stored).expect("a tagged record");
                        (name, tag)
                    });
                let value = if whole {
                    barrier::whole_tag_root(tags).to_vec()
                } else {
                    barrier::narrow_digest_value(tags)
                };
                let mut batch = keyhaven::store::WriteBatch::new();
                batch.put(
                    DIGEST_RECORD.to_vec(),
                    integrity.seal(DIGEST_RECORD, &value).unwrap().0,
                );
                engine.apply(batch).unwrap();
                engine.sync().unwrap();
            }
            let value = digest_value(&d);
            assert_eq!(
                value.len(),
                if whole { 32 } else { 33 },
                "an earlier format"
            );

            // Opened, the store writes the root in this version's format at once: a daemon
            // that changes nothing does not check every record again at each start.
            d.start_again().await;
            assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"kept");
            d.stop().await;
            let value = digest_value(&d);
            assert_eq!(
                (value.len(), value[0]),
                (33, 3),
                "moved to this version's format"
            );
        }
        d.start_again().await;
        let another = d.create_key("after").await.key_id;
        d.restart().await;
        assert_eq!(d.state(&another).await, KeyState::Enabled);
        assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"kept");
    }

    /// Key records an earlier version wrote as JSON are served as they are (read on demand,
    /// and by a start that reads every record), and written in the binary form at their next
    /// change.
    pub async fn key_records_written_as_json_are_served_and_move_to_binary(backend: Backend) {
        use keyhaven::keys::{KeyRecord, RECORD_FORM_BINARY};
        let mut d = TestDaemon::start(backend).await;
        let key = d.create_key("from before").await.key_id;
        let blob = d.encrypt(&key, b"kept", &[]).await.unwrap();
        let before = d.describe(&key).await.unwrap();
        d.stop().await;
        let name = format!("key/{key}").into_bytes();
        let first_byte = |d: &TestDaemon| d.open_store().get(&name).unwrap().expect("record")[0];
        assert_eq!(
            first_byte(&d),
            RECORD_FORM_BINARY,
            "written in the binary form"
        );
        {
            // As an earlier version wrote it: JSON, through the store's barrier.
            let store = d.open_store();
            let record = KeyRecord::from_stored(&store.get(&name).unwrap().unwrap()).unwrap();
            let mut batch = keyhaven::store::WriteBatch::new();
            batch.put(name.clone(), serde_json::to_vec(&record).unwrap());
            store.commit_blocking(batch).unwrap();
        }
        assert_eq!(first_byte(&d), b'{');

        d.start_again().await;
        let after = d.describe(&key).await.unwrap();
        assert_eq!(
            (after.description, after.creation_date, after.key_state),
            (before.description, before.creation_date, before.key_state)
        );
        assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"kept");
        d.disable(&key).await.unwrap();
        d.stop().await;
        assert_eq!(
            first_byte(&d),
            RECORD_FORM_BINARY,
            "its change wrote it in binary"
        );
        d.start_again().await;
        assert_eq!(d.state(&key).await, KeyState::Disabled);
    }

    pub async fn oversized_request_is_refused(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = d.create_key("big").await.key_id;
        assert_refused(
            d.encrypt(&key, &vec![7u8; 100_000], &[]).await,
            Code::ResourceExhausted,
            "LimitExceededException",
        );
        assert_eq!(
            d.decrypt(&d.encrypt(&key, b"ok", &[]).await.unwrap(), &[])
                .await
                .unwrap(),
            b"ok"
        );
    }

    pub async fn health_and_reflection_are_served(backend: Backend) {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse,
        };
        let d = TestDaemon::start(backend).await;
        let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let health = HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: "keyhaven.v1.KeyManagementService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            health.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "keyhaven.v1.KeyManagementService"),
            "{list:?}"
        );
    }
}

/// A full page of 1,000 keys is one answer of about 100 KB, more than a request may be: the
/// answer's limit is not the request's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_page_of_keys_fits_in_one_answer() {
    use common::{Backend, TestDaemon};
    use keyhaven::proto::v1;
    let d = TestDaemon::start(Backend::Sealed).await;
    let mut creating = tokio::task::JoinSet::new();
    for _ in 0..1_000 {
        let client = d.client.clone();
        creating.spawn(async move {
            client
                .kms()
                .create_key(client.signed("CreateKey", v1::CreateKeyRequest::default()))
                .await
                .map(|_| ())
        });
        while creating.len() >= 32 {
            creating.join_next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(created) = creating.join_next().await {
        created.unwrap().unwrap();
    }
    let page = d
        .client
        .kms()
        .list_keys(d.client.signed(
            "ListKeys",
            v1::ListKeysRequest {
                limit: 1_000,
                marker: String::new(),
            },
        ))
        .await
        .expect("a page of 1,000 keys")
        .into_inner();
    assert_eq!(page.keys.len(), 1_000);
    assert!(!page.truncated);
    let mut ids: Vec<_> = page.keys.iter().map(|k| k.key_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1_000);
}
