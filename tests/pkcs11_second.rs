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

/// HMAC on NSS's softoken: a MAC verifies in the device; a flipped bit (which NSS answers
/// `CKR_DEVICE_ERROR`) is a MAC that does not verify, not a device failure; a truncated MAC
/// (which NSS's `C_Verify` accepts) does not verify.
#[test]
fn hmac_verification_refuses_a_flipped_bit_as_a_bad_mac() {
    use keyhaven::keystore::{KeySpec, MacAlgorithm};
    let keystore = keystore();
    let material = fresh();
    keystore
        .generate_spec(material, KeySpec::Hmac256)
        .expect("generate an HMAC key");
    let mac = keystore
        .mac(material, MacAlgorithm::HmacSha256, b"m")
        .expect("mac");
    assert_eq!(mac.len(), 32);
    assert!(
        keystore
            .verify_mac(material, MacAlgorithm::HmacSha256, b"m", &mac)
            .expect("verify")
    );
    let mut flipped = mac.clone();
    flipped[0] ^= 0x80;
    assert!(
        !keystore
            .verify_mac(material, MacAlgorithm::HmacSha256, b"m", &flipped)
            .expect("a flipped bit is a bad MAC, not an error")
    );
    // NSS's C_Verify compares only the bytes it is given: its first byte alone would pass.
    for truncated in [&mac[..31], &mac[..1]] {
        assert!(
            !keystore
                .verify_mac(material, MacAlgorithm::HmacSha256, b"m", truncated)
                .expect("a truncated MAC is a bad MAC, not an error")
        );
    }
    keystore.destroy(material).expect("destroy");
}
