//! Durable metadata: an ordered key-value store behind [`StoreBackend`], sled today.
//!
//! Every state change goes through [`Store::commit`]: the batch is applied atomically, then the
//! call waits until it is on disk. Concurrent commits share one flush (group commit): a single
//! flusher thread takes every waiter that arrived while the previous flush ran and makes them
//! durable together, so N concurrent CreateKeys cost about one `flush` + `fsync`, not N. When
//! a flush was shared, the next one waits up to 0.8 ms for as many callers to gather again; a
//! lone caller never waits.

mod sled_backend;

pub use sled_backend::SledBackend;

use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A storage failure. The message is for the daemon's log; callers get a generic error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct StoreError(pub String);

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Changes applied together or not at all.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
}

/// An ordered key-value engine. Implementations must make `apply` atomic and `sync` a real
/// barrier: after it returns, everything applied before it survives a crash or power loss.
pub trait StoreBackend: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries whose key starts with `prefix`, in key order, strictly after
    /// `after` when given.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError>;

    fn sync(&self) -> Result<(), StoreError>;
}

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// The metadata store the daemon uses: a backend plus the group-commit flusher.
pub struct Store {
    backend: Arc<dyn StoreBackend>,
    flush_requests: Mutex<Option<mpsc::Sender<Waiter>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    pub fn new(backend: Arc<dyn StoreBackend>) -> Self {
        let (sender, receiver) = mpsc::channel::<Waiter>();
        let flushing = backend.clone();
        let flusher = std::thread::Builder::new()
            .name("keyhaven-flush".into())
            .spawn(move || run_flusher(flushing, receiver))
            .ok();
        Self {
            backend,
            flush_requests: Mutex::new(Some(sender)),
            flusher: Mutex::new(flusher),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get(key)
    }

    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.backend.scan(prefix, after, limit)
    }

    /// Applies `batch` atomically; durable with the next flush (use for data that may lag,
    /// such as the audit chain's head).
    pub fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.backend.apply(batch)
    }

    /// Applies `batch` atomically and returns once it is durable.
    pub async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.backend.apply(batch)?;
        self.durable().await
    }

    /// Waits until everything applied so far is on disk, sharing the flush with every other
    /// caller waiting at the same time.
    pub async fn durable(&self) -> Result<(), StoreError> {
        let (waiter, done) = oneshot::channel();
        {
            let sender = self
                .flush_requests
                .lock()
                .map_err(|_| StoreError("flusher lock poisoned".into()))?;
            let sender = sender
                .as_ref()
                .ok_or_else(|| StoreError("store is closed".into()))?;
            sender
                .send(waiter)
                .map_err(|_| StoreError("flusher has stopped".into()))?;
        }
        done.await
            .map_err(|_| StoreError("flusher dropped a request".into()))?
    }

    /// Applies and syncs without the flusher thread (start-up and offline commands).
    pub fn commit_blocking(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.backend.apply(batch)?;
        self.backend.sync()
    }

    /// Stops the flusher after the flushes already asked for; later commits fail.
    pub fn close(&self) {
        if let Ok(mut sender) = self.flush_requests.lock() {
            sender.take();
        }
        if let Some(handle) = self.flusher.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// How long a flush may wait for more callers when the previous one was shared: like
/// PostgreSQL's `commit_delay`, it only ever applies under concurrency.
const GATHER: Duration = Duration::from_micros(800);

fn run_flusher(backend: Arc<dyn StoreBackend>, requests: mpsc::Receiver<Waiter>) {
    let mut previous = 1usize;
    while let Ok(first) = requests.recv() {
        // Everyone who asked before this flush starts is covered by it.
        let mut waiters = vec![first];
        waiters.extend(requests.try_iter());
        // The previous flush was shared: its callers are likely on their way back. Wait a
        // little for them (never longer than GATHER), so one flush serves them all again.
        if previous > 1 && waiters.len() < previous {
            let deadline = Instant::now() + GATHER;
            while waiters.len() < previous {
                let left = deadline.saturating_duration_since(Instant::now());
                match requests.recv_timeout(left) {
                    Ok(waiter) => waiters.push(waiter),
                    Err(_) => break,
                }
            }
        }
        previous = waiters.len();
        if let Some(m) = crate::metrics::metrics() {
            m.flush_batch.observe(waiters.len() as f64);
        }
        let result = backend.sync();
        if let Err(error) = &result {
            tracing::error!(%error, "flush failed; the calls waiting on it fail");
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path()).unwrap();
        (dir, Store::new(Arc::new(backend)))
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
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::new(Arc::new(SledBackend::open(dir.path()).unwrap()));
            let mut batch = WriteBatch::new();
            batch.put(b"key".to_vec(), b"value".to_vec());
            store.commit(batch).await.unwrap();
        }
        let store = Store::new(Arc::new(SledBackend::open(dir.path()).unwrap()));
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

    #[tokio::test]
    async fn a_closed_store_refuses_commits() {
        let (_dir, store) = open();
        store.close();
        assert!(store.commit(WriteBatch::new()).await.is_err());
    }
}
