//! Compaction: the store rewritten with only its live records.
//!
//! sled keeps overwritten and removed values in its log until it reuses the space, so a record
//! removed from the store (destroyed key material's wrap among them) can still be read from its
//! files. `keyhaven store compact` copies the live records into a fresh store beside the old one
//! and swaps them, then removes the old files: afterwards nothing removed is in any file. The
//! records are copied as stored (tags and digest included), so the barrier sees the same store.
//!
//! The daemon must be stopped: sled locks its files, so a running daemon makes this fail. A
//! compaction cut short is finished or undone by [`recover`] (run by compaction itself and at
//! start-up): the old store is only removed once the new one is in its place.

use super::{CHECK_PAGE, SledBackend, StoreBackend, StoreError, WriteBatch, every_record};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    pub records: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

fn sibling(store_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = store_dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    store_dir.with_file_name(name)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError(format!("{}: {e}", path.display()))
}

fn sync_parent(store_dir: &Path) -> Result<(), StoreError> {
    let parent = store_dir.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io(parent))
}

/// Bytes in the files below `dir`.
pub fn size_of(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => size_of(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Finishes or undoes a compaction that was cut short.
pub fn recover(store_dir: &Path) -> Result<(), StoreError> {
    let old = sibling(store_dir, ".old");
    let new = sibling(store_dir, ".compacting");
    if old.exists() {
        if store_dir.exists() {
            // The new store is in place: only the old one's removal was left.
            fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            // Cut short between the two renames: the old store goes back.
            fs::rename(&old, store_dir).map_err(io(store_dir))?;
        }
        sync_parent(store_dir)?;
    }
    if new.exists() {
        fs::remove_dir_all(&new).map_err(io(&new))?;
        sync_parent(store_dir)?;
    }
    Ok(())
}

/// Rewrites the sled store in `store_dir` with only its live records (the daemon stopped).
pub fn compact(store_dir: &Path) -> Result<CompactReport, StoreError> {
    recover(store_dir)?;
    let bytes_before = size_of(store_dir);
    let new_dir = sibling(store_dir, ".compacting");
    let mut records = 0u64;
    {
        let old = SledBackend::open(store_dir)
            .map_err(|e| StoreError(format!("{} (is the daemon still running?)", e.0)))?;
        let new = SledBackend::open(&new_dir)?;
        let mut batch = WriteBatch::new();
        for entry in every_record(&old) {
            let (name, stored) = entry?;
            batch.put(name, stored);
            records += 1;
            if records.is_multiple_of(CHECK_PAGE as u64) {
                new.apply(std::mem::take(&mut batch))?;
            }
        }
        new.apply(batch)?;
        new.sync()?;
    }
    let old_dir = sibling(store_dir, ".old");
    fs::rename(store_dir, &old_dir).map_err(io(&old_dir))?;
    fs::rename(&new_dir, store_dir).map_err(io(store_dir))?;
    sync_parent(store_dir)?;
    fs::remove_dir_all(&old_dir).map_err(io(&old_dir))?;
    sync_parent(store_dir)?;
    Ok(CompactReport {
        records,
        bytes_before,
        bytes_after: size_of(store_dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::sync::Arc;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_holding(&path, needle));
            } else if contains(&fs::read(&path).unwrap(), needle) {
                found.push(path);
            }
        }
        found
    }

    #[tokio::test]
    async fn removed_values_are_gone_from_every_file_and_live_ones_stay() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("store");
        let removed = b"canary-of-a-removed-record-0123456789".to_vec();
        {
            let store = Store::open(
                Arc::new(SledBackend::open(&dir).unwrap()),
                crate::store::tests::test_barrier(),
            )
            .unwrap();
            let mut batch = WriteBatch::new();
            batch.put(b"material/doomed".to_vec(), removed.clone());
            batch.put(b"key/live".to_vec(), b"live value".to_vec());
            store.commit(batch).await.unwrap();
            let mut batch = WriteBatch::new();
            batch.delete(b"material/doomed".to_vec());
            store.commit(batch).await.unwrap();
            store.close();
        }
        assert!(
            !files_holding(&dir, &removed).is_empty(),
            "sled keeps the removed value in its log (what compaction is for)"
        );
        let report = compact(&dir).unwrap();
        assert_eq!(report.records, 2, "the live record and the digest");
        assert!(files_holding(top.path(), &removed).is_empty());
        assert!(!sibling(&dir, ".old").exists());
        let store = Store::open(
            Arc::new(SledBackend::open(&dir).unwrap()),
            crate::store::tests::test_barrier(),
        )
        .unwrap();
        assert_eq!(
            store.get(b"key/live").unwrap(),
            Some(b"live value".to_vec())
        );
        assert_eq!(store.get(b"material/doomed").unwrap(), None);
    }

    #[test]
    fn a_compaction_cut_between_its_renames_puts_the_old_store_back() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("store");
        fs::create_dir_all(sibling(&dir, ".old")).unwrap();
        fs::write(sibling(&dir, ".old").join("db"), b"old").unwrap();
        fs::create_dir_all(sibling(&dir, ".compacting")).unwrap();
        recover(&dir).unwrap();
        assert_eq!(fs::read(dir.join("db")).unwrap(), b"old");
        assert!(!sibling(&dir, ".compacting").exists());
    }
}
