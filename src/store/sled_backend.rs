//! The sled engine, with the fsyncs sled 0.34 leaves out.
//!
//! sled's `flush()` ends in `sync_file_range`, which writes the pages but neither flushes the
//! disk's write cache nor the file's metadata (sled issue 1452), so it is no barrier against
//! power loss. After each flush this backend also `fsync`s the data file, and the directory
//! when its entries changed (sled made, renamed or removed a file: a snapshot, a blob).

use super::{Entry, StoreBackend, StoreError, WriteBatch};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// sled's page cache (its default is 1 GiB): the daemon keeps what it serves from in memory
/// anyway, so the store's cache only needs to make scans and writes cheap.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Longer than the coarse clock tick file times are taken from.
const SETTLED: std::time::Duration = std::time::Duration::from_millis(100);

pub struct SledBackend {
    db: sled::Db,
    dir: PathBuf,
    /// sled's log file, kept open for its fsyncs.
    log: File,
    /// The directory's modification time at its last fsync: it changes with every entry
    /// made, renamed or removed in it.
    dir_synced: Mutex<Option<SystemTime>>,
}

fn store_error(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

impl SledBackend {
    /// Opens (or creates) the sled database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| StoreError(format!("cannot open {}: {e}", dir.display())))?;
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", log_path.display())))?;
        let backend = Self {
            db,
            dir: dir.to_path_buf(),
            log,
            dir_synced: Mutex::new(None),
        };
        backend.sync()?;
        Ok(backend)
    }
}

impl StoreBackend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(store_error)?.map(|v| v.to_vec()))
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
        for item in self.db.range(start..) {
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
        self.db.apply_batch(sled_batch).map_err(store_error)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(store_error)?;
        self.log
            .sync_all()
            .map_err(|e| StoreError(format!("fsync {}: {e}", self.dir.join("db").display())))?;
        let fsync_dir =
            |e: std::io::Error| StoreError(format!("fsync {}: {e}", self.dir.display()));
        let mut synced = self.dir_synced.lock().unwrap_or_else(|p| p.into_inner());
        // Read before the fsync: a change after this read is seen by the next sync.
        let modified = std::fs::metadata(&self.dir)
            .and_then(|m| m.modified())
            .map_err(fsync_dir)?;
        if *synced != Some(modified) {
            File::open(&self.dir)
                .and_then(|f| f.sync_all())
                .map_err(fsync_dir)?;
            // File times are coarse (a clock tick): a change in the same tick as `modified`
            // would leave it as it is, so a time that recent is not trusted to skip a sync.
            let settled = SystemTime::now()
                .duration_since(modified)
                .is_ok_and(|age| age > SETTLED);
            *synced = settled.then_some(modified);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_synced(backend: &SledBackend) -> Option<SystemTime> {
        *backend.dir_synced.lock().unwrap()
    }

    #[test]
    fn the_directory_is_synced_again_whenever_its_entries_change() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path()).unwrap();
        // Entries just made: too recent to skip the next sync on.
        assert_eq!(dir_synced(&backend), None);
        std::thread::sleep(SETTLED * 2);
        backend.sync().unwrap();
        let settled = dir_synced(&backend).expect("an old enough directory time is kept");
        backend.sync().unwrap();
        assert_eq!(dir_synced(&backend), Some(settled));
        // A new entry (as a sled snapshot would be) changes the time: synced, and not trusted
        // until it is old enough.
        std::fs::write(dir.path().join("snap.test"), b"x").unwrap();
        backend.sync().unwrap();
        assert_eq!(dir_synced(&backend), None);
        std::thread::sleep(SETTLED * 2);
        backend.sync().unwrap();
        let after = dir_synced(&backend).expect("kept once old enough");
        assert_ne!(after, settled);
    }
}
