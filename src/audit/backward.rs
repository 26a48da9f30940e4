//! Reading a log file from its end, a chunk at a time: the records past the stored chain head
//! at start-up, the last lines for a tail, without reading files of up to `audit_max_bytes`
//! whole.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How far back one read reaches.
pub(super) const CHUNK: u64 = 64 * 1024;

/// The lines of a file, last first (without their newlines). A last line without its newline
/// counts as a line. Each byte is read once and scanned a bounded number of times, however
/// long the lines are.
pub(super) struct Backward {
    file: File,
    /// Bytes read but not yet returned: from `start` to the end of the next line.
    buffer: Vec<u8>,
    start: u64,
    /// Every line has been returned (or the file was empty).
    done: bool,
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
        let start = if len > 0 && last_byte(&mut file, len)? == b'\n' {
            len - 1
        } else {
            len
        };
        Ok(Some(Self {
            file,
            buffer: Vec::new(),
            start,
            done: len == 0,
        }))
    }

    /// The line before the last one returned, `None` once the file's start is passed.
    pub(super) fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        // Where the scan for the line's start begins: bytes already scanned hold no newline.
        let mut unscanned = self.buffer.len();
        loop {
            if let Some(at) = self.buffer[..unscanned].iter().rposition(|b| *b == b'\n') {
                let line = self.buffer[at + 1..].to_vec();
                self.buffer.truncate(at);
                return Ok(Some(line));
            }
            if self.start == 0 {
                self.done = true;
                return Ok(Some(std::mem::take(&mut self.buffer)));
            }
            // Read further back: at least a chunk, and as much as is held (so a long line costs
            // a number of reads logarithmic in its length, and copies linear in it).
            let grow = CHUNK.max(self.buffer.len() as u64).min(self.start);
            let from = self.start - grow;
            let mut chunk = vec![0u8; grow as usize];
            self.file.seek(SeekFrom::Start(from))?;
            self.file.read_exact(&mut chunk)?;
            unscanned = chunk.len();
            chunk.extend_from_slice(&self.buffer);
            self.buffer = chunk;
            self.start = from;
        }
    }
}

/// The last byte of `file`, of length `len` (> 0).
fn last_byte(file: &mut File, len: u64) -> std::io::Result<u8> {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len.saturating_sub(1)))?;
    file.read_exact(&mut last)?;
    Ok(last[0])
}

/// The length of `file` (of length `len`) up to and with its last `\n`: 0 when it has none.
/// Reads through the given handle, each byte once.
pub(super) fn complete_length(file: &mut File, len: u64) -> std::io::Result<u64> {
    if len == 0 || last_byte(file, len)? == b'\n' {
        return Ok(len);
    }
    let mut end = len;
    let mut chunk = Vec::new();
    while end > 0 {
        let from = end.saturating_sub(CHUNK);
        chunk.resize((end - from) as usize, 0);
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        if let Some(at) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(from + at as u64 + 1);
        }
        end = from;
    }
    Ok(0)
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
        // A line that ends exactly where a read starts.
        let at_boundary = format!("{}\n{}\n", "a".repeat(10), "b".repeat(CHUNK as usize - 1));
        for text in [
            String::new(),
            "\n".into(),
            "\n\n".into(),
            at_boundary,
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
