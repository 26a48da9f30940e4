//! Secret values: zeroized when dropped, `[redacted]` when printed.

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

pub mod memory;
pub use memory::{InSlab, Locked, LockedSlab, LockedText};

/// A secret value (key material, plaintext, passphrase, secret access key).
///
/// The contents are wiped from memory on drop and never appear in `Debug` output, so a secret
/// that ends up inside a logged struct or an error shows as `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T: Zeroize>(Zeroizing<T>);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret itself; callers keep the borrow as short as they can.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> serde::Deserialize<'de> for Secret<String> {
    /// Reads a secret (a PIN in a config file) straight into its wiping container.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// Secret bytes: plaintexts, data keys, key material.
pub type SecretBytes = Secret<Vec<u8>>;
/// Secret text: passphrases, secret access keys, PINs.
pub type SecretString = Secret<String>;

/// The owner of a [`SecretBytes`] turned into [`bytes::Bytes`].
struct WipedOnDrop(SecretBytes);

impl AsRef<[u8]> for WipedOnDrop {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

impl SecretBytes {
    /// The secret as [`bytes::Bytes`] for a message field, without a copy: wiped when the last
    /// handle on it is dropped (for an answer, once it has been encoded).
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(WipedOnDrop(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = SecretString::new("hunter2-canary".to_owned());
        let nested = format!("{:?}", Some((1, &secret)));
        assert!(!nested.contains("hunter2"), "{nested}");
        assert!(nested.contains("[redacted]"));
        assert_eq!(secret.expose(), "hunter2-canary");
    }

    #[test]
    fn secret_bytes_become_bytes_without_a_copy() {
        // The Bytes share the secret's own buffer, which zeroize wipes when the last handle
        // is dropped: no unwiped copy is made on the way.
        let secret = SecretBytes::new(b"plaintext".to_vec());
        let buffer = secret.expose().as_ptr();
        let bytes = secret.into_bytes();
        assert_eq!(bytes.as_ptr(), buffer);
        let shared = bytes.clone();
        drop(bytes);
        assert_eq!(&shared[..], b"plaintext");
        assert_eq!(shared.as_ptr(), buffer);
    }
}
