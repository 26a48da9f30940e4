//! Encryption-context canonicalisation on arbitrary pairs: never panics, and the canonical
//! bytes decode back to exactly the pairs (so distinct contexts never share canonical bytes).

#![no_main]

use keyhaven::crypto::EncryptionContext;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fn decode(mut bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    fn part(bytes: &mut &[u8]) -> Option<String> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (text, rest) = rest.split_at(len);
        *bytes = rest;
        String::from_utf8(text.to_vec()).ok()
    }
    let mut pairs = BTreeMap::new();
    while !bytes.is_empty() {
        let key = part(&mut bytes)?;
        let value = part(&mut bytes)?;
        if pairs.insert(key, value).is_some() {
            return None;
        }
    }
    Some(pairs)
}

fuzz_target!(|pairs: BTreeMap<String, String>| {
    if let Ok(context) = EncryptionContext::new(pairs.clone()) {
        let canonical = context.canonical();
        assert_eq!(canonical.len(), context.canonical_len());
        assert_eq!(decode(&canonical), Some(pairs));
    }
});
