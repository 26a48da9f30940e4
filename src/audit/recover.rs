//! Where the chain goes on after a start: the log's own last record, not only the head the
//! store holds.
//!
//! The store's copy of the head is written once a second, after the file's fsync, so after a
//! crash the log can hold records past it. Starting from the stored head would give the next
//! record a sequence number already used and fork the chain. A crash can also leave the
//! current file ending in part of a line (a write the daemon never finished, or a short write
//! on a full disk): that part is cut off before anything is appended after it.

use super::{AuditRecord, Head, hex_hash};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How far back a read for the last line reaches at a time.
const CHUNK: u64 = 64 * 1024;

/// What a start found at the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recovered {
    /// The head to chain the next record to.
    pub head: Head,
    /// Bytes of an incomplete last line cut off the current file.
    pub cut: u64,
}

/// The head to continue from: the last record of the log at `current` (or of the last rotated
/// file, when `current` is empty or missing) when it is past `stored`, else `stored`. An
/// incomplete last line is cut off `current` first. A last line that is not a record leaves
/// `stored`: `audit verify` names it.
pub(super) fn continue_chain(current: &Path, stored: Head) -> Result<Recovered, String> {
    let cut = if current.exists() {
        cut_incomplete_line(current)
            .map_err(|e| format!("cannot cut an incomplete last line: {e}"))?
    } else {
        0
    };
    let mut head = stored;
    for file in super::chain_files(current).iter().rev() {
        let line = last_line(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let Some(line) = line else { continue };
        if let Ok(record) = serde_json::from_slice::<AuditRecord>(&line)
            && record.seq > stored.seq
        {
            head = Head {
                seq: record.seq,
                hash: hex_hash(&line),
            };
        }
        break;
    }
    Ok(Recovered { head, cut })
}

/// The position of the last `\n` before `end`, if any.
fn last_newline_before(file: &mut File, end: u64) -> std::io::Result<Option<u64>> {
    let mut end = end;
    let mut buffer = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        buffer.resize((end - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buffer)?;
        if let Some(at) = buffer.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(start + at as u64));
        }
        end = start;
    }
    Ok(None)
}

/// Cuts `path` back to its last complete line, synced; returns how many bytes went.
fn cut_incomplete_line(path: &Path) -> std::io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    let keep = last_newline_before(&mut file, len)?.map_or(0, |at| at + 1);
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(len - keep)
}

/// The last line of `path` (without its newline), `None` when the file is empty or missing.
fn last_line(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    let end = if last[0] == b'\n' { len - 1 } else { len };
    let start = last_newline_before(&mut file, end)?.map_or(0, |at| at + 1);
    let mut line = vec![0u8; (end - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{GENESIS, Phase};

    fn line(seq: u64, operation: &str) -> Vec<u8> {
        let record = AuditRecord {
            seq,
            prev: GENESIS.into(),
            time: "2026-11-29T00:00:00Z".into(),
            phase: Phase::Call,
            request_id: format!("request-{seq}"),
            operation: operation.into(),
            principal: None,
            access_key_id: None,
            source: None,
            keys: Vec::new(),
            encryption_context: Default::default(),
            outcome: None,
            duration_us: None,
        };
        serde_json::to_vec(&record).unwrap()
    }

    fn write_lines(path: &Path, lines: &[Vec<u8>], tail: &[u8]) {
        let mut text = Vec::new();
        for line in lines {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        text.extend_from_slice(tail);
        std::fs::write(path, text).unwrap();
    }

    fn head(seq: u64, line: &[u8]) -> Head {
        Head {
            seq,
            hash: hex_hash(line),
        }
    }

    const NONE: Head = Head {
        seq: 0,
        hash: [0; 32],
    };

    #[test]
    fn the_chain_goes_on_from_the_last_record_past_the_stored_head() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let lines: Vec<_> = (1..=3).map(|seq| line(seq, "kms:Encrypt")).collect();
        write_lines(&current, &lines, b"");

        let recovered = continue_chain(&current, head(1, &lines[0])).unwrap();
        assert_eq!(recovered.head, head(3, &lines[2]));
        assert_eq!(recovered.cut, 0);
        // Nothing stored yet (a first run killed within its first second): the same.
        assert_eq!(
            continue_chain(&current, NONE).unwrap().head,
            head(3, &lines[2])
        );
        // A stored head at or past the log's end is kept: `audit verify` names the cut.
        let ahead = head(5, b"elsewhere");
        assert_eq!(continue_chain(&current, ahead).unwrap().head, ahead);
        assert_eq!(std::fs::read(&current).unwrap().len(), {
            lines.iter().map(|l| l.len() + 1).sum::<usize>()
        });
    }

    #[test]
    fn an_incomplete_last_line_is_cut_off_before_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let lines: Vec<_> = (1..=2).map(|seq| line(seq, "kms:Decrypt")).collect();
        let torn = &line(3, "kms:Decrypt")[..40];
        write_lines(&current, &lines, torn);

        let recovered = continue_chain(&current, NONE).unwrap();
        assert_eq!(recovered.cut, torn.len() as u64);
        assert_eq!(recovered.head, head(2, &lines[1]));
        let text = std::fs::read(&current).unwrap();
        assert!(text.ends_with(b"\n"));
        assert_eq!(text.len(), lines.iter().map(|l| l.len() + 1).sum::<usize>());

        // A file that is nothing but part of a line is emptied.
        write_lines(&current, &[], torn);
        let recovered = continue_chain(&current, NONE).unwrap();
        assert_eq!((recovered.head, recovered.cut), (NONE, torn.len() as u64));
        assert!(std::fs::read(&current).unwrap().is_empty());
    }

    #[test]
    fn an_empty_current_file_continues_the_last_rotated_one() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let lines: Vec<_> = (7..=9).map(|seq| line(seq, "kms:CreateKey")).collect();
        write_lines(&rotated, &lines, b"");
        std::fs::write(&current, b"").unwrap();
        assert_eq!(
            continue_chain(&current, NONE).unwrap().head,
            head(9, &lines[2])
        );
        // Renamed away and not yet made again.
        std::fs::remove_file(&current).unwrap();
        assert_eq!(
            continue_chain(&current, NONE).unwrap().head,
            head(9, &lines[2])
        );
    }

    #[test]
    fn a_last_line_longer_than_a_read_is_found_whole() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let long = line(2, &"x".repeat(3 * CHUNK as usize));
        let lines = vec![line(1, "kms:Encrypt"), long.clone()];
        write_lines(&current, &lines, &long[..CHUNK as usize + 10]);
        let recovered = continue_chain(&current, NONE).unwrap();
        assert_eq!(recovered.head, head(2, &long));
        assert_eq!(recovered.cut, CHUNK + 10);
    }

    #[test]
    fn a_last_line_that_is_no_record_leaves_the_stored_head() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let first = line(1, "kms:Encrypt");
        write_lines(&current, &[first.clone(), b"not a record".to_vec()], b"");
        let stored = head(1, &first);
        assert_eq!(continue_chain(&current, stored).unwrap().head, stored);
    }
}
