//! Where the chain goes on after a start: the log's own last record, not only the head the
//! store holds.
//!
//! The store's copy of the head is written once a second, after the file's fsync, so after a
//! crash the log can hold records past it. Starting from the stored head would give the next
//! record a sequence number already used and fork the chain. Those records are taken on only
//! when they link to the stored head (its line hashes to it, and each record after it names
//! the one before); otherwise the chain goes on from the stored head, and `audit verify`
//! names where the log departs from it. A crash can also leave the current file ending in part
//! of a line (a write the daemon never finished, or a short write on a full disk): that part
//! is cut off before anything is appended after it.

use super::backward::{Backward, complete_length};
use super::{AuditRecord, Head, hex_hash};
use std::fs::OpenOptions;
use std::path::Path;

/// At most this many records past the stored head are taken on: more than ten seconds of a
/// busy daemon's records (the head is stored every second), read into memory at start.
const MAX_PAST_HEAD: usize = 200_000;

/// What a start found at the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recovered {
    /// The head to chain the next record to.
    pub head: Head,
    /// Bytes of an incomplete last line cut off the current file.
    pub cut: u64,
    /// Why records past the stored head were not taken on, when there are some.
    pub refused: Option<&'static str>,
}

/// The head to continue from: the last record of the log at `current` (or of the last rotated
/// file, when `current` is empty or missing) when the records up to it link to `stored`, else
/// `stored`. An incomplete last line is cut off `current` first.
pub(super) fn continue_chain(current: &Path, stored: Head) -> Result<Recovered, String> {
    let cut = cut_incomplete_line(current)
        .map_err(|e| format!("cannot cut an incomplete last line: {e}"))?;
    let (head, refused) = match past_head(current, stored)? {
        Past::Links(head) => (head, None),
        Past::Nothing => (stored, None),
        Past::Refused(why) => (stored, Some(why)),
    };
    Ok(Recovered { head, cut, refused })
}

/// What the log holds past the stored head.
enum Past {
    Nothing,
    /// Records that link to it, ending at this head.
    Links(Head),
    /// Records that do not link to it, and why.
    Refused(&'static str),
}

fn past_head(current: &Path, stored: Head) -> Result<Past, String> {
    // The records after the stored head's, newest first: sequence number, `prev`, line.
    let mut past: Vec<(u64, String, Vec<u8>)> = Vec::new();
    let mut reached = false;
    'files: for file in super::chain_files(current).iter().rev() {
        let failed = |e: std::io::Error| format!("{}: {e}", file.display());
        let Some(mut lines) = Backward::open(file).map_err(failed)? else {
            continue;
        };
        while let Some(line) = lines.next_line().map_err(failed)? {
            let Ok(record) = serde_json::from_slice::<AuditRecord>(&line) else {
                return Ok(Past::Refused(if past.is_empty() {
                    "the last line is not an audit record"
                } else {
                    "a line among them is not an audit record"
                }));
            };
            if record.seq <= stored.seq {
                if past.is_empty() {
                    return Ok(Past::Nothing);
                }
                if record.seq != stored.seq || hex_hash(&line) != stored.hash {
                    return Ok(Past::Refused(
                        "the record at the stored head is not the one stored",
                    ));
                }
                reached = true;
                break 'files;
            }
            past.push((record.seq, record.prev, line));
            if past.len() > MAX_PAST_HEAD {
                return Ok(Past::Refused("there are too many to check"));
            }
        }
    }
    if past.is_empty() {
        return Ok(Past::Nothing);
    }
    if !reached && stored.seq > 0 {
        return Ok(Past::Refused("the record at the stored head is missing"));
    }
    // Forwards from the stored head (or the chain's start): each names the one before.
    let mut previous = stored;
    for (seq, prev, line) in past.iter().rev() {
        if Some(*seq) != previous.seq.checked_add(1) || *prev != hex::encode(previous.hash) {
            return Ok(Past::Refused("they do not link to the stored head"));
        }
        previous = Head {
            seq: *seq,
            hash: hex_hash(line),
        };
    }
    Ok(Past::Links(previous))
}

/// Cuts the regular file `path` back to its last complete line, synced; returns how many
/// bytes went. A missing file, or one that is not a regular file, is left as it is.
fn cut_incomplete_line(path: &Path) -> std::io::Result<u64> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => {}
        Ok(_) => return Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let keep = complete_length(&mut file, len)?;
    if keep == len {
        return Ok(0);
    }
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(len - keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Phase;
    use crate::audit::backward::CHUNK;

    fn record(seq: u64, prev: &[u8; 32], operation: &str) -> Vec<u8> {
        let record = AuditRecord {
            seq,
            prev: hex::encode(prev),
            daemon: None,
            time: "2026-11-29T00:00:00Z".into(),
            phase: Phase::Call,
            request_id: format!("request-{seq}"),
            operation: operation.into(),
            door: None,
            principal: None,
            access_key_id: None,
            certificate: None,
            source: None,
            keys: Vec::new(),
            grants: Vec::new(),
            encryption_context: Default::default(),
            outcome: None,
            items: Vec::new(),
            approval: None,
            duration_us: None,
            count: None,
            throttled: None,
            since: None,
        };
        serde_json::to_vec(&record).unwrap()
    }

    /// `n` linked records after `after`.
    fn chain(after: Head, n: u64, operation: &str) -> Vec<Vec<u8>> {
        let mut previous = after;
        (1..=n)
            .map(|i| {
                let line = record(after.seq + i, &previous.hash, operation);
                previous = head(after.seq + i, &line);
                line
            })
            .collect()
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

    const GENESIS_HEAD: Head = Head {
        seq: 0,
        hash: [0; 32],
    };

    /// Why the records past `stored` were not taken on; the chain goes on from `stored`.
    fn refusal(current: &Path, stored: Head) -> &'static str {
        let recovered = continue_chain(current, stored).unwrap();
        assert_eq!(recovered.head, stored);
        recovered
            .refused
            .expect("the records past the head were refused")
    }

    fn size_of(lines: &[Vec<u8>]) -> usize {
        lines.iter().map(|l| l.len() + 1).sum()
    }

    #[test]
    fn the_chain_goes_on_from_the_last_record_past_the_stored_head() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let lines = chain(GENESIS_HEAD, 3, "kms:Encrypt");
        write_lines(&current, &lines, b"");

        let recovered = continue_chain(&current, head(1, &lines[0])).unwrap();
        assert_eq!(recovered.head, head(3, &lines[2]));
        assert_eq!((recovered.cut, recovered.refused), (0, None));
        // Nothing stored yet (a first run killed within its first second): the same.
        let recovered = continue_chain(&current, GENESIS_HEAD).unwrap();
        assert_eq!(recovered.head, head(3, &lines[2]));
        // The stored head is the last record: nothing past it.
        let stored = head(3, &lines[2]);
        assert_eq!(continue_chain(&current, stored).unwrap().head, stored);
        // A stored head past the log's end is kept: `audit verify` names the cut.
        let ahead = head(5, b"elsewhere");
        let recovered = continue_chain(&current, ahead).unwrap();
        assert_eq!((recovered.head, recovered.refused), (ahead, None));
        assert_eq!(std::fs::read(&current).unwrap().len(), size_of(&lines));
    }

    #[test]
    fn records_that_do_not_link_to_the_stored_head_are_not_taken_on() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let lines = chain(GENESIS_HEAD, 4, "kms:Encrypt");
        let stored = head(2, &lines[1]);

        // The record at the stored head rewritten, and the records after it chained anew.
        let mut rewritten = lines[..1].to_vec();
        rewritten.extend(chain(head(1, &lines[0]), 3, "kms:Decrypt"));
        write_lines(&current, &rewritten, b"");
        assert_eq!(
            refusal(&current, stored),
            "the record at the stored head is not the one stored"
        );

        // A record past the head that does not name the one before.
        let mut forged = lines[..3].to_vec();
        forged.push(record(4, &[7; 32], "kms:Encrypt"));
        write_lines(&current, &forged, b"");
        assert_eq!(
            refusal(&current, stored),
            "they do not link to the stored head"
        );

        // A sequence number skipped past the head.
        let mut skipped = lines[..2].to_vec();
        skipped.push(record(4, &head(2, &lines[1]).hash, "kms:Encrypt"));
        write_lines(&current, &skipped, b"");
        assert_eq!(
            refusal(&current, stored),
            "they do not link to the stored head"
        );

        // The record at the stored head removed from between its neighbours.
        let removed = [lines[0].clone(), lines[2].clone(), lines[3].clone()];
        write_lines(&current, &removed, b"");
        assert_eq!(
            refusal(&current, stored),
            "the record at the stored head is not the one stored"
        );

        // The record at the stored head gone (the log starts after it).
        write_lines(&current, &lines[2..], b"");
        assert_eq!(
            refusal(&current, stored),
            "the record at the stored head is missing"
        );

        // From the chain's start: the first record must name the genesis hash.
        write_lines(
            &current,
            &chain(head(0, b"not genesis"), 2, "kms:Encrypt"),
            b"",
        );
        let recovered = continue_chain(&current, GENESIS_HEAD).unwrap();
        assert_eq!(recovered.head, GENESIS_HEAD);
        assert!(recovered.refused.is_some());
    }

    #[test]
    fn verify_names_a_rewritten_head_even_with_records_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let lines = chain(GENESIS_HEAD, 4, "kms:Encrypt");
        let stored = (2, hex::encode(head(2, &lines[1]).hash));
        write_lines(&current, &lines, b"");
        let files = [current.clone()];
        assert!(crate::audit::verify_files(&files, Some(stored.clone())).is_ok());
        // Records 2 to 4 rewritten and chained anew: every link holds, but record 2 is not the
        // head the store recorded.
        let mut rewritten = lines[..1].to_vec();
        rewritten.extend(chain(head(1, &lines[0]), 3, "kms:Decrypt"));
        write_lines(&current, &rewritten, b"");
        let error = crate::audit::verify_files(&files, Some(stored)).unwrap_err();
        assert_eq!(error.line, 2, "{error}");
        assert!(error.message.contains("altered"), "{error}");
    }

    #[test]
    fn an_incomplete_last_line_is_cut_off_before_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let lines = chain(GENESIS_HEAD, 3, "kms:Decrypt");
        let torn = &lines[2][..40];
        write_lines(&current, &lines[..2], torn);

        let recovered = continue_chain(&current, GENESIS_HEAD).unwrap();
        assert_eq!(recovered.cut, torn.len() as u64);
        assert_eq!(recovered.head, head(2, &lines[1]));
        let text = std::fs::read(&current).unwrap();
        assert!(text.ends_with(b"\n"));
        assert_eq!(text.len(), size_of(&lines[..2]));

        // A file that is nothing but part of a line is emptied.
        write_lines(&current, &[], torn);
        let recovered = continue_chain(&current, GENESIS_HEAD).unwrap();
        assert_eq!(
            (recovered.head, recovered.cut),
            (GENESIS_HEAD, torn.len() as u64)
        );
        assert!(std::fs::read(&current).unwrap().is_empty());
    }

    #[test]
    fn the_walk_back_crosses_rotated_files_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let lines = chain(GENESIS_HEAD, 9, "kms:CreateKey");
        // `.2` comes before `.10` (numbers, not names); the current file is newest.
        write_lines(&dir.path().join("audit.log.2"), &lines[..3], b"");
        write_lines(&dir.path().join("audit.log.10"), &lines[3..6], b"");
        write_lines(&current, &lines[6..], b"");
        let stored = head(2, &lines[1]);
        assert_eq!(
            continue_chain(&current, stored).unwrap().head,
            head(9, &lines[8])
        );
        // An empty current file: the last rotated one ends the log.
        std::fs::write(&current, b"").unwrap();
        assert_eq!(
            continue_chain(&current, stored).unwrap().head,
            head(6, &lines[5])
        );
        // Renamed away and not yet made again: the same.
        std::fs::remove_file(&current).unwrap();
        assert_eq!(
            continue_chain(&current, stored).unwrap().head,
            head(6, &lines[5])
        );
    }

    #[test]
    fn a_last_line_longer_than_a_read_is_found_whole() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let first = chain(GENESIS_HEAD, 1, "kms:Encrypt");
        let long = chain(head(1, &first[0]), 2, &"x".repeat(3 * CHUNK as usize));
        let mut lines = first.clone();
        lines.push(long[0].clone());
        write_lines(&current, &lines, &long[1][..CHUNK as usize + 10]);
        let recovered = continue_chain(&current, head(1, &first[0])).unwrap();
        assert_eq!(recovered.head, head(2, &long[0]));
        assert_eq!(recovered.cut, CHUNK + 10);
    }

    #[test]
    fn a_last_line_that_is_no_record_leaves_the_stored_head() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.log");
        let lines = chain(GENESIS_HEAD, 1, "kms:Encrypt");
        let stored = head(1, &lines[0]);
        write_lines(&current, &[lines[0].clone(), b"not a record".to_vec()], b"");
        let recovered = continue_chain(&current, stored).unwrap();
        assert_eq!(
            (recovered.head, recovered.refused),
            (stored, Some("the last line is not an audit record"))
        );
        // Or among the records past the head.
        let past = chain(stored, 2, "kms:Encrypt");
        let lines = [
            lines[0].clone(),
            past[0].clone(),
            b"{}".to_vec(),
            past[1].clone(),
        ];
        write_lines(&current, &lines, b"");
        assert_eq!(
            continue_chain(&current, stored).unwrap().refused,
            Some("a line among them is not an audit record")
        );
    }
}
