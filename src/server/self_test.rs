//! Start-up self-tests in the manner of FIPS 140: before the daemon unseals anything, each
//! algorithm it relies on is run on a published input and must give the published answer. A
//! build whose cryptography is broken (a miscompiled backend, a bad dependency upgrade, a CPU
//! fault in AES-NI) then refuses to start instead of sealing keys nobody can read back.
//!
//! The vectors are others' (NIST CAVS, FIPS 180-2, RFC 4231, AWS's SigV4 example, RFC 9106),
//! never answers this code computed itself. Together they take a few milliseconds.
//!
//! In debug builds only, `KEYHAVEN_SELF_TEST_FAIL=<name>` (e.g. `AES-256-GCM`) corrupts that
//! test's answer, so that tests can show a failure stops the daemon; release builds ignore it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The variable that makes a self-test fail (debug builds only).
pub const FAIL_ENV: &str = "KEYHAVEN_SELF_TEST_FAIL";

/// A self-test whose answer was not the published one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("self-test failed: {0} known answer")]
pub struct SelfTestFailure(pub &'static str);

/// The names of the self-tests, in the order they run.
pub const NAMES: [&str; 5] = [
    "SHA-256",
    "HMAC-SHA-256",
    "SigV4 key derivation",
    "AES-256-GCM",
    "Argon2id",
];

type HmacSha256 = Hmac<Sha256>;

/// Runs every self-test; the first wrong answer stops them.
pub fn run() -> Result<(), SelfTestFailure> {
    check("SHA-256", sha256, SHA256_ABC)?;
    check("HMAC-SHA-256", hmac_sha256, HMAC_RFC4231_CASE2)?;
    check("SigV4 key derivation", sigv4_signing_key, SIGV4_SIGNING_KEY)?;
    check("AES-256-GCM", aes_256_gcm, AES_256_GCM_SEALED)?;
    check("Argon2id", argon2id, ARGON2ID_RFC9106)?;
    Ok(())
}

/// Compares `test`'s answer with `expected` (hex). An algorithm that errors fails too.
fn check(
    name: &'static str,
    test: fn() -> Option<Vec<u8>>,
    expected: &str,
) -> Result<(), SelfTestFailure> {
    let mut answer = test().ok_or(SelfTestFailure(name))?;
    if injected(name)
        && let Some(first) = answer.first_mut()
    {
        *first ^= 1;
    }
    if hex::encode(&answer) == expected {
        Ok(())
    } else {
        Err(SelfTestFailure(name))
    }
}

#[cfg(debug_assertions)]
fn injected(name: &str) -> bool {
    std::env::var(FAIL_ENV).is_ok_and(|wanted| wanted.eq_ignore_ascii_case(name))
}

#[cfg(not(debug_assertions))]
fn injected(_: &str) -> bool {
    false
}

/// FIPS 180-2, appendix B.1: SHA-256("abc").
const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn sha256() -> Option<Vec<u8>> {
    Some(Sha256::digest(b"abc").to_vec())
}

/// RFC 4231, test case 2.
const HMAC_RFC4231_CASE2: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

fn hmac_sha256() -> Option<Vec<u8>> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(b"Jefe").ok()?;
    mac.update(b"what do ya want for nothing?");
    Some(mac.finalize().into_bytes().to_vec())
}

/// AWS General Reference, "Examples of how to derive a signing key for Signature Version 4"
/// (20120215, us-east-1, iam): the HMAC chain request signatures are keyed by.
const SIGV4_SIGNING_KEY: &str = "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d";

fn sigv4_signing_key() -> Option<Vec<u8>> {
    let step = |key: &[u8], data: &[u8]| -> Option<Vec<u8>> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key).ok()?;
        mac.update(data);
        Some(mac.finalize().into_bytes().to_vec())
    };
    let k_date = step(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20120215")?;
    let k_region = step(&k_date, b"us-east-1")?;
    let k_service = step(&k_region, b"iam")?;
    step(&k_service, b"aws4_request")
}

/// NIST CAVS `gcmEncryptExtIV256.rsp`: a 256-bit key, 96-bit nonce, 128-bit tag, with
/// plaintext and AAD. The answer is ciphertext ‖ tag.
const AES_256_GCM_SEALED: &str = "8995ae2e6df3dbf96fac7b7137bae67feca5aa77d51d4a0a14d9c51e1da474ab";

fn aes_256_gcm() -> Option<Vec<u8>> {
    let key =
        hex::decode("92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b").ok()?;
    let nonce = hex::decode("ac93a1a6145299bde902f21a").ok()?;
    let plaintext = hex::decode("2d71bcfa914e4ac045b2aa60955fad24").ok()?;
    let aad = hex::decode("1e0889016f67601c8ebea4943bc23ad6").ok()?;
    let cipher = Aes256Gcm::new_from_slice(&key).ok()?;
    let nonce = Nonce::from_slice(&nonce);
    let sealed = cipher
        .encrypt(
            nonce,
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .ok()?;
    // Decryption must give the plaintext back, and refuse the same ciphertext under other AAD.
    let opened = cipher
        .decrypt(
            nonce,
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .ok()?;
    let forged = cipher.decrypt(
        nonce,
        Payload {
            msg: &sealed,
            aad: b"other",
        },
    );
    (opened == plaintext && forged.is_err()).then_some(sealed)
}

/// RFC 9106, section 5.3 (Argon2id, version 0x13, with secret and associated data), through
/// the seal's own derivation.
const ARGON2ID_RFC9106: &str = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659";

fn argon2id() -> Option<Vec<u8>> {
    let params = crate::seal::KdfParams {
        memory_kib: 32,
        iterations: 3,
        parallelism: 4,
    };
    crate::seal::derive_kek_keyed(&[0x01; 32], &[0x02; 16], params, &[0x03; 8], &[0x04; 12])
        .ok()
        .map(|tag| tag.expose().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_self_test_passes_and_each_can_fail() {
        assert_eq!(run(), Ok(()));
        assert_eq!(
            check("AES-256-GCM", aes_256_gcm, SHA256_ABC),
            Err(SelfTestFailure("AES-256-GCM"))
        );
        assert_eq!(
            SelfTestFailure("AES-256-GCM").to_string(),
            "self-test failed: AES-256-GCM known answer"
        );
        // Every name `run` uses is listed (the names are what FAIL_ENV takes).
        for name in NAMES {
            assert!(
                check(name, || None, "").is_err(),
                "an algorithm that errors fails {name}"
            );
        }
    }
}
