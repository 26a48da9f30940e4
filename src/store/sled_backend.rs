//! The sled engine, with the fsyncs sled 0.34 leaves out.
//!
//! sled's `flush()` ends in `sync_file_range`, which writes the pages but neither flushes the
//! disk's write cache nor the file's metadata (sled issue 1452), so it is no barrier against
//! power loss. After each flush this backend also `fsync`s the data file and the directory.

use super::{Entry, StoreBackend, StoreError, WriteBatch};
use std::fs::File;
use std::path::{Path, PathBuf};

/// sled's page cache (its default is 1 GiB): the daemon keeps what it serves from in memory
/// anyway, so the store's cache only needs to make scans and writes cheap.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

pub struct SledBackend {
    db: sled::Db,
    dir: PathBuf,
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
        let backend = Self {
            db,
            dir: dir.to_path_buf(),
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
        for path in [self.dir.join("db"), self.dir.clone()] {
            if path.exists() {
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| StoreError(format!("fsync {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }
}
