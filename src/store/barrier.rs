//! Record integrity: every record the store holds is authenticated under a key derived from
//! the master key and bound to its record name, and the set of records is authenticated as a
//! whole, so an offline edit of the data directory is refused at load, never served.
//!
//! - **Each record** is stored as `0x01 ‖ tag ‖ value`, where `tag` is HMAC-SHA-256 over the
//!   record name's length, the name and the value. A value changed, or moved to another name,
//!   fails its tag and is named in the error.
//! - **The set of records** is authenticated by a digest: the XOR of every record's tag, kept
//!   in the record [`DIGEST_RECORD`] (itself tagged, and left out of the XOR) and updated in the
//!   same atomic batch as every change. The tags are keyed, so nobody without the master key can
//!   make a set whose XOR matches (a keyed XOR-MAC over distinct names). A record rolled back to
//!   an older value, removed, or copied in from elsewhere (a backup of this store included)
//!   leaves the digest unmatched, and the store refuses to open.
//! - What it cannot see is a rollback of the **whole** store to an earlier consistent state
//!   (restoring a backup looks exactly like that); see the README's threat model.
//!
//! Offline readers without the passphrase ([`Barrier`] absent) strip the tags unchecked and
//! may not write.

use super::{StoreError, WriteBatch};
use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;

/// The record holding the digest of every other record.
pub const DIGEST_RECORD: &[u8] = b"barrier/digest";
const FORMAT: u8 = 1;
const TAG_LEN: usize = 32;
const HEADER: usize = 1 + TAG_LEN;

pub type Tag = [u8; TAG_LEN];

/// The integrity key, derived from the master key.
pub struct Barrier {
    key: Secret<[u8; 32]>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Barrier([redacted])")
    }
}

/// Why a record or the store was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error(
        "record {0} failed its integrity check: it was changed or moved while the daemon was not looking"
    )]
    Record(String),
    #[error(
        "the store's records do not match its digest: a record was rolled back, removed or added while the daemon was not looking"
    )]
    Digest,
    #[error(
        "the store holds records but no integrity digest: it was written before records were authenticated, or the digest was removed (run `keyhaven store authenticate` once if you trust it as it is)"
    )]
    NoDigest,
}

impl From<IntegrityError> for StoreError {
    fn from(e: IntegrityError) -> Self {
        StoreError(e.to_string())
    }
}

/// A record name as an error shows it.
pub fn printable_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl Barrier {
    /// The barrier of a data directory, from the key the master key derived for it.
    pub fn new(key: Secret<[u8; 32]>) -> Self {
        Self { key }
    }

    fn mac(&self, name: &[u8], value: &[u8]) -> Result<Hmac<Sha256>, StoreError> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose())
            .map_err(|e| StoreError(format!("barrier key: {e}")))?;
        mac.update(&(name.len() as u32).to_be_bytes());
        mac.update(name);
        mac.update(value);
        Ok(mac)
    }

    /// The stored form of `value` under `name`, and its tag.
    pub fn seal(&self, name: &[u8], value: &[u8]) -> Result<(Vec<u8>, Tag), StoreError> {
        let tag: Tag = self.mac(name, value)?.finalize().into_bytes().into();
        let mut stored = Vec::with_capacity(HEADER + value.len());
        stored.push(FORMAT);
        stored.extend_from_slice(&tag);
        stored.extend_from_slice(value);
        Ok((stored, tag))
    }

    /// The value of a stored record, once its tag is checked (in constant time).
    pub fn open<'a>(&self, name: &[u8], stored: &'a [u8]) -> Result<&'a [u8], StoreError> {
        let (tag, value) = split(stored).ok_or_else(|| refused(name))?;
        self.mac(name, value)?
            .verify_slice(tag)
            .map_err(|_| refused(name))?;
        Ok(value)
    }

    /// Checks every record and the digest: the store as a whole is what was last written.
    pub fn check_all<'a>(
        &self,
        records: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a,
    ) -> Result<Tag, StoreError> {
        let mut digest = [0u8; TAG_LEN];
        let mut stored_digest = None;
        let mut any = false;
        for record in records {
            let (name, stored) = record?;
            if name == DIGEST_RECORD {
                let value = self.open(&name, &stored)?;
                let value: Tag = value.try_into().map_err(|_| refused(&name))?;
                stored_digest = Some(value);
                continue;
            }
            any = true;
            self.open(&name, &stored)?;
            let (tag, _) = split(&stored).ok_or_else(|| refused(&name))?;
            xor(&mut digest, tag);
        }
        match stored_digest {
            Some(stored) if stored == digest => Ok(digest),
            Some(_) => Err(IntegrityError::Digest.into()),
            None if !any => Ok(digest),
            None => Err(IntegrityError::NoDigest.into()),
        }
    }

    /// Turns a batch of plain values into stored ones, and folds the change into `digest`:
    /// the tag of each record replaced or removed out, each new one in. `current` reads a
    /// record's stored form as it is before the batch.
    pub fn seal_batch(
        &self,
        batch: WriteBatch,
        digest: &mut Tag,
        current: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, StoreError>,
    ) -> Result<WriteBatch, StoreError> {
        let (ops, guards) = batch.into_parts();
        // A name may appear more than once in one batch: later ops see earlier ones.
        let mut tags: HashMap<Vec<u8>, Option<Tag>> = HashMap::new();
        let mut sealed = WriteBatch::new();
        for (name, value) in ops {
            if name == DIGEST_RECORD {
                return Err(StoreError(format!(
                    "{} is the store's own record",
                    printable_name(&name)
                )));
            }
            let old = match tags.get(&name) {
                Some(tag) => *tag,
                None => current(&name)?.as_deref().and_then(split).map(|(t, _)| {
                    let mut tag = [0u8; TAG_LEN];
                    tag.copy_from_slice(t);
                    tag
                }),
            };
            if let Some(old) = old {
                xor(digest, &old);
            }
            match value {
                Some(value) => {
                    let (stored, tag) = self.seal(&name, &value)?;
                    xor(digest, &tag);
                    tags.insert(name.clone(), Some(tag));
                    sealed.put(name, stored);
                }
                None => {
                    tags.insert(name.clone(), None);
                    sealed.delete(name);
                }
            }
        }
        let (stored, _) = self.seal(DIGEST_RECORD, digest)?;
        sealed.put(DIGEST_RECORD.to_vec(), stored);
        sealed.hold_all(guards);
        Ok(sealed)
    }
}

impl Barrier {
    /// Authenticates a store written before records were: every record taken as it is, and
    /// the digest of them all. Refuses a store that has a digest already.
    pub fn adopt(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<WriteBatch, StoreError> {
        if records.iter().any(|(name, _)| name == DIGEST_RECORD) {
            return Err(StoreError(
                "the store's records are authenticated already".into(),
            ));
        }
        let mut digest = [0u8; TAG_LEN];
        let mut batch = WriteBatch::new();
        for (name, value) in records {
            let (stored, tag) = self.seal(&name, &value)?;
            xor(&mut digest, &tag);
            batch.put(name, stored);
        }
        let (stored, _) = self.seal(DIGEST_RECORD, &digest)?;
        batch.put(DIGEST_RECORD.to_vec(), stored);
        Ok(batch)
    }
}

/// The value of a stored record without checking its tag (offline readers without the
/// master key).
pub fn strip(name: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
    split(stored)
        .map(|(_, value)| value.to_vec())
        .ok_or_else(|| refused(name).into())
}

fn split(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    if stored.len() < HEADER || stored[0] != FORMAT {
        return None;
    }
    Some((&stored[1..HEADER], &stored[HEADER..]))
}

fn refused(name: &[u8]) -> IntegrityError {
    IntegrityError::Record(printable_name(name))
}

fn xor(digest: &mut Tag, tag: &[u8]) {
    for (d, t) in digest.iter_mut().zip(tag) {
        *d ^= t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn barrier() -> Barrier {
        Barrier::new(Secret::new([7u8; 32]))
    }

    fn stored(b: &Barrier, records: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut digest = [0u8; TAG_LEN];
        let mut batch = WriteBatch::new();
        for (k, v) in records {
            batch.put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        let sealed = b.seal_batch(batch, &mut digest, |_| Ok(None)).unwrap();
        let mut out: Vec<_> = sealed
            .into_ops()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap()))
            .collect();
        out.sort();
        out
    }

    fn check(b: &Barrier, records: &[(Vec<u8>, Vec<u8>)]) -> Result<Tag, StoreError> {
        b.check_all(records.iter().cloned().map(Ok))
    }

    #[test]
    fn a_record_changed_or_moved_is_named() {
        let b = barrier();
        let records = stored(
            &b,
            &[("user/app", "{\"arn\":\"app\"}"), ("user/root", "{}")],
        );
        check(&b, &records).unwrap();
        // Sorted: barrier/digest, user/app, user/root.
        let mut changed = records.clone();
        let last = changed[1].1.len() - 2;
        changed[1].1[last] ^= 1;
        assert_eq!(
            check(&b, &changed).unwrap_err().0,
            IntegrityError::Record("user/app".into()).to_string()
        );
        // The app user's record put in the root's place.
        let mut moved = records.clone();
        moved[2].1 = moved[1].1.clone();
        assert!(check(&b, &moved).unwrap_err().0.contains("user/root"));
        // Another key's tags mean nothing here.
        let other = Barrier::new(Secret::new([8u8; 32]));
        assert!(check(&other, &records).is_err());
    }

    #[test]
    fn a_record_rolled_back_removed_or_added_fails_the_digest() {
        let b = barrier();
        let old = stored(&b, &[("key/a", "enabled"), ("key/b", "x")]);
        let mut digest = [0u8; TAG_LEN];
        for (name, value) in &old {
            if name != DIGEST_RECORD {
                xor(&mut digest, split(value).unwrap().0);
            }
        }
        // key/a changes to "disabled": the new batch carries the new digest.
        let mut batch = WriteBatch::new();
        batch.put(b"key/a".to_vec(), b"disabled".to_vec());
        let lookup = |name: &[u8]| Ok(old.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()));
        let change = b.seal_batch(batch, &mut digest, lookup).unwrap();
        let mut new = old.clone();
        for (name, value) in change.into_ops() {
            let slot = new.iter_mut().find(|(n, _)| *n == name).unwrap();
            slot.1 = value.unwrap();
        }
        check(&b, &new).unwrap();
        // Rolled back alone: key/a's old (validly tagged) value with the new digest.
        let mut rolled = new.clone();
        let a = rolled.iter().position(|(n, _)| n == b"key/a").unwrap();
        rolled[a].1 = old[a].1.clone();
        assert_eq!(
            check(&b, &rolled).unwrap_err().0,
            IntegrityError::Digest.to_string()
        );
        // Removed.
        let mut removed = new.clone();
        removed.retain(|(n, _)| n != b"key/b");
        assert_eq!(
            check(&b, &removed).unwrap_err().0,
            IntegrityError::Digest.to_string()
        );
        // The digest removed: the store is refused, not adopted.
        let mut no_digest = new.clone();
        no_digest.retain(|(n, _)| n != DIGEST_RECORD);
        assert_eq!(
            check(&b, &no_digest).unwrap_err().0,
            IntegrityError::NoDigest.to_string()
        );
        // An empty store has nothing to check.
        check(&b, &[]).unwrap();
    }

    #[test]
    fn a_name_twice_in_one_batch_counts_once() {
        let b = barrier();
        let mut digest = [0u8; TAG_LEN];
        let mut batch = WriteBatch::new();
        batch.put(b"material/x".to_vec(), b"one".to_vec());
        batch.put(b"material/x".to_vec(), b"two".to_vec());
        batch.put(b"material/y".to_vec(), b"gone".to_vec());
        batch.delete(b"material/y".to_vec());
        let ops = b
            .seal_batch(batch, &mut digest, |_| Ok(None))
            .unwrap()
            .into_ops();
        // Applied in order, as the backend does.
        let mut state: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        for (k, v) in ops {
            match v {
                Some(v) => state.insert(k, v),
                None => state.remove(&k),
            };
        }
        let records: Vec<_> = state.into_iter().collect();
        assert_eq!(check(&b, &records).unwrap(), digest);
    }
}
