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

use super::AuditRecord;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub(super) const START_RECORD: &[u8] = b"audit/start";

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
