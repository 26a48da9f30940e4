//! The audit log: every API call on the record, as JSON lines in a hash chain.
//!
//! A call that may change state writes two records: `request` before the handler runs (if it
//! cannot be written the call is refused with `UNAVAILABLE` and nothing happens), and
//! `response` after, with the keys used, the grants that allowed the call (or that it made or
//! ended), the encryption-context keys (values only as HMACs), the outcome and the duration. A call that changes nothing (the cryptographic operations,
//! DescribeKey, ListKeys, IAM's reads, GetCallerIdentity, …) writes one `call` record after its
//! handler, before its answer leaves: if it cannot be written the answer is replaced by
//! `UNAVAILABLE`, so no plaintext or ciphertext is ever handed out unrecorded. A call refused
//! before authentication writes one `unauthenticated` record, unless its source was refused
//! within the last ten seconds: those are counted into one `unauthenticated_summary` record
//! per source (see [`refusals`]).
//!
//! Every record carries `prev`, the SHA-256 of the previous record's line, so the log is a
//! chain; the chain's head (sequence number and hash of the last line) is also kept in the
//! metadata store, so cutting records off the end is detected too. The head is stored each
//! time the log is made durable (every second and at shutdown), after the file's fsync, so
//! the stored head never runs ahead of what is on disk and the hot path writes no metadata.
//! When a file grows past its size limit it is renamed `audit.log.<n>` and a new one continues
//! the chain; old files are removed by [`retention`], which moves the stored chain start.
//!
//! Nothing secret is ever written: no plaintext, key material, passphrase, secret access key,
//! session token or encryption-context value. What a caller chose (an operation, an access key
//! id, encryption-context keys) is written capped in length with control characters escaped,
//! so a record stays small and one line, and shows on a terminal as what it is. Files are
//! made readable by the daemon's user alone (0600), rotated ones too.

mod backward;
mod recover;
pub mod refusals;
pub mod retention;
mod verify;

pub use verify::{VerifyError, VerifyReport, chain_files, verify_chain, verify_files};

use refusals::{RefusalSummary, RefusalWindows};
use retention::load_start;
pub use retention::{start_record, stored_start};

use crate::clock::UnixSeconds;
use crate::secret::Secret;
use crate::store::{Store, WriteBatch};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The hash that precedes the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HEAD_RECORD: &str = "audit/head";

/// The record holding a chain's head: `audit/head`, or `audit/head/<daemon id>` for one of the
/// chains of a store several daemons share (each daemon writes its own chain).
pub fn head_record(chain: Option<&str>) -> Vec<u8> {
    match chain {
        None => HEAD_RECORD.as_bytes().to_vec(),
        Some(id) => format!("{HEAD_RECORD}/{id}").into_bytes(),
    }
}
const HMAC_KEY_RECORD: &[u8] = b"audit/context-hmac-key";
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The mode of every log file: the daemon's user alone reads and writes it.
const FILE_MODE: u32 = 0o600;
/// Longest operation name written (ours are under 40 characters).
const MAX_OPERATION: usize = 64;
/// Longest access key id written (AWS's longest).
const MAX_ACCESS_KEY_ID: usize = 128;
/// Longest principal ARN, key ARN or source written.
const MAX_NAME: usize = 2048;
/// Longest encryption-context key written.
const MAX_CONTEXT_KEY: usize = 256;

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
    /// Refusals before authentication from one source that were counted, not recorded one by
    /// one, in the window that began at `since`.
    UnauthenticatedSummary,
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
    /// The daemon whose chain this is, among daemons sharing a store (none on a store of one).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub daemon: Option<String>,
    pub time: String,
    pub phase: Phase,
    pub request_id: String,
    pub operation: String,
    /// The front door the call came through (`grpc`, `aws`, `certificate` for a certificate
    /// principal's gRPC call); none for the daemon's own.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub door: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub access_key_id: Option<String>,
    /// The client-certificate identity the call authenticated by (or, refused, presented).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub keys: Vec<String>,
    /// Grant ids: those that allowed the call, or that it made or ended.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub grants: Vec<String>,
    /// Encryption-context keys with HMAC-SHA256 of their values (hex), never the values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub encryption_context: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<Outcome>,
    /// Of a batch call: every item, in order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub items: Vec<AuditItem>,
    /// Of a call that asked for, decided or executed a two-person approval: the request and
    /// both people.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub approval: Option<ApprovalNote>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_us: Option<u64>,
    /// Of a summary: the refusals it stands for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u64>,
    /// Of a summary: how many of them were throttled.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub throttled: Option<u64>,
    /// Of a summary: when its window began.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub since: Option<String>,
}

/// How the log is kept: rotation, retention and the free-space floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Size at which the current file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept; older ones are removed.
    pub max_files: usize,
    /// Rotated files last written longer ago than this are removed.
    pub max_age: Option<Duration>,
    /// Free space under which the daemon warns.
    pub min_free_bytes: u64,
    /// The daemon's id on a store several daemons share: its chain's anchors are its own.
    pub chain: Option<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_files: retention::DEFAULT_MAX_FILES,
            max_age: None,
            min_free_bytes: retention::DEFAULT_MIN_FREE_BYTES,
            chain: None,
        }
    }
}

/// What a handler tells the audit log about its call (keys used, encryption context).
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub keys: Vec<String>,
    /// Grants that allowed the call, or that it made or ended.
    pub grants: Vec<String>,
    pub encryption_context: BTreeMap<String, String>,
    /// A batch's items, in order.
    pub items: Vec<ItemNote>,
    pub approval: Option<ApprovalNote>,
    /// Who an unsigned call turned out to be, once its operation checked the credential it
    /// carried (a web identity: `<provider ARN>:<subject>`).
    pub principal: Option<String>,
}

/// The approval request a call asked for, decided or executed, with its requester and (once
/// approved) its approver, by principal ARN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalNote {
    pub request_id: String,
    pub requester: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub approver: Option<String>,
}

/// One item of a batch call, as its handler noted it.
#[derive(Debug, Clone)]
pub struct ItemNote {
    pub keys: Vec<String>,
    pub encryption_context: BTreeMap<String, String>,
    pub outcome: Outcome,
}

/// One item of a batch call in its record: the keys it named, its encryption-context keys
/// with HMAC-SHA256 of their values (as the record's own), and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditItem {
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub keys: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub encryption_context: BTreeMap<String, String>,
    pub outcome: Outcome,
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
    /// The front door the call came through.
    pub door: Option<&'static str>,
    pub principal: Option<String>,
    pub access_key_id: Option<String>,
    pub certificate: Option<String>,
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
    settings: AuditSettings,
    store: std::sync::Arc<Store>,
    /// Long-lived: out of core dumps and swap.
    context_key: crate::secret::Locked<Secret<[u8; 32]>>,
    writer: Mutex<Writer>,
    /// The head last written to the store, to skip writing it again when nothing changed.
    stored: Mutex<Head>,
    lines: broadcast::Sender<String>,
    refusals: RefusalWindows,
    /// Free space is under the floor; and when that was last said.
    space_low: AtomicBool,
    space_warned: Mutex<Option<Instant>>,
}

fn hex_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, continuing the chain whose head the store holds.
    pub fn open(
        path: &Path,
        settings: AuditSettings,
        store: std::sync::Arc<Store>,
        master: &crate::seal::MasterKey,
    ) -> Result<Self, AuditError> {
        let error = |message: String| AuditError {
            path: path.to_path_buf(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| error(e.to_string()))?;
        }
        let chain = settings.chain.clone();
        let stored = match store
            .get(&head_record(chain.as_deref()))
            .map_err(|e| error(e.to_string()))?
        {
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
        let start = load_start(&store, chain.as_deref()).map_err(error)?;
        match retention::first_of(&chain_files(path)) {
            Ok(Some((file, first))) if first.seq > start.seq => tracing::warn!(
                file = %file.display(),
                first_seq = first.seq,
                start_seq = start.seq,
                "the audit log starts after the stored chain start: records were cut off its \
                 start; run `keyhaven audit verify`"
            ),
            Ok(_) => {}
            Err(why) => tracing::warn!(%why, "the audit log's first record cannot be read"),
        }
        for (_, rotated) in rotated_files(path) {
            restrict_path(&rotated)
                .map_err(|e| error(format!("{}: cannot make it 0600: {e}", rotated.display())))?;
        }
        let existed = path.exists();
        let file = open_for_appending(path)
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
            settings,
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
            refusals: RefusalWindows::default(),
            space_low: AtomicBool::new(false),
            space_warned: Mutex::new(None),
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
        self.chain(entry, None, now, nanos)
    }

    /// A call refused before authentication, from `source` (as rate limits count sources):
    /// recorded if it is the first from there in its window, else only counted (see
    /// [`refusals`]). A `throttled` one is only counted. The call must fail if this fails.
    pub fn refused_unauthenticated(
        &self,
        entry: Entry,
        source: &str,
        throttled: bool,
        now: UnixSeconds,
        nanos: u32,
    ) -> Result<(), AuditError> {
        let decision = self.refusals.refused(source, now, throttled);
        if let Some(summary) = decision.closed {
            self.summarise(&summary, now, nanos)?;
        }
        if decision.record {
            self.append(entry, now, nanos)?;
        }
        Ok(())
    }

    /// Writes the summaries of the refusal windows closed by `now` (every second); with
    /// `all`, of every window (at shutdown).
    pub fn close_refusal_windows(
        &self,
        now: UnixSeconds,
        nanos: u32,
        all: bool,
    ) -> Result<(), AuditError> {
        let closed_by = if all { UnixSeconds::MAX } else { now };
        for summary in self.refusals.close(closed_by) {
            self.summarise(&summary, now, nanos)?;
        }
        Ok(())
    }

    fn summarise(
        &self,
        summary: &RefusalSummary,
        now: UnixSeconds,
        nanos: u32,
    ) -> Result<(), AuditError> {
        let entry = Entry {
            phase: Phase::UnauthenticatedSummary,
            request_id: String::new(),
            operation: "*".into(),
            door: None,
            principal: None,
            access_key_id: None,
            certificate: None,
            source: Some(summary.source.clone()),
            note: AuditNote::default(),
            outcome: None,
            duration_us: None,
        };
        self.chain(entry, Some(summary), now, nanos)
    }

    fn chain(
        &self,
        entry: Entry,
        summary: Option<&RefusalSummary>,
        now: UnixSeconds,
        nanos: u32,
    ) -> Result<(), AuditError> {
        let time = rfc3339(now, nanos);
        let hashed = |context: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            context
                .iter()
                .map(|(k, v)| (printable(k.clone(), MAX_CONTEXT_KEY), self.hmac_value(v)))
                .collect()
        };
        let encryption_context = hashed(&entry.note.encryption_context);
        let items = entry
            .note
            .items
            .into_iter()
            .map(|item| AuditItem {
                keys: item
                    .keys
                    .into_iter()
                    .map(|k| printable(k, MAX_NAME))
                    .collect(),
                encryption_context: hashed(&item.encryption_context),
                outcome: item.outcome,
            })
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
            daemon: self.settings.chain.clone(),
            time,
            phase: entry.phase,
            request_id: entry.request_id,
            operation: printable(entry.operation, MAX_OPERATION),
            door: entry.door.map(str::to_owned),
            principal: entry.principal.map(|p| printable(p, MAX_NAME)),
            access_key_id: entry
                .access_key_id
                .map(|id| printable(id, MAX_ACCESS_KEY_ID)),
            certificate: entry.certificate.map(|c| printable(c, MAX_NAME)),
            source: entry.source.map(|s| printable(s, MAX_NAME)),
            keys: entry
                .note
                .keys
                .into_iter()
                .map(|k| printable(k, MAX_NAME))
                .collect(),
            grants: entry
                .note
                .grants
                .into_iter()
                .map(|g| printable(g, MAX_NAME))
                .collect(),
            encryption_context,
            outcome: entry.outcome,
            items,
            approval: entry.note.approval.map(|a| ApprovalNote {
                request_id: printable(a.request_id, MAX_NAME),
                requester: printable(a.requester, MAX_NAME),
                approver: a.approver.map(|p| printable(p, MAX_NAME)),
            }),
            duration_us: entry.duration_us,
            count: summary.map(|s| s.count),
            throttled: summary.map(|s| s.throttled),
            since: summary.map(|s| rfc3339(s.since, 0)),
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
        if writer.size > 0 && writer.size + line.len() as u64 > self.settings.max_bytes {
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
        writer.file = open_for_appending(&self.path)
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
        if head != *stored {
            let mut batch = WriteBatch::new();
            batch.put(
                head_record(self.settings.chain.as_deref()),
                serde_json::to_vec(&head).map_err(|e| self.error(e.to_string()))?,
            );
            self.store
                .commit_blocking(batch)
                .map_err(|e| self.error(e.to_string()))?;
            *stored = head;
        }
        drop(stored);
        self.watch_free_space();
        self.apply_retention()?;
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

/// Opens `path` for appending, creating it 0600, and makes an existing file 0600 too.
fn open_for_appending(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)?;
    let metadata = file.metadata()?;
    // Not a device or a pipe someone pointed the log at: only files have our mode to keep.
    if metadata.is_file() && metadata.permissions().mode() & 0o777 != FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Makes the regular file at `path` 0600.
fn restrict_path(path: &Path) -> std::io::Result<()> {
    let metadata = std::fs::symlink_metadata(path)?;
    if metadata.is_file() && metadata.permissions().mode() & 0o777 != FILE_MODE {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// `text` with control and invisible formatting characters escaped (`\u{1b}`) and cut to
/// `max` characters (`…` marks a cut).
pub fn printable(text: String, max: usize) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if text.len() <= max && !text.chars().any(hidden) {
        return text;
    }
    let mut out = String::with_capacity(max.min(text.len()) + 3);
    let mut written = 0;
    for c in text.chars() {
        let piece = if hidden(c) {
            format!("\\u{{{:x}}}", c as u32)
        } else {
            c.to_string()
        };
        let width = piece.chars().count();
        if written + width > max {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        written += width;
    }
    out
}

fn rfc3339(seconds: UnixSeconds, nanos: u32) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.replace_nanosecond(nanos).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn decode_hash(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The chain head stored in a data directory's metadata store: (sequence, hex hash).
pub fn stored_head(store: &Store, chain: Option<&str>) -> Result<Option<(u64, String)>, String> {
    let Some(bytes) = store.get(&head_record(chain)).map_err(|e| e.to_string())? else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_callers_chose_is_written_short_and_on_one_visible_line() {
        assert_eq!(printable("kms:Encrypt".into(), 64), "kms:Encrypt");
        assert_eq!(
            printable("a\u{1b}[2Jb\nc\u{7f}".into(), 64),
            "a\\u{1b}[2Jb\\u{a}c\\u{7f}"
        );
        // Right-to-left overrides and zero-width characters would hide what a line says.
        assert_eq!(
            printable("x\u{202e}y\u{200b}".into(), 64),
            "x\\u{202e}y\\u{200b}"
        );
        assert_eq!(
            printable("é".repeat(100), 10),
            format!("{}…", "é".repeat(10))
        );
        // An escape is never cut in half.
        assert_eq!(printable("ab\u{1b}".into(), 4), "ab…");
    }
}
