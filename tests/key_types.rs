//! Key specs and usages end to end: HMAC keys (`HMAC_224` … `HMAC_512`, `GENERATE_VERIFY_MAC`)
//! beside the AES keys of `SYMMETRIC_DEFAULT`, on a real daemon. What must hold on every
//! keystore is one suite instantiated per keystore (as tests/conformance.rs does); policy,
//! audit and the command line are keystore-independent and run on the sealed store.

mod common;

macro_rules! key_type_suite {
    ([$($name:ident => $backend:expr),* $(,)?], $tests:tt) => {
        $(key_type_suite!(@backend $name, $backend, $tests);)*
    };
    (@backend $name:ident, $backend:expr, [$($test:ident),* $(,)?]) => {
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

key_type_suite!(
    [sealed => Backend::Sealed, pkcs11 => Backend::Pkcs11, pkcs11_second => Backend::Pkcs11Second],
    [
        hmac_keys_are_created_and_described_with_their_algorithms,
        refused_spec_and_usage_pairs_create_nothing,
        macs_verify_and_a_flipped_bit_is_refused,
        mac_requests_out_of_bounds_are_refused,
        usages_do_not_cross,
        hmac_keys_do_not_rotate_and_say_so,
        hmac_keys_follow_the_lifecycle_and_survive_a_restart,
    ]
);

/// Every HMAC spec with its MAC algorithm and MAC length.
const HMAC_SPECS: [(&str, &str, usize); 4] = [
    ("HMAC_224", "HMAC_SHA_224", 28),
    ("HMAC_256", "HMAC_SHA_256", 32),
    ("HMAC_384", "HMAC_SHA_384", 48),
    ("HMAC_512", "HMAC_SHA_512", 64),
];

mod suite {
    use super::HMAC_SPECS;
    use super::common::*;
    use keyhaven::crypto::CiphertextBlob;
    use keyhaven::proto::v1;
    use tonic::Code;

    pub async fn create(
        d: &TestDaemon,
        spec: &str,
        usage: &str,
    ) -> Result<v1::KeyMetadata, tonic::Status> {
        let request = v1::CreateKeyRequest {
            description: format!("{spec} {usage}"),
            key_spec: spec.into(),
            key_usage: usage.into(),
            ..Default::default()
        };
        Ok(d.client
            .kms()
            .create_key(d.client.signed("CreateKey", request))
            .await?
            .into_inner()
            .key_metadata
            .expect("metadata"))
    }

    pub async fn hmac_key(d: &TestDaemon, spec: &str) -> v1::KeyMetadata {
        create(d, spec, "GENERATE_VERIFY_MAC")
            .await
            .expect("CreateKey of an HMAC key")
    }

    pub async fn generate_mac(
        d: &TestDaemon,
        key: &str,
        message: &[u8],
        algorithm: &str,
    ) -> Result<v1::GenerateMacResponse, tonic::Status> {
        let request = v1::GenerateMacRequest {
            key_id: key.into(),
            message: message.to_vec(),
            mac_algorithm: algorithm.into(),
        };
        Ok(d.client
            .kms()
            .generate_mac(d.client.signed("GenerateMac", request))
            .await?
            .into_inner())
    }

    pub async fn verify_mac(
        d: &TestDaemon,
        key: &str,
        message: &[u8],
        algorithm: &str,
        mac: &[u8],
    ) -> Result<v1::VerifyMacResponse, tonic::Status> {
        let request = v1::VerifyMacRequest {
            key_id: key.into(),
            message: message.to_vec(),
            mac_algorithm: algorithm.into(),
            mac: mac.to_vec(),
        };
        Ok(d.client
            .kms()
            .verify_mac(d.client.signed("VerifyMac", request))
            .await?
            .into_inner())
    }

    /// DescribeKey of a key, without its last use (which a successful call moves).
    async fn unchanged(d: &TestDaemon, key: &str) -> v1::KeyMetadata {
        let mut metadata = d.describe(key).await.expect("DescribeKey");
        metadata.last_used_date = None;
        metadata.last_used_operation.clear();
        metadata
    }

    pub async fn hmac_keys_are_created_and_described_with_their_algorithms(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        for (spec, algorithm, _) in HMAC_SPECS {
            let created = hmac_key(&d, spec).await;
            assert_eq!(created.key_spec, spec);
            assert_eq!(created.key_usage, "GENERATE_VERIFY_MAC");
            assert_eq!(created.mac_algorithms, vec![algorithm.to_string()]);
            assert!(created.encryption_algorithms.is_empty(), "{created:?}");
            assert_eq!(created.key_state(), v1::KeyState::Enabled);
            assert_eq!(created.keystore, backend.keystore_name());
            assert_eq!(created.current_key_version, 1);
            assert_eq!(d.describe(&created.key_id).await.unwrap(), created);
        }
        // The default stays an AES key, and says so.
        for (spec, usage) in [("", ""), ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")] {
            let aes = create(&d, spec, usage).await.unwrap();
            assert_eq!(aes.key_spec, "SYMMETRIC_DEFAULT");
            assert_eq!(aes.key_usage, "ENCRYPT_DECRYPT");
            assert_eq!(aes.encryption_algorithms, vec!["SYMMETRIC_DEFAULT"]);
            assert!(aes.mac_algorithms.is_empty());
        }
    }

    pub async fn refused_spec_and_usage_pairs_create_nothing(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let before = d.list_all_keys().await;
        for (spec, usage, says) in [
            ("HMAC_256", "", "You must specify a KeyUsage value"),
            (
                "HMAC_256",
                "ENCRYPT_DECRYPT",
                "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec HMAC_256",
            ),
            (
                "",
                "GENERATE_VERIFY_MAC",
                "KeyUsage GENERATE_VERIFY_MAC is not compatible with KeySpec SYMMETRIC_DEFAULT",
            ),
            (
                "SYMMETRIC_DEFAULT",
                "GENERATE_VERIFY_MAC",
                "KeyUsage GENERATE_VERIFY_MAC is not compatible with KeySpec SYMMETRIC_DEFAULT",
            ),
            (
                "HMAC_128",
                "GENERATE_VERIFY_MAC",
                "KeySpec 'HMAC_128' is not supported",
            ),
            (
                "hmac_256",
                "GENERATE_VERIFY_MAC",
                "KeySpec 'hmac_256' is not supported",
            ),
            (
                "HMAC_512",
                "SIGN_VERIFY",
                "KeyUsage SIGN_VERIFY is not compatible with KeySpec HMAC_512",
            ),
            (
                "HMAC_512",
                "KEY_AGREEMENT",
                "KeyUsage KEY_AGREEMENT is not compatible with KeySpec HMAC_512",
            ),
        ] {
            let refused = create(&d, spec, usage).await;
            let message = refused
                .as_ref()
                .err()
                .map(|s| s.message().to_owned())
                .unwrap_or_default();
            assert_refused(refused, Code::InvalidArgument, "ValidationException");
            assert!(message.contains(says), "{spec}/{usage}: {message}");
        }
        assert_eq!(
            d.list_all_keys().await,
            before,
            "a refused CreateKey made a key"
        );
    }

    pub async fn macs_verify_and_a_flipped_bit_is_refused(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        for (spec, algorithm, len) in HMAC_SPECS {
            let key = hmac_key(&d, spec).await;
            let message = b"release 1.4.2 manifest";
            let made = generate_mac(&d, &key.key_id, message, algorithm)
                .await
                .unwrap();
            assert_eq!(made.mac.len(), len, "{spec}");
            assert_eq!(made.mac_algorithm, algorithm);
            assert_eq!(made.key_id, key.arn);
            // HMAC is deterministic: the same message under the same key, the same MAC.
            let again = generate_mac(&d, &key.key_id, message, algorithm)
                .await
                .unwrap();
            assert_eq!(again.mac, made.mac);
            let verified = verify_mac(&d, &key.key_id, message, algorithm, &made.mac)
                .await
                .unwrap();
            assert!(verified.mac_valid);
            assert_eq!(verified.key_id, key.arn);
            assert_eq!(verified.mac_algorithm, algorithm);
            // Every single flipped bit of the MAC, and one of the message, is refused.
            for bit in [0, 7, 8 * len - 1] {
                let mut flipped = made.mac.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert_refused(
                    verify_mac(&d, &key.key_id, message, algorithm, &flipped).await,
                    Code::InvalidArgument,
                    "KMSInvalidMacException",
                );
            }
            let mut other = message.to_vec();
            other[0] ^= 1;
            assert_refused(
                verify_mac(&d, &key.key_id, &other, algorithm, &made.mac).await,
                Code::InvalidArgument,
                "KMSInvalidMacException",
            );
            assert_refused(
                verify_mac(&d, &key.key_id, message, algorithm, &made.mac[..len - 1]).await,
                Code::InvalidArgument,
                "KMSInvalidMacException",
            );
            // Another key of the same spec makes another MAC, which this key refuses.
            let second = hmac_key(&d, spec).await;
            let theirs = generate_mac(&d, &second.key_id, message, algorithm)
                .await
                .unwrap();
            assert_ne!(theirs.mac, made.mac);
            assert_refused(
                verify_mac(&d, &key.key_id, message, algorithm, &theirs.mac).await,
                Code::InvalidArgument,
                "KMSInvalidMacException",
            );
        }
        // Any key form names the key.
        let key = hmac_key(&d, "HMAC_256").await;
        d.create_alias("alias/mac", &key.key_id).await.unwrap();
        let by_id = generate_mac(&d, &key.key_id, b"m", "HMAC_SHA_256")
            .await
            .unwrap();
        for form in [key.arn.as_str(), "alias/mac"] {
            let made = generate_mac(&d, form, b"m", "HMAC_SHA_256").await.unwrap();
            assert_eq!(made.mac, by_id.mac, "{form}");
            assert!(
                verify_mac(&d, form, b"m", "HMAC_SHA_256", &made.mac)
                    .await
                    .unwrap()
                    .mac_valid
            );
        }
    }

    pub async fn mac_requests_out_of_bounds_are_refused(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = hmac_key(&d, "HMAC_384").await;
        let id = key.key_id.as_str();
        let largest = vec![7u8; 4096];
        let made = generate_mac(&d, id, &largest, "HMAC_SHA_384")
            .await
            .unwrap();
        assert!(
            verify_mac(&d, id, &largest, "HMAC_SHA_384", &made.mac)
                .await
                .unwrap()
                .mac_valid
        );
        let before = unchanged(&d, id).await;
        for message in [Vec::new(), vec![7u8; 4097]] {
            assert_refused(
                generate_mac(&d, id, &message, "HMAC_SHA_384").await,
                Code::InvalidArgument,
                "ValidationException",
            );
            assert_refused(
                verify_mac(&d, id, &message, "HMAC_SHA_384", &made.mac).await,
                Code::InvalidArgument,
                "ValidationException",
            );
        }
        for algorithm in ["", "HMAC_SHA_1", "hmac_sha_384", "SYMMETRIC_DEFAULT"] {
            assert_refused(
                generate_mac(&d, id, b"m", algorithm).await,
                Code::InvalidArgument,
                "ValidationException",
            );
        }
        // An algorithm of another HMAC spec does not go with this key.
        for algorithm in ["HMAC_SHA_224", "HMAC_SHA_256", "HMAC_SHA_512"] {
            assert_refused(
                generate_mac(&d, id, b"m", algorithm).await,
                Code::InvalidArgument,
                "InvalidKeyUsageException",
            );
            assert_refused(
                verify_mac(&d, id, &largest, algorithm, &made.mac).await,
                Code::InvalidArgument,
                "InvalidKeyUsageException",
            );
        }
        assert_refused(
            verify_mac(&d, id, b"m", "HMAC_SHA_384", &[]).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_refused(
            generate_mac(&d, "alias/none", b"m", "HMAC_SHA_384").await,
            Code::NotFound,
            "NotFoundException",
        );
        assert_eq!(unchanged(&d, id).await, before);
    }

    pub async fn usages_do_not_cross(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let mac_key = hmac_key(&d, "HMAC_256").await;
        let aes = d.create_key("aes").await;
        let mac_before = unchanged(&d, &mac_key.key_id).await;
        let aes_before = unchanged(&d, &aes.key_id).await;

        // Encryption operations on an HMAC key.
        assert_refused(
            d.encrypt(&mac_key.key_id, b"data", &[]).await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
        let refused = d.encrypt(&mac_key.key_id, b"data", &[]).await.unwrap_err();
        assert!(
            refused
                .message()
                .contains("key usage is GENERATE_VERIFY_MAC which is not valid for Encrypt"),
            "{}",
            refused.message()
        );
        for without_plaintext in [false, true] {
            let result = if without_plaintext {
                d.client
                    .kms()
                    .generate_data_key_without_plaintext(d.client.signed(
                        "GenerateDataKeyWithoutPlaintext",
                        v1::GenerateDataKeyWithoutPlaintextRequest {
                            key_id: mac_key.key_id.clone(),
                            key_spec: "AES_256".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|_| ())
            } else {
                d.client
                    .kms()
                    .generate_data_key(d.client.signed(
                        "GenerateDataKey",
                        v1::GenerateDataKeyRequest {
                            key_id: mac_key.key_id.clone(),
                            key_spec: "AES_256".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|_| ())
            };
            assert_refused(result, Code::InvalidArgument, "InvalidKeyUsageException");
        }
        let blob = d.encrypt(&aes.key_id, b"data", &[]).await.unwrap();
        let re_encrypt = d
            .client
            .kms()
            .re_encrypt(d.client.signed(
                "ReEncrypt",
                v1::ReEncryptRequest {
                    ciphertext_blob: blob.clone(),
                    destination_key_id: mac_key.key_id.clone(),
                    ..Default::default()
                },
            ))
            .await;
        assert_refused(
            re_encrypt,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
        // A ciphertext made to name the HMAC key is not opened with its material (an HMAC_256
        // key is as long as an AES-256 one).
        let parsed = CiphertextBlob::parse(&blob).unwrap();
        let forged = CiphertextBlob::assemble(
            mac_key.key_id.parse().unwrap(),
            1,
            &parsed.nonce,
            parsed.sealed,
        );
        assert_refused(
            d.decrypt(&forged, &[]).await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );

        // MAC operations on an AES key.
        assert_refused(
            generate_mac(&d, &aes.key_id, b"m", "HMAC_SHA_256").await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
        assert_refused(
            verify_mac(&d, &aes.key_id, b"m", "HMAC_SHA_256", &[0; 32]).await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );

        assert_eq!(unchanged(&d, &mac_key.key_id).await, mac_before);
        assert_eq!(unchanged(&d, &aes.key_id).await, aes_before);
        // Both keys still do what they are for.
        assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"data");
        let made = generate_mac(&d, &mac_key.key_id, b"m", "HMAC_SHA_256")
            .await
            .unwrap();
        assert!(
            verify_mac(&d, &mac_key.key_id, b"m", "HMAC_SHA_256", &made.mac)
                .await
                .unwrap()
                .mac_valid
        );
    }

    pub async fn hmac_keys_do_not_rotate_and_say_so(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = hmac_key(&d, "HMAC_512").await;
        let id = key.key_id.clone();
        let mac = generate_mac(&d, &id, b"m", "HMAC_SHA_512")
            .await
            .unwrap()
            .mac;
        let before = unchanged(&d, &id).await;
        let kms = d.client.kms();
        let refusals = [
            d.rotate(&id).await.map(|_| ()),
            kms.clone()
                .enable_key_rotation(d.client.signed(
                    "EnableKeyRotation",
                    v1::EnableKeyRotationRequest {
                        key_id: id.clone(),
                        rotation_period_in_days: None,
                    },
                ))
                .await
                .map(|_| ()),
            kms.clone()
                .disable_key_rotation(d.client.signed(
                    "DisableKeyRotation",
                    v1::DisableKeyRotationRequest { key_id: id.clone() },
                ))
                .await
                .map(|_| ()),
            kms.clone()
                .get_key_rotation_status(d.client.signed(
                    "GetKeyRotationStatus",
                    v1::GetKeyRotationStatusRequest { key_id: id.clone() },
                ))
                .await
                .map(|_| ()),
            kms.clone()
                .list_key_rotations(d.client.signed(
                    "ListKeyRotations",
                    v1::ListKeyRotationsRequest { key_id: id.clone() },
                ))
                .await
                .map(|_| ()),
        ];
        for refused in refusals {
            let message = refused
                .as_ref()
                .err()
                .map(|s| s.message().to_owned())
                .unwrap_or_default();
            assert_refused(
                refused,
                Code::FailedPrecondition,
                "UnsupportedOperationException",
            );
            assert!(message.contains("HMAC_512 keys do not rotate"), "{message}");
        }
        assert_eq!(unchanged(&d, &id).await, before);
        assert_eq!(before.current_key_version, 1);
        assert_eq!(
            generate_mac(&d, &id, b"m", "HMAC_SHA_512")
                .await
                .unwrap()
                .mac,
            mac,
            "the material changed"
        );
        // AES keys rotate as before.
        let aes = d.create_key("aes").await;
        assert_eq!(d.rotate(&aes.key_id).await.unwrap(), 2);
    }

    pub async fn hmac_keys_follow_the_lifecycle_and_survive_a_restart(backend: Backend) {
        let mut d = TestDaemon::start(backend).await;
        let key = hmac_key(&d, "HMAC_224").await;
        let id = key.key_id.clone();
        let made = generate_mac(&d, &id, b"m", "HMAC_SHA_224").await.unwrap();
        d.disable(&id).await.unwrap();
        assert_refused(
            generate_mac(&d, &id, b"m", "HMAC_SHA_224").await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        assert_refused(
            verify_mac(&d, &id, b"m", "HMAC_SHA_224", &made.mac).await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        d.enable(&id).await.unwrap();
        d.restart().await;
        let described = d.describe(&id).await.unwrap();
        // The start-up check finds the material whole: the key is not reported unavailable.
        assert_eq!(described.key_state(), v1::KeyState::Enabled);
        assert_eq!(described.key_spec, "HMAC_224");
        assert_eq!(described.key_usage, "GENERATE_VERIFY_MAC");
        assert_eq!(described.mac_algorithms, vec!["HMAC_SHA_224"]);
        let again = generate_mac(&d, &id, b"m", "HMAC_SHA_224").await.unwrap();
        assert_eq!(
            again.mac, made.mac,
            "the key's material changed across a restart"
        );
        d.schedule_deletion(&id, Some(7)).await.unwrap();
        assert_refused(
            generate_mac(&d, &id, b"m", "HMAC_SHA_224").await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        // Its deletion destroys the material as an AES key's does.
        d.clock.advance(7 * DAY + 1);
        d.run_due_tasks().await;
        assert_eq!(d.state(&id).await, v1::KeyState::Deleted);
        assert_refused(
            generate_mac(&d, &id, b"m", "HMAC_SHA_224").await,
            Code::NotFound,
            "NotFoundException",
        );
    }
}

// ------------------------------------------------------------------ PKCS#11

/// An HMAC key is a generic secret made in the device: as long as its digest, sensitive, not
/// extractable, for signing and verifying only, its value unreadable; the session copy made on
/// first use keeps all of that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_keys_are_generic_secrets_that_stay_in_the_device() {
    use common::device::{independent_session, objects, session_copies};
    use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType};
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let session = independent_session();
    for (spec, algorithm, len) in HMAC_SPECS {
        let key = suite::hmac_key(&d, spec).await;
        assert_eq!(key.origin, "AWS_CLOUDHSM");
        let made = suite::generate_mac(&d, &key.key_id, b"m", algorithm)
            .await
            .unwrap();
        assert_eq!(made.mac.len(), len);
        let mut found = objects(&session, &d.account_id, &key.key_id, 1);
        assert_eq!(found.len(), 1, "{spec}: one token object");
        let copies = session_copies(&session, &d.account_id, &key.key_id, 1);
        assert_eq!(copies.len(), 1, "{spec}: one session copy in use");
        found.extend(copies);
        for object in found {
            let attributes = session
                .get_attributes(
                    object,
                    &[
                        AttributeType::KeyType,
                        AttributeType::ValueLen,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::Private,
                        AttributeType::Sign,
                        AttributeType::Verify,
                        AttributeType::Encrypt,
                        AttributeType::Decrypt,
                    ],
                )
                .expect("attributes");
            for expected in [
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen((len as u64).into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ] {
                assert!(
                    attributes.contains(&expected),
                    "{spec}: {expected:?} not in {attributes:?}"
                );
            }
            let value = session
                .get_attribute_info(object, &[AttributeType::Value])
                .expect("attribute info");
            assert!(
                matches!(value.as_slice(), [AttributeInfo::Sensitive]),
                "{spec}: the key's value must not be readable: {value:?}"
            );
        }
        // Deletion destroys the object and its session copy in the device.
        d.schedule_deletion(&key.key_id, Some(7)).await.unwrap();
        d.clock.advance(7 * common::DAY + 1);
        assert_eq!(d.run_due_tasks().await.destroyed, 1, "{spec}");
        assert!(objects(&session, &d.account_id, &key.key_id, 1).is_empty());
        assert!(session_copies(&session, &d.account_id, &key.key_id, 1).is_empty());
    }
}

// ------------------------------------------------------------------ policy, audit, command line

use common::{Backend, TestDaemon, assert_refused};
use keyhaven::audit::{AuditRecord, chain_files};
use keyhaven::client::Client;
use keyhaven::proto::v1;
use tonic::Code;

async fn generate_mac_as(
    client: &Client,
    key: &str,
    message: &[u8],
    algorithm: &str,
) -> Result<v1::GenerateMacResponse, tonic::Status> {
    let request = v1::GenerateMacRequest {
        key_id: key.into(),
        message: message.to_vec(),
        mac_algorithm: algorithm.into(),
    };
    Ok(client
        .kms()
        .generate_mac(client.signed("GenerateMac", request))
        .await?
        .into_inner())
}

async fn verify_mac_as(
    client: &Client,
    key: &str,
    message: &[u8],
    algorithm: &str,
    mac: &[u8],
) -> Result<v1::VerifyMacResponse, tonic::Status> {
    let request = v1::VerifyMacRequest {
        key_id: key.into(),
        message: message.to_vec(),
        mac_algorithm: algorithm.into(),
        mac: mac.to_vec(),
    };
    Ok(client
        .kms()
        .verify_mac(client.signed("VerifyMac", request))
        .await?
        .into_inner())
}

async fn create_as(client: &Client, spec: &str, usage: &str) -> Result<String, tonic::Status> {
    let request = v1::CreateKeyRequest {
        key_spec: spec.into(),
        key_usage: usage.into(),
        ..Default::default()
    };
    Ok(client
        .kms()
        .create_key(client.signed("CreateKey", request))
        .await?
        .into_inner()
        .key_metadata
        .expect("metadata")
        .key_id)
}

async fn put_user_policy(d: &TestDaemon, user: &str, name: &str, document: &str) {
    let request = v1::PutEntityPolicyRequest {
        entity_type: v1::EntityType::User as i32,
        entity_name: user.into(),
        policy_name: name.into(),
        policy_document: document.into(),
    };
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam("PutEntityPolicy", request))
        .await
        .expect("PutEntityPolicy");
}

#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>, action: &str) {
    let status = result.expect_err("expected AccessDeniedException");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        keyhaven::api::reason_of(&status).as_deref(),
        Some("AccessDeniedException")
    );
    assert!(status.message().contains(action), "{}", status.message());
}

/// `kms:GenerateMac` and `kms:VerifyMac` are actions of their own, `kms:MacAlgorithm` is
/// set on both, and `kms:KeySpec` / `kms:KeyUsage` on CreateKey.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mac_actions_and_their_condition_keys_are_judged() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let sha256 = suite::hmac_key(&d, "HMAC_256").await.key_id;
    let sha512 = suite::hmac_key(&d, "HMAC_512").await.key_id;
    // Generate with SHA-256 only; verify anything; create HMAC_256 MAC keys only.
    let alice = d
        .create_user(
            "alice",
            Some(
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"kms:GenerateMac","Resource":"*",
                 "Condition":{"StringEquals":{"kms:MacAlgorithm":"HMAC_SHA_256"}}},
                {"Effect":"Allow","Action":"kms:VerifyMac","Resource":"*"},
                {"Effect":"Allow","Action":"kms:CreateKey","Resource":"*",
                 "Condition":{"StringEquals":{"kms:KeySpec":"HMAC_256",
                                              "kms:KeyUsage":"GENERATE_VERIFY_MAC"}}}]}"#,
            ),
        )
        .await;
    let made = generate_mac_as(&alice, &sha256, b"m", "HMAC_SHA_256")
        .await
        .unwrap();
    assert!(
        verify_mac_as(&alice, &sha256, b"m", "HMAC_SHA_256", &made.mac)
            .await
            .unwrap()
            .mac_valid
    );
    assert_denied(
        generate_mac_as(&alice, &sha512, b"m", "HMAC_SHA_512").await,
        "kms:GenerateMac",
    );
    // The condition is judged on the request's algorithm, before the key is asked.
    assert_denied(
        generate_mac_as(&alice, &sha256, b"m", "HMAC_SHA_512").await,
        "kms:GenerateMac",
    );
    let root_made = suite::generate_mac(&d, &sha512, b"m", "HMAC_SHA_512")
        .await
        .unwrap();
    assert!(
        verify_mac_as(&alice, &sha512, b"m", "HMAC_SHA_512", &root_made.mac)
            .await
            .unwrap()
            .mac_valid
    );
    // kms:KeySpec and kms:KeyUsage describe an existing key too: a Deny on HMAC_512 keys
    // stops alice on them whatever the algorithm.
    put_user_policy(
        &d,
        "alice",
        "no-512",
        r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Deny","Action":"kms:VerifyMac","Resource":"*",
         "Condition":{"StringEquals":{"kms:KeySpec":"HMAC_512","kms:KeyUsage":"GENERATE_VERIFY_MAC"}}}]}"#,
    )
    .await;
    assert_denied(
        verify_mac_as(&alice, &sha512, b"m", "HMAC_SHA_512", &root_made.mac).await,
        "kms:VerifyMac",
    );
    assert!(
        verify_mac_as(&alice, &sha256, b"m", "HMAC_SHA_256", &made.mac)
            .await
            .unwrap()
            .mac_valid
    );
    let before = d.list_all_keys().await;
    assert_denied(create_as(&alice, "", "").await, "kms:CreateKey");
    assert_denied(
        create_as(&alice, "HMAC_512", "GENERATE_VERIFY_MAC").await,
        "kms:CreateKey",
    );
    assert_eq!(d.list_all_keys().await, before);
    create_as(&alice, "HMAC_256", "GENERATE_VERIFY_MAC")
        .await
        .unwrap();

    // Allowed to generate, not to verify.
    let bob = d
        .create_user(
            "bob",
            Some(
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"kms:GenerateMac","Resource":"*"}]}"#,
            ),
        )
        .await;
    let bobs = generate_mac_as(&bob, &sha512, b"m", "HMAC_SHA_512")
        .await
        .unwrap();
    assert_eq!(bobs.mac, root_made.mac);
    assert_denied(
        verify_mac_as(&bob, &sha512, b"m", "HMAC_SHA_512", &bobs.mac).await,
        "kms:VerifyMac",
    );
}

fn records(path: &std::path::Path) -> Vec<AuditRecord> {
    chain_files(path)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<AuditRecord>>()
        })
        .collect()
}

/// MAC calls are audited as other calls, with the key's ARN and the outcome, never the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mac_calls_are_audited_without_their_message() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = suite::hmac_key(&d, "HMAC_256").await;
    let message = b"canary-mac-message-5521";
    let made = suite::generate_mac(&d, &key.key_id, message, "HMAC_SHA_256")
        .await
        .unwrap();
    suite::verify_mac(&d, &key.key_id, message, "HMAC_SHA_256", &made.mac)
        .await
        .unwrap();
    assert_refused(
        suite::verify_mac(&d, &key.key_id, message, "HMAC_SHA_256", &[0; 32]).await,
        Code::InvalidArgument,
        "KMSInvalidMacException",
    );
    let all = records(&d.config.audit_log);
    let mac_calls: Vec<_> = all
        .iter()
        .filter(|r| r.operation == "kms:GenerateMac" || r.operation == "kms:VerifyMac")
        .collect();
    let outcomes: Vec<_> = mac_calls
        .iter()
        .map(|r| {
            let outcome = r.outcome.as_ref().expect("outcome");
            (
                r.operation.as_str(),
                outcome.code.as_str(),
                outcome.reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("kms:GenerateMac", "Ok", None),
            ("kms:VerifyMac", "Ok", None),
            (
                "kms:VerifyMac",
                "InvalidArgument",
                Some("KMSInvalidMacException")
            ),
        ]
    );
    for record in &mac_calls {
        assert_eq!(record.keys, vec![key.arn.clone()], "{record:?}");
    }
    let text = chain_files(&d.config.audit_log)
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<String>();
    assert!(!text.contains("canary-mac-message-5521"));
}

/// `keyhaven` run as a user runs it, against `d`, with `stdin`; its exit status, stdout and
/// stderr.
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

/// `key create --key-spec --key-usage`, `mac generate` and `mac verify`, with JSON in the AWS
/// CLI's shape, and the refusals on stderr with a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_makes_and_checks_macs() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    let d = TestDaemon::start(Backend::Sealed).await;
    let d = std::sync::Arc::new(d);
    let cli = {
        let d = d.clone();
        move |args: &[&str], stdin: &[u8]| {
            let d = d.clone();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let stdin = stdin.to_vec();
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_cli(&d, &args, &stdin)
            })
        }
    };
    let (ok, out, err) = cli(
        &[
            "--output",
            "json",
            "key",
            "create",
            "--key-spec",
            "HMAC_256",
            "--key-usage",
            "GENERATE_VERIFY_MAC",
        ],
        &[],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let created = &created["KeyMetadata"];
    assert_eq!(created["KeySpec"], "HMAC_256");
    assert_eq!(created["KeyUsage"], "GENERATE_VERIFY_MAC");
    assert_eq!(
        created["MacAlgorithms"],
        serde_json::json!(["HMAC_SHA_256"])
    );
    assert!(created.get("EncryptionAlgorithms").is_none(), "{created}");
    let key = created["KeyId"].as_str().expect("KeyId").to_owned();
    let key = key.as_str();

    let (ok, out, err) = cli(
        &[
            "--output",
            "json",
            "mac",
            "generate",
            "--key",
            key,
            "--algorithm",
            "HMAC_SHA_256",
        ],
        b"signed by the cli",
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(made["MacAlgorithm"], "HMAC_SHA_256");
    let mac_b64 = made["Mac"].as_str().expect("Mac").to_owned();
    let mac_b64 = mac_b64.as_str();
    let mac = B64.decode(mac_b64).unwrap();
    assert_eq!(mac.len(), 32);
    // The same MAC as the API gives.
    let api = suite::generate_mac(&d, key, b"signed by the cli", "HMAC_SHA_256")
        .await
        .unwrap();
    assert_eq!(api.mac, mac);

    let verify = |message: &[u8]| {
        cli(
            &[
                "--output",
                "json",
                "mac",
                "verify",
                "--key",
                key,
                "--algorithm",
                "HMAC_SHA_256",
                "--mac",
                mac_b64,
            ],
            message,
        )
    };
    let (ok, out, err) = verify(b"signed by the cli").await.unwrap();
    assert!(ok, "{err}");
    let verified: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(verified["MacValid"], true);
    let (ok, out, err) = verify(b"signed by the cli!").await.unwrap();
    assert!(!ok, "{out}");
    assert!(err.contains("KMSInvalidMacException"), "{err}");

    let (ok, _, err) = cli(&["key", "create", "--key-spec", "HMAC_256"], &[])
        .await
        .unwrap();
    assert!(!ok);
    assert!(
        err.contains("ValidationException") && err.contains("KeyUsage"),
        "{err}"
    );
}

// ------------------------------------------------------------------ ECC_NIST_P256 (sealed)

async fn sign(
    d: &TestDaemon,
    key: &str,
    message: &[u8],
    message_type: &str,
    algorithm: &str,
) -> Result<v1::SignResponse, tonic::Status> {
    let request = v1::SignRequest {
        key_id: key.into(),
        message: message.to_vec(),
        message_type: message_type.into(),
        signing_algorithm: algorithm.into(),
    };
    Ok(d.client
        .kms()
        .sign(d.client.signed("Sign", request))
        .await?
        .into_inner())
}

async fn verify(
    d: &TestDaemon,
    key: &str,
    message: &[u8],
    message_type: &str,
    algorithm: &str,
    signature: &[u8],
) -> Result<v1::VerifyResponse, tonic::Status> {
    let request = v1::VerifyRequest {
        key_id: key.into(),
        message: message.to_vec(),
        message_type: message_type.into(),
        signing_algorithm: algorithm.into(),
        signature: signature.to_vec(),
    };
    Ok(d.client
        .kms()
        .verify(d.client.signed("Verify", request))
        .await?
        .into_inner())
}

async fn public_key(d: &TestDaemon, key: &str) -> Result<v1::GetPublicKeyResponse, tonic::Status> {
    let request = v1::GetPublicKeyRequest { key_id: key.into() };
    Ok(d.client
        .kms()
        .get_public_key(d.client.signed("GetPublicKey", request))
        .await?
        .into_inner())
}

/// Whether `openssl` (a tool nobody here wrote) accepts `signature` over `message` with the
/// DER public key.
fn openssl_verifies(public_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    openssl_verifies_with(public_der, message, signature, "-sha256", &[])
}

/// As [`openssl_verifies`], with the digest option and `-sigopt` settings given.
fn openssl_verifies_with(
    public_der: &[u8],
    message: &[u8],
    signature: &[u8],
    digest: &str,
    sigopts: &[&str],
) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (key, data, sig) = (
        dir.path().join("pub.der"),
        dir.path().join("message"),
        dir.path().join("sig.der"),
    );
    std::fs::write(&key, public_der).unwrap();
    std::fs::write(&data, message).unwrap();
    std::fs::write(&sig, signature).unwrap();
    let output = std::process::Command::new("openssl")
        .args(["dgst", digest, "-keyform", "DER"])
        .args(sigopts.iter().flat_map(|o| ["-sigopt", o]))
        .arg("-verify")
        .arg(&key)
        .arg("-signature")
        .arg(&sig)
        .arg(&data)
        .output()
        .expect("the openssl binary is needed (apt-get install openssl)");
    String::from_utf8_lossy(&output.stdout).contains("Verified OK") && output.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_keys_sign_and_openssl_verifies_with_the_public_key() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = suite::create(&d, "ECC_NIST_P256", "SIGN_VERIFY")
        .await
        .unwrap();
    assert_eq!(key.key_spec, "ECC_NIST_P256");
    assert_eq!(key.key_usage, "SIGN_VERIFY");
    assert_eq!(key.signing_algorithms, vec!["ECDSA_SHA_256"]);
    assert!(key.encryption_algorithms.is_empty() && key.mac_algorithms.is_empty());
    assert_eq!(d.describe(&key.key_id).await.unwrap(), key);

    let public = public_key(&d, &key.key_id).await.unwrap();
    assert_eq!(public.key_id, key.arn);
    assert_eq!(public.key_spec, "ECC_NIST_P256");
    assert_eq!(public.key_usage, "SIGN_VERIFY");
    assert_eq!(public.signing_algorithms, vec!["ECDSA_SHA_256"]);
    // DER SubjectPublicKeyInfo of id-ecPublicKey on prime256v1, uncompressed point: 91 bytes.
    assert_eq!(public.public_key.len(), 91);
    let parsed = std::process::Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&public.public_key)?;
            child.wait_with_output()
        })
        .expect("the openssl binary is needed (apt-get install openssl)");
    let text = String::from_utf8_lossy(&parsed.stdout);
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );

    let message = b"release 2.0.0 tarball sha256 manifest";
    let signed = sign(&d, &key.key_id, message, "RAW", "ECDSA_SHA_256")
        .await
        .unwrap();
    assert_eq!(signed.key_id, key.arn);
    assert_eq!(signed.signing_algorithm, "ECDSA_SHA_256");
    assert!(openssl_verifies(
        &public.public_key,
        message,
        &signed.signature
    ));
    assert!(!openssl_verifies(
        &public.public_key,
        b"another message",
        &signed.signature
    ));
    let verified = verify(
        &d,
        &key.key_id,
        message,
        "",
        "ECDSA_SHA_256",
        &signed.signature,
    )
    .await
    .unwrap();
    assert!(verified.signature_valid);
    assert_eq!(verified.key_id, key.arn);

    // DIGEST: the caller's SHA-256 of the message; the signature verifies either way.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(message).to_vec();
    let from_digest = sign(&d, &key.key_id, &digest, "DIGEST", "ECDSA_SHA_256")
        .await
        .unwrap();
    assert!(openssl_verifies(
        &public.public_key,
        message,
        &from_digest.signature
    ));
    assert!(
        verify(
            &d,
            &key.key_id,
            &digest,
            "DIGEST",
            "ECDSA_SHA_256",
            &signed.signature
        )
        .await
        .unwrap()
        .signature_valid
    );

    // Bad signatures are refused, never answered false.
    let mut flipped = signed.signature.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    for (message, signature) in [
        (&message[..], &flipped[..]),
        (&b"another message"[..], &signed.signature[..]),
        (&message[..], &b"not DER"[..]),
    ] {
        assert_refused(
            verify(&d, &key.key_id, message, "RAW", "ECDSA_SHA_256", signature).await,
            Code::InvalidArgument,
            "KMSInvalidSignatureException",
        );
    }
    // Another key's signature does not verify with this one.
    let other = suite::create(&d, "ECC_NIST_P256", "SIGN_VERIFY")
        .await
        .unwrap();
    let theirs = sign(&d, &other.key_id, message, "RAW", "ECDSA_SHA_256")
        .await
        .unwrap();
    assert_refused(
        verify(
            &d,
            &key.key_id,
            message,
            "RAW",
            "ECDSA_SHA_256",
            &theirs.signature,
        )
        .await,
        Code::InvalidArgument,
        "KMSInvalidSignatureException",
    );
    // The key survives a restart: its public key and signatures stay good, and the start-up
    // check finds its material whole.
    let rsa = suite::create(&d, "RSA_2048", "SIGN_VERIFY").await.unwrap();
    let mut d = d;
    d.restart().await;
    for id in [&key.key_id, &rsa.key_id] {
        assert_eq!(d.state(id).await, v1::KeyState::Enabled);
    }
    assert_eq!(
        public_key(&d, &key.key_id).await.unwrap().public_key,
        public.public_key
    );
    assert!(
        verify(
            &d,
            &key.key_id,
            message,
            "RAW",
            "ECDSA_SHA_256",
            &signed.signature
        )
        .await
        .unwrap()
        .signature_valid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_refusals_are_aws_s_and_change_nothing() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = suite::create(&d, "ECC_NIST_P256", "SIGN_VERIFY")
        .await
        .unwrap();
    let id = key.key_id.as_str();
    let aes = d.create_key("aes").await;
    let mac = suite::hmac_key(&d, "HMAC_256").await;
    let before = d.list_all_keys().await;
    for (spec, usage) in [
        ("ECC_NIST_P256", ""),
        ("ECC_NIST_P256", "ENCRYPT_DECRYPT"),
        ("ECC_NIST_P256", "GENERATE_VERIFY_MAC"),
        ("", "SIGN_VERIFY"),
        ("HMAC_256", "SIGN_VERIFY"),
        // AWS KMS refuses these too: secp256k1 only signs, RSA keys agree on no keys.
        ("ECC_SECG_P256K1", "KEY_AGREEMENT"),
        ("RSA_2048", "KEY_AGREEMENT"),
    ] {
        assert_refused(
            suite::create(&d, spec, usage).await,
            Code::InvalidArgument,
            "ValidationException",
        );
    }
    assert_eq!(d.list_all_keys().await, before);

    let signature = sign(&d, id, b"m", "RAW", "ECDSA_SHA_256")
        .await
        .unwrap()
        .signature;
    for (message, message_type, algorithm, code, reason) in [
        (
            &b""[..],
            "RAW",
            "ECDSA_SHA_256",
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            &[1u8; 4097][..],
            "RAW",
            "ECDSA_SHA_256",
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            &[1u8; 31][..],
            "DIGEST",
            "ECDSA_SHA_256",
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            &[1u8; 33][..],
            "DIGEST",
            "ECDSA_SHA_256",
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            &b"m"[..],
            "HASHED",
            "ECDSA_SHA_256",
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            &b"m"[..],
            "RAW",
            "ECDSA_SHA_1",
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            &b"m"[..],
            "RAW",
            "",
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            &b"m"[..],
            "RAW",
            "ECDSA_SHA_384",
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        ),
        (
            &b"m"[..],
            "RAW",
            "RSASSA_PSS_SHA_256",
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        ),
    ] {
        assert_refused(
            sign(&d, id, message, message_type, algorithm).await,
            code,
            reason,
        );
        assert_refused(
            verify(&d, id, message, message_type, algorithm, &signature).await,
            code,
            reason,
        );
    }
    // Usages do not cross.
    assert_refused(
        d.encrypt(id, b"data", &[]).await,
        Code::InvalidArgument,
        "InvalidKeyUsageException",
    );
    assert_refused(
        suite::generate_mac(&d, id, b"m", "HMAC_SHA_256").await,
        Code::InvalidArgument,
        "InvalidKeyUsageException",
    );
    for other in [&aes.key_id, &mac.key_id] {
        assert_refused(
            sign(&d, other, b"m", "RAW", "ECDSA_SHA_256").await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
        assert_refused(
            verify(&d, other, b"m", "RAW", "ECDSA_SHA_256", &signature).await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
        assert_refused(
            public_key(&d, other).await,
            Code::FailedPrecondition,
            "UnsupportedOperationException",
        );
    }
    // Asymmetric keys do not rotate.
    assert_refused(
        d.rotate(id).await,
        Code::FailedPrecondition,
        "UnsupportedOperationException",
    );
    assert_eq!(d.describe(id).await.unwrap().current_key_version, 1);
    // A disabled key neither signs nor gives its public key.
    d.disable(id).await.unwrap();
    assert_refused(
        sign(&d, id, b"m", "RAW", "ECDSA_SHA_256").await,
        Code::FailedPrecondition,
        "KMSInvalidStateException",
    );
    assert_refused(
        public_key(&d, id).await,
        Code::FailedPrecondition,
        "KMSInvalidStateException",
    );
    d.enable(id).await.unwrap();
    assert!(
        verify(&d, id, b"m", "RAW", "ECDSA_SHA_256", &signature)
            .await
            .unwrap()
            .signature_valid
    );
}

/// `kms:Sign`, `kms:Verify` and `kms:GetPublicKey` are separate permissions, and
/// `kms:SigningAlgorithm` and `kms:MessageType` are judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_actions_and_their_condition_keys_are_judged() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = suite::create(&d, "ECC_NIST_P256", "SIGN_VERIFY")
        .await
        .unwrap()
        .key_id;
    let carol = d
        .create_user(
            "carol",
            Some(
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"kms:Sign","Resource":"*",
                 "Condition":{"StringEquals":{"kms:MessageType":"DIGEST",
                                              "kms:SigningAlgorithm":"ECDSA_SHA_256"}}}]}"#,
            ),
        )
        .await;
    let sign_as = |message_type: &'static str, message: Vec<u8>| {
        let carol = &carol;
        let key = key.clone();
        async move {
            let request = v1::SignRequest {
                key_id: key,
                message,
                message_type: message_type.into(),
                signing_algorithm: "ECDSA_SHA_256".into(),
            };
            carol.kms().sign(carol.signed("Sign", request)).await
        }
    };
    sign_as("DIGEST", vec![5; 32]).await.unwrap();
    assert_denied(sign_as("RAW", b"m".to_vec()).await, "kms:Sign");
    let verified = carol
        .kms()
        .verify(carol.signed(
            "Verify",
            v1::VerifyRequest {
                key_id: key.clone(),
                message: b"m".to_vec(),
                message_type: "RAW".into(),
                signing_algorithm: "ECDSA_SHA_256".into(),
                signature: vec![0x30, 0],
            },
        ))
        .await;
    assert_denied(verified, "kms:Verify");
    let public = carol
        .kms()
        .get_public_key(carol.signed(
            "GetPublicKey",
            v1::GetPublicKeyRequest {
                key_id: key.clone(),
            },
        ))
        .await;
    assert_denied(public, "kms:GetPublicKey");
}

/// `keyhaven sign`, `verify` and `get-public-key` (PEM and DER); openssl verifies the CLI's
/// signature with the CLI's PEM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_signs_verifies_and_gives_the_public_key() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    let d = std::sync::Arc::new(TestDaemon::start(Backend::Sealed).await);
    let key = suite::create(&d, "ECC_NIST_P256", "SIGN_VERIFY")
        .await
        .unwrap()
        .key_id;
    let cli = |args: Vec<String>, stdin: Vec<u8>| {
        let d = d.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&d, &args, &stdin)
        })
    };
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let message = b"signed on the command line".to_vec();
    let (ok, out, err) = cli(
        args(&["sign", "--key", &key, "--algorithm", "ECDSA_SHA_256"]),
        message.clone(),
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let signature_b64 = out.trim().to_owned();
    let signature = B64.decode(&signature_b64).unwrap();

    let (ok, pem, err) = cli(args(&["get-public-key", "--key", &key]), Vec::new())
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    let dir = tempfile::tempdir().unwrap();
    let (pem_path, data, sig) = (
        dir.path().join("pub.pem"),
        dir.path().join("message"),
        dir.path().join("sig"),
    );
    std::fs::write(&pem_path, &pem).unwrap();
    std::fs::write(&data, &message).unwrap();
    std::fs::write(&sig, &signature).unwrap();
    let checked = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pem_path)
        .arg("-signature")
        .arg(&sig)
        .arg(&data)
        .output()
        .expect("the openssl binary is needed (apt-get install openssl)");
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("Verified OK"),
        "{checked:?}"
    );
    // DER is the API's bytes.
    let der = public_key(&d, &key).await.unwrap().public_key;
    let (ok, json, err) = cli(
        args(&["--output", "json", "get-public-key", "--key", &key]),
        Vec::new(),
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        B64.decode(json["PublicKey"].as_str().unwrap()).unwrap(),
        der
    );
    assert_eq!(json["KeySpec"], "ECC_NIST_P256");
    assert_eq!(
        json["SigningAlgorithms"],
        serde_json::json!(["ECDSA_SHA_256"])
    );

    let verify_args = |sig: &str| {
        args(&[
            "--output",
            "json",
            "verify",
            "--key",
            &key,
            "--algorithm",
            "ECDSA_SHA_256",
            "--signature",
            sig,
        ])
    };
    let (ok, out, err) = cli(verify_args(&signature_b64), message.clone())
        .await
        .unwrap();
    assert!(ok, "{err}");
    let verified: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(verified["SignatureValid"], true);
    let (ok, _, err) = cli(verify_args(&signature_b64), b"something else".to_vec())
        .await
        .unwrap();
    assert!(!ok);
    assert!(err.contains("KMSInvalidSignatureException"), "{err}");
}

/// RSA keys sign with RSASSA-PSS (MGF1 with the same hash, salt as long as the digest) and
/// PKCS#1 v1.5 over SHA-256/384/512; openssl verifies every signature with the public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_sign_with_every_algorithm_and_openssl_verifies() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = suite::create(&d, "RSA_2048", "SIGN_VERIFY").await.unwrap();
    assert_eq!(key.key_spec, "RSA_2048");
    assert_eq!(
        key.signing_algorithms,
        vec![
            "RSASSA_PSS_SHA_256",
            "RSASSA_PSS_SHA_384",
            "RSASSA_PSS_SHA_512",
            "RSASSA_PKCS1_V1_5_SHA_256",
            "RSASSA_PKCS1_V1_5_SHA_384",
            "RSASSA_PKCS1_V1_5_SHA_512",
        ]
    );
    let public = public_key(&d, &key.key_id).await.unwrap().public_key;
    let message = b"an RSA-signed release";
    let mut checked = 0;
    for (algorithm, digest, pss_salt, len) in [
        ("RSASSA_PSS_SHA_256", "-sha256", Some("32"), 32),
        ("RSASSA_PSS_SHA_384", "-sha384", Some("48"), 48),
        ("RSASSA_PSS_SHA_512", "-sha512", Some("64"), 64),
        ("RSASSA_PKCS1_V1_5_SHA_256", "-sha256", None, 32),
        ("RSASSA_PKCS1_V1_5_SHA_384", "-sha384", None, 48),
        ("RSASSA_PKCS1_V1_5_SHA_512", "-sha512", None, 64),
    ] {
        let signed = sign(&d, &key.key_id, message, "RAW", algorithm)
            .await
            .unwrap();
        assert_eq!(signed.signature.len(), 256, "{algorithm}");
        // PSS: the salt exactly as long as the digest, MGF1 with the same hash.
        let pss = pss_salt.map(|salt| {
            [
                format!("rsa_pss_saltlen:{salt}"),
                format!("rsa_mgf1_md:{}", &digest[1..]),
            ]
        });
        let sigopts: Vec<&str> = match &pss {
            Some([salt, mgf1]) => vec!["rsa_padding_mode:pss", salt.as_str(), mgf1.as_str()],
            None => vec![],
        };
        assert!(
            openssl_verifies_with(&public, message, &signed.signature, digest, &sigopts),
            "{algorithm}: openssl refused the signature"
        );
        assert!(
            !openssl_verifies_with(&public, b"other", &signed.signature, digest, &sigopts),
            "{algorithm}"
        );
        assert!(
            verify(
                &d,
                &key.key_id,
                message,
                "RAW",
                algorithm,
                &signed.signature
            )
            .await
            .unwrap()
            .signature_valid
        );
        let mut flipped = signed.signature.clone();
        flipped[100] ^= 0x10;
        assert_refused(
            verify(&d, &key.key_id, message, "RAW", algorithm, &flipped).await,
            Code::InvalidArgument,
            "KMSInvalidSignatureException",
        );
        assert_refused(
            sign(&d, &key.key_id, &vec![1u8; len + 1], "DIGEST", algorithm).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        checked += 1;
    }
    assert_eq!(checked, 6);
    assert_refused(
        sign(&d, &key.key_id, message, "RAW", "ECDSA_SHA_256").await,
        Code::InvalidArgument,
        "InvalidKeyUsageException",
    );
    // The larger sizes make keys of their size.
    for (spec, der_len) in [("RSA_3072", 422), ("RSA_4096", 550)] {
        let key = suite::create(&d, spec, "SIGN_VERIFY").await.unwrap();
        let public = public_key(&d, &key.key_id).await.unwrap().public_key;
        assert_eq!(public.len(), der_len, "{spec}");
        let signed = sign(&d, &key.key_id, message, "RAW", "RSASSA_PSS_SHA_256")
            .await
            .unwrap();
        assert_eq!(signed.signature.len(), der_len - 38, "{spec}");
        assert!(openssl_verifies_with(
            &public,
            message,
            &signed.signature,
            "-sha256",
            &["rsa_padding_mode:pss", "rsa_pss_saltlen:32"],
        ));
    }
}

/// ECC_NIST_P384 keys sign with ECDSA_SHA_384 (and nothing else); openssl verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p384_keys_sign_with_ecdsa_sha_384_and_openssl_verifies() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = suite::create(&d, "ECC_NIST_P384", "SIGN_VERIFY")
        .await
        .unwrap();
    assert_eq!(key.key_spec, "ECC_NIST_P384");
    assert_eq!(key.signing_algorithms, vec!["ECDSA_SHA_384"]);
    let public = public_key(&d, &key.key_id).await.unwrap().public_key;
    // id-ecPublicKey on secp384r1, uncompressed point: 120 bytes of DER.
    assert_eq!(public.len(), 120);
    let message = b"a P-384 signed message";
    let signed = sign(&d, &key.key_id, message, "RAW", "ECDSA_SHA_384")
        .await
        .unwrap();
    assert!(openssl_verifies_with(
        &public,
        message,
        &signed.signature,
        "-sha384",
        &[]
    ));
    assert!(!openssl_verifies_with(
        &public,
        b"other",
        &signed.signature,
        "-sha384",
        &[]
    ));
    use sha2::Digest;
    let digest = sha2::Sha384::digest(message).to_vec();
    assert!(
        verify(
            &d,
            &key.key_id,
            &digest,
            "DIGEST",
            "ECDSA_SHA_384",
            &signed.signature
        )
        .await
        .unwrap()
        .signature_valid
    );
    assert_refused(
        sign(&d, &key.key_id, &digest[..32], "DIGEST", "ECDSA_SHA_384").await,
        Code::InvalidArgument,
        "ValidationException",
    );
    for algorithm in ["ECDSA_SHA_256", "ECDSA_SHA_512", "RSASSA_PSS_SHA_384"] {
        assert_refused(
            sign(&d, &key.key_id, message, "RAW", algorithm).await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
    }
    let mut flipped = signed.signature.clone();
    flipped[10] ^= 0x01;
    assert_refused(
        verify(&d, &key.key_id, message, "RAW", "ECDSA_SHA_384", &flipped).await,
        Code::InvalidArgument,
        "KMSInvalidSignatureException",
    );
}

// ------------------------------------------- ECC_NIST_P521, ECC_SECG_P256K1 (sealed)

/// P-521 keys sign with ECDSA_SHA_512 and secp256k1 keys with ECDSA_SHA_256, DER signatures
/// that `openssl dgst -verify` accepts with the GetPublicKey DER; other algorithms, wrong
/// digest lengths and flipped bits are refused; the keys survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p521_and_secp256k1_keys_sign_and_openssl_verifies() {
    use sha2::Digest;
    let mut d = TestDaemon::start(Backend::Sealed).await;
    // (spec, algorithm, openssl digest, DER SPKI length, curve OID in the SPKI, digest)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        usize,
        &'static [u8],
        Vec<u8>,
    );
    let cases: [Case; 2] = [
        (
            "ECC_NIST_P521",
            "ECDSA_SHA_512",
            "-sha512",
            158,
            // secp521r1: 1.3.132.0.35
            &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
            sha2::Sha512::digest(b"a signed message").to_vec(),
        ),
        (
            "ECC_SECG_P256K1",
            "ECDSA_SHA_256",
            "-sha256",
            88,
            // secp256k1: 1.3.132.0.10
            &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
            sha2::Sha256::digest(b"a signed message").to_vec(),
        ),
    ];
    let message = b"a signed message";
    let mut made = Vec::new();
    for (spec, algorithm, digest_option, spki_len, oid, digest) in &cases {
        let key = suite::create(&d, spec, "SIGN_VERIFY").await.unwrap();
        assert_eq!(key.key_spec, *spec);
        assert_eq!(key.key_usage, "SIGN_VERIFY");
        assert_eq!(key.signing_algorithms, vec![algorithm.to_string()]);
        assert!(key.encryption_algorithms.is_empty(), "{key:?}");
        let public = public_key(&d, &key.key_id).await.unwrap();
        assert_eq!(public.signing_algorithms, vec![algorithm.to_string()]);
        assert_eq!(public.public_key.len(), *spki_len, "{spec}");
        assert!(
            public.public_key.windows(oid.len()).any(|w| w == *oid),
            "{spec}: the curve's OID is not in the public key"
        );
        let signed = sign(&d, &key.key_id, message, "RAW", algorithm)
            .await
            .unwrap();
        assert_eq!(signed.signing_algorithm, *algorithm);
        assert!(
            openssl_verifies_with(
                &public.public_key,
                message,
                &signed.signature,
                digest_option,
                &[]
            ),
            "{spec}: openssl refused the signature"
        );
        assert!(!openssl_verifies_with(
            &public.public_key,
            b"another message",
            &signed.signature,
            digest_option,
            &[]
        ));
        // The same digest signed as DIGEST verifies as RAW, and the other way round.
        let by_digest = sign(&d, &key.key_id, digest, "DIGEST", algorithm)
            .await
            .unwrap();
        assert!(
            verify(
                &d,
                &key.key_id,
                message,
                "RAW",
                algorithm,
                &by_digest.signature
            )
            .await
            .unwrap()
            .signature_valid
        );
        assert!(
            verify(
                &d,
                &key.key_id,
                digest,
                "DIGEST",
                algorithm,
                &signed.signature
            )
            .await
            .unwrap()
            .signature_valid
        );
        assert_refused(
            sign(&d, &key.key_id, &digest[..20], "DIGEST", algorithm).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        for other in [
            "ECDSA_SHA_256",
            "ECDSA_SHA_384",
            "ECDSA_SHA_512",
            "RSASSA_PSS_SHA_256",
        ] {
            if other == *algorithm {
                continue;
            }
            assert_refused(
                sign(&d, &key.key_id, message, "RAW", other).await,
                Code::InvalidArgument,
                "InvalidKeyUsageException",
            );
        }
        let mut flipped = signed.signature.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        assert_refused(
            verify(&d, &key.key_id, message, "RAW", algorithm, &flipped).await,
            Code::InvalidArgument,
            "KMSInvalidSignatureException",
        );
        made.push((key.key_id, public.public_key, signed.signature));
    }
    // The two keys' signatures do not cross.
    assert_refused(
        verify(&d, &made[1].0, message, "RAW", "ECDSA_SHA_256", &made[0].2).await,
        Code::InvalidArgument,
        "KMSInvalidSignatureException",
    );
    d.restart().await;
    for (i, (key, public, signature)) in made.iter().enumerate() {
        assert_eq!(&public_key(&d, key).await.unwrap().public_key, public);
        assert!(
            verify(&d, key, message, "RAW", cases[i].1, signature)
                .await
                .unwrap()
                .signature_valid
        );
        let again = sign(&d, key, message, "RAW", cases[i].1).await.unwrap();
        assert!(openssl_verifies_with(
            public,
            message,
            &again.signature,
            cases[i].2,
            &[]
        ));
    }
}

// ------------------------------- RSA ENCRYPT_DECRYPT, KEY_AGREEMENT, data key pairs (sealed)

async fn encrypt_with(
    client: &Client,
    key: &str,
    plaintext: &[u8],
    algorithm: &str,
    context: &[(&str, &str)],
) -> Result<v1::EncryptResponse, tonic::Status> {
    let request = v1::EncryptRequest {
        key_id: key.into(),
        plaintext: plaintext.to_vec(),
        encryption_context: common::pairs(context),
        encryption_algorithm: algorithm.into(),
    };
    Ok(client
        .kms()
        .encrypt(client.signed("Encrypt", request))
        .await?
        .into_inner())
}

async fn decrypt_with(
    client: &Client,
    key: &str,
    ciphertext: &[u8],
    algorithm: &str,
    context: &[(&str, &str)],
) -> Result<v1::DecryptResponse, tonic::Status> {
    let request = v1::DecryptRequest {
        key_id: key.into(),
        ciphertext_blob: ciphertext.to_vec(),
        encryption_context: common::pairs(context),
        encryption_algorithm: algorithm.into(),
    };
    Ok(client
        .kms()
        .decrypt(client.signed("Decrypt", request))
        .await?
        .into_inner())
}

async fn derive(
    client: &Client,
    key: &str,
    peer: &[u8],
    algorithm: &str,
) -> Result<v1::DeriveSharedSecretResponse, tonic::Status> {
    let request = v1::DeriveSharedSecretRequest {
        key_id: key.into(),
        key_agreement_algorithm: algorithm.into(),
        public_key: peer.to_vec(),
    };
    Ok(client
        .kms()
        .derive_shared_secret(client.signed("DeriveSharedSecret", request))
        .await?
        .into_inner())
}

async fn data_key_pair(
    client: &Client,
    key: &str,
    spec: &str,
    context: &[(&str, &str)],
) -> Result<v1::GenerateDataKeyPairResponse, tonic::Status> {
    let request = v1::GenerateDataKeyPairRequest {
        key_id: key.into(),
        key_pair_spec: spec.into(),
        encryption_context: common::pairs(context),
    };
    Ok(client
        .kms()
        .generate_data_key_pair(client.signed("GenerateDataKeyPair", request))
        .await?
        .into_inner())
}

/// Runs `openssl` with `args` in `dir`, failing the test with its stderr if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl binary is needed (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Data that `openssl pkeyutl -encrypt` encrypts with the GetPublicKey DER (RSAES-OAEP with
/// SHA-1 and SHA-256) decrypts in Keyhaven; Keyhaven's own ciphertexts round-trip; AWS's
/// plaintext limits, algorithm and usage refusals hold, and nothing else opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_encryption_keys_decrypt_what_openssl_encrypts() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let c = &d.client;
    let dir = tempfile::tempdir().unwrap();
    // (spec, SHA-1 limit, SHA-256 limit)
    for (spec, modulus_bytes, sha1_most, sha256_most) in
        [("RSA_2048", 256, 214, 190), ("RSA_3072", 384, 342, 318)]
    {
        let key = suite::create(&d, spec, "ENCRYPT_DECRYPT").await.unwrap();
        let id = key.key_id.as_str();
        assert_eq!(key.key_usage, "ENCRYPT_DECRYPT");
        assert_eq!(
            key.encryption_algorithms,
            vec!["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
        );
        assert!(key.signing_algorithms.is_empty(), "{key:?}");
        let public = public_key(&d, id).await.unwrap();
        assert_eq!(
            public.encryption_algorithms,
            vec!["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
        );
        assert!(public.signing_algorithms.is_empty());
        std::fs::write(dir.path().join("pub.der"), &public.public_key).unwrap();
        for (algorithm, md, most) in [
            ("RSAES_OAEP_SHA_1", "sha1", sha1_most),
            ("RSAES_OAEP_SHA_256", "sha256", sha256_most),
        ] {
            let message = vec![0x5a; most];
            std::fs::write(dir.path().join("message"), &message).unwrap();
            let md_option = format!("rsa_oaep_md:{md}");
            openssl(
                dir.path(),
                &[
                    "pkeyutl",
                    "-encrypt",
                    "-pubin",
                    "-keyform",
                    "DER",
                    "-inkey",
                    "pub.der",
                    "-pkeyopt",
                    "rsa_padding_mode:oaep",
                    "-pkeyopt",
                    &md_option,
                    "-in",
                    "message",
                    "-out",
                    "ciphertext",
                ],
            );
            let ciphertext = std::fs::read(dir.path().join("ciphertext")).unwrap();
            let opened = decrypt_with(c, id, &ciphertext, algorithm, &[])
                .await
                .unwrap();
            assert_eq!(opened.plaintext, message, "{spec} {algorithm}");
            assert_eq!(opened.encryption_algorithm, algorithm);
            assert!(opened.key_id.ends_with(id));
            // The other OAEP hash does not open it.
            let other = if md == "sha1" {
                "RSAES_OAEP_SHA_256"
            } else {
                "RSAES_OAEP_SHA_1"
            };
            assert_refused(
                decrypt_with(c, id, &ciphertext, other, &[]).await,
                Code::InvalidArgument,
                "InvalidCiphertextException",
            );
            let mut flipped = ciphertext.clone();
            flipped[7] ^= 1;
            assert_refused(
                decrypt_with(c, id, &flipped, algorithm, &[]).await,
                Code::InvalidArgument,
                "InvalidCiphertextException",
            );
            // Keyhaven's ciphertext: bare RSA, randomised, and it opens again.
            let sealed = encrypt_with(c, id, &message, algorithm, &[]).await.unwrap();
            assert_eq!(sealed.encryption_algorithm, algorithm);
            assert_eq!(sealed.ciphertext_blob.len(), modulus_bytes, "{spec}");
            let again = encrypt_with(c, id, &message, algorithm, &[]).await.unwrap();
            assert_ne!(sealed.ciphertext_blob, again.ciphertext_blob);
            let opened = decrypt_with(c, id, &sealed.ciphertext_blob, algorithm, &[])
                .await
                .unwrap();
            assert_eq!(opened.plaintext, message);
            // One byte over AWS's limit is refused.
            assert_refused(
                encrypt_with(c, id, &vec![1; most + 1], algorithm, &[]).await,
                Code::InvalidArgument,
                "ValidationException",
            );
            // No encryption context with RSA, no Decrypt without the key named.
            assert_refused(
                encrypt_with(c, id, b"m", algorithm, &[("k", "v")]).await,
                Code::InvalidArgument,
                "ValidationException",
            );
            assert_refused(
                decrypt_with(c, "", &ciphertext, algorithm, &[]).await,
                Code::InvalidArgument,
                "ValidationException",
            );
        }
    }
    let rsa = suite::create(&d, "RSA_2048", "ENCRYPT_DECRYPT")
        .await
        .unwrap()
        .key_id;
    let signer = suite::create(&d, "RSA_2048", "SIGN_VERIFY")
        .await
        .unwrap()
        .key_id;
    let aes = d.create_key("aes").await.key_id;
    let before = d.list_all_keys().await;
    let aes_blob = d.encrypt(&aes, b"secret", &[]).await.unwrap();
    for (result, reason) in [
        // SYMMETRIC_DEFAULT (the default) with an RSA key, RSA algorithms with an AES key
        // or an RSA signing key, SM2PKE (AWS's, Keyhaven has no SM2 keys).
        (
            encrypt_with(c, &rsa, b"m", "", &[]).await.map(|_| ()),
            "InvalidKeyUsageException",
        ),
        (
            encrypt_with(c, &rsa, b"m", "SYMMETRIC_DEFAULT", &[])
                .await
                .map(|_| ()),
            "InvalidKeyUsageException",
        ),
        (
            encrypt_with(c, &aes, b"m", "RSAES_OAEP_SHA_256", &[])
                .await
                .map(|_| ()),
            "InvalidKeyUsageException",
        ),
        (
            encrypt_with(c, &signer, b"m", "RSAES_OAEP_SHA_256", &[])
                .await
                .map(|_| ()),
            "InvalidKeyUsageException",
        ),
        (
            encrypt_with(c, &rsa, b"m", "SM2PKE", &[]).await.map(|_| ()),
            "InvalidKeyUsageException",
        ),
        (
            decrypt_with(c, &aes, &aes_blob, "RSAES_OAEP_SHA_256", &[])
                .await
                .map(|_| ()),
            "InvalidKeyUsageException",
        ),
        (
            sign(&d, &rsa, b"m", "RAW", "RSASSA_PSS_SHA_256")
                .await
                .map(|_| ()),
            "InvalidKeyUsageException",
        ),
        (
            c.kms()
                .generate_data_key(c.signed(
                    "GenerateDataKey",
                    v1::GenerateDataKeyRequest {
                        key_id: rsa.clone(),
                        key_spec: "AES_256".into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
            "InvalidKeyUsageException",
        ),
        (
            encrypt_with(c, &rsa, b"m", "RSAES_OAEP_SHA_512", &[])
                .await
                .map(|_| ()),
            "ValidationException",
        ),
        // The symmetric blob of another key with the RSA key's algorithm does not open.
        (
            decrypt_with(c, &rsa, &aes_blob, "RSAES_OAEP_SHA_256", &[])
                .await
                .map(|_| ()),
            "InvalidCiphertextException",
        ),
    ] {
        assert_refused(result, Code::InvalidArgument, reason);
    }
    // Asymmetric keys do not rotate.
    assert_refused(
        d.client
            .kms()
            .rotate_key_on_demand(d.client.signed(
                "RotateKeyOnDemand",
                v1::RotateKeyOnDemandRequest {
                    key_id: rsa.clone(),
                },
            ))
            .await,
        Code::FailedPrecondition,
        "UnsupportedOperationException",
    );
    assert_eq!(d.list_all_keys().await, before);
}

/// ECDH with a KEY_AGREEMENT key: Keyhaven's shared secret with a peer's public key equals
/// what `openssl pkeyutl -derive` computes with the peer's private key and Keyhaven's public
/// key, on all three NIST curves; peers on other curves and other usages are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_agreement_keys_derive_what_openssl_derives() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let c = &d.client;
    let dir = tempfile::tempdir().unwrap();
    let mut peers = Vec::new();
    for (spec, curve, secret_len) in [
        ("ECC_NIST_P256", "P-256", 32),
        ("ECC_NIST_P384", "P-384", 48),
        ("ECC_NIST_P521", "P-521", 66),
    ] {
        let key = suite::create(&d, spec, "KEY_AGREEMENT").await.unwrap();
        let id = key.key_id.as_str();
        assert_eq!(key.key_usage, "KEY_AGREEMENT");
        assert_eq!(key.key_agreement_algorithms, vec!["ECDH"]);
        assert!(key.signing_algorithms.is_empty() && key.encryption_algorithms.is_empty());
        let public = public_key(&d, id).await.unwrap();
        assert_eq!(public.key_agreement_algorithms, vec!["ECDH"]);
        assert!(public.signing_algorithms.is_empty());
        std::fs::write(dir.path().join("keyhaven.der"), &public.public_key).unwrap();
        let curve_option = format!("ec_paramgen_curve:{curve}");
        openssl(
            dir.path(),
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &curve_option,
                "-out",
                "peer.pem",
            ],
        );
        openssl(
            dir.path(),
            &[
                "pkey", "-in", "peer.pem", "-pubout", "-outform", "DER", "-out", "peer.der",
            ],
        );
        openssl(
            dir.path(),
            &[
                "pkeyutl",
                "-derive",
                "-inkey",
                "peer.pem",
                "-peerkey",
                "keyhaven.der",
                "-peerform",
                "DER",
                "-out",
                "secret",
            ],
        );
        let expected = std::fs::read(dir.path().join("secret")).unwrap();
        assert_eq!(expected.len(), secret_len);
        let peer = std::fs::read(dir.path().join("peer.der")).unwrap();
        let derived = derive(c, id, &peer, "ECDH").await.unwrap();
        assert_eq!(derived.shared_secret, expected, "{spec}");
        assert_eq!(derived.key_agreement_algorithm, "ECDH");
        assert_eq!(derived.key_origin, "AWS_KMS");
        assert!(derived.key_id.ends_with(id));
        // Signing is not this key's usage.
        let digest = vec![1u8; 32];
        assert_refused(
            sign(&d, id, &digest, "DIGEST", "ECDSA_SHA_256").await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
        assert_refused(
            derive(c, id, &peer, "ECDHE").await,
            Code::InvalidArgument,
            "ValidationException",
        );
        peers.push((key.key_id.clone(), peer));
    }
    // A P-384 peer for the P-256 key, garbage, an RSA public key: refused.
    let rsa = suite::create(&d, "RSA_2048", "SIGN_VERIFY")
        .await
        .unwrap()
        .key_id;
    let rsa_public = public_key(&d, &rsa).await.unwrap().public_key;
    for peer in [
        peers[1].1.clone(),
        vec![0x30, 0x03, 1, 2, 3],
        rsa_public,
        Vec::new(),
    ] {
        assert_refused(
            derive(c, &peers[0].0, &peer, "ECDH").await,
            Code::InvalidArgument,
            "ValidationException",
        );
    }
    // Signing keys, AES keys and RSA keys do not agree on keys.
    let signer = suite::create(&d, "ECC_NIST_P256", "SIGN_VERIFY")
        .await
        .unwrap()
        .key_id;
    let aes = d.create_key("aes").await.key_id;
    for key in [&signer, &aes, &rsa] {
        assert_refused(
            derive(c, key, &peers[0].1, "ECDH").await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
    }
}

/// GenerateDataKeyPair: the private key is PKCS#8 DER whose public part (computed by openssl)
/// is the PublicKey answered, and its ciphertext is a blob that Decrypt opens (with the same
/// encryption context) to the same private key; WithoutPlaintext answers no private key and
/// its ciphertext opens as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_key_pairs_decrypt_to_a_private_key_whose_public_key_matches() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let c = &d.client;
    let aes = d.create_key("pairs").await.key_id;
    let dir = tempfile::tempdir().unwrap();
    let context = [("purpose", "pairs")];
    let public_of = |private: &[u8]| {
        std::fs::write(dir.path().join("private.der"), private).unwrap();
        openssl(
            dir.path(),
            &[
                "pkey",
                "-inform",
                "DER",
                "-in",
                "private.der",
                "-pubout",
                "-outform",
                "DER",
                "-out",
                "public.der",
            ],
        );
        std::fs::read(dir.path().join("public.der")).unwrap()
    };
    for spec in [
        "RSA_2048",
        "ECC_NIST_P256",
        "ECC_NIST_P384",
        "ECC_NIST_P521",
        "ECC_SECG_P256K1",
    ] {
        let pair = data_key_pair(c, &aes, spec, &context).await.unwrap();
        assert_eq!(pair.key_pair_spec, spec);
        assert!(pair.key_id.ends_with(&aes));
        assert_eq!(
            public_of(&pair.private_key_plaintext),
            pair.public_key,
            "{spec}"
        );
        let opened = d
            .decrypt(&pair.private_key_ciphertext_blob, &context)
            .await
            .unwrap();
        assert_eq!(opened, pair.private_key_plaintext.to_vec(), "{spec}");
        assert_refused(
            d.decrypt(&pair.private_key_ciphertext_blob, &[("purpose", "other")])
                .await,
            Code::InvalidArgument,
            "InvalidCiphertextException",
        );
        let request = v1::GenerateDataKeyPairWithoutPlaintextRequest {
            key_id: aes.clone(),
            key_pair_spec: spec.into(),
            encryption_context: common::pairs(&context),
        };
        let without = c
            .kms()
            .generate_data_key_pair_without_plaintext(
                c.signed("GenerateDataKeyPairWithoutPlaintext", request),
            )
            .await
            .unwrap()
            .into_inner();
        assert_eq!(without.key_pair_spec, spec);
        let private = d
            .decrypt(&without.private_key_ciphertext_blob, &context)
            .await
            .unwrap();
        assert_eq!(public_of(&private), without.public_key, "{spec}");
        assert_ne!(
            without.public_key, pair.public_key,
            "{spec}: pairs are fresh"
        );
    }
    let rsa = suite::create(&d, "RSA_2048", "ENCRYPT_DECRYPT")
        .await
        .unwrap()
        .key_id;
    let mac = suite::hmac_key(&d, "HMAC_256").await.key_id;
    for key in [&rsa, &mac] {
        assert_refused(
            data_key_pair(c, key, "ECC_NIST_P256", &[]).await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
    }
    for spec in ["SM2", "HMAC_256", "SYMMETRIC_DEFAULT", "", "rsa_2048"] {
        assert_refused(
            data_key_pair(c, &aes, spec, &[]).await,
            Code::InvalidArgument,
            "ValidationException",
        );
    }
}

/// `kms:GenerateDataKeyPair`, `kms:GenerateDataKeyPairWithoutPlaintext` and
/// `kms:DeriveSharedSecret` are actions of their own; `kms:EncryptionAlgorithm`,
/// `kms:DataKeyPairSpec`, `kms:KeyAgreementAlgorithm`, `kms:KeySpec` and `kms:KeyUsage` are
/// judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_actions_and_their_condition_keys_are_judged() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let aes = d.create_key("pairs").await.key_id;
    let rsa = suite::create(&d, "RSA_2048", "ENCRYPT_DECRYPT")
        .await
        .unwrap()
        .key_id;
    let agreeing = suite::create(&d, "ECC_NIST_P256", "KEY_AGREEMENT")
        .await
        .unwrap()
        .key_id;
    let peer = public_key(&d, &agreeing).await.unwrap().public_key;
    let dave = d
        .create_user(
            "dave",
            Some(
                r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"kms:GenerateDataKeyPair","Resource":"*",
                 "Condition":{"StringEquals":{"kms:DataKeyPairSpec":"ECC_NIST_P256",
                                              "kms:EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}}},
                {"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*",
                 "Condition":{"StringEquals":{"kms:EncryptionAlgorithm":"RSAES_OAEP_SHA_256",
                                              "kms:KeyUsage":"ENCRYPT_DECRYPT",
                                              "kms:KeySpec":"RSA_2048"}}},
                {"Effect":"Allow","Action":"kms:DeriveSharedSecret","Resource":"*",
                 "Condition":{"StringEquals":{"kms:KeyAgreementAlgorithm":"ECDH",
                                              "kms:KeyUsage":"KEY_AGREEMENT"}}}]}"#,
            ),
        )
        .await;
    data_key_pair(&dave, &aes, "ECC_NIST_P256", &[])
        .await
        .unwrap();
    assert_denied(
        data_key_pair(&dave, &aes, "ECC_NIST_P384", &[]).await,
        "kms:GenerateDataKeyPair",
    );
    let request = v1::GenerateDataKeyPairWithoutPlaintextRequest {
        key_id: aes.clone(),
        key_pair_spec: "ECC_NIST_P256".into(),
        encryption_context: Default::default(),
    };
    assert_denied(
        dave.kms()
            .generate_data_key_pair_without_plaintext(
                dave.signed("GenerateDataKeyPairWithoutPlaintext", request),
            )
            .await,
        "kms:GenerateDataKeyPairWithoutPlaintext",
    );
    let sealed = encrypt_with(&dave, &rsa, b"m", "RSAES_OAEP_SHA_256", &[])
        .await
        .unwrap();
    assert_eq!(
        decrypt_with(
            &dave,
            &rsa,
            &sealed.ciphertext_blob,
            "RSAES_OAEP_SHA_256",
            &[]
        )
        .await
        .unwrap()
        .plaintext,
        b"m".to_vec()
    );
    assert_denied(
        encrypt_with(&dave, &rsa, b"m", "RSAES_OAEP_SHA_1", &[]).await,
        "kms:Encrypt",
    );
    // AES encryption is SYMMETRIC_DEFAULT on an AES key: neither condition holds.
    assert_denied(d_encrypt_as(&dave, &aes).await, "kms:Encrypt");
    derive(&dave, &agreeing, &peer, "ECDH").await.unwrap();
    let signer = suite::create(&d, "ECC_NIST_P256", "SIGN_VERIFY")
        .await
        .unwrap()
        .key_id;
    assert_denied(
        derive(&dave, &signer, &peer, "ECDH").await,
        "kms:DeriveSharedSecret",
    );
}

async fn d_encrypt_as(client: &Client, key: &str) -> Result<v1::EncryptResponse, tonic::Status> {
    encrypt_with(client, key, b"m", "", &[]).await
}

/// `keyhaven data-key-pair` (AWS CLI JSON; openssl finds the public key in the private key,
/// and `decrypt` opens the private key's ciphertext), `derive-shared-secret` (openssl derives
/// the same secret), and `encrypt`/`decrypt --encryption-algorithm` with an RSA key (openssl
/// encrypts, the command line decrypts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_makes_key_pairs_derives_and_encrypts_with_rsa() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    let d = std::sync::Arc::new(TestDaemon::start(Backend::Sealed).await);
    let cli = |args: Vec<String>, stdin: Vec<u8>| {
        let d = d.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_cli(&d, &args, &stdin)
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let dir = tempfile::tempdir().unwrap();
    let aes = d.create_key("pairs").await.key_id;

    // data-key-pair
    let (ok, out, err) = cli(
        args(&[
            "--output",
            "json",
            "data-key-pair",
            "--key",
            &aes,
            "--key-pair-spec",
            "ECC_NIST_P384",
            "--context",
            "purpose=cli",
        ]),
        Vec::new(),
    )
    .await;
    assert!(ok, "{err}");
    let pair: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pair["KeyPairSpec"], "ECC_NIST_P384");
    assert!(pair["KeyId"].as_str().unwrap().ends_with(&aes));
    let private = B64
        .decode(pair["PrivateKeyPlaintext"].as_str().unwrap())
        .unwrap();
    let public = B64.decode(pair["PublicKey"].as_str().unwrap()).unwrap();
    std::fs::write(dir.path().join("private.der"), &private).unwrap();
    openssl(
        dir.path(),
        &[
            "pkey",
            "-inform",
            "DER",
            "-in",
            "private.der",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "public.der",
        ],
    );
    assert_eq!(
        std::fs::read(dir.path().join("public.der")).unwrap(),
        public
    );
    let (ok, opened, err) = cli(
        args(&["--output", "json", "decrypt", "--context", "purpose=cli"]),
        pair["PrivateKeyCiphertextBlob"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    )
    .await;
    assert!(ok, "{err}");
    let opened: serde_json::Value = serde_json::from_str(&opened).unwrap();
    assert_eq!(
        B64.decode(opened["Plaintext"].as_str().unwrap()).unwrap(),
        private
    );
    let (ok, out, err) = cli(
        args(&[
            "--output",
            "json",
            "data-key-pair",
            "--key",
            &aes,
            "--key-pair-spec",
            "RSA_2048",
            "--without-plaintext",
        ]),
        Vec::new(),
    )
    .await;
    assert!(ok, "{err}");
    let without: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(without.get("PrivateKeyPlaintext").is_none(), "{without}");
    assert_eq!(without["KeyPairSpec"], "RSA_2048");
    let (ok, _, err) = cli(
        args(&["data-key-pair", "--key", &aes, "--key-pair-spec", "SM2"]),
        Vec::new(),
    )
    .await;
    assert!(!ok && err.contains("ValidationException"), "{err}");

    // derive-shared-secret, the peer's key as PEM on stdin
    let agreeing = suite::create(&d, "ECC_NIST_P256", "KEY_AGREEMENT")
        .await
        .unwrap()
        .key_id;
    let (ok, pem, err) = cli(args(&["get-public-key", "--key", &agreeing]), Vec::new()).await;
    assert!(ok, "{err}");
    std::fs::write(dir.path().join("keyhaven.pem"), &pem).unwrap();
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "peer.pem",
        ],
    );
    openssl(
        dir.path(),
        &["pkey", "-in", "peer.pem", "-pubout", "-out", "peer.pub.pem"],
    );
    openssl(
        dir.path(),
        &[
            "pkeyutl",
            "-derive",
            "-inkey",
            "peer.pem",
            "-peerkey",
            "keyhaven.pem",
            "-out",
            "secret",
        ],
    );
    let expected = std::fs::read(dir.path().join("secret")).unwrap();
    let peer_pem = std::fs::read(dir.path().join("peer.pub.pem")).unwrap();
    let (ok, out, err) = cli(
        args(&[
            "--output",
            "json",
            "derive-shared-secret",
            "--key",
            &agreeing,
        ]),
        peer_pem.clone(),
    )
    .await;
    assert!(ok, "{err}");
    let derived: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(derived["KeyAgreementAlgorithm"], "ECDH");
    assert_eq!(derived["KeyOrigin"], "AWS_KMS");
    assert_eq!(
        B64.decode(derived["SharedSecret"].as_str().unwrap())
            .unwrap(),
        expected
    );
    let (ok, text, err) = cli(
        args(&["derive-shared-secret", "--key", &agreeing]),
        peer_pem,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(B64.decode(text.trim()).unwrap(), expected);

    // encrypt / decrypt --encryption-algorithm with an RSA key
    let rsa = suite::create(&d, "RSA_2048", "ENCRYPT_DECRYPT")
        .await
        .unwrap()
        .key_id;
    let (ok, out, err) = cli(
        args(&["--output", "json", "get-public-key", "--key", &rsa]),
        Vec::new(),
    )
    .await;
    assert!(ok, "{err}");
    let described: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        described["EncryptionAlgorithms"],
        serde_json::json!(["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
    );
    let rsa_public = B64
        .decode(described["PublicKey"].as_str().unwrap())
        .unwrap();
    std::fs::write(dir.path().join("rsa.der"), &rsa_public).unwrap();
    std::fs::write(dir.path().join("message"), b"from openssl").unwrap();
    openssl(
        dir.path(),
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-keyform",
            "DER",
            "-inkey",
            "rsa.der",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-in",
            "message",
            "-out",
            "ciphertext",
        ],
    );
    let ciphertext = B64.encode(std::fs::read(dir.path().join("ciphertext")).unwrap());
    let (ok, opened, err) = cli(
        args(&[
            "decrypt",
            "--key",
            &rsa,
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_256",
        ]),
        ciphertext.clone().into_bytes(),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(opened, "from openssl");
    let (ok, _, err) = cli(
        args(&[
            "decrypt",
            "--key",
            &rsa,
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_1",
        ]),
        ciphertext.into_bytes(),
    )
    .await;
    assert!(!ok && err.contains("InvalidCiphertextException"), "{err}");
    let (ok, out, err) = cli(
        args(&[
            "--output",
            "json",
            "encrypt",
            "--key",
            &rsa,
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_1",
        ]),
        b"round trip".to_vec(),
    )
    .await;
    assert!(ok, "{err}");
    let sealed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sealed["EncryptionAlgorithm"], "RSAES_OAEP_SHA_1");
    let (ok, opened, err) = cli(
        args(&[
            "decrypt",
            "--key",
            &rsa,
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_1",
        ]),
        sealed["CiphertextBlob"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(opened, "round trip");
    let (ok, _, err) = cli(args(&["encrypt", "--key", &rsa]), b"m".to_vec()).await;
    assert!(!ok && err.contains("InvalidKeyUsageException"), "{err}");
}

/// A data key pair's private key can be encrypted under an AES key of the PKCS#11 keystore
/// too (it is a symmetric data key there), and Decrypt opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_key_pairs_are_wrapped_by_pkcs11_aes_keys() {
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let aes = d.create_key("pairs in the device").await;
    assert!(aes.keystore.starts_with("pkcs11:"), "{}", aes.keystore);
    let pair = data_key_pair(&d.client, &aes.key_id, "ECC_NIST_P256", &[("k", "v")])
        .await
        .unwrap();
    let opened = d
        .decrypt(&pair.private_key_ciphertext_blob, &[("k", "v")])
        .await
        .unwrap();
    assert_eq!(opened, pair.private_key_plaintext.to_vec());
    assert_refused(
        d.decrypt(&pair.private_key_ciphertext_blob, &[]).await,
        Code::InvalidArgument,
        "InvalidCiphertextException",
    );
}

/// RSA encryption keys on the PKCS#11 keystore, end to end through the daemon: the key pair is
/// made in the device, Encrypt uses the public key, and Decrypt is done by the device
/// (SoftHSM2's OAEP takes SHA-1; SHA-256 is refused by name there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_rsa_encryption_keys_decrypt_in_the_device() {
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let key = suite::create(&d, "RSA_2048", "ENCRYPT_DECRYPT")
        .await
        .expect("an RSA_2048 ENCRYPT_DECRYPT key on the PKCS#11 keystore")
        .key_id;
    let encrypt = |algorithm: &'static str| {
        let (client, key) = (d.client.clone(), key.clone());
        async move {
            client
                .kms()
                .encrypt(client.signed(
                    "Encrypt",
                    v1::EncryptRequest {
                        key_id: key,
                        plaintext: b"opened by the device".to_vec(),
                        encryption_algorithm: algorithm.into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| r.into_inner().ciphertext_blob)
        }
    };
    let decrypt = |algorithm: &'static str, blob: Vec<u8>| {
        let (client, key) = (d.client.clone(), key.clone());
        async move {
            client
                .kms()
                .decrypt(client.signed(
                    "Decrypt",
                    v1::DecryptRequest {
                        key_id: key,
                        ciphertext_blob: blob,
                        encryption_algorithm: algorithm.into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| r.into_inner().plaintext)
        }
    };
    let blob = encrypt("RSAES_OAEP_SHA_1").await.expect("Encrypt");
    assert_eq!(blob.len(), 256);
    assert_eq!(
        decrypt("RSAES_OAEP_SHA_1", blob.clone())
            .await
            .expect("Decrypt")
            .as_ref(),
        b"opened by the device"
    );
    let mut flipped = blob.clone();
    flipped[100] ^= 1;
    assert_refused(
        decrypt("RSAES_OAEP_SHA_1", flipped).await,
        Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    let sha256 = encrypt("RSAES_OAEP_SHA_256")
        .await
        .expect("Encrypt with SHA-256");
    let refused = decrypt("RSAES_OAEP_SHA_256", sha256).await;
    let message = refused
        .as_ref()
        .err()
        .map(|s| s.message().to_owned())
        .unwrap_or_default();
    assert_refused(
        refused,
        Code::FailedPrecondition,
        "UnsupportedOperationException",
    );
    assert!(message.contains("RSAES_OAEP_SHA_256"), "{message}");
}
