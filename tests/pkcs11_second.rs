//! The PKCS#11 keystore on the second token implementation, NSS's softoken (set up by
//! `hsm-sim/nss-setup.sh`), used directly: what differs from SoftHSM2 is pinned here; the
//! behavioural suite runs on it as `conformance::pkcs11_second`.

mod common;

use keyhaven::keystore::pkcs11::Pkcs11KeyStore;
use keyhaven::keystore::{KeyStore, KeyStoreError, MaterialRef};
use uuid::Uuid;

const ACCOUNT: &str = "444455556666";

fn keystore() -> Pkcs11KeyStore {
    Pkcs11KeyStore::connect(common::pkcs11_second_settings(), ACCOUNT)
        .expect("connect to NSS's softoken")
}

fn fresh() -> MaterialRef {
    MaterialRef {
        key_id: Uuid::new_v4(),
        version: 1,
    }
}

/// AES-256-GCM in NSS's softoken: a round trip, and a flipped tag bit or other AAD refused as
/// a ciphertext that does not authenticate (not as a broken device).
#[test]
fn aes_gcm_round_trips_and_a_bad_tag_is_a_decrypt_failure() {
    let keystore = keystore();
    let material = fresh();
    keystore.generate(material).expect("generate an AES key");
    let nonce = [7u8; 12];
    let sealed = keystore
        .encrypt(material, &nonce, b"aad", b"hello, second token")
        .expect("encrypt");
    assert_eq!(sealed.len(), b"hello, second token".len() + 16);
    let opened = keystore
        .decrypt(material, &nonce, b"aad", &sealed)
        .expect("decrypt");
    assert_eq!(opened.expose(), b"hello, second token");
    let mut forged = sealed.clone();
    *forged.last_mut().expect("a tag") ^= 1;
    assert!(matches!(
        keystore.decrypt(material, &nonce, b"aad", &forged),
        Err(KeyStoreError::DecryptFailed)
    ));
    assert!(matches!(
        keystore.decrypt(material, &nonce, b"other", &sealed),
        Err(KeyStoreError::DecryptFailed)
    ));
    keystore.destroy(material).expect("destroy");
    assert!(!keystore.list().expect("list").contains(&material));
}
