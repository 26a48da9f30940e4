//! The tree and the state kept beside the records, on a real sled store.

use super::super::tests::test_barrier;
use super::super::{SledBackend, Store, StoreBackend, StoreCheck, WriteBatch};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sled engine in `dir`, once a store closed just before has let go of it (sled gives
/// up its lock on a thread of its own, a moment after the last handle goes).
fn sled(dir: &Path) -> SledBackend {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledBackend::open(dir) {
            Ok(backend) => return backend,
            Err(error)
                if error.0.contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("{error}"),
        }
    }
}

fn open(dir: &Path, check: StoreCheck) -> Store {
    Store::open_with(Arc::new(sled(dir)), test_barrier(), check).unwrap()
}

fn try_open(dir: &Path, check: StoreCheck) -> Result<Store, String> {
    Store::open_with(Arc::new(sled(dir)), test_barrier(), check).map_err(|e| e.to_string())
}

fn put(store: &Store, name: &str, value: &str) {
    let mut batch = WriteBatch::new();
    batch.put(name.as_bytes().to_vec(), value.as_bytes().to_vec());
    store.commit_blocking(batch).unwrap();
}

fn delete(store: &Store, name: &str) {
    let mut batch = WriteBatch::new();
    batch.delete(name.as_bytes().to_vec());
    store.commit_blocking(batch).unwrap();
}

/// A store of `n` records `r/00000`.. and `a` = `v1`, closed (its tree kept).
fn made(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreCheck::AtStart);
    let mut batch = WriteBatch::new();
    for i in 0..n {
        batch.put(format!("r/{i:05}").into_bytes(), vec![b'x'; 40]);
    }
    batch.put(b"a".to_vec(), b"v1".to_vec());
    store.commit_blocking(batch).unwrap();
    store.close();
    dir
}

/// A record as the engine holds it (tag and all), with the store closed.
fn raw(dir: &Path, name: &str) -> Option<Vec<u8>> {
    SledBackend::open(dir)
        .unwrap()
        .get(name.as_bytes())
        .unwrap()
}

/// Writes (or with `None` removes) a record behind the store's back.
fn edit(dir: &Path, name: &str, stored: Option<Vec<u8>>) {
    let backend = sled(dir);
    let mut batch = WriteBatch::new();
    match stored {
        Some(stored) => batch.put(name.as_bytes().to_vec(), stored),
        None => batch.delete(name.as_bytes().to_vec()),
    }
    backend.apply(batch).unwrap();
    backend.sync().unwrap();
}

/// `a` as stored now; then `a` set to `v2`, the store closed, `after_close` done with it, and
/// its last handle dropped. For rolling `a` back behind the store's back.
fn a_moved_on(dir: &Path, after_close: impl FnOnce(&Store)) -> Vec<u8> {
    let old = raw(dir, "a").unwrap();
    let store = open(dir, StoreCheck::AtStart);
    put(&store, "a", "v2");
    store.close();
    after_close(&store);
    drop(store);
    old
}

/// Waits (up to 20 s) until the pass over every record ended, one way or the other.
fn pass_ended(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !store.every_record_checked() && store.local.refused.get().is_none() {
        assert!(
            Instant::now() < deadline,
            "the pass over every record never ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An unedited store opened from its kept tree: nothing is refused, the pass ends with every
/// record checked, and what was written meanwhile is kept (the edited-store tests below show
/// the tree is what the open took).
#[test]
fn a_kept_tree_opens_the_store_and_the_pass_checks_every_record() {
    let dir = made(3000);
    let store = open(dir.path(), StoreCheck::BesideServing);
    assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"v1"[..]));
    put(&store, "b", "new");
    pass_ended(&store);
    assert!(store.local.refused.get().is_none());
    assert_eq!(store.scan(b"r/", None, usize::MAX).unwrap().len(), 3000);
    store.close();
    drop(store);
    // What it wrote is kept with the tree: opened either way, the store is the same.
    let store = open(dir.path(), StoreCheck::AtStart);
    assert_eq!(store.get(b"b").unwrap().as_deref(), Some(&b"new"[..]));
}

/// A record rolled back behind the store's back after its tree was kept: the store opens
/// (no record is read), the record is refused when read, and every call after it.
#[test]
fn a_record_rolled_back_is_refused_when_read_and_the_store_with_it() {
    let dir = made(10);
    let old = a_moved_on(dir.path(), |_| {});
    edit(dir.path(), "a", Some(old.clone()));

    // Checked at start, as by default: refused there.
    let refused = try_open(dir.path(), StoreCheck::AtStart).err().unwrap();
    assert!(refused.contains("rolled back"), "{refused}");

    let store = open(dir.path(), StoreCheck::BesideServing);
    let error = store.get(b"a").unwrap_err().to_string();
    assert!(
        error.contains("record a failed its integrity check"),
        "{error}"
    );
    assert!(store.refused(), "the health check's watch reads this");
    // From then on the store answers nothing, and takes nothing.
    let after = store.get(b"r/00001").unwrap_err().to_string();
    assert!(after.contains("record a failed"), "{after}");
    let mut batch = WriteBatch::new();
    batch.put(b"c".to_vec(), b"x".to_vec());
    assert!(store.commit_blocking(batch).is_err());
    store.close();
    drop(store);
    // Nothing was written after the refusal; no tree was kept over the edit.
    assert_eq!(raw(dir.path(), "c"), None);
    assert_eq!(raw(dir.path(), "a"), Some(old));
    assert!(
        try_open(dir.path(), StoreCheck::BesideServing).is_ok_and(|s| {
            let refused = s.get(b"a").is_err();
            s.close();
            refused
        })
    );
}

/// A record removed behind the store's back: refused when asked for, and found by the pass
/// when nobody asks.
#[test]
fn a_record_removed_is_refused_when_asked_for_and_found_by_the_pass() {
    let dir = made(3000);
    edit(dir.path(), "r/01234", None);
    let store = open(dir.path(), StoreCheck::BesideServing);
    let error = store.get(b"r/01234").unwrap_err().to_string();
    assert!(error.contains("removed"), "{error}");
    store.close();
    drop(store);

    let store = open(dir.path(), StoreCheck::BesideServing);
    pass_ended(&store);
    assert!(!store.every_record_checked());
    let error = store.get(b"a").unwrap_err().to_string();
    assert!(error.contains("removed"), "{error}");
}

/// A record added behind the store's back (one the store once held, validly tagged): refused
/// when a listing meets it, and by the pass.
#[test]
fn a_record_added_is_refused_by_a_listing_and_by_the_pass() {
    let dir = made(10);
    let store = open(dir.path(), StoreCheck::AtStart);
    put(&store, "z", "gone soon");
    store.close();
    drop(store);
    let former = raw(dir.path(), "z").unwrap();
    let store = open(dir.path(), StoreCheck::AtStart);
    delete(&store, "z");
    store.close();
    drop(store);
    edit(dir.path(), "z", Some(former));

    let store = open(dir.path(), StoreCheck::BesideServing);
    let error = store.scan(b"z", None, 10).unwrap_err().to_string();
    assert!(error.contains("record z failed"), "{error}");
    store.close();
    drop(store);
    let store = open(dir.path(), StoreCheck::BesideServing);
    pass_ended(&store);
    assert!(store.get(b"a").is_err());
}

/// Changes made while the pass runs are this daemon's own: they never trip it.
#[test]
fn changes_made_during_the_pass_do_not_trip_it() {
    let dir = made(40_000);
    let store = open(dir.path(), StoreCheck::BesideServing);
    let mut changes = 0;
    while !store.every_record_checked() && changes < 5000 {
        let i = changes * 7 % 40_000;
        let mut batch = WriteBatch::new();
        batch.put(format!("r/{i:05}").into_bytes(), b"changed".to_vec());
        batch.delete(format!("r/{:05}", (i + 1) % 40_000).into_bytes());
        batch.put(format!("n/{changes}").into_bytes(), b"new".to_vec());
        store.apply(batch).unwrap();
        changes += 1;
    }
    pass_ended(&store);
    assert!(changes > 10, "the pass ended before any change was made");
    assert!(
        store.every_record_checked(),
        "{:?}",
        store.local.refused.get()
    );
    store.close();
    drop(store);
    // The tree kept after those changes is the records': checked in full, the store opens.
    open(dir.path(), StoreCheck::AtStart).close();
}

/// A tree kept at another state of the records is not taken: the store is checked in full.
#[test]
fn a_tree_from_another_state_is_not_taken() {
    let dir = made(10);
    let tree = std::fs::read(dir.path().join("aside/tree")).unwrap();
    let old = a_moved_on(dir.path(), |_| {});
    std::fs::write(dir.path().join("aside/tree"), &tree).unwrap();
    edit(dir.path(), "a", Some(old));
    // The digest record was written with v2: the old tree does not match it, so the open
    // checks every record, and refuses the rolled-back one there.
    let refused = try_open(dir.path(), StoreCheck::BesideServing)
        .err()
        .unwrap();
    assert!(refused.contains("rolled back"), "{refused}");
}

/// State kept beside the records comes back only while the records are those it was kept
/// with, only under its own name and scope, and not once its bytes are changed.
#[test]
fn kept_state_comes_back_only_with_its_records() {
    let dir = made(10);
    let store = open(dir.path(), StoreCheck::AtStart);
    let scoped = store.scoped("acct/");
    store.put_aside("index", b"whole").unwrap();
    scoped.put_aside("index", b"scoped").unwrap();
    assert_eq!(store.aside("index").as_deref(), Some(&b"whole"[..]));
    assert_eq!(scoped.aside("index").as_deref(), Some(&b"scoped"[..]));
    assert_eq!(store.aside("other"), None);
    put(&store, "b", "moved on");
    assert_eq!(store.aside("index"), None);
    assert_eq!(scoped.aside("index"), None);
    store.put_aside("index", b"again").unwrap();
    assert_eq!(store.aside("index").as_deref(), Some(&b"again"[..]));
    drop(scoped);
    store.close();
    drop(store);
    let store = open(dir.path(), StoreCheck::AtStart);
    assert_eq!(store.aside("index").as_deref(), Some(&b"again"[..]));
    let path = dir.path().join("aside/index");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(store.aside("index"), None);
}

/// A batch applied after the store was closed (blocking work still under way when the daemon
/// closed it) is in the tree kept when the last handle goes: the next start takes that tree.
#[test]
fn a_batch_applied_after_closing_is_in_the_tree_kept_at_the_last_drop() {
    let dir = made(10);
    let old = a_moved_on(dir.path(), |store| {
        let mut late = WriteBatch::new();
        late.put(b"late".to_vec(), b"applied after the close".to_vec());
        store.apply(late).unwrap();
    });
    // Taken back (the open reads no record), so the rolled-back record is refused only when
    // read; a tree kept before the late batch would not match, and the open would refuse.
    edit(dir.path(), "a", Some(old));
    let store = try_open(dir.path(), StoreCheck::BesideServing)
        .expect("the tree kept at the last drop is taken back");
    let error = store.get(b"a").unwrap_err().to_string();
    assert!(error.contains("record a failed"), "{error}");
}
