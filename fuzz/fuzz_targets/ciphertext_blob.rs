//! The ciphertext blob parser on arbitrary bytes: never panics; whatever it accepts is exactly
//! the version-1 layout and assembles back to the same bytes.

#![no_main]

use keyhaven::crypto::{BLOB_HEADER_LEN, BLOB_VERSION, CiphertextBlob, EncryptionContext, TAG_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match CiphertextBlob::parse(data) {
        Ok(blob) => {
            assert!(data.len() >= BLOB_HEADER_LEN + TAG_LEN);
            assert_eq!(data[0], BLOB_VERSION);
            let again =
                CiphertextBlob::assemble(blob.key_id, blob.key_version, &blob.nonce, blob.sealed);
            assert_eq!(again, data);
            let aad = blob.aad_for(&EncryptionContext::default());
            assert_eq!(&aad[..], &data[..BLOB_HEADER_LEN]);
        }
        Err(_) => assert!(data.len() < BLOB_HEADER_LEN + TAG_LEN || data[0] != BLOB_VERSION),
    }
});
