//! The record-integrity barrier's unit tests (`barrier.rs`).

use super::*;

/// Loading every record at once makes the tree `set` one at a time makes: the same root,
/// the same count, a name met twice keeping its last tag.
#[test]
fn a_tree_loaded_at_once_is_the_tree_set_one_by_one() {
    let mut one_by_one = SetDigest::default();
    let mut at_once = Loading::default();
    let names: Vec<Vec<u8>> = (0..20_000u32)
        .map(|i| format!("keys/{:08x}", i.wrapping_mul(2_654_435_761)).into_bytes())
        .collect();
    for (i, name) in names.iter().enumerate() {
        let tag = [i as u8; TAG_LEN];
        one_by_one.set(name, Some(tag));
        at_once.push(name, tag);
    }
    one_by_one.set(&names[7], Some([0xee; TAG_LEN]));
    at_once.push(&names[7], [0xee; TAG_LEN]);
    let mut at_once = at_once.sorted().into_tree();
    assert_eq!(at_once.records, 20_000);
    assert_eq!(at_once.root(), one_by_one.root());
    // And it goes on as one: a change to each gives the same root again.
    one_by_one.set(&names[3], None);
    at_once.set(&names[3], None);
    assert_eq!(at_once.root(), one_by_one.root());
}

/// The tree as bytes and back is the same tree; bytes that are not one are refused.
#[test]
fn a_tree_encoded_decodes_to_itself_and_nothing_else_does() {
    let mut tree = SetDigest::default();
    for i in 0..5_000u32 {
        tree.set(
            format!("keys/{i}").as_bytes(),
            Some([(i % 251) as u8; TAG_LEN]),
        );
    }
    let root = tree.root();
    let bytes = tree.encode();
    let mut back = SetDigest::decode(&bytes).unwrap();
    assert_eq!(back.root(), root);
    assert_eq!(back.records, 5_000);
    assert!(back.unchecked());
    // Cut short, one byte too many, a count too large: not a tree.
    assert!(SetDigest::decode(&bytes[..bytes.len() - 1]).is_none());
    assert!(SetDigest::decode(&[bytes.as_slice(), &[0]].concat()).is_none());
    let mut counted = bytes.clone();
    counted[0] = 0xff;
    assert!(SetDigest::decode(&counted).is_none());
    // Two entries of a bucket swapped (out of order), or one moved to another bucket.
    let run_of = |b: usize| bucket_run(&tree.groups[b / BUCKETS_PER_GROUP], b).len();
    let first = (0..BUCKETS).find(|b| run_of(*b) >= 2).unwrap();
    let offset: usize = (0..first).map(|b| 4 + run_of(b) * ENTRY).sum::<usize>() + 4;
    let mut swapped = bytes.clone();
    swapped[offset..offset + 2 * ENTRY].rotate_left(ENTRY);
    assert!(SetDigest::decode(&swapped).is_none());
    let mut moved = bytes.clone();
    moved[offset] ^= 0x01;
    moved[offset + 1] ^= 0x80;
    assert!(SetDigest::decode(&moved).is_none());
}

/// Records read are checked against a tree read back, unless changed since; the pass's
/// end finds a record the tree has and nobody saw.
#[test]
fn records_are_checked_against_a_tree_read_back() {
    let mut tree = SetDigest::default();
    for name in ["a", "b", "c"] {
        tree.set(name.as_bytes(), Some([name.as_bytes()[0]; TAG_LEN]));
    }
    let mut tree = SetDigest::decode(&tree.encode()).unwrap();
    let tag = |c: u8| [c; TAG_LEN];
    assert!(tree.check_record(b"a", Some(&tag(b'a'))).unwrap().is_some());
    assert_eq!(
        tree.check_record(b"a", Some(&tag(b'x'))),
        Err(IntegrityError::Record("a".into()))
    );
    assert_eq!(tree.check_record(b"a", None), Err(IntegrityError::Digest));
    assert_eq!(
        tree.check_record(b"d", Some(&tag(b'd'))),
        Err(IntegrityError::Record("d".into()))
    );
    assert_eq!(tree.check_record(b"d", None), Ok(None));
    // Changed by this daemon since: not checked.
    tree.set(b"a", Some(tag(b'y')));
    tree.set(b"e", Some(tag(b'e')));
    assert_eq!(tree.check_record(b"a", Some(&tag(b'x'))), Ok(None));
    // The pass saw b, not c: c was removed.
    let seen: Vec<NameHash> = [b"b"]
        .iter()
        .filter_map(|n| tree.check_record(*n, Some(&tag(b'b'))).unwrap())
        .collect();
    assert_eq!(tree.finish_check(&seen), Err(IntegrityError::Digest));
    assert!(tree.unchecked());
    let seen: Vec<NameHash> = [&b"b"[..], b"c"]
        .iter()
        .filter_map(|n| tree.check_record(n, Some(&tag(n[0]))).unwrap())
        .collect();
    assert_eq!(tree.finish_check(&seen), Ok(()));
    assert!(!tree.unchecked());
    assert_eq!(tree.check_record(b"a", Some(&tag(b'q'))), Ok(None));
}

fn barrier() -> Barrier {
    Barrier::new(Secret::new([7u8; 32]))
}

/// Applies sealed ops to a stored state, as the backend does.
fn apply(state: &mut State, batch: WriteBatch) {
    for (k, v) in batch.into_ops() {
        match v {
            Some(v) => state.insert(k, v),
            None => state.remove(&k),
        };
    }
}

fn write(b: &Barrier, digest: &mut SetDigest, state: &mut State, records: &[(&str, Option<&str>)]) {
    let mut batch = WriteBatch::new();
    for (k, v) in records {
        match v {
            Some(v) => batch.put(k.as_bytes().to_vec(), v.as_bytes().to_vec()),
            None => batch.delete(k.as_bytes().to_vec()),
        }
    }
    let (sealed, _) = b.seal_batch(batch, digest).unwrap();
    apply(state, sealed);
}

fn check(b: &Barrier, state: &State) -> Result<SetDigest, StoreError> {
    b.check_all(state.clone().into_iter().map(Ok))
}

type State = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// `records` written to an empty store: the barrier, its tree, the store.
fn written(records: &[(&str, Option<&str>)]) -> (Barrier, SetDigest, State) {
    let b = barrier();
    let (mut digest, mut state) = (SetDigest::default(), State::new());
    write(&b, &mut digest, &mut state, records);
    (b, digest, state)
}

/// Two keys written, then `key/a` disabled: the barrier, its tree, the store as it is, and
/// the store as it was before the change.
fn one_key_disabled() -> (Barrier, SetDigest, State, State) {
    let (b, mut digest, mut state) = written(&[("key/a", Some("enabled")), ("key/b", Some("x"))]);
    let old = state.clone();
    write(&b, &mut digest, &mut state, &[("key/a", Some("disabled"))]);
    (b, digest, state, old)
}

#[test]
fn a_record_changed_or_moved_is_named() {
    let (b, _, state) = written(&[
        ("user/app", Some("{\"arn\":\"app\"}")),
        ("user/root", Some("{}")),
    ]);
    check(&b, &state).unwrap();
    let mut changed = state.clone();
    let app = changed.get_mut(b"user/app".as_slice()).unwrap();
    let last = app.len() - 2;
    app[last] ^= 1;
    assert_eq!(
        check(&b, &changed).unwrap_err().0,
        IntegrityError::Record("user/app".into()).to_string()
    );
    // The app user's record put in the root's place.
    let mut moved = state.clone();
    let app = moved[b"user/app".as_slice()].clone();
    moved.insert(b"user/root".to_vec(), app);
    assert!(check(&b, &moved).unwrap_err().0.contains("user/root"));
    // Another key's tags mean nothing here.
    let other = Barrier::new(Secret::new([8u8; 32]));
    assert!(check(&other, &state).is_err());
}

#[test]
fn a_record_rolled_back_removed_or_added_fails_the_digest() {
    let (b, mut digest, mut state, old) = one_key_disabled();
    check(&b, &state).unwrap();
    // Rolled back alone: key/a's old (validly tagged) value with the new digest.
    let mut rolled = state.clone();
    rolled.insert(b"key/a".to_vec(), old[b"key/a".as_slice()].clone());
    assert_eq!(
        check(&b, &rolled).unwrap_err().0,
        IntegrityError::Digest.to_string()
    );
    // Removed.
    let mut removed = state.clone();
    removed.remove(b"key/b".as_slice());
    assert_eq!(
        check(&b, &removed).unwrap_err().0,
        IntegrityError::Digest.to_string()
    );
    // Added from an older copy of the store.
    write(&b, &mut digest, &mut state, &[("key/b", None)]);
    let mut added = state.clone();
    added.insert(b"key/b".to_vec(), old[b"key/b".as_slice()].clone());
    assert_eq!(
        check(&b, &added).unwrap_err().0,
        IntegrityError::Digest.to_string()
    );
    // The digest removed: the store is refused, not adopted.
    let mut no_digest = state.clone();
    no_digest.remove(DIGEST_RECORD);
    assert_eq!(
        check(&b, &no_digest).unwrap_err().0,
        IntegrityError::NoDigest.to_string()
    );
    // An empty store has nothing to check; the whole store as it once was passes.
    check(&b, &State::new()).unwrap();
    check(&b, &old).unwrap();
}

#[test]
fn tags_read_off_the_disk_do_not_combine_into_a_matching_set() {
    // What broke an XOR of tags: the same multiset of tags under other names, or a change
    // and its undoing among other records, must still change the root.
    let names: Vec<String> = (0..300).map(|i| format!("auth/seen/{i:04}")).collect();
    let records: Vec<(&str, Option<&str>)> = names.iter().map(|n| (n.as_str(), Some(""))).collect();
    let (_, digest, _) = written(&records);
    let root = digest.clone().root();
    // Two records removed whose tags XOR with two others' to nothing would keep an XOR;
    // any removal changes the root.
    let mut fewer = digest.clone();
    fewer.set(names[0].as_bytes(), None);
    fewer.set(names[1].as_bytes(), None);
    assert_ne!(fewer.root(), root);
    // Tags swapped between names.
    let mut swapped = digest.clone();
    let t0 = swapped.set(names[0].as_bytes(), None).unwrap();
    let t1 = swapped.set(names[1].as_bytes(), None).unwrap();
    swapped.hold(names[0].as_bytes(), Some(t1));
    swapped.hold(names[1].as_bytes(), Some(t0));
    assert_ne!(swapped.root(), root);
}

#[test]
fn a_name_twice_in_one_batch_counts_once_and_undo_puts_back() {
    let (b, mut digest, state) = written(&[
        ("material/x", Some("one")),
        ("material/x", Some("two")),
        ("material/y", Some("gone")),
        ("material/y", None),
    ]);
    assert_eq!(check(&b, &state).unwrap().root(), digest.root());
    // A batch not applied: undo leaves the digest as it was.
    let before = digest.clone().root();
    let mut batch = WriteBatch::new();
    batch.put(b"material/z".to_vec(), b"z".to_vec());
    batch.delete(b"material/x".to_vec());
    let (_, undo) = b.seal_batch(batch, &mut digest).unwrap();
    digest.undo(undo);
    assert_eq!(digest.root(), before);
}

/// A store whose digest is in an earlier format (the earlier tree of 4,096 buckets: the root
/// alone over whole tags, or `0x02 ‖ root` over their first bytes) is checked as it is, refused
/// as before when a record was rolled back, and moves to this format with its next change.
/// The earlier roots are pinned: values the previous versions computed for these records.
#[test]
fn a_store_in_an_earlier_digest_format_is_checked_and_moves_on() {
    let records: Vec<(Vec<u8>, Tag)> = (0..300u32)
        .map(|i| (format!("keys/{i}").into_bytes(), [(i % 251) as u8; TAG_LEN]))
        .collect();
    assert_eq!(
        hex::encode(whole_tag_root(records.clone())),
        "33c1bc80fb53ebaa312da8c70651c7e396c07f4cbc345b8e856bed4dd952aa51"
    );
    assert_eq!(
        hex::encode(narrow_tag_root(records)),
        "2a5c8a93b1aea7e35f95ffe8d8ed861aa2bf93f9072c933982af31deb3c86fb8"
    );

    let (b, mut digest, state, old) = one_key_disabled();
    let old_a = old[b"key/a".as_slice()].clone();
    let in_earlier_format = |state: &State, whole: bool| {
        let tags = state
            .iter()
            .filter(|(name, _)| name.as_slice() != DIGEST_RECORD)
            .map(|(name, stored)| (name.clone(), stored_tag(stored).unwrap()));
        let value = if whole {
            whole_tag_root(tags).to_vec()
        } else {
            narrow_digest_value(tags)
        };
        let mut earlier = state.clone();
        let (stored, _) = b.seal(DIGEST_RECORD, &value).unwrap();
        earlier.insert(DIGEST_RECORD.to_vec(), stored);
        earlier
    };
    for whole in [true, false] {
        let mut earlier = in_earlier_format(&state, whole);
        // Checked as it is: the same tree as the store in this format.
        assert_eq!(check(&b, &earlier).unwrap().root(), digest.root());
        // Only the check of every record reads that format.
        assert!(b.earlier_format(&earlier[DIGEST_RECORD]));
        assert_eq!(
            b.stored_root(&earlier[DIGEST_RECORD]).unwrap_err().0,
            IntegrityError::EarlierDigest.to_string()
        );
        // A record rolled back in it is refused.
        let mut rolled = earlier.clone();
        rolled.insert(b"key/a".to_vec(), old_a.clone());
        assert_eq!(
            check(&b, &rolled).unwrap_err().0,
            IntegrityError::Digest.to_string()
        );
        // The next change stores the root in this format: `0x03 ‖ root`.
        let mut tree = check(&b, &earlier).unwrap();
        write(&b, &mut tree, &mut earlier, &[("key/c", Some("new"))]);
        let value = b.open(DIGEST_RECORD, &earlier[DIGEST_RECORD]).unwrap();
        assert_eq!((value.len(), value[0]), (33, DIGEST_FORMAT));
        assert!(!b.earlier_format(&earlier[DIGEST_RECORD]));
        assert_eq!(b.stored_root(&earlier[DIGEST_RECORD]).unwrap(), tree.root());
        assert_eq!(check(&b, &earlier).unwrap().root(), tree.root());
        // This tree's root is not the earlier tree's over the same records.
        let tags = earlier
            .iter()
            .filter(|(name, _)| name.as_slice() != DIGEST_RECORD)
            .map(|(name, stored)| (name.clone(), stored_tag(stored).unwrap()));
        assert_ne!(value[1..], narrow_tag_root(tags)[..]);
    }
    // A digest of no format is refused, named.
    let mut odd = state.clone();
    odd.insert(
        DIGEST_RECORD.to_vec(),
        b.seal(DIGEST_RECORD, &[2; 20]).unwrap().0,
    );
    assert_eq!(
        check(&b, &odd).unwrap_err().0,
        IntegrityError::Record("barrier/digest".into()).to_string()
    );
}

#[test]
fn the_same_change_from_the_same_state_stores_a_root_of_its_own_when_shared() {
    let (b, digest, state) = written(&[("keys/k", Some("reserved 3"))]);
    let same = || {
        let mut batch = WriteBatch::new();
        batch.put(b"keys/k".to_vec(), b"reserved 7".to_vec());
        batch
    };
    let (mut one, mut other) = (digest.clone(), digest.clone());
    let (sealed_one, _) = b.seal_shared_batch(same(), &mut one).unwrap();
    let (sealed_other, _) = b.seal_shared_batch(same(), &mut other).unwrap();
    assert_ne!(one.root(), other.root());
    for (sealed, mut tree) in [(sealed_one, one), (sealed_other, other)] {
        let mut stored = state.clone();
        apply(&mut stored, sealed);
        assert_eq!(check(&b, &stored).unwrap().root(), tree.root());
    }
    // Unshared (one writer), the same change stores the same root, as it always did.
    let (mut one, mut other) = (digest.clone(), digest.clone());
    b.seal_batch(same(), &mut one).unwrap();
    b.seal_batch(same(), &mut other).unwrap();
    assert_eq!(one.root(), other.root());
}
