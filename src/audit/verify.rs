//! Offline verification of the audit chain: every line parses, sequence numbers follow each
//! other, every `prev` is the SHA-256 of the line before, and the records at the chain start
//! and the chain head the store recorded are the ones it recorded, and are there (so records
//! cut off either end are noticed too).

use super::{AuditRecord, GENESIS, hex_hash};
use std::path::{Path, PathBuf};

/// The first problem found, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct VerifyError {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: usize,
    pub message: String,
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub files: usize,
}

/// Verifies `files` as one chain, in order; `head` is the stored (sequence, hex hash), when
/// known.
pub fn verify_files(
    files: &[PathBuf],
    head: Option<(u64, String)>,
) -> Result<VerifyReport, VerifyError> {
    verify_chain(files, None, head)
}

/// Verifies `files` as one chain, in order, from the stored `start` (sequence, hex hash its
/// first record names: records before it are ones retention has yet to remove) to the stored
/// `head` (sequence, hex hash), when known.
pub fn verify_chain(
    files: &[PathBuf],
    start: Option<(u64, String)>,
    head: Option<(u64, String)>,
) -> Result<VerifyReport, VerifyError> {
    let mut previous: Option<(u64, [u8; 32])> = None;
    let mut first_seq = 0;
    let mut records = 0;
    let mut last_place: (PathBuf, usize) = (files.first().cloned().unwrap_or_default(), 0);
    for file in files {
        let text = std::fs::read(file).map_err(|e| VerifyError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        let bad = |line: usize, message: String| VerifyError {
            file: file.clone(),
            line,
            message,
        };
        let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        } else if !text.is_empty() {
            return Err(bad(
                lines.len(),
                "the last line is incomplete (no newline)".into(),
            ));
        }
        for (index, line) in lines.iter().enumerate() {
            let number = index + 1;
            let record: AuditRecord = serde_json::from_slice(line)
                .map_err(|e| bad(number, format!("not an audit record: {e}")))?;
            if let Some((start_seq, start_prev)) = &start {
                if previous.is_none() && record.seq > *start_seq {
                    return Err(bad(
                        number,
                        format!(
                            "the log starts at sequence {} but the chain starts at {start_seq}: \
                             records were cut off its start",
                            record.seq
                        ),
                    ));
                }
                if record.seq == *start_seq && record.prev != *start_prev {
                    return Err(bad(
                        number,
                        "this record is not the chain start the store recorded: it was altered"
                            .into(),
                    ));
                }
            }
            match previous {
                None => {
                    if record.seq == 1 && record.prev != GENESIS {
                        return Err(bad(
                            number,
                            "the first record does not start the chain".into(),
                        ));
                    }
                    first_seq = record.seq;
                }
                Some((seq, hash)) => {
                    if record.seq != seq + 1 {
                        return Err(bad(
                            number,
                            format!(
                                "sequence {} follows {seq}: records are missing or out of order",
                                record.seq
                            ),
                        ));
                    }
                    if record.prev != hex::encode(hash) {
                        return Err(bad(
                            number,
                            "prev is not the hash of the line before: that line was altered or removed"
                                .into(),
                        ));
                    }
                }
            }
            let hash = hex_hash(line);
            if let Some((head_seq, head_hash)) = &head
                && record.seq == *head_seq
                && hex::encode(hash) != *head_hash
            {
                return Err(bad(
                    number,
                    "this record is not the chain head the store recorded: it was altered".into(),
                ));
            }
            previous = Some((record.seq, hash));
            records += 1;
            last_place = (file.clone(), number);
        }
    }
    if let Some((head_seq, head_hash)) = head {
        // No record at all: the chain ends where the kept part would start.
        let (last_seq, last_hash) = match (previous, &start) {
            (Some((seq, hash)), _) => (seq, hex::encode(hash)),
            (None, Some((seq, prev))) => (seq.saturating_sub(1), prev.clone()),
            (None, None) => (0, GENESIS.to_owned()),
        };
        if last_seq < head_seq {
            return Err(VerifyError {
                file: last_place.0,
                line: last_place.1 + 1,
                message: format!(
                    "the log ends at sequence {last_seq} but the chain head is {head_seq}: records were cut off"
                ),
            });
        }
        if last_seq == head_seq && last_hash != head_hash {
            return Err(VerifyError {
                file: last_place.0,
                line: last_place.1,
                message: "the last record is not the chain head: it was altered".into(),
            });
        }
    }
    Ok(VerifyReport {
        records,
        first_seq,
        last_seq: previous.map(|(s, _)| s).unwrap_or(0),
        files: files.len(),
    })
}

/// The files of a log at `path`: rotated ones first, then `path`.
pub fn chain_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = super::rotated_files(path)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_emptied_by_retention_ends_where_its_stored_start_says() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        std::fs::write(&current, b"").unwrap();
        let files = [current];
        let hash = "ab".repeat(32);
        let start = Some((8, hash.clone()));
        let report = verify_chain(&files, start.clone(), Some((7, hash.clone()))).unwrap();
        assert_eq!(report.records, 0);
        // Records the head says exist, and the start says were kept, are missing.
        let error = verify_chain(&files, start, Some((9, hash.clone()))).unwrap_err();
        assert!(error.message.contains("cut off"), "{error}");
        let error = verify_chain(&files, Some((8, GENESIS.into())), Some((7, hash))).unwrap_err();
        assert!(error.message.contains("altered"), "{error}");
    }
}
