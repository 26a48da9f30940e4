use super::*;
use std::sync::atomic::Ordering;

/// The test backends' methods that only pass the call on to `self.inner`.
macro_rules! passed_through {
    ($($method:ident),+) => { $(passed_through!(@ $method);)+ };
    (@ get) => {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
    };
    (@ scan) => {
        fn scan(
            &self,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            self.inner.scan(prefix, after, limit)
        }
    };
    (@ sync) => {
        fn sync(&self) -> Result<(), StoreError> {
            self.inner.sync()
        }
    };
}

pub(crate) fn test_barrier() -> Barrier {
    Barrier::new(crate::secret::Secret::new([3u8; 32]))
}

fn reopen(dir: &std::path::Path) -> Store {
    Store::open(Arc::new(SledBackend::open(dir).unwrap()), test_barrier()).unwrap()
}

/// The names of the store's records (the first ten).
fn names(store: &Store) -> Vec<String> {
    store
        .scan(&[], None, 10)
        .unwrap()
        .into_iter()
        .map(|(name, _)| String::from_utf8(name).unwrap())
        .collect()
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path());
    (dir, store)
}

#[tokio::test]
async fn committed_batches_are_read_back_in_order() {
    let (_dir, store) = open();
    let mut batch = WriteBatch::new();
    for i in [3u8, 1, 2] {
        batch.put(vec![b'k', i], vec![i]);
    }
    batch.put(b"other".to_vec(), b"x".to_vec());
    store.commit(batch).await.unwrap();
    let all = store.scan(b"k", None, 10).unwrap();
    assert_eq!(
        all.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let after = store.scan(b"k", Some(&[b'k', 1]), 1).unwrap();
    assert_eq!(after, vec![(vec![b'k', 2], vec![2])]);
    let mut delete = WriteBatch::new();
    delete.delete(vec![b'k', 2]);
    store.commit(delete).await.unwrap();
    assert_eq!(store.get(&[b'k', 2]).unwrap(), None);
    assert_eq!(store.get(b"other").unwrap(), Some(b"x".to_vec()));
}

#[tokio::test]
async fn a_scoped_handle_sees_and_writes_only_its_part() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = reopen(dir.path());
        let mut outside = WriteBatch::new();
        outside.put(b"keys/a".to_vec(), b"root".to_vec());
        store.commit(outside).await.unwrap();
        let member = store.scoped("accounts/1/");
        let mut inside = WriteBatch::new();
        inside.put(b"keys/a".to_vec(), b"member".to_vec());
        inside.put(b"keys/b".to_vec(), b"member-b".to_vec());
        member.commit(inside).await.unwrap();
        // Each handle reads its own record under the same name.
        assert_eq!(store.get(b"keys/a").unwrap(), Some(b"root".to_vec()));
        assert_eq!(member.get(b"keys/a").unwrap(), Some(b"member".to_vec()));
        let names = |entries: Vec<Entry>| entries.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(store.scan(b"keys/", None, 10).unwrap()),
            vec![b"keys/a".to_vec()]
        );
        assert_eq!(
            names(member.scan(b"keys/", Some(b"keys/a"), 10).unwrap()),
            vec![b"keys/b".to_vec()]
        );
        assert_eq!(
            names(store.scan(b"accounts/1/keys/", None, 10).unwrap()),
            vec![b"accounts/1/keys/a".to_vec(), b"accounts/1/keys/b".to_vec()]
        );
        // A scoped handle dropped leaves the store open.
        drop(member);
        let mut after = WriteBatch::new();
        after.put(b"keys/c".to_vec(), b"root".to_vec());
        store.commit(after).await.unwrap();
    }
    // One digest covers both parts: the store reopens, every record checked.
    let store = reopen(dir.path());
    assert_eq!(
        store.scoped("accounts/1/").get(b"keys/b").unwrap(),
        Some(b"member-b".to_vec())
    );
}

#[test]
fn a_record_moved_into_another_scope_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn StoreBackend> = Arc::new(SledBackend::open(dir.path()).unwrap());
    let store = Store::open(backend.clone(), test_barrier()).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(b"keys/a".to_vec(), b"member one".to_vec());
    store.scoped("accounts/1/").commit_blocking(batch).unwrap();
    // Copied as stored (tag and all) to the same name in another account's part.
    let stored = backend.get(b"accounts/1/keys/a").unwrap().unwrap();
    let mut moved = WriteBatch::new();
    moved.put(b"accounts/2/keys/a".to_vec(), stored);
    backend.apply(moved).unwrap();
    assert!(store.scoped("accounts/2/").get(b"keys/a").is_err());
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = reopen(dir.path());
        let mut batch = WriteBatch::new();
        batch.put(b"key".to_vec(), b"value".to_vec());
        store.commit(batch).await.unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.get(b"key").unwrap(), Some(b"value".to_vec()));
}

#[tokio::test]
async fn concurrent_commits_all_complete() {
    let (_dir, store) = open();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..64u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut batch = WriteBatch::new();
                batch.put(i.to_be_bytes().to_vec(), b"v".to_vec());
                store.commit(batch).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.scan(&[], None, 1000).unwrap().len(), 64);
}

#[test]
fn a_store_from_before_authentication_is_refused_until_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(SledBackend::open(dir.path()).unwrap());
    let mut plain = WriteBatch::new();
    plain.put(b"key/a".to_vec(), b"{}".to_vec());
    backend.apply(plain).unwrap();
    let refused = Store::open(backend.clone(), test_barrier()).err().unwrap();
    assert_eq!(refused.0, IntegrityError::NoDigest.to_string());
    assert_eq!(Store::adopt(&*backend, &test_barrier()).unwrap(), 1);
    let store = Store::open(backend.clone(), test_barrier()).unwrap();
    assert_eq!(store.get(b"key/a").unwrap(), Some(b"{}".to_vec()));
    // Once is enough: a second adoption is refused.
    assert!(Store::adopt(&*backend, &test_barrier()).is_err());
}

#[test]
fn a_reader_without_the_key_may_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::unchecked_reader(Arc::new(SledBackend::open(dir.path()).unwrap()));
    assert!(store.apply(WriteBatch::new()).is_err());
}

#[test]
fn guards_are_released_once_their_batch_is_applied() {
    let (_dir, store) = open();
    let guard: Guard = Arc::new(());
    let mut batch = WriteBatch::new();
    batch.put(b"k".to_vec(), b"v".to_vec());
    batch.hold(guard.clone());
    assert_eq!(Arc::strong_count(&guard), 2);
    store.apply(batch).unwrap();
    assert_eq!(Arc::strong_count(&guard), 1);
}

/// A backend whose `apply` fails as a network engine's can: `lose_answer` applies the
/// batch and then reports a failure; `refuse` applies nothing; `then_fail_reads` makes
/// every read fail after the next apply (the engine unreachable just after it).
struct Flaky {
    inner: SledBackend,
    lose_answer: AtomicBool,
    refuse: AtomicBool,
    then_fail_reads: AtomicBool,
    fail_reads: AtomicBool,
}

impl Flaky {
    /// A sled store in `dir` that fails nothing until told to.
    fn over(dir: &std::path::Path) -> Self {
        Flaky {
            inner: SledBackend::open(dir).unwrap(),
            lose_answer: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            then_fail_reads: AtomicBool::new(false),
            fail_reads: AtomicBool::new(false),
        }
    }
}

/// A batch that puts `name` (with a one-byte value).
fn put(name: &str) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(name.as_bytes().to_vec(), b"v".to_vec());
    batch
}

impl StoreBackend for Flaky {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if self.fail_reads.load(Ordering::Acquire) {
            return Err(StoreError("unreachable".into()));
        }
        self.inner.get(key)
    }
    passed_through!(scan);
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if self.refuse.load(Ordering::Acquire) {
            return Err(StoreError("refused".into()));
        }
        self.inner.apply(batch)?;
        if self.then_fail_reads.load(Ordering::Acquire) {
            self.fail_reads.store(true, Ordering::Release);
        }
        if self.lose_answer.load(Ordering::Acquire) {
            return Err(StoreError("answer lost".into()));
        }
        Ok(())
    }
    passed_through!(sync);
}

#[test]
fn a_batch_whose_answer_was_lost_is_known_by_the_stored_digest() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Arc::new(Flaky::over(dir.path()));
    let store = Store::open(flaky.clone(), test_barrier()).unwrap();
    store.commit_blocking(put("a")).unwrap();
    // Applied, answer lost: taken as applied.
    flaky.lose_answer.store(true, Ordering::Release);
    store.commit_blocking(put("b")).unwrap();
    flaky.lose_answer.store(false, Ordering::Release);
    // Not applied: a failure, and the digest stays as it was.
    flaky.refuse.store(true, Ordering::Release);
    assert!(store.commit_blocking(put("c")).is_err());
    flaky.refuse.store(false, Ordering::Release);
    // Applied, answer lost, and the store unreadable meanwhile: the next batch reloads.
    flaky.lose_answer.store(true, Ordering::Release);
    flaky.then_fail_reads.store(true, Ordering::Release);
    assert!(store.commit_blocking(put("d")).is_err());
    assert!(flaky.fail_reads.load(Ordering::Acquire));
    flaky.lose_answer.store(false, Ordering::Release);
    flaky.then_fail_reads.store(false, Ordering::Release);
    flaky.fail_reads.store(false, Ordering::Release);
    store.commit_blocking(put("e")).unwrap();
    drop(store);
    // Whatever happened, the store as it is passes its checks.
    let store = Store::open(flaky, test_barrier()).unwrap();
    assert_eq!(names(&store), ["a", "b", "d", "e"]);
}

/// A backend that counts its batches, holds the first in `apply` until released, and
/// refuses any batch that writes the record `bad`.
struct Gated {
    inner: SledBackend,
    applies: AtomicUsize,
    held: Mutex<bool>,
    released: std::sync::Condvar,
}

impl StoreBackend for Gated {
    passed_through!(get, scan);
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.applies.fetch_add(1, Ordering::AcqRel);
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        drop(held);
        if batch.ops.iter().any(|(name, _)| name == b"bad") {
            return Err(StoreError("refused".into()));
        }
        self.inner.apply(batch)
    }
    passed_through!(sync);
}

/// Commits that gather while a batch is being applied are applied as one batch; when that
/// batch is refused, each is tried alone and answered for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gathered_commits_are_one_batch_and_each_is_answered_for_itself() {
    let dir = tempfile::tempdir().unwrap();
    let gated = Arc::new(Gated {
        inner: SledBackend::open(dir.path()).unwrap(),
        applies: AtomicUsize::new(0),
        held: Mutex::new(false),
        released: std::sync::Condvar::new(),
    });
    let store = Arc::new(Store::open(gated.clone(), test_barrier()).unwrap());
    let commit_all = |names: Vec<String>| {
        names
            .into_iter()
            .map(|name| {
                let store = store.clone();
                let batch = put(&name);
                tokio::spawn(async move { store.commit(batch).await })
            })
            .collect::<Vec<_>>()
    };
    let release = |gated: &Gated| {
        *gated.held.lock().unwrap() = false;
        gated.released.notify_all();
    };
    let wait_for_applies = |n: usize| {
        let gated = gated.clone();
        async move {
            while gated.applies.load(Ordering::Acquire) < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };

    // The first commit is held in `apply`; 16 more gather behind it.
    *gated.held.lock().unwrap() = true;
    let first = commit_all(vec!["first".into()]);
    wait_for_applies(1).await;
    let gathered = commit_all((0..16).map(|i| format!("k{i:02}")).collect());
    tokio::time::sleep(Duration::from_millis(100)).await;
    release(&gated);
    for task in first.into_iter().chain(gathered) {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        gated.applies.load(Ordering::Acquire),
        2,
        "one batch for the 16"
    );
    assert_eq!(store.scan(b"k", None, 100).unwrap().len(), 16);

    // A refused record among gathered ones fails its own commit only.
    *gated.held.lock().unwrap() = true;
    let before = gated.applies.load(Ordering::Acquire);
    let first = commit_all(vec!["second".into()]);
    wait_for_applies(before + 1).await;
    let names = ["m1", "bad", "m2"].map(String::from).to_vec();
    let gathered = commit_all(names);
    tokio::time::sleep(Duration::from_millis(100)).await;
    release(&gated);
    first.into_iter().next().unwrap().await.unwrap().unwrap();
    let mut outcomes = Vec::new();
    for task in gathered {
        outcomes.push(task.await.unwrap().is_ok());
    }
    assert_eq!(outcomes, [true, false, true]);
    // The merged batch, then each of the three alone.
    assert_eq!(gated.applies.load(Ordering::Acquire), before + 1 + 1 + 3);
    assert!(store.get(b"m1").unwrap().is_some() && store.get(b"m2").unwrap().is_some());
    assert_eq!(store.get(b"bad").unwrap(), None);
    drop(store);
    // What the store holds passes its checks.
    Store::open(gated, test_barrier()).unwrap();
}

/// A staged change rides the next batch, from any handle; one refused stays staged (and
/// is not lost); `settle`, `durable` and closing apply what is still staged.
#[tokio::test]
async fn staged_changes_ride_the_next_batch_and_are_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Arc::new(Flaky::over(dir.path()));
    let store = Store::open(flaky.clone(), test_barrier()).unwrap();
    let member = store.scoped("m/");
    let stored = |name: &str| flaky.inner.get(name.as_bytes()).unwrap().is_some();

    member.stage(put("s1")).unwrap();
    assert!(!stored("m/s1"), "applied before a batch carried it");
    store.commit(put("a")).await.unwrap();
    assert!(stored("a") && stored("m/s1"));

    store.stage(put("s2")).unwrap();
    flaky.refuse.store(true, Ordering::Release);
    assert!(store.commit(put("b")).await.is_err());
    flaky.refuse.store(false, Ordering::Release);
    assert!(!stored("s2") && !stored("b"));
    store.settle().unwrap();
    assert!(stored("s2") && !stored("b"));
    store.settle().unwrap();

    store.stage(put("s3")).unwrap();
    store.durable().await.unwrap();
    assert!(stored("s3"));

    store.stage(put("s4")).unwrap();
    drop(member);
    drop(store);
    let store = Store::open(flaky, test_barrier()).unwrap();
    assert_eq!(names(&store), ["a", "m/s1", "s2", "s3", "s4"]);
}

use std::sync::atomic::AtomicUsize;

/// A backend that takes `room` changes per batch and refuses every batch after `applies`.
struct Narrow {
    inner: SledBackend,
    room: usize,
    applies: AtomicUsize,
}

impl StoreBackend for Narrow {
    passed_through!(get, scan);
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        assert!(
            batch.ops.len() <= self.room,
            "a batch past the backend's room"
        );
        let left = self.applies.load(Ordering::Acquire);
        if left == 0 {
            return Err(StoreError("refused".into()));
        }
        self.applies.store(left - 1, Ordering::Release);
        self.inner.apply(batch)
    }
    passed_through!(sync);
    fn max_batch_ops(&self) -> usize {
        self.room
    }
}

#[test]
fn a_copy_holds_every_record_and_one_cut_short_does_not_open() {
    let (_dir, source) = open();
    let mut batch = WriteBatch::new();
    for i in 0..20u8 {
        batch.put(vec![b'r', i], vec![i; 3]);
    }
    source.commit_blocking(batch).unwrap();
    let narrow = |applies| {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Narrow {
            inner: SledBackend::open(dir.path()).unwrap(),
            room: 6,
            applies: AtomicUsize::new(applies),
        });
        (dir, backend)
    };
    // Whole: 20 records and the digest, in batches of at most 6, and it opens.
    let (_whole_dir, whole) = narrow(usize::MAX);
    assert_eq!(copy_records(&*source.local.backend, &*whole).unwrap(), 21);
    let copy = Store::open(whole, test_barrier()).unwrap();
    assert_eq!(copy.scan(b"r", None, 100).unwrap().len(), 20);
    // Cut short after two batches: no digest, refused at open as such.
    let (_cut_dir, cut) = narrow(2);
    assert!(copy_records(&*source.local.backend, &*cut).is_err());
    assert_eq!(cut.scan(&[], None, 100).unwrap().len(), 12);
    assert!(matches!(
        Store::open(cut, test_barrier()),
        Err(e) if e.to_string().contains("digest")
    ));
}

#[tokio::test]
async fn a_closed_store_refuses_commits() {
    let (_dir, store) = open();
    store.close();
    assert!(store.commit(WriteBatch::new()).await.is_err());
}

/// Pages read ahead come out in order and end with the first short page; a caller that stops
/// early stops the reader (the scope would not end otherwise).
#[test]
fn pages_read_ahead_come_in_order_and_stop_with_the_caller() {
    let names: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    let read: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let pages = read_ahead(scope, 4, |after| {
            let from = after.map_or(0, |a| usize::from(a[0]) + 1);
            Ok::<_, StoreError>(
                names[from..]
                    .iter()
                    .take(4)
                    .map(|n| (n.clone(), n.clone()))
                    .collect(),
            )
        });
        pages
            .into_iter()
            .flat_map(Result::unwrap)
            .map(|(n, _)| n)
            .collect()
    });
    assert_eq!(read, names);

    let scans = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // Pages without end.
        let pages = read_ahead(scope, 1, |_| {
            let n = scans.fetch_add(1, Ordering::SeqCst) as u64;
            Ok::<_, StoreError>(vec![(n.to_be_bytes().to_vec(), Vec::new())])
        });
        assert_eq!(pages.recv().unwrap().unwrap()[0].0, 0u64.to_be_bytes());
    });
    // One page taken, two waiting, one more read before the reader found the caller gone.
    assert!(scans.load(Ordering::SeqCst) <= 4, "{scans:?}");
}
