//! How much of the log is kept, where the kept chain starts, and how much room is left.
//!
//! Rotated files beyond `audit_max_files`, or last written more than `audit_max_age_days`
//! ago, are removed oldest first (never the current file, never one newer than a file kept).
//! Before a file goes, the chain's new start (the sequence number of the first record kept
//! and the hash it names as `prev`) is stored beside the chain head, so that `audit verify`
//! tells records removed by retention from records cut off the start by hand: a log that
//! starts later than the stored start is reported, whichever end was cut. A data directory
//! with no stored start has never removed a file: its chain starts at sequence 1 with the
//! genesis hash.
//!
//! The free space of the log's file system is watched at every sync: below
//! `audit_min_free_bytes` the daemon warns (and the `keyhaven_audit_disk_below_floor` gauge
//! is 1) while there is still room, since a full disk refuses every call.

use super::{AuditError, AuditLog, AuditRecord, decode_hash, rotated_files, sync_parent};
use crate::store::{Store, WriteBatch};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

const START_RECORD: &str = "audit/start";

/// The record holding where a chain's kept records start (see [`super::head_record`]).
pub fn start_record(chain: Option<&str>) -> Vec<u8> {
    match chain {
        None => START_RECORD.as_bytes().to_vec(),
        Some(id) => format!("{START_RECORD}/{id}").into_bytes(),
    }
}

/// Rotated files kept by default.
pub const DEFAULT_MAX_FILES: usize = 100;
/// Free space under which the daemon warns, by default (256 MiB).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// A first line longer than this is no record the daemon wrote.
const MAX_FIRST_LINE: u64 = 1024 * 1024;

/// Where the kept chain starts: the first record's sequence number and the hash it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Start {
    pub seq: u64,
    pub prev: [u8; 32],
}

/// The start of a chain nothing was ever removed from.
pub(super) const CHAIN_START: Start = Start {
    seq: 1,
    prev: [0; 32],
};

/// How often a free-space warning is repeated while it holds.
const SPACE_WARNING_EVERY: Duration = Duration::from_secs(60);

impl AuditLog {
    /// Removes the rotated files retention no longer keeps, after storing where the kept
    /// chain starts; returns how many went. Runs at every sync.
    pub fn apply_retention(&self) -> Result<usize, AuditError> {
        let rotated: Vec<(PathBuf, SystemTime)> = rotated_files(&self.path)
            .into_iter()
            .map(|(_, path)| {
                let written = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .unwrap_or_else(|_| SystemTime::now());
                (path, written)
            })
            .collect();
        let removed = expired(
            &rotated,
            self.settings.max_files,
            self.settings.max_age,
            SystemTime::now(),
        );
        if removed == 0 {
            return Ok(0);
        }
        // No rotation meanwhile: the first record kept stays the first.
        let writer = match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let kept: Vec<PathBuf> = rotated[removed..]
            .iter()
            .map(|(path, _)| path.clone())
            .chain(std::iter::once(self.path.clone()))
            .collect();
        let start = match first_of(&kept).map_err(|e| self.error(e))? {
            Some((_, first)) => Start {
                seq: first.seq,
                prev: decode_hash(&first.prev)
                    .ok_or_else(|| self.error("the first record kept has a bad prev".into()))?,
            },
            None => Start {
                seq: writer.head.seq.saturating_add(1),
                prev: writer.head.hash,
            },
        };
        let mut batch = WriteBatch::new();
        batch.put(
            start_record(self.settings.chain.as_deref()),
            serde_json::to_vec(&start).map_err(|e| self.error(e.to_string()))?,
        );
        // The start moves first: a crash in between leaves older records than it says, not
        // fewer.
        self.store
            .commit_blocking(batch)
            .map_err(|e| self.error(e.to_string()))?;
        for (path, _) in &rotated[..removed] {
            std::fs::remove_file(path)
                .map_err(|e| self.error(format!("removing {}: {e}", path.display())))?;
        }
        drop(writer);
        sync_parent(&self.path).map_err(|e| self.error(format!("fsync of its directory: {e}")))?;
        tracing::info!(
            removed,
            start_seq = start.seq,
            "old audit log files removed (audit_max_files / audit_max_age_days)"
        );
        Ok(removed)
    }

    /// Sets the free-space gauges and warns while the log's file system is under the floor.
    pub(super) fn watch_free_space(&self) {
        let dir = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let free = match free_bytes(dir) {
            Ok(free) => free,
            Err(error) => {
                tracing::debug!(%error, "free space of the audit log's file system unknown");
                return;
            }
        };
        let low = below_floor(free, self.settings.min_free_bytes);
        if let Some(m) = crate::metrics::metrics() {
            let log = self.path.display().to_string();
            m.audit_disk_free_bytes
                .with_label_values(&[log.as_str()])
                .set(i64::try_from(free).unwrap_or(i64::MAX));
            m.audit_disk_below_floor
                .with_label_values(&[log.as_str()])
                .set(i64::from(low));
        }
        let was_low = self.space_low.swap(low, Ordering::Relaxed);
        let mut warned = match self.space_warned.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if low && warned.is_none_or(|at| at.elapsed() >= SPACE_WARNING_EVERY) {
            tracing::warn!(
                free_bytes = free,
                min_free_bytes = self.settings.min_free_bytes,
                path = %self.path.display(),
                "the audit log's disk is nearly full: when it is, every call is refused \
                 (AuditLogUnavailableException); free space or lower audit_max_files"
            );
            *warned = Some(Instant::now());
        } else if !low && was_low {
            tracing::info!(free_bytes = free, "the audit log's disk has room again");
            *warned = None;
        }
    }

    /// Whether the log's file system was under the free-space floor at the last sync.
    pub fn disk_space_low(&self) -> bool {
        self.space_low.load(Ordering::Relaxed)
    }
}

pub(super) fn load_start(store: &Store, chain: Option<&str>) -> Result<Start, String> {
    match store.get(&start_record(chain)).map_err(|e| e.to_string())? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("chain start: {e}")),
        None => Ok(CHAIN_START),
    }
}

/// Where the chain kept in a data directory starts, from its metadata store: (sequence, hex
/// hash the first record names). Sequence 1 and the genesis hash when nothing was removed.
pub fn stored_start(store: &Store, chain: Option<&str>) -> Result<(u64, String), String> {
    let start = load_start(store, chain)?;
    Ok((start.seq, hex::encode(start.prev)))
}

/// How many of `rotated` (oldest first, with when each was last written) retention removes:
/// those past the newest `max_files`, and the oldest ones last written before `now - max_age`.
pub(super) fn expired(
    rotated: &[(PathBuf, SystemTime)],
    max_files: usize,
    max_age: Option<Duration>,
    now: SystemTime,
) -> usize {
    let by_count = rotated.len().saturating_sub(max_files);
    let by_age = match max_age.and_then(|age| now.checked_sub(age)) {
        Some(cutoff) => rotated
            .iter()
            .take_while(|(_, written)| *written < cutoff)
            .count(),
        None => 0,
    };
    by_count.max(by_age)
}

/// The first record of `path`; `None` when it is empty or missing.
pub(super) fn first_record(path: &Path) -> Result<Option<AuditRecord>, String> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut line = Vec::new();
    BufReader::new(file.take(MAX_FIRST_LINE))
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(format!("{}: the first line is incomplete", path.display()));
    }
    serde_json::from_slice(&line).map(Some).map_err(|e| {
        format!(
            "{}: the first line is not an audit record: {e}",
            path.display()
        )
    })
}

/// The first record of the chain made of `files` (oldest first), skipping empty ones.
pub(super) fn first_of(files: &[PathBuf]) -> Result<Option<(PathBuf, AuditRecord)>, String> {
    for file in files {
        if let Some(record) = first_record(file)? {
            return Ok(Some((file.clone(), record)));
        }
    }
    Ok(None)
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
pub(super) fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Whether a directory's free space calls for a warning.
pub(super) fn below_floor(free: u64, floor: u64) -> bool {
    free < floor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_files_go_first_by_count_and_by_age() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        let day = Duration::from_secs(86_400);
        let files: Vec<(PathBuf, SystemTime)> = (1..=5)
            .map(|n| {
                (
                    PathBuf::from(format!("audit.log.{n}")),
                    now - day * (10 - n),
                )
            })
            .collect();
        assert_eq!(expired(&files, 100, None, now), 0);
        assert_eq!(expired(&files, 3, None, now), 2);
        assert_eq!(expired(&files, 0, None, now), 5);
        // Written 9, 8, 7, 6 and 5 days ago: older than 7 days are the first two.
        assert_eq!(expired(&files, 100, Some(day * 7), now), 2);
        assert_eq!(expired(&files, 4, Some(day * 7), now), 2);
        assert_eq!(expired(&files, 1, Some(day * 7), now), 4);
        // Age stops at the first young file: a newer one is never removed before it.
        let mut shuffled = files.clone();
        shuffled.swap(0, 4);
        assert_eq!(expired(&shuffled, 100, Some(day * 7), now), 0);
    }

    #[test]
    fn the_free_space_floor_warns_below_it() {
        assert!(below_floor(0, DEFAULT_MIN_FREE_BYTES));
        assert!(!below_floor(DEFAULT_MIN_FREE_BYTES, DEFAULT_MIN_FREE_BYTES));
        assert!(!below_floor(0, 0));
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
