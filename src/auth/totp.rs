//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): HMAC-SHA-1, six digits,
//! 30-second steps, the parameters every authenticator app assumes for an `otpauth://totp`
//! URI that names no others.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

/// The step a Unix time falls in (times before 1970 fall in step 0).
pub fn step_at(unix_seconds: i64) -> i64 {
    unix_seconds.max(0) / STEP_SECONDS
}

/// The code of `step` for `seed`, as the `DIGITS` decimal digits (leading zeros kept).
pub fn code(seed: &[u8], step: i64) -> String {
    format!("{:0width$}", truncated(seed, step), width = DIGITS as usize)
}

/// RFC 4226 §5.3: the HMAC of the big-endian counter, dynamically truncated to 31 bits and
/// reduced to the digits.
fn truncated(seed: &[u8], step: i64) -> u32 {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(seed) else {
        return u32::MAX;
    };
    mac.update(&(step as u64).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let value = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    value % 10u32.pow(DIGITS)
}

/// Whether `given` is the code of `step`, compared in constant time.
pub fn matches(seed: &[u8], step: i64, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = code(seed, step);
    given.len() == expected.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (eight digits there; the last six are ours).
    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        let seed = b"12345678901234567890";
        for (time, eight) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code(seed, step_at(time)), eight[2..], "T = {time}");
            assert!(matches(seed, step_at(time), &eight[2..]));
            assert!(!matches(seed, step_at(time) + 1, &eight[2..]));
        }
    }

    #[test]
    fn codes_of_another_length_do_not_match() {
        let seed = b"12345678901234567890";
        assert!(!matches(seed, step_at(59), "94287082"));
        assert!(!matches(seed, step_at(59), "28708"));
        assert!(!matches(seed, step_at(59), ""));
    }
}
