//! Key types in the PKCS#11 keystore, on both token implementations (SoftHSM2 and NSS's
//! softoken): key pairs made in the device that sign there (ECDSA, RSASSA-PSS, RSASSA-PKCS1
//! v1.5) with signatures `openssl` verifies on the GetPublicKey DER, private keys that are
//! sensitive, never extractable token objects, both halves of a pair destroyed together, and
//! HMAC keys on the second token; ECDH (`KEY_AGREEMENT`) in the device, whose shared secrets
//! are those `openssl pkeyutl -derive` computes on the other side.

mod common;

macro_rules! on_both_tokens {
    ([$($name:ident => $backend:expr),*], $tests:tt) => {
        $(on_both_tokens!(@token $name, $backend, $tests);)*
    };
    (@token $name:ident, $backend:expr, [$($test:ident),* $(,)?]) => {
        mod $name {
            use super::common::Backend;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($backend).await;
                }
            )*
        }
    };
}

on_both_tokens!(
    [softhsm2 => Backend::Pkcs11, nss => Backend::Pkcs11Second],
    [
        ec_key_pairs_sign_in_the_device_and_openssl_verifies,
        rsa_key_pairs_sign_with_every_algorithm_and_openssl_verifies,
        private_keys_are_sensitive_token_objects_and_pairs_go_whole,
        macs_are_made_and_checked_in_the_device,
        a_key_pair_generation_cut_short_is_destroyed_whole_at_start_up,
        key_agreement_keys_derive_in_the_device_what_openssl_derives,
    ]
);

/// secp256k1 (AWS's ECC_SECG_P256K1) in the device: SoftHSM2 makes it; NSS's softoken lacks
/// the curve, and says so with an answer the keystore turns into `UnsupportedOperationException`
/// naming the spec (CKR_DOMAIN_PARAMS_INVALID, CKR_CURVE_NOT_SUPPORTED,
/// CKR_ATTRIBUTE_VALUE_INVALID or CKR_TEMPLATE_INCONSISTENT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secp256k1_is_made_by_softhsm2_and_refused_by_name_by_nss() {
    let secp256k1 = vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
    for (backend, offered) in [(Backend::Pkcs11, true), (Backend::Pkcs11Second, false)] {
        let d = TestDaemon::start(backend).await;
        // End to end: CreateKey of the spec on the keystore.
        let keys = d.list_all_keys().await.len();
        let created = create(&d, "ECC_SECG_P256K1", "SIGN_VERIFY").await;
        if offered {
            let key = created.expect("SoftHSM2 makes secp256k1 key pairs");
            assert_eq!(key.key_spec, "ECC_SECG_P256K1");
        } else {
            let status = created.expect_err("NSS's softoken lacks secp256k1");
            assert_refused::<()>(
                Err(status.clone()),
                Code::FailedPrecondition,
                "UnsupportedOperationException",
            );
            assert!(
                status.message().contains("ECC_SECG_P256K1"),
                "the refusal names the spec: {}",
                status.message()
            );
            assert_eq!(
                d.list_all_keys().await.len(),
                keys,
                "a refused CreateKey made a key"
            );
        }
        let session = inspecting_session(backend);
        let label = format!("probe:{}", uuid::Uuid::new_v4()).into_bytes();
        let made = session.generate_key_pair(
            &cryptoki::mechanism::Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::Verify(true),
                Attribute::EcParams(secp256k1.clone()),
                Attribute::Label(label.clone()),
            ],
            &[
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
                Attribute::Label(label),
            ],
        );
        match (made, offered) {
            (Ok((public, private)), true) => {
                session.destroy_object(public).unwrap();
                session.destroy_object(private).unwrap();
            }
            (
                Err(CryptokiError::Pkcs11(
                    RvError::DomainParamsInvalid
                    | RvError::CurveNotSupported
                    | RvError::AttributeValueInvalid
                    | RvError::TemplateInconsistent,
                    _,
                )),
                false,
            ) => {}
            (other, _) => panic!("{backend:?}: secp256k1: {other:?}"),
        }
    }
}

#[test]
fn softhsm2_rsa_oaep_decrypts_in_the_device_what_openssl_encrypts() {
    // SoftHSM2 2.6 takes CKM_RSA_PKCS_OAEP with SHA-1 only: SHA-256 is refused by name.
    rsa_oaep_decrypts_in_the_device_what_openssl_encrypts(Backend::Pkcs11, false);
}

#[test]
fn nss_rsa_oaep_decrypts_in_the_device_what_openssl_encrypts() {
    rsa_oaep_decrypts_in_the_device_what_openssl_encrypts(Backend::Pkcs11Second, true);
}

use common::{Backend, TestDaemon, assert_refused};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use keyhaven::keystore::pkcs11::TokenSelector;
use keyhaven::proto::v1;
use tonic::Code;

async fn create(d: &TestDaemon, spec: &str, usage: &str) -> Result<v1::KeyMetadata, tonic::Status> {
    let request = v1::CreateKeyRequest {
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
    algorithm: &str,
    signature: &[u8],
) -> Result<v1::VerifyResponse, tonic::Status> {
    let request = v1::VerifyRequest {
        key_id: key.into(),
        message: message.to_vec(),
        message_type: "RAW".into(),
        signing_algorithm: algorithm.into(),
        signature: signature.to_vec(),
    };
    Ok(d.client
        .kms()
        .verify(d.client.signed("Verify", request))
        .await?
        .into_inner())
}

async fn public_key(d: &TestDaemon, key: &str) -> Vec<u8> {
    let request = v1::GetPublicKeyRequest { key_id: key.into() };
    d.client
        .kms()
        .get_public_key(d.client.signed("GetPublicKey", request))
        .await
        .expect("GetPublicKey")
        .into_inner()
        .public_key
}

async fn orphans(d: &TestDaemon) -> Vec<v1::OrphanedKeyMaterial> {
    d.client
        .kms()
        .list_orphaned_key_material(d.client.signed(
            "ListOrphanedKeyMaterial",
            v1::ListOrphanedKeyMaterialRequest::default(),
        ))
        .await
        .expect("ListOrphanedKeyMaterial")
        .into_inner()
        .orphans
}

/// Whether `openssl dgst` (a tool nobody here wrote) accepts `signature` over `message` with
/// the DER public key, the digest option and `-sigopt` settings given.
fn openssl_verifies(
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
        dir.path().join("sig"),
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
        .expect("the openssl binary is needed (make test installs it)");
    String::from_utf8_lossy(&output.stdout).contains("Verified OK") && output.status.success()
}

/// What `openssl pkey` says of a DER public key.
fn openssl_describes(public_der: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pub.der");
    std::fs::write(&key, public_der).unwrap();
    let output = std::process::Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&key)
        .output()
        .expect("the openssl binary is needed (make test installs it)");
    assert!(
        output.status.success(),
        "openssl cannot read the public key"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// ECC_NIST_P256 and ECC_NIST_P384 keys are made in the device; `RAW` and `DIGEST` messages
/// are signed there; openssl verifies the DER signatures with the GetPublicKey DER; a flipped
/// bit is refused; keys, public keys and signatures survive a restart.
async fn ec_key_pairs_sign_in_the_device_and_openssl_verifies(backend: Backend) {
    use sha2::Digest;
    let mut d = TestDaemon::start(backend).await;
    let message = b"a release signed in the device";
    let mut kept = Vec::new();
    for (spec, algorithm, digest, spki_len, curve) in [
        (
            "ECC_NIST_P256",
            "ECDSA_SHA_256",
            "-sha256",
            91,
            "prime256v1",
        ),
        (
            "ECC_NIST_P384",
            "ECDSA_SHA_384",
            "-sha384",
            120,
            "secp384r1",
        ),
    ] {
        let key = create(&d, spec, "SIGN_VERIFY").await.unwrap();
        assert_eq!(key.origin, "AWS_CLOUDHSM", "{spec}");
        assert_eq!(key.keystore, backend.keystore_name(), "{spec}");
        assert_eq!(key.signing_algorithms, vec![algorithm]);
        let public = public_key(&d, &key.key_id).await;
        assert_eq!(public.len(), spki_len, "{spec}");
        let text = openssl_describes(&public);
        assert!(text.contains(curve), "{spec}: {text}");

        let signed = sign(&d, &key.key_id, message, "RAW", algorithm)
            .await
            .unwrap();
        assert_eq!(signed.signing_algorithm, algorithm);
        assert!(
            openssl_verifies(&public, message, &signed.signature, digest, &[]),
            "{spec}: openssl refused the device's signature"
        );
        assert!(!openssl_verifies(
            &public,
            b"other",
            &signed.signature,
            digest,
            &[]
        ));
        let hashed = match digest {
            "-sha256" => sha2::Sha256::digest(message).to_vec(),
            _ => sha2::Sha384::digest(message).to_vec(),
        };
        let from_digest = sign(&d, &key.key_id, &hashed, "DIGEST", algorithm)
            .await
            .unwrap();
        assert!(openssl_verifies(
            &public,
            message,
            &from_digest.signature,
            digest,
            &[]
        ));
        assert!(
            verify(&d, &key.key_id, message, algorithm, &signed.signature)
                .await
                .unwrap()
                .signature_valid
        );
        let mut flipped = signed.signature.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_refused(
            verify(&d, &key.key_id, message, algorithm, &flipped).await,
            Code::InvalidArgument,
            "KMSInvalidSignatureException",
        );
        kept.push((key.key_id, algorithm, digest, public, signed.signature));
    }
    d.restart().await;
    for (key, algorithm, digest, public, signature) in kept {
        assert_eq!(public_key(&d, &key).await, public);
        assert!(
            verify(&d, &key, message, algorithm, &signature)
                .await
                .unwrap()
                .signature_valid
        );
        let again = sign(&d, &key, message, "RAW", algorithm).await.unwrap();
        assert!(openssl_verifies(
            &public,
            message,
            &again.signature,
            digest,
            &[]
        ));
    }
    assert!(orphans(&d).await.is_empty());
}

/// RSA_2048 keys made in the device sign with all six algorithms there (PSS: MGF1 of the same
/// hash, a digest-long salt; PKCS#1 v1.5 over the DigestInfo), each signature verified by
/// openssl with those parameters pinned; RSA_3072 and RSA_4096 make keys of their size.
async fn rsa_key_pairs_sign_with_every_algorithm_and_openssl_verifies(backend: Backend) {
    let d = TestDaemon::start(backend).await;
    let key = create(&d, "RSA_2048", "SIGN_VERIFY").await.unwrap();
    assert_eq!(key.origin, "AWS_CLOUDHSM");
    let public = public_key(&d, &key.key_id).await;
    assert_eq!(public.len(), 294);
    assert!(openssl_describes(&public).contains("2048 bit"));
    let message = b"an RSA-signed release";
    let mut checked = 0;
    for (algorithm, digest, pss_salt) in [
        ("RSASSA_PSS_SHA_256", "-sha256", Some("32")),
        ("RSASSA_PSS_SHA_384", "-sha384", Some("48")),
        ("RSASSA_PSS_SHA_512", "-sha512", Some("64")),
        ("RSASSA_PKCS1_V1_5_SHA_256", "-sha256", None),
        ("RSASSA_PKCS1_V1_5_SHA_384", "-sha384", None),
        ("RSASSA_PKCS1_V1_5_SHA_512", "-sha512", None),
    ] {
        let signed = sign(&d, &key.key_id, message, "RAW", algorithm)
            .await
            .unwrap();
        assert_eq!(signed.signature.len(), 256, "{algorithm}");
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
            openssl_verifies(&public, message, &signed.signature, digest, &sigopts),
            "{algorithm}: openssl refused the device's signature"
        );
        assert!(!openssl_verifies(
            &public,
            b"other",
            &signed.signature,
            digest,
            &sigopts
        ));
        assert!(
            verify(&d, &key.key_id, message, algorithm, &signed.signature)
                .await
                .unwrap()
                .signature_valid,
            "{algorithm}"
        );
        if pss.is_none() {
            // PKCS#1 v1.5 is deterministic: the device's signature is the one the sealed
            // keystore's code would make over the same DigestInfo.
            let again = sign(&d, &key.key_id, message, "RAW", algorithm)
                .await
                .unwrap();
            assert_eq!(again.signature, signed.signature, "{algorithm}");
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
    for (spec, der_len) in [("RSA_3072", 422), ("RSA_4096", 550)] {
        let key = create(&d, spec, "SIGN_VERIFY").await.unwrap();
        let public = public_key(&d, &key.key_id).await;
        assert_eq!(public.len(), der_len, "{spec}");
        let signed = sign(&d, &key.key_id, message, "RAW", "RSASSA_PSS_SHA_256")
            .await
            .unwrap();
        assert_eq!(signed.signature.len(), der_len - 38, "{spec}");
        assert!(openssl_verifies(
            &public,
            message,
            &signed.signature,
            "-sha256",
            &["rsa_padding_mode:pss", "rsa_pss_saltlen:32"],
        ));
    }
}

/// A session of this test's own on the backend's token, logged in as the user.
fn inspecting_session(backend: Backend) -> Session {
    let settings = match backend {
        Backend::Pkcs11Second => common::pkcs11_second_settings(),
        _ => common::pkcs11_settings(),
    };
    let TokenSelector::Label(label) = &settings.token else {
        panic!("the test tokens are chosen by label");
    };
    let module = Pkcs11::new(&settings.module).expect("load the PKCS#11 module");
    let parameters = settings
        .init_parameters
        .clone()
        .map(|p| std::ffi::CString::new(p).unwrap());
    let args = match &parameters {
        // SAFETY: the string outlives the call (the module was initialised by the daemon in
        // this process already; this call is answered CKR_CRYPTOKI_ALREADY_INITIALIZED).
        Some(p) => unsafe {
            CInitializeArgs::new_with_reserved(
                CInitializeFlags::OS_LOCKING_OK,
                std::ptr::NonNull::new(p.as_ptr().cast_mut().cast()).unwrap(),
            )
        },
        None => CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK),
    };
    match module.initialize(args) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = module
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            module
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == label)
        })
        .unwrap_or_else(|| panic!("token {label} not found"));
    let session = module.open_rw_session(slot).expect("open a session");
    let pin = AuthPin::new(settings.pin.expose().clone().into_boxed_str());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

fn labelled(session: &Session, account: &str, key: &str, class: ObjectClass) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Label(format!("keyhaven:{account}:{key}:1").into_bytes()),
        ])
        .expect("find objects")
}

/// The private key of a pair is a sensitive, never extractable, private token object that
/// signs (RSA: and decrypts) and does nothing else, whose secret parts cannot be read; the public key is a token
/// object under the same label. Deletion destroys both; a pair nobody records is one orphan
/// (not two), and destroying it takes both halves.
async fn private_keys_are_sensitive_token_objects_and_pairs_go_whole(backend: Backend) {
    let d = TestDaemon::start(backend).await;
    let session = inspecting_session(backend);
    // RSA private keys also decrypt (RSAES-OAEP, for keys of usage ENCRYPT_DECRYPT: the
    // keystore is not told a key's usage; the service keeps each key to its own).
    for (spec, secret_part, decrypts) in [
        ("ECC_NIST_P256", AttributeType::Value, false),
        ("RSA_2048", AttributeType::PrivateExponent, true),
    ] {
        let key = create(&d, spec, "SIGN_VERIFY").await.unwrap();
        // Sign once, so that any session copy the keystore makes exists too.
        let algorithm = if spec == "RSA_2048" {
            "RSASSA_PSS_SHA_256"
        } else {
            "ECDSA_SHA_256"
        };
        sign(&d, &key.key_id, b"m", "RAW", algorithm).await.unwrap();
        let private = labelled(
            &session,
            &d.account_id,
            &key.key_id,
            ObjectClass::PRIVATE_KEY,
        );
        let public = labelled(
            &session,
            &d.account_id,
            &key.key_id,
            ObjectClass::PUBLIC_KEY,
        );
        assert_eq!((private.len(), public.len()), (1, 1), "{spec}: one pair");
        let attributes = session
            .get_attributes(
                private[0],
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                    AttributeType::Unwrap,
                    AttributeType::Derive,
                ],
            )
            .expect("attributes");
        for expected in [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(decrypts),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ] {
            assert!(
                attributes.contains(&expected),
                "{spec}: {expected:?} not in {attributes:?}"
            );
        }
        let secret = session
            .get_attribute_info(private[0], &[secret_part])
            .expect("attribute info");
        assert!(
            matches!(secret.as_slice(), [AttributeInfo::Sensitive]),
            "{spec}: the private key's {secret_part:?} must not be readable: {secret:?}"
        );
        d.schedule_deletion(&key.key_id, Some(7)).await.unwrap();
        d.clock.advance(7 * common::DAY + 1);
        assert_eq!(d.run_due_tasks().await.destroyed, 1, "{spec}");
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            assert!(
                labelled(&session, &d.account_id, &key.key_id, class).is_empty(),
                "{spec}: {class:?} left after deletion"
            );
        }
    }

    // A pair no key record names (what a lost metadata write would leave): one orphan.
    let stray = uuid::Uuid::new_v4().hyphenated().to_string();
    let label = format!("keyhaven:{}:{stray}:1", d.account_id).into_bytes();
    session
        .generate_key_pair(
            &cryptoki::mechanism::Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
                Attribute::Label(label.clone()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
                Attribute::Label(label),
            ],
        )
        .expect("a stray pair");
    let listed = orphans(&d).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key_id, stray);
    assert_eq!(listed[0].keystore, backend.keystore_name());
    d.client
        .kms()
        .destroy_orphaned_key_material(d.client.signed(
            "DestroyOrphanedKeyMaterial",
            v1::DestroyOrphanedKeyMaterialRequest {
                keystore: backend.keystore_name().into(),
                key_id: stray.clone(),
                key_version: 1,
            },
        ))
        .await
        .expect("DestroyOrphanedKeyMaterial");
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        assert!(labelled(&session, &d.account_id, &stray, class).is_empty());
    }
    assert!(orphans(&d).await.is_empty());
}

/// HMAC keys on either token: made and checked in the device; a flipped bit and truncated
/// MACs refused with `KMSInvalidMacException`.
async fn macs_are_made_and_checked_in_the_device(backend: Backend) {
    let d = TestDaemon::start(backend).await;
    for (spec, algorithm, len) in [
        ("HMAC_224", "HMAC_SHA_224", 28),
        ("HMAC_256", "HMAC_SHA_256", 32),
        ("HMAC_384", "HMAC_SHA_384", 48),
        ("HMAC_512", "HMAC_SHA_512", 64),
    ] {
        let key = create(&d, spec, "GENERATE_VERIFY_MAC").await.unwrap();
        let made = d
            .client
            .kms()
            .generate_mac(d.client.signed(
                "GenerateMac",
                v1::GenerateMacRequest {
                    key_id: key.key_id.clone(),
                    message: b"m".to_vec(),
                    mac_algorithm: algorithm.into(),
                },
            ))
            .await
            .expect("GenerateMac")
            .into_inner();
        assert_eq!(made.mac.len(), len, "{spec}");
        let check = |mac: Vec<u8>| {
            let request = v1::VerifyMacRequest {
                key_id: key.key_id.clone(),
                message: b"m".to_vec(),
                mac_algorithm: algorithm.into(),
                mac,
            };
            let client = d.client.clone();
            async move {
                client
                    .kms()
                    .verify_mac(client.signed("VerifyMac", request))
                    .await
                    .map(|r| r.into_inner())
            }
        };
        assert!(check(made.mac.clone()).await.unwrap().mac_valid, "{spec}");
        let mut flipped = made.mac.clone();
        flipped[0] ^= 0x80;
        // A truncated MAC, down to its first byte alone (which NSS's C_Verify accepts), is
        // refused as any MAC that does not verify.
        for bad in [
            flipped,
            made.mac[..len - 1].to_vec(),
            made.mac[..1].to_vec(),
        ] {
            assert_refused(
                check(bad).await,
                Code::InvalidArgument,
                "KMSInvalidMacException",
            );
        }
    }
}

/// `openssl pkeyutl` encrypts with RSAES-OAEP (MGF1 of the same hash, no label) to the
/// public key of an RSA pair made in the device; the device decrypts it; a flipped bit, a
/// short ciphertext and another key are one refusal (`DecryptFailed`). A hash the token
/// refuses is `Unsupported`, naming the algorithm.
fn rsa_oaep_decrypts_in_the_device_what_openssl_encrypts(backend: Backend, sha256: bool) {
    use keyhaven::keystore::pkcs11::{OaepHash, Pkcs11KeyStore};
    use keyhaven::keystore::{KeySpec, KeyStore, KeyStoreError, MaterialRef};
    let settings = match backend {
        Backend::Pkcs11Second => common::pkcs11_second_settings(),
        _ => common::pkcs11_settings(),
    };
    let keystore = Pkcs11KeyStore::connect(settings, "777788889999").expect("connect");
    let fresh = || MaterialRef {
        key_id: uuid::Uuid::new_v4(),
        version: 1,
    };
    let (material, other) = (fresh(), fresh());
    for m in [material, other] {
        keystore
            .generate_spec(m, KeySpec::Rsa2048)
            .expect("an RSA pair");
    }
    let public = keystore
        .public_key(material, KeySpec::Rsa2048)
        .expect("public key");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pub.der");
    std::fs::write(&key, &public).unwrap();
    let plaintext = b"a data key wrapped to the device's RSA key";
    std::fs::write(dir.path().join("plain"), plaintext).unwrap();
    let mut checked = 0;
    for (hash, md) in [(OaepHash::Sha1, "sha1"), (OaepHash::Sha256, "sha256")] {
        let output = std::process::Command::new("openssl")
            .args(["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey"])
            .arg(&key)
            .args(["-pkeyopt", "rsa_padding_mode:oaep"])
            .args(["-pkeyopt", &format!("rsa_oaep_md:{md}")])
            .args(["-pkeyopt", &format!("rsa_mgf1_md:{md}")])
            .arg("-in")
            .arg(dir.path().join("plain"))
            .output()
            .expect("the openssl binary is needed (make test installs it)");
        assert!(output.status.success(), "openssl pkeyutl -encrypt ({md})");
        let ciphertext = output.stdout;
        assert_eq!(ciphertext.len(), 256);
        if hash == OaepHash::Sha256 && !sha256 {
            match keystore.decrypt_oaep(material, KeySpec::Rsa2048, hash, &ciphertext) {
                Err(KeyStoreError::Unsupported(message)) => {
                    assert!(message.contains("RSAES_OAEP_SHA_256"), "{message}")
                }
                other => panic!("expected the token to refuse OAEP with SHA-256: {other:?}"),
            }
            continue;
        }
        let opened = keystore
            .decrypt_oaep(material, KeySpec::Rsa2048, hash, &ciphertext)
            .unwrap_or_else(|e| panic!("{md}: {e}"));
        assert_eq!(opened.expose(), plaintext, "{md}");
        let mut flipped = ciphertext.clone();
        flipped[10] ^= 1;
        for (what, m, bytes) in [
            ("a flipped bit", material, &flipped[..]),
            ("a short ciphertext", material, &ciphertext[..255]),
            ("another key", other, &ciphertext[..]),
            // A value past any 2048-bit modulus (NSS: CKR_ARGUMENTS_BAD from C_Decrypt).
            ("a value past the modulus", material, &[0xff; 256][..]),
        ] {
            match keystore.decrypt_oaep(m, KeySpec::Rsa2048, hash, bytes) {
                Err(KeyStoreError::DecryptFailed) => {}
                other => panic!(
                    "{md}: {what} must be refused as a ciphertext that does not open; got {:?}",
                    other.map(|_| "a plaintext")
                ),
            }
        }
        checked += 1;
    }
    assert_eq!(checked, if sha256 { 2 } else { 1 });
    // An EC key has no OAEP.
    assert!(matches!(
        keystore.decrypt_oaep(material, KeySpec::EccNistP256, OaepHash::Sha1, &[0; 256]),
        Err(KeyStoreError::Unsupported(_))
    ));
    for m in [material, other] {
        keystore.destroy(m).expect("destroy");
    }
}

/// A key pair the device made while the daemon went down before writing its key record: the
/// generation journal names the version, and start-up destroys both halves and clears the
/// entry; nothing is left as an orphan.
async fn a_key_pair_generation_cut_short_is_destroyed_whole_at_start_up(backend: Backend) {
    let mut d = TestDaemon::start(backend).await;
    let session = inspecting_session(backend);
    d.stop().await;
    let stray = uuid::Uuid::new_v4();
    let key = stray.hyphenated().to_string();
    let label = format!("keyhaven:{}:{key}:1", d.account_id).into_bytes();
    session
        .generate_key_pair(
            &cryptoki::mechanism::Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
                Attribute::Label(label.clone()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
                Attribute::Label(label),
            ],
        )
        .expect("the half-made pair");
    let entry = keyhaven::keys::PendingGeneration {
        keystore: backend.keystore_name().into(),
        key_id: stray,
        version: 1,
        started: d.now(),
    };
    {
        let store = d.open_store();
        let mut batch = keyhaven::store::WriteBatch::new();
        batch.put(
            format!("generation/{key}:1").into_bytes(),
            serde_json::to_vec(&entry).unwrap(),
        );
        store
            .commit_blocking(batch)
            .expect("journal the generation");
        store.close();
    }
    d.start_again().await;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        assert!(
            labelled(&session, &d.account_id, &key, class).is_empty(),
            "{class:?} of the cut-short pair left in the device"
        );
    }
    assert!(orphans(&d).await.is_empty());
    d.stop().await;
    let store = d.open_store();
    let left = store
        .scan(b"generation/", None, usize::MAX)
        .expect("scan the journal");
    assert!(left.is_empty(), "journal entries left: {}", left.len());
}

async fn derive(
    d: &TestDaemon,
    key: &str,
    peer: &[u8],
) -> Result<v1::DeriveSharedSecretResponse, tonic::Status> {
    let request = v1::DeriveSharedSecretRequest {
        key_id: key.into(),
        key_agreement_algorithm: "ECDH".into(),
        public_key: peer.to_vec(),
    };
    Ok(d.client
        .kms()
        .derive_shared_secret(d.client.signed("DeriveSharedSecret", request))
        .await?
        .into_inner())
}

/// Runs `openssl` (a tool nobody here wrote) in `dir`; panics naming the command if it fails.
fn openssl_in(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl binary is needed (make test installs it)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh peer key pair on `curve` made by openssl: its DER SubjectPublicKeyInfo, and the
/// shared secret openssl derives with its private key and `public_der` (the other side's
/// public key).
fn openssl_peer_and_secret(
    dir: &std::path::Path,
    curve: &str,
    public_der: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    std::fs::write(dir.join("keyhaven.der"), public_der).unwrap();
    let curve_option = format!("ec_paramgen_curve:{curve}");
    openssl_in(
        dir,
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
    openssl_in(
        dir,
        &[
            "pkey", "-in", "peer.pem", "-pubout", "-outform", "DER", "-out", "peer.der",
        ],
    );
    openssl_in(
        dir,
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
    (
        std::fs::read(dir.join("peer.der")).unwrap(),
        std::fs::read(dir.join("secret")).unwrap(),
    )
}

/// KEY_AGREEMENT keys on P-256, P-384 and P-521 are made in the device with a private key that
/// derives and does not sign (sensitive, not extractable, its scalar unreadable); the shared
/// secret DeriveSharedSecret answers (`CKM_ECDH1_DERIVE`) is the one `openssl pkeyutl -derive`
/// computes with the peer's private key and the GetPublicKey DER; another peer gives another
/// secret; signing with the key is refused; the keys derive the same after a restart, and
/// deletion takes both halves.
async fn key_agreement_keys_derive_in_the_device_what_openssl_derives(backend: Backend) {
    let mut d = TestDaemon::start(backend).await;
    let session = inspecting_session(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut kept = Vec::new();
    for (spec, curve, secret_len, spki_len) in [
        ("ECC_NIST_P256", "P-256", 32, 91),
        ("ECC_NIST_P384", "P-384", 48, 120),
        ("ECC_NIST_P521", "P-521", 66, 158),
    ] {
        let key = create(&d, spec, "KEY_AGREEMENT")
            .await
            .unwrap_or_else(|e| panic!("{spec} KEY_AGREEMENT on {backend:?}: {e:?}"));
        assert_eq!(key.origin, "AWS_CLOUDHSM", "{spec}");
        assert_eq!(key.keystore, backend.keystore_name(), "{spec}");
        assert_eq!(key.key_usage, "KEY_AGREEMENT");
        assert_eq!(key.key_agreement_algorithms, vec!["ECDH"]);
        assert!(key.signing_algorithms.is_empty(), "{spec}");
        let public = public_key(&d, &key.key_id).await;
        assert_eq!(public.len(), spki_len, "{spec}");

        let (peer, expected) = openssl_peer_and_secret(dir.path(), curve, &public);
        assert_eq!(expected.len(), secret_len, "{spec}");
        let derived = derive(&d, &key.key_id, &peer).await.unwrap();
        assert_eq!(
            derived.shared_secret, expected,
            "{spec}: not openssl's secret"
        );
        assert_eq!(derived.key_agreement_algorithm, "ECDH");
        assert_eq!(derived.key_origin, "AWS_CLOUDHSM");
        assert!(derived.key_id.ends_with(&key.key_id));
        // ECDH is deterministic; another peer agrees on another secret.
        assert_eq!(
            derive(&d, &key.key_id, &peer).await.unwrap().shared_secret,
            expected
        );
        let (other_peer, other_expected) = openssl_peer_and_secret(dir.path(), curve, &public);
        let other = derive(&d, &key.key_id, &other_peer).await.unwrap();
        assert_eq!(other.shared_secret, other_expected, "{spec}");
        assert_ne!(other.shared_secret, expected, "{spec}");

        // Signing is not this key's usage: refused by the service; and the device's private
        // key could not sign anyway.
        let algorithm = match spec {
            "ECC_NIST_P256" => "ECDSA_SHA_256",
            "ECC_NIST_P384" => "ECDSA_SHA_384",
            _ => "ECDSA_SHA_512",
        };
        assert_refused(
            sign(&d, &key.key_id, b"not for signing", "RAW", algorithm).await,
            Code::InvalidArgument,
            "InvalidKeyUsageException",
        );
        let private = labelled(
            &session,
            &d.account_id,
            &key.key_id,
            ObjectClass::PRIVATE_KEY,
        );
        let public_objects = labelled(
            &session,
            &d.account_id,
            &key.key_id,
            ObjectClass::PUBLIC_KEY,
        );
        assert_eq!(
            (private.len(), public_objects.len()),
            (1, 1),
            "{spec}: one pair"
        );
        let attributes = session
            .get_attributes(
                private[0],
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                    AttributeType::Unwrap,
                    AttributeType::Derive,
                ],
            )
            .expect("attributes");
        for expected in [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(true),
        ] {
            assert!(
                attributes.contains(&expected),
                "{spec}: {expected:?} not in {attributes:?}"
            );
        }
        let scalar = session
            .get_attribute_info(private[0], &[AttributeType::Value])
            .expect("attribute info");
        assert!(
            matches!(scalar.as_slice(), [AttributeInfo::Sensitive]),
            "{spec}: the private scalar must not be readable: {scalar:?}"
        );
        kept.push((key.key_id, curve, public, peer, expected));
    }

    d.restart().await;
    for (key, _, public, peer, expected) in &kept {
        assert_eq!(&public_key(&d, key).await, public);
        assert_eq!(
            &derive(&d, key, peer).await.unwrap().shared_secret,
            expected
        );
    }
    assert!(orphans(&d).await.is_empty());

    // Deleted: both halves are gone from the token.
    let (key, ..) = &kept[0];
    d.schedule_deletion(key, Some(7)).await.unwrap();
    d.clock.advance(7 * common::DAY + 1);
    assert_eq!(d.run_due_tasks().await.destroyed, 1);
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        assert!(labelled(&session, &d.account_id, key, class).is_empty());
    }
}
