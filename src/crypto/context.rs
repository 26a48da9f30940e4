//! Encryption context: a string map bound to a ciphertext as additional authenticated data.
//!
//! Canonical form: pairs sorted by key, each key and value written as a big-endian u32 length
//! followed by its UTF-8 bytes. The lengths keep `{"ab":"c"}` and `{"a":"bc"}` apart.

use std::collections::{BTreeMap, HashMap};

/// At most this many pairs.
pub const MAX_PAIRS: usize = 64;
/// At most this many bytes of keys and values together.
pub const MAX_BYTES: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidContext {
    #[error("encryption context has {0} pairs; at most {MAX_PAIRS} are allowed")]
    TooManyPairs(usize),
    #[error("encryption context is {0} bytes; at most {MAX_BYTES} are allowed")]
    TooLarge(usize),
    #[error("encryption context keys must not be empty")]
    EmptyKey,
}

/// A validated encryption context in canonical (sorted) order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    pub fn new(pairs: BTreeMap<String, String>) -> Result<Self, InvalidContext> {
        if pairs.len() > MAX_PAIRS {
            return Err(InvalidContext::TooManyPairs(pairs.len()));
        }
        let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_BYTES {
            return Err(InvalidContext::TooLarge(bytes));
        }
        if pairs.keys().any(String::is_empty) {
            return Err(InvalidContext::EmptyKey);
        }
        Ok(Self(pairs))
    }

    pub fn from_map(map: HashMap<String, String>) -> Result<Self, InvalidContext> {
        Self::new(map.into_iter().collect())
    }

    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, InvalidContext> {
        Self::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn canonical_len(&self) -> usize {
        self.0.iter().map(|(k, v)| 8 + k.len() + v.len()).sum()
    }

    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        for (key, value) in &self.0 {
            for part in [key, value] {
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
    }

    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.canonical_len());
        self.write_canonical(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_pairs_do_not_collide() {
        let a = EncryptionContext::from_pairs([("ab", "c")]).unwrap();
        let b = EncryptionContext::from_pairs([("a", "bc")]).unwrap();
        assert_ne!(a.canonical(), b.canonical());
        let c = EncryptionContext::from_pairs([("a", ""), ("b", "c")]).unwrap();
        assert_ne!(a.canonical(), c.canonical());
        assert_ne!(b.canonical(), c.canonical());
    }

    #[test]
    fn order_of_insertion_does_not_matter() {
        let a = EncryptionContext::from_pairs([("x", "1"), ("a", "2")]).unwrap();
        let b = EncryptionContext::from_pairs([("a", "2"), ("x", "1")]).unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.canonical_len(), a.canonical().len());
    }

    #[test]
    fn limits_are_enforced() {
        let many: BTreeMap<_, _> = (0..=MAX_PAIRS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert_eq!(
            EncryptionContext::new(many),
            Err(InvalidContext::TooManyPairs(MAX_PAIRS + 1))
        );
        let big = BTreeMap::from([("k".to_owned(), "v".repeat(MAX_BYTES))]);
        assert_eq!(
            EncryptionContext::new(big),
            Err(InvalidContext::TooLarge(MAX_BYTES + 1))
        );
        assert_eq!(
            EncryptionContext::from_pairs([("", "v")]),
            Err(InvalidContext::EmptyKey)
        );
    }
}
