//! The audit log: every API call on the record, as JSON lines in a hash chain.
//!
//! A call that may change state writes two records: `request` before the handler runs (if it
//! cannot be written the call is refused with `UNAVAILABLE` and nothing happens), and
//! `response` after, with the keys used, the encryption-context keys (values only as HMACs),
//! the outcome and the duration. A call that changes nothing (the cryptographic operations,
//! DescribeKey, ListKeys, IAM's reads, GetCallerIdentity, …) writes one `call` record after its
//! handler, before its answer leaves: if it cannot be written the answer is replaced by
//! `UNAVAILABLE`, so no plaintext or ciphertext is ever handed out unrecorded. A call refused before authentication writes one
//! `unauthenticated` record.
//!
//! Every record carries `prev`, the SHA-256 of the previous record's line, so the log is a
//! chain; the chain's head (sequence number and hash of the last line) is also kept in the
//! metadata store, so cutting records off the end is detected too. The head is stored each
//! time the log is made durable (every second and at shutdown), after the file's fsync, so
//! the stored head never runs ahead of what is on disk and the hot path writes no metadata. When a file grows past
//! its size limit it is renamed `audit.log.<n>` and a new one continues the chain.
//!
//! Nothing secret is ever written: no plaintext, key material, passphrase, secret access key,
//! session token or encryption-context value.

mod backward;
mod recover;
mod verify;

pub use verify::{VerifyError, VerifyReport, chain_files, verify_files};

use crate::clock::UnixSeconds;
use crate::secret::Secret;
use crate::store::{Store, WriteBatch};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::broadcast;

/// The hash that precedes the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HEAD_RECORD: &[u8] = b"audit/head";
const HMAC_KEY_RECORD: &[u8] = b"audit/context-hmac-key";
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the handler of a call that may change state.
    Request,
    /// After the handler of a call that has a `request` record.
    Response,
    /// The one record of a call that changes nothing (Encrypt, Decrypt, DescribeKey, …),
    /// written after its handler and before its answer is sent.
    Call,
    Unauthenticated,
}

/// The outcome of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// gRPC status code name (`OK`, `PERMISSION_DENIED`, …).
    pub code: String,
    /// The AWS-style reason, when refused.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub phase: Phase,
    pub request_id: String,
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub keys: Vec<String>,
    /// Encryption-context keys with HMAC-SHA256 of their values (hex), never the values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub encryption_context: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_us: Option<u64>,
}

/// What a handler tells the audit log about its call (keys used, encryption context).
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub keys: Vec<String>,
    pub encryption_context: BTreeMap<String, String>,
}

impl AuditNote {
    pub fn key(key_arn: String) -> Self {
        Self {
            keys: vec![key_arn],
            ..Self::default()
        }
    }
}

/// The details of a record before it is chained.
#[derive(Debug, Clone)]
pub struct Entry {
    pub phase: Phase,
    pub request_id: String,
    pub operation: String,
    pub principal: Option<String>,
    pub access_key_id: Option<String>,
    pub source: Option<String>,
    pub note: AuditNote,
    pub outcome: Option<Outcome>,
    pub duration_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {message}")]
pub struct AuditError {
    pub path: PathBuf,
    pub message: String,
}

struct Writer {
    file: File,
    /// The file's length: where its last complete line ends.
    size: u64,
    head: Head,
    /// A failed write may have left part of a line after `size`, not yet cut off.
    torn: bool,
}

impl Writer {
    /// Cuts the file back to `size` after a failed write. Only a regular file has a length to
    /// cut back to; anything else is left as it is.
    fn cut_back(&mut self) -> std::io::Result<()> {
        let metadata = self.file.metadata()?;
        if metadata.is_file() && metadata.len() > self.size {
            self.file.set_len(self.size)?;
        }
        self.torn = false;
        Ok(())
    }
}

/// The audit log of a daemon.
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    store: std::sync::Arc<Store>,
    /// Long-lived: out of core dumps and swap.
    context_key: crate::secret::Locked<Secret<[u8; 32]>>,
    writer: Mutex<Writer>,
    /// The head last written to the store, to skip writing it again when nothing changed.
    stored: Mutex<Head>,
    lines: broadcast::Sender<String>,
}

fn hex_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, continuing the chain whose head the store holds.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        store: std::sync::Arc<Store>,
        master: &crate::seal::MasterKey,
    ) -> Result<Self, AuditError> {
        let error = |message: String| AuditError {
            path: path.to_path_buf(),
            message,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| error(e.to_string()))?;
        }
        let stored = match store.get(HEAD_RECORD).map_err(|e| error(e.to_string()))? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| error(format!("chain head: {e}")))?
            }
            None => Head {
                seq: 0,
                hash: [0; 32],
            },
        };
        // The key that HMACs encryption-context values: random, stored wrapped.
        let context_key = match store
            .get(HMAC_KEY_RECORD)
            .map_err(|e| error(e.to_string()))?
        {
            Some(wrapped) => {
                let key = master
                    .unwrap(HMAC_KEY_RECORD, &wrapped)
                    .map_err(|_| error("the context HMAC key failed to unwrap".into()))?;
                let bytes: [u8; 32] = key
                    .expose()
                    .as_slice()
                    .try_into()
                    .map_err(|_| error("the context HMAC key is damaged".into()))?;
                Secret::new(bytes)
            }
            None => {
                let mut key = Secret::new([0u8; 32]);
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, key.expose_mut());
                let mut batch = WriteBatch::new();
                batch.put(
                    HMAC_KEY_RECORD.to_vec(),
                    master.wrap(HMAC_KEY_RECORD, key.expose()),
                );
                store
                    .commit_blocking(batch)
                    .map_err(|e| error(e.to_string()))?;
                key
            }
        };
        let recovered = recover::continue_chain(path, stored).map_err(error)?;
        if recovered.cut > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = recovered.cut,
                "cut off an incomplete last line of the audit log (a write that never finished)"
            );
        }
        if let Some(why) = recovered.refused {
            tracing::warn!(
                path = %path.display(),
                stored_seq = stored.seq,
                "the audit log has records past the stored chain head that were not taken on \
                 ({why}); the chain goes on from the stored head: run `keyhaven audit verify`"
            );
        }
        let head = recovered.head;
        if head.seq > stored.seq {
            tracing::info!(
                seq = head.seq,
                stored_seq = stored.seq,
                "the audit log holds records past the stored chain head: continuing after them"
            );
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| error(format!("cannot open for appending: {e}")))?;
        if !existed {
            sync_parent(path).map_err(|e| error(format!("fsync of its directory: {e}")))?;
        }
        let size = file
            .metadata()
            .map_err(|e| error(format!("cannot read its size: {e}")))?
            .len();
        let (lines, _) = broadcast::channel(1024);
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            store,
            context_key: crate::secret::Locked::new(context_key),
            writer: Mutex::new(Writer {
                file,
                size,
                head,
                torn: false,
            }),
            stored: Mutex::new(stored),
            lines,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// HMAC-SHA256 of an encryption-context value (hex), under the log's own key.
    pub fn hmac_value(&self, value: &str) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(self.context_key.expose()) else {
            return String::new();
        };
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Appends one record; the call it belongs to must fail if this fails.
    pub fn append(&self, entry: Entry, now: UnixSeconds, nanos: u32) -> Result<(), AuditError> {
        let time = time::OffsetDateTime::from_unix_timestamp(now)
            .ok()
            .and_then(|t| t.replace_nanosecond(nanos).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let encryption_context = entry
            .note
            .encryption_context
            .iter()
            .map(|(k, v)| (k.clone(), self.hmac_value(v)))
            .collect();
        let mut writer = match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let seq = writer
            .head
            .seq
            .checked_add(1)
            .ok_or_else(|| self.error("sequence numbers are exhausted".into()))?;
        let record = AuditRecord {
            seq,
            prev: hex::encode(writer.head.hash),
            time,
            phase: entry.phase,
            request_id: entry.request_id,
            operation: entry.operation,
            principal: entry.principal,
            access_key_id: entry.access_key_id,
            source: entry.source,
            keys: entry.note.keys,
            encryption_context,
            outcome: entry.outcome,
            duration_us: entry.duration_us,
        };
        let mut line = serde_json::to_vec(&record).map_err(|e| self.error(e.to_string()))?;
        let hash = hex_hash(&line);
        line.push(b'\n');
        if writer.torn {
            // Nothing may follow part of a line: the chain would break there for good.
            writer
                .cut_back()
                .map_err(|e| self.error(format!("cannot cut off a failed write: {e}")))?;
        }
        if writer.size > 0 && writer.size + line.len() as u64 > self.max_bytes {
            self.rotate(&mut writer)?;
        }
        if let Err(e) = writer.file.write_all(&line) {
            // A short write (a full disk) leaves part of the line: cut it off now, or before
            // the next record.
            writer.torn = true;
            let _ = writer.cut_back();
            return Err(self.error(format!("write failed: {e}")));
        }
        writer.size += line.len() as u64;
        writer.head = Head {
            seq: record.seq,
            hash,
        };
        drop(writer);
        if let Some(m) = crate::metrics::metrics() {
            m.audit_records.inc();
        }
        if self.lines.receiver_count() > 0 {
            line.pop();
            let _ = self.lines.send(String::from_utf8_lossy(&line).into_owned());
        }
        Ok(())
    }

    fn error(&self, message: String) -> AuditError {
        AuditError {
            path: self.path.clone(),
            message,
        }
    }

    /// Renames the full file to the next `audit.log.<n>` and starts a new one.
    fn rotate(&self, writer: &mut Writer) -> Result<(), AuditError> {
        writer
            .file
            .sync_all()
            .map_err(|e| self.error(format!("fsync before rotation: {e}")))?;
        let rotated = rotated_files(&self.path);
        let next = rotated.last().map(|(n, _)| n + 1).unwrap_or(1);
        let target = PathBuf::from(format!("{}.{next}", self.path.display()));
        std::fs::rename(&self.path, &target)
            .map_err(|e| self.error(format!("rotation to {}: {e}", target.display())))?;
        writer.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error(format!("cannot open a new file: {e}")))?;
        writer.size = 0;
        // The rename and the new file are entries of the directory: durable only with it.
        sync_parent(&self.path).map_err(|e| self.error(format!("fsync of its directory: {e}")))
    }

    /// Makes the log durable, then stores its head (on shutdown and every second). Blocks.
    pub fn sync(&self) -> Result<(), AuditError> {
        let mut stored = match self.stored.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let head = {
            let writer = match self.writer.lock() {
                Ok(w) => w,
                Err(poisoned) => poisoned.into_inner(),
            };
            writer
                .file
                .sync_data()
                .map_err(|e| self.error(format!("fsync: {e}")))?;
            writer.head
        };
        if head == *stored {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        batch.put(
            HEAD_RECORD.to_vec(),
            serde_json::to_vec(&head).map_err(|e| self.error(e.to_string()))?,
        );
        self.store
            .commit_blocking(batch)
            .map_err(|e| self.error(e.to_string()))?;
        *stored = head;
        Ok(())
    }

    /// The last `n` lines, across rotated files, read back from the end of the newest.
    pub fn tail(&self, n: usize) -> Result<Vec<String>, AuditError> {
        let mut lines: Vec<String> = Vec::new();
        for file in chain_files(&self.path).iter().rev() {
            if lines.len() >= n {
                break;
            }
            let older = backward::last_lines(file, n - lines.len())
                .map_err(|e| self.error(format!("{}: {e}", file.display())))?;
            let mut older: Vec<String> = older
                .iter()
                .map(|line| String::from_utf8_lossy(line).into_owned())
                .collect();
            older.append(&mut lines);
            lines = older;
        }
        Ok(lines)
    }

    /// New lines as they are written.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.lines.subscribe()
    }

    /// The chain's head as stored: (sequence number, hex hash of the last line).
    pub fn head(&self) -> (u64, String) {
        let writer = match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        (writer.head.seq, hex::encode(writer.head.hash))
    }
}

/// Fsyncs the directory `path` is in, so that entries made or renamed in it survive a power
/// loss.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// The chain head stored in a data directory's metadata store: (sequence, hex hash).
pub fn stored_head(store: &Store) -> Result<Option<(u64, String)>, String> {
    let Some(bytes) = store.get(HEAD_RECORD).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let head: Head = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(Some((head.seq, hex::encode(head.hash))))
}

/// `audit.log.<n>` files beside `path`, oldest (lowest n) first.
pub fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .map(|entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let n = file
                    .strip_prefix(&format!("{name}."))?
                    .parse::<u64>()
                    .ok()?;
                Some((n, e.path()))
            })
            .collect()
    })
    .unwrap_or_default();
    files.sort();
    files
}
