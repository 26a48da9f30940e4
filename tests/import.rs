//! Imported key material (bring your own key) end to end, on every keystore: keys made with
//! `Origin=EXTERNAL` wait in `PendingImport`; material wrapped by OpenSSL (a tool nobody here
//! wrote) against the public key GetParametersForImport returns is imported, and a ciphertext
//! Keyhaven makes with it is opened in the test with AES-256-GCM under the same material (the
//! blob format of the README: header, nonce, AAD), so the import really used what was given.
//! Refusals are checked with their exact status and reason, and with proof that nothing
//! changed.

mod common;

macro_rules! import_suite {
    ([$($(#[$attr:meta])* $name:ident => $backend:expr),* $(,)?], $tests:tt) => {
        $(import_suite!(@backend $(#[$attr])* $name, $backend, $tests);)*
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

import_suite!(
    [
        sealed => Backend::Sealed,
        pkcs11 => Backend::Pkcs11,
        // NSS's softoken: OAEP with SHA-256 in the device, and its CKM_AES_KEY_WRAP_PAD not
        // RFC 5649 (the keystore unwraps RFC 5649 there by RFC 3394 with its initial value).
        pkcs11_second => Backend::Pkcs11Second,
        // The metadata (import tokens, commitments) on etcd.
        #[cfg(feature = "etcd")]
        etcd => Backend::SealedOnEtcd,
    ],
    [
        external_keys_wait_for_material_and_refuse_use,
        imported_material_is_the_material_that_encrypts,
        every_wrapping_algorithm_and_key_spec_imports,
        refused_tokens_change_nothing,
        an_expired_token_is_refused_and_a_fresh_one_works,
        the_token_survives_a_restart,
        reimport_takes_only_the_same_material,
        material_past_valid_to_is_deleted_by_the_scheduler,
        malformed_imports_are_refused_and_change_nothing,
    ]
);

mod suite {
    use super::common::*;
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use keyhaven::proto::v1;
    use std::path::Path;
    use std::process::Command;
    use tonic::Code;

    pub const OAEP: &str = "RSAES_OAEP_SHA_256";
    pub const KEY_WRAP: &str = "RSA_AES_KEY_WRAP_SHA_256";

    /// The wrapping algorithm a keystore's tests use: SoftHSM2 2.6's OAEP takes SHA-1 only,
    /// so material goes into the device under RSA_AES_KEY_WRAP_SHA_256 (whose RSA step the
    /// device does raw); `every_wrapping_algorithm_and_key_spec_imports` covers the rest.
    pub fn alg(backend: Backend) -> &'static str {
        match backend {
            Backend::Pkcs11 => KEY_WRAP,
            _ => OAEP,
        }
    }

    pub async fn create_external(d: &TestDaemon) -> v1::KeyMetadata {
        let request = v1::CreateKeyRequest {
            description: "imported".into(),
            origin: "EXTERNAL".into(),
            ..Default::default()
        };
        d.client
            .kms()
            .create_key(d.client.signed("CreateKey", request))
            .await
            .expect("CreateKey with Origin EXTERNAL")
            .into_inner()
            .key_metadata
            .expect("metadata")
    }

    pub async fn parameters(
        d: &TestDaemon,
        key: &str,
        algorithm: &str,
        spec: &str,
    ) -> Result<v1::GetParametersForImportResponse, tonic::Status> {
        let request = v1::GetParametersForImportRequest {
            key_id: key.into(),
            wrapping_algorithm: algorithm.into(),
            wrapping_key_spec: spec.into(),
        };
        Ok(d.client
            .kms()
            .get_parameters_for_import(d.client.signed("GetParametersForImport", request))
            .await?
            .into_inner())
    }

    pub async fn import(
        d: &TestDaemon,
        key: &str,
        token: &[u8],
        encrypted: &[u8],
        valid_to: Option<i64>,
    ) -> Result<v1::ImportKeyMaterialResponse, tonic::Status> {
        let request = v1::ImportKeyMaterialRequest {
            key_id: key.into(),
            import_token: token.to_vec(),
            encrypted_key_material: encrypted.to_vec(),
            valid_to,
            expiration_model: if valid_to.is_some() {
                "KEY_MATERIAL_EXPIRES".into()
            } else {
                "KEY_MATERIAL_DOES_NOT_EXPIRE".into()
            },
        };
        Ok(d.client
            .kms()
            .import_key_material(d.client.signed("ImportKeyMaterial", request))
            .await?
            .into_inner())
    }

    pub async fn delete_material(d: &TestDaemon, key: &str) -> Result<(), tonic::Status> {
        let request = v1::DeleteImportedKeyMaterialRequest { key_id: key.into() };
        d.client
            .kms()
            .delete_imported_key_material(d.client.signed("DeleteImportedKeyMaterial", request))
            .await
            .map(|_| ())
    }

    fn openssl(args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is not installed: run `make test` (it installs openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Wraps `material` with OpenSSL as AWS KMS's documentation does it for `algorithm`,
    /// against `public_key` (DER SubjectPublicKeyInfo).
    pub fn wrap(dir: &Path, public_key: &[u8], algorithm: &str, material: &[u8]) -> Vec<u8> {
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        std::fs::write(file("public.der"), public_key).unwrap();
        let oaep = |input: &str, output: &str| {
            openssl(&[
                "pkeyutl",
                "-encrypt",
                "-pubin",
                "-keyform",
                "DER",
                "-inkey",
                &file("public.der"),
                "-in",
                input,
                "-out",
                output,
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ])
        };
        match algorithm {
            OAEP => {
                std::fs::write(file("material.bin"), material).unwrap();
                oaep(&file("material.bin"), &file("wrapped.bin"));
                std::fs::read(file("wrapped.bin")).unwrap()
            }
            KEY_WRAP => {
                // AWS's recipe: a fresh AES key wraps the material (RFC 5649), OAEP wraps it.
                let aes_key: [u8; 32] = rand::random();
                let hex: String = aes_key.iter().map(|b| format!("{b:02x}")).collect();
                std::fs::write(file("aes.bin"), aes_key).unwrap();
                std::fs::write(file("material.bin"), material).unwrap();
                openssl(&[
                    "enc",
                    "-id-aes256-wrap-pad",
                    "-K",
                    &hex,
                    "-iv",
                    "A65959A6",
                    "-in",
                    &file("material.bin"),
                    "-out",
                    &file("material-wrapped.bin"),
                ]);
                oaep(&file("aes.bin"), &file("aes-wrapped.bin"));
                let mut wrapped = std::fs::read(file("aes-wrapped.bin")).unwrap();
                wrapped.extend(std::fs::read(file("material-wrapped.bin")).unwrap());
                wrapped
            }
            other => panic!("no recipe for {other}"),
        }
    }

    /// Opens a Keyhaven ciphertext blob in the test, with AES-256-GCM under `material`, from
    /// the documented format alone: version (1), key id (16), key version (4), nonce (12),
    /// ciphertext ‖ tag; AAD = bytes 0–32 ‖ the context's pairs sorted by key, each key and
    /// value as a u32 length and its bytes.
    pub fn open_blob(material: &[u8], blob: &[u8], context: &[(&str, &str)]) -> Vec<u8> {
        assert_eq!(blob[0], 1, "blob format version");
        let mut aad = blob[..33].to_vec();
        let mut pairs = context.to_vec();
        pairs.sort();
        for (k, v) in pairs {
            for part in [k, v] {
                aad.extend((part.len() as u32).to_be_bytes());
                aad.extend(part.as_bytes());
            }
        }
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(material).unwrap();
        cipher
            .decrypt(
                aes_gcm::Nonce::from_slice(&blob[21..33]),
                Payload {
                    msg: &blob[33..],
                    aad: &aad,
                },
            )
            .expect("the blob opens under the imported material")
    }

    /// An EXTERNAL key with `material` imported (no expiry).
    pub async fn imported_key(
        d: &TestDaemon,
        backend: Backend,
        dir: &Path,
        material: &[u8],
    ) -> String {
        let key = create_external(d).await.key_id;
        let p = parameters(d, &key, alg(backend), "RSA_2048").await.unwrap();
        let wrapped = wrap(dir, &p.public_key, alg(backend), material);
        import(d, &key, &p.import_token, &wrapped, None)
            .await
            .expect("ImportKeyMaterial");
        key
    }

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    pub async fn external_keys_wait_for_material_and_refuse_use(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let key = create_external(&d).await;
        assert_eq!(key.key_state(), v1::KeyState::PendingImport);
        assert_eq!(key.origin, "EXTERNAL");
        assert_eq!(key.current_key_version, 0);
        assert_eq!(
            key.expiration_model,
            Some("KEY_MATERIAL_DOES_NOT_EXPIRE".into())
        );
        let id = key.key_id.as_str();
        fn invalid_state<T: std::fmt::Debug>(r: Result<T, tonic::Status>) {
            assert_refused(r, Code::FailedPrecondition, "KMSInvalidStateException")
        }
        invalid_state(d.encrypt(id, b"x", &[]).await);
        invalid_state(d.enable(id).await);
        invalid_state(d.disable(id).await);
        invalid_state(delete_material(&d, id).await);
        let request = v1::GenerateDataKeyRequest {
            key_id: id.into(),
            key_spec: "AES_256".into(),
            ..Default::default()
        };
        invalid_state(
            d.client
                .kms()
                .generate_data_key(d.client.signed("GenerateDataKey", request))
                .await,
        );
        assert_refused(
            d.rotate(id).await,
            Code::FailedPrecondition,
            "UnsupportedOperationException",
        );
        assert_eq!(d.state(id).await, v1::KeyState::PendingImport);
        // A generated key has no import to take.
        let generated = d.create_key("generated").await;
        assert_refused(
            parameters(&d, &generated.key_id, OAEP, "RSA_2048").await,
            Code::FailedPrecondition,
            "UnsupportedOperationException",
        );
        assert_refused(
            delete_material(&d, &generated.key_id).await,
            Code::FailedPrecondition,
            "UnsupportedOperationException",
        );
        assert_eq!(d.state(&generated.key_id).await, v1::KeyState::Enabled);
        // A key of imported material may be deleted while it waits, and comes back waiting.
        d.schedule_deletion(id, Some(7)).await.unwrap();
        d.cancel_deletion(id).await.unwrap();
        assert_eq!(d.state(id).await, v1::KeyState::PendingImport);
    }

    pub async fn imported_material_is_the_material_that_encrypts(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let dir = temp();
        let key = create_external(&d).await.key_id;
        let p = parameters(&d, &key, alg(backend), "RSA_2048")
            .await
            .unwrap();
        assert!(p.key_id.ends_with(&key), "{}", p.key_id);
        assert_eq!(p.parameters_valid_to, d.now() + DAY);
        let material: [u8; 32] = rand::random();
        let wrapped = wrap(dir.path(), &p.public_key, alg(backend), &material);
        let answer = import(&d, &key, &p.import_token, &wrapped, None)
            .await
            .unwrap();
        assert!(answer.key_id.ends_with(&key));
        let described = d.describe(&key).await.unwrap();
        assert_eq!(described.key_state(), v1::KeyState::Enabled);
        assert_eq!(described.current_key_version, 1);
        assert_eq!(described.valid_to, None);
        let context = [("purpose", "byok"), ("tenant", "t-1")];
        let blob = d
            .encrypt(&key, b"imported and used", &context)
            .await
            .unwrap();
        assert_eq!(
            open_blob(&material, &blob, &context),
            b"imported and used",
            "Keyhaven encrypted under the imported material"
        );
        assert_eq!(
            d.decrypt(&blob, &context).await.unwrap(),
            b"imported and used"
        );
        // The same key made by the test, with other material, does not open it.
        let other: [u8; 32] = rand::random();
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&other).unwrap();
        assert!(
            cipher
                .decrypt(aes_gcm::Nonce::from_slice(&blob[21..33]), &blob[33..])
                .is_err()
        );
    }

    pub async fn every_wrapping_algorithm_and_key_spec_imports(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let dir = temp();
        for (algorithm, spec, bits) in [
            (OAEP, "RSA_3072", 3072),
            (KEY_WRAP, "RSA_2048", 2048),
            (KEY_WRAP, "RSA_4096", 4096),
        ] {
            let key = create_external(&d).await.key_id;
            let p = parameters(&d, &key, algorithm, spec).await.unwrap();
            let material: [u8; 32] = rand::random();
            let wrapped = wrap(dir.path(), &p.public_key, algorithm, &material);
            if backend == Backend::Pkcs11 && algorithm == OAEP {
                // A device whose OAEP takes SHA-1 only (SoftHSM2 2.6) refuses, and says so;
                // one that takes SHA-256 imports.
                match import(&d, &key, &p.import_token, &wrapped, None).await {
                    Ok(_) => {
                        let blob = d.encrypt(&key, b"wrapped", &[]).await.unwrap();
                        assert_eq!(open_blob(&material, &blob, &[]), b"wrapped");
                    }
                    Err(status) => {
                        assert_refused::<()>(
                            Err(status),
                            Code::FailedPrecondition,
                            "UnsupportedOperationException",
                        );
                        let described = d.describe(&key).await.unwrap();
                        assert_eq!(described.key_state(), v1::KeyState::PendingImport);
                        assert_eq!(described.current_key_version, 0);
                    }
                }
                continue;
            }
            use rsa::pkcs8::DecodePublicKey;
            use rsa::traits::PublicKeyParts;
            let public = rsa::RsaPublicKey::from_public_key_der(&p.public_key)
                .expect("the public key is DER SubjectPublicKeyInfo");
            assert_eq!(public.n().bits(), bits, "{spec}");
            import(&d, &key, &p.import_token, &wrapped, None)
                .await
                .unwrap_or_else(|e| panic!("{algorithm} {spec}: {e:?}"));
            let blob = d.encrypt(&key, b"wrapped", &[]).await.unwrap();
            assert_eq!(open_blob(&material, &blob, &[]), b"wrapped", "{algorithm}");
        }
    }

    pub async fn refused_tokens_change_nothing(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let dir = temp();
        let key = create_external(&d).await.key_id;
        let other = create_external(&d).await.key_id;
        let p = parameters(&d, &key, alg(backend), "RSA_2048")
            .await
            .unwrap();
        let q = parameters(&d, &other, alg(backend), "RSA_2048")
            .await
            .unwrap();
        let material: [u8; 32] = rand::random();
        let wrapped = wrap(dir.path(), &p.public_key, alg(backend), &material);
        let mut forged = p.import_token.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let mut foreign_id = p.import_token.clone();
        foreign_id[1..17].copy_from_slice(&q.import_token[1..17]);
        let wrapped_for_other = wrap(dir.path(), &q.public_key, alg(backend), &material);
        for (what, token, wrapped) in [
            ("a forged token", forged.as_slice(), wrapped.as_slice()),
            ("another key's token", &q.import_token, &wrapped_for_other),
            ("another token's id", &foreign_id, &wrapped),
            ("no token", &[], &wrapped),
            ("garbage", &[7u8; 49], &wrapped),
        ] {
            assert_refused(
                import(&d, &key, token, wrapped, None).await,
                Code::InvalidArgument,
                "InvalidImportTokenException",
            );
            let described = d.describe(&key).await.unwrap();
            assert_eq!(described.key_state(), v1::KeyState::PendingImport, "{what}");
            assert_eq!(described.current_key_version, 0, "{what}");
        }
        assert_eq!(d.state(&other).await, v1::KeyState::PendingImport);
        // The genuine token still works afterwards.
        import(&d, &key, &p.import_token, &wrapped, None)
            .await
            .unwrap();
        let blob = d.encrypt(&key, b"after refusals", &[]).await.unwrap();
        assert_eq!(open_blob(&material, &blob, &[]), b"after refusals");
    }

    pub async fn an_expired_token_is_refused_and_a_fresh_one_works(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let dir = temp();
        let key = create_external(&d).await.key_id;
        let p = parameters(&d, &key, alg(backend), "RSA_2048")
            .await
            .unwrap();
        let material: [u8; 32] = rand::random();
        let wrapped = wrap(dir.path(), &p.public_key, alg(backend), &material);
        d.clock.advance(DAY);
        assert_refused(
            import(&d, &key, &p.import_token, &wrapped, None).await,
            Code::InvalidArgument,
            "ExpiredImportTokenException",
        );
        assert_eq!(d.state(&key).await, v1::KeyState::PendingImport);
        // The scheduler clears expired tokens: the token is then unknown, still refused.
        d.run_due_tasks().await;
        assert_refused(
            import(&d, &key, &p.import_token, &wrapped, None).await,
            Code::InvalidArgument,
            "InvalidImportTokenException",
        );
        let fresh = parameters(&d, &key, alg(backend), "RSA_2048")
            .await
            .unwrap();
        let wrapped = wrap(dir.path(), &fresh.public_key, alg(backend), &material);
        import(&d, &key, &fresh.import_token, &wrapped, None)
            .await
            .unwrap();
        assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    }

    pub async fn the_token_survives_a_restart(backend: Backend) {
        let mut d = TestDaemon::start(backend).await;
        let dir = temp();
        let key = create_external(&d).await.key_id;
        let p = parameters(&d, &key, KEY_WRAP, "RSA_2048").await.unwrap();
        d.restart().await;
        assert_eq!(d.state(&key).await, v1::KeyState::PendingImport);
        let material: [u8; 32] = rand::random();
        let wrapped = wrap(dir.path(), &p.public_key, KEY_WRAP, &material);
        import(&d, &key, &p.import_token, &wrapped, None)
            .await
            .expect("a token from before the restart");
        d.restart().await;
        let blob = d.encrypt(&key, b"after restarts", &[]).await.unwrap();
        assert_eq!(open_blob(&material, &blob, &[]), b"after restarts");
    }

    pub async fn reimport_takes_only_the_same_material(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let dir = temp();
        let material: [u8; 32] = rand::random();
        let key = imported_key(&d, backend, dir.path(), &material).await;
        let blob = d.encrypt(&key, b"before deletion", &[]).await.unwrap();
        delete_material(&d, &key).await.unwrap();
        let described = d.describe(&key).await.unwrap();
        assert_eq!(described.key_state(), v1::KeyState::PendingImport);
        assert_refused(
            d.decrypt(&blob, &[]).await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        assert_refused(
            d.encrypt(&key, b"x", &[]).await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        // Other material is refused, and the key still waits.
        let p = parameters(&d, &key, alg(backend), "RSA_2048")
            .await
            .unwrap();
        let different: [u8; 32] = rand::random();
        let wrapped = wrap(dir.path(), &p.public_key, alg(backend), &different);
        assert_refused(
            import(&d, &key, &p.import_token, &wrapped, None).await,
            Code::InvalidArgument,
            "IncorrectKeyMaterialException",
        );
        assert_eq!(d.describe(&key).await.unwrap(), described);
        assert_refused(
            d.decrypt(&blob, &[]).await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        // The same material brings the key back, and its old ciphertexts with it.
        let wrapped = wrap(dir.path(), &p.public_key, alg(backend), &material);
        import(&d, &key, &p.import_token, &wrapped, None)
            .await
            .unwrap();
        assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
        assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"before deletion");
        let again = d.encrypt(&key, b"after reimport", &[]).await.unwrap();
        assert_eq!(open_blob(&material, &again, &[]), b"after reimport");
    }

    pub async fn material_past_valid_to_is_deleted_by_the_scheduler(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let dir = temp();
        let key = create_external(&d).await.key_id;
        let p = parameters(&d, &key, alg(backend), "RSA_2048")
            .await
            .unwrap();
        let material: [u8; 32] = rand::random();
        let wrapped = wrap(dir.path(), &p.public_key, alg(backend), &material);
        let valid_to = d.now() + 3600;
        import(&d, &key, &p.import_token, &wrapped, Some(valid_to))
            .await
            .unwrap();
        let described = d.describe(&key).await.unwrap();
        assert_eq!(described.valid_to, Some(valid_to));
        assert_eq!(
            described.expiration_model.as_deref(),
            Some("KEY_MATERIAL_EXPIRES")
        );
        let blob = d.encrypt(&key, b"short-lived", &[]).await.unwrap();
        // Not yet.
        let report = d.run_due_tasks().await;
        assert!(report.expired_keys.is_empty(), "{report:?}");
        assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
        d.clock.advance(3600);
        let report = d.run_due_tasks().await;
        assert_eq!(report.expired_keys.len(), 1, "{report:?}");
        assert!(report.expired_keys[0].to_string() == key, "{report:?}");
        // Audited as the scheduler's other work is: by the daemon itself, naming the key.
        let log = std::fs::read_to_string(&d.config.audit_log).expect("audit log");
        let audited = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit record"))
            .any(|r| {
                r["operation"] == "DeleteImportedKeyMaterial"
                    && r["principal"] == keyhaven::server::SCHEDULER_PRINCIPAL
                    && r.to_string().contains(&key)
            });
        assert!(audited, "the expiry is not in the audit log");
        let described = d.describe(&key).await.unwrap();
        assert_eq!(described.key_state(), v1::KeyState::PendingImport);
        assert_eq!(described.valid_to, None);
        assert_refused(
            d.decrypt(&blob, &[]).await,
            Code::FailedPrecondition,
            "KMSInvalidStateException",
        );
        // The next pass has nothing to do.
        assert!(d.run_due_tasks().await.expired_keys.is_empty());
    }

    pub async fn malformed_imports_are_refused_and_change_nothing(backend: Backend) {
        let d = TestDaemon::start(backend).await;
        let dir = temp();
        let key = create_external(&d).await.key_id;
        for (algorithm, spec, reason) in [
            ("RSAES_PKCS1_V1_5", "RSA_2048", "ValidationException"),
            (OAEP, "RSA_1024", "ValidationException"),
            (OAEP, "SM2", "ValidationException"),
        ] {
            assert_refused(
                parameters(&d, &key, algorithm, spec).await,
                Code::InvalidArgument,
                reason,
            );
        }
        let p = parameters(&d, &key, alg(backend), "RSA_2048")
            .await
            .unwrap();
        let short = wrap(dir.path(), &p.public_key, alg(backend), &[5u8; 16]);
        assert_refused(
            import(&d, &key, &p.import_token, &short, None).await,
            Code::InvalidArgument,
            "IncorrectKeyMaterialException",
        );
        let mut damaged = wrap(dir.path(), &p.public_key, alg(backend), &[5u8; 32]);
        damaged[10] ^= 0x40;
        assert_refused(
            import(&d, &key, &p.import_token, &damaged, None).await,
            Code::InvalidArgument,
            "InvalidCiphertextException",
        );
        // A wrapped value past the modulus (RSA_2048: 256 bytes of 0xff), then for the key
        // wrap the 40 bytes of a wrapped 32-byte key: a ciphertext that does not open.
        let mut past = vec![0xff; 256];
        if alg(backend) == KEY_WRAP {
            past.extend_from_slice(&[0x11; 40]);
        }
        assert_refused(
            import(&d, &key, &p.import_token, &past, None).await,
            Code::InvalidArgument,
            "InvalidCiphertextException",
        );
        let good = wrap(dir.path(), &p.public_key, alg(backend), &[5u8; 32]);
        assert_refused(
            import(&d, &key, &p.import_token, &good, Some(d.now() - 1)).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        let described = d.describe(&key).await.unwrap();
        assert_eq!(described.key_state(), v1::KeyState::PendingImport);
        assert_eq!(described.current_key_version, 0);
        // None of the refusals is remembered as the key's material.
        import(&d, &key, &p.import_token, &good, None)
            .await
            .unwrap();
        assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    }
}

/// The `keyhaven` binary against the test daemon, with no `KEYHAVEN_*` of the environment.
fn keyhaven(d: &common::TestDaemon, args: &[&str]) -> serde_json::Value {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYHAVEN_") {
            command.env_remove(&name);
        }
    }
    let output = command
        .env("KEYHAVEN_ENDPOINT", d.endpoint())
        .env("KEYHAVEN_ACCESS_KEY_ID", &d.credentials.access_key_id)
        .env(
            "KEYHAVEN_SECRET_ACCESS_KEY",
            d.credentials.secret_access_key.expose(),
        )
        .env("KEYHAVEN_REGION", &d.config.region)
        .env("NO_COLOR", "1")
        .args(["--output", "json"])
        .args(args)
        .output()
        .expect("run keyhaven");
    assert!(
        output.status.success(),
        "keyhaven {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// `key create --origin EXTERNAL`, `key import-parameters`, `key import` (with `--valid-to`)
/// and `key delete-imported-material`, with OpenSSL wrapping in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_imports_and_deletes_material() {
    use common::*;
    use keyhaven::proto::v1;
    let d = TestDaemon::start(Backend::Sealed).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let created = keyhaven(&d, &["key", "create", "--origin", "EXTERNAL"]);
    assert_eq!(created["KeyMetadata"]["KeyState"], "PendingImport");
    assert_eq!(created["KeyMetadata"]["Origin"], "EXTERNAL");
    let key = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let parameters = keyhaven(
        &d,
        &[
            "key",
            "import-parameters",
            &key,
            "--public-key-file",
            &path("public.der"),
            "--token-file",
            &path("token.bin"),
        ],
    );
    assert!(parameters["ParametersValidTo"].is_string(), "{parameters}");
    let public_key = std::fs::read(path("public.der")).unwrap();
    let material: [u8; 32] = rand::random();
    let wrap_dir = tempfile::tempdir().unwrap();
    let wrapped = suite::wrap(wrap_dir.path(), &public_key, suite::OAEP, &material);
    std::fs::write(path("material.bin"), wrapped).unwrap();
    let valid_to = keyhaven::clock::rfc3339(d.now() + 7 * DAY);
    keyhaven(
        &d,
        &[
            "key",
            "import",
            &key,
            "--material-file",
            &path("material.bin"),
            "--token-file",
            &path("token.bin"),
            "--valid-to",
            &valid_to,
        ],
    );
    let described = keyhaven(&d, &["key", "describe", &key]);
    assert_eq!(described["KeyMetadata"]["KeyState"], "Enabled");
    assert_eq!(
        described["KeyMetadata"]["ExpirationModel"],
        "KEY_MATERIAL_EXPIRES"
    );
    assert_eq!(described["KeyMetadata"]["ValidTo"], valid_to.as_str());
    let blob = d
        .encrypt(&key, b"from the command line", &[])
        .await
        .unwrap();
    assert_eq!(
        suite::open_blob(&material, &blob, &[]),
        b"from the command line"
    );
    keyhaven(&d, &["key", "delete-imported-material", &key]);
    assert_eq!(d.state(&key).await, v1::KeyState::PendingImport);
}

/// On the PKCS#11 keystore, looked at through a session of the test's own: the imported
/// material is one token object with the usual label, sensitive and not extractable (its
/// value cannot be read); the wrapping key's private half is a sensitive, non-extractable
/// token object and its public half is not kept; DeleteImportedKeyMaterial destroys the
/// material object, and the scheduler the wrapping key once the token's 24 hours are over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_material_lives_in_the_device_sensitive_and_not_extractable() {
    use common::*;
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
    use keyhaven::proto::v1;
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let dir = tempfile::tempdir().unwrap();
    let key = suite::create_external(&d).await.key_id;
    let p = suite::parameters(&d, &key, suite::KEY_WRAP, "RSA_2048")
        .await
        .unwrap();
    let material: [u8; 32] = rand::random();
    let wrapped = suite::wrap(dir.path(), &p.public_key, suite::KEY_WRAP, &material);
    suite::import(&d, &key, &p.import_token, &wrapped, None)
        .await
        .unwrap();
    let session = device::independent_session();
    let found = device::objects(&session, &d.account_id, &key, 1);
    assert_eq!(found.len(), 1, "one token object for the imported version");
    let attributes = session
        .get_attributes(
            found[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Token,
                AttributeType::KeyType,
            ],
        )
        .unwrap();
    for expected in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Token(true),
        Attribute::KeyType(KeyType::AES),
    ] {
        assert!(
            attributes.contains(&expected),
            "{expected:?} in {attributes:?}"
        );
    }
    let value = session
        .get_attributes(found[0], &[AttributeType::Value])
        .unwrap_or_default();
    assert!(
        !value.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the imported material's value is readable: {value:?}"
    );
    let wrapping_label = |class: ObjectClass| {
        let prefix = format!("keyhaven-import:{}:", d.account_id);
        session
            .find_objects(&[Attribute::Class(class), Attribute::Token(true)])
            .unwrap()
            .into_iter()
            .filter(|h| {
                session
                    .get_attributes(*h, &[AttributeType::Label])
                    .unwrap()
                    .iter()
                    .any(|a| matches!(a, Attribute::Label(l) if l.starts_with(prefix.as_bytes())))
            })
            .collect::<Vec<_>>()
    };
    let private = wrapping_label(ObjectClass::PRIVATE_KEY);
    assert_eq!(private.len(), 1, "one wrapping key in the device");
    let attributes = session
        .get_attributes(
            private[0],
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .unwrap();
    assert!(
        attributes.contains(&Attribute::Sensitive(true)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::Extractable(false)),
        "{attributes:?}"
    );
    assert!(wrapping_label(ObjectClass::PUBLIC_KEY).is_empty());
    // Deleting the material destroys its object; the key waits again.
    suite::delete_material(&d, &key).await.unwrap();
    assert!(device::objects(&session, &d.account_id, &key, 1).is_empty());
    assert_eq!(d.state(&key).await, v1::KeyState::PendingImport);
    // Within the 24 hours the scheduler keeps the wrapping key; after them it destroys it.
    d.run_due_tasks().await;
    assert_eq!(wrapping_label(ObjectClass::PRIVATE_KEY).len(), 1);
    d.clock.advance(DAY);
    d.run_due_tasks().await;
    assert!(wrapping_label(ObjectClass::PRIVATE_KEY).is_empty());
}

/// On the sealed store HMAC keys take imported material too (of AWS's lengths: 32 to 64 bytes
/// for HMAC_256): the MAC Keyhaven computes is the test's own HMAC-SHA-256 under the material.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_keys_take_imported_material_on_the_sealed_store() {
    use common::*;
    use hmac::Mac;
    use keyhaven::proto::v1;
    use tonic::Code;
    let d = TestDaemon::start(Backend::Sealed).await;
    let dir = tempfile::tempdir().unwrap();
    let request = v1::CreateKeyRequest {
        origin: "EXTERNAL".into(),
        key_spec: "HMAC_256".into(),
        key_usage: "GENERATE_VERIFY_MAC".into(),
        ..Default::default()
    };
    let key = d
        .client
        .kms()
        .create_key(d.client.signed("CreateKey", request))
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    assert_eq!(key.key_state(), v1::KeyState::PendingImport);
    let p = suite::parameters(&d, &key.key_id, suite::OAEP, "RSA_2048")
        .await
        .unwrap();
    let material: [u8; 48] = std::array::from_fn(|_| rand::random());
    let wrapped = suite::wrap(dir.path(), &p.public_key, suite::OAEP, &material);
    suite::import(&d, &key.key_id, &p.import_token, &wrapped, None)
        .await
        .unwrap();
    let request = v1::GenerateMacRequest {
        key_id: key.key_id.clone(),
        message: b"imported hmac".to_vec(),
        mac_algorithm: "HMAC_SHA_256".into(),
    };
    let mac = d
        .client
        .kms()
        .generate_mac(d.client.signed("GenerateMac", request))
        .await
        .unwrap()
        .into_inner()
        .mac;
    let mut expected = hmac::Hmac::<sha2::Sha256>::new_from_slice(&material).unwrap();
    expected.update(b"imported hmac");
    assert_eq!(mac, expected.finalize().into_bytes().to_vec());
    // Material longer than HMAC_256 takes is refused.
    let request = v1::CreateKeyRequest {
        origin: "EXTERNAL".into(),
        key_spec: "HMAC_256".into(),
        key_usage: "GENERATE_VERIFY_MAC".into(),
        ..Default::default()
    };
    let long_key = d
        .client
        .kms()
        .create_key(d.client.signed("CreateKey", request))
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
        .key_id;
    let p = suite::parameters(&d, &long_key, suite::KEY_WRAP, "RSA_2048")
        .await
        .unwrap();
    let wrapped = suite::wrap(dir.path(), &p.public_key, suite::KEY_WRAP, &[3u8; 65]);
    assert_refused(
        suite::import(&d, &long_key, &p.import_token, &wrapped, None).await,
        Code::InvalidArgument,
        "IncorrectKeyMaterialException",
    );
    assert_eq!(d.state(&long_key).await, v1::KeyState::PendingImport);
    // Asymmetric keys cannot be imported here.
    let request = v1::CreateKeyRequest {
        origin: "EXTERNAL".into(),
        key_spec: "ECC_NIST_P256".into(),
        key_usage: "SIGN_VERIFY".into(),
        ..Default::default()
    };
    assert_refused(
        d.client
            .kms()
            .create_key(d.client.signed("CreateKey", request))
            .await,
        Code::FailedPrecondition,
        "UnsupportedOperationException",
    );
}

/// What a crash between the device's unwrap and the key record's write leaves — the journal
/// entry and an object for version 1 of a key whose material had been deleted (so its record
/// still names version 1) — is destroyed at start-up: the key stays `PendingImport`, the same
/// material imports again as one object, and its old ciphertexts decrypt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_short_by_a_crash_is_undone_at_start_up() {
    use common::*;
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    use keyhaven::keys::PendingGeneration;
    use keyhaven::proto::v1;
    use keyhaven::store::WriteBatch;
    let mut d = TestDaemon::start(Backend::Pkcs11).await;
    let account = d.account_id.clone();
    let dir = tempfile::tempdir().unwrap();
    let material: [u8; 32] = rand::random();
    let key = suite::create_external(&d).await.key_id;
    let p = suite::parameters(&d, &key, suite::KEY_WRAP, "RSA_2048")
        .await
        .unwrap();
    let wrapped = suite::wrap(dir.path(), &p.public_key, suite::KEY_WRAP, &material);
    suite::import(&d, &key, &p.import_token, &wrapped, None)
        .await
        .unwrap();
    let blob = d.encrypt(&key, b"before the crash", &[]).await.unwrap();
    suite::delete_material(&d, &key).await.unwrap();
    d.stop().await;

    let session = device::independent_session();
    let id = uuid::Uuid::parse_str(&key).unwrap();
    let entry = PendingGeneration {
        keystore: Backend::Pkcs11.keystore_name().into(),
        key_id: id,
        version: 1,
        started: d.now(),
    };
    let mut batch = WriteBatch::new();
    batch.put(
        format!("generation/{}:1", id.hyphenated()).into_bytes(),
        serde_json::to_vec(&entry).unwrap(),
    );
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(format!("keyhaven:{account}:{key}:1").into_bytes()),
            ],
        )
        .expect("make a half-imported version");
    d.open_store().commit_blocking(batch).expect("journal");

    d.start_again().await;
    assert!(device::objects(&session, &account, &key, 1).is_empty());
    assert_eq!(d.state(&key).await, v1::KeyState::PendingImport);
    suite::import(&d, &key, &p.import_token, &wrapped, None)
        .await
        .unwrap();
    assert_eq!(device::objects(&session, &account, &key, 1).len(), 1);
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"before the crash");
    d.stop().await;
    let journal = d
        .open_store()
        .scan(b"generation/", None, usize::MAX)
        .expect("scan the journal");
    assert!(
        journal.is_empty(),
        "journal entries left: {}",
        journal.len()
    );
}

/// A PKCS#11 keystore imports AES material only: an HMAC key of imported material is refused
/// when it would be made, and no key is left waiting for an import that could not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pkcs11_keystore_refuses_hmac_keys_of_imported_material_when_made() {
    use common::*;
    use keyhaven::proto::v1;
    use tonic::Code;
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let before = d.list_all_keys().await;
    let request = v1::CreateKeyRequest {
        origin: "EXTERNAL".into(),
        key_spec: "HMAC_256".into(),
        key_usage: "GENERATE_VERIFY_MAC".into(),
        ..Default::default()
    };
    assert_refused(
        d.client
            .kms()
            .create_key(d.client.signed("CreateKey", request))
            .await,
        Code::FailedPrecondition,
        "UnsupportedOperationException",
    );
    assert_eq!(d.list_all_keys().await, before);
}
