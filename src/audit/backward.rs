//! Reading a log file from its end, a chunk at a time: the records past the stored chain head
//! at start-up, the last lines for a tail, without reading files of up to `audit_max_bytes`
//! whole.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How far back one read reaches.
pub(super) const CHUNK: u64 = 64 * 1024;

/// The lines of a file, last first (without their newlines). A last line without its newline
/// counts as a line.
pub(super) struct Backward {
    file: File,
    /// Where the bytes not yet read end.
    start: u64,
    /// The bytes read but not yet split off: the front of them may be part of a line.
    pending: Vec<u8>,
    empty: bool,
    /// Whole lines split off, oldest first: returned from the end.
    lines: Vec<Vec<u8>>,
}

impl Backward {
    /// `None` when `path` is missing or not a regular file (a pipe or a device has no end to
    /// read back from).
    pub(super) fn open(path: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut start = len;
        if start > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(start - 1))?;
            file.read_exact(&mut last)?;
            if last[0] == b'\n' {
                start -= 1;
            }
        }
        Ok(Some(Self {
            file,
            start,
            pending: Vec::new(),
            empty: len == 0,
            lines: Vec::new(),
        }))
    }

    /// The line before the last one returned, `None` once the file's start is passed.
    pub(super) fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(line) = self.lines.pop() {
                return Ok(Some(line));
            }
            if self.start == 0 {
                // What is left begins the file: a whole line, unless the file was empty.
                return Ok(if self.empty {
                    None
                } else {
                    self.start = u64::MAX;
                    Some(std::mem::take(&mut self.pending))
                });
            }
            if self.start == u64::MAX {
                return Ok(None);
            }
            let from = self.start.saturating_sub(CHUNK);
            let mut chunk = vec![0u8; (self.start - from) as usize];
            self.file.seek(SeekFrom::Start(from))?;
            self.file.read_exact(&mut chunk)?;
            chunk.append(&mut self.pending);
            self.start = from;
            let mut pieces = chunk.split(|b| *b == b'\n');
            let front = pieces.next().unwrap_or_default().to_vec();
            self.lines = pieces.map(<[u8]>::to_vec).collect();
            self.pending = front;
        }
    }
}

/// The last `n` lines of `path`, oldest first; fewer when it has fewer.
pub(super) fn last_lines(path: &Path, n: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    if let Some(mut backward) = Backward::open(path)? {
        while lines.len() < n {
            match backward.next_line()? {
                Some(line) => lines.push(line),
                None => break,
            }
        }
    }
    lines.reverse();
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(text: &[u8]) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, text).unwrap();
        last_lines(&path, usize::MAX).unwrap()
    }

    #[test]
    fn lines_read_backwards_are_the_lines_read_forwards() {
        let long = "y".repeat(2 * CHUNK as usize + 17);
        for text in [
            String::new(),
            "\n".into(),
            "a".into(),
            "a\n".into(),
            "a\nb".into(),
            "a\n\nb\n".into(),
            format!("first\n{long}\nlast\n"),
            format!("{long}\n{long}"),
        ] {
            let expected: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
            assert_eq!(lines_of(text.as_bytes()), expected, "{:.40?}", text);
        }
    }

    #[test]
    fn only_the_last_lines_asked_for_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(
            last_lines(&path, 2).unwrap(),
            vec![b"line 49998".to_vec(), b"line 49999".to_vec()]
        );
        assert!(last_lines(&path, 0).unwrap().is_empty());
        assert!(
            last_lines(&dir.path().join("missing"), 3)
                .unwrap()
                .is_empty()
        );
        let mut backward = Backward::open(&path).unwrap().unwrap();
        backward.next_line().unwrap();
        // One chunk read, not the file.
        assert_eq!(backward.start, text.len() as u64 - 1 - CHUNK);
    }
}
