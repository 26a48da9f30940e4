//! The sled engine, with the fsyncs sled 0.34 leaves out.
//!
//! sled's `flush()` ends in `sync_file_range`, which writes the pages but neither flushes the
//! disk's write cache nor the file's metadata (sled issue 1452), so it is no barrier against
//! power loss. After each flush this backend also `fsync`s the data file, and the directory
//! when its entries changed (sled made, renamed or removed a file: a snapshot, a blob).
//! sled writes a page too large for its log (a leaf of large values) to a file of its own in
//! `blobs/` and syncs neither that file nor the folder: new blob files are `fsync`ed here too,
//! before the log that points to them.
//!
//! sled writes its snapshot (where each page lives in its log) only when it opens, and an
//! open replays the log written since the last snapshot: after a million changes, well over a
//! second of the next start. So a backend, once closed, opens sled once more and closes it
//! again: a clean stop leaves the snapshot current, and the next start reads it instead of the
//! log, as a database's shutdown checkpoint spares its next start the replay. Should that
//! open fail, nothing is lost: the next start replays, as after a crash.

use super::{Entry, StoreBackend, StoreError, WriteBatch};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// sled's page cache (its default is 1 GiB): the daemon keeps what it serves from in memory
/// anyway, so the store's cache only needs to make scans and writes cheap. At a million keys
/// a read of a key not held misses this cache nearly always whatever its size (64 MiB held
/// ~5 % of the leaves), and the cache's nodes cost about twice its bytes in memory.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// The folder, in the store's, of what is kept beside the records (`put_aside`).
const ASIDE_DIR: &str = "aside";
/// Longer than the coarse clock tick file times are taken from.
const SETTLED: Duration = Duration::from_millis(100);
/// How long an open waits for sled's lock on its files, which a closing handle's threads may
/// still hold for a moment after the handle is gone.
const LOCK_WAIT: Duration = Duration::from_secs(2);

pub struct SledBackend {
    /// Always there but while the backend is dropped.
    db: Option<sled::Db>,
    /// sled's log file, kept open for its fsyncs.
    log: File,
    /// The data directory.
    top: WatchedDir,
    /// sled's `blobs/` folder, and the blob files already synced.
    blobs: WatchedDir,
    synced_blobs: Mutex<HashSet<OsString>>,
}

/// A directory fsynced when its entries changed since its last fsync, as its modification
/// time tells: it changes with every entry made, renamed or removed in it.
struct WatchedDir {
    path: PathBuf,
    synced: Mutex<Option<SystemTime>>,
}

impl WatchedDir {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            synced: Mutex::new(None),
        }
    }

    fn error(&self, e: std::io::Error) -> StoreError {
        StoreError(format!("fsync {}: {e}", self.path.display()))
    }

    /// If the directory changed: `first` (for what is in it), then the directory's fsync.
    fn sync_if_changed(
        &self,
        first: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        // Read before the fsync: a change after this read is seen by the next sync.
        let modified = match std::fs::metadata(&self.path).and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.error(e)),
        };
        if *synced == Some(modified) {
            return Ok(());
        }
        first()?;
        File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| self.error(e))?;
        // File times are coarse (a clock tick): a change in the same tick as `modified` would
        // leave it as it is, so a time that recent is not trusted to skip a sync.
        let settled = SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age > SETTLED);
        *synced = settled.then_some(modified);
        Ok(())
    }
}

fn store_error(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

impl SledBackend {
    /// Opens (or creates) the sled database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_sled(dir)?;
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", log_path.display())))?;
        let backend = Self {
            db: Some(db),
            log,
            top: WatchedDir::new(dir.to_path_buf()),
            blobs: WatchedDir::new(dir.join("blobs")),
            synced_blobs: Mutex::default(),
        };
        backend.sync()?;
        Ok(backend)
    }

    fn db(&self) -> Result<&sled::Db, StoreError> {
        self.db
            .as_ref()
            .ok_or_else(|| StoreError("the store is closed".into()))
    }
}

/// Opens sled in `dir`, waiting a moment for its lock if a handle closing meanwhile holds it.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(StoreError(format!("cannot open {}: {e}", dir.display()))),
        }
    }
}

impl Drop for SledBackend {
    /// Closes sled, then opens and closes it once more to bring its snapshot up to date (see
    /// the module's note), and syncs the folder the snapshot was written to.
    fn drop(&mut self) {
        drop(self.db.take());
        // Moved or removed meanwhile: opening would make a new, empty store in its place.
        if !self.top.path.join("db").is_file() {
            return;
        }
        let started = Instant::now();
        let checkpoint = open_sled(&self.top.path)
            .map(drop)
            .and_then(|()| self.top.sync_if_changed(|| Ok(())));
        match checkpoint {
            Ok(()) => tracing::debug!(
                checkpoint_ms = started.elapsed().as_millis() as u64,
                "the store's snapshot brought up to date at closing"
            ),
            Err(error) => tracing::warn!(%error,
                "the store's snapshot was not brought up to date: the next start replays its log"),
        }
    }
}

impl StoreBackend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db()?
            .get(key)
            .map_err(store_error)?
            .map(|v| v.to_vec()))
    }

    fn put_aside(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = self.top.path.join(ASIDE_DIR);
        std::fs::create_dir_all(&dir)
            .and_then(|()| crate::durable::replace_file(&dir.join(name), bytes, 0o600))
            .map_err(|e| StoreError(format!("{}: {e}", dir.display())))
    }

    fn aside(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.top.path.join(ASIDE_DIR).join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError(format!("{}: {e}", path.display()))),
        }
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let start = match after {
            Some(after) if after >= prefix => {
                let mut start = after.to_vec();
                start.push(0);
                start
            }
            _ => prefix.to_vec(),
        };
        let mut out = Vec::new();
        for item in self.db()?.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(store_error)?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.into_ops() {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.db()?.apply_batch(sled_batch).map_err(store_error)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db()?.flush().map_err(store_error)?;
        self.blobs.sync_if_changed(|| self.sync_new_blobs())?;
        self.log.sync_all().map_err(|e| {
            let log = self.top.path.join("db");
            StoreError(format!("fsync {}: {e}", log.display()))
        })?;
        self.top.sync_if_changed(|| Ok(()))
    }
}

impl SledBackend {
    /// Fsyncs the blob files not synced yet (sled never rewrites one: each is new).
    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let entries = std::fs::read_dir(&self.blobs.path).map_err(|e| self.blobs.error(e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.blobs.error(e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                File::open(entry.path())
                    .and_then(|f| f.sync_all())
                    .map_err(|e| StoreError(format!("fsync {}: {e}", entry.path().display())))?;
            }
            present.insert(name);
        }
        // Blobs sled removed are forgotten.
        *synced = present;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `dir` changed less than [`SETTLED`] ago (so it did at the last sync too).
    fn recent(dir: &Path) -> bool {
        let modified = std::fs::metadata(dir).unwrap().modified().unwrap();
        SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age < SETTLED)
    }

    fn dir_synced(backend: &SledBackend) -> Option<SystemTime> {
        *backend.top.synced.lock().unwrap()
    }

    #[test]
    fn the_directory_is_synced_again_whenever_its_entries_change() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path()).unwrap();
        // Entries just made: too recent to skip the next sync on (when the open took less
        // than that: on a loaded machine it may not).
        if recent(dir.path()) {
            assert_eq!(dir_synced(&backend), None);
        }
        std::thread::sleep(SETTLED * 2);
        backend.sync().unwrap();
        let settled = dir_synced(&backend).expect("an old enough directory time is kept");
        backend.sync().unwrap();
        assert_eq!(dir_synced(&backend), Some(settled));
        // A new entry (as a sled snapshot would be) changes the time: synced, and not trusted
        // until it is old enough.
        std::fs::write(dir.path().join("snap.test"), b"x").unwrap();
        backend.sync().unwrap();
        if recent(dir.path()) {
            assert_eq!(dir_synced(&backend), None);
        }
        assert_ne!(dir_synced(&backend), Some(settled));
        std::thread::sleep(SETTLED * 2);
        backend.sync().unwrap();
        let after = dir_synced(&backend).expect("kept once old enough");
        assert_ne!(after, settled);
    }

    #[test]
    fn pages_sled_writes_as_blob_files_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path()).unwrap();
        // Leaves of large values are too big for sled's log: they go to blobs/.
        let mut batch = WriteBatch::new();
        for i in 0..16u8 {
            batch.put(vec![b'k', i], vec![i; 24 * 1024]);
        }
        backend.apply(batch).unwrap();
        backend.sync().unwrap();
        let on_disk: HashSet<OsString> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!on_disk.is_empty(), "sled wrote no blob");
        assert_eq!(*backend.synced_blobs.lock().unwrap(), on_disk);
        assert_eq!(backend.get(&[b'k', 7]).unwrap(), Some(vec![7; 24 * 1024]));
    }

    #[test]
    fn a_store_whose_folder_is_gone_when_it_closes_is_not_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let backend = SledBackend::open(&path).unwrap();
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        drop(backend);
        assert!(
            !path.exists(),
            "closing made a new store where the old one was"
        );
        assert!(dir.path().join("moved/db").is_file());
    }

    /// The log position of the newest sled snapshot in `dir` (its file name's hex suffix).
    fn snapshot_at(dir: &Path) -> Option<u64> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_prefix("snap.")?, 16).ok()
            })
            .max()
    }

    #[test]
    fn a_closed_store_leaves_its_snapshot_current_and_its_records_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path()).unwrap();
        let opened_at = snapshot_at(dir.path());
        let mut batch = WriteBatch::new();
        for i in 0..2_000u32 {
            batch.put(i.to_be_bytes().to_vec(), vec![7; 200]);
        }
        backend.apply(batch).unwrap();
        backend.sync().unwrap();
        // Until it closes, the snapshot is the one its open wrote.
        assert_eq!(snapshot_at(dir.path()), opened_at);
        drop(backend);
        let closed_at = snapshot_at(dir.path()).expect("a snapshot at closing");
        assert!(
            opened_at.is_none_or(|opened| closed_at > opened),
            "snapshot at {opened_at:?} before the writes, {closed_at} after closing"
        );
        // And it opens again at once (the lock is free) on the same records.
        let backend = SledBackend::open(dir.path()).unwrap();
        assert_eq!(
            backend.get(&1_999u32.to_be_bytes()).unwrap(),
            Some(vec![7; 200])
        );
        assert_eq!(backend.scan(&[], None, usize::MAX).unwrap().len(), 2_000);
    }
}
