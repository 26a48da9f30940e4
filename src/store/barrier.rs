//! Record integrity: every record the store holds is authenticated under a key derived from
//! the master key and bound to its record name, and the set of records is authenticated as a
//! whole, so an offline edit of the data directory is refused at load, never served.
//!
//! - **Each record** is stored as `0x01 ‖ tag ‖ value`, where `tag` is HMAC-SHA-256 over the
//!   record name's length, the name and the value. A value changed, or moved to another name,
//!   fails its tag and is named in the error.
//! - **The set of records** is authenticated by a digest kept in the record
//!   [`DIGEST_RECORD`] (itself tagged) and written in the same atomic batch as every change.
//!   The digest is the root of a hash tree over every record's (name, tag): records fall into
//!   65,536 buckets by a hash of their name, a bucket hashes its pairs in order, a group of 16
//!   buckets hashes their hashes, a section of 64 groups hashes theirs, the root hashes the 64
//!   sections'. A record rolled back to an older value, removed, or copied in from elsewhere
//!   (a backup of this store included) changes the root, and nobody without the master key
//!   can tag a new root, so only a set whose root was once stored passes: SHA-256's collision
//!   resistance, not the secrecy of the tags (which anyone who reads the files sees), makes
//!   that the whole store as it once was. (An XOR of tags would not do: tags read off the disk
//!   combine linearly into any difference.) A change rehashes one bucket (at a million keys,
//!   about 30 entries), one group, one section and the root.
//! - **The tree holds the first 16 bytes of each tag** beside the first 16 of its name's
//!   SHA-256: 32 bytes of memory per record. A record's older value passes for its current one
//!   only if the two tags share those 128 bits, and nobody without the master key can make a
//!   tag to match, so the prefix refuses a rollback as surely as the whole tag did.
//! - **The digest record names its format**: `0x03 ‖ root` for this tree. Earlier versions
//!   used a tree of 4,096 buckets, 64 groups and the root: `0x02 ‖ root` over the tags' first
//!   bytes ([`narrow_digest_value`]), and before that the root alone, over whole tags
//!   ([`whole_tag_root`]). A store in either is checked as it is, record by record, and the
//!   store opened on it writes the root again in this format before anything else; a daemon
//!   that reads a root in an earlier format from another daemon's change refuses it
//!   ([`IntegrityError::EarlierDigest`]): the daemons of a shared store move to this version
//!   together.
//! - What it cannot see is a rollback of the **whole** store to an earlier consistent state
//!   (restoring a backup looks exactly like that); see the README's threat model.
//!
//! Offline readers without the passphrase ([`Barrier`] absent) strip the tags unchecked and
//! may not write.

use super::{StoreError, WriteBatch};
use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Digest as _;
use sha2::Sha256;

/// The record holding the digest of every other record.
pub const DIGEST_RECORD: &[u8] = b"barrier/digest";
/// The record every batch to a shared store carries with a fresh random value, so that the
/// root a batch stores is its own: a daemon knows its own batches when the change feed brings
/// them back by that root. Without it, two daemons making the same change from the same state
/// (both reserving the same nonce counts of a key) store the same root, and the one whose
/// batch came second takes the other's for its own: it does not hear the change, and goes on
/// from the record as it was before it.
pub const BATCH_RECORD: &[u8] = b"barrier/batch";
/// The random bytes of [`BATCH_RECORD`].
const BATCH_MARK_LEN: usize = 16;
const FORMAT: u8 = 1;
const TAG_LEN: usize = 32;
const HEADER: usize = 1 + TAG_LEN;
/// The digest record's value: this byte, then the root (see the module docs).
const DIGEST_FORMAT: u8 = 3;
/// The previous version's: this byte, then the root of the earlier tree (4,096 buckets) over
/// the tags' first bytes.
const NARROW_DIGEST_FORMAT: u8 = 2;
/// How much of a record's tag the tree holds and hashes.
const HELD_LEN: usize = 16;

pub type Tag = [u8; TAG_LEN];
/// What the tree holds of a record's tag: its first bytes.
pub type Held = [u8; HELD_LEN];

/// The part of `tag` the tree holds.
pub fn held(tag: &Tag) -> Held {
    let mut held = [0u8; HELD_LEN];
    held.copy_from_slice(&tag[..HELD_LEN]);
    held
}

/// A root as the digest record holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    /// Over the tags' first bytes, as this version writes it.
    Held(Tag),
    /// Over the tags' first bytes in the earlier tree, as the previous version wrote it.
    Narrow(Tag),
    /// Over whole tags in the earlier tree, as a store written before that holds it.
    Whole(Tag),
}

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
        "the store's digest is in the format of an earlier version, written since this daemon read the store: the daemons of a shared store move to this version together"
    )]
    EarlierDigest,
    #[error(
        "the store holds records but no integrity digest: the digest was removed, or the store was written before records were authenticated (only then, and only if nobody could have edited it, may `keyhaven store authenticate` adopt it)"
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
    /// Returns the tree of the records, to keep up to date from here on. A digest in the
    /// earlier format (over whole tags) is checked as such; the store opened on it then writes
    /// the root in this one ([`Barrier::earlier_format`]), as its every change does.
    pub fn check_all<'a>(
        &self,
        records: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a,
    ) -> Result<SetDigest, StoreError> {
        let mut loading = Loading::default();
        let mut stored_root = None;
        for record in records {
            let (name, stored) = record?;
            if name == DIGEST_RECORD {
                stored_root = Some(self.read_root(&stored)?);
                continue;
            }
            self.open(&name, &stored)?;
            let (tag, _) = split(&stored).ok_or_else(|| refused(&name))?;
            loading.push(&name, to_tag(tag));
        }
        let loading = loading.sorted();
        let empty = loading.records == 0;
        let earlier = match stored_root {
            Some(Root::Whole(stored)) => Some(stored == loading.earlier_root(Tags::Whole)),
            Some(Root::Narrow(stored)) => Some(stored == loading.earlier_root(Tags::Held)),
            _ => None,
        };
        let mut digest = loading.into_tree();
        let passes = match (stored_root, earlier) {
            (Some(Root::Held(stored)), _) => stored == digest.root(),
            (_, Some(earlier)) => earlier,
            _ => false,
        };
        match stored_root {
            Some(_) if passes => Ok(digest),
            Some(_) => Err(IntegrityError::Digest.into()),
            None if empty => Ok(digest),
            None => Err(IntegrityError::NoDigest.into()),
        }
    }

    /// The digest record's value for `root`, sealed.
    fn seal_root(&self, root: &Tag) -> Result<Vec<u8>, StoreError> {
        let mut value = [0u8; 1 + TAG_LEN];
        value[0] = DIGEST_FORMAT;
        value[1..].copy_from_slice(root);
        Ok(self.seal(DIGEST_RECORD, &value)?.0)
    }

    /// The root a stored digest record holds, in either format, once its tag is checked.
    fn read_root(&self, stored: &[u8]) -> Result<Root, StoreError> {
        let value = self.open(DIGEST_RECORD, stored)?;
        match value {
            [DIGEST_FORMAT, root @ ..] if root.len() == TAG_LEN => Ok(Root::Held(to_tag(root))),
            [NARROW_DIGEST_FORMAT, root @ ..] if root.len() == TAG_LEN => {
                Ok(Root::Narrow(to_tag(root)))
            }
            whole if whole.len() == TAG_LEN => Ok(Root::Whole(to_tag(whole))),
            _ => Err(refused(DIGEST_RECORD).into()),
        }
    }

    /// Turns a batch of plain values into stored ones, folds the change into `digest` and adds
    /// the record of its new root. Returns the sealed batch and what to put back in `digest`
    /// should the batch not be applied; on an error `digest` is as it was.
    pub fn seal_batch(
        &self,
        batch: WriteBatch,
        digest: &mut SetDigest,
    ) -> Result<(WriteBatch, Vec<Undo>), StoreError> {
        let (ops, guards) = batch.into_parts();
        let mut undo = Vec::with_capacity(ops.len());
        let mut sealed = WriteBatch::new();
        let seal_all = || {
            for (name, value) in ops {
                if name == DIGEST_RECORD {
                    return Err(StoreError(format!(
                        "{} is the store's own record",
                        printable_name(&name)
                    )));
                }
                match value {
                    Some(value) => {
                        let (stored, tag) = self.seal(&name, &value)?;
                        undo.push((name.clone(), digest.set(&name, Some(tag))));
                        sealed.put(name, stored);
                    }
                    None => {
                        undo.push((name.clone(), digest.set(&name, None)));
                        sealed.delete(name);
                    }
                }
            }
            sealed.put(DIGEST_RECORD.to_vec(), self.seal_root(&digest.root())?);
            Ok(())
        };
        if let Err(error) = seal_all() {
            digest.undo(undo);
            return Err(error);
        }
        sealed.hold_all(guards);
        Ok((sealed, undo))
    }

    /// [`Barrier::seal_batch`] for a store other daemons write too: the batch also stores
    /// [`BATCH_RECORD`] with a fresh random value, so no other batch stores the root it does.
    pub fn seal_shared_batch(
        &self,
        mut batch: WriteBatch,
        digest: &mut SetDigest,
    ) -> Result<(WriteBatch, Vec<Undo>), StoreError> {
        let mut mark = [0u8; BATCH_MARK_LEN];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut mark);
        batch.put(BATCH_RECORD.to_vec(), mark.to_vec());
        self.seal_batch(batch, digest)
    }
}

impl Barrier {
    /// Folds a change another process made into `digest`, once its stored form passes its
    /// tag (`None`: the record was removed). The digest record itself is not folded: see
    /// [`Barrier::stored_root`].
    pub fn fold(
        &self,
        name: &[u8],
        stored: Option<&[u8]>,
        digest: &mut SetDigest,
    ) -> Result<(), StoreError> {
        match stored {
            Some(stored) => {
                self.open(name, stored)?;
                let (tag, _) = split(stored).ok_or_else(|| refused(name))?;
                digest.set(name, Some(to_tag(tag)));
            }
            None => {
                digest.set(name, None);
            }
        }
        Ok(())
    }

    /// Whether a stored digest record holds its root in an earlier version's format, once its
    /// tag is checked.
    pub fn earlier_format(&self, stored: &[u8]) -> bool {
        matches!(self.read_root(stored), Ok(Root::Whole(_) | Root::Narrow(_)))
    }

    /// The root a stored digest record holds, once its tag is checked. A root in an earlier
    /// format is refused: only [`Barrier::check_all`] reads one (see the module docs).
    pub fn stored_root(&self, stored: &[u8]) -> Result<Tag, StoreError> {
        match self.read_root(stored)? {
            Root::Held(root) => Ok(root),
            Root::Narrow(_) | Root::Whole(_) => Err(IntegrityError::EarlierDigest.into()),
        }
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
        let mut digest = SetDigest::default();
        let mut batch = WriteBatch::new();
        for (name, value) in records {
            let (stored, tag) = self.seal(&name, &value)?;
            digest.set(&name, Some(tag));
            batch.put(name, stored);
        }
        batch.put(DIGEST_RECORD.to_vec(), self.seal_root(&digest.root())?);
        Ok(batch)
    }
}

/// The tag of a stored record, as stored (`None` when it has no header).
pub fn stored_tag(stored: &[u8]) -> Option<Tag> {
    split(stored).map(|(tag, _)| to_tag(tag))
}

/// The value of a stored record without checking its tag (offline readers without the
/// master key).
pub fn strip<'a>(name: &[u8], stored: &'a [u8]) -> Result<&'a [u8], StoreError> {
    split(stored)
        .map(|(_, value)| value)
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

fn to_tag(bytes: &[u8]) -> Tag {
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(bytes);
    tag
}

/// What the tree held of a record's former tag (`None`: it was absent), to put back if its
/// batch is not applied.
pub type Undo = (Vec<u8>, Option<Held>);

/// Records fall into 65,536 buckets by the first two bytes of their name's hash; a group
/// hashes 16 buckets' hashes, a section 64 groups', the root the 64 sections'. A change
/// rehashes its bucket (about one entry in 65,536 of the store's), one group (512 bytes), one
/// section (2 KiB) and the root (2 KiB).
const BUCKETS: usize = 1 << 16;
const BUCKETS_PER_GROUP: usize = 16;
const GROUPS: usize = BUCKETS / BUCKETS_PER_GROUP;
const GROUPS_PER_SECTION: usize = 64;
const SECTIONS: usize = GROUPS / GROUPS_PER_SECTION;
/// The earlier tree, of the digest formats before this one: 4,096 buckets (the name hash's
/// first two bytes modulo 4,096), a group hashing 64 buckets' hashes, the root the 64 groups'.
/// A change rehashed a bucket of one entry in 4,096 of the store's: 15 KiB at a million keys.
const EARLIER_BUCKETS: usize = 4096;
const EARLIER_BUCKETS_PER_GROUP: usize = 64;
/// How much of a name's hash places and orders it (internal record names do not collide in
/// 128 bits).
type NameHash = [u8; 16];
/// An entry of the tree, as held and as encoded: name hash, then the tag's first bytes.
const ENTRY: usize = 16 + HELD_LEN;

/// The tree over every record's (name hash, tag's first bytes); see the module docs.
#[derive(Debug, Clone)]
pub struct SetDigest {
    /// Per group, its records' (name hash, tag's first bytes), sorted: a bucket is a run of
    /// its group's entries (its number is the name hash's first two bytes). One allocation a
    /// group, not a bucket: 65,536 buckets of ~30 entries, grown one insertion at a time, left
    /// a third more memory behind in the allocator than 4,096 runs of ~490.
    groups: Vec<Vec<(NameHash, Held)>>,
    bucket_hashes: Vec<[u8; 32]>,
    group_hashes: Vec<[u8; 32]>,
    section_hashes: Vec<[u8; 32]>,
    /// Buckets changed since the root was last computed.
    dirty: std::collections::BTreeSet<usize>,
    records: usize,
    /// While the records are checked against a tree taken from a copy set aside at the last
    /// close (see [`SetDigest::decode`]): the names changed since, whose records this daemon
    /// wrote and so need no check.
    touched: Option<std::collections::HashSet<NameHash>>,
}

impl Default for SetDigest {
    fn default() -> Self {
        // Every group of empty buckets hashes alike, and every section of them.
        let empty = bucket_hash::<HELD_LEN>(&[]);
        let bucket_hashes = vec![empty; BUCKETS];
        let group_hashes = vec![hash_of(&bucket_hashes, 0, BUCKETS_PER_GROUP); GROUPS];
        let section_hashes = vec![hash_of(&group_hashes, 0, GROUPS_PER_SECTION); SECTIONS];
        Self {
            groups: vec![Vec::new(); GROUPS],
            bucket_hashes,
            group_hashes,
            section_hashes,
            dirty: Default::default(),
            records: 0,
            touched: None,
        }
    }
}

/// A name's bucket: its hash's first two bytes.
fn bucket_of(hash: &[u8]) -> usize {
    (usize::from(hash[0]) << 8) | usize::from(hash[1])
}

/// The run of a group's entries (sorted by name hash) that is `bucket`.
fn bucket_run<T>(group: &[(NameHash, T)], bucket: usize) -> &[(NameHash, T)] {
    let start = group.partition_point(|(key, _)| bucket_of(key) < bucket);
    let end = group.partition_point(|(key, _)| bucket_of(key) <= bucket);
    &group[start..end]
}

fn place(name: &[u8]) -> (usize, NameHash) {
    let hash = sha2::Sha256::digest(name);
    let bucket = bucket_of(&hash);
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash[..16]);
    (bucket, key)
}

/// A bucket's hash: its (name hash, tag or its first bytes) pairs, in order.
fn bucket_hash<const N: usize>(entries: &[(NameHash, [u8; N])]) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    for (key, tag) in entries {
        hasher.update(key);
        hasher.update(tag);
    }
    hasher.finalize().into()
}

/// The hash of the `width` hashes of the level below that make up the `index`th node of this
/// level.
fn hash_of(below: &[[u8; 32]], index: usize, width: usize) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    for hash in &below[index * width..(index + 1) * width] {
        hasher.update(hash);
    }
    hasher.finalize().into()
}

/// The root: the count of records, then every top node's hash (sections; the earlier tree's
/// groups).
fn root_over(records: usize, top: &[[u8; 32]]) -> Tag {
    let mut hasher = sha2::Sha256::new();
    hasher.update((records as u64).to_be_bytes());
    for hash in top {
        hasher.update(hash);
    }
    hasher.finalize().into()
}

/// What of each record's tag a root is over.
#[derive(Clone, Copy)]
enum Tags {
    Whole,
    Held,
}

impl Tags {
    fn len(self) -> usize {
        match self {
            Tags::Whole => TAG_LEN,
            Tags::Held => HELD_LEN,
        }
    }
}

/// Every record's whole tag, while a pass over every record reads them: the tree
/// ([`Loading::into_tree`]), and the roots of the earlier formats ([`Loading::earlier_root`]),
/// come from it.
#[derive(Default)]
struct Loading {
    /// Per group of buckets, as in [`SetDigest`].
    groups: Vec<Vec<(NameHash, Tag)>>,
    records: usize,
}

impl Loading {
    /// Adds a record, unsorted: [`Loading::sorted`] must follow. One sort per group instead
    /// of an insertion (and a move of the group's tail) per record, which made loading a
    /// large store quadratic in the group's size.
    fn push(&mut self, name: &[u8], tag: Tag) {
        if self.groups.is_empty() {
            self.groups = vec![Vec::new(); GROUPS];
        }
        let (bucket, key) = place(name);
        self.groups[bucket / BUCKETS_PER_GROUP].push((key, tag));
        self.records += 1;
    }

    /// The groups sorted, as [`SetDigest::set`] one at a time would have made them (a name
    /// hash met twice keeps its last tag).
    fn sorted(mut self) -> Self {
        for group in &mut self.groups {
            if group.is_empty() {
                continue;
            }
            // Stable: of equal name hashes, the last added ends last.
            group.sort_by_key(|entry| entry.0);
            let before = group.len();
            let mut kept: Vec<(NameHash, Tag)> = Vec::with_capacity(before);
            for entry in group.drain(..) {
                match kept.last_mut() {
                    Some(last) if last.0 == entry.0 => *last = entry,
                    _ => kept.push(entry),
                }
            }
            self.records -= before - kept.len();
            *group = kept;
        }
        self
    }

    /// The root of the earlier tree over whole tags or their first bytes, as the digest
    /// formats before this one store it. The earlier bucket `b` holds this tree's buckets
    /// `b`, `b + 4,096`, …, merged in order.
    fn earlier_root(&self, tags: Tags) -> Tag {
        let mut earlier: Vec<Vec<&(NameHash, Tag)>> = vec![Vec::new(); EARLIER_BUCKETS];
        for entry in self.groups.iter().flatten() {
            earlier[bucket_of(&entry.0) % EARLIER_BUCKETS].push(entry);
        }
        let bucket_hashes: Vec<[u8; 32]> = earlier
            .into_iter()
            .map(|mut entries| {
                // As `bucket_hash` over the whole tags or their first bytes.
                entries.sort_by_key(|entry| entry.0);
                let mut hasher = sha2::Sha256::new();
                for (key, tag) in entries {
                    hasher.update(key);
                    hasher.update(&tag[..tags.len()]);
                }
                hasher.finalize().into()
            })
            .collect();
        let groups: Vec<[u8; 32]> = (0..EARLIER_BUCKETS / EARLIER_BUCKETS_PER_GROUP)
            .map(|group| hash_of(&bucket_hashes, group, EARLIER_BUCKETS_PER_GROUP))
            .collect();
        root_over(self.records, &groups)
    }

    /// The tree, a group at a time (each group's whole tags freed as its entries move).
    fn into_tree(self) -> SetDigest {
        let mut tree = SetDigest::default();
        for (index, group) in self.groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            tree.groups[index] = group.iter().map(|(key, tag)| (*key, held(tag))).collect();
            tree.dirty
                .extend(index * BUCKETS_PER_GROUP..(index + 1) * BUCKETS_PER_GROUP);
        }
        tree.records = self.records;
        tree
    }
}

/// The root over whole tags of `records` (name, tag), as a store written before the tree held
/// their first bytes stores it: for tests that write such a store.
pub fn whole_tag_root(records: impl IntoIterator<Item = (Vec<u8>, Tag)>) -> Tag {
    earlier_tag_root(records, Tags::Whole)
}

/// The digest record's value the previous version stored for `records` (name, tag):
/// `0x02`, then the root of the earlier tree over the tags' first bytes. For
/// tests that write such a store.
pub fn narrow_digest_value(records: impl IntoIterator<Item = (Vec<u8>, Tag)>) -> Vec<u8> {
    [&[NARROW_DIGEST_FORMAT][..], &narrow_tag_root(records)].concat()
}

/// The root of the earlier tree over the tags' first bytes of `records` (name, tag).
fn narrow_tag_root(records: impl IntoIterator<Item = (Vec<u8>, Tag)>) -> Tag {
    earlier_tag_root(records, Tags::Held)
}

fn earlier_tag_root(records: impl IntoIterator<Item = (Vec<u8>, Tag)>, tags: Tags) -> Tag {
    let mut loading = Loading::default();
    for (name, tag) in records {
        loading.push(&name, tag);
    }
    loading.sorted().earlier_root(tags)
}

impl SetDigest {
    /// Sets (or with `None` removes) a record's tag; returns what the tree held of its former
    /// one.
    pub fn set(&mut self, name: &[u8], tag: Option<Tag>) -> Option<Held> {
        self.hold(name, tag.as_ref().map(held))
    }

    fn hold(&mut self, name: &[u8], tag: Option<Held>) -> Option<Held> {
        let (bucket, key) = place(name);
        let entries = &mut self.groups[bucket / BUCKETS_PER_GROUP];
        let former = match (entries.binary_search_by(|(k, _)| k.cmp(&key)), tag) {
            (Ok(at), Some(tag)) => Some(std::mem::replace(&mut entries[at].1, tag)),
            (Ok(at), None) => {
                self.records -= 1;
                Some(entries.remove(at).1)
            }
            (Err(at), Some(tag)) => {
                self.records += 1;
                entries.insert(at, (key, tag));
                None
            }
            (Err(_), None) => None,
        };
        self.dirty.insert(bucket);
        if let Some(touched) = &mut self.touched {
            touched.insert(key);
        }
        former
    }

    /// Puts back what [`set`](Self::set) changed, last change first.
    pub fn undo(&mut self, undo: Vec<Undo>) {
        for (name, former) in undo.into_iter().rev() {
            self.hold(&name, former);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The root over every record, bringing the changed buckets' hashes up to date.
    pub fn root(&mut self) -> Tag {
        let mut groups = std::collections::BTreeSet::new();
        for bucket in std::mem::take(&mut self.dirty) {
            let group = &self.groups[bucket / BUCKETS_PER_GROUP];
            self.bucket_hashes[bucket] = bucket_hash(bucket_run(group, bucket));
            groups.insert(bucket / BUCKETS_PER_GROUP);
        }
        let mut sections = std::collections::BTreeSet::new();
        for group in groups {
            self.group_hashes[group] = hash_of(&self.bucket_hashes, group, BUCKETS_PER_GROUP);
            sections.insert(group / GROUPS_PER_SECTION);
        }
        for section in sections {
            self.section_hashes[section] = hash_of(&self.group_hashes, section, GROUPS_PER_SECTION);
        }
        root_over(self.records, &self.section_hashes)
    }
}

/// The tree set aside at a close, read back at the next open instead of every record, and the
/// check of the records against it, on reads and by a pass beside serving.
impl SetDigest {
    /// The tree as bytes: per bucket, its count (4 bytes) and its sorted (name hash, tag's
    /// first bytes) pairs.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BUCKETS * 4 + self.records * ENTRY);
        for bucket in 0..BUCKETS {
            let run = bucket_run(&self.groups[bucket / BUCKETS_PER_GROUP], bucket);
            out.extend_from_slice(&(run.len() as u32).to_le_bytes());
            for (key, tag) in run {
                out.extend_from_slice(key);
                out.extend_from_slice(tag);
            }
        }
        out
    }

    /// The tree [`SetDigest::encode`] made, its changes tracked from here on (see
    /// [`SetDigest::check_record`]); `None` for bytes that are not one (each name hash in its
    /// bucket, in order, once). Whoever takes it must compare its root with the stored one:
    /// the tree is only what it claims to be if its root is the authenticated root.
    pub fn decode(bytes: &[u8]) -> Option<SetDigest> {
        /// A bucket's count and entries, and what follows them.
        fn run(bytes: &[u8]) -> Option<(usize, &[u8], &[u8])> {
            let (count, tail) = bytes.split_first_chunk::<4>()?;
            let count = u32::from_le_bytes(*count) as usize;
            let (entries, rest) = tail.split_at_checked(count.checked_mul(ENTRY)?)?;
            Some((count, entries, rest))
        }
        let mut digest = SetDigest::default();
        let mut rest = bytes;
        for (index, group) in digest.groups.iter_mut().enumerate() {
            let buckets = index * BUCKETS_PER_GROUP..(index + 1) * BUCKETS_PER_GROUP;
            // The group's size first, so that it is allocated once, at its size.
            let mut ahead = rest;
            let mut size = 0;
            for _ in buckets.clone() {
                let (count, _, tail) = run(ahead)?;
                size += count;
                ahead = tail;
            }
            group.reserve_exact(size);
            for bucket in buckets {
                let (count, entries, tail) = run(rest)?;
                rest = tail;
                for entry in entries.chunks_exact(ENTRY) {
                    let key: NameHash = entry[..16].try_into().ok()?;
                    if bucket_of(&key) != bucket
                        || group.last().is_some_and(|(last, _)| *last >= key)
                    {
                        return None;
                    }
                    group.push((key, entry[16..].try_into().ok()?));
                }
                digest.records += count;
                digest.dirty.insert(bucket);
            }
        }
        if !rest.is_empty() {
            return None;
        }
        digest.touched = Some(Default::default());
        Some(digest)
    }

    /// Whether records are still to be checked against this tree (it came from
    /// [`SetDigest::decode`], and the pass over every record has not ended).
    pub fn unchecked(&self) -> bool {
        self.touched.is_some()
    }

    /// Checks a record as read (`stored`: its tag, `None` when absent) against the tree, unless
    /// this daemon changed it since the tree was read back. Returns its name hash when checked.
    /// A record whose tag differs, one the tree does not have, or one missing that it has was
    /// edited while the daemon was not looking.
    pub fn check_record(
        &self,
        name: &[u8],
        stored: Option<&Tag>,
    ) -> Result<Option<NameHash>, IntegrityError> {
        let Some(touched) = &self.touched else {
            return Ok(None);
        };
        let (bucket, key) = place(name);
        if touched.contains(&key) {
            return Ok(None);
        }
        let entries = &self.groups[bucket / BUCKETS_PER_GROUP];
        let held = entries
            .binary_search_by(|(k, _)| k.cmp(&key))
            .ok()
            .map(|at| &entries[at].1);
        match (held, stored) {
            (Some(held), Some(stored)) if *held == self::held(stored) => Ok(Some(key)),
            (None, None) => Ok(None),
            (Some(_), None) => Err(IntegrityError::Digest),
            _ => Err(refused(name)),
        }
    }

    /// Ends the check of every record: `seen` are the name hashes [`SetDigest::check_record`]
    /// passed, in one pass over every record. Each record the tree has and this daemon did not
    /// change must be among them; one that is not was removed while the daemon was not
    /// looking.
    pub fn finish_check(&mut self, seen: &[NameHash]) -> Result<(), IntegrityError> {
        let Some(touched) = self.touched.take() else {
            return Ok(());
        };
        let seen_untouched = seen.iter().filter(|key| !touched.contains(*key)).count();
        let held_untouched = self
            .groups
            .iter()
            .flatten()
            .filter(|(key, _)| !touched.contains(key))
            .count();
        if seen_untouched == held_untouched {
            Ok(())
        } else {
            self.touched = Some(touched);
            Err(IntegrityError::Digest)
        }
    }
}

#[cfg(test)]
#[path = "barrier_tests.rs"]
mod tests;
